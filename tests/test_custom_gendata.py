"""data_gen/custom_gendata.py: own skeletons in the documented format -> the prepared folder."""
import json
import pickle

import numpy as np
import pytest

from data_gen import custom_gendata
from data_gen.custom_gendata import CustomDataError, convert, derived_min_crop
from data_gen.normalize import normalize_skeletons
from skeleton import LayoutError, read_layout


def write_clips(folder, clips):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in clips.items():
        np.save(folder / f"{name}.npy", array)
    return folder


def write_csv(path, header, rows):
    path.write_text("\n".join([header, *(",".join(map(str, row)) for row in rows)]) + "\n")
    return path


def coco_clips(rng, count=6, persons=(1, 2)):
    """2D COCO-17 clips of varying length; odd ones hold two persons (M, T, V, C), even ones one (T, V, C)."""
    clips = {}
    for i in range(count):
        frames = 5 + 3 * i
        if i % 2:
            clips[f"clip{i}"] = rng.normal(size=(persons[1], frames, 17, 2)).astype(np.float16)
        else:
            clips[f"clip{i}"] = rng.normal(size=(frames, 17, 2)).astype(np.float32)
    return clips


@pytest.fixture
def coco(tmp_path):
    rng = np.random.default_rng(0)
    clips = coco_clips(rng)
    sequences = write_clips(tmp_path / "clips", clips)
    labels = write_csv(tmp_path / "labels.csv", "name,label,split,subject",
                       [(name, ["wave", "kick", "sit"][i % 3], "train" if i < 4 else "val", f"p{i % 2}")
                        for i, name in enumerate(clips)])
    return clips, sequences, labels


def test_2d_clips_become_the_prepared_layout_with_metadata(coco, tmp_path):
    clips, sequences, labels = coco
    out = tmp_path / "prepared"
    record = convert(sequences, labels, "coco17", out, split_by="column", max_frames=12)
    data = np.load(out / "train_data_joint.npy")
    assert data.shape == (4, 2, 12, 17, 2) and data.dtype == np.float32
    assert np.load(out / "val_num_frame.npy").tolist() == [12, 12]  # 17 and 20 frames, resampled to 12
    with open(out / "train_label.pkl", "rb") as f:
        names, train_labels = pickle.load(f)
    assert names == ["clip0", "clip1", "clip2", "clip3"]
    assert record["class_names"] == ["kick", "sit", "wave"] and train_labels == [2, 0, 1, 2]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata == record
    assert metadata["layout"]["coords"] == 2 and metadata["num_classes"] == 3
    assert metadata["samples"] == {"train": 4, "val": 2}
    # One sample by hand: (T, V, C) -> (C, T, V, M) padded, then the layout's normalisation.
    expected = np.zeros((1, 2, 12, 17, 2), np.float32)
    expected[0, :, :5, :, 0] = clips["clip0"].transpose(2, 0, 1)
    expected = normalize_skeletons(expected, read_layout("coco17").topology)
    np.testing.assert_array_equal(data[0], expected[0])


def test_split_by_subject_and_by_lists(coco, tmp_path):
    _, sequences, labels = coco
    record = convert(sequences, labels, "coco17", tmp_path / "a", split_by="subject", train_subjects=["p0"])
    assert record["samples"] == {"train": 3, "val": 3}
    train = tmp_path / "train.txt"
    val = tmp_path / "val.txt"
    train.write_text("clip0\nclip1\n")
    val.write_text("clip5\n")
    record = convert(sequences, labels, "coco17", tmp_path / "b", split_by="lists", train_list=train, val_list=val)
    assert record["samples"] == {"train": 2, "val": 1}


