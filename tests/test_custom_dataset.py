"""Dataset custom: a folder written by data_gen/custom_gendata.py, used by every script with
`--pre-dataset custom --data-root DIR` / `--finetune-dataset custom --data-root DIR` and nothing else.

End to end on tiny generated data: 2D COCO-17 keypoints (C = 2) and 3D OpenNI-15 skeletons of two
persons; the metadata that describes the folder, refused in one line when missing or bad; a
checkpoint of one skeleton refused on a folder of another; the shell scripts' command lines.
"""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import action_recognition
import action_retrieval
import export_features
import pretrain
import tsne
from checkpoint import CheckpointError, read_checkpoint
from data_gen.custom_gendata import convert, derived_min_crop
from dataset import build_downstream_datasets
from options.common import model_config
from options.downstream import (build_export_parser, build_recognition_parser, build_retrieval_parser,
                                build_tsne_parser)
from options.pretrain import build_parser, resolve_pretraining_settings, view_config
from options.protocols import get_protocol, read_metadata
from safe_io import DataFileError
from skeleton import read_layout

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["--hidden-size", "16", "--projector-dim", "32"]
RUNTIME = ["--device", "cpu", "--workers", "0"]


def make_custom_folder(tmp, layout, *, clips=24, classes=3, coords=None, persons=None, seed=0):
    """Random clips of a layout (8..43 frames, one or all persons), labelled by class names and split by
    subject (subjects 1 and 2 train, 3 validates) -> the prepared folder custom_gendata.py writes."""
    rng = np.random.default_rng(seed)
    shape = read_layout(layout)
    coords = coords or shape.num_coords
    persons = persons or shape.num_persons
    sequences = tmp / "clips"
    sequences.mkdir(parents=True)
    rows = ["name,label,subject"]
    for i in range(clips):
        frames = 8 + (5 * i) % 36
        array = rng.normal(size=(persons if i % 2 else 1, frames, shape.num_joints, coords)).astype(np.float32)
        np.save(sequences / f"clip{i:02d}.npy", array)
        rows.append(f"clip{i:02d},action{i % classes},{1 + i % 3}")
    (tmp / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp / "prepared"
    convert(sequences, tmp / "labels.csv", layout, out, split_by="subject", train_subjects=["1", "2"])
    return out


@pytest.fixture(scope="module")
def coco_2d(tmp_path_factory):
    return make_custom_folder(tmp_path_factory.mktemp("coco"), "coco17")


@pytest.fixture(scope="module")
def openni_3d(tmp_path_factory):
    return make_custom_folder(tmp_path_factory.mktemp("openni"), "openni15", seed=1)


def pretrain_run(data_root, run_dir, *extra):
    args = build_parser().parse_args(["--pre-dataset", "custom", "--data-root", str(data_root), "--checkpoint-path",
                                      str(run_dir), *TINY_MODEL, "--batch-size", "8", *RUNTIME, *extra])
    pretrain.main(args)
    return args


def evaluation_flags(data_root, run_dir, checkpoint=None):
    encoder = [] if checkpoint is None else ["--pretrained", str(checkpoint)]
    return ["--finetune-dataset", "custom", "--data-root", str(data_root), "--checkpoint-path", str(run_dir),
            *encoder, *RUNTIME]


# ----------------------------------------------------------------------------- the protocol from metadata.json

def test_the_protocol_of_a_2d_folder_comes_from_its_metadata(coco_2d):
    protocol = get_protocol("custom", None, coco_2d)
    metadata = json.loads((coco_2d / "metadata.json").read_text())
    assert (protocol.dataset, protocol.protocol, protocol.folder) == ("custom", "cross_subject", ".")
    assert (protocol.num_coords, protocol.num_joints, protocol.num_persons) == (2, 17, 2)
    assert protocol.topology == read_layout("coco17").topology  # parents (the bones), centre, shoulders
    assert protocol.num_classes == 3 and protocol.class_names == ("action0", "action1", "action2")
    assert protocol.min_crop_length == metadata["min_crop_length"] == derived_min_crop(
        [metadata["frames"]["train"]["median"]]) < 64
    assert protocol.pretrain_batch_size == 512  # the released default
    # Logs and plots name the folder: every custom folder shares the dataset name.
    assert protocol.title == f"custom data {coco_2d} (cross_subject)"
    # Token widths from C: M*V*C = 2*17*2 and T*C = 64*2.
    assert (protocol.t_input_size, protocol.s_input_size) == (68, 128)
    config = model_config(protocol, hidden_size=16)
    assert (config.num_coords, config.t_input_size, config.s_input_size, config.layout) == (2, 68, 128, "coco17")
    assert config.parents == protocol.topology.parents
    args = build_parser().parse_args(["--pre-dataset", "custom", "--data-root", str(coco_2d)])
    assert view_config(args, protocol).min_crop_length == protocol.min_crop_length
    assert view_config(args, protocol).num_corrupt == round(15 * 17 / 25)


def test_the_built_in_protocols_are_unchanged_and_default_to_cross_subject():
    for dataset in ("ntu60", "ntu120", "pku2", "msr", "demo"):
        assert get_protocol(dataset) == get_protocol(dataset, "cross_subject")
        assert get_protocol(dataset).num_coords == 3 and get_protocol(dataset).class_names is None
        assert get_protocol(dataset).title == f"{dataset} cross_subject"
    assert get_protocol("ntu60", "cross_subject").t_input_size == 150  # 2 persons x 25 joints x xyz
    args = resolve_pretraining_settings(build_parser().parse_args(["--pre-dataset", "ntu120"]))
    assert (args.protocol, args.batch_size) == ("cross_subject", 1024)


def test_protocol_flag_may_repeat_the_folder_s_but_not_contradict_it(coco_2d):
    args = resolve_pretraining_settings(build_parser().parse_args(
        ["--pre-dataset", "custom", "--data-root", str(coco_2d), "--protocol", "cross_subject"]))
    assert (args.protocol, args.batch_size) == ("cross_subject", 512)
    with pytest.raises(DataFileError, match="split by subject, protocol cross_subject, not --protocol csv_split") \
            as error:
        resolve_pretraining_settings(build_parser().parse_args(
            ["--pre-dataset", "custom", "--data-root", str(coco_2d), "--protocol", "csv_split"]))
    assert "\n" not in str(error.value) and str(coco_2d / "metadata.json") in str(error.value)


def test_a_training_split_smaller_than_the_batch_names_the_batch_flag(coco_2d, tmp_path):
    args = build_parser().parse_args(["--pre-dataset", "custom", "--data-root", str(coco_2d), "--checkpoint-path",
                                      str(tmp_path / "run"), *TINY_MODEL, *RUNTIME])
    with pytest.raises(SystemExit, match="16 training samples cannot fill one global batch of 512 .*--batch-size"):
        pretrain.main(args)


# ----------------------------------------------------------------------------- end to end

def test_2d_coco_keypoints_end_to_end(coco_2d, tmp_path):
    run = tmp_path / "pretrain"
    pretrain_run(coco_2d, run, "--epochs", "2")
    checkpoint = run / "checkpoint_0001.pth.tar"
    saved = read_checkpoint(checkpoint)["model_config"]
    assert (saved["num_coords"], saved["num_joints"], saved["num_persons"], saved["layout"]) == (2, 17, 2, "coco17")
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["protocol"] == "cross_subject" and config["min_crop_length"] == get_protocol(
        "custom", None, coco_2d).min_crop_length

    linear = action_recognition.main(build_recognition_parser().parse_args(
        [*evaluation_flags(coco_2d, tmp_path / "linear", checkpoint), "--epochs", "2", "--batch-size", "8"]))
    assert (linear["dataset"], linear["protocol"], linear["val_samples"]) == ("custom", "cross_subject", 8)
    semi = action_recognition.main(build_recognition_parser().parse_args(
        [*evaluation_flags(coco_2d, tmp_path / "semi", checkpoint), "--finetune", "--label-fraction", "0.5",
         "--epochs", "1", "--batch-size", "4"]))
    assert semi["train_samples"] < 16
    knn = action_retrieval.main(build_retrieval_parser().parse_args(
        evaluation_flags(coco_2d, tmp_path / "knn", checkpoint)))
    assert 0.0 <= knn["top1"] <= 100.0 and knn["protocol"] == "cross_subject"
    # The folder's class names reach the per-class results.
    assert knn["class_names"] == linear["class_names"] == ["action0", "action1", "action2"]
    assert len(linear["confusion_matrix"]) == 3 and (tmp_path / "knn" / "confusion_matrix.png").exists()
    # Features of the 2D folder, through the same encoder sizes the checkpoint recorded.
    export_features.main(build_export_parser().parse_args(
        ["--finetune-dataset", "custom", "--data-root", str(coco_2d), "--pretrained", str(checkpoint), *RUNTIME,
         "--output", str(tmp_path / "features.npz")]))
    with np.load(tmp_path / "features.npz", allow_pickle=False) as exported:
        assert exported["features"].shape == (24, 32) and len(exported["names"]) == 24
    tsne.main(build_tsne_parser().parse_args(
        [*evaluation_flags(coco_2d, tmp_path / "tsne", checkpoint), "--num-classes", "3", "--perplexity", "2"]))
    assert (tmp_path / "tsne" / "tsne.png").stat().st_size > 0


def test_2d_views_drawn_on_the_device_train_too(coco_2d, tmp_path):
    pretrain_run(coco_2d, tmp_path / "run", "--epochs", "1", "--augment-on-device")
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(log["loss"])


def test_3d_two_person_openni_folder_end_to_end(openni_3d, tmp_path, capsys):
    protocol = get_protocol("custom", None, openni_3d)
    assert (protocol.num_coords, protocol.num_joints, protocol.num_persons, protocol.t_input_size) == (3, 15, 2, 90)
    pretrain_run(openni_3d, tmp_path / "run", "--epochs", "1")
    knn = action_retrieval.main(build_retrieval_parser().parse_args(
        evaluation_flags(openni_3d, tmp_path / "knn", tmp_path / "run" / "checkpoint_0000.pth.tar")))
    assert knn["dataset"] == "custom"
    assert f": custom data {openni_3d} (cross_subject), 16 training and 8 validation samples" in capsys.readouterr().out
    train, val = build_downstream_datasets(openni_3d, "custom", None)
    assert train[0][0].shape == (3, 64, 15, 2) and len(val) == 8


def test_a_2d_checkpoint_is_refused_on_a_3d_folder_of_the_same_joints_in_one_line(coco_2d, tmp_path):
    # The same 17 COCO joints and 2 persons, but x y z: only C tells the two skeletons apart.
    layout = json.loads((ROOT / "layouts" / "coco17.json").read_text())
    layout["coords"] = 3
    (tmp_path / "coco17_3d.json").write_text(json.dumps(layout))
    folder_3d = make_custom_folder(tmp_path / "data3d", str(tmp_path / "coco17_3d.json"))
    pretrain_run(coco_2d, tmp_path / "run", "--epochs", "1")
    with pytest.raises(CheckpointError, match=f"2 coordinates.*but custom data {re.escape(str(folder_3d))} "
                                              r"\(cross_subject\) holds .*3 coordinates") as error:
        action_retrieval.main(build_retrieval_parser().parse_args(
            evaluation_flags(folder_3d, tmp_path / "knn", tmp_path / "run" / "checkpoint_0000.pth.tar")))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "knn").exists()  # refused before the run folder was made


