"""PKU-MMD phase II skeletons -> one sample per action instance, in the NTU-style arrays the feeders read.

    python data_gen/pku_gendata.py --skeleton_path pku_v2/skeleton/ --label_path pku_v2/label/ \
        --split_file pku_v2/cross-subject.txt --out_folder data/ --workers 8

Inputs, one file per video named `<video>.txt` (e.g. `A01N01-L.txt`):
- skeleton_path/<video>.txt: one frame per line, 150 whitespace-separated numbers = 2 persons x 25
  joints (Kinect v2, NTU-25 joint order) x xyz; an absent person is all zeros.
- label_path/<video>.txt: one action instance per line, `label,start,end,confidence`, label 1-based.
- split_file: the official cross-subject split, a 'train' and a 'val' section of video names (the
  accepted format is in `read_split_file`). Only the videos it lists are converted.
Output: `<out_folder>/PKU-MMD-II/xsub/{train,val}_data_joint.npy` float32 (N, 3, 300, 25, 2),
`{part}_num_frame.npy` int64 (N,) and `{part}_label.pkl` = (list of sample names, list of labels),
written under temporary names and renamed only when both parts are complete.

Conventions:
- Frames: `start` and `end` are 1-based skeleton-file line numbers, both inclusive, so an instance is
  rows start-1 .. end-1 and has end - start + 1 frames. PKU-MMD does not document the base; with
  `--frame_base 0` they are read as 0-based rows instead. An instance reaching outside the video is an
  error (one at frame 0 says to try --frame_base 0), never silently clipped.
- Each instance becomes one sample named `<video>_<label-file line, 3 digits>` (e.g. `A01N01-L_007`),
  label = label - 1, checked against 1..num_classes (41 in phase II).
- Length: zero-padded to 300 frames. A longer instance is resampled to 300 evenly spaced frames, first
  and last kept (`fit_length`), rather than truncated, so the end of the action survives; its
  num_frame is then 300. (The NTU reader rejects files over 300 frames; NTU has none.)
- If person 1 is empty throughout an instance and person 2 is not, the two are swapped: the NTU
  normalisation centres and rotates on body slot 0 (the NTU reader ensures the same by sorting bodies
  by motion energy). Then `normalize_skeletons(topology=NTU_25)`, per sample.
- Any malformed input raises an error naming the file and the 1-based line; nothing final is written.

Shape legend: C coordinates (xyz), T frames, V joints, M persons, N samples.
"""
import functools
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import console  # noqa: E402
from data_gen.common import (  # noqa: E402
    MAX_FRAMES, DiskFullError, SkeletonFileError, all_or_nothing, normalized_batch, parallel_map, parse_number_table)
from options.checks import at_least, checked  # noqa: E402
from options.parser import ArgumentParser  # noqa: E402
from options.protocols import PARTS, prepared_folder  # noqa: E402
from skeleton import NTU_25  # noqa: E402

DATASET, PROTOCOL = "pku2", "cross_subject"  # the entry of options/protocols.py this converter writes
NUM_CLASSES = 41
NUM_PERSONS = 2
# A section header: text up to the first ':' starting with train / val / test, e.g. "Training videos:".
SPLIT_HEADER = re.compile(r"\s*(train|val|test)[^:]*:(.*)", re.IGNORECASE)


class ActionInstance(NamedTuple):
    """One label-file line: the 1-based label, first and last frame as written, and the line number."""

    label: int
    start: int
    end: int
    line: int


# ----------------------------------------------------------------------------- readers
def read_split_file(path):
    """Split file -> {'train': [video, ...], 'val': [video, ...]}, in file order.

    Expected format, as in PKU-MMD's cross-subject.txt:

        Training videos:
        A01N01-L, A01N01-M, A01N01-R, ...
        Validataion videos:
        A01N02-L, ...

    A header is a line whose text before the first ':' starts with 'train', or with 'val' or 'test'
    (any case, so the official 'Validataion' spelling works). Names are separated by commas and/or
    whitespace, may span any number of lines and may follow the header's colon; blank lines and
    trailing commas are fine. Names before any header, a missing, empty or repeated section and a
    video listed twice raise SkeletonFileError naming the file (and line).
    """
    sections, current = {}, None
    lines = Path(path).read_text(encoding="utf-8-sig").splitlines()  # -sig: a BOM must not hide the header
    for line_number, line in enumerate(lines, start=1):
        header = SPLIT_HEADER.fullmatch(line)
        if header:
            current = "train" if header[1].lower() == "train" else "val"
            if current in sections:
                raise SkeletonFileError(path, line_number, f"a second '{current}' section")
            sections[current] = []
            line = header[2]
        names = [name for name in re.split(r"[,\s]+", line) if name]
        if names:
            if current is None:
                raise SkeletonFileError(path, line_number, "video names before a 'Training videos:' header")
            sections[current] += names
    for part in PARTS:
        if not sections.get(part):
            raise SkeletonFileError(path, None, f"no '{part}' section with video names (expected "
                                                "'Training videos:' and 'Validation videos:' headers)")
    repeated = sorted(name for name, n in Counter(sections["train"] + sections["val"]).items() if n > 1)
    if repeated:
        raise SkeletonFileError(path, None, f"{len(repeated)} videos listed more than once, "
                                            f"e.g. {repeated[:3]}")
    return {part: sections[part] for part in PARTS}


