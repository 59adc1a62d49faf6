"""Run every benchmark and write one markdown report and one JSON file.

    python benchmarks/run_all.py                      # full sizes, ~5-10 min on a 2-core CPU
    python benchmarks/run_all.py --quick --out /tmp/b # tiny sizes, seconds: checks that everything runs
    python benchmarks/run_all.py --compile            # also time torch.compile of the model (+1-2 min)

Sections (each script also runs alone; see benchmarks/README.md):
1. preprocessing (preprocess.py): NTU raw files -> arrays, ours against the per-element yardstick;
2. data pipeline (data_pipeline.py): pretraining batches/s from the DataLoader, numpy views and
   on-device views;
3. training step (train_step.py): samples/s, FLOP, FLOP/s and MFU, yardstick model against umurl.py;
4. evaluation (evaluation.py): linear probe with and without cached features; kNN against scikit-learn.
The report ends with the issue's targets, each marked met or not from the figures above it.
Torch uses its default thread count (one per physical core) everywhere; the machine line says how many.
"""
import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import data_pipeline, evaluation, preprocess, train_step  # noqa: E402
from benchmarks.common import machine_info, machine_line, markdown_table  # noqa: E402
from umurl import UmURLConfig  # noqa: E402

# Sizes of the two modes. Full: the released model size; small step counts because one default-size
# step takes seconds on a 2-core CPU. Quick: tiny everything, for the test suite.
FULL = {
    "preprocess": dict(num_files=200, workers=2),
    "data_pipeline": dict(num_samples=512, batch_size=16, batches=20, threads=1),
    "train_step": dict(batch_size=16, steps=3, warmup=1, hidden_size=UmURLConfig().hidden_size,
                       projector_dim=4096, peak_size=2048),
    "evaluation": dict(train_samples=256, val_samples=128, hidden_size=UmURLConfig().hidden_size,
                       probe_epochs=150, reencode_epochs=5,
                       knn_train=10000, knn_val=2500, knn_dim=2048, chunk_size=1024),
}
QUICK = {
    "preprocess": dict(num_files=4, workers=2),
    "data_pipeline": dict(num_samples=24, batch_size=4, batches=3, threads=1),
    "train_step": dict(batch_size=4, steps=1, warmup=1, hidden_size=16, projector_dim=32, peak_size=256),
    "evaluation": dict(train_samples=24, val_samples=12, hidden_size=16, probe_epochs=10, reencode_epochs=5,
                       knn_train=300, knn_val=60, knn_dim=32, chunk_size=64),
}

TARGETS = "the targets of issue 7"


def section_args(sizes, **extra):
    """An argparse-like namespace from a dict of sizes."""
    return argparse.Namespace(**sizes, **extra)


def run_train_step(sizes, compile_model):
    return train_step.run(section_args(sizes, compile=compile_model, ablations=True, threads=torch.get_num_threads()))


def find_row(rows, **match):
    return next(r for r in rows if all(r[key] == value for key, value in match.items()))