def test_an_npz_of_sequences_gives_the_same_folder(coco, tmp_path):
    clips, sequences, labels = coco
    np.savez(tmp_path / "clips.npz", **clips)
    convert(sequences, labels, "coco17", tmp_path / "from_npy", split_by="column")
    convert(tmp_path / "clips.npz", labels, "coco17", tmp_path / "from_npz", split_by="column")
    for name in ("train_data_joint.npy", "val_data_joint.npy", "train_num_frame.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "from_npy" / name), np.load(tmp_path / "from_npz" / name))


def test_the_minimum_crop_follows_short_clips():
    assert derived_min_crop([200, 300, 150]) == 64  # long clips: the released 64
    assert derived_min_crop([38] * 5) == 16  # MSR Action3D's training median: the msr protocol's 16
    assert derived_min_crop([40, 40]) == 16 and derived_min_crop([41]) == 17  # 0.4 x median, rounded up
    assert derived_min_crop([1, 1, 2]) == 1


@pytest.mark.parametrize("problem, words", [
    ("nan", "clip2.npy: non-finite value (NaN or Inf) at person 0, frame 1, joint 3"),
    ("empty", "clip2.npy: the sequence has no frames"),
    ("joints", "clip2.npy: 16 joints x 2 coordinates, but the layout coco17 has 17 x 2"),
    ("coords", "clip2.npy: 17 joints x 3 coordinates"),
    ("persons", "clip2.npy: 3 persons, the layout coco17 holds at most 2"),
    ("unlabelled", "extra.npy: no label for this sequence in"),
    ("missing", "line 4: no sequence named 'clip2'"),
    ("empty split", "the val split holds no samples"),
    ("bad split", "line 2: split 'dev' is neither train nor val"),
    ("header", "line 1 must name the columns"),
    ("label range", "line 2: label 9 is outside 0..2"),
])
def test_bad_input_is_one_line_naming_the_file_and_entry_and_writes_nothing(coco, tmp_path, problem, words):
    clips, sequences, labels = coco
    num_classes = None
    if problem == "nan":
        clip = np.zeros((4, 17, 2), np.float32)
        clip[1, 3, 0] = np.nan
        np.save(sequences / "clip2.npy", clip)
    elif problem == "empty":
        np.save(sequences / "clip2.npy", np.zeros((0, 17, 2), np.float32))
    elif problem == "joints":
        np.save(sequences / "clip2.npy", np.zeros((4, 16, 2), np.float32))
    elif problem == "coords":
        np.save(sequences / "clip2.npy", np.zeros((4, 17, 3), np.float32))
    elif problem == "persons":
        np.save(sequences / "clip2.npy", np.ones((3, 4, 17, 2), np.float32))
    elif problem == "unlabelled":
        np.save(sequences / "extra.npy", np.ones((4, 17, 2), np.float32))
    elif problem == "missing":
        (sequences / "clip2.npy").unlink()
    elif problem == "empty split":
        labels.write_text(labels.read_text().replace(",val,", ",train,"))
    elif problem == "bad split":
        labels.write_text(labels.read_text().replace("clip0,wave,train", "clip0,wave,dev"))
    elif problem == "header":
        labels.write_text("\n".join(labels.read_text().splitlines()[1:]) + "\n")
    elif problem == "label range":
        write_csv(labels, "name,label,split", [(name, 9 if i == 0 else i % 3, "train" if i < 4 else "val")
                                                for i, name in enumerate(clips)])
        num_classes = 3
    out = tmp_path / "prepared"
    with pytest.raises(CustomDataError) as error:
        convert(sequences, labels, "coco17", out, split_by="column", num_classes=num_classes)
    assert words in str(error.value) and "\n" not in str(error.value)
    assert not out.exists() or not any(out.iterdir())


def test_a_layout_that_disagrees_or_is_not_a_tree_fails_before_work(coco, tmp_path):
    _, sequences, labels = coco
    layout = read_layout("coco17").to_dict()
    layout["joints"][3]["parent"] = 40
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(layout))
    with pytest.raises(LayoutError, match=r"mine.json: joints\[3\]: joint index 40 is out of range"):
        convert(sequences, labels, path, tmp_path / "out", split_by="column")
    with pytest.raises(CustomDataError, match="17 joints x 2 coordinates, but the layout ntu25 has 25 x 3"):
        convert(sequences, labels, "ntu25", tmp_path / "out", split_by="column")
    assert not (tmp_path / "out").exists()


def test_the_command_line_prints_a_summary_and_errors_in_one_line(coco, tmp_path, capsys):
    _, sequences, labels = coco
    custom_gendata.main(["--sequences", str(sequences), "--labels", str(labels), "--layout", "coco17",
                         "--out-folder", str(tmp_path / "cli")])
    assert "4 train / 2 val samples, 3 classes, layout coco17 (17 joints x 2 coords x 2 persons)" in \
        capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: .*no_such_layout: no such layout file"):
        custom_gendata.main(["--sequences", str(sequences), "--labels", str(labels), "--layout", "no_such_layout",
                             "--out-folder", str(tmp_path / "cli2")])
