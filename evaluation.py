"""The evaluation engine: what the linear probe and fine-tuning (action_recognition.py), kNN retrieval
(action_retrieval.py) and t-SNE (tsne.py) share, so that each of them holds its protocol only.

    device, amp_dtype = evaluation.device_and_precision("action_retrieval.py", args)
    data = evaluation.load_splits(args)             # the protocol, both splits and the class count
    model, source = evaluation.load_encoder(args, data, device)  # sizes from the checkpoint
    run_dir, config = evaluation.open_run_folder(args, train_log, device, amp_dtype, model.config)
    features, labels = evaluation.extract_features(model, data.train, ...)
    results.update(evaluation.per_class_results(run_dir, predictions, labels, data.num_classes, names, title))
    evaluation.finish(run_dir, "knn", results, fields)  # results.json and the RESULT line

Every input (the launch, the data files, the checkpoint and its sizes) is checked before the run
folder is touched, so a bad command fails in seconds and never deletes an earlier run's results.

Model sizes: a checkpoint written by this project records its UmURLConfig (`model_config`), and the
encoder is built from it; --hidden-size, --num-head and --num-layer are then only checked against it.
A checkpoint without one (the released ones) and random weights take the sizes from those flags, or
the released model's when they are not given. The skeleton half of the configuration always has to
match the evaluated dataset's.
"""
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import console
import metrics
import utils
from checkpoint import (CheckpointError, CheckpointMismatch, load_encoder_weights, model_state_dict,
                        read_checkpoint)
from dataset import build_downstream_datasets, num_classes
from options.common import model_config, resolve_protocol, size_flags
from safe_io import DataFileError, write_atomic
from umurl import DownstreamModel, UmURLConfig

# The fields of UmURLConfig that the data fix; a checkpoint transfers only where they all agree.
SKELETON_FIELDS = ("layout", "parents", "num_joints", "num_persons", "num_coords", "num_frames")


# ---------------------------------------------------------------------------------------------
# One process, one device
# ---------------------------------------------------------------------------------------------

def require_single_process(script):
    """Evaluation runs in one process on one device; refuse a multi-process torchrun launch at once.

    Features of a whole split fit on one device and the probe trains in seconds on them, so data
    parallelism would only add collectives. A one-process torchrun launch is accepted.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        raise SystemExit(f"{script} runs in a single process (features of a whole split fit on one device); "
                         f"it was launched with WORLD_SIZE={world_size}: run it with plain `python {script}`")


def device_and_precision(script, args):
    """(device, autocast dtype or None) of an evaluation script, after refusing a multi-process launch."""
    require_single_process(script)
    device = utils.resolve_device(args.device)
    return device, utils.resolve_amp_dtype(device, args.amp, args.amp_dtype)


def precision_name(amp_dtype):
    """'fp32' without autocast, else the autocast dtype's short name ('float16', 'bfloat16')."""
    return str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32"


# ---------------------------------------------------------------------------------------------
# The data
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Splits:
    """The resolved protocol (options/protocols.py), its two splits and its class count."""

    protocol: object
    train: object
    val: object
    num_classes: int


def load_splits(args):
    """The protocol of --finetune-dataset/--protocol/--data-root (args.protocol is set to its name, a custom
    folder's from its metadata.json) and both of its splits, checked against its skeleton."""
    protocol = resolve_protocol(args)
    train, val = build_downstream_datasets(args.data_root, args.dataset, args.protocol)
    return Splits(protocol, train, val, num_classes(args.data_root, args.dataset, args.protocol))


def class_names_of(dataset, data):
    """The class names of the evaluated data in label order, or None where it has none: a custom
    dataset's own (its Protocol's `class_names`, from the converter's metadata), else the shipped list
    of a built-in dataset (metrics.class_names). Checked against the class count before any work."""
    names = getattr(data.protocol, "class_names", None) or metrics.class_names(dataset)
    if names is not None and len(names) != data.num_classes:
        raise DataFileError(f"{data.protocol.title}: {len(names)} class names for its "
                            f"{data.num_classes} classes")
    return None if names is None else list(names)


# ---------------------------------------------------------------------------------------------
# The encoder: its sizes and its weights
# ---------------------------------------------------------------------------------------------

