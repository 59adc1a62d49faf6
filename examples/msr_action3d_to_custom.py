"""A worked example of the custom format (README, "Your own data"): MSR Action3D -> arrays and a CSV.

    python examples/msr_action3d_to_custom.py --data-path data/msr_action3d --out msr_clips
    python data_gen/custom_gendata.py --sequences msr_clips/clips --labels msr_clips/labels.csv \\
        --layout msr20 --split-by subject --train-subjects 1 3 5 7 9 --out-folder data/msr_custom
    python pretrain.py --pre-dataset custom --data-root data/msr_custom

MSR Action3D ships one text file per sequence, `aAA_sSS_eEE_skeleton3D.txt` (action AA, subject SS,
repetition EE): one joint per line, `x y z confidence`, 20 lines per frame, joints in the order of
layouts/msr20.json. This script reads the sequences named in `files_used_in_cvpr12_paper.txt` (557
of them) and writes what data_gen/custom_gendata.py reads:

    <out>/clips/<name>.npy   float32 (T, 20, 3): frames, joints, x y z (the confidence dropped)
    <out>/labels.csv         name,label,subject with label = action - 1 (0..19) and subject = SS

Only numpy: any dataset whose sequences you can load as (frames, joints, coordinates) arrays
converts the same way. The prepared folder then holds exactly the arrays data_gen/msr_gendata.py
writes (tests/test_real_data.py checks it on the real files).
"""
import argparse
import csv
from pathlib import Path

import numpy as np

JOINTS = 20
SUFFIX = "_skeleton3D.txt"


def read_sequence(path):
    """One skeleton file -> (T, 20, 3) float32."""
    table = np.loadtxt(path, ndmin=2)  # (T * 20, 4): x y z confidence
    return table.reshape(-1, JOINTS, 4)[:, :, :3].astype(np.float32)


def convert(data_path, out):
    """Write <out>/clips/*.npy and <out>/labels.csv; returns the number of sequences."""
    data_path, out = Path(data_path), Path(out)
    listed = (data_path / "files_used_in_cvpr12_paper.txt").read_text().split()
    names = sorted({name.removesuffix(SUFFIX) for name in listed})
    (out / "clips").mkdir(parents=True, exist_ok=True)
    with open(out / "labels.csv", "w", newline="") as labels:
        table = csv.writer(labels)
        table.writerow(["name", "label", "subject"])
        for name in names:
            action, subject = int(name[1:3]), int(name[5:7])  # 'a01_s03_e02'
            sequence = read_sequence(data_path / "MSRAction3DSkeletonReal3D" / f"{name}{SUFFIX}")
            np.save(out / "clips" / f"{name}.npy", sequence)
            table.writerow([name, action - 1, subject])
    return len(names)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="MSR Action3D text files -> <out>/clips/*.npy and <out>/labels.csv")
    parser.add_argument("--data-path", type=Path, required=True,
                        help="folder holding MSRAction3DSkeletonReal3D/ and files_used_in_cvpr12_paper.txt")
    parser.add_argument("--out", type=Path, required=True, help="where clips/ and labels.csv go")
    args = parser.parse_args()
    print(f"{convert(args.data_path, args.out)} sequences -> {args.out}/clips, {args.out}/labels.csv")
