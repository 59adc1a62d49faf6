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
  resampled to T_max evenly spaced frames so the whole action survives (`common.fit_length`). The longest
  sequence of the 557 list has 76 frames.

Shape legend: C coordinates (xyz), T frames, V joints, M persons, N samples.
"""
import re
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_gen.common import (  # noqa: E402
    MAX_FRAMES, DiskFullError, SkeletonFileError, all_or_nothing, normalized_batch, parse_number_table)
from options.checks import at_least, checked  # noqa: E402
from options.parser import ArgumentParser  # noqa: E402
from options.protocols import PARTS, prepared_folder  # noqa: E402
from skeleton import MSR_20  # noqa: E402

DATASET, PROTOCOL = "msr", "cross_subject"  # the entry of options/protocols.py this converter writes
TRAIN_SUBJECTS = (1, 3, 5, 7, 9)
FILE_SUFFIX = "_skeleton3D.txt"
NAME_PATTERN = re.compile(r"a(\d+)_s(\d+)_e(\d+)")
ID_RANGES = (("a", 20), ("s", 10), ("e", 3))  # 20 actions, 10 subjects, up to 3 repetitions


# ----------------------------------------------------------------------------- samples and splits
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
    sequences = [read_msr_skeleton(Path(data_path) / f"{name}{FILE_SUFFIX}") for name in names]
    return normalized_batch(sequences, max_frames, MSR_20, num_persons=1)


def gendata(data_path, out_folder, sample_list=None, max_frames=MAX_FRAMES):
    """Convert MSR Action3D into its prepared folder (`<out_folder>/MSR-Action3D/xsub`); returns {part: samples}.

    Every file is read before anything is written; nothing final exists until both parts are complete.
    """
    out_dir = prepared_folder(out_folder, DATASET, PROTOCOL)
    parts = split_cross_subject(list_samples(data_path, sample_list))
    converted = {part: load_part(data_path, names, max_frames) for part, names in parts.items()}
    capacities = {(out_dir, part): len(names) for part, names in parts.items()}
    with all_or_nothing(out_dir, capacities, (3, max_frames, MSR_20.num_joints, 1)) as output:
        for part, names in parts.items():
            data, num_frame = converted[part]
            output.write(out_dir, part, data, names, [parse_name(name)[0] - 1 for name in names], num_frame)
    return {part: len(names) for part, names in parts.items()}


def main(argv=None):
    parser = ArgumentParser(description="MSR Action3D -> NTU-style arrays (cross-subject).")
    parser.add_argument("--data_path", required=True,
                        help="folder of aAA_sSS_eEE_skeleton3D.txt files (MSRAction3DSkeletonReal3D)")
    parser.add_argument("--sample_list", default=None,
                        help="sample names to keep, one per line, e.g. files_used_in_cvpr12_paper.txt "
                             "(557 samples); default: every file in data_path (567)")
    parser.add_argument("--out_folder", default="data",
                        help=f"the data root, parent of {prepared_folder('', DATASET, PROTOCOL)}")
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
          f"{prepared_folder(args.out_folder, DATASET, PROTOCOL)} ({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
