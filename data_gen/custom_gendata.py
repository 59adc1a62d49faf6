"""Your own skeletons -> the prepared folder every script reads, with no code to write.

    python data_gen/custom_gendata.py --sequences my_clips/ --labels my_clips/labels.csv \\
        --layout coco17 --split-by column --out-folder data/my_dataset
    python pretrain.py --pre-dataset custom --data-root data/my_dataset --checkpoint-path runs/mine
    python action_recognition.py --finetune-dataset custom --data-root data/my_dataset \\
        --pretrained runs/mine/checkpoint_0450.pth.tar --checkpoint-path runs/mine_linear

Input (README, "Your own data"):
- `--sequences`: a folder of `<name>.npy` files, or one `.npz` holding an array per name. An array is
  (T, V, C) for one person or (M, T, V, C) for several (the `keypoint` order of PYSKL annotations):
  frames, joints, coordinates (2 or 3, as the layout says). Any float or integer dtype.
- `--labels`: a CSV file with a header naming its columns: `name,label` and optionally `split`
  (train/val) and `subject`. A label is a class index 0..K-1 or a class name (names are numbered
  in sorted order and kept as the class names).
- `--layout`: a layout file (layouts/README.md) or the name of a shipped one (ntu25, coco17, ...).
- The split: `--split-by column` (the CSV's split column), `--split-by subject --train-subjects ...`
  (every other subject validates), or `--split-by lists --train-list F --val-list F` (names, one per line).

Output in `--out-folder`: `{train,val}_data_joint.npy` float32 (N, C, T_max, V, M),
`{train,val}_num_frame.npy`, `{train,val}_label.pkl` (names, labels) as for the built-in datasets,
and `metadata.json`: the layout, class count and names, T_max, the minimum crop of a pretraining
view and the split, which the scripts read for `--pre-dataset custom` / `--finetune-dataset custom`.
Every sequence is read and checked before anything is written; sequences are padded to T_max (or,
when longer, evenly resampled) and normalised as NTU is (data_gen/normalize.py) with the layout's
centre and shoulders.

Shape legend: C coordinates, T frames, V joints, M persons, N samples.
"""
import csv
import math
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_gen.common import MAX_FRAMES, DiskFullError, all_or_nothing, normalized_batch  # noqa: E402
from feeder.augmentations import RELEASED_VIEW  # noqa: E402
from options.checks import at_least, between, checked  # noqa: E402
from options.parser import ArgumentParser  # noqa: E402
from options.protocols import CUSTOM_FORMAT as FORMAT  # noqa: E402
from options.protocols import CUSTOM_PROTOCOLS, METADATA, PARTS  # noqa: E402
from skeleton import LAYOUTS_DIR, LayoutError, read_layout  # noqa: E402

RELEASED_MIN_CROP = RELEASED_VIEW.min_crop_length  # the released shortest crop of a pretraining view, 64
MIN_CROP_SHARE = 0.4       # of the median training clip, rounded up, when that is shorter (MSR Action3D: 38 -> 16)
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "val"}


class CustomDataError(ValueError):
    """Input that cannot be converted; the message names the file and the entry."""


# ----------------------------------------------------------------------------- the labels table

