"""NTU RGB+D 60/120: raw `.skeleton` files -> normalised, padded arrays in the released layout.

    python data_gen/ntu_gendata.py --data_path nturgb+d_skeletons/ --dataset ntu60 \
        --ignored_sample_path NTU_RGBD_samples_with_missing_skeletons.txt --out_folder data/ --workers 8
    python data_gen/ntu_gendata.py --data_path nturgbd_skeletons_s001_to_s017/ \
        nturgbd_skeletons_s018_to_s032/ --dataset ntu120 \
        --ignored_sample_path NTU_RGBD120_samples_with_missing_skeletons.txt --out_folder data/
    cd data_gen && python ntu_gendata.py      # the released call: the released layout's default paths

writes, under `out_folder`, the folder of each of the dataset's protocols in options/protocols.py
(`NTU-RGB-D-60-AGCN/{xsub,xview}` or `NTU-RGB-D-120-AGCN/{xsub,xsetup}`), each with
`{train,val}_data_joint.npy` float32 (N, 3, 300, 25, 2), `{train,val}_num_frame.npy` int64 (N,) (the file's
frame count) and `{train,val}_label.pkl` = (list of file names, list of labels = action - 1).
Without paths it uses the released layout below the repository root: NTU-120 (the released default
dataset; `--dataset ntu60` for NTU-60) from `data/nturgbd_raw_120/nturgb+d_skeletons/`, leaving out
the samples of `data/nturgbd_raw_120/samples_with_missing_skeletons.txt`, into `data/`.

How it runs (SPEC.md, "NTU RGB+D preprocessing"):
- every file is parsed once for all benchmarks of the dataset, in parallel over chunks of files;
  each worker reads its chunk, pads it to 300 frames and normalises it as one batch;
- the main process streams the rows into `.npy` files under temporary names and renames
  them (os.replace) only when everything succeeded, so an interrupted run leaves nothing that looks
  finished;
- a malformed file raises `SkeletonFileError` naming the file and the 1-based line. By default every
  file is checked, all problems are reported together and nothing final is written; with
  `--skip-invalid` bad files are left out and listed in `skipped_files.txt` beside the benchmarks.

Decisions beyond the released code (which reads files in `os.listdir` order and would crash on a file
longer than 300 frames): samples are sorted by name; a file with more than `max_frames` frames is an
invalid file rather than silently truncated (300 frames hold every NTU sample); for `ntu60`, files of
the NTU-120 extension (setup > 17 or action > 60) are left out, so pointing it at the full NTU-120
folder still yields NTU-60. Sample names keep their `.skeleton` extension, as released. A name whose
ids lie outside NTU-120's (e.g. action A000 or A999, which would become label -1 or 998) is an
invalid file. A missing-skeleton list that does not exist or holds no sample name is refused; names
in it that match no file are counted in a warning. The output's size is checked against the free
disk space before anything is written.

Shape legend: C = 3 coordinates (xyz), T frames, V = 25 joints, M bodies.
"""
import contextlib
import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import console  # noqa: E402
from data_gen.common import (  # noqa: E402
    MAX_ABS_COORDINATE, MAX_FRAMES, DiskFullError, SkeletonFileError, all_or_nothing, fields_per_line, main_bodies,
    normalized_batch, parallel_map)
from options.checks import at_least, checked  # noqa: E402
from options.parser import ArgumentParser  # noqa: E402
from options.protocols import PARTS, prepared_folder, protocols_of  # noqa: E402
from skeleton import NTU_25  # noqa: E402

MAX_BODIES_READ = 4  # body slots read per file (Kinect v2 tracks up to 6; the released code keeps 4)
MAX_BODIES_KEPT = 2  # of which the two with the highest energy are kept
MAX_BODIES_TRACKED = 6  # bodies Kinect v2 tracks at once: no frame of a recording lists more
MAX_LINE_BYTES = 256  # a joint line (12 numbers) takes about 110 bytes, a body line about 60
BODY_FIELDS = 10  # bodyID clippedEdges hand{Left,Right}{Confidence,State} isRestricted leanX leanY state
JOINT_FIELDS = 12  # x y z depthX depthY colorX colorY orientationW/X/Y/Z trackingState

