"""scripts/aggregate_results.py: mean +- std per setting over fake seed folders, grouping, bad files."""
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
from conftest import make_demo_data

import action_retrieval
from options.downstream import build_retrieval_parser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import aggregate_results  # noqa: E402


def linear_results(best_top1, **changes):
    """A results.json of action_recognition.py, with its keys as written today."""
    return {"mode": "linear", "dataset": "msr", "protocol": "cross_subject", "modalities": ["joint", "bone", "motion"],
            "label_fraction": 1.0, "train_samples": 284, "val_samples": 273,
            "pretrained": "runs/seed0/pretrain/checkpoint_0079.pth.tar", "features": "cached",
            "best_top1": best_top1, "best_top5": best_top1 + 20.0, "best_epoch": 134, "final_top1": best_top1 - 1.0,
            "final_top5": best_top1 + 19.0, "epochs": 150, "feature_time_s": 1.5, "train_time_s": 3.25, **changes}


def knn_results(top1, **changes):
    """A results.json of action_retrieval.py, with its keys as written today."""
    return {"mode": "knn", "dataset": "msr", "protocol": "cross_subject", "modalities": ["joint", "bone", "motion"],
            "k": 1, "train_samples": 284, "val_samples": 273, "pretrained": "runs/seed0/pretrain/last.pth.tar",
            "top1": top1, "feature_time_s": 1.0, "knn_time_s": 0.01, **changes}


def write_run(folder, results, seed=None):
    """A run folder as the evaluation scripts leave it: results.json, and config.json holding the seed."""
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if seed is not None:
        (folder / "config.json").write_text(json.dumps({"config": {"seed": seed}, "command": []}) + "\n")
    return folder


def only_group(summaries):
    assert len(summaries) == 1
    return summaries[0]


def test_three_seed_folders_give_the_mean_and_sample_std(tmp_path, capsys):
    values = [70.0, 71.0, 75.0]
    folders = [write_run(tmp_path / f"seed{seed}", linear_results(value, pretrained=f"seed{seed}/ckpt.pth.tar",
                                                                  train_time_s=seed + 0.5), seed)
               for seed, value in enumerate(values)]
    group = only_group(aggregate_results.main([str(folder) for folder in folders]))
    best = group["metrics"]["best_top1"]
    assert best["n"] == 3 and best["values"] == values
    # Mean 72, deviations -2, -1, 3: the sample standard deviation (n - 1) is sqrt(14 / 2), not sqrt(14 / 3).
    assert best["mean"] == 72.0 and best["std"] == pytest.approx(math.sqrt(7))
    assert group["metrics"]["final_top1"]["mean"] == 71.0
    assert list(group["metrics"]) == ["best_top1", "best_top5", "final_top1", "final_top5"]
    assert group["seeds"] == [0, 1, 2]
    assert group["setting"] == {"mode": "linear", "dataset": "msr", "protocol": "cross_subject",
                                "modalities": "joint+bone+motion", "label_fraction": 1.0, "epochs": 150,
                                "encoder": "pretrained"}
    out = capsys.readouterr().out
    assert "linear: 1 setting(s), 3 run(s)" in out
    row = out.splitlines()[2]
    assert "msr" in row and "joint+bone+motion" in row and " 3 " in row and "0,1,2" in row
    assert "72.00 +- 2.65" in row and "71.00 +- 2.65" in row


def test_one_run_shows_a_dash_for_the_std(tmp_path, capsys):
    folder = write_run(tmp_path / "knn", knn_results(67.77), seed=0)
    group = only_group(aggregate_results.main([str(folder)]))
    assert group["metrics"]["top1"] == {"mean": 67.77, "std": None, "n": 1, "values": [67.77]}
    assert "67.77 +- -" in capsys.readouterr().out


