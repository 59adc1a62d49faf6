"""Action recognition with a pretrained UmURL encoder: linear probe, fine-tuning, semi-supervised.

    # linear probe, the released command line (SPEC.md "Training and evaluation protocols")
    python action_recognition.py --lr 0.03 --batch-size 512 --epochs 150 --schedule 120 140 \\
        --pretrained checkpoints/ntu60_cross_subject/checkpoint_0450.pth.tar \\
        --finetune-dataset ntu60 --protocol cross_subject --checkpoint-path runs/linear_ntu60_xsub
    python action_recognition.py ... --modalities joint             # uni-modal input, same encoder
    python action_recognition.py ... --finetune                     # full fine-tuning (our settings)
    python action_recognition.py ... --finetune --label-fraction 0.01  # semi-supervised, 1% of labels
    # transfer: --pretrained from a run on another dataset with the same skeleton layout (NTU -> pku2)

Linear probe: the encoder is frozen and kept in eval mode; Linear(2H, classes) is trained with SGD
on the feature (y_u by default). Frozen weights and un-augmented downstream views make a sample's
feature the same in every epoch, so by default both splits are encoded once and the classifier is
trained on the stored features (150 epochs then take seconds); `--no-cache-features` re-encodes
every batch instead, with the same batches and the same result. After the first epoch and at the
end, every encoder tensor is compared with its value before training (MoCo's sanity check).

Fine-tuning (`--finetune`): encoder and classifier train together, encoder in train mode, on the
un-augmented downstream views; settings are ours (options/downstream.py). `--label-fraction f`
draws f of each class's training samples (at least one) with --seed and writes their names to
labelled_samples.json in the run folder.

Evaluation runs in one process on one device; a multi-process torchrun launch is refused. The run
folder receives config.json, log.jsonl, TensorBoard scalars, results.json, confusion_matrix.png and
model_final.pth.tar (a folder holding an earlier run's results is refused unless --overwrite: two runs
never mix); the last line printed is `RESULT <linear|finetune|semi> best_top1=... best_top5=...
best_epoch=... final_top1=... final_top5=... ...`.

The figure to compare with the paper is best_top1: the released script prints "Final best accuracy",
the best validation top-1 over its evaluations (every 5 epochs). best_top5 is the top-5 of that same
evaluation; final_top1/final_top5 are those of the last epoch. The per-class results in results.json
(per_class_top1, mean_class_top1, confusion_matrix, class_names where the dataset has them) and
confusion_matrix.png are those of the same best evaluation (`per_class_evaluation` names its epoch).
"""
import json
import time
from contextlib import ExitStack

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter

import console
import evaluation
import utils
from checkpoint import CheckpointError, save_atomic
from options.downstream import build_recognition_parser, resolve_training_settings
from safe_io import DataFileError


# ---------------------------------------------------------------------------------------------
# Which samples, in which order
# ---------------------------------------------------------------------------------------------

def label_subset(labels, fraction, seed):
    """Indices of a per-class random `fraction` of the samples, at least one of every class, sorted.

    Each class keeps max(1, round(fraction * its count)) samples (Python's round: halves go to the
    even number), drawn without replacement by a Generator seeded with `seed`: the same (labels,
    fraction, seed) always gives the same subset.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):  # sorted, so the draws happen in a fixed order
        members = np.flatnonzero(labels == label)
        keep = max(1, round(fraction * len(members)))
        chosen.append(rng.choice(members, size=keep, replace=False))
    return np.sort(np.concatenate(chosen))


def epoch_batches(num_samples, batch_size, seed, epoch):
    """One epoch's shuffled index batches, a pure function of (seed, epoch); the last may be short.

    Both probe modes (stored features or re-encoding) iterate over exactly these batches, so they
    train the classifier identically.
    """
    order = torch.from_numpy(np.random.default_rng((seed, epoch)).permutation(num_samples))
    return order.split(batch_size)


def in_order_batches(num_samples, batch_size):
    return torch.arange(num_samples).split(batch_size)


def batches_of(data, index_batches, workers, device):
    """(x, y) batches in the given order: from stored (features, labels) tensors or from a dataset."""
    if isinstance(data, tuple):
        features, labels = data
        return ((features[i.to(features.device)], labels[i.to(labels.device)]) for i in index_batches)
    return DataLoader(data, batch_sampler=[i.tolist() for i in index_batches], num_workers=workers,
                      pin_memory=device.type == "cuda")


# ---------------------------------------------------------------------------------------------
# The frozen encoder
# ---------------------------------------------------------------------------------------------

def freeze_encoder(model):
    """No gradient reaches the encoder; the optimizer gets only the classifier's parameters."""
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(False)


