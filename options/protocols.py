"""Datasets and evaluation protocols: the one table of folders, class counts and input sizes.

Each (dataset, protocol) pair names a prepared folder under the data root, holding
`{train,val}_data_joint.npy`, `{train,val}_num_frame.npy` and `{train,val}_label.pkl` (layout in
SPEC.md, "NTU RGB+D preprocessing"). The NTU folder names are those of the released code.
The model's input sizes follow from the skeleton layout (skeleton.py) and the view length:
temporal tokens are M*V*C wide, spatial tokens T*C (SPEC.md, "Model").

The dataset `custom` is not in the table: its data root is the prepared folder that
data_gen/custom_gendata.py writes, and the entry is built from that folder's metadata.json (layout,
coordinates, persons, classes, minimum crop, split), so that your own skeletons need no code:

    get_protocol("custom", None, "data/my_dataset")   # -> Protocol("custom", "cross_subject", ".", ...)
"""
import json
from dataclasses import dataclass
from pathlib import Path

import skeleton
from feeder.augmentations import OUT_FRAMES, RELEASED_VIEW
from safe_io import DataFileError

DEFAULT_DATA_ROOT = Path("./data")
PARTS = ("train", "val")  # the two splits of every prepared folder

CUSTOM = "custom"  # the dataset whose data root is one prepared folder described by its metadata.json
METADATA = "metadata.json"  # what data_gen/custom_gendata.py writes beside the arrays
CUSTOM_FORMAT = "umurl-custom-v1"  # its "format" entry
# The protocol name of a custom folder, from how custom_gendata.py split it (metadata "split" -> "by").
CUSTOM_PROTOCOLS = {"subject": "cross_subject", "column": "csv_split", "lists": "listed_split"}


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol of one dataset.

    folder: the prepared split's folder relative to the data root. num_classes: None when it is read
    from the label files (the synthetic demo data, whose generator sets it). min_crop_length: the
    shortest temporal crop of a pretraining view (SPEC.md's 64 unless the dataset's sequences are
    too short for it to ever bite). pretrain_batch_size: the global pretraining batch, as the released
    script_pretrain.sh sets it per protocol (512 for NTU-60 x-sub, 1024 for NTU-60 x-view and both
    NTU-120 protocols); 512, the released default, for the datasets the paper does not pretrain on.
    num_coords: C, coordinates per joint (3, xyz, for every table entry; 2 for image keypoints).
    class_names: the names of classes 0..K-1 where the data has them (a custom folder), else None.
    data_root: the folder of a custom dataset (its name in logs and plots, see `title`), else None.
    """

    dataset: str
    protocol: str
    folder: str
    num_classes: int | None
    topology: skeleton.Topology
    num_persons: int
    min_crop_length: int = RELEASED_VIEW.min_crop_length
    pretrain_batch_size: int = 512
    num_coords: int = 3
    class_names: tuple | None = None
    data_root: str | None = None

    @property
    def title(self):
        """How logs, errors and plot titles name the data: 'ntu60 cross_subject', or for a custom folder
        'custom data <its folder> (cross_subject)', since every custom folder shares the dataset name."""
        if self.data_root is None:
            return f"{self.dataset} {self.protocol}"
        return f"{self.dataset} data {self.data_root} ({self.protocol})"

    @property
    def num_joints(self):
        return self.topology.num_joints

    @property
    def t_input_size(self):
        """Width of a temporal token: one frame's M*V*C numbers (150 for NTU)."""
        return self.num_persons * self.num_joints * self.num_coords

    @property
    def s_input_size(self):
        """Width of a spatial token: one (person, joint)'s T*C numbers (192 at T=64)."""
        return OUT_FRAMES * self.num_coords


PROTOCOLS = {(p.dataset, p.protocol): p for p in (
    Protocol("ntu60", "cross_subject", "NTU-RGB-D-60-AGCN/xsub", 60, skeleton.NTU_25, 2),
    Protocol("ntu60", "cross_view", "NTU-RGB-D-60-AGCN/xview", 60, skeleton.NTU_25, 2, pretrain_batch_size=1024),
    Protocol("ntu120", "cross_subject", "NTU-RGB-D-120-AGCN/xsub", 120, skeleton.NTU_25, 2, pretrain_batch_size=1024),
    Protocol("ntu120", "cross_setup", "NTU-RGB-D-120-AGCN/xsetup", 120, skeleton.NTU_25, 2, pretrain_batch_size=1024),
    # PKU-MMD phase 2: 41 action classes (phase 1 has 51), Kinect v2 skeletons, i.e. NTU's layout.
    Protocol("pku2", "cross_subject", "PKU-MMD-II/xsub", 41, skeleton.NTU_25, 2),
    # MSR Action3D: 20 actions, one person, its own 20-joint layout. Not in the paper. Its sequences
    # are short (38 frames on average, 99.6% of the training split under 64), so the released minimum
    # crop of 64 would always take the whole sequence and the views would differ only by corruption
    # and shear; a 16-frame minimum restores the temporal augmentation (benchmarks/real_data.py).
    Protocol("msr", "cross_subject", "MSR-Action3D/xsub", 20, skeleton.MSR_20, 1, min_crop_length=16),
    # Synthetic NTU-format data (data_gen/synthetic.py): its class count is whatever it was made with.
    Protocol("demo", "cross_subject", "demo/xsub", None, skeleton.NTU_25, 2),
)}

DATASETS = (*dict.fromkeys(dataset for dataset, _ in PROTOCOLS), CUSTOM)