def test_settings_are_kept_apart_and_per_run_entries_are_not(tmp_path):
    runs = {
        "pre_s0": linear_results(70.0, pretrained="a/ckpt.pth.tar", train_samples=280),
        "pre_s1": linear_results(72.0, pretrained="b/ckpt.pth.tar", feature_time_s=9.0, best_epoch=4),
        "random": linear_results(60.0, pretrained="None"),
        "semi": linear_results(40.0, mode="semi", label_fraction=0.01),
        "joint": linear_results(71.0, modalities=["joint"]),
        "knn": knn_results(65.0),
        "knn_k5": knn_results(66.0, k=5),
        "short": linear_results(50.0, epochs=20),
    }
    for name, results in runs.items():
        write_run(tmp_path / name, results)
    summaries = aggregate_results.main([str(tmp_path)])
    by_setting = {tuple(summary["setting"].values()): summary for summary in summaries}
    assert len(summaries) == 7
    fused_pretrained = by_setting["linear", "msr", "cross_subject", "joint+bone+motion", 1.0, 150, "pretrained"]
    assert fused_pretrained["metrics"]["best_top1"]["values"] == [70.0, 72.0]
    assert by_setting["linear", "msr", "cross_subject", "joint+bone+motion", 1.0, 150, "random"]["runs"] == 1
    assert by_setting["semi", "msr", "cross_subject", "joint+bone+motion", 0.01, 150, "pretrained"]["runs"] == 1
    assert {summary["setting"].get("k") for summary in summaries if summary["setting"]["mode"] == "knn"} == {1, 5}


def test_by_and_ignore_change_the_grouping(tmp_path):
    write_run(tmp_path / "a", linear_results(70.0, pretrained="a.pth.tar"))
    write_run(tmp_path / "b", linear_results(72.0, pretrained="b.pth.tar", epochs=100))
    assert len(aggregate_results.main([str(tmp_path)])) == 2
    merged = only_group(aggregate_results.main([str(tmp_path), "--ignore", "epochs"]))
    assert merged["runs"] == 2 and "epochs" not in merged["setting"]
    apart = aggregate_results.main([str(tmp_path), "--ignore", "epochs", "--by", "pretrained"])
    assert [summary["setting"]["pretrained"] for summary in apart] == ["a.pth.tar", "b.pth.tar"]


def test_a_metric_missing_from_some_runs_is_averaged_over_those_that_have_it(tmp_path, capsys):
    for seed, mean_class in enumerate([61.0, None, 65.0]):
        results = linear_results(70.0 + seed)
        if mean_class is not None:
            results["mean_class_top1"] = mean_class
            results["per_class_top1"] = [mean_class, None]  # a list: detail, neither a metric nor a setting
        write_run(tmp_path / f"seed{seed}", results, seed)
    group = only_group(aggregate_results.main([str(tmp_path)]))
    assert group["metrics"]["mean_class_top1"] == {"mean": 63.0, "std": pytest.approx(math.sqrt(8)), "n": 2,
                                                   "values": [61.0, 65.0]}
    assert "63.00 +- 2.83 (n=2)" in capsys.readouterr().out


def test_json_summary_is_written(tmp_path):
    for seed, value in enumerate([10.0, 20.0, 30.0]):
        write_run(tmp_path / "runs" / f"seed{seed}", knn_results(value), seed)
    out = tmp_path / "summary" / "summary.json"
    aggregate_results.main([str(tmp_path / "runs"), "--json", str(out)])
    group = only_group(json.loads(out.read_text())["groups"])
    assert group["metrics"]["top1"]["mean"] == 20.0 and group["metrics"]["top1"]["std"] == 10.0
    assert group["files"] == [str(tmp_path / "runs" / f"seed{seed}" / "results.json") for seed in range(3)]
    assert [path.name for path in out.parent.iterdir()] == ["summary.json"]


def test_files_patterns_and_folders_are_each_counted_once(tmp_path):
    for seed in range(3):
        write_run(tmp_path / f"seed{seed}", knn_results(50.0 + seed), seed)
    pattern = str(tmp_path / "seed*" / "results.json")
    group = only_group(aggregate_results.main([str(tmp_path / "seed0"), str(tmp_path / "seed0" / "results.json"),
                                               pattern, str(tmp_path / "**" / "results.json")]))
    assert group["runs"] == 3