NTU60_TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
NTU120_TRAIN_SUBJECTS = NTU60_TRAIN_SUBJECTS + (
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92,
    93, 94, 95, 97, 98, 100, 103)
TRAIN_CAMERAS = (2, 3)  # x-view; camera 1 is the validation view
# The datasets of options/protocols.py in the NTU format; their protocols and output folders come from
# that table, the split rule of each protocol is in `is_training`. "demo" is synthetic NTU-format data
# (data_gen/synthetic.py) split by NTU-60's subjects.
DATASETS = ("ntu60", "ntu120", "demo")
NTU60_LAST_SETUP, NTU60_LAST_ACTION = 17, 60
# The ids NTU RGB+D 120 uses, which hold those of NTU-60: a name outside them is no NTU recording (an
# action A000 or A999 would become label -1 or 998).
ID_RANGES = {"setup": ("S", 32), "camera": ("C", 3), "subject": ("P", 106), "replication": ("R", 2),
             "action": ("A", 120)}

# The released layout under the repository's data/ folder, what `cd data_gen; python ntu_gendata.py`
# reads and writes when no path is given: dataset -> folder of nturgb+d_skeletons/ and
# samples_with_missing_skeletons.txt. Taken from the repository root, so the same defaults hold from
# data_gen/ (as released) and from the root.
REPO_ROOT = Path(__file__).resolve().parents[1]
RELEASED_RAW_FOLDERS = {"ntu60": "data/nturgbd_raw", "ntu120": "data/nturgbd_raw_120"}
RELEASED_DEFAULT_DATASET = "ntu120"  # the released script converts NTU-120 when run without arguments
SKIPPED_LIST = "skipped_files.txt"
NAME_PATTERN = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


class DataPathError(ValueError):
    """The data paths cannot be used: a missing folder, no `.skeleton` files, or a name in two folders."""


class InvalidFilesError(RuntimeError):
    """Raised by `gendata` when files are invalid and `skip_invalid` is off; nothing final was written."""

    def __init__(self, errors):
        self.errors = list(errors)
        listing = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(f"{len(self.errors)} invalid skeleton file(s), nothing written:\n{listing}\n"
                         "Fix or remove them, or re-run with --skip-invalid to leave them out.")


# ----------------------------------------------------------------------------------------------------------
# Reading one raw file

# The bytes of a skeleton file: printable ASCII, tab, LF and CR. Others never come from the sensor, and
# the parsers disagree on them (np.loadtxt splits fields at \x85 and \xa0, `fields_per_line` does not),
# so a file holding one could be read to wrong numbers without an error.
TEXT_BYTES = np.zeros(256, dtype=bool)
TEXT_BYTES[[ord("\t"), ord("\n"), ord("\r")]] = True
TEXT_BYTES[ord(" "):ord("~") + 1] = True


def _check_text(path, raw):
    """Raise SkeletonFileError at the first line holding a byte outside TEXT_BYTES."""
    byte = np.frombuffer(raw, dtype=np.uint8)
    bad = np.flatnonzero(~TEXT_BYTES[byte])
    if len(bad):
        line = int(np.count_nonzero(byte[:bad[0]] == ord("\n"))) + 1
        raise SkeletonFileError(path, line, f"unexpected byte 0x{byte[bad[0]]:02x}: not a skeleton text file")


@dataclass
class _Layout:
    """Where the joint lines of each body are: parallel lists, one entry per (frame, body)."""

    num_frames: int
    frame: list
    slot: list
    first_joint_line: list  # 0-based index of the body's first joint line


def _read_count(path, lines, fields, index, end, what):
    """The non-negative integer alone on line `index` (0-based), or a SkeletonFileError saying why not."""
    if index >= end:
        raise SkeletonFileError(path, index + 1, f"file ends early: expected {what}")
    if fields[index] != 1:
        found = "an empty line" if fields[index] == 0 else f"{fields[index]} fields"
        raise SkeletonFileError(path, index + 1, f"expected {what} (one integer), found {found}")
    try:
        value = int(lines[index])
    except ValueError:
        raise SkeletonFileError(path, index + 1, f"expected {what}, found {lines[index].strip()!r}") from None
    if value < 0:
        raise SkeletonFileError(path, index + 1, f"expected {what}, found the negative {value}")
    return value