# ----------------------------------------------------------------------------- bad or missing metadata

def rewrite_metadata(source, target, change):
    """A copy of a prepared folder whose metadata.json record went through change(record)."""
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).symlink_to(path) if path.name != "metadata.json" else None
    record = json.loads((source / "metadata.json").read_text())
    change(record)
    (target / "metadata.json").write_text(json.dumps(record))
    return target


@pytest.mark.parametrize("change, words", [
    (lambda record: record.pop("num_classes"), "num_classes: missing"),
    (lambda record: record.update(min_crop_length=0), "min_crop_length: must be a whole number of frames in 1..64"),
    (lambda record: record.update(split={"by": "moon"}), "split: must be an object whose 'by' is one of"),
    (lambda record: record.update(class_names=["a"]), "class_names: must be null or a list of 3 names"),
    (lambda record: record["layout"]["joints"][0].update(parent="ankle_left"), "layout: a skeleton is a tree"),
    (lambda record: record["layout"].update(coords=4), "layout: 'coords' must be 2"),
    (lambda record: record.update(samples={"train": 16}), "samples: must give the sample count"),
    (lambda record: record.update(format="other-v9"), "format: 'other-v9' is not"),
])
def test_bad_metadata_is_one_line_naming_the_file_the_key_and_the_converter(coco_2d, tmp_path, change, words):
    folder = rewrite_metadata(coco_2d, tmp_path / "bad", change)
    with pytest.raises(DataFileError) as error:
        get_protocol("custom", None, folder)
    message = str(error.value)
    assert message.startswith(f"{folder / 'metadata.json'}: ") and words in message, message
    assert "data_gen/custom_gendata.py" in message and "\n" not in message


