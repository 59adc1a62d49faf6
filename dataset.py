"""Build the feeders of a (dataset, protocol) pair from the table in options/protocols.py.

    protocol = get_protocol("ntu60", "cross_subject")      # sizes for the model
    view = view_config(args, protocol)                     # options/pretrain.py: the run's ViewConfig
    pretrain = build_pretrain_dataset(data_root, "ntu60", "cross_subject", view=view, seed=args.seed)
    train, val = build_downstream_datasets(data_root, "ntu60", "cross_subject")
    train, val = build_downstream_datasets("data/my_dataset", "custom", None)  # from its metadata.json

Besides opening the files, the builders check that the arrays match the protocol's skeleton
(coordinates C, joints V, persons M) and that labels fit its class count, so a wrong folder fails
at startup.
"""
import pickle
from pathlib import Path

import numpy as np

from feeder.augmentations import RELEASED_VIEW
from feeder.feeder import DownstreamDataset, PretrainDataset, RawPretrainDataset
from options.protocols import get_protocol, split_paths
from safe_io import DataFileError, check_label_range, load_labels


def split_files(data_root, entry, part):
    """(data, num_frame, label) paths of split `part` ("train" or "val") of a Protocol entry."""
    return split_paths(Path(data_root) / entry.folder, part)


def write_split(folder, part, data, num_frames, names, labels):
    """Write one split in the released layout (the inverse of what the feeders read).

    data: float32 (N, C, T, V, M); num_frames: (N,) real frame counts; names: N str; labels: N ints.
    Labels are stored as plain Python ints, so reading them back needs no numpy globals.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data_path, num_frame_path, label_path = split_paths(folder, part)
    np.save(data_path, np.asarray(data, dtype=np.float32))
    np.save(num_frame_path, np.asarray(num_frames, dtype=np.int64))
    with open(label_path, "wb") as f:
        pickle.dump((list(names), [int(y) for y in labels]), f)


def num_classes(data_root, dataset, protocol):
    """The protocol's class count: from the table (or a custom folder's metadata.json), or 1 + the largest
    train/val label when the table leaves it open (the demo data)."""
    entry = get_protocol(dataset, protocol, data_root)
    if entry.num_classes is not None:
        return entry.num_classes
    labels = [load_labels(split_files(data_root, entry, part)[2])[1] for part in ("train", "val")]
    return int(np.concatenate(labels).max()) + 1


def _check_matches(split, entry):
    """The split's arrays hold the protocol's skeleton: (N, C, T, V, M) with its C, V and M."""
    _, num_coords, _, num_joints, num_persons = split.shape
    if (num_coords, num_joints, num_persons) != (entry.num_coords, entry.num_joints, entry.num_persons):
        raise DataFileError(
            f"{split.data_path}: {num_coords} coordinates x {num_joints} joints x {num_persons} persons, but "
            f"{entry.title} expects {entry.num_coords} x {entry.num_joints} x "
            f"{entry.num_persons} ({entry.topology.name})")


def build_pretrain_dataset(data_root, dataset, protocol, *, view, seed, check_all_finite=False, raw=False):
    """The pretraining feeder over the protocol's train split: four augmented views per sample.

    view: the run's ViewConfig (options/pretrain.py `view_config`); seed: the run's seed (views depend
    on (seed, epoch, index) only); check_all_finite: scan every sample for NaN/Inf up front instead of
    at read time; raw: return raw samples and their frame counts instead (RawPretrainDataset), whose
    views feeder/batch_augment.py draws on the device with the same `view` and `seed`.
    """
    entry = get_protocol(dataset, protocol, data_root)
    files = split_files(data_root, entry, "train")
    if raw:
        split = RawPretrainDataset(*files, check_all_finite=check_all_finite)
    else:
        split = PretrainDataset(*files, view=view, seed=seed, check_all_finite=check_all_finite)
    _check_matches(split, entry)
    return split


def build_downstream_datasets(data_root, dataset, protocol, *, view=RELEASED_VIEW, check_all_finite=False):
    """The (train, val) feeders for linear evaluation and kNN: whole sequences resampled to
    view.out_frames (the released clip length unless the encoder was trained on another), with labels.

    Both splits must hold samples."""
    entry = get_protocol(dataset, protocol, data_root)
    classes = num_classes(data_root, dataset, protocol)
    splits = []
    for part in ("train", "val"):
        split = DownstreamDataset(*split_files(data_root, entry, part), out_frames=view.out_frames,
                                  check_all_finite=check_all_finite)
        if len(split) == 0:  # a probe with nothing to train on or to score would report a meaningless 0%
            raise DataFileError(f"{split.data_path}: the {part} split holds no samples")
        _check_matches(split, entry)
        check_label_range(split.labels, classes, split.label_path)
        splits.append(split)
    return tuple(splits)