def read_labels(path, num_classes=NUM_CLASSES):
    """Label file -> [ActionInstance, ...] in file order; blank lines are skipped.

    A line that is not `label,start,end,confidence` with integer label/start/end and a numeric
    confidence, a label outside 1..num_classes or start > end raises SkeletonFileError(path, line).
    """
    instances = []
    for line_number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        fields = [field.strip() for field in line.rstrip(",").split(",")]
        if len(fields) != 4:
            raise SkeletonFileError(path, line_number,
                                    f"expected 'label,start,end,confidence', found {line!r}")
        try:
            label, start, end = (int(field) for field in fields[:3])
            float(fields[3])  # the confidence is not used, but a non-number means a broken file
        except ValueError:
            raise SkeletonFileError(path, line_number, "expected integers 'label,start,end' and a numeric "
                                                       f"confidence, found {line!r}") from None
        if not 1 <= label <= num_classes:
            raise SkeletonFileError(path, line_number,
                                    f"label {label} outside 1..{num_classes} (see --num_classes)")
        if start > end:
            raise SkeletonFileError(path, line_number, f"start frame {start} after end frame {end}")
        instances.append(ActionInstance(label, start, end, line_number))
    return instances


def read_pku_skeleton(path):
    """Skeleton file -> (3, T, 25, 2) float32; each line is (person, joint, xyz) flattened."""
    num_joints = NTU_25.num_joints
    table = parse_number_table(Path(path).read_bytes(), NUM_PERSONS * num_joints * 3, path)  # (T, 150)
    if table.shape[0] == 0:
        raise SkeletonFileError(path, None, "no frames")
    people = table.reshape(-1, NUM_PERSONS, num_joints, 3)  # (T, M, V, C)
    return np.ascontiguousarray(people.transpose(3, 0, 2, 1))  # (C, T, V, M)


# ----------------------------------------------------------------------------- instances
def cut_instance(seq, instance, frame_base, label_path):
    """The frames of one action instance: seq (C, T, V, M) -> (C, end - start + 1, V, M), a view.

    frame_base: the frame number of the skeleton file's first line (1: frame f is row f - 1).
    label_path: the label file, named in the error when the instance does not fit in the video.
    """
    first, last = instance.start - frame_base, instance.end - frame_base
    if first < 0 or last >= seq.shape[1]:
        hint = "; are the frames 0-based? try --frame_base 0" if first < 0 and frame_base == 1 else ""
        raise SkeletonFileError(label_path, instance.line, f"frames {instance.start}..{instance.end} outside "
                                                           f"the video's {seq.shape[1]} frames, counted from "
                                                           f"{frame_base}{hint}")
    return seq[:, first:last + 1]


def main_body_first(seq):
    """Swap the two persons if person 1 is empty throughout and person 2 is not. seq: (C, T, V, 2)."""
    if not seq[..., 0].any() and seq[..., 1].any():
        return seq[..., ::-1]
    return seq


def convert_video(video, skeleton_path, label_path, num_classes=NUM_CLASSES, frame_base=1,
                  max_frames=MAX_FRAMES):
    """One video -> (names, labels, data (K, 3, max_frames, 25, 2) float32 normalised, num_frame (K,)).

    One entry per label-file instance, in file order; labels are 0-based. Runs in worker processes.
    """
    label_file = Path(label_path) / f"{video}.txt"
    instances = read_labels(label_file, num_classes)
    seq = read_pku_skeleton(Path(skeleton_path) / f"{video}.txt")  # (C, T_video, V, M)
    # A few instances per video; frames are sliced, not looped.
    cuts = [main_body_first(cut_instance(seq, instance, frame_base, label_file)) for instance in instances]
    data, num_frame = normalized_batch(cuts, max_frames, NTU_25, NUM_PERSONS)
    names = [f"{video}_{instance.line:03d}" for instance in instances]
    return names, [instance.label - 1 for instance in instances], data, num_frame


