"""kNN action retrieval with a pretrained UmURL encoder (released protocol: k = 1, cosine similarity).

    python action_retrieval.py --pretrained checkpoints/ntu60_cross_subject/checkpoint_0450.pth.tar \\
        --finetune-dataset ntu60 --protocol cross_subject --checkpoint-path runs/knn_ntu60_xsub
    python action_retrieval.py ... --knn-neighbours 5 --modalities motion

Both splits are encoded once (y_u by default, or the uni-modal feature of --modalities) and
L2-normalised, so cosine similarity is a matrix product. Each validation sample takes the majority
label of its k most similar training samples; queries are compared --chunk-size at a time, so the
full (validation x training) similarity matrix never exists (NTU-120: 50k x 63k floats = 12.7 GB).
Predictions equal sklearn's KNeighborsClassifier(n_neighbors=k, metric="cosine") including its vote
rule: a tie between classes goes to the smallest label.

One process on one device; a multi-process torchrun launch is refused. The run folder receives
config.json, results.json (top1 and the per-class results of the predictions: per_class_top1,
mean_class_top1, confusion_matrix, class_names where the dataset has them) and confusion_matrix.png
(a folder holding an earlier run's results is refused unless --overwrite); the last line printed is
`RESULT knn top1=... k=... dataset=...`.
"""
import time
from contextlib import ExitStack

import torch
import torch.nn.functional as F

import evaluation
import utils
from checkpoint import CheckpointError
from options.downstream import build_retrieval_parser
from safe_io import DataFileError


def knn_predict(train_features, train_labels, query_features, k=1, chunk_size=1024, num_classes=None):
    """Majority label of each query's k most cosine-similar training samples.

    Features (N, D) must be L2-normalised (cosine similarity is then a dot product). At most
    (chunk_size, N_train) similarities exist at once. Ties in the vote go to the smallest label,
    as in sklearn's uniform-weight KNeighborsClassifier (both take the first maximum of the counts).
    Which sample counts as the k-th neighbour when two training samples are exactly equally similar
    is left to topk. Returns (N_query,) int64 labels on the features' device.
    """
    num_classes = num_classes or int(train_labels.max()) + 1
    predictions = []
    for queries in query_features.split(chunk_size):
        similarity = queries @ train_features.T  # (chunk, N_train)
        neighbours = similarity.topk(k, dim=1).indices  # (chunk, k)
        votes = torch.zeros(len(queries), num_classes, device=queries.device)
        votes.scatter_add_(1, train_labels[neighbours], torch.ones(neighbours.shape, device=queries.device))
        predictions.append(votes.argmax(dim=1))  # the first maximum: the smallest label among tied classes
    return torch.cat(predictions)


def evaluate(train_features, train_labels, val_features, val_labels, k, chunk_size, num_classes):
    """kNN top-1 (%) of the validation set against the training set, and the predicted labels
    (`predictions`, (N_val,) int64) for the per-class results."""
    train_features, val_features = F.normalize(train_features, dim=1), F.normalize(val_features, dim=1)
    predictions = knn_predict(train_features, train_labels, val_features, k, chunk_size, num_classes)
    return {"top1": 100.0 * (predictions == val_labels).double().mean().item(), "predictions": predictions}


def main(args):
    with ExitStack() as train_log:  # the run folder's train.log, once the folder is ready
        device, amp_dtype = evaluation.device_and_precision("action_retrieval.py", args)
        data = evaluation.load_splits(args)
        class_names = evaluation.class_names_of(args.dataset, data)
        if not 1 <= args.knn_neighbours <= len(data.train):
            raise SystemExit(f"--knn-neighbours must be between 1 and the {len(data.train)} training samples, "
                             f"got {args.knn_neighbours}")
        model, source = evaluation.load_encoder(args, data, device)  # the classifier head is unused
        # After the checkpoint was found usable: --overwrite then deletes the earlier results.
        run_dir, config = evaluation.open_run_folder(args, train_log, device, amp_dtype, model.config)
        utils.main_print(f"kNN (k={args.knn_neighbours}): {data.protocol.title}, {len(data.train)} "
                         f"training and {len(data.val)} validation samples, modalities {'+'.join(model.modalities)}, "
                         f"{source}; "
                         f"{device.type}, precision {config['amp_dtype']}")

        tick = time.perf_counter()
        train_features, train_labels = evaluation.extract_features(model, data.train, args.batch_size, args.workers,
                                                                   device, amp_dtype, "train features", args.print_freq)
        val_features, val_labels = evaluation.extract_features(model, data.val, args.batch_size, args.workers, device,
                                                               amp_dtype, "val features", args.print_freq)
        feature_time = time.perf_counter() - tick
        tick = time.perf_counter()
        metrics = evaluate(train_features, train_labels, val_features, val_labels, args.knn_neighbours,
                           args.chunk_size, data.num_classes)
        results = {"mode": "knn", "dataset": args.dataset, "protocol": args.protocol,
                   "modalities": list(model.modalities), "k": args.knn_neighbours, "train_samples": len(data.train),
                   "val_samples": len(data.val),
                   "pretrained": str(args.pretrained), "top1": metrics["top1"], "feature_time_s": feature_time,
                   "knn_time_s": time.perf_counter() - tick}
        results.update(evaluation.per_class_results(
            run_dir, metrics["predictions"], val_labels, data.num_classes, class_names,
            title=f"kNN (k={args.knn_neighbours}), {data.protocol.title}, validation"))
        evaluation.finish(run_dir, "knn", results, {
            "top1": metrics["top1"], "k": args.knn_neighbours, "dataset": args.dataset, "protocol": args.protocol,
            "modalities": "+".join(model.modalities)})
        return results


if __name__ == "__main__":
    try:
        main(build_retrieval_parser().parse_args())
    except (DataFileError, CheckpointError) as error:
        # A bad data file or checkpoint: the message names the file and what is wrong, and a traceback
        # would only bury it (as in pretrain.py).
        raise SystemExit(f"error: {error}") from None