def saved_model_config(checkpoint, path):
    """The UmURLConfig a checkpoint records, or None (a released checkpoint records none).

    The record must agree with the weights beside it (token widths, hidden size, layers) before a
    model is built from it: a damaged record could otherwise ask for a model of any size.
    """
    record = checkpoint.get("model_config") if isinstance(checkpoint, dict) else None
    if record is None:
        return None
    try:
        config = UmURLConfig.from_dict(record)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its model_config is unusable: {error}") from None
    try:
        state_dict = model_state_dict(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    embedding = state_dict.get("backbone.j_emb.t_embedding.0.weight")
    layers = {key.split(".")[4] for key in state_dict if key.startswith("backbone.ma_encoder.t_tr.layers.")}
    spatial = state_dict.get("backbone.j_emb.s_embedding.0.weight")
    recorded = (config.hidden_size, config.t_input_size, config.s_input_size, config.num_layer)
    found = (*(tuple(embedding.shape) if embedding is not None else (None, None)),
             spatial.shape[1] if spatial is not None else None, len(layers))
    if recorded != found:
        raise CheckpointError(f"{path}: its model_config (hidden size, token widths, layers {recorded}) disagrees "
                              f"with its weights {found}: the file is damaged")
    return config


def flag_contradictions(saved, flags):
    """'--hidden-size 8 (the checkpoint's hidden_size is 16)' for each given size flag the config disagrees with."""
    return [f"--{name.replace('_', '-')} {value} (the checkpoint's {name} is {getattr(saved, name)})"
            for name, value in flags.items() if getattr(saved, name) != value]


def describe_skeleton(config):
    """'ntu25 skeletons (25 joints, 2 persons, 3 coordinates, 64-frame views)'."""
    persons = f"{config.num_persons} person" + ("s" if config.num_persons != 1 else "")
    return (f"{config.layout} skeletons ({config.num_joints} joints, {persons}, {config.num_coords} coordinates, "
            f"{config.num_frames}-frame views)")


def skeleton_mismatch(saved, wanted):
    """What tells the checkpoint's skeleton from the data's, or None when every SKELETON_FIELDS agrees."""
    if all(getattr(saved, name) == getattr(wanted, name) for name in SKELETON_FIELDS):
        return None
    saved_text, wanted_text = describe_skeleton(saved), describe_skeleton(wanted)
    if saved_text == wanted_text:  # the same name and sizes, another tree of joints
        saved_text, wanted_text = f"{saved_text} with parents {list(saved.parents)}", f"parents {list(wanted.parents)}"
    return saved_text, wanted_text


def encoder_config(args, wanted, checkpoint, data_name):
    """The UmURLConfig to evaluate: the checkpoint's when it records one, else `wanted` (the evaluated
    dataset's skeleton with the size flags, or the released sizes). One line of SystemExit for a size
    flag that contradicts the checkpoint, one of CheckpointMismatch for a checkpoint of another skeleton.
    checkpoint: the read --pretrained, or None. data_name: what holds the evaluated skeletons, for that line."""
    flags = size_flags(args)
    saved = saved_model_config(checkpoint, args.pretrained) if checkpoint is not None else None
    if saved is None:
        return wanted
    contradicted = flag_contradictions(saved, flags)
    if contradicted:
        raise SystemExit(f"{'; '.join(contradicted)}: {args.pretrained} records the sizes it was pretrained "
                         f"with and evaluation builds the encoder from them; leave the size flags out")
    mismatch = skeleton_mismatch(saved, wanted)
    if mismatch is not None:
        raise CheckpointMismatch(f"{args.pretrained}: pretrained on {mismatch[0]}, but {data_name} "
                                 f"holds {mismatch[1]}: an encoder transfers only between datasets of the same "
                                 f"skeleton layout")
    return saved


def load_encoder(args, data, device):
    """DownstreamModel(config, classes, --modalities) on `device` with the encoder of --pretrained, or
    random weights without it; returns (model, a one-line description of where the weights came from).
    The encoder's skeleton is that of `data` (Splits); see build_encoder.
    """
    wanted = model_config(data.protocol, **size_flags(args))  # checks --hidden-size against --num-head
    return build_encoder(args, wanted, data.num_classes, device, data_name=data.protocol.title)


def build_encoder(args, wanted, classes, device, data_name):
    """load_encoder for skeletons described by `wanted` (a UmURLConfig: the data's skeleton with the size
    flags) rather than by a protocol: the checkpoint's model_config must agree with it (see encoder_config;
    data_name says what holds those skeletons in the error). `classes`: the classifier's outputs.

    Seeds with --seed first: the classifier's N(0, 0.01) initialisation (and a random encoder) draw
    from it. `--pretrained` may be our checkpoint or a released one (`module.` prefix). A missing,
    unreadable or diverged (NaN/Inf) checkpoint raises CheckpointError saying what is wrong; one without
    a model_config that does not fit the sizes it was built for raises CheckpointMismatch naming every
    misfit key and those sizes.
    """
    utils.seed_everything(args.seed)
    checkpoint = read_checkpoint(args.pretrained) if args.pretrained is not None else None
    config = encoder_config(args, wanted, checkpoint, data_name)
    model = DownstreamModel(config, classes, args.modalities)
    if checkpoint is None:
        return model.to(device), "randomly initialised encoder (no --pretrained): a baseline"
    try:
        load_encoder_weights(model, checkpoint, name=args.pretrained)
    except CheckpointMismatch as error:
        if "model_config" in checkpoint:  # sizes came from the file itself: the hint below would mislead
            raise
        raise CheckpointMismatch(
            f"{error}\nThe checkpoint records no model_config (a released one?), so the encoder was built for "
            f"{describe_skeleton(config)} and hidden_size={config.hidden_size}, num_head={config.num_head}, "
            f"num_layer={config.num_layer} (--hidden-size/--num-head/--num-layer, default: the released model's): "
            f"give the sizes it was pretrained with; one pretrained on another skeleton layout cannot be "
            f"evaluated here.") from None
    return model.to(device), f"encoder from {args.pretrained}"


@torch.no_grad()
def extract_features(model, dataset, batch_size, workers, device, amp_dtype, desc="features", print_freq=10):
    """Encode a dataset of (x, label) in order: features (N, 2H) float32 and labels (N,), on `device`.

    Puts the model in eval mode (the encoder must not change while it is read). Autocast, when
    enabled, covers the encoder; features are stored in float32 either way.
    """
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    features, labels = [], []
    for x, y in console.progress_bar(loader, desc=desc, miniters=print_freq, dynamic_ncols=True, leave=False):
        with utils.autocast(device, amp_dtype):
            features.append(model.features(x.to(device, non_blocking=True)).float())  # (B, 2H)
        labels.append(y.to(device, non_blocking=True))
    return torch.cat(features), torch.cat(labels)


# ---------------------------------------------------------------------------------------------
# The run folder and the results
# ---------------------------------------------------------------------------------------------

# What the evaluation scripts write into their run folder besides config.json. Any of them already there
# is an earlier run's result, which a new run would mix with (log.jsonl appended to, TensorBoard events
# side by side) or replace without a word.
EVALUATION_OUTPUTS = ("results.json", "log.jsonl", "tensorboard", "model_final.pth.tar", "labelled_samples.json",
                      "tsne.png", "confusion_matrix.png", "train.log")


def prepare_evaluation_folder(folder, overwrite):
    """utils.prepare_run_folder for an evaluation script: one run folder, one run.

    A folder holding an earlier run's EVALUATION_OUTPUTS is refused unless `overwrite`, which deletes
    them (and nothing else) first. A pretraining run folder is refused either way: its log.jsonl and
    TensorBoard logs are the pretraining run's, not for an evaluation to append to or delete.
    """
    folder = Path(folder)
    if any(folder.glob("checkpoint_*.pth.tar")):
        raise SystemExit(f"{folder} is a pretraining run folder (it holds checkpoints): give the evaluation its own "
                         f"--checkpoint-path")
    earlier = [name for name in EVALUATION_OUTPUTS if (folder / name).exists()]
    if earlier and not overwrite:
        raise SystemExit(f"{folder} already holds an earlier run's {', '.join(earlier)}: pass --overwrite to "
                         f"replace them, or choose another --checkpoint-path")
    for name in earlier:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return utils.prepare_run_folder(folder)


def open_run_folder(args, train_log, device, amp_dtype, config, **extra):
    """Prepare --checkpoint-path (see prepare_evaluation_folder), copy what is printed from now on to its
    train.log (until `train_log`, an ExitStack, closes) and write config.json: the command line's
    settings, the device, the precision, the encoder's resolved UmURLConfig and `extra`.
    Returns (run folder, the configuration written)."""
    run_dir = prepare_evaluation_folder(args.checkpoint_path, args.overwrite)
    train_log.enter_context(console.copy_output_to(run_dir / "train.log"))
    record = {**utils.config_dict(args), "device": str(device), "amp_dtype": precision_name(amp_dtype),
              "model_config": config.to_dict(), **extra}
    utils.write_config(run_dir, record)
    return run_dir, record


def result_line(kind, fields):
    """`RESULT <kind> key=value ...` on one line, floats with two decimals: easy for shell scripts to parse."""
    def text(value):
        if isinstance(value, float):
            return f"{value:.2f}"
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        return str(value).replace(" ", "_")

    return " ".join(["RESULT", kind, *(f"{key}={text(value)}" for key, value in fields.items())])


def per_class_results(run_dir, predictions, labels, num_classes, class_names=None, title=None):
    """Per-class accuracy, mean-class accuracy, the confusion matrix and the class names (metrics.class_metrics)
    of one set of validation predictions, for results.json; the matrix is also drawn into
    confusion_matrix.png in the run folder. predictions, labels: (N,) class indices."""
    record = metrics.class_metrics(predictions, labels, num_classes, class_names)
    metrics.plot_confusion_matrix(record["confusion_matrix"], Path(run_dir) / "confusion_matrix.png", class_names,
                                  title)
    return record


def finish(run_dir, kind, results, fields):
    """Write results.json (the run's final metrics and what produced them) atomically, so that it is the
    complete new file or not there, then print the RESULT line of `fields`, the last line of the run."""
    metrics.write_atomic(Path(run_dir) / "results.json",
                         (json.dumps(results, indent=2, default=str) + "\n").encode())
    print(result_line(kind, fields), flush=True)


def write_npz_atomic(path, arrays):
    """np.savez of {name: array}, atomically (safe_io.write_atomic). No array may need pickling (no object
    dtype), so that np.load reads the file without allow_pickle."""
    write_atomic(path, lambda f: np.savez(f, **{name: np.asarray(value) for name, value in arrays.items()},
                                         allow_pickle=False))
