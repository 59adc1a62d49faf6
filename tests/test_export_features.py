"""export_features.py: the features of a prepared split, of raw NTU files and of custom sequences, and refusals.

The central promise: a file embedded directly gets exactly the preprocessing of the converter and the
downstream feeder, so its feature is that of the same sample exported from the converted folder.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_pretrain import make_demo_data

import evaluation
import export_features
from checkpoint import CheckpointMismatch, load_encoder_weights, save_atomic
from data_gen import custom_gendata, ntu_gendata, synthetic
from data_gen.custom_gendata import CustomDataError
from dataset import build_downstream_datasets
from options.downstream import build_export_parser
from skeleton import MSR_20
from umurl import DownstreamModel, UmURL, UmURLConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The one real NTU RGB+D file: beside the checkout, or inside it once the golden files live in tests/golden.
REAL_SKELETON = next((path for path in (os.path.join(ROOT, "tests", "golden", "S002C003P008R002A055.skeleton"),
                                        os.path.join(ROOT, "..", "shared", "fixtures", "S002C003P008R002A055.skeleton"))
                      if os.path.isfile(path)), None)
CPU = ["--device", "cpu", "--workers", "0"]
RANDOM = [*CPU, "--hidden-size", "16", "--seed", "0"]  # random weights of the tiny model
TINY = UmURLConfig(hidden_size=16, projector_dim=32)


def export(*flags):
    """export_features.main on parsed flags; returns the written archive's arrays and the decoded metadata."""
    args = build_export_parser().parse_args([str(flag) for flag in flags])
    export_features.main(args)
    with np.load(args.output) as archive:  # allow_pickle=False, numpy's default: nothing in it needs pickle
        arrays = {name: archive[name] for name in archive.files}
    return arrays, json.loads(arrays.pop("metadata").item())