def check_targets(results):
    """The issue's targets against the measured figures: list of (target, measured, met)."""
    checks = []
    preprocessing = results["preprocess"]
    checks.append(("preprocessing, both NTU-60 benchmarks end to end: >= 25x the yardstick",
                   f"{preprocessing['speedup_end_to_end']}x ({preprocessing['num_files']} raw files)",
                   preprocessing["speedup_end_to_end"] >= 25))
    rows = results["train_step"]["rows"]
    fp32, bf16 = (find_row(rows, implementation="umurl", device="cpu", precision=p) for p in ("fp32", "bf16"))
    for row, target in ((fp32, 1.2), (bf16, 2.5)):
        speedup = row["speedup_vs_naive_fp32"]
        checks.append((f"pretraining step on the CPU, {row['precision']}: >= {target}x the yardstick in fp32",
                       f"{speedup}x (MFU {100 * row['mfu']:.0f}%)", speedup >= target))
    # Both in batches of the training step's size (the pipeline's own batch may differ).
    batch = rows[0]["batch_size"]
    pipeline = [r for r in results["data_pipeline"]["rows"] if r["pipeline"] == "raw + on-device views"]
    fastest = max(pipeline, key=lambda r: r["samples_per_s"])
    step = max(r["samples_per_s"] for r in rows if r["implementation"] == "umurl")
    checks.append((f"on-device augmentation pipeline faster than the training step (batches of {batch} per s)",
                   f"{fastest['samples_per_s'] / batch:.1f} ({fastest['workers']} workers, views on "
                   f"{fastest['augment_device']}) vs {step / batch:.2f}", fastest["samples_per_s"] > step))
    probe = results["evaluation"]["linear_probe"]
    checks.append(("linear probe with cached features: >= 50x re-encoding, same accuracy",
                   f"{probe['speedup']}x, same val top-1: {probe['val_top1_equal']}",
                   probe["speedup"] >= 50 and probe["val_top1_equal"]))
    knn = results["evaluation"]["knn"]
    checks.append(("kNN at least as fast as scikit-learn, chunked",
                   f"{knn['speedup']}x, at most {knn['chunk_mb']} MiB of similarities at once",
                   knn["speedup"] >= 1.0))
    return checks


def preprocess_table(results):
    runs = [("fast", f"ours, {results['workers']} worker processes"), ("fast_1_worker", "ours, 1 process"),
            ("naive", "yardstick (per-element), released flow"), ("naive_one_pass", "yardstick, read+normalise once")]
    rows = [(label, results[key]["files_per_s"], results[key]["ms_per_file"]) for key, label in runs if key in results]
    note = (f"\n\n{results['num_files']} generated raw files; speedup end to end {results['speedup_end_to_end']}x, "
            f"one process each {results['speedup_core_1_process']}x.")
    return markdown_table(("preprocessing", "files/s", "ms/file"), rows) + note


def report(results, command):
    """The markdown report: command, machine, one table per section, the targets."""
    lines = [f"Command: `{command}`", "", f"Machine: {machine_line(results['machine'])}", "",
             f"Total wall time {results['total_s']:.0f} s.", "",
             "## 1. Preprocessing", "", preprocess_table(results["preprocess"]), "",
             "## 2. Data pipeline (pretraining batches/s)", "",
             f"Batch {results['data_pipeline']['batch_size']} samples x 4 views; the training process uses "
             f"{results['data_pipeline']['threads']} torch thread(s) here (small ops, see data_pipeline.py).", "",
             data_pipeline.table(results["data_pipeline"]), "",
             "## 3. Training step", "", train_step.table(results["train_step"]), "",
             "## 4. Evaluation", "", evaluation.table(results["evaluation"]), "",
             f"## Targets ({TARGETS})", "",
             markdown_table(("target", "measured", "met"),
                            [(t, m, "yes" if ok else "**no**") for t, m, ok in results["targets"]])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the plumbing in seconds")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(UmURL) (slow to compile)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                        help="folder for results.md and results.json")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    command = "python benchmarks/run_all.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    start = time.perf_counter()
    results = {"machine": machine_info(), "quick": args.quick}
    stages = [
        ("preprocess", lambda: preprocess.run(seed=0, **sizes["preprocess"])),
        ("data_pipeline", lambda: data_pipeline.run(section_args(sizes["data_pipeline"]))),
        ("train_step", lambda: run_train_step(sizes["train_step"], args.compile)),
        ("evaluation", lambda: evaluation.run(section_args(sizes["evaluation"]))),
    ]
    for name, stage in stages:
        tick = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        results[name] = stage()
        print(f"[{name}] done in {time.perf_counter() - tick:.0f} s", flush=True)
    results["total_s"] = time.perf_counter() - start
    results["targets"] = check_targets(results)

    text = report(results, command.strip())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