def read_table(path):
    """The CSV's rows as dicts of its columns, in file order; `name` and `label` are required and names unique."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise CustomDataError(f"{path}: cannot read the labels file ({error})") from None
    reader = csv.reader(text.splitlines())
    header = [column.strip().lower() for column in next(reader, [])]
    missing = [column for column in ("name", "label") if column not in header]
    if missing:
        raise CustomDataError(f"{path}: line 1 must name the columns, e.g. 'name,label,split,subject'; "
                              f"{' and '.join(missing)} missing (found {','.join(header) or 'nothing'})")
    rows, seen = [], {}
    for line, values in enumerate(reader, start=2):
        if not any(value.strip() for value in values):
            continue
        if len(values) != len(header):
            raise CustomDataError(f"{path}: line {line}: {len(values)} fields, the header has {len(header)}")
        row = {column: value.strip() for column, value in zip(header, values)}
        row["line"] = line
        if not row["name"] or not row["label"]:
            raise CustomDataError(f"{path}: line {line}: empty {'name' if not row['name'] else 'label'}")
        if row["name"] in seen:
            raise CustomDataError(f"{path}: line {line}: {row['name']!r} is listed again (first on line "
                                  f"{seen[row['name']]})")
        seen[row["name"]] = line
        rows.append(row)
    if not rows:
        raise CustomDataError(f"{path}: no samples listed")
    return rows


def class_labels(rows, path, num_classes=None):
    """(label per row, class names or None). Integer labels are kept (classes = num_classes or the largest + 1);
    otherwise every label is a class name, numbered in sorted order."""
    texts = [row["label"] for row in rows]
    if all(text.lstrip("-").isdigit() for text in texts):
        labels = [int(text) for text in texts]
        classes = num_classes if num_classes is not None else max(labels) + 1
        for row, label in zip(rows, labels):
            if not 0 <= label < classes:
                raise CustomDataError(f"{path}: line {row['line']}: label {label} is outside 0..{classes - 1}")
        return labels, None, classes
    names = sorted(set(texts))
    if num_classes is not None and num_classes != len(names):
        raise CustomDataError(f"{path}: {len(names)} class names, but --num-classes is {num_classes}")
    index = {name: i for i, name in enumerate(names)}
    return [index[text] for text in texts], names, len(names)


# ----------------------------------------------------------------------------- splits

def read_name_list(path):
    """Sample names, one per line; blank lines skipped."""
    try:
        return [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise CustomDataError(f"{path}: cannot read the name list ({error})") from None


def assign_splits(rows, labels_path, split_by, train_subjects=(), train_list=None, val_list=None):
    """{'train': rows, 'val': rows} in CSV order. Every row must land in exactly one split and no split is empty."""
    if split_by == "column":
        if "split" not in rows[0]:
            raise CustomDataError(f"{labels_path}: --split-by column needs a 'split' column (train or val)")
        part_of = {}
        for row in rows:
            part = SPLIT_NAMES.get(row["split"].lower())
            if part is None:
                raise CustomDataError(f"{labels_path}: line {row['line']}: split {row['split']!r} is neither train "
                                      f"nor val")
            part_of[row["name"]] = part
    elif split_by == "subject":
        if "subject" not in rows[0]:
            raise CustomDataError(f"{labels_path}: --split-by subject needs a 'subject' column")
        if not train_subjects:
            raise CustomDataError("--split-by subject needs --train-subjects (the others validate)")
        chosen = {str(subject) for subject in train_subjects}
        part_of = {row["name"]: "train" if row["subject"] in chosen else "val" for row in rows}
    elif split_by == "lists":
        if train_list is None or val_list is None:
            raise CustomDataError("--split-by lists needs --train-list and --val-list")
        listed = {"train": read_name_list(train_list), "val": read_name_list(val_list)}
        known = {row["name"] for row in rows}
        part_of = {}
        for part, source in (("train", train_list), ("val", val_list)):
            for name in listed[part]:
                if name not in known:
                    raise CustomDataError(f"{source}: {name!r} has no row (and so no label) in {labels_path}")
                if name in part_of:
                    raise CustomDataError(f"{source}: {name!r} is in both the train and the val list")
                part_of[name] = part
        rows = [row for row in rows if row["name"] in part_of]
    else:
        raise CustomDataError(f"unknown --split-by {split_by!r}: column, subject or lists")
    splits = {part: [row for row in rows if part_of[row["name"]] == part] for part in PARTS}
    for part, members in splits.items():
        if not members:
            raise CustomDataError(f"{labels_path}: the {part} split holds no samples (--split-by {split_by})")
    return splits


# ----------------------------------------------------------------------------- sequences

NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"  # how a .npy file and a .npz archive (a zip) begin


def load_npy(path):
    """The array of a .npy file, never unpickled; CustomDataError naming the file and the problem otherwise."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
    except OSError as error:
        raise CustomDataError(f"{path}: cannot read it ({error})") from None
    if magic.startswith(ZIP_MAGIC):
        raise CustomDataError(f"{path}: holds several arrays (a .npz archive): give it the .npz suffix")
    if magic != NPY_MAGIC:
        raise CustomDataError(f"{path}: not a .npy file (no .npy header): save each sequence with numpy.save")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error):
            raise CustomDataError(f"{path}: holds Python objects, not numbers; pickled data is never loaded: save "
                                  f"a numeric array") from None
        raise CustomDataError(f"{path}: not a readable .npy array ({error})") from None