def protocols_of(dataset):
    """The protocol names of one dataset, in table order (custom: those a metadata.json can name)."""
    if dataset == CUSTOM:
        return tuple(CUSTOM_PROTOCOLS.values())
    return tuple(protocol for d, protocol in PROTOCOLS if d == dataset)


def get_protocol(dataset, protocol=None, data_root=None):
    """The entry for (dataset, protocol); a ValueError listing the valid choices otherwise.

    protocol None: the dataset's first (cross_subject for every table dataset). Dataset custom reads
    `<data_root>/metadata.json` (`custom_protocol`), whose split names the protocol.
    """
    if dataset == CUSTOM:
        if data_root is None:
            raise ValueError("dataset custom needs its data root: the folder data_gen/custom_gendata.py wrote")
        return custom_protocol(data_root, protocol)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    protocol = protocols_of(dataset)[0] if protocol is None else protocol
    if (dataset, protocol) not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} for dataset {dataset!r}; "
                         f"valid protocols: {', '.join(protocols_of(dataset))}")
    return PROTOCOLS[dataset, protocol]


# ---------------------------------------------------------------------------------------------
# Dataset custom: the entry a prepared folder's metadata.json describes
# ---------------------------------------------------------------------------------------------

def _whole(value, low, high=None):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value and (high is None or value <= high)


def _metadata_problem(record):
    """(key, what is wrong) of a metadata record, or None when the scripts can use it."""
    if not isinstance(record, dict):
        return "the file", f"must hold a JSON object, not {type(record).__name__}"
    for key in ("layout", "num_classes", "class_names", "max_frames", "min_crop_length", "split", "samples"):
        if key not in record:
            return key, "missing"
    if record.get("format", CUSTOM_FORMAT) != CUSTOM_FORMAT:
        return "format", f"{record['format']!r} is not {CUSTOM_FORMAT!r}"
    classes, names = record["num_classes"], record["class_names"]
    if not _whole(classes, 1):
        return "num_classes", f"must be a whole number >= 1, got {classes!r}"
    if names is not None and (not isinstance(names, list) or len(names) != classes
                              or not all(isinstance(name, str) for name in names)):
        return "class_names", f"must be null or a list of {classes} names (num_classes)"
    if not _whole(record["max_frames"], 1):
        return "max_frames", f"must be a whole number >= 1, got {record['max_frames']!r}"
    if not _whole(record["min_crop_length"], 1, OUT_FRAMES):
        return "min_crop_length", f"must be a whole number of frames in 1..{OUT_FRAMES}, got " \
                                  f"{record['min_crop_length']!r}"
    split = record["split"]
    if not isinstance(split, dict) or split.get("by") not in CUSTOM_PROTOCOLS:
        return "split", f"must be an object whose 'by' is one of {', '.join(CUSTOM_PROTOCOLS)}"
    samples = record["samples"]
    if not isinstance(samples, dict) or not all(_whole(samples.get(part), 1) for part in PARTS):
        return "samples", "must give the sample count (>= 1) of train and val"
    return None


def read_metadata(data_root):
    """The validated metadata.json of a custom folder: its dict, read as JSON only, with "layout" built into
    a skeleton.SkeletonLayout; a one-line DataFileError naming the file and the key, and the converter
    that writes it, otherwise."""
    path = Path(data_root) / METADATA
    rerun = f"run data_gen/custom_gendata.py with --out-folder {data_root} to write it"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFileError(f"{path}: not found; --pre-dataset/--finetune-dataset custom read the folder that "
                            f"data_gen/custom_gendata.py writes, given as --data-root: {rerun}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataFileError(f"{path}: not a readable JSON file ({error}); {rerun}") from None
    problem = _metadata_problem(record)
    if problem is None:
        try:
            record["layout"] = skeleton.layout_from_dict(record["layout"], "layout")
        except skeleton.LayoutError as error:
            problem = str(error).split(": ", 1)
    if problem is not None:
        key, what = problem
        raise DataFileError(f"{path}: {key}: {what}; {rerun}")
    return record


def custom_protocol(data_root, protocol=None):
    """The Protocol of a custom folder from its metadata.json: the layout's joints, persons and
    coordinates, the classes and their names, the minimum crop, and the protocol named by the split.
    A `protocol` other than that is a DataFileError (None accepts the folder's)."""
    metadata = read_metadata(data_root)
    name = CUSTOM_PROTOCOLS[metadata["split"]["by"]]
    if protocol is not None and protocol != name:
        raise DataFileError(f"{Path(data_root) / METADATA}: this folder was split by {metadata['split']['by']}, "
                            f"protocol {name}, not --protocol {protocol}: leave --protocol out for dataset custom")
    layout = metadata["layout"]
    names = metadata["class_names"]
    return Protocol(CUSTOM, name, ".", metadata["num_classes"], layout.topology, layout.num_persons,
                    min_crop_length=metadata["min_crop_length"], num_coords=layout.num_coords,
                    class_names=None if names is None else tuple(names), data_root=str(data_root))


def prepared_folder(data_root, dataset, protocol):
    """Where the prepared splits of (dataset, protocol) live under `data_root`: what the converters write
    and the feeders read (e.g. data/NTU-RGB-D-60-AGCN/xsub; for custom the data root itself)."""
    return Path(data_root) / get_protocol(dataset, protocol, data_root).folder


def split_paths(folder, part):
    """The (data, num_frame, label) files of split `part` ("train" or "val") in a prepared folder, named
    as released: {part}_data_joint.npy, {part}_num_frame.npy, {part}_label.pkl."""
    folder = Path(folder)
    return folder / f"{part}_data_joint.npy", folder / f"{part}_num_frame.npy", folder / f"{part}_label.pkl"
