"""The evaluation shell scripts: their usage text, and the command line each one builds.

A stand-in `python` first on PATH prints its working directory and arguments instead of running,
so every script is checked in milliseconds without a model or data.
"""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("linear", "knn", "semi", "finetune", "transfer", "tsne")


@pytest.fixture
def run_script(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text('#!/usr/bin/env bash\npwd\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def run(name, *args):
        # Run from elsewhere: the script must move to the repository root itself.
        return subprocess.run(["bash", str(ROOT / "scripts" / f"{name}.sh"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=30)
    return run


def last_value(argv, flag):
    """The value of the last occurrence of flag: the one argparse keeps."""
    return argv[len(argv) - 1 - argv[::-1].index(flag) + 1]


@pytest.mark.parametrize("name", SCRIPTS)
def test_too_few_arguments_print_the_script_s_own_usage(run_script, name):
    result = run_script(name, "checkpoints/run", "ntu60")
    assert result.returncode == 2
    assert f"bash scripts/{name}.sh <" in result.stdout and "set -euo" not in result.stdout


@pytest.mark.parametrize("name, entry, run_folder", [
    ("linear", "action_recognition.py", "linear_ntu60_cross_view"),
    ("knn", "action_retrieval.py", "knn_ntu60_cross_view"),
    ("semi", "action_recognition.py", "semi0.01_ntu60_cross_view"),
    ("finetune", "action_recognition.py", "finetune_ntu60_cross_view"),
    ("transfer", "action_recognition.py", "transfer_ntu60_cross_view"),
    ("tsne", "tsne.py", "tsne_ntu60_cross_view"),
])
def test_each_script_passes_the_checkpoint_dataset_protocol_and_run_folder(run_script, name, entry, run_folder):
    result = run_script(name, "checkpoints/run", "ntu60", "cross_view", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    cwd, *argv = result.stdout.splitlines()
    assert Path(cwd) == ROOT and argv[0] == entry
    assert last_value(argv, "--pretrained") == "checkpoints/run/checkpoint_0450.pth.tar"
    assert (last_value(argv, "--finetune-dataset"), last_value(argv, "--protocol")) == ("ntu60", "cross_view")
    assert last_value(argv, "--checkpoint-path") == f"checkpoints/run/{run_folder}"
    assert argv[-2:] == ["--device", "cpu"]  # extra flags come last, so they override


def test_linear_and_transfer_use_the_released_probe_settings(run_script):
    for name in ("linear", "transfer"):
        argv = run_script(name, "c", "pku2", "cross_subject").stdout.splitlines()[1:]
        settings = {flag: last_value(argv, flag) for flag in ("--lr", "--batch-size", "--epochs", "--wd")}
        assert settings == {"--lr": "0.03", "--batch-size": "512", "--epochs": "150", "--wd": "0"}, name
        assert argv[argv.index("--schedule") + 1:argv.index("--schedule") + 3] == ["120", "140"]


def test_semi_takes_an_optional_label_fraction(run_script):
    given = run_script("semi", "c", "ntu60", "cross_subject", "0.1", "--seed", "1").stdout.splitlines()[1:]
    assert last_value(given, "--label-fraction") == "0.1" and given[-2:] == ["--seed", "1"]
    assert last_value(given, "--checkpoint-path") == "c/semi0.1_ntu60_cross_subject"
    default = run_script("semi", "c", "ntu60", "cross_subject", "--seed", "1").stdout.splitlines()[1:]
    assert last_value(default, "--label-fraction") == "0.01" and "0.1" not in default


def test_pretrain_script_prints_its_usage_without_code(run_script):
    result = run_script("pretrain", "ntu60")
    assert result.returncode == 2
    assert "bash scripts/pretrain.sh <dataset>" in result.stdout and "set -euo" not in result.stdout


@pytest.mark.parametrize("dataset, protocol, batch", [
    ("ntu60", "cross_subject", 512), ("ntu60", "cross_view", 1024),
    ("ntu120", "cross_subject", 1024), ("ntu120", "cross_setup", 1024),
])
def test_pretrain_script_runs_the_released_settings_of_each_protocol(run_script, dataset, protocol, batch):
    from options.pretrain import build_parser
    from options.protocols import get_protocol

    result = run_script("pretrain", dataset, protocol, "0")  # 0 GPUs: plain python on the CPU
    assert result.returncode == 0, result.stderr
    cwd, script, *argv = result.stdout.splitlines()
    assert Path(cwd) == ROOT and script == "pretrain.py"
    args = build_parser().parse_args(argv)
    assert (args.lr, args.epochs, args.schedule, args.weight_decay) == (5e-4, 451, [351], 1e-5)
    # No batch on the command line: pretrain.py takes the protocol's, the released script's line for it.
    assert args.batch_size is None and get_protocol(dataset, protocol).pretrain_batch_size == batch
