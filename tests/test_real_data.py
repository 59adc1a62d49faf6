"""benchmarks/real_data.py: the --quick run end to end on the real MSR Action3D files, and its refusals."""
import json
from argparse import Namespace
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluation
from benchmarks import real_data
from checkpoint import read_checkpoint
from data_gen import custom_gendata
from data_gen.msr_gendata import gendata
from examples import msr_action3d_to_custom
from options.protocols import get_protocol, prepared_folder, split_paths
from safe_io import load_labels

ROOT = Path(__file__).resolve().parents[1]
# The optional real data: where CI keeps MSR Action3D, beside the checkout (a plain clone skips these tests).
MSR_DATA = ROOT.parent / "shared" / "data" / "msr_action3d"
ROWS = {(encoder, name) for encoder in real_data.ENCODERS for name in real_data.INPUTS}


def quick_args(out, *extra):
    return real_data.build_parser().parse_args(["--quick", "--out", str(out), "--data-path", str(MSR_DATA), *extra])


QUICK_SEEDS = [0, 3]


@pytest.fixture(scope="module")
def quick_msr_run(tmp_path_factory):
    """The --quick benchmark through the msr path over QUICK_SEEDS: (its folder, its report), read by the
    end-to-end test and, as the reference of the custom path, by the worked-example benchmark test."""
    out = tmp_path_factory.mktemp("quick_msr") / "run"
    return out, real_data.main(quick_args(out, "--seeds", *map(str, QUICK_SEEDS)))


@pytest.mark.benchmark
@pytest.mark.skipif(not (MSR_DATA / real_data.SAMPLE_LIST).exists(),
                    reason=f"MSR Action3D not found at {MSR_DATA} (../shared/data/msr_action3d beside the checkout)")
def test_quick_run_end_to_end_on_the_real_data(quick_msr_run):
    (out, report), seeds = quick_msr_run, QUICK_SEEDS

    assert report["samples"] == {"train": 284, "val": 273}  # the 557-sequence cross-subject split
    pretrain_config = json.loads((out / "seed0" / "pretrain" / "config.json").read_text())["config"]
    assert pretrain_config["min_crop_length"] == 16  # MSR's sequences are shorter than the released 64
    saved = json.loads((out / "results.json").read_text())
    assert {(row["encoder"], row["input"]) for row in saved["rows"]} == ROWS and len(saved["rows"]) == 8
    for row in saved["rows"]:
        assert [run["seed"] for run in row["per_seed"]] == seeds
        for key in ("linear_top1", "knn_top1"):
            assert row[key] == pytest.approx(sum(run[key] for run in row["per_seed"]) / len(seeds))
        for run in row["per_seed"]:
            assert 0.0 <= run["linear_top1"] <= 100.0 and 0.0 <= run["knn_top1"] <= 100.0
            # Every value is what its evaluation run wrote, with the encoder and seed it claims.
            folder = out / f"seed{run['seed']}" / "eval" / f"{row['encoder']}_{row['input']}"
            for kind, key in (("linear", "linear_top1"), ("knn", "knn_top1")):
                written = json.loads((folder / kind / "results.json").read_text())
                config = json.loads((folder / kind / "config.json").read_text())["config"]
                reported = written["best_top1" if kind == "linear" else "top1"]  # the released figure
                assert reported == run[key] and config["seed"] == run["seed"]
                assert written["modalities"] == list(real_data.INPUTS[row["input"]])
                if row["encoder"] == "random":
                    assert written["pretrained"] == "None"
                else:
                    assert Path(written["pretrained"]) == out / f"seed{run['seed']}" / "pretrain" / \
                        "checkpoint_0000.pth.tar"

    table = (out / "results.md").read_text()
    body = [line for line in table.splitlines() if line.startswith("| ") and "encoder" not in line]
    assert {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]) for line in body} == ROWS
    assert len(body) == 8
    assert "Pretrained minus random, fused input" in table

    # A second run into the same folder is refused: pretrain.py would otherwise resume the old runs.
    with pytest.raises(SystemExit, match="not empty"):
        real_data.main(quick_args(out))


