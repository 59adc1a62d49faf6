"""PYSKL / MMAction2 3D annotation pickles -> the released NTU layout, for every protocol of the dataset.

    python data_gen/pyskl_gendata.py --annotation_path ntu60_3danno.pkl --dataset ntu60 --out_folder data/
    python data_gen/pyskl_gendata.py --annotation_path ntu120_3danno.pkl --dataset ntu120 --out_folder data/

Input, as PYSKL documents its annotation files: a pickle of a dict with
- 'split': {split name: [frame_dir, ...]}, here xsub_train / xsub_val with xview_train / xview_val
  (NTU-60) or xset_train / xset_val (NTU-120);
- 'annotations': a list of dicts, each with 'frame_dir' (the NTU name, e.g. 'S001C001P001R001A001'),
  'label' (0-based), 'total_frames' (T) and 'keypoint', an (M, T, V=25, C=3) float array of Kinect
  coordinates in metres (float16 in PYSKL's files); other keys (keypoint_score, ...) are not read.
Output: the same files as data_gen/ntu_gendata.py, in the same prepared folders (options/protocols.py):
`{train,val}_data_joint.npy` float32 (N, 3, 300, 25, 2), `{train,val}_num_frame.npy` int64 (N,) = T and
`{train,val}_label.pkl` = (names, labels), samples sorted by name, each name `<frame_dir>.skeleton` as
the released label files have it.

Conventions, so that the same skeletons give the same arrays as ntu_gendata.py:
- bodies are ranked by the released motion energy and the two highest kept, highest first (PYSKL ranks
  by variance and may order them differently); a one-body annotation gets an empty second body;
- then zero-padding to 300 frames and the released normalisation (data_gen/normalize.py);
- an annotation longer than 300 frames is an error, as an NTU file is (no NTU sample is longer).
PYSKL made its annotations from the raw files with its own denoising and trimmed empty frames at both
ends, so its arrays are not those that ntu_gendata.py makes from the raw release.

The pickle is read with the project's restricted unpickler (safe_io.load_array_pickle): a file that
would run code is refused, naming the file. Every annotation is checked before anything is written:
a missing key or split, a frame_dir listed but not annotated, zero frames, a NaN, V or C other than
25 and 3, or a label outside the dataset's classes stops the run with one line naming the file and
the entry.

Shape legend: M bodies, T frames, V joints, C coordinates (xyz), N samples.
"""
import contextlib
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import console  # noqa: E402
from data_gen.common import (  # noqa: E402
    MAX_ABS_COORDINATE, MAX_FRAMES, DiskFullError, SkeletonFileError, all_or_nothing, main_bodies, normalized_batch,
    parallel_map)
from options.checks import at_least, checked  # noqa: E402
from options.parser import ArgumentParser  # noqa: E402
from options.protocols import PARTS, get_protocol, prepared_folder, protocols_of  # noqa: E402
from safe_io import DataFileError, load_array_pickle  # noqa: E402
from skeleton import NTU_25  # noqa: E402

DATASETS = ("ntu60", "ntu120")
NUM_BODIES = 2  # bodies kept per sample, as ntu_gendata.py keeps them
# PYSKL's split names: protocol -> prefix; part "train" is <prefix>_train, "val" <prefix>_val.
SPLIT_PREFIX = {"cross_subject": "xsub", "cross_view": "xview", "cross_setup": "xset"}
ANNOTATION_KEYS = ("frame_dir", "label", "total_frames", "keypoint")
NAME_SUFFIX = ".skeleton"  # the released label files name a sample by its raw file


def split_name(protocol, part):
    """PYSKL's name of a protocol's part: ("cross_subject", "train") -> "xsub_train"."""
    return f"{SPLIT_PREFIX[protocol]}_{part}"


# ----------------------------------------------------------------------------------------------------------
# Reading and checking


def read_splits(content, path, dataset):
    """{(protocol, part): [frame_dir, ...]} of every protocol of `dataset`, from the pickle's 'split'."""
    if not isinstance(content, dict) or not {"split", "annotations"} <= content.keys():
        found = sorted(map(str, content)) if isinstance(content, dict) else type(content).__name__
        raise SkeletonFileError(path, None, f"expected a dict with 'split' and 'annotations', found {found}")
    splits = content["split"]
    if not isinstance(splits, dict):
        raise SkeletonFileError(path, None, f"'split' is a {type(splits).__name__}, expected a dict")
    lists = {}
    for protocol in protocols_of(dataset):
        for part in PARTS:
            name = split_name(protocol, part)
            if name not in splits:
                present = ", ".join(map(str, splits)) or "none"
                raise SkeletonFileError(path, None, f"no split '{name}', which {dataset} {protocol} needs (the "
                                                    f"file has {present}); is --dataset right?")
            names = splits[name]
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise SkeletonFileError(path, None, f"split '{name}' is not a list of frame_dir names")
            if not names:
                raise SkeletonFileError(path, None, f"split '{name}' lists no sample")
            lists[protocol, part] = list(names)
        overlap = sorted(set(lists[protocol, "train"]) & set(lists[protocol, "val"]))
        if overlap:
            raise SkeletonFileError(path, None, f"{len(overlap)} samples in both {split_name(protocol, 'train')} "
                                                f"and {split_name(protocol, 'val')}, e.g. {overlap[:3]}")
    return lists