def by_name(arrays):
    return {name: (feature, label) for name, feature, label in zip(arrays["names"], arrays["features"],
                                                                   arrays["labels"])}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("data"), num_train=12, num_val=6)


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """A pretraining checkpoint of the tiny model as pretrain.py writes it (records its model_config)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("checkpoints") / "checkpoint_0001.pth.tar"
    save_atomic({"epoch": 1, "state_dict": UmURL(TINY).state_dict(), "model_config": TINY.to_dict()}, path)
    return path


# ---------------------------------------------------------------------------------------------
# A prepared dataset
# ---------------------------------------------------------------------------------------------

def test_both_splits_are_exported_with_names_labels_and_what_made_them(data_root, ours, tmp_path, capsys):
    output = tmp_path / "features" / "demo.npz"  # the folder is created
    arrays, metadata = export("--pretrained", ours, "--finetune-dataset", "demo", "--data-root", data_root,
                              "--output", output, *CPU)
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"RESULT export samples=18 feature_size=32 feature=y_u path={output}")
    assert sorted(arrays) == ["features", "labels", "names", "splits"]
    assert arrays["features"].dtype == np.float32 and arrays["features"].shape == (18, 32)  # (N, 2H)
    assert arrays["names"].tolist() == [f"S{i:03d}" for i in range(12)] + [f"S{i:03d}" for i in range(6)]
    assert arrays["labels"].dtype == np.int64 and arrays["labels"].tolist() == [i % 4 for i in range(12)] + [
        i % 4 for i in range(6)]
    assert arrays["splits"].tolist() == ["train"] * 12 + ["val"] * 6
    assert metadata["model_config"] == TINY.to_dict() and metadata["pretrained"] == str(ours)
    assert (metadata["dataset"], metadata["protocol"], metadata["split"]) == ("demo", "cross_subject", "both")
    assert metadata["modalities"] == ["joint", "bone", "motion"] and metadata["feature"] == "y_u"
    assert metadata["precision"] == "fp32" and metadata["format"] == "umurl-features-v1"

    # The checkpoint's encoder, loaded by hand, on the same samples.
    model = DownstreamModel(TINY, 4)
    load_encoder_weights(model, ours)
    train, val = build_downstream_datasets(data_root, "demo", "cross_subject")
    expected = torch.cat([evaluation.extract_features(model, split, 8, 0, torch.device("cpu"), None)[0]
                          for split in (train, val)])
    torch.testing.assert_close(torch.from_numpy(arrays["features"]), expected, rtol=0, atol=1e-6)


def test_random_weights_follow_the_seed_and_a_modality_subset_gives_its_feature(data_root, tmp_path):
    common = ["--finetune-dataset", "demo", "--data-root", data_root, "--split", "val", "--hidden-size", "16", *CPU]
    arrays, metadata = export(*common, "--seed", "3", "--modalities", "motion", "--output", tmp_path / "a.npz")
    assert metadata["pretrained"] is None and metadata["feature"] == "uni-modal motion" and metadata["seed"] == 3
    assert arrays["splits"].tolist() == ["val"] * 6
    # The same uni-modal encoder drawn from seed 3, as the evaluation scripts draw it.
    torch.manual_seed(3)
    model = DownstreamModel(TINY, 4, ["motion"])
    _, val = build_downstream_datasets(data_root, "demo", "cross_subject")
    expected, _ = evaluation.extract_features(model, val, 4, 0, torch.device("cpu"), None)
    torch.testing.assert_close(torch.from_numpy(arrays["features"]), expected, rtol=0, atol=1e-6)
    other, _ = export(*common, "--seed", "4", "--modalities", "motion", "--output", tmp_path / "b.npz")
    assert not np.allclose(other["features"], arrays["features"])
    two, metadata = export(*common, "--seed", "3", "--modalities", "motion", "joint", "--output", tmp_path / "c.npz")
    assert metadata["modalities"] == ["joint", "motion"] and metadata["feature"] == "fused joint+motion"


def test_an_existing_output_is_kept_unless_overwrite_is_given(data_root, tmp_path):
    output = tmp_path / "features.npz"
    output.write_bytes(b"an earlier export")
    flags = [*RANDOM, "--finetune-dataset", "demo", "--data-root", data_root, "--split", "val", "--output", output]
    with pytest.raises(SystemExit, match=f"--output {output} already exists: pass --overwrite"):
        export(*flags)
    assert output.read_bytes() == b"an earlier export"
    arrays, _ = export(*flags, "--overwrite")
    assert arrays["features"].shape == (6, 32)
    assert [path.name for path in tmp_path.iterdir()] == ["features.npz"]  # no temporary file left behind
    with pytest.raises(SystemExit, match="features are written to a .npz file"):
        export(*flags[:-1], tmp_path / "features.npy")


# ---------------------------------------------------------------------------------------------
# Files embedded directly equal the same samples exported from the converted folder
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ntu_files(tmp_path_factory):
    """Generated raw .skeleton files (3 classes x 4) and the demo folder ntu_gendata.py makes of them."""
    raw = synthetic.generate(tmp_path_factory.mktemp("raw"), num_classes=3, samples_per_class=4, seed=2)
    root = tmp_path_factory.mktemp("converted")
    ntu_gendata.gendata(raw[0].parent, root, "demo", progress=False)
    return raw, root


def test_an_embedded_skeleton_file_equals_its_sample_exported_from_the_converted_folder(ntu_files, tmp_path):
    raw, root = ntu_files
    exported, _ = export(*RANDOM, "--finetune-dataset", "demo", "--data-root", root, "--output", tmp_path / "a.npz")
    embedded, metadata = export(*RANDOM, "--skeleton", *raw, "--output", tmp_path / "b.npz")
    assert embedded["names"].tolist() == [path.name for path in raw] and set(embedded["splits"]) == {"file"}
    assert sorted(exported["names"]) == sorted(embedded["names"])  # both splits hold every file
    assert metadata["layout"]["name"] == "ntu25" and metadata["max_frames"] == 300
    exported = by_name(exported)
    for name, feature, label in zip(embedded["names"], embedded["features"], embedded["labels"]):
        assert label == exported[name][1]  # from the file name, as the converter labels it
        np.testing.assert_allclose(feature, exported[name][0], rtol=0, atol=1e-6)


def test_the_encoder_input_of_a_skeleton_file_is_bitwise_the_feeders(ntu_files):
    # Below the features: the very array the encoder reads, before any floating-point reduction.
    raw, root = ntu_files
    inputs = {}
    for split in build_downstream_datasets(root, "demo", "cross_subject"):
        inputs.update({name: split[i][0] for i, name in enumerate(split.names)})
    for path in raw:
        sample = ntu_gendata.read_xyz(path)
        direct = export_features.model_input(sample, export_features.NTU_FILES, 300, 64)
        assert torch.equal(direct, inputs[path.name]), path.name


def msr_clips(folder, rng):
    """Custom-format MSR-layout clips (T, 20, 3), of lengths on both sides of --max-frames 40."""
    folder.mkdir()
    clips = {}
    for i, frames in enumerate([12, 25, 39, 40, 55, 70, 18, 33]):
        clip = np.cumsum(rng.normal(scale=0.05, size=(frames, 20, 3)), axis=0) + [0.0, 1.0, 3.0]
        clips[f"clip{i}"] = clip.astype(np.float32)
        np.save(folder / f"clip{i}.npy", clips[f"clip{i}"])
    return clips


def test_an_embedded_custom_sequence_equals_its_sample_exported_from_the_converted_folder(tmp_path):
    clips = msr_clips(tmp_path / "clips", np.random.default_rng(0))
    labels = tmp_path / "labels.csv"
    labels.write_text("name,label,split\n" + "".join(f"{name},{i % 20},{'train' if i < 5 else 'val'}\n"
                                                      for i, name in enumerate(clips)))
    # Converted into the folder of the msr protocol: the same 20-joint, one-person layout.
    custom_gendata.convert(tmp_path / "clips", labels, "msr20", tmp_path / "data" / "MSR-Action3D" / "xsub",
                           split_by="column", max_frames=40)
    exported, _ = export(*RANDOM, "--finetune-dataset", "msr", "--data-root", tmp_path / "data",
                         "--output", tmp_path / "a.npz")
    files = [tmp_path / "clips" / f"{name}.npy" for name in clips]
    embedded, metadata = export(*RANDOM, "--sequence", *files, "--layout", "msr20", "--max-frames", "40",
                                "--output", tmp_path / "b.npz")
    assert embedded["names"].tolist() == list(clips) and set(embedded["labels"]) == {-1}
    assert metadata["layout"]["name"] == "msr20" and metadata["model_config"]["num_joints"] == 20
    exported = by_name(exported)
    for name, feature in zip(embedded["names"], embedded["features"]):
        np.testing.assert_allclose(feature, exported[name][0], rtol=0, atol=1e-6)
    # The same clips in one .npz archive (the converter's other input form) embed alike.
    np.savez(tmp_path / "clips.npz", **clips)
    archived, _ = export(*RANDOM, "--sequence", tmp_path / "clips.npz", "--layout", "msr20", "--max-frames", "40",
                         "--output", tmp_path / "c.npz")
    assert archived["names"].tolist() == list(clips)
    np.testing.assert_array_equal(archived["features"], embedded["features"])


def test_2d_keypoint_sequences_embed_with_an_encoder_of_two_coordinates(tmp_path):
    # COCO-17 keypoints of a pose estimator, one and two persons, float16 as PYSKL stores them.
    rng = np.random.default_rng(0)
    np.save(tmp_path / "one.npy", rng.normal(size=(30, 17, 2)).astype(np.float16))
    np.save(tmp_path / "two.npy", rng.normal(size=(2, 12, 17, 2)).astype(np.float16))
    arrays, metadata = export(*RANDOM, "--sequence", tmp_path / "one.npy", tmp_path / "two.npy", "--layout", "coco17",
                              "--output", tmp_path / "coco.npz")
    assert arrays["features"].shape == (2, 32) and np.isfinite(arrays["features"]).all()
    config = metadata["model_config"]
    assert (config["layout"], config["num_coords"], config["num_joints"], config["num_persons"]) == ("coco17", 2, 17, 2)


def test_the_real_ntu_file_embeds_as_it_converts(tmp_path):
    # Optional: the one real NTU RGB+D file beside the checkout (subject 8, a training subject), converted
    # together with a generated file of a validation subject so that both splits hold a sample.
    if REAL_SKELETON is None:
        pytest.skip("S002C003P008R002A055.skeleton not found (tests/golden, or ../shared/fixtures beside the checkout)")
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(REAL_SKELETON, raw)
    generated = synthetic.generate(tmp_path / "generated", num_classes=1, samples_per_class=4, seed=0)
    for path in generated:
        if ntu_gendata.parse_name(path).subject not in ntu_gendata.NTU60_TRAIN_SUBJECTS:
            shutil.copy(path, raw)
    ntu_gendata.gendata(raw, tmp_path / "data", "demo", progress=False)
    exported, _ = export(*RANDOM, "--finetune-dataset", "demo", "--data-root", tmp_path / "data",
                         "--output", tmp_path / "a.npz")
    embedded, _ = export(*RANDOM, "--skeleton", REAL_SKELETON, "--output", tmp_path / "b.npz")
    name = os.path.basename(REAL_SKELETON)
    assert embedded["labels"].tolist() == [54]  # A055
    np.testing.assert_allclose(embedded["features"][0], by_name(exported)[name][0], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file, before any work, nothing written
# ---------------------------------------------------------------------------------------------

def test_bad_files_and_a_checkpoint_of_another_skeleton_are_refused_naming_them(ntu_files, tmp_path):
    raw, _ = ntu_files
    output = tmp_path / "out.npz"
    missing = tmp_path / "S001C001P001R001A001.skeleton"
    with pytest.raises(SystemExit, match=f"^{missing}: no such file$"):
        export(*RANDOM, "--skeleton", raw[0], missing, "--output", output)
    # A sequence of NTU's 25 joints given as the 20-joint MSR layout.
    clip = tmp_path / "clip.npy"
    np.save(clip, np.ones((10, 25, 3), np.float32))
    with pytest.raises(CustomDataError) as error:
        export(*RANDOM, "--sequence", clip, "--layout", "msr20", "--output", output)
    assert str(error.value) == f"{clip}: 25 joints x 3 coordinates, but the layout msr20 has 20 x 3"
    assert not output.exists()
    # Files that are not numeric .npy arrays: text, a Python object array, an archive under a .npy name.
    text, objects, archive = tmp_path / "text.npy", tmp_path / "objects.npy", tmp_path / "archive.npy"
    text.write_text("1 2 3\n")
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with open(archive, "wb") as f:
        np.savez(f, clip=np.ones((10, 20, 3)))
    for path, problem in ((text, "not a .npy file"), (objects, "holds Python objects, not numbers"),
                          (archive, "holds several arrays")):
        with pytest.raises(CustomDataError, match=f"^{path}: {problem}"):
            export(*RANDOM, "--sequence", path, "--layout", "msr20", "--output", output)
    with pytest.raises(SystemExit, match="--sequence needs --layout"):
        export(*RANDOM, "--sequence", clip, "--output", output)
    # A checkpoint pretrained on MSR Action3D cannot embed NTU files.
    msr = UmURLConfig(layout="msr20", parents=MSR_20.parents, num_joints=20, num_persons=1, hidden_size=16,
                      projector_dim=32)
    checkpoint = tmp_path / "msr.pth.tar"
    save_atomic({"epoch": 1, "state_dict": UmURL(msr).state_dict(), "model_config": msr.to_dict()}, checkpoint)
    with pytest.raises(CheckpointMismatch) as error:
        export(*CPU, "--pretrained", checkpoint, "--skeleton", raw[0], "--output", output)
    assert str(error.value) == (
        f"{checkpoint}: pretrained on msr20 skeletons (20 joints, 1 person, 3 coordinates, 64-frame views), but "
        f"--skeleton (raw NTU RGB+D files) holds ntu25 skeletons (25 joints, 2 persons, 3 coordinates, 64-frame "
        f"views): an encoder transfers only between datasets of the same skeleton layout")
    # The same checkpoint embeds MSR-layout sequences.
    np.save(clip, np.ones((10, 20, 3), np.float32))
    arrays, _ = export(*CPU, "--pretrained", checkpoint, "--sequence", clip, "--layout", "msr20", "--output", output)
    assert arrays["features"].shape == (1, 32)


def test_the_command_line_says_what_is_wrong_in_one_line(tmp_path):
    broken = tmp_path / "S001C001P001R001A001.skeleton"
    broken.write_text("2\n1\nnot a body line\n")
    result = subprocess.run([sys.executable, "export_features.py", *RANDOM, "--skeleton", str(broken),
                             "--output", str(tmp_path / "out.npz")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.startswith(f"error: {broken}, line 3: ") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out.npz").exists()
