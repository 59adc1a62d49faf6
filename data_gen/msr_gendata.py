"""MSR Action3D skeletons -> the NTU-style arrays the feeders read.

    python data_gen/msr_gendata.py --data_path msr_action3d/MSRAction3DSkeletonReal3D \
        --sample_list msr_action3d/files_used_in_cvpr12_paper.txt --out_folder data/

Input: `<data_path>/aAA_sSS_eEE_skeleton3D.txt`, one joint per line `x y z c`, 20 lines per frame,
joints in the MSR order of `skeleton.MSR_20` (AA action, SS subject, EE repetition).
Output: `<out_folder>/MSR-Action3D/xsub/{train,val}_data_joint.npy` float32 (N, 3, T_max, 20, 1),
`{part}_num_frame.npy` int64 (N,) and `{part}_label.pkl` = (list of sample names such as
'a01_s01_e01', list of labels), written under temporary names and renamed when complete.

Conventions:
- Cross-subject: subjects 1 3 5 7 9 train, 2 4 6 8 10 val; label = action - 1 (20 classes). With
  the 557-sample list: 284 train / 273 val; with all 567 files: 292 / 275.
- Coordinates are kept as they are: the MSR real-world frame already is NTU's right-handed Kinect
  camera space (metres, y up, z = depth away from the camera, x towards the camera's left). Checked on
  the data: the head is above the feet, a subject's left shoulder has smaller x than the right one
  (98.6% of frames) and the feet point towards the camera, -z (96%), so nothing is mirrored. The NTU
  normalisation then centres on the spine and turns left -> right shoulder onto +x.
- The confidence column c is dropped. Sequences are zero-padded to T_max frames before normalisation;
  a longer one (only the 936-frame outlier a13_s09_e03 of the full 567, outside the usual 557 list) is
  resampled to T_max evenly spaced frames so the whole action survives (`fit_length`). The longest
  sequence of the 557 list has 76 frames.

Shape legend: C coordinates (xyz), T frames, V joints, M persons, N samples.
"""
import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_gen.normalize import normalize_skeletons  # noqa: E402
from data_gen.ntu_gendata import (  # noqa: E402
    DiskFullError, PartWriter, SkeletonFileError, check_free_space, fields_per_line, output_bytes)
from options.checks import at_least, checked  # noqa: E402
from skeleton import MSR_20  # noqa: E402

TRAIN_SUBJECTS = (1, 3, 5, 7, 9)
MAX_FRAMES = 300
FILE_SUFFIX = "_skeleton3D.txt"
NAME_PATTERN = re.compile(r"a(\d+)_s(\d+)_e(\d+)")
ID_RANGES = (("a", 20), ("s", 10), ("e", 3))  # 20 actions, 10 subjects, up to 3 repetitions
PARTS = ("train", "val")


