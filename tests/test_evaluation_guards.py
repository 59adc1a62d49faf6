"""The evaluation scripts refuse what would make their results meaningless or mixed (README "Reliability").

A diverged (NaN/Inf) encoder, a run folder that already holds results, a missing checkpoint or data
file: each stops the run before features are computed, with one sentence naming the file.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import make_demo_data

import action_recognition
import action_retrieval
import tsne
from checkpoint import CheckpointError, CheckpointMismatch, save_atomic
from options.downstream import build_recognition_parser, build_retrieval_parser, build_tsne_parser
import skeleton
from umurl import UmURL, UmURLConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--hidden-size", "16", "--device", "cpu", "--workers", "0", "--finetune-dataset", "demo"]
SCRIPTS = {
    "action_recognition.py": (action_recognition.main, build_recognition_parser,
                              ["--epochs", "2", "--batch-size", "8"]),
    "action_retrieval.py": (action_retrieval.main, build_retrieval_parser, []),
    "tsne.py": (tsne.main, build_tsne_parser, ["--num-classes", "2"]),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("data"), num_train=8, num_val=8)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A finite pretraining checkpoint of the tiny model, and the same with NaN and Inf in three tensors."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    state_dict = UmURL(UmURLConfig(hidden_size=16, projector_dim=32)).state_dict()
    save_atomic({"epoch": 1, "state_dict": state_dict}, folder / "good.pth.tar")  # no model_config, as released
    # Checkpoints that record their configuration (as pretrain.py writes them): one of the MSR layout, one
    # whose model_config is damaged.
    msr = UmURLConfig(layout="msr20", parents=skeleton.MSR_20.parents, num_joints=20, num_persons=1, hidden_size=16,
                      projector_dim=32)
    save_atomic({"epoch": 1, "state_dict": UmURL(msr).state_dict(), "model_config": msr.to_dict()},
                folder / "msr.pth.tar")
    damaged = UmURLConfig(hidden_size=16).to_dict()
    damaged["num_layers"] = damaged.pop("num_layer")
    save_atomic({"epoch": 1, "state_dict": state_dict, "model_config": damaged}, folder / "damaged.pth.tar")
    lying = UmURLConfig(hidden_size=2**16, num_layer=64).to_dict()  # would build a model of billions of weights
    save_atomic({"epoch": 1, "state_dict": state_dict, "model_config": lying}, folder / "lying.pth.tar")
    diverged = {key: value.clone() for key, value in state_dict.items()}
    diverged["backbone.j_emb.t_embedding.0.bias"][3] = float("nan")
    diverged["backbone.ma_encoder.t_tr.layers.0.linear1.weight"][0, 0] = float("inf")
    diverged["j_projector.0.weight"][0, 0] = float("nan")  # a projector: not part of the evaluated encoder
    diverged["backbone.m_emb.s_embedding.0.weight"][1] = float("-inf")
    save_atomic({"epoch": 1, "state_dict": diverged}, folder / "diverged.pth.tar")
    return folder


def run(script, data_root, run_dir, *flags):
    main, build_parser, settings = SCRIPTS[script]
    return main(build_parser().parse_args([*TINY, *settings, "--data-root", str(data_root),
                                           "--checkpoint-path", str(run_dir), *flags]))


# ---------------------------------------------------------------------------------------------------------
# A diverged encoder


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_encoder_with_non_finite_weights_is_refused_naming_the_first_bad_tensors(
        script, data_root, checkpoints, tmp_path, capsys):
    with pytest.raises(CheckpointError) as caught:
        run(script, data_root, tmp_path / "run", "--pretrained", str(checkpoints / "diverged.pth.tar"))
    message = str(caught.value)
    assert message.startswith(f"{checkpoints / 'diverged.pth.tar'}: 3 of its DownstreamModel tensors hold NaN or Inf")
    assert "first backbone.j_emb.t_embedding.0.bias, backbone.m_emb.s_embedding.0.weight, " \
           "backbone.ma_encoder.t_tr.layers.0.linear1.weight" in message
    assert "j_projector" not in message and "\n" not in message
    assert "RESULT" not in capsys.readouterr().out
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


# ---------------------------------------------------------------------------------------------------------
# A checkpoint's recorded model configuration


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkpoint_of_another_skeleton_layout_is_refused_in_one_line(script, data_root, checkpoints, tmp_path):
    path = checkpoints / "msr.pth.tar"
    with pytest.raises(CheckpointMismatch) as caught:
        run(script, data_root, tmp_path / "run", "--pretrained", str(path))
    assert str(caught.value) == (
        f"{path}: pretrained on msr20 skeletons (20 joints, 1 person, 3 coordinates, 64-frame views), but demo "
        f"cross_subject holds ntu25 skeletons (25 joints, 2 persons, 3 coordinates, 64-frame views): an encoder "
        f"transfers only between datasets of the same skeleton layout")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_size_flag_that_contradicts_the_checkpoint_is_refused_in_one_line(script, data_root, checkpoints, tmp_path):
    with pytest.raises(SystemExit) as caught:  # TINY passes --hidden-size 16
        run(script, data_root, tmp_path / "run", "--pretrained", str(checkpoints / "msr.pth.tar"), "--num-layer", "2")
    assert str(caught.value).startswith("--num-layer 2 (the checkpoint's num_layer is 1): ")
    assert "\n" not in str(caught.value) and not (tmp_path / "run").exists()


def test_a_damaged_model_config_is_refused_naming_the_file_and_the_key(data_root, checkpoints, tmp_path):
    path = checkpoints / "damaged.pth.tar"
    with pytest.raises(CheckpointError) as caught:
        run("action_retrieval.py", data_root, tmp_path / "run", "--pretrained", str(path))
    assert str(caught.value).startswith(f"{path}: its model_config is unusable: model config: unknown keys "
                                        f"['num_layers'], missing keys ['num_layer']")
    assert "\n" not in str(caught.value)
    lying = checkpoints / "lying.pth.tar"
    with pytest.raises(CheckpointError) as caught:  # refused before the model it describes is built
        run("action_retrieval.py", data_root, tmp_path / "run", "--pretrained", str(lying), "--hidden-size", "65536",
            "--num-layer", "64")
    assert str(caught.value) == (f"{lying}: its model_config (hidden size, token widths, layers (65536, 150, 192, 64)) "
                                 f"disagrees with its weights (16, 150, 192, 1): the file is damaged")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------
# One run folder, one run


@pytest.mark.parametrize("script, first_output", [("action_recognition.py", "results.json, log.jsonl, tensorboard"),
                                                  ("action_retrieval.py", "results.json"),
                                                  ("tsne.py", "results.json")])
def test_a_second_run_into_a_folder_with_results_is_refused_unless_overwrite(
        script, first_output, data_root, checkpoints, tmp_path):
    run_dir = tmp_path / "run"
    good = ["--pretrained", str(checkpoints / "good.pth.tar")]
    run(script, data_root, run_dir, *good)
    first = (run_dir / "results.json").read_text()
    with pytest.raises(SystemExit, match=f"{run_dir} already holds an earlier run's {first_output}.*--overwrite"):
        run(script, data_root, run_dir, *good)
    assert (run_dir / "results.json").read_text() == first
    # --overwrite with an unusable checkpoint: refused before anything of the first run is deleted.
    with pytest.raises(CheckpointError):
        run(script, data_root, run_dir, "--pretrained", str(checkpoints / "diverged.pth.tar"), "--overwrite")
    assert (run_dir / "results.json").read_text() == first
    run(script, data_root, run_dir, "--overwrite")  # random weights this time
    assert json.loads((run_dir / "results.json").read_text()) != json.loads(first) or script == "tsne.py"
    if script == "action_recognition.py":  # one run's epochs, once; one run's TensorBoard events
        assert [json.loads(line)["epoch"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == [0, 1]
        assert len(list((run_dir / "tensorboard").iterdir())) == 1


def test_a_pretraining_run_folder_is_never_an_evaluation_folder(data_root, checkpoints, tmp_path):
    pretraining = tmp_path / "pretraining"
    pretraining.mkdir()
    (pretraining / "checkpoint_last.pth.tar").write_bytes((checkpoints / "good.pth.tar").read_bytes())
    (pretraining / "log.jsonl").write_text('{"epoch": 0}\n')
    with pytest.raises(SystemExit, match="is a pretraining run folder"):
        run("action_recognition.py", data_root, pretraining, "--overwrite")
    assert (pretraining / "log.jsonl").read_text() == '{"epoch": 0}\n'


# ---------------------------------------------------------------------------------------------------------
# One sentence, no traceback


def test_evaluation_scripts_end_a_bad_checkpoint_or_data_file_with_one_line(data_root, checkpoints, tmp_path):
    missing = tmp_path / "missing.pth.tar"
    cases = {
        "action_recognition.py": (["--pretrained", str(missing)], f"error: {missing}: no such checkpoint file"),
        "action_retrieval.py": (["--pretrained", str(checkpoints / "diverged.pth.tar")],
                                f"error: {checkpoints / 'diverged.pth.tar'}: 3 of its DownstreamModel tensors"),
        "tsne.py": (["--data-root", str(tmp_path / "no_data")],
                    f"error: {tmp_path / 'no_data' / 'demo' / 'xsub' / 'train_label.pkl'}: label file not found"),
    }
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    processes = {script: subprocess.Popen(
        [sys.executable, script, *TINY, "--data-root", str(data_root), "--checkpoint-path", str(tmp_path / script),
         *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for script, (flags, _) in cases.items()}  # started together: three interpreter start-ups at once
    for script, process in processes.items():
        _, err = process.communicate(timeout=120)
        assert process.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(cases[script][1]), err