def _walk(path, lines, fields, num_joints):
    """Follow the frame/body/joint structure line by line (one step per body, not per joint)."""
    end = int(np.flatnonzero(fields)[-1]) + 1 if fields.any() else 0  # ignore trailing blank lines
    num_frames = _read_count(path, lines, fields, 0, end, "the frame count")
    if num_frames == 0:
        raise SkeletonFileError(path, 1, "the file has zero frames")
    layout = _Layout(num_frames, [], [], [])
    line = 1
    for t in range(num_frames):
        num_bodies = _read_count(path, lines, fields, line, end, f"the body count of frame {t + 1}")
        line += 1
        for m in range(num_bodies):
            where = f"body {m + 1} of frame {t + 1}"
            if line >= end or fields[line] != BODY_FIELDS:
                found = "the end of the file" if line >= end else f"{fields[line]} fields"
                raise SkeletonFileError(path, line + 1, f"expected the {BODY_FIELDS} fields of {where}, "
                                                        f"found {found}")
            joints = _read_count(path, lines, fields, line + 1, end, f"the joint count of {where}")
            if joints != num_joints:
                raise SkeletonFileError(path, line + 2, f"{where} has {joints} joints, expected {num_joints}")
            line += 2
            if line + num_joints > end:
                raise SkeletonFileError(path, end + 1, f"file ends early: expected the {num_joints} joint "
                                                       f"lines of {where}")
            layout.frame.append(t)
            layout.slot.append(m)
            layout.first_joint_line.append(line)
            line += num_joints
    if line < end:
        raise SkeletonFileError(path, line + 1, f"unexpected content after the last of {num_frames} frames")
    return layout


def _first_bad_xyz_line(lines, joint_lines):
    """Slow path, only after a failed parse: the first joint line whose x y z are not numbers.

    Each line is parsed by np.loadtxt again, the parser that failed: Python's float() accepts more
    (e.g. "1_0") and would miss the line np.loadtxt refused.
    """
    for index in joint_lines:
        try:
            np.loadtxt([lines[index]], usecols=(0, 1, 2), comments=None, ndmin=2)
        except ValueError:
            return index
    raise AssertionError("a joint line failed to parse, but every line parses on its own")


def _parse_xyz(path, lines, fields, joint_lines):
    """x y z of the given joint lines -> (len(joint_lines), 3) float64, checking every line's fields."""
    joint_lines = np.asarray(joint_lines)
    if len(joint_lines) == 0:  # nobody in any frame: np.loadtxt would warn about empty input
        return np.zeros((0, 3))
    wrong = joint_lines[fields[joint_lines] != JOINT_FIELDS]
    if len(wrong):
        raise SkeletonFileError(path, int(wrong[0]) + 1, f"expected the {JOINT_FIELDS} fields of a joint, "
                                                          f"found {fields[wrong[0]]}")
    try:
        xyz = np.loadtxt([lines[i] for i in joint_lines], usecols=(0, 1, 2), comments=None, ndmin=2)
    except ValueError:
        bad = int(_first_bad_xyz_line(lines, joint_lines))
        raise SkeletonFileError(path, bad + 1, f"x y z are not numbers: {lines[bad].strip()!r}") from None
    out_of_range = joint_lines[~(np.abs(xyz) <= MAX_ABS_COORDINATE).all(axis=1)]  # NaN compares False
    if len(out_of_range):
        bad = int(out_of_range[0])
        raise SkeletonFileError(path, bad + 1, f"x y z must be finite, at most {MAX_ABS_COORDINATE:g} m "
                                               f"in magnitude: {lines[bad].strip()!r}")
    return xyz