# ----------------------------------------------------------------------------- conversion
def check_inputs(videos, skeleton_path, label_path):
    """Every listed video needs a skeleton and a label file; name the missing ones."""
    for folder, kind in ((skeleton_path, "skeleton"), (label_path, "label")):
        missing = [f"{video}.txt" for video in videos if not (Path(folder) / f"{video}.txt").is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} videos of the split have no {kind} file in {folder}, "
                                    f"e.g. {missing[:3]}")


def gendata(skeleton_path, label_path, split_file, out_folder, workers=1, num_classes=NUM_CLASSES,
            frame_base=1, max_frames=MAX_FRAMES, progress=True):
    """Convert PKU-MMD II into its prepared folder (`<out_folder>/PKU-MMD-II/xsub`); returns {part: samples}.

    Videos are read and normalised by `workers` processes and streamed into the output files, so
    memory holds a few videos, not the data set.
    """
    split = read_split_file(split_file)
    check_inputs(split["train"] + split["val"], skeleton_path, label_path)
    out_dir = prepared_folder(out_folder, DATASET, PROTOCOL)
    sample_shape = (3, max_frames, NTU_25.num_joints, NUM_PERSONS)
    convert = functools.partial(convert_video, skeleton_path=skeleton_path, label_path=label_path,
                                num_classes=num_classes, frame_base=frame_base, max_frames=max_frames)
    # Label files are tiny: count the instances first so the output can be checked and allocated up front.
    capacities = {part: sum(len(read_labels(Path(label_path) / f"{video}.txt", num_classes)) for video in split[part])
                  for part in PARTS}
    with all_or_nothing(out_dir, {(out_dir, part): capacities[part] for part in PARTS}, sample_shape) as output:
        for part in PARTS:
            results = parallel_map(convert, split[part], workers)
            for names, labels, data, num_frame in console.progress_bar(results, total=len(split[part]), unit="video",
                                                                       desc=f"PKU-MMD II {part}", disable=not progress):
                output.write(out_dir, part, data, names, labels, num_frame)
    return {part: count for (_, part), count in output.counts.items()}


def main(argv=None):
    parser = ArgumentParser(description="PKU-MMD phase II -> NTU-style instance arrays (x-sub).")
    parser.add_argument("--skeleton_path", required=True, help="folder of <video>.txt skeleton files")
    parser.add_argument("--label_path", required=True, help="folder of <video>.txt label files")
    parser.add_argument("--split_file", required=True,
                        help="official cross-subject split: 'Training videos:' and 'Validation videos:' "
                             "sections of comma-separated video names")
    parser.add_argument("--out_folder", default="data",
                        help=f"the data root, parent of {prepared_folder('', DATASET, PROTOCOL)}")
    parser.add_argument("--workers", type=int, default=1, action=checked(at_least(1)),
                        help="parallel reader processes (1: read in this process)")
    parser.add_argument("--num_classes", type=int, default=NUM_CLASSES, action=checked(at_least(1)),
                        help="labels must lie in 1..num_classes (41 action classes in phase II)")
    parser.add_argument("--frame_base", type=int, choices=(0, 1), default=1,
                        help="frame number of a skeleton file's first line, as the label files count")
    parser.add_argument("--max_frames", type=int, default=MAX_FRAMES, action=checked(at_least(1)),
                        help="frames per padded sample (longer instances are resampled to it)")
    args = parser.parse_args(argv)
    for path in (args.skeleton_path, args.label_path, args.split_file):
        if not Path(path).exists():
            sys.exit(f"error: {path} does not exist")
    start = time.time()
    try:
        counts = gendata(args.skeleton_path, args.label_path, args.split_file, args.out_folder, args.workers,
                         args.num_classes, args.frame_base, args.max_frames)
    except (ValueError, FileNotFoundError, DiskFullError) as error:  # SkeletonFileError is a ValueError
        sys.exit(f"error: {error}")
    print(f"PKU-MMD II x-sub: {counts['train']} train / {counts['val']} val instances in "
          f"{prepared_folder(args.out_folder, DATASET, PROTOCOL)} ({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