def test_the_table_shows_the_mean_and_every_seed():
    per_seed = [{key: {"seed": seed, "linear_top1": 60.0 + seed, "linear_final_top1": 0.0, "linear_top5": 0.0,
                       "knn_top1": 50.0 + 2 * seed + (key[0] == "pretrained"), "linear_s": 1.0, "knn_s": 2.0}
                 for key in ROWS} for seed in (1, 3)]
    rows = real_data.combine(per_seed)
    assert [(row["encoder"], row["input"]) for row in rows][:2] == [("pretrained", "fused"), ("pretrained", "joint")]
    assert real_data.table_rows(rows)[0] == ("pretrained", "fused", "62.00 (61.00, 63.00)", "55.00 (53.00, 57.00)",
                                             "0.00 (0.00, 0.00)", "1.0", "2.0")
    assert real_data.gain_line(rows) == ("Pretrained minus random, fused input: linear +0.00 points (per seed +0.00, "
                                         "+0.00); kNN +1.00 points (per seed +1.00, +1.00).")


def test_absent_data_is_a_clear_message_and_writes_nothing(tmp_path):
    missing, out = tmp_path / "no_such_folder", tmp_path / "run"
    args = real_data.build_parser().parse_args(["--quick", "--data-path", str(missing), "--out", str(out)])
    with pytest.raises(SystemExit) as error:
        real_data.main(args)
    message = str(error.value.code)
    assert message.startswith("error: MSR Action3D not found") and str(missing) in message
    assert "\n" not in message
    assert not out.exists()


def test_absent_data_exits_non_zero_from_the_command_line(tmp_path):
    missing = tmp_path / "no_such_folder"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_data.py"), "--data-path", str(missing),
                             "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert "MSR Action3D not found" in result.stderr and "Traceback" not in result.stderr


def test_a_half_present_data_folder_names_what_is_missing(tmp_path):
    (tmp_path / real_data.SKELETON_FOLDER).mkdir()  # the skeletons without the 557-sample list
    with pytest.raises(SystemExit, match=real_data.SAMPLE_LIST):
        real_data.check_data_path(tmp_path)


def test_a_non_empty_run_folder_is_kept_unless_overwrite(tmp_path):
    (tmp_path / "seed0" / "pretrain").mkdir(parents=True)
    (tmp_path / "seed0" / "pretrain" / "checkpoint_last.pth.tar").write_text("an earlier run")
    (tmp_path / "results.md").write_text("an earlier table")
    (tmp_path / "seed_notes").mkdir()
    (tmp_path / "notes.txt").write_text("not the benchmark's")
    with pytest.raises(SystemExit, match="--overwrite"):
        real_data.prepare_out(tmp_path, overwrite=False)
    assert (tmp_path / "seed0" / "pretrain" / "checkpoint_last.pth.tar").exists()
    real_data.prepare_out(tmp_path, overwrite=True)
    # What the benchmark writes is rebuilt from scratch...
    assert not (tmp_path / "seed0").exists() and not (tmp_path / "results.md").exists()
    assert (tmp_path / "logs").is_dir()
    # ...and nothing else is touched.
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "seed_notes").is_dir()


@pytest.mark.skipif(not (MSR_DATA / real_data.SAMPLE_LIST).exists(), reason=f"MSR Action3D not found at {MSR_DATA}")
def test_the_random_encoder_is_the_initialisation_pretraining_starts_from(tmp_path):
    # With lr 0, pretraining's only checkpoint holds its initial encoder; the evaluation scripts' random
    # encoder (no --pretrained, same seed and sizes) must be exactly that, so the table's two rows differ
    # by what pretraining learnt and nothing else.
    args = real_data.apply_quick(real_data.build_parser().parse_args(["--quick", "--lr", "0"]))
    seed = 3
    skeletons, sample_list = real_data.check_data_path(MSR_DATA)
    gendata(skeletons, tmp_path / "data", sample_list)
    checkpoint, _ = real_data.pretrain_encoder(args, seed, tmp_path / "data", tmp_path / "pretrain")
    state = read_checkpoint(checkpoint)["state_dict"]
    pretrained = {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}

    # Built as the evaluation scripts build it (evaluation.load_encoder seeds with --seed first).
    flags = Namespace(seed=seed, pretrained=None, modalities=real_data.INPUTS["fused"], hidden_size=args.hidden_size,
                      num_head=args.num_head, num_layer=args.num_layer)
    data = evaluation.Splits(get_protocol("msr", "cross_subject"), None, None, num_classes=20)
    random_model, _ = evaluation.load_encoder(flags, data, torch.device("cpu"))
    random_weights = random_model.backbone.state_dict()
    assert pretrained.keys() == random_weights.keys()
    for key, value in random_weights.items():
        assert torch.equal(pretrained[key], value), key