def encoder_snapshot(model):
    """A copy of every encoder tensor (parameters and buffers) to compare against later."""
    return {key: value.detach().clone() for key, value in model.backbone.state_dict().items()}


def check_encoder_unchanged(model, snapshot):
    """MoCo's sanity check: every encoder tensor is bitwise what it was before training."""
    changed = [key for key, value in model.backbone.state_dict().items() if not torch.equal(value, snapshot[key])]
    if changed:
        raise RuntimeError(f"the frozen encoder changed during the linear probe: {', '.join(changed)}")


# ---------------------------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------------------------

def classify(model, x, from_features):
    """Logits of a batch of stored features (N, 2H) or of skeletons (N, C, T, V, M)."""
    return model.fc(x) if from_features else model(x)


def train_one_epoch(model, batches, optimizer, scaler, device, amp_dtype, *, from_features, train_encoder,
                    desc="train", print_freq=10):
    """One pass over (x, y) batches; returns the epoch's mean loss and top-1 (%).

    train_encoder=False keeps the whole model in eval mode: the frozen encoder must not change, and
    a Linear head behaves the same in either mode.
    """
    model.train(train_encoder)
    loss_meter, correct, seen = utils.AverageMeter(), 0, 0
    # Stored features make an epoch take milliseconds: a per-step bar would only flicker.
    for x, y in console.progress_bar(batches, desc=desc, disable=from_features, miniters=print_freq,
                                     dynamic_ncols=True, leave=False):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with utils.autocast(device, amp_dtype):
            logits = classify(model, x, from_features)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_meter.update(loss.item(), len(y))
        correct += utils.topk_correct(logits.detach(), y, ks=(1,))[0]
        seen += len(y)
    return {"loss": loss_meter.avg, "top1": 100.0 * correct / max(seen, 1)}


@torch.no_grad()
def evaluate(model, batches, device, amp_dtype, *, from_features):
    """Mean loss, top-1 and top-5 (%) over (x, y) batches, model in eval mode; and (predictions, labels),
    each (N,) int64 on the CPU in batch order, for the per-class results of this evaluation."""
    model.eval()
    loss_meter, correct, seen = utils.AverageMeter(), np.zeros(2, dtype=np.int64), 0
    predictions, labels = [], []
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with utils.autocast(device, amp_dtype):
            logits = classify(model, x, from_features)
        loss_meter.update(F.cross_entropy(logits.float(), y).item(), len(y))
        correct += utils.topk_correct(logits, y, ks=(1, 5))
        seen += len(y)
        predictions.append(logits.argmax(dim=1).cpu())
        labels.append(y.cpu())
    top1, top5 = 100.0 * correct / max(seen, 1)
    metrics = {"loss": loss_meter.avg, "top1": float(top1), "top5": float(top5)}
    return metrics, (torch.cat(predictions), torch.cat(labels))


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------

