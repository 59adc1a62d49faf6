"""Datasets and evaluation protocols: the one table of folders, class counts and input sizes.

Each (dataset, protocol) pair names a prepared folder under the data root, holding
`{train,val}_data_joint.npy`, `{train,val}_num_frame.npy` and `{train,val}_label.pkl` (layout in
SPEC.md, "NTU RGB+D preprocessing"). The NTU folder names are those of the released code.
The model's input sizes follow from the skeleton layout (skeleton.py) and the view length:
temporal tokens are M*V*C wide, spatial tokens T*C (SPEC.md, "Model").
"""
from dataclasses import dataclass
from pathlib import Path

import skeleton
from feeder.augmentations import OUT_FRAMES, RELEASED_VIEW

DEFAULT_DATA_ROOT = Path("./data")
NUM_COORDS = 3  # C: xyz
PARTS = ("train", "val")  # the two splits of every prepared folder


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol of one dataset.

    folder: the prepared split's folder relative to the data root. num_classes: None when it is read
    from the label files (the synthetic demo data, whose generator sets it). min_crop_length: the
    shortest temporal crop of a pretraining view (SPEC.md's 64 unless the dataset's sequences are
    too short for it to ever bite). pretrain_batch_size: the global pretraining batch, as the released
    script_pretrain.sh sets it per protocol (512 for NTU-60 x-sub, 1024 for NTU-60 x-view and both
    NTU-120 protocols); 512, the released default, for the datasets the paper does not pretrain on.
    """

    dataset: str
    protocol: str
    folder: str
    num_classes: int | None
    topology: skeleton.Topology
    num_persons: int
    min_crop_length: int = RELEASED_VIEW.min_crop_length
    pretrain_batch_size: int = 512

    @property
    def num_joints(self):
        return self.topology.num_joints

    @property
    def t_input_size(self):
        """Width of a temporal token: one frame's M*V*C numbers (150 for NTU)."""
        return self.num_persons * self.num_joints * NUM_COORDS

    @property
    def s_input_size(self):
        """Width of a spatial token: one (person, joint)'s T*C numbers (192 at T=64)."""
        return OUT_FRAMES * NUM_COORDS


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

DATASETS = tuple(dict.fromkeys(dataset for dataset, _ in PROTOCOLS))


def protocols_of(dataset):
    """The protocol names of one dataset, in table order."""
    return tuple(protocol for d, protocol in PROTOCOLS if d == dataset)


def get_protocol(dataset, protocol):
    """The table entry for (dataset, protocol); a ValueError listing the valid choices otherwise."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    if (dataset, protocol) not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} for dataset {dataset!r}; "
                         f"valid protocols: {', '.join(protocols_of(dataset))}")
    return PROTOCOLS[dataset, protocol]



def prepared_folder(data_root, dataset, protocol):
    """Where the prepared splits of (dataset, protocol) live under `data_root`: what the converters write
    and the feeders read (e.g. data/NTU-RGB-D-60-AGCN/xsub)."""
    return Path(data_root) / get_protocol(dataset, protocol).folder


def split_paths(folder, part):
    """The (data, num_frame, label) files of split `part` ("train" or "val") in a prepared folder, named
    as released: {part}_data_joint.npy, {part}_num_frame.npy, {part}_label.pkl."""
    folder = Path(folder)
    return folder / f"{part}_data_joint.npy", folder / f"{part}_num_frame.npy", folder / f"{part}_label.pkl"