def max_file_lines(max_frames, num_joints=NTU_25.num_joints):
    """Lines of the longest file a recording of `max_frames` frames can be: the frame count, then per
    frame a body count and, for each of at most MAX_BODIES_TRACKED bodies, its info line, joint count
    and joint lines (48,901 lines at 300 frames of 25 joints)."""
    return 1 + max_frames * (1 + MAX_BODIES_TRACKED * (2 + num_joints))


def max_file_bytes(max_frames, num_joints=NTU_25.num_joints):
    """Bytes of the largest file a recording of `max_frames` frames can be (12.5 MB at 300 frames)."""
    return max_file_lines(max_frames, num_joints) * MAX_LINE_BYTES


def _read_bounded(path, max_bytes):
    """The file's bytes; a file larger than `max_bytes` is refused unread."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise SkeletonFileError(path, None, f"{size} bytes, more than the {max_bytes} that a recording of "
                                                    f"the output's frames can take")
            return f.read(size)
    except OSError as error:
        raise SkeletonFileError(path, None, f"cannot read: {error.strerror}") from None


def _declared_frames(raw):
    """The frame count on the first line, or None when it is not a lone integer (the full parse says why)."""
    end = raw.find(b"\n")
    try:
        return int(raw[:end if end >= 0 else len(raw)])
    except ValueError:
        return None


def read_xyz(path, num_joints=NTU_25.num_joints, num_bodies=MAX_BODIES_KEPT, max_frames=MAX_FRAMES):
    """Read a raw NTU `.skeleton` file -> (C=3, T, V, num_bodies) float32, T = the file's frame count.

    Bodies are slotted by their order within each frame (up to 4 slots); the `num_bodies` slots of
    highest energy are kept, highest first (ties, in practice only between empty slots: the lower slot
    first). Only x y z are used, but every line is checked; a malformed file raises SkeletonFileError
    with its 1-based line.

    Memory is bounded by `max_frames`, not by what a file claims: a file larger than max_file_bytes is
    refused unread, one declaring more than `max_frames` frames once its first line is read, one longer
    than max_file_lines before it is split into lines. Nothing proportional to a frame count above the
    limit is allocated: at 300 frames, the worst file allowed (12.5 MB of one-character fields) peaks
    at about 130 MiB of Python and numpy memory, a 300-frame file of six bodies at about 50 MiB, an
    NTU file at a few MiB (measured with tracemalloc; tests/test_bad_input.py).
    """
    raw = _read_bounded(path, max_file_bytes(max_frames, num_joints))
    declared = _declared_frames(raw)
    if declared is not None and declared > max_frames:
        raise SkeletonFileError(path, 1, f"{declared} frames, more than the {max_frames} frames of the output")
    _check_text(path, raw)
    num_lines = raw.count(b"\n") + (not raw.endswith(b"\n"))  # a last line may lack its newline
    if num_lines > max_file_lines(max_frames, num_joints):
        raise SkeletonFileError(path, None, f"{num_lines} lines, more than {max_frames} frames of at most "
                                            f"{MAX_BODIES_TRACKED} bodies can take")
    lines = raw.decode("ascii").split("\n")
    fields = fields_per_line(raw)
    layout = _walk(path, lines, fields, num_joints)

    first = np.asarray(layout.first_joint_line, dtype=np.int64)  # (bodies in the file,)
    joint_lines = (first[:, None] + np.arange(num_joints)).ravel()  # (bodies * V,)
    xyz = _parse_xyz(path, lines, fields, joint_lines).reshape(len(first), num_joints, 3)  # (B, V, C)

    slot, frame = np.asarray(layout.slot, dtype=np.int64), np.asarray(layout.frame, dtype=np.int64)
    read = slot < MAX_BODIES_READ  # later bodies of a crowded frame are dropped, as released
    bodies = np.zeros((MAX_BODIES_READ, layout.num_frames, num_joints, 3))  # (M, T, V, C)
    bodies[slot[read], frame[read]] = xyz[read]
    return main_bodies(bodies, num_bodies).transpose(3, 1, 2, 0).astype(np.float32)  # (C, T, V, M)


# ----------------------------------------------------------------------------------------------------------
# Sample names and splits


@dataclass(frozen=True)
class Sample:
    """One raw file and the ids encoded in its name SsssCcccPpppRrrrAaaa."""

    name: str  # file name, extension included (the released label files keep it)
    path: str
    setup: int
    camera: int
    subject: int
    replication: int
    action: int

    @property
    def label(self):
        return self.action - 1


def parse_name(path):
    """A Sample for `path`, or None when its name is not SsssCcccPpppRrrrAaaa.skeleton."""
    path = Path(path)
    match = NAME_PATTERN.fullmatch(path.name.removesuffix(".skeleton"))
    if match is None:
        return None
    return Sample(path.name, str(path), *(int(group) for group in match.groups()))


def is_training(sample, dataset, protocol):
    """True when `sample` is in the training part of `protocol` (SPEC.md splits)."""
    if protocol == "cross_subject":
        subjects = NTU120_TRAIN_SUBJECTS if dataset == "ntu120" else NTU60_TRAIN_SUBJECTS
        return sample.subject in subjects
    if protocol == "cross_view":
        return sample.camera in TRAIN_CAMERAS
    if protocol == "cross_setup":
        return sample.setup % 2 == 0
    raise ValueError(f"unknown protocol {protocol!r}")


def id_problem(sample):
    """What is wrong with the ids in a sample's name, or None when each lies in ID_RANGES (from 1)."""
    for field, (letter, last) in ID_RANGES.items():
        value = getattr(sample, field)
        if not 1 <= value <= last:
            return f"{field} {letter}{value:03d} outside {letter}001..{letter}{last:03d}, the ids of NTU RGB+D 120"
    return None