def annotation_entry(position, annotation):
    """How errors name an annotation: "annotation 7 ('S001C002P003R001A004')" (its frame_dir when it has one)."""
    name = annotation.get("frame_dir") if isinstance(annotation, dict) else None
    return f"annotation {position}" + (f" ('{name}')" if isinstance(name, str) else "")


def index_annotations(content, path):
    """{frame_dir: (position, annotation)} of the pickle's 'annotations' list; each entry is a dict with
    ANNOTATION_KEYS and a unique frame_dir."""
    annotations = content["annotations"]
    if not isinstance(annotations, (list, tuple)):
        raise SkeletonFileError(path, None, f"'annotations' is a {type(annotations).__name__}, expected a list")
    by_name = {}
    for position, annotation in enumerate(annotations):
        entry = annotation_entry(position, annotation)
        if not isinstance(annotation, dict):
            raise SkeletonFileError(path, None, f"a {type(annotation).__name__}, expected a dict", entry)
        missing = [key for key in ANNOTATION_KEYS if key not in annotation]
        if missing:
            raise SkeletonFileError(path, None, f"no {', '.join(map(repr, missing))} (has {sorted(annotation)})",
                                    entry)
        name = annotation["frame_dir"]
        if not isinstance(name, str) or not name:
            raise SkeletonFileError(path, None, f"frame_dir {name!r} is not a name", entry)
        if name in by_name:
            raise SkeletonFileError(path, None, f"frame_dir {name!r} again (first at annotation "
                                                f"{by_name[name][0]})", entry)
        by_name[name] = position, annotation
    return by_name


def annotation_problem(annotation, num_classes, max_frames):
    """What makes one annotation unusable, or None: its keypoint must be (M >= 1, 1..max_frames, 25, 3)
    finite floats of at most MAX_ABS_COORDINATE (metres), T = total_frames, label in [0, num_classes)."""
    label = annotation["label"]
    if not isinstance(label, (int, np.integer)) or isinstance(label, bool):  # True is no class number
        return f"label {label!r} is not an integer"
    if not 0 <= label < num_classes:
        return f"label {label} outside 0..{num_classes - 1}"
    keypoint = annotation["keypoint"]
    if not isinstance(keypoint, np.ndarray) or keypoint.dtype.kind != "f" or keypoint.ndim != 4:
        shown = f"{keypoint.dtype} array of shape {keypoint.shape}" if isinstance(keypoint, np.ndarray) else \
            type(keypoint).__name__
        return f"keypoint is a {shown}, expected a float array (M, T, V, C)"
    num_bodies, num_frames, num_joints, num_coords = keypoint.shape
    if (num_joints, num_coords) != (NTU_25.num_joints, 3):
        return (f"keypoint has {num_joints} joints x {num_coords} coordinates, expected {NTU_25.num_joints} x 3 "
                f"(a 3D NTU annotation such as ntu60_3danno.pkl; 2D ones are not NTU's layout)")
    if num_bodies == 0 or num_frames == 0:
        return f"keypoint of shape {keypoint.shape} holds no {'body' if num_bodies == 0 else 'frame'}"
    if annotation["total_frames"] != num_frames:
        return f"total_frames is {annotation['total_frames']!r} but keypoint has {num_frames} frames"
    if num_frames > max_frames:
        return f"{num_frames} frames, more than the {max_frames} frames of the output"
    # In float64: float16 cannot hold the bound (it would become Inf and let Inf through).
    if not np.isfinite(keypoint).all() or float(np.abs(keypoint).max()) > MAX_ABS_COORDINATE:
        return f"keypoint holds NaN, Inf or a coordinate beyond {MAX_ABS_COORDINATE:g} m"
    return None