@pytest.mark.parametrize("content, problem", [
    ('{"mode": "linear", "best_top1": 7', "not valid JSON (line 1, column 34"),
    ("[1, 2]", "expected a JSON object of results, found a list"),
    ('{"mode": "linear", "best_top1": NaN}', "best_top1 is nan, not a finite number"),
    ('{"mode": "knn", "top1": "high"}', "top1 is 'high', not a finite number"),
    (b"\xff\xfe", "cannot be read"),
])
def test_a_bad_results_file_stops_with_one_line_naming_it(tmp_path, content, problem):
    write_run(tmp_path / "good", knn_results(50.0))
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SystemExit) as error:
        aggregate_results.main([str(tmp_path)])
    message = str(error.value)
    assert message.startswith(f"error: {bad}: ") and problem in message and "--skip-bad" in message
    assert "\n" not in message


def test_skip_bad_warns_and_keeps_the_good_runs(tmp_path, capsys):
    write_run(tmp_path / "good", knn_results(50.0))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text('{"mode": "knn", "to')
    group = only_group(aggregate_results.main([str(tmp_path), "--skip-bad"]))
    assert group["runs"] == 1
    assert f"warning: skipped {tmp_path / 'bad' / 'results.json'}: not valid JSON" in capsys.readouterr().err


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("")
    with pytest.raises(SystemExit, match="no evaluation results to aggregate"):
        aggregate_results.main([str(tmp_path), "--skip-bad"])


def test_other_results_files_are_skipped_when_found_and_refused_when_named(tmp_path, capsys):
    write_run(tmp_path / "knn", knn_results(50.0))
    tsne = write_run(tmp_path / "tsne", {"mode": "tsne", "classes": [0, 1], "samples": 20})
    benchmark = tmp_path / "results.json"  # benchmarks/real_data.py's summary: no mode entry
    benchmark.write_text(json.dumps({"rows": [], "settings": {}}))
    assert only_group(aggregate_results.main([str(tmp_path)]))["runs"] == 1
    err = capsys.readouterr().err
    assert f"note: skipped {tsne / 'results.json'}: no accuracy in it (mode 'tsne')" in err
    assert f"note: skipped {benchmark}: no 'mode' entry" in err
    with pytest.raises(SystemExit, match=r"^error: .*tsne/results.json: no accuracy in it"):
        aggregate_results.main([str(tsne / "results.json")])


@pytest.mark.parametrize("make, problem", [
    (lambda root: root / "missing", "no such file or folder"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "no results.json in or below this folder"),
    (lambda root: root / "nothing*", "the pattern matches nothing"),
])
def test_a_path_that_points_to_nothing_is_named(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(SystemExit) as error:
        aggregate_results.main([str(path)])
    assert str(error.value) == f"error: {path}: {problem}"


def test_the_same_seed_twice_in_a_group_is_warned_about(tmp_path, capsys):
    write_run(tmp_path / "a", knn_results(50.0), seed=0)
    write_run(tmp_path / "b", knn_results(51.0), seed=0)
    write_run(tmp_path / "c", knn_results(52.0, seed=1))  # a seed in results.json itself wins
    group = only_group(aggregate_results.main([str(tmp_path)]))
    assert group["seeds"] == [0, 0, 1]
    assert "warning: seed 0 occurs 2 times in mode=knn dataset=msr" in capsys.readouterr().err


@pytest.mark.usefixtures("one_torch_thread")
def test_results_written_by_action_retrieval_aggregate(tmp_path, capsys):
    # Three kNN runs of randomly initialised encoders (seeds 0, 1, 2): the real writer, no training.
    data_root = make_demo_data(tmp_path / "data", num_train=12, num_val=8)
    top1 = []
    for seed in range(3):
        args = build_retrieval_parser().parse_args(
            ["--hidden-size", "16", "--device", "cpu", "--workers", "0", "--finetune-dataset", "demo",
             "--data-root", str(data_root), "--checkpoint-path", str(tmp_path / "runs" / f"seed{seed}"),
             "--seed", str(seed)])
        top1.append(action_retrieval.main(args)["top1"])
    group = only_group(aggregate_results.main([str(tmp_path / "runs")]))
    assert group["setting"] == {"mode": "knn", "dataset": "demo", "protocol": "cross_subject",
                                "modalities": "joint+bone+motion", "k": 1, "encoder": "random"}
    assert group["seeds"] == [0, 1, 2]
    assert group["metrics"]["top1"]["mean"] == pytest.approx(statistics.fmean(top1))
    assert group["metrics"]["top1"]["std"] == pytest.approx(statistics.stdev(top1))