def test_missing_or_unreadable_metadata_tells_to_run_the_converter(tmp_path):
    with pytest.raises(DataFileError, match="metadata.json: not found; .*run data_gen/custom_gendata.py"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(DataFileError, match="metadata.json: not a readable JSON file"):
        read_metadata(tmp_path)


def test_the_command_line_refuses_a_folder_without_metadata_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "pretrain.py", "--pre-dataset", "custom", "--data-root", str(tmp_path),
                             "--checkpoint-path", str(tmp_path / "run"), "--device", "cpu"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'metadata.json'}: not found; --pre-dataset/--finetune-dataset custom read the folder "
        f"that data_gen/custom_gendata.py writes, given as --data-root: run data_gen/custom_gendata.py with "
        f"--out-folder {tmp_path} to write it"]
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- the shell scripts

@pytest.fixture
def script(tmp_path):
    """Run scripts/<name>.sh with a stand-in `python`/`torchrun` that prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for launcher in ("python", "torchrun"):
        (bin_dir / launcher).write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
        (bin_dir / launcher).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def run(name, *args):
        result = subprocess.run(["bash", str(ROOT / "scripts" / f"{name}.sh"), *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()
    return run


def flag(argv, name):
    return argv[len(argv) - 1 - argv[::-1].index(name) + 1]


@pytest.mark.parametrize("name, entry", [("linear", "action_recognition.py"), ("knn", "action_retrieval.py"),
                                         ("semi", "action_recognition.py"), ("finetune", "action_recognition.py"),
                                         ("transfer", "action_recognition.py"), ("tsne", "tsne.py")])
def test_evaluation_scripts_take_the_prepared_folder_in_place_of_the_protocol(script, name, entry):
    argv = script(name, "checkpoints/mine", "custom", "data/my_dataset", "--device", "cpu")
    argv = argv[argv.index(entry):]
    assert (flag(argv, "--finetune-dataset"), flag(argv, "--data-root")) == ("custom", "data/my_dataset")
    assert "--protocol" not in argv  # the folder's metadata.json names it
    run_folder = {"semi": "semi0.01"}.get(name, name)
    assert flag(argv, "--checkpoint-path") == f"checkpoints/mine/{run_folder}_custom_my_dataset"


def test_pretrain_script_takes_the_prepared_folder_in_place_of_the_protocol(script):
    argv = script("pretrain", "custom", "data/my_dataset", "0", "--epochs", "5")
    assert (flag(argv, "--pre-dataset"), flag(argv, "--data-root")) == ("custom", "data/my_dataset")
    assert "--protocol" not in argv and flag(argv, "--epochs") == "5"
    assert flag(argv, "--checkpoint-path") == "./checkpoints/custom_my_dataset"