class SequenceSource:
    """Arrays by name from a folder of <name>.npy files or from one .npz file; never unpickles."""

    def __init__(self, path):
        self.path = Path(path)
        if self.path.is_dir():
            self.files = {file.stem: file for file in sorted(self.path.glob("*.npy"))}
            self.archive = None
        elif self.path.suffix == ".npz" and self.path.is_file():
            try:
                self.archive = np.load(self.path, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise CustomDataError(f"{self.path}: not a readable .npz file ({error})") from None
            self.files = {name: name for name in self.archive.files}
        else:
            raise CustomDataError(f"{self.path}: --sequences must be a folder of .npy files or one .npz file")
        if not self.files:
            raise CustomDataError(f"{self.path}: no sequences (.npy files) found")

    def where(self, name):
        return f"{self.files[name]}" if self.archive is None else f"{self.path}[{name}]"

    def __contains__(self, name):
        return name in self.files

    def __getitem__(self, name):
        if self.archive is None:
            return load_npy(self.files[name])
        try:
            return self.archive[name]
        except (OSError, ValueError) as error:
            raise CustomDataError(f"{self.where(name)}: not a readable numeric array ({error})") from None


def as_sample(array, where, layout):
    """A (T, V, C) or (M, T, V, C) array -> (C, T, V, M) float32 with the layout's M persons; checked."""
    array = np.asarray(array)
    if array.dtype.kind not in "fiu":
        raise CustomDataError(f"{where}: dtype {array.dtype} is not numeric")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise CustomDataError(f"{where}: shape {array.shape}; expected (frames, joints, coords) or "
                              f"(persons, frames, joints, coords)")
    persons, frames, joints, coords = array.shape
    if (joints, coords) != (layout.num_joints, layout.num_coords):
        raise CustomDataError(f"{where}: {joints} joints x {coords} coordinates, but the layout "
                              f"{layout.topology.name} has {layout.num_joints} x {layout.num_coords}")
    if persons > layout.num_persons:
        raise CustomDataError(f"{where}: {persons} persons, the layout {layout.topology.name} holds at most "
                              f"{layout.num_persons} (raise 'persons' in the layout file)")
    if frames == 0:
        raise CustomDataError(f"{where}: the sequence has no frames")
    array = array.astype(np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        person, frame, joint, _ = np.argwhere(bad)[0]
        raise CustomDataError(f"{where}: non-finite value (NaN or Inf) at person {person}, frame {frame}, joint "
                              f"{joint}; mark a missing joint with zeros")
    sample = np.zeros((layout.num_coords, frames, layout.num_joints, layout.num_persons), np.float32)
    sample[..., :persons] = array.transpose(3, 1, 2, 0)  # (C, T, V, M)
    return sample


def derived_min_crop(train_lengths):
    """The shortest temporal crop of a pretraining view for these clips: the released 64 frames, or
    MIN_CROP_SHARE of the median training clip, rounded up, when that is less (short clips would
    otherwise always be taken whole, and the views would differ only spatially). On MSR Action3D's
    training split (median 38 frames) it gives 16, the msr protocol's minimum."""
    median = float(np.median(train_lengths))
    share = math.ceil(MIN_CROP_SHARE * median - 1e-9)  # the tolerance: 0.4 * 40 must stay 16, not 17
    return int(max(1, min(RELEASED_MIN_CROP, share)))



# ----------------------------------------------------------------------------- conversion

def metadata_record(layout, classes, class_names, max_frames, min_crop, split, counts, lengths, source):
    """What metadata.json holds: everything the scripts need to build the model and the feeders."""
    return {"format": FORMAT, "layout": layout.to_dict(), "num_classes": classes, "class_names": class_names,
            "max_frames": max_frames, "min_crop_length": min_crop, "split": split, "samples": counts,
            "frames": {part: {"median": float(np.median(values)), "min": int(min(values)), "max": int(max(values))}
                       for part, values in lengths.items()},
            "source": source}


def convert(sequences, labels, layout, out_folder, *, split_by, train_subjects=(), train_list=None, val_list=None,
            max_frames=MAX_FRAMES, min_crop_length=None, num_classes=None):
    """Convert and write the prepared folder; returns the metadata record. Nothing is written unless
    every sequence and label checks out (CustomDataError naming the file and the entry otherwise)."""
    layout = layout if not isinstance(layout, (str, Path)) else read_layout(layout)
    rows = read_table(labels)
    label_of, class_names, classes = class_labels(rows, labels, num_classes)
    label_of = {row["name"]: label for row, label in zip(rows, label_of)}
    splits = assign_splits(rows, labels, split_by, train_subjects, train_list, val_list)
    source = SequenceSource(sequences)
    for part in PARTS:
        for row in splits[part]:
            if row["name"] not in source:
                raise CustomDataError(f"{labels}: line {row['line']}: no sequence named {row['name']!r} in "
                                      f"{source.path}")
    listed = {row["name"] for part in PARTS for row in splits[part]}
    unlabelled = [name for name in source.files if name not in listed and split_by != "lists"]
    if unlabelled:
        raise CustomDataError(f"{source.where(unlabelled[0])}: no label for this sequence in {labels} "
                              f"({len(unlabelled)} sequence(s) without one)")

    converted, lengths = {}, {}
    for part in PARTS:
        samples = [as_sample(source[row["name"]], source.where(row["name"]), layout) for row in splits[part]]
        lengths[part] = [sample.shape[1] for sample in samples]
        converted[part] = normalized_batch(samples, max_frames, layout.topology, layout.num_persons,
                                            layout.num_coords)
    if min_crop_length is None:
        min_crop_length = derived_min_crop(lengths["train"])
    counts = {part: len(splits[part]) for part in PARTS}
    split = {"by": split_by, **({"train_subjects": [str(s) for s in train_subjects]} if split_by == "subject" else {})}
    record = metadata_record(layout, classes, class_names, max_frames, min_crop_length, split, counts, lengths,
                             str(Path(sequences)))

    out_folder = Path(out_folder)
    sample_shape = (layout.num_coords, max_frames, layout.num_joints, layout.num_persons)
    with all_or_nothing(out_folder, {(out_folder, part): counts[part] for part in PARTS}, sample_shape) as output:
        for part in PARTS:
            data, num_frames = converted[part]
            names = [row["name"] for row in splits[part]]
            output.write(out_folder, part, data, names, [label_of[name] for name in names], num_frames)
        output.add_text(out_folder / METADATA, json.dumps(record, indent=1) + "\n")
    return record


def build_parser():
    parser = ArgumentParser(
        description="Your own skeletons (.npy per sequence or one .npz, a labels CSV, a layout) -> the prepared "
                    "folder that `--pre-dataset custom --data-root FOLDER` reads. Format: README, 'Your own data'.")
    parser.add_argument("--sequences", required=True, type=Path,
                        help="a folder of <name>.npy arrays or one .npz; each (T, V, C) or (M, T, V, C)")
    parser.add_argument("--labels", required=True, type=Path,
                        help="CSV with a header: name,label[,split][,subject]; label = class index or class name")
    parser.add_argument("--layout", required=True,
                        help="a layout JSON file (layouts/README.md) or a shipped layout's name: "
                             + ", ".join(sorted(path.stem for path in LAYOUTS_DIR.glob("*.json"))))
    parser.add_argument("--out-folder", required=True, type=Path,
                        help="the prepared folder (the scripts' --data-root for dataset custom)")
    parser.add_argument("--split-by", default="column", choices=("column", "subject", "lists"),
                        help="column: the CSV's split column; subject: --train-subjects train, the rest validate; "
                             "lists: --train-list and --val-list")
    parser.add_argument("--train-subjects", nargs="+", default=(),
                        help="subject ids (as written in the CSV) of the training split, for --split-by subject")
    parser.add_argument("--train-list", type=Path, help="names of the training samples, one per line")
    parser.add_argument("--val-list", type=Path, help="names of the validation samples, one per line")
    parser.add_argument("--max-frames", type=int, default=MAX_FRAMES, action=checked(at_least(1)),
                        help="T_max, frames per stored sample (longer sequences are evenly resampled to it)")
    parser.add_argument("--min-crop-length", type=int, default=None,
                        action=checked(between(1, RELEASED_VIEW.out_frames)),
                        help=f"shortest temporal crop of a pretraining view, stored in metadata.json (default: the "
                             f"released {RELEASED_MIN_CROP}, or {MIN_CROP_SHARE:g} x the median training clip, rounded "
                             f"up, when that is less)")
    parser.add_argument("--num-classes", type=int, default=None, action=checked(at_least(1)),
                        help="class count when some classes have no sample (default: the largest label + 1)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        record = convert(args.sequences, args.labels, args.layout, args.out_folder, split_by=args.split_by,
                         train_subjects=args.train_subjects, train_list=args.train_list, val_list=args.val_list,
                         max_frames=args.max_frames, min_crop_length=args.min_crop_length,
                         num_classes=args.num_classes)
    except (CustomDataError, LayoutError, DiskFullError) as error:
        sys.exit(f"error: {error}")
    layout = record["layout"]
    print(f"{record['samples']['train']} train / {record['samples']['val']} val samples, {record['num_classes']} "
          f"classes, layout {layout['name']} ({len(layout['joints'])} joints x {layout['coords']} coords x "
          f"{layout['persons']} persons), T_max {record['max_frames']}, minimum crop {record['min_crop_length']} "
          f"-> {args.out_folder}")
    print(f"next: python pretrain.py --pre-dataset custom --data-root {args.out_folder} (protocol "
          f"{CUSTOM_PROTOCOLS[record['split']['by']]}, README 'Your own data')")


if __name__ == "__main__":
    main()
