"""The protocol table, the resolved view and the dataset builders on a temporary data root."""
import dataclasses

import numpy as np
import pytest

import skeleton
from dataset import build_downstream_datasets, build_pretrain_dataset, num_classes, write_split
from feeder import DownstreamDataset, PretrainDataset
from feeder.augmentations import RELEASED_VIEW, ViewConfig, choose_crop, pretrain_view
from options.pretrain import build_parser, view_config
from options.protocols import DATASETS, PROTOCOLS, get_protocol, protocols_of
from safe_io import DataFileError


def write_protocol(root, dataset, protocol, joints=25, persons=2, labels=(0, 1, 2, 3), frames=40):
    """Write train and val splits of len(labels) random samples where the protocol expects them."""
    folder = root / get_protocol(dataset, protocol).folder
    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        data = rng.standard_normal((len(labels), 3, frames, joints, persons)).astype(np.float32)
        write_split(folder, part, data, np.full(len(labels), frames), [f"s{i}" for i in labels], labels)
    return folder


def resolved_view(dataset, protocol, *flags):
    """The ViewConfig pretrain.py resolves for the protocol and these command-line flags."""
    return view_config(build_parser().parse_args(list(flags)), get_protocol(dataset, protocol))


# ----------------------------------------------------------------------------- the table

def test_released_protocols_and_folders():
    assert get_protocol("ntu60", "cross_subject").folder == "NTU-RGB-D-60-AGCN/xsub"
    assert get_protocol("ntu60", "cross_view").folder == "NTU-RGB-D-60-AGCN/xview"
    assert get_protocol("ntu120", "cross_subject").folder == "NTU-RGB-D-120-AGCN/xsub"
    assert get_protocol("ntu120", "cross_setup").folder == "NTU-RGB-D-120-AGCN/xsetup"
    assert len({p.folder for p in PROTOCOLS.values()}) == len(PROTOCOLS)
    assert protocols_of("ntu120") == ("cross_subject", "cross_setup")


@pytest.mark.parametrize("dataset, protocol, classes, t_input, s_input, corrupt", [
    ("ntu60", "cross_view", 60, 150, 192, 15),
    ("ntu120", "cross_setup", 120, 150, 192, 15),
    ("pku2", "cross_subject", 41, 150, 192, 15),
    ("msr", "cross_subject", 20, 60, 192, 12),
    ("demo", "cross_subject", None, 150, 192, 15),
])
def test_sizes_follow_from_the_topology(dataset, protocol, classes, t_input, s_input, corrupt):
    entry = get_protocol(dataset, protocol)
    assert (entry.num_classes, entry.t_input_size, entry.s_input_size) == (classes, t_input, s_input)
    assert resolved_view(dataset, protocol).num_corrupt == corrupt
    assert entry.topology is (skeleton.MSR_20 if dataset == "msr" else skeleton.NTU_25)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'ntu'") as error:
        get_protocol("ntu", "cross_subject")
    for dataset in DATASETS:
        assert dataset in str(error.value)


def test_unknown_protocol_lists_the_dataset_s_protocols():
    with pytest.raises(ValueError, match="unknown protocol 'cross_setup' for dataset 'ntu60'") as error:
        get_protocol("ntu60", "cross_setup")
    assert "valid protocols: cross_subject, cross_view" in str(error.value)


# ----------------------------------------------------------------------------- builders

def test_builders_read_the_protocol_folder(tmp_path):
    write_protocol(tmp_path, "ntu60", "cross_view")
    pretrain = build_pretrain_dataset(tmp_path, "ntu60", "cross_view", view=RELEASED_VIEW, seed=9)
    train, val = build_downstream_datasets(tmp_path, "ntu60", "cross_view")
    assert isinstance(pretrain, PretrainDataset) and pretrain.seed == 9 and len(pretrain) == 4
    assert isinstance(train, DownstreamDataset) and isinstance(val, DownstreamDataset)
    assert train.data_path.parent == val.data_path.parent == tmp_path / "NTU-RGB-D-60-AGCN" / "xview"
    assert (train.data_path.name, val.data_path.name) == ("train_data_joint.npy", "val_data_joint.npy")
    assert [view.shape for view in pretrain[0]] == [(3, 64, 25, 2)] * 4
    assert val[3][1] == 3


