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
config.json and results.json (a folder holding an earlier run's results is refused unless
--overwrite); the last line printed is `RESULT knn top1=... k=... dataset=...`.
"""
import time
from contextlib import ExitStack

import torch
import torch.nn.functional as F

import console
import utils
from checkpoint import CheckpointError
from dataset import build_downstream_datasets, num_classes
from options.common import model_sizes
from options.downstream import build_retrieval_parser
from options.protocols import get_protocol
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
    """kNN top-1 (%) of the validation set against the training set."""
    train_features, val_features = F.normalize(train_features, dim=1), F.normalize(val_features, dim=1)
    predictions = knn_predict(train_features, train_labels, val_features, k, chunk_size, num_classes)
    return {"top1": 100.0 * (predictions == val_labels).double().mean().item()}


def main(args):
    with ExitStack() as train_log:  # the run folder's train.log, once the folder is ready
        device, amp_dtype = utils.evaluation_device("action_retrieval.py", args)

        protocol = get_protocol(args.dataset, args.protocol)
        sizes = model_sizes(args, protocol)  # checks --hidden-size against --num-head
        train_set, val_set = build_downstream_datasets(args.data_root, args.dataset, args.protocol)
        classes = num_classes(args.data_root, args.dataset, args.protocol)
        if not 1 <= args.knn_neighbours <= len(train_set):
            raise SystemExit(f"--knn-neighbours must be between 1 and the {len(train_set)} training samples, "
                             f"got {args.knn_neighbours}")
        utils.seed_everything(args.seed)  # only the unused classifier head draws random numbers
        model, source = utils.load_downstream_model(classes, sizes, args.modalities, args.pretrained)
        # After the checkpoint was found usable: --overwrite then deletes the earlier results.
        run_dir = utils.prepare_evaluation_folder(args.checkpoint_path, args.overwrite)
        train_log.enter_context(console.copy_output_to(run_dir / "train.log"))
        config = {**utils.config_dict(args), "device": str(device),
                  "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32"}
        utils.write_config(run_dir, config)

        model.to(device)
        utils.main_print(f"kNN (k={args.knn_neighbours}): {args.dataset} {args.protocol}, {len(train_set)} "
                         f"training and {len(val_set)} validation samples, modalities {'+'.join(model.modalities)}, "
                         f"{source}; "
                         f"{device.type}, precision {config['amp_dtype']}")

        tick = time.perf_counter()
        train_features, train_labels = utils.extract_features(model, train_set, args.batch_size, args.workers, device,
                                                              amp_dtype, "train features", args.print_freq)
        val_features, val_labels = utils.extract_features(model, val_set, args.batch_size, args.workers, device,
                                                          amp_dtype, "val features", args.print_freq)
        feature_time = time.perf_counter() - tick
        tick = time.perf_counter()
        metrics = evaluate(train_features, train_labels, val_features, val_labels, args.knn_neighbours,
                           args.chunk_size, classes)
        results = {"mode": "knn", "dataset": args.dataset, "protocol": args.protocol,
                   "modalities": list(model.modalities), "k": args.knn_neighbours, "train_samples": len(train_set),
                   "val_samples": len(val_set),
                   "pretrained": str(args.pretrained), "top1": metrics["top1"], "feature_time_s": feature_time,
                   "knn_time_s": time.perf_counter() - tick}
        utils.write_results(run_dir, results)
        print(utils.result_line("knn", {"top1": metrics["top1"], "k": args.knn_neighbours, "dataset": args.dataset,
                                        "protocol": args.protocol, "modalities": "+".join(model.modalities)}),
              flush=True)
        return results


if __name__ == "__main__":
    try:
        main(build_retrieval_parser().parse_args())
    except (DataFileError, CheckpointError) as error:
        # A bad data file or checkpoint: the message names the file and what is wrong, and a traceback
        # would only bury it (as in pretrain.py).
        raise SystemExit(f"error: {error}") from None