# ------------------------------------------------------------ the worked example of README "Your own data"

@pytest.mark.skipif(not (MSR_DATA / real_data.SAMPLE_LIST).exists(), reason=f"MSR Action3D not found at {MSR_DATA}")
def test_the_worked_example_through_the_custom_format_gives_msr_gendata_s_arrays(tmp_path):
    # The README's commands: examples/msr_action3d_to_custom.py, then custom_gendata.py with layout msr20 and
    # subjects 1 3 5 7 9 training; against data_gen/msr_gendata.py on the same 557-name list.
    assert msr_action3d_to_custom.convert(MSR_DATA, tmp_path / "clips") == 557
    custom_gendata.main(["--sequences", str(tmp_path / "clips" / "clips"), "--labels",
                         str(tmp_path / "clips" / "labels.csv"), "--layout", "msr20", "--split-by", "subject",
                         "--train-subjects", "1", "3", "5", "7", "9", "--out-folder", str(tmp_path / "msr_custom")])
    skeletons, sample_list = real_data.check_data_path(MSR_DATA)
    gendata(skeletons, tmp_path / "data", sample_list)
    reference = prepared_folder(tmp_path / "data", "msr", "cross_subject")
    for part in ("train", "val"):
        for mine, theirs in zip(split_paths(tmp_path / "msr_custom", part), split_paths(reference, part)):
            if mine.suffix == ".npy":
                a, b = np.load(mine), np.load(theirs)
                assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), mine.name
            else:  # the names and labels, in the same order
                assert load_labels(mine)[0] == load_labels(theirs)[0]
                assert np.array_equal(load_labels(mine)[1], load_labels(theirs)[1])
    custom = get_protocol("custom", None, tmp_path / "msr_custom")
    msr = get_protocol("msr", "cross_subject")
    assert custom.min_crop_length == msr.min_crop_length == 16  # derived from the clips: 0.4 x 38, rounded up
    assert (custom.topology.parents, custom.num_joints, custom.num_persons, custom.num_coords, custom.num_classes) \
        == (msr.topology.parents, 20, 1, 3, 20)


@pytest.mark.skipif(not (MSR_DATA / real_data.SAMPLE_LIST).exists(), reason=f"MSR Action3D not found at {MSR_DATA}")
def test_the_benchmark_through_dataset_custom_gives_the_msr_numbers(quick_msr_run, tmp_path):
    # Seed 3 through the custom format against seed 3 of the msr-path run: every metric and loss equal.
    (_, msr), seed = quick_msr_run, QUICK_SEEDS[-1]
    custom = real_data.main(quick_args(tmp_path / "custom", "--seeds", str(seed), "--via-custom"))
    assert custom["dataset"] == "custom" and custom["samples"] == msr["samples"] == {"train": 284, "val": 273}
    config = json.loads((tmp_path / "custom" / f"seed{seed}" / "pretrain" / "config.json").read_text())["config"]
    assert (config["dataset"], config["protocol"], config["min_crop_length"]) == ("custom", "cross_subject", 16)
    metrics = ("linear_top1", "linear_final_top1", "linear_top5", "knn_top1")

    def of_seed(runs):
        return next(run for run in runs if run["seed"] == seed)

    assert [{key: of_seed(row["per_seed"])[key] for key in metrics} for row in custom["rows"]] == \
        [{key: of_seed(row["per_seed"])[key] for key in metrics} for row in msr["rows"]]
    assert [epoch["loss"] for epoch in of_seed(custom["pretraining"])["log"]] == \
        [epoch["loss"] for epoch in of_seed(msr["pretraining"])["log"]]