# ----------------------------------------------------------------------------- text tables (also for PKU)
def parse_number_table(raw, width, path):
    """Whitespace-separated numbers, `width` per line -> (lines, width) float32.

    raw: the file's bytes. Trailing blank lines are ignored. A line with another count, a token that is
    not a number or a non-finite value raises SkeletonFileError naming the file and the 1-based line.
    Counting and parsing are single numpy passes; only the error path looks at lines one by one.
    """
    raw = raw.rstrip()
    if not raw:
        return np.zeros((0, width), np.float32)
    counts = fields_per_line(raw)  # (lines,)
    bad = np.flatnonzero(counts != width)
    if bad.size:
        raise SkeletonFileError(path, int(bad[0]) + 1, f"expected {width} numbers, found {counts[bad[0]]}")
    try:
        values = np.array(raw.split(), dtype=np.float32)  # (lines * width,)
    except ValueError:
        line, token = _first_non_number(raw)
        raise SkeletonFileError(path, line, f"not a number: {token!r}") from None
    finite = np.isfinite(values)
    if not finite.all():
        raise SkeletonFileError(path, int(np.argmin(finite)) // width + 1, "non-finite value")
    return values.reshape(-1, width)  # (lines, width)


def _first_non_number(raw):
    """Slow path, only after a failed parse: (1-based line, token) of the first token float() rejects."""
    for number, line in enumerate(raw.split(b"\n"), start=1):
        for token in line.split():
            try:
                float(token)
            except ValueError:
                return number, token.decode("latin-1")
    raise AssertionError("the table failed to parse, but every token parses on its own")


# ----------------------------------------------------------------------------- samples and splits
def fit_length(seq, max_frames):
    """Zero-pad (or, when longer, evenly resample) a sequence to exactly `max_frames` frames.

    seq: (C, T, V, M) -> ((C, max_frames, V, M) float32, num_frame = min(T, max_frames)).
    Resampling picks evenly spaced real frames, first and last included, rather than truncating, so a
    long action keeps its end; nothing is interpolated, so absent bodies and joints stay exactly zero.
    """
    num_frames = seq.shape[1]
    if num_frames > max_frames:
        keep = np.round(np.linspace(0, num_frames - 1, max_frames)).astype(np.int64)  # (max_frames,)
        return seq[:, keep].astype(np.float32), max_frames
    out = np.zeros((seq.shape[0], max_frames, *seq.shape[2:]), np.float32)
    out[:, :num_frames] = seq
    return out, num_frames


def parse_name(name):
    """'a01_s03_e02' (with or without the file suffix) -> (action, subject, repetition) ints.

    Each id must lie in ID_RANGES: an action a00 or a21 would otherwise become label -1 or 20."""
    match = NAME_PATTERN.fullmatch(name.removesuffix(FILE_SUFFIX))
    if match is None:
        raise ValueError(f"not an MSR Action3D sample name (aAA_sSS_eEE): {name!r}")
    ids = tuple(int(group) for group in match.groups())
    for value, (letter, last) in zip(ids, ID_RANGES):
        if not 1 <= value <= last:
            raise ValueError(f"{name!r}: {letter}{value:02d} outside {letter}01..{letter}{last:02d}, the ids of "
                             f"MSR Action3D")
    return ids


def read_msr_skeleton(path):
    """One MSR skeleton file -> (3, T, 20, 1) float32, xyz in metres (the confidence column dropped)."""
    num_joints = MSR_20.num_joints
    table = parse_number_table(Path(path).read_bytes(), 4, path)  # (T * V, 4)
    if table.shape[0] == 0:
        raise SkeletonFileError(path, None, "no frames")
    if table.shape[0] % num_joints:
        complete = table.shape[0] // num_joints * num_joints
        raise SkeletonFileError(path, complete + 1, f"{table.shape[0]} lines is not a whole number of "
                                                    f"{num_joints}-joint frames (this frame is incomplete)")
    joints = table.reshape(-1, num_joints, 4)[:, :, :3]  # (T, V, xyz)
    return np.ascontiguousarray(joints.transpose(2, 0, 1)[..., None])  # (C, T, V, M=1)


def read_sample_list(path):
    """Sample names, one per line; blank lines skipped, a '_skeleton3D.txt' suffix dropped."""
    lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    names = [line.strip().removesuffix(FILE_SUFFIX) for line in lines]
    names = [name for name in names if name]
    for name in names:
        parse_name(name)  # fail early on a malformed entry
    return names


def list_samples(data_path, sample_list=None):
    """Sorted names to convert: those of `sample_list` (a path) or, when None, every file in data_path."""
    data_path = Path(data_path)
    if not data_path.is_dir():
        raise FileNotFoundError(f"data path {data_path} is not a folder")
    available = sorted(path.name.removesuffix(FILE_SUFFIX) for path in data_path.glob(f"*{FILE_SUFFIX}"))
    if not available:
        raise FileNotFoundError(f"no *{FILE_SUFFIX} files in {data_path}")
    if sample_list is None:
        return available
    wanted = sorted(set(read_sample_list(sample_list)))
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise FileNotFoundError(f"{len(missing)} samples of {sample_list} have no file in {data_path}, "
                                f"e.g. {missing[:3]}")
    return wanted


def split_cross_subject(names):
    """Names -> {'train': [...], 'val': [...]}: odd subjects train, even subjects validate."""
    parts = {part: [] for part in PARTS}
    for name in names:
        _, subject, _ = parse_name(name)
        parts["train" if subject in TRAIN_SUBJECTS else "val"].append(name)
    return parts


# ----------------------------------------------------------------------------- conversion
def load_part(data_path, names, max_frames):
    """Read, pad and normalise the named samples -> (data (N, 3, max_frames, 20, 1) float32, num_frame)."""
    fitted = [fit_length(read_msr_skeleton(Path(data_path) / f"{name}{FILE_SUFFIX}"), max_frames)
              for name in names]
    data = np.zeros((len(names), 3, max_frames, MSR_20.num_joints, 1), np.float32)  # (N, C, T, V, M)
    for i, (sample, _) in enumerate(fitted):
        data[i] = sample
    if len(names):  # normalize_skeletons cannot take an empty batch (a sample list may empty a split)
        data = normalize_skeletons(data, topology=MSR_20)
    return data, [num_frame for _, num_frame in fitted]


def gendata(data_path, out_folder, sample_list=None, max_frames=MAX_FRAMES):
    """Convert MSR Action3D into `<out_folder>/MSR-Action3D/xsub`; returns {part: number of samples}.

    Every file is read before anything is written; nothing final exists until both parts are complete.
    """
    out_dir = Path(out_folder) / "MSR-Action3D" / "xsub"
    parts = split_cross_subject(list_samples(data_path, sample_list))
    converted = {part: load_part(data_path, names, max_frames) for part, names in parts.items()}
    check_free_space(out_dir, output_bytes([len(names) for names in parts.values()],
                                           (3, max_frames, MSR_20.num_joints, 1)))
    writers = []
    try:
        for part, names in parts.items():
            data, num_frame = converted[part]
            writer = PartWriter(out_dir, part, len(names), data.shape[1:])
            writers.append(writer)
            writer.write(data, names, [parse_name(name)[0] - 1 for name in names], num_frame)
            writer.finish()
        for writer in writers:
            writer.commit()
    except BaseException:  # interrupted or failed: leave no temporary files behind
        for writer in writers:
            writer.discard()
        raise
    return {part: len(names) for part, names in parts.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description="MSR Action3D -> NTU-style arrays (cross-subject).")
    parser.add_argument("--data_path", required=True,
                        help="folder of aAA_sSS_eEE_skeleton3D.txt files (MSRAction3DSkeletonReal3D)")
    parser.add_argument("--sample_list", default=None,
                        help="sample names to keep, one per line, e.g. files_used_in_cvpr12_paper.txt "
                             "(557 samples); default: every file in data_path (567)")
    parser.add_argument("--out_folder", default="data", help="parent folder of MSR-Action3D/xsub")
    parser.add_argument("--max_frames", type=int, default=MAX_FRAMES, action=checked(at_least(1)),
                        help="T_max, frames per padded sample (longer sequences are resampled to it)")
    args = parser.parse_args(argv)
    for path in (args.data_path, args.sample_list):
        if path is not None and not Path(path).exists():
            sys.exit(f"error: {path} does not exist")
    start = time.time()
    try:
        counts = gendata(args.data_path, args.out_folder, args.sample_list, args.max_frames)
    except (ValueError, FileNotFoundError, DiskFullError) as error:  # SkeletonFileError is a ValueError
        sys.exit(f"error: {error}")
    print(f"MSR Action3D x-sub: {counts['train']} train / {counts['val']} val samples in "
          f"{Path(args.out_folder) / 'MSR-Action3D' / 'xsub'} ({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