def fit(model, parameters, train_data, val_data, run_dir, args, device, amp_dtype, *, from_features, snapshot,
        mode):
    """--epochs of SGD on `parameters` with the step schedule, evaluating every --eval-freq epochs and after
    the last; logs log.jsonl and TensorBoard in run_dir. train_data/val_data: datasets, or (features,
    labels) when from_features. Checks the frozen encoder (snapshot) after the first epoch. Returns the
    best evaluation (the released figure) and the last one, each {loss, top1, top5, epoch}, and the best
    one's (predictions, labels) for its per-class results."""
    num_train = len(train_data[1]) if from_features else len(train_data)
    num_val = len(val_data[1]) if from_features else len(val_data)
    optimizer = torch.optim.SGD(parameters, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    writer = SummaryWriter(run_dir / "tensorboard")
    val_batches = in_order_batches(num_val, args.batch_size)
    best = {"top1": -1.0}
    epochs = console.progress_bar(range(args.epochs), desc=mode, dynamic_ncols=True)
    for epoch in epochs:
        lr = utils.learning_rate(epoch, args.lr, args.epochs, args.schedule)
        utils.set_learning_rate(optimizer, lr)
        batches = batches_of(train_data, epoch_batches(num_train, args.batch_size, args.seed, epoch),
                             args.workers, device)
        stats = train_one_epoch(model, batches, optimizer, scaler, device, amp_dtype, from_features=from_features,
                                train_encoder=args.finetune, desc=f"epoch {epoch}", print_freq=args.print_freq)
        if snapshot is not None and epoch == 0:
            check_encoder_unchanged(model, snapshot)
        record = {"epoch": epoch, "lr": lr, "train_loss": stats["loss"], "train_top1": stats["top1"]}
        if (epoch + 1) % args.eval_freq == 0 or epoch == args.epochs - 1:
            metrics, outputs = evaluate(model, batches_of(val_data, val_batches, args.workers, device), device,
                                        amp_dtype, from_features=from_features)
            record.update({f"val_{key}": value for key, value in metrics.items()})
            if metrics["top1"] > best["top1"]:
                best, best_outputs = {**metrics, "epoch": epoch}, outputs
            for key, value in metrics.items():
                writer.add_scalar(f"val/{key}", value, epoch)
            epochs.write(f"epoch {epoch}: train loss {stats['loss']:.4f}, val top-1 {metrics['top1']:.2f} "
                         f"top-5 {metrics['top5']:.2f} (best top-1 {best['top1']:.2f} at epoch {best['epoch']})")
        epochs.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{lr:.1e}")
        writer.add_scalar("train/loss", stats["loss"], epoch)
        writer.add_scalar("train/top1", stats["top1"], epoch)
        writer.add_scalar("train/lr", lr, epoch)
        utils.append_jsonl(run_dir / "log.jsonl", record)
    writer.close()
    return best, {**metrics, "epoch": args.epochs - 1}, best_outputs  # the last epoch is always evaluated


def mode_name(args):
    if not args.finetune:
        return "linear"
    return "semi" if args.label_fraction < 1.0 else "finetune"


def write_labelled_samples(run_dir, train_set, indices, fraction, seed):
    """The training samples whose labels are used, by name, so the subset can be reused or audited."""
    labels = train_set.labels[indices]
    record = {"label_fraction": fraction, "seed": seed, "num_samples": len(indices),
              "per_class": {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))},
              "names": [train_set.names[i] for i in indices]}
    (run_dir / "labelled_samples.json").write_text(json.dumps(record, indent=1) + "\n")


def training_setup(model, finetune, cache_features):
    """What trains and what the classifier reads: (parameters, from_features, encoder snapshot, log note).

    Fine-tuning trains everything on skeletons. The linear probe freezes the encoder, keeps a copy
    of it for the sanity check, and trains the head on stored features unless told to re-encode.
    """
    if finetune:
        return model.parameters(), False, None, "encoder trains: every batch is encoded"
    freeze_encoder(model)
    note = ("features cached: both splits encoded once, the classifier trains on them (--no-cache-features to "
            "re-encode every epoch)" if cache_features else "features re-encoded every epoch (--no-cache-features)")
    return model.fc.parameters(), cache_features, encoder_snapshot(model), note


