"""The released command lines, replayed: the released README's and scripts' commands, and every flag
the released pretrain.py, action_recognition.py and action_retrieval.py accepted.

The top-level script_*.sh run from a copy of the scripts, with stand-ins for `python` and `torchrun`
first on PATH (tests/command_resolver.py): each prints what its command line resolves to instead of
running it, so a whole pretraining or evaluation command is checked in a fraction of a second.
The released data preparation call runs for real, on generated files in the released layout.
"""
import json
import os
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from command_resolver import resolve_command
from data_gen import ntu_gendata
from data_gen.synthetic import generate
from options.common import model_config, size_flags
from options.protocols import get_protocol
from safe_io import load_labels
from umurl import UmURLConfig

ROOT = Path(__file__).resolve().parents[1]
RESOLVER = Path(__file__).resolve().parent / "command_resolver.py"
# The released run folders under ./checkpoints and what each holds.
RELEASED_RUNS = {"ntu60_xsub": ("ntu60", "cross_subject"), "ntu60_xview": ("ntu60", "cross_view"),
                 "ntu120_xsub": ("ntu120", "cross_subject"), "ntu120_xset": ("ntu120", "cross_setup")}


@pytest.fixture
def released_checkout(tmp_path):
    """A copy of the shell scripts, and a function running one of them there with the stand-ins:
    run(command words..., **environment) -> (exit code, the stand-ins' records, stderr)."""
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "scripts", root / "scripts")
    for script in ROOT.glob("script_*.sh"):
        shutil.copy2(script, root)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for launcher in ("python", "torchrun"):
        stand_in = bin_dir / launcher
        stand_in.write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" "{RESOLVER}" {launcher} "$@"\n')
        stand_in.chmod(0o755)

    def run(*command, **env):
        result = subprocess.run(list(command), cwd=root, capture_output=True, text=True, timeout=60,
                                env={**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
        records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        return result.returncode, records, result.stderr
    run.root = root
    return run


def pretraining_settings(resolved):
    keys = ("dataset", "protocol", "checkpoint_path", "lr", "epochs", "schedule", "weight_decay", "batch_size")
    return {key: resolved[key] for key in keys}


def released_pretraining(name):
    dataset, protocol = RELEASED_RUNS[name]
    batch = 512 if name == "ntu60_xsub" else 1024  # the released script_pretrain.sh's line for each run
    return {"dataset": dataset, "protocol": protocol, "checkpoint_path": f"checkpoints/{name}", "lr": 5e-4,
            "epochs": 451, "schedule": [351], "weight_decay": 1e-5, "batch_size": batch}


@pytest.mark.parametrize("words, name", [
    ((), "ntu60_xsub"),  # the released script_pretrain.sh ran NTU-60 x-sub without arguments
    (("ntu120_xsub",), "ntu120_xsub"),  # the released README's example
    (("ntu60_xview",), "ntu60_xview"),
    (("ntu120_xset",), "ntu120_xset"),
])
def test_script_pretrain_runs_the_released_pretraining_into_the_released_folder(released_checkout, words, name):
    code, records, stderr = released_checkout("bash", "script_pretrain.sh", *words)
    assert code == 0, stderr
    [record] = records
    assert record["launcher"] == "torchrun" and "--nproc_per_node=4" in record["launcher_options"]
    assert record["cwd"] == str(released_checkout.root) and record["script"] == "pretrain.py"
    assert pretraining_settings(record["resolved"]) == released_pretraining(name)
    assert record["resolved"]["device"] == "cuda" and record["notes"] == []


def test_script_pretrain_takes_another_name_with_its_dataset_gpu_count_and_extra_flags(released_checkout):
    code, [record], stderr = released_checkout("bash", "script_pretrain.sh", "my_run", "ntu60", "cross_view",
                                               "--epochs", "10", GPUS="0")
    assert code == 0, stderr
    assert record["launcher"] == "python" and record["resolved"]["device"] == "cpu"
    assert (record["resolved"]["dataset"], record["resolved"]["protocol"]) == ("ntu60", "cross_view")
    assert record["resolved"]["checkpoint_path"] == "checkpoints/my_run" and record["resolved"]["epochs"] == 10


@pytest.mark.parametrize("words, error", [
    (("my_run",), "my_run is not a released run folder"),
    (("my_run", "ntu60"), "needs its protocol too"),
])
def test_a_name_that_cannot_be_placed_prints_the_usage(released_checkout, words, error):
    for script in ("script_pretrain.sh", "script_action_recognition.sh", "script_action_retrieval.sh"):
        code, _, stderr = released_checkout("bash", script, *words)
        assert code == 2 and error in stderr, script
    code, _, stderr = released_checkout("bash", "script_action_recognition.sh")
    assert code == 2 and "no run name given" in stderr


@pytest.mark.parametrize("words", [
    ("ntu60_xsub", "ntu60", "cross_subject"),  # the released scripts' form: $dir $dataset $protocol
    *((name,) for name in RELEASED_RUNS),  # the released README's form: $TEST_NAME
])
def test_evaluation_scripts_evaluate_the_last_checkpoint_of_the_run_folder_as_released(released_checkout, words):
    name = words[0]
    dataset, protocol = RELEASED_RUNS[name]
    checkpoint = f"checkpoints/{name}/checkpoint_0450.pth.tar"

    code, [record], stderr = released_checkout("bash", "script_action_recognition.sh", *words)
    assert code == 0, stderr
    resolved = record["resolved"]
    assert record["script"] == "action_recognition.py" and record["launcher"] == "python" and record["notes"] == []
    assert (resolved["pretrained"], resolved["dataset"], resolved["protocol"]) == (checkpoint, dataset, protocol)
    probe = {key: resolved[key] for key in ("lr", "batch_size", "epochs", "schedule", "weight_decay", "momentum")}
    assert probe == {"lr": 0.03, "batch_size": 512, "epochs": 150, "schedule": [120, 140], "weight_decay": 0.0,
                     "momentum": 0.9}
    assert resolved["finetune"] is False
    assert resolved["checkpoint_path"] == f"checkpoints/{name}/linear_{dataset}_{protocol}"
    # No size flags: a released checkpoint records no model_config, so the encoder is the released model.
    assert size_flags(Namespace(**resolved)) == {}
    assert model_config(get_protocol(dataset, protocol), **size_flags(Namespace(**resolved))) == UmURLConfig()

    code, [record], stderr = released_checkout("bash", "script_action_retrieval.sh", *words)
    assert code == 0, stderr
    resolved = record["resolved"]
    assert record["script"] == "action_retrieval.py" and record["notes"] == []
    assert (resolved["pretrained"], resolved["dataset"], resolved["protocol"]) == (checkpoint, dataset, protocol)
    assert (resolved["knn_neighbours"], resolved["batch_size"]) == (1, 512)


# The commands inside the released scripts, word for word (the pretraining lines of the other
# protocols were commented-out lines of script_pretrain.sh).
RELEASED_PYTHON_LINES = [
    "torchrun --nproc_per_node=4 pretrain.py --lr 0.0005 --batch-size 512 --checkpoint-path ./checkpoints/ntu60_xsub "
    "--schedule 351 --epochs 451 --pre-dataset ntu60 --protocol cross_subject",
    "torchrun --nproc_per_node=4 pretrain.py --lr 0.0005 --batch-size 1024 --checkpoint-path ./checkpoints/ntu60_xview "
    "--schedule 351 --epochs 451 --pre-dataset ntu60 --protocol cross_view",
    "torchrun --nproc_per_node=4 pretrain.py --lr 0.0005 --batch-size 1024 --checkpoint-path ./checkpoints/ntu120_xsub "
    "--schedule 351 --epochs 451 --pre-dataset ntu120 --protocol cross_subject",
    "torchrun --nproc_per_node=4 pretrain.py --lr 0.0005 --batch-size 1024 --checkpoint-path ./checkpoints/ntu120_xset "
    "--schedule 351 --epochs 451 --pre-dataset ntu120 --protocol cross_setup",
]


@pytest.mark.parametrize("line", RELEASED_PYTHON_LINES)
def test_the_released_pretraining_lines_resolve_to_the_released_settings(line):
    record = resolve_command(line.split())
    name = line.split("./checkpoints/")[1].split()[0]
    assert pretraining_settings(record["resolved"]) == released_pretraining(name)
    assert record["resolved"]["batch_size"] == int(line.split("--batch-size ")[1].split()[0])
    assert record["notes"] == []


def test_the_released_evaluation_lines_resolve_to_the_released_settings():
    record = resolve_command("python action_recognition.py --lr 0.03 --batch-size 512 --pretrained "
                             "./checkpoints/ntu120_xsub/checkpoint_0450.pth.tar --finetune-dataset ntu120 "
                             "--protocol cross_subject".split())
    assert {key: record["resolved"][key] for key in ("lr", "batch_size", "epochs", "schedule", "weight_decay")} == \
        {"lr": 0.03, "batch_size": 512, "epochs": 150, "schedule": [120, 140], "weight_decay": 0.0}
    assert record["notes"] == []
    # The example: refused before (--lr was unknown to action_retrieval.py).
    record = resolve_command("python action_retrieval.py --lr 0.03 --batch-size 512 --knn-neighbours 1 --pretrained "
                             "./checkpoints/ntu60_xsub/checkpoint_0450.pth.tar --finetune-dataset ntu60 "
                             "--protocol cross_subject".split())
    assert "error" not in record and record["resolved"]["knn_neighbours"] == 1
    assert record["resolved"]["pretrained"] == "checkpoints/ntu60_xsub/checkpoint_0450.pth.tar"
    assert record["notes"] == ["note: --lr does nothing here: kNN retrieval trains nothing (unused in the released "
                               "action_retrieval.py too)"]


# Every flag of the released parsers, with a value of the released type. Flags that do nothing here
# print one note each; the others must land where they did.
RELEASED_FLAGS = {
    "pretrain.py": ("-j 4 --workers 4 --epochs 300 --start-epoch 0 -b 256 --batch-size 256 --lr 0.001 "
                    "--learning-rate 0.002 --schedule 100 160 --momentum 0.9 --wd 1e-4 --weight-decay 1e-5 -p 5 "
                    "--print-freq 5 --resume run/checkpoint_last.pth.tar --seed 1 --gpu 0 --checkpoint-path "
                    "./checkpoints --pre-dataset ntu120 --protocol cross_setup --cos --device cuda --world-size 4 "
                    "--local_rank 0 --dist-url env:// --rank 0"),
    "action_recognition.py": ("-j 12 --workers 12 --epochs 150 --start-epoch 0 -b 256 --batch-size 256 --lr 30 "
                              "--learning-rate 0.03 --schedule 120 140 --momentum 0.8 --wd 0 --weight-decay 0 -p 10 "
                              "--print-freq 10 --resume x.pth.tar --seed 1 --gpu 0 --pretrained x.pth.tar "
                              "--finetune-dataset ntu60 --protocol cross_view "
                              "--finetune_skeleton_representation joint"),
    "action_retrieval.py": ("-j 8 --workers 8 --epochs 80 --start-epoch 0 -b 256 --batch-size 256 --lr 30 "
                            "--learning-rate 0.03 --schedule 50 70 --momentum 0.9 --wd 0 --weight-decay 0 -p 10 "
                            "--print-freq 10 --resume x.pth.tar --seed 1 --gpu 0 --pretrained x.pth.tar "
                            "--finetune-dataset ntu60 --protocol cross_view --knn-neighbours 5"),
}
NOTED = {  # the flags of each that do nothing here, in the order they appear above
    "pretrain.py": ["--start-epoch", "--momentum", "--gpu", "--world-size", "--local_rank", "--dist-url", "--rank"],
    "action_recognition.py": ["--start-epoch", "--resume", "--gpu", "--finetune_skeleton_representation"],
    "action_retrieval.py": ["--epochs", "--start-epoch", "--lr", "--schedule", "--momentum", "--wd", "--resume",
                            "--gpu"],
}
KEPT = {
    "pretrain.py": {"workers": 4, "epochs": 300, "batch_size": 256, "lr": 0.002, "schedule": [100, 160],
                    "weight_decay": 1e-5, "print_freq": 5, "resume": "run/checkpoint_last.pth.tar", "seed": 1,
                    "checkpoint_path": "checkpoints", "dataset": "ntu120", "protocol": "cross_setup", "cos": True,
                    "device": "cuda"},
    "action_recognition.py": {"workers": 12, "epochs": 150, "batch_size": 256, "lr": 0.03, "schedule": [120, 140],
                              "momentum": 0.8, "weight_decay": 0.0, "print_freq": 10, "seed": 1,
                              "pretrained": "x.pth.tar", "dataset": "ntu60", "protocol": "cross_view"},
    "action_retrieval.py": {"workers": 8, "batch_size": 256, "print_freq": 10, "seed": 1, "pretrained": "x.pth.tar",
                            "dataset": "ntu60", "protocol": "cross_view", "knn_neighbours": 5},
}


@pytest.mark.parametrize("script", RELEASED_FLAGS)
def test_every_released_flag_is_accepted_and_the_idle_ones_print_one_note_each(script):
    record = resolve_command(["python", script, *RELEASED_FLAGS[script].split()])
    assert "error" not in record, record.get("error")
    assert {key: record["resolved"][key] for key in KEPT[script]} == KEPT[script]
    assert [line.split()[1] for line in record["notes"]] == NOTED[script]
    assert all(line.startswith("note: ") and " does nothing here: " in line for line in record["notes"])
    assert record["resolved"]["ignored_gpu"] == "0"  # kept, so config.json records what was passed


def test_a_note_is_printed_once_and_only_by_the_first_process(monkeypatch):
    assert len(resolve_command("python pretrain.py --gpu 0 --gpu 1".split())["notes"]) == 1
    monkeypatch.setenv("RANK", "1")
    assert resolve_command("python pretrain.py --gpu 0".split())["notes"] == []


def test_the_released_data_preparation_call_resolves_to_the_released_layout(released_checkout):
    # The released README: `cd data_gen; python ntu_gendata.py`, no arguments.
    result = subprocess.run([sys.executable, RESOLVER, "python", "ntu_gendata.py"], cwd=ROOT / "data_gen",
                            capture_output=True, text=True, timeout=60, check=True)
    resolved = json.loads(result.stdout)["resolved"]
    raw = ROOT / "data" / "nturgbd_raw_120"
    assert resolved == {**resolved, "dataset": "ntu120", "data_path": [str(raw / "nturgb+d_skeletons")],
                        "ignored_sample_path": str(raw / "samples_with_missing_skeletons.txt"),
                        "out_folder": str(ROOT / "data")}


def test_the_released_data_preparation_call_converts_the_released_layout(tmp_path, monkeypatch, capsys):
    # The same call, run for real on generated files placed where the released README puts them.
    monkeypatch.setattr(ntu_gendata, "REPO_ROOT", tmp_path)
    raw = tmp_path / "data" / "nturgbd_raw_120"
    files = generate(raw / "nturgb+d_skeletons", num_classes=3, samples_per_class=6)
    (raw / "samples_with_missing_skeletons.txt").write_text(files[0].stem + "\n")
    ntu_gendata.main(["--workers", "1"])
    converted = set()
    for benchmark in ("xsub", "xsetup"):  # the released default dataset's two benchmarks
        folder = tmp_path / "data" / "NTU-RGB-D-120-AGCN" / benchmark
        names = [name for part in ("train", "val") for name in load_labels(folder / f"{part}_label.pkl")[0]]
        assert sorted(names) == sorted(f.name for f in files[1:])  # all but the ignored sample, once
        assert np.load(folder / "train_data_joint.npy", mmap_mode="r").shape[1:] == (3, 300, 25, 2)
        converted.add(benchmark)
    assert converted == {"xsub", "xsetup"}
    assert "17 samples converted" in capsys.readouterr().out

    (raw / "samples_with_missing_skeletons.txt").unlink()
    with pytest.raises(SystemExit, match="samples_with_missing_skeletons.txt: No such file"):
        ntu_gendata.main(["--workers", "1"])
    with pytest.raises(SystemExit, match="--data_path is needed for --dataset demo"):
        ntu_gendata.main(["--dataset", "demo"])
