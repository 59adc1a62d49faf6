"""Export the encoder's features: of every sample of a prepared split, or of skeleton files embedded directly.

    # NTU-60 x-sub, both splits, from a pretraining checkpoint
    python export_features.py --pretrained runs/ntu60_xsub/checkpoint_0450.pth.tar \\
        --finetune-dataset ntu60 --protocol cross_subject --output features/ntu60_xsub.npz
    python export_features.py ... --split val --modalities joint           # one split, the joint feature
    python export_features.py --finetune-dataset ntu60 --seed 0 --output random.npz   # random weights
    # files, preprocessed exactly as the converters and the downstream feeder do it
    python export_features.py --pretrained ... --skeleton raw/S001C001P001R001A001.skeleton --output one.npz
    python export_features.py --pretrained ... --sequence clip.npy --layout coco17 --output clip.npz

The output is one .npz file; np.load reads it as it is (nothing in it needs pickle):
- features  float32 (N, 2H): y_u with all three modalities (the default), otherwise the feature of
            --modalities that the linear probe reads (one modality: its uni-modal feature);
- names     str (N,): the names of the split's label file (NTU: the file name, `.skeleton` included),
            or of the embedded files (a sequence: its file name without `.npy`, or its key in a `.npz`);
- labels    int64 (N,): the class labels; -1 where none is known (a custom sequence, or a `.skeleton`
            file whose name is not NTU's SsssCcccPpppRrrrAaaa);
- splits    str (N,): "train" or "val" for each sample of a prepared dataset, "file" for embedded files;
- metadata  a JSON string, `json.loads(archive["metadata"].item())`: the model_config, the checkpoint
            (or "random weights" and the seed), the modalities, the dataset, protocol and split or the
            files and their layout, --max-frames, the device and precision.
Samples are in the order of the label files (train, then val, with --split both) or of the command line.

Embedded files get the converters' preprocessing. A raw NTU `.skeleton` file is read by
data_gen/ntu_gendata.py's reader (the two bodies of highest motion energy), a custom-format sequence
as data_gen/custom_gendata.py reads one (`as_sample`: (T, V, C) or (M, T, V, C), the layout's persons
and coordinates). Either is then padded to --max-frames (or evenly resampled when longer) and
normalised for its layout by data_gen/common.py's `normalized_batch`, and its real frames are
resampled to the encoder's view length, as the downstream feeder does. The feature of a file is
therefore that of the same sample exported from the folder the converter makes of it
(tests/test_export_features.py checks both).

The encoder is built as the evaluation scripts build it (evaluation.py): the sizes a checkpoint of ours
records (its skeleton must be the data's), a released checkpoint with the size flags, or random weights
drawn with --seed when --pretrained is left out. One process, one device, fp32 unless --amp.

Every input (the output path, the checkpoint, the files) is checked before any feature is computed,
each problem in one line naming the file; nothing is written until every feature is computed, the file
is written atomically, and an existing one is replaced only with --overwrite.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset

import evaluation
import utils
from checkpoint import CheckpointError
from data_gen.common import SkeletonFileError, normalized_batch
from data_gen.custom_gendata import CustomDataError, SequenceSource, as_sample, load_npy
from data_gen.ntu_gendata import MAX_BODIES_KEPT, parse_name, read_xyz
from feeder.augmentations import downstream_view
from options.common import model_config, size_flags
from options.downstream import build_export_parser
from safe_io import DataFileError
from skeleton import NTU_25, LayoutError, SkeletonLayout, read_layout
from umurl import MODALITIES

FORMAT = "umurl-features-v1"
# What raw NTU RGB+D files hold, as ntu_gendata.py converts them: 25 joints, xyz, the two main bodies.
NTU_FILES = SkeletonLayout(NTU_25, num_coords=3, num_persons=MAX_BODIES_KEPT, description="NTU RGB+D .skeleton")
UNKNOWN_LABEL = -1


# ---------------------------------------------------------------------------------------------
# Checks made before any work
# ---------------------------------------------------------------------------------------------

def check_output(path, overwrite):
    """The .npz file to write: refused in one line if it has another suffix, is a folder, or exists
    without `overwrite`; its folder is created and must be writable."""
    path = Path(path)
    if path.suffix != ".npz":
        raise SystemExit(f"--output {path}: features are written to a .npz file; give a name ending in .npz")
    if path.is_dir():
        raise SystemExit(f"--output {path} is a folder; give a file name ending in .npz")
    if path.exists() and not overwrite:
        raise SystemExit(f"--output {path} already exists: pass --overwrite to replace it, or choose another name")
    utils.prepare_run_folder(path.parent)  # created, and proven writable, now rather than after the work
    return path


def check_file_arguments(args):
    """What --skeleton/--sequence/--layout need of each other, and that every named file exists."""
    if args.sequence and args.layout is None:
        raise SystemExit("--sequence needs --layout: the layout file (or shipped layout name) the sequences are in")
    if args.layout is not None and not args.sequence:
        raise SystemExit("--layout describes the files of --sequence; give --sequence FILE... too (a prepared "
                         "dataset's layout comes from --finetune-dataset)")
    for path in args.skeleton or args.sequence or ():
        if not path.is_file():
            raise SystemExit(f"{path}: no such file")


# ---------------------------------------------------------------------------------------------
# Files, preprocessed as the converters and the downstream feeder do it
# ---------------------------------------------------------------------------------------------

def model_input(sample, layout, max_frames, out_frames):
    """One sample (C, T, V, M) as the downstream feeder hands it to the encoder: padded to max_frames (or
    evenly resampled), normalised for the layout as the converters do (normalized_batch), then its real
    frames resampled to out_frames -> float32 tensor (C, out_frames, V, M)."""
    data, num_frames = normalized_batch([sample], max_frames, layout.topology, layout.num_persons,
                                        layout.num_coords)  # (1, C, max_frames, V, M)
    valid = num_frames[0]
    return torch.from_numpy(downstream_view(data[0, :, :valid], valid, out_frames))


def read_skeleton_files(paths, max_frames):
    """(name, label, sample (3, T, 25, 2)) of each raw NTU file; the label from its name, -1 if not NTU's."""
    for path in paths:
        sample = read_xyz(path, max_frames=max_frames)  # SkeletonFileError naming the file and line
        parsed = parse_name(path)
        yield path.name, parsed.label if parsed is not None else UNKNOWN_LABEL, sample