def main(args):
    with ExitStack() as train_log:  # the run folder's train.log, once the folder is ready
        args = resolve_training_settings(args)
        device, amp_dtype = evaluation.device_and_precision("action_recognition.py", args)
        mode = mode_name(args)
        data = evaluation.load_splits(args)
        class_names = evaluation.class_names_of(args.dataset, data)
        model, source = evaluation.load_encoder(args, data, device)
        # After the checkpoint was found usable: --overwrite then deletes the earlier results.
        run_dir, config = evaluation.open_run_folder(args, train_log, device, amp_dtype, model.config, mode=mode)
        train_set, val_set, classes = data.train, data.val, data.num_classes

        if args.label_fraction < 1.0:
            indices = label_subset(train_set.labels, args.label_fraction, args.seed)
            write_labelled_samples(run_dir, train_set, indices, args.label_fraction, args.seed)
            train_set = Subset(train_set, indices.tolist())

        parameters, from_features, snapshot, feature_note = training_setup(model, args.finetune, args.cache_features)
        utils.main_print(f"{mode}: {data.protocol.title}, {classes} classes, {len(train_set)} training and "
                         f"{len(val_set)} validation samples, modalities {'+'.join(model.modalities)}, {source}; "
                         f"{feature_note}; {device.type}, precision {config['amp_dtype']}, run folder {run_dir}")

        feature_time = 0.0
        train_data, val_data = train_set, val_set
        if from_features:
            tick = time.perf_counter()
            train_data = evaluation.extract_features(model, train_set, args.batch_size, args.workers, device,
                                                     amp_dtype, "train features", args.print_freq)
            val_data = evaluation.extract_features(model, val_set, args.batch_size, args.workers, device, amp_dtype,
                                                   "val features", args.print_freq)
            feature_time = time.perf_counter() - tick
            utils.main_print(f"encoded {len(train_set)} + {len(val_set)} samples in {feature_time:.1f}s")

        train_start = time.perf_counter()
        best, final, (predictions, labels) = fit(model, parameters, train_data, val_data, run_dir, args, device,
                                                 amp_dtype, from_features=from_features, snapshot=snapshot, mode=mode)
        train_time = time.perf_counter() - train_start

        if snapshot is not None:
            check_encoder_unchanged(model, snapshot)
            utils.main_print("sanity check passed: no encoder tensor changed during the linear probe")
        results = {"mode": mode, "dataset": args.dataset, "protocol": args.protocol,
                   "modalities": list(model.modalities), "label_fraction": args.label_fraction,
                   "train_samples": len(train_set), "val_samples": len(val_set),
                   "pretrained": str(args.pretrained), "features": "cached" if from_features else "encoded per batch",
                   # best_*: the released figure ("Final best accuracy"), the one to compare with the paper.
                   "best_top1": best["top1"], "best_top5": best["top5"], "best_epoch": best["epoch"],
                   "final_top1": final["top1"], "final_top5": final["top5"], "epochs": args.epochs,
                   "feature_time_s": feature_time, "train_time_s": train_time,
                   # Per class: the best evaluation's predictions, so that they add up to best_top1.
                   "per_class_evaluation": {"split": "val", "epoch": best["epoch"]}}
        results.update(evaluation.per_class_results(
            run_dir, predictions, labels, classes, class_names,
            title=f"{mode}, {data.protocol.title}, validation at epoch {best['epoch']} (best top-1)"))
        save_atomic({"epoch": args.epochs, "state_dict": model.state_dict(), "model_config": model.config.to_dict(),
                     "config": config, "results": results}, run_dir / "model_final.pth.tar")
        evaluation.finish(run_dir, mode, results, {
            "best_top1": best["top1"], "best_top5": best["top5"], "best_epoch": best["epoch"],
            "final_top1": final["top1"], "final_top5": final["top5"], "dataset": args.dataset,
            "protocol": args.protocol, "modalities": "+".join(model.modalities),
            "label_fraction": f"{args.label_fraction:g}"})
        return results


if __name__ == "__main__":
    try:
        main(build_recognition_parser().parse_args())
    except (DataFileError, CheckpointError) as error:
        # A bad data file or checkpoint: the message names the file and what is wrong, and a traceback
        # would only bury it (as in pretrain.py).
        raise SystemExit(f"error: {error}") from None
