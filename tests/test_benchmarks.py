"""benchmarks/run_all.py end to end in --quick mode (tiny sizes), and its verdict on the targets."""
import json

import pytest

from benchmarks import run_all

pytestmark = pytest.mark.benchmark


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmarks")
    run_all.main(["--quick", "--out", str(out)])
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_every_section_reports_its_figures(quick_run):
    results, _ = quick_run
    assert results["quick"] and results["machine"]["torch"] and results["machine"]["cores"] >= 1

    pre = results["preprocess"]
    assert pre["fast"]["files_per_s"] > 0 and pre["naive"]["ms_per_file"] > 0

    pipeline = results["data_pipeline"]["rows"]
    assert {r["workers"] for r in pipeline if r["pipeline"].startswith("numpy")} >= {0}
    assert any(r["pipeline"] == "raw + on-device views" for r in pipeline)
    assert all(r["batches_per_s"] > 0 for r in pipeline)

    step = results["train_step"]
    variants = {(r["implementation"], r["precision"]) for r in step["rows"]}
    assert variants >= {("naive", "fp32"), ("umurl", "fp32"), ("naive", "bf16"), ("umurl", "bf16")}
    for row in step["rows"]:
        assert row["samples_per_s"] > 0 and row["gflop_per_sample"] > 0 and row["peak_gflop_s"] > 0 and row["mfu"] > 0
        assert 0 < row["matmul_share"] <= 1
    assert step["optimizer_step_s"]["cpu"]["released"] > 0 and step["optimizer_step_s"]["cpu"]["fused"] > 0
    # The Gram-matrix covariance does less arithmetic than the full covariance.
    assert step["flop_per_sample"]["umurl"] < step["flop_per_sample"]["naive"]

    probe, knn = results["evaluation"]["linear_probe"], results["evaluation"]["knn"]
    assert probe["val_top1_equal"] and probe["compared_epochs"] == probe["reencode_measured_epochs"]
    assert probe["max_relative_train_loss_gap"] < 1e-4
    assert knn["predictions_agree"] == 1.0


def test_the_report_holds_the_command_machine_tables_and_targets(quick_run):
    results, text = quick_run
    assert text.startswith("Command: `python benchmarks/run_all.py --quick --out ")
    assert results["machine"]["cpu"] in text
    for heading in ("## 1. Preprocessing", "## 2. Data pipeline", "## 3. Training step", "## 4. Evaluation",
                    "## Targets"):
        assert heading in text
    assert len(results["targets"]) == 6
    assert text.count("| yes |") + text.count("| **no** |") == 6


def fake_results(preprocess=30.0, fp32=1.3, bf16=2.6, pipeline=100.0, step=10.0, probe=60.0, same_top1=True,
                 knn=1.5):
    """The smallest results dict check_targets reads, with the figures that decide each target."""
    def row(precision, speedup):
        return {"implementation": "umurl", "device": "cpu", "precision": precision, "batch_size": 16,
                "samples_per_s": step, "speedup_vs_naive_fp32": speedup, "mfu": 0.5}
    return {
        "preprocess": {"speedup_end_to_end": preprocess, "num_files": 200},
        "train_step": {"rows": [row("fp32", fp32), row("bf16", bf16)]},
        "data_pipeline": {"rows": [{"pipeline": "raw + on-device views", "samples_per_s": pipeline, "workers": 0,
                                    "augment_device": "cpu"}]},
        "evaluation": {"linear_probe": {"speedup": probe, "val_top1_equal": same_top1},
                       "knn": {"speedup": knn, "chunk_mb": 1.0}},
    }


@pytest.mark.parametrize("change, failing", [
    ({}, None), ({"preprocess": 24.0}, 0), ({"fp32": 1.1}, 1), ({"bf16": 2.4}, 2), ({"pipeline": 5.0}, 3),
    ({"probe": 40.0}, 4), ({"same_top1": False}, 4), ({"knn": 0.9}, 5),
])
def test_targets_are_judged_from_the_figures(change, failing):
    verdicts = [met for _, _, met in run_all.check_targets(fake_results(**change))]
    assert verdicts == [index != failing for index in range(6)]