def read_sequence_files(paths, layout):
    """(name, -1, sample (C, T, V, M)) of each custom-format sequence: a .npy array, or each array of a .npz."""
    for path in paths:
        if path.suffix == ".npz":
            source = SequenceSource(path)
            for name in source.files:
                yield name, UNKNOWN_LABEL, as_sample(source[name], source.where(name), layout)
            continue
        yield path.stem, UNKNOWN_LABEL, as_sample(load_npy(path), str(path), layout)


# ---------------------------------------------------------------------------------------------
# The two sources: a prepared dataset, or files
# ---------------------------------------------------------------------------------------------

def prepared_dataset(args, device):
    """(model, where its weights came from, dataset of (x, label), names, splits, metadata) for --split of
    the prepared --finetune-dataset."""
    data = evaluation.load_splits(args)
    model, source = evaluation.load_encoder(args, data, device)
    parts = ("train", "val") if args.split == "both" else (args.split,)
    chosen = [data.train if part == "train" else data.val for part in parts]
    names = [name for split in chosen for name in split.names]
    splits = [part for part, split in zip(parts, chosen) for _ in range(len(split))]
    record = {"source": "prepared dataset", "dataset": args.dataset, "protocol": args.protocol,
              "data_root": str(args.data_root), "split": args.split,
              "class_names": evaluation.class_names_of(args.dataset, data)}
    return model, source, ConcatDataset(chosen), names, splits, record


def embedded_files(args, device):
    """The same for --skeleton or --sequence files: every file is read, checked and preprocessed before
    the features are computed."""
    layout = NTU_FILES if args.skeleton else read_layout(args.layout)
    kind = "--skeleton (raw NTU RGB+D files)" if args.skeleton else f"--sequence (layout {args.layout})"
    config = model_config(layout, **size_flags(args))
    model, source = evaluation.build_encoder(args, config, 1, device, data_name=kind)
    paths = args.skeleton or args.sequence
    read = read_skeleton_files(paths, args.max_frames) if args.skeleton else read_sequence_files(paths, layout)
    items, names = [], []
    for name, label, sample in read:
        items.append((model_input(sample, layout, args.max_frames, model.config.num_frames), label))
        names.append(name)
    record = {"source": "skeleton files" if args.skeleton else "sequence files", "files": [str(p) for p in paths],
              "layout": layout.to_dict(), "max_frames": args.max_frames}
    return model, source, items, names, ["file"] * len(items), record


def feature_name(modalities):
    """'y_u' for all three modalities, else what the encoder returns for the subset."""
    if tuple(modalities) == MODALITIES:
        return "y_u"
    return f"uni-modal {modalities[0]}" if len(modalities) == 1 else f"fused {'+'.join(modalities)}"


def main(args):
    device, amp_dtype = evaluation.device_and_precision("export_features.py", args)
    output = check_output(args.output, args.overwrite)
    check_file_arguments(args)
    from_files = bool(args.skeleton or args.sequence)
    model, source, dataset, names, splits, record = (embedded_files if from_files else prepared_dataset)(args, device)
    utils.main_print(f"exporting the {feature_name(model.modalities)} feature of {len(names)} samples "
                     f"({record['source']}), {source}; {device.type}, precision {evaluation.precision_name(amp_dtype)}")

    workers = 0 if from_files else args.workers  # the files are in memory already
    features, labels = evaluation.extract_features(model, dataset, args.batch_size, workers, device, amp_dtype,
                                                   "features", args.print_freq)
    metadata = {"format": FORMAT, "feature": feature_name(model.modalities), "modalities": list(model.modalities),
                "feature_size": features.shape[1], "model_config": model.config.to_dict(),
                "pretrained": None if args.pretrained is None else str(args.pretrained), "encoder": source,
                "seed": args.seed, **record, "device": str(device),
                "precision": evaluation.precision_name(amp_dtype), "command": [sys.executable, *sys.argv],
                "git": utils.git_revision()}
    evaluation.write_npz_atomic(output, {
        "features": features.cpu().numpy(), "names": np.array(names, dtype=str),
        "labels": labels.cpu().numpy().astype(np.int64), "splits": np.array(splits, dtype=str),
        "metadata": np.array(json.dumps(metadata))})
    print(evaluation.result_line("export", {"samples": len(names), "feature_size": features.shape[1],
                                            "feature": feature_name(model.modalities), "path": output}), flush=True)
    return metadata


if __name__ == "__main__":
    try:
        main(build_export_parser().parse_args())
    except (DataFileError, CheckpointError, SkeletonFileError, CustomDataError, LayoutError) as error:
        # A bad input file or checkpoint: the message names it and what is wrong; a traceback would bury it.
        raise SystemExit(f"error: {error}") from None