def in_ntu60(sample):
    """NTU-60 is setups 1-17 with actions 1-60; NTU-120 adds actions to those setups and new setups."""
    return sample.setup <= NTU60_LAST_SETUP and sample.action <= NTU60_LAST_ACTION


def read_ignored(ignored_sample_path):
    """Sample names (without extension) in an official missing-skeleton list.

    Lines that are not a name SsssCcccPpppRrrrAaaa (the official lists open with two lines of text)
    are skipped. A missing file, or one without a single name, raises DataPathError.
    """
    if ignored_sample_path is None:
        return set()
    path = Path(ignored_sample_path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as error:
        raise DataPathError(f"missing-skeleton list {path}: {error.strerror} (give its path with "
                            f"--ignored_sample_path)") from None
    names = {line.strip().removesuffix(".skeleton") for line in lines}
    names = {name for name in names if NAME_PATTERN.fullmatch(name)}
    if not names:
        raise DataPathError(f"missing-skeleton list {path} holds no sample name (SsssCcccPpppRrrrAaaa, one a line)")
    return names


def list_samples(data_paths, dataset, ignored=frozenset()):
    """Every `.skeleton` file of the dataset under `data_paths`, sorted by name.

    Returns (samples, invalid, left_out): Samples to convert, a SkeletonFileError for each file whose
    name is not SsssCcccPpppRrrrAaaa or holds an id outside ID_RANGES, and the number of files left
    out on purpose (ignored list, or NTU-120-only files for ntu60).
    """
    paths = {}
    for folder in data_paths:
        folder = Path(folder)
        if not folder.is_dir():
            raise DataPathError(f"data path {folder} is not a folder")
        for path in folder.glob("*.skeleton"):
            if path.name in paths:
                raise DataPathError(f"{path.name} is in two data paths: {paths[path.name]} and {path}")
            paths[path.name] = path
    if not paths:
        raise DataPathError(f"no .skeleton files under {', '.join(map(str, data_paths))}")
    samples, invalid, left_out = [], [], 0
    for name in sorted(paths):
        sample = parse_name(paths[name])
        problem = "name is not SsssCcccPpppRrrrAaaa.skeleton" if sample is None else id_problem(sample)
        if problem is not None:
            invalid.append(SkeletonFileError(paths[name], None, problem))
        elif name.removesuffix(".skeleton") in ignored or (dataset == "ntu60" and not in_ntu60(sample)):
            left_out += 1
        else:
            samples.append(sample)
    return samples, invalid, left_out


def unmatched_ignored(ignored, data_paths):
    """The names of a missing-skeleton list that no `.skeleton` file under `data_paths` has."""
    present = {path.name.removesuffix(".skeleton") for folder in data_paths for path in Path(folder).glob("*.skeleton")}
    return ignored - present


# ----------------------------------------------------------------------------------------------------------
# Converting chunks of files (runs in the worker processes)


@dataclass
class Chunk:
    """What a worker returns for a chunk of files: the valid ones as one normalised batch, and errors."""

    names: list  # valid files, in input order
    num_frames: list
    data: np.ndarray  # (len(names), C, max_frames, V, M) float32, normalised
    errors: list  # SkeletonFileError for each invalid file


def convert_chunk(paths, max_frames=MAX_FRAMES, topology=NTU_25):
    """Read, pad to `max_frames` and normalise a list of raw files as one batch -> Chunk."""
    names, samples, errors = [], [], []
    for path in paths:
        try:
            samples.append(read_xyz(path, topology.num_joints, max_frames=max_frames))  # (C, T, V, M)
        except SkeletonFileError as error:
            errors.append(error)
            continue
        names.append(Path(path).name)
    data, num_frames = normalized_batch(samples, max_frames, topology, MAX_BODIES_KEPT)  # no file is longer
    return Chunk(names, num_frames, data, errors)


def _route(chunk, samples, dataset, output, folders):
    """Append each sample of a converted chunk to its part in every protocol (folders: protocol -> folder)."""
    for protocol, folder in folders.items():
        for part in PARTS:
            rows = [i for i, sample in enumerate(samples)
                    if is_training(sample, dataset, protocol) == (part == "train")]
            output.write(folder, part, chunk.data[rows], [samples[i].name for i in rows],
                         [samples[i].label for i in rows], [chunk.num_frames[i] for i in rows])


def _skipped_list(errors):
    """The skipped files, one per line: name, tab, reason (line number included)."""
    return "".join(f"{Path(error.path).name}\t{error}\n" for error in errors)


def gendata(data_paths, out_folder, dataset, ignored_sample_path=None, workers=1, skip_invalid=False,
            max_frames=MAX_FRAMES, chunk_size=16, progress=True):
    """Convert a folder (or several) of raw NTU files into every protocol of `dataset`.

    data_paths: folder or list of folders holding `*.skeleton` files. Writes each protocol's
    `prepared_folder(out_folder, dataset, protocol)` (see the module docstring). Returns a summary
    dict: {"converted", "left_out", "skipped" (messages), "parts": {"xsub/train": count, ...}, "folder"}.
    Raises InvalidFilesError (and writes nothing final) when a file is invalid and not `skip_invalid`,
    DiskFullError (before writing anything) when the output does not fit on the disk, or when the disk
    fills up all the same (nothing final written, no temporary file left).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASETS)}")
    data_paths = [data_paths] if isinstance(data_paths, (str, os.PathLike)) else list(data_paths)
    folders = {protocol: prepared_folder(out_folder, dataset, protocol) for protocol in protocols_of(dataset)}
    root = next(iter(folders.values())).parent  # the dataset's folder, e.g. NTU-RGB-D-60-AGCN
    ignored = read_ignored(ignored_sample_path)
    samples, errors, left_out = list_samples(data_paths, dataset, ignored)
    num_named_invalid = len(errors)
    unmatched = unmatched_ignored(ignored, data_paths)
    if unmatched:  # a list of another dataset, or a partial download: say so, the conversion is still right
        print(f"warning: {len(unmatched)} of the {len(ignored)} names in {ignored_sample_path} match no .skeleton "
              f"file under {', '.join(map(str, data_paths))}", file=sys.stderr)
    by_name = {sample.name: sample for sample in samples}

    sample_shape = (3, max_frames, NTU_25.num_joints, MAX_BODIES_KEPT)
    capacities = {}
    for protocol, folder in folders.items():
        train = sum(is_training(sample, dataset, protocol) for sample in samples)
        capacities.update({(folder, "train"): train, (folder, "val"): len(samples) - train})
    chunks = [[s.path for s in samples[i:i + chunk_size]] for i in range(0, len(samples), chunk_size)]
    convert = functools.partial(convert_chunk, max_frames=max_frames)
    with all_or_nothing(root, capacities, sample_shape, cut_copy=skip_invalid) as output:
        # contextlib.closing shuts the pool down even when the loop below is interrupted.
        converted = contextlib.closing(parallel_map(convert, chunks, workers))
        bar = console.progress_bar(total=len(samples), unit="file", disable=not progress, desc=dataset)
        with converted as results, bar:
            for chunk in results:
                errors += chunk.errors
                if not errors or skip_invalid:  # after a failure, only keep checking the remaining files
                    _route(chunk, [by_name[name] for name in chunk.names], dataset, output, folders)
                bar.update(len(chunk.names) + len(chunk.errors))
        if errors and not skip_invalid:
            raise InvalidFilesError(errors)
        if skip_invalid:
            output.add_text(root / SKIPPED_LIST, _skipped_list(errors))
    parts = {f"{folder.relative_to(root)}/{part}": count for (folder, part), count in output.counts.items()}
    return {"converted": len(samples) + num_named_invalid - len(errors), "left_out": left_out,
            "skipped": [str(error) for error in errors], "parts": parts, "folder": str(root)}


def build_parser():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_path", nargs="+", default=None,
                        help="folder(s) of raw *.skeleton files (NTU-120 ships as two downloads: give both); "
                             "default for ntu60/ntu120, as released: <repository>/data/nturgbd_raw[_120]/"
                             "nturgb+d_skeletons/, with samples_with_missing_skeletons.txt beside it as the "
                             "ignore list")
    parser.add_argument("--ignored_sample_path", default=None,
                        help="official list of samples with missing skeletons (one name per line; other lines, "
                             "such as the official lists' two lines of text, are skipped)")
    parser.add_argument("--out_folder", default=None,
                        help="the data root, parent of the prepared folders (NTU-RGB-D-60-AGCN/xsub, ...; default: "
                             "<repository>/data, where the training scripts look)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default=RELEASED_DEFAULT_DATASET)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), action=checked(at_least(1)),
                        help="parallel reader processes (1: read in this process)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="leave malformed files out and list them in skipped_files.txt "
                             "(default: report them all and write nothing)")
    return parser


def resolve_paths(args):
    """Fill the paths left out with the released layout under REPO_ROOT (see RELEASED_RAW_FOLDERS).

    The ignore list defaults only together with the raw folder: a --data_path given by hand is used
    with exactly the --ignored_sample_path given (or none).
    """
    if args.data_path is None:
        if args.dataset not in RELEASED_RAW_FOLDERS:
            raise SystemExit(f"--data_path is needed for --dataset {args.dataset} (only ntu60 and ntu120 have a "
                             f"released default)")
        raw = REPO_ROOT / RELEASED_RAW_FOLDERS[args.dataset]
        args.data_path = [raw / "nturgb+d_skeletons"]
        if args.ignored_sample_path is None:
            args.ignored_sample_path = raw / "samples_with_missing_skeletons.txt"
    if args.out_folder is None:
        args.out_folder = REPO_ROOT / "data"
    return args


def main(argv=None):
    args = resolve_paths(build_parser().parse_args(argv))
    try:
        summary = gendata(args.data_path, args.out_folder, args.dataset, args.ignored_sample_path,
                          workers=args.workers, skip_invalid=args.skip_invalid)
    except (InvalidFilesError, DataPathError, DiskFullError) as error:  # a message, no traceback
        sys.exit(str(error))
    print(f"{summary['converted']} samples converted into {summary['folder']} ({summary['left_out']} left "
          f"out by the ignore list or dataset, {len(summary['skipped'])} invalid files skipped)")
    for part, count in summary["parts"].items():
        print(f"  {part}: {count}")


if __name__ == "__main__":
    main()