def test_msr_uses_its_own_skeleton_and_corruption_count(tmp_path):
    write_protocol(tmp_path, "msr", "cross_subject", joints=20, persons=1)
    view = resolved_view("msr", "cross_subject")
    assert view.num_corrupt == 12
    pretrain = build_pretrain_dataset(tmp_path, "msr", "cross_subject", view=view, seed=0)
    assert pretrain.view is view and pretrain[0][0].shape == (3, 64, 20, 1)


def test_every_released_protocol_keeps_spec_s_minimum_crop_and_only_msr_shortens_it():
    # SPEC.md: length = min(max(floor(valid * scale), 64), valid). MSR Action3D is not in the paper.
    for (dataset, _), entry in PROTOCOLS.items():
        assert entry.min_crop_length == (16 if dataset == "msr" else 64), dataset


def test_the_view_is_resolved_from_the_protocol_and_the_command_line():
    ntu, msr = resolved_view("ntu60", "cross_view"), resolved_view("msr", "cross_subject")
    override = resolved_view("ntu60", "cross_view", "--min-crop-length", "16")
    assert ntu == RELEASED_VIEW  # NTU's view is the released one, field for field
    assert (ntu.min_crop_length, msr.min_crop_length, override.min_crop_length) == (64, 16, 16)
    assert override == dataclasses.replace(RELEASED_VIEW, min_crop_length=16)  # and nothing else changed


def test_the_minimum_crop_reaches_the_views(tmp_path):
    # 40-frame samples: with the released minimum of 64 every crop is the whole sequence, so the
    # views of a sample differ only by corruption and shear; MSR's 16 lets the crop vary.
    write_protocol(tmp_path, "ntu60", "cross_view", frames=40)
    ntu = build_pretrain_dataset(tmp_path, "ntu60", "cross_view", view=resolved_view("ntu60", "cross_view"), seed=0)
    valid = 40
    for index in range(len(ntu)):
        rng = ntu.rng(index)  # the NTU view is the released one: crop with SPEC.md's 64
        expected = [pretrain_view(ntu.read(index)[0], valid, rng, RELEASED_VIEW) for _ in range(4)]
        for view, reference in zip(ntu[index], expected):
            np.testing.assert_array_equal(view.numpy(), reference)
    crops_64 = {choose_crop(valid, np.random.default_rng(seed), (0.1, 1.0), 64) for seed in range(50)}
    crops_16 = {choose_crop(valid, np.random.default_rng(seed), (0.1, 1.0), 16) for seed in range(50)}
    assert crops_64 == {(0, 40)} and len(crops_16) > 10


def test_a_minimum_crop_below_one_frame_is_refused():
    with pytest.raises(SystemExit):
        resolved_view("ntu60", "cross_view", "--min-crop-length", "0")  # the flag's check
    with pytest.raises(ValueError, match="min_crop_length must be 1..out_frames"):  # the configuration's own
        ViewConfig(min_crop_length=0)


def test_demo_class_count_comes_from_its_labels(tmp_path):
    write_protocol(tmp_path, "demo", "cross_subject", labels=(0, 4, 9, 2))
    assert num_classes(tmp_path, "demo", "cross_subject") == 10
    assert num_classes(tmp_path, "ntu60", "cross_subject") == 60  # from the table, no files read


def test_skeleton_of_the_wrong_layout_is_refused(tmp_path):
    folder = write_protocol(tmp_path, "ntu60", "cross_subject", joints=20, persons=1)
    expected = "3 coordinates x 20 joints x 1 persons, but ntu60 cross_subject expects 3 x 25 x 2"
    with pytest.raises(DataFileError, match=expected) as error:
        build_pretrain_dataset(tmp_path, "ntu60", "cross_subject", view=RELEASED_VIEW, seed=0)
    assert str(folder / "train_data_joint.npy") in str(error.value)


def test_labels_beyond_the_class_count_are_refused(tmp_path):
    folder = write_protocol(tmp_path, "msr", "cross_subject", joints=20, persons=1, labels=(0, 19, 20))
    with pytest.raises(DataFileError, match=r"outside \[0, 20\)") as error:
        build_downstream_datasets(tmp_path, "msr", "cross_subject")
    assert str(folder / "train_label.pkl") in str(error.value)


def test_missing_folder_names_the_expected_file(tmp_path):
    expected = "NTU-RGB-D-120-AGCN/xsetup/train_data_joint.npy: data file not found"
    with pytest.raises(DataFileError, match=expected):
        build_pretrain_dataset(tmp_path, "ntu120", "cross_setup", view=RELEASED_VIEW, seed=0)