def read_annotations(path, dataset, max_frames=MAX_FRAMES):
    """Read and check a PYSKL pickle -> (splits {(protocol, part): names}, {frame_dir: annotation}).

    Only annotations that a split of `dataset` lists are checked and returned; any problem raises
    SkeletonFileError naming the file and the entry (DataFileError for a pickle that is not safe).
    """
    content = load_array_pickle(path, "annotation pickle")
    splits = read_splits(content, path, dataset)
    indexed = index_annotations(content, path)
    num_classes = get_protocol(dataset, protocols_of(dataset)[0]).num_classes
    used = {}
    for (protocol, part), names in splits.items():
        for name in names:
            if name not in indexed:
                raise SkeletonFileError(path, None, f"'{name}' of split '{split_name(protocol, part)}' has no "
                                                    "annotation")
            position, annotation = indexed[name]
            if name not in used:
                problem = annotation_problem(annotation, num_classes, max_frames)
                if problem is not None:
                    raise SkeletonFileError(path, None, problem, annotation_entry(position, annotation))
                used[name] = annotation
    return splits, used


# ----------------------------------------------------------------------------------------------------------
# Converting (runs in the worker processes)


def to_sequence(keypoint):
    """PYSKL keypoint (M, T, V, C) -> (C, T, V, NUM_BODIES) float32, bodies ranked as ntu_gendata ranks them."""
    bodies = main_bodies(keypoint.astype(np.float64), NUM_BODIES)  # (NUM_BODIES, T, V, C)
    return bodies.transpose(3, 1, 2, 0).astype(np.float32)  # (C, T, V, M)


def convert_chunk(keypoints, max_frames=MAX_FRAMES):
    """Keypoint arrays -> (data (n, 3, max_frames, 25, 2) float32 normalised, [num_frame, ...])."""
    return normalized_batch([to_sequence(keypoint) for keypoint in keypoints], max_frames, NTU_25, NUM_BODIES)


def gendata(annotation_path, out_folder, dataset, workers=1, max_frames=MAX_FRAMES, chunk_size=16, progress=True):
    """Convert a PYSKL annotation pickle into every protocol of `dataset` (ntu60 or ntu120).

    Writes each protocol's `prepared_folder(out_folder, dataset, protocol)`, all parts or none, and
    returns {"xsub/train": samples, ...}. Every annotation a split lists is checked before anything is
    written (see `read_annotations`); each is normalised once and written to every part that lists it.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    splits, annotations = read_annotations(annotation_path, dataset, max_frames)
    folders = {protocol: prepared_folder(out_folder, dataset, protocol) for protocol in protocols_of(dataset)}
    root = next(iter(folders.values())).parent  # the dataset's folder, e.g. NTU-RGB-D-60-AGCN
    members = {(folders[protocol], part): set(names) for (protocol, part), names in splits.items()}
    capacities = {key: len(names) for key, names in members.items()}

    names = sorted(annotations)  # as ntu_gendata.py sorts its files; every part comes out sorted
    chunks = [names[i:i + chunk_size] for i in range(0, len(names), chunk_size)]
    convert = functools.partial(convert_chunk, max_frames=max_frames)
    keypoints = ([annotations[name]["keypoint"] for name in chunk] for chunk in chunks)
    sample_shape = (3, max_frames, NTU_25.num_joints, NUM_BODIES)
    with all_or_nothing(root, capacities, sample_shape) as output:
        # contextlib.closing shuts the pool down even when the loop below is interrupted.
        converted = contextlib.closing(parallel_map(convert, keypoints, workers))
        bar = console.progress_bar(total=len(names), unit="sample", disable=not progress, desc=dataset)
        with converted as results, bar:
            for chunk, (data, num_frames) in zip(chunks, results):
                for (folder, part), member in members.items():
                    rows = [i for i, name in enumerate(chunk) if name in member]
                    output.write(folder, part, data[rows], [chunk[i] + NAME_SUFFIX for i in rows],
                                 [int(annotations[chunk[i]]["label"]) for i in rows], [num_frames[i] for i in rows])
                bar.update(len(chunk))
    return {f"{folder.relative_to(root)}/{part}": count for (folder, part), count in output.counts.items()}


def main(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotation_path", required=True,
                        help="PYSKL 3D annotation pickle: ntu60_3danno.pkl or ntu120_3danno.pkl")
    parser.add_argument("--dataset", required=True, choices=DATASETS,
                        help="which NTU the file holds: ntu60 (x-sub, x-view) or ntu120 (x-sub, x-setup)")
    parser.add_argument("--out_folder", default="data",
                        help="the data root, parent of the prepared folders (NTU-RGB-D-60-AGCN/xsub, ...)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), action=checked(at_least(1)),
                        help="parallel normalising processes (1: in this process)")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        counts = gendata(args.annotation_path, args.out_folder, args.dataset, workers=args.workers)
    except (SkeletonFileError, DataFileError, DiskFullError) as error:  # a message, no traceback
        sys.exit(f"error: {error}")
    print(f"{args.annotation_path} -> {args.out_folder} ({time.time() - start:.1f} s)")
    for part, count in counts.items():
        print(f"  {part}: {count}")


if __name__ == "__main__":
    main()
