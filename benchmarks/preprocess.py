"""Benchmark NTU preprocessing: data_gen/ntu_gendata.py against the naive yardstick, on synthetic files.

    python benchmarks/preprocess.py --num-files 300 --workers 2 --json preprocess.json

Generates `--num-files` synthetic raw files (data_gen/synthetic.py) in a temporary folder, then
converts them into both NTU-60 benchmarks (x-sub, x-view) three times, in this order:
1. fast, end to end with `gendata` and `--workers` processes;
2. fast with one process, to separate the algorithm from the parallelism (skipped when --workers 1);
3. naive (benchmarks/naive_preprocess.py): line-by-line parsing, Python loops, the released flow
   of parsing every file once per benchmark;
4. naive core only: each file read and normalised once, nothing split or written (the algorithmic
   part of the comparison, without the released flow's second parse).
Prints files/s and ms/file for each, the speedups, and the peak resident memory of the fast run
(`resource.getrusage`: this process, whose baseline includes the imports, and its largest worker).
"""
import argparse
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.naive_preprocess import naive_convert, naive_gendata  # noqa: E402
from data_gen.ntu_gendata import gendata  # noqa: E402
from data_gen.synthetic import generate  # noqa: E402

NUM_CLASSES = 10


def peak_rss_mb(who=resource.RUSAGE_SELF):
    """High-water resident memory in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def timed(function, *args, **kwargs):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def rate(seconds, num_files):
    return {"seconds": round(seconds, 3), "files_per_s": round(num_files / seconds, 1),
            "ms_per_file": round(1000 * seconds / num_files, 2)}


def run(num_files, workers, seed):
    """Generate the files, time the implementations, return a dict of results."""
    results = {"num_files": num_files, "workers": workers, "python": platform.python_version(),
               "numpy": np.__version__, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        seconds, paths = timed(generate, raw, NUM_CLASSES, math.ceil(num_files / NUM_CLASSES), seed)
        for path in paths[num_files:]:
            path.unlink()
        results["generate"] = rate(seconds, num_files)
        results["raw_mb"] = round(sum(p.stat().st_size for p in raw.iterdir()) / 2**20, 1)

        rss_before = peak_rss_mb()
        seconds, summary = timed(gendata, raw, Path(tmp) / "fast", "ntu60", workers=workers, progress=False)
        results["fast"] = rate(seconds, num_files)
        results["fast"]["peak_rss_mb_main"] = round(peak_rss_mb(), 1)
        results["fast"]["peak_rss_mb_main_before_run"] = round(rss_before, 1)
        results["fast"]["peak_rss_mb_largest_worker"] = round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1)
        output = Path(summary["folder"])
        results["output_mb"] = round(sum(p.stat().st_size for p in output.rglob("*.npy")) / 2**20, 1)

        if workers > 1:
            seconds, _ = timed(gendata, raw, Path(tmp) / "fast1", "ntu60", workers=1, progress=False)
            results["fast_1_worker"] = rate(seconds, num_files)
        seconds, _ = timed(naive_gendata, raw, Path(tmp) / "naive", "ntu60")
        results["naive"] = rate(seconds, num_files)
        seconds, _ = timed(naive_convert, sorted(raw.iterdir()))
        results["naive_one_pass"] = rate(seconds, num_files)

    # End to end: both produce the same files. Core: one process each, the fast run still writing its
    # output, the naive one only reading and normalising each file once.
    single = results["fast_1_worker" if workers > 1 else "fast"]["seconds"]
    results["speedup_end_to_end"] = round(results["naive"]["seconds"] / results["fast"]["seconds"], 1)
    results["speedup_core_1_process"] = round(results["naive_one_pass"]["seconds"] / single, 1)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-files", type=int, default=300, help="synthetic raw files to convert")
    parser.add_argument("--workers", type=int, default=2, help="processes for the fast run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic files")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    results = run(args.num_files, args.workers, args.seed)

    print(f"{args.num_files} synthetic files ({results['raw_mb']} MiB raw -> {results['output_mb']} MiB of "
          f"arrays for ntu60 x-sub + x-view), generated at {results['generate']['files_per_s']} files/s")
    runs = [("fast", f"fast, {args.workers} workers")]
    if args.workers > 1:
        runs.append(("fast_1_worker", "fast, 1 worker"))
    runs.append(("naive", "naive, 1 process"))
    runs.append(("naive_one_pass", "naive, read+norm once (no splits, no writing)"))
    for key, label in runs:
        r = results[key]
        print(f"  {label:<46} {r['files_per_s']:8.1f} files/s {r['ms_per_file']:8.2f} ms/file "
              f"{r['seconds']:8.2f} s")
    print(f"  speedup end to end {results['speedup_end_to_end']}x; one process each, naive reading and "
          f"normalising once: {results['speedup_core_1_process']}x")
    fast = results["fast"]
    print(f"  peak RSS of the fast run: main process {fast['peak_rss_mb_main']} MiB "
          f"({fast['peak_rss_mb_main_before_run']} MiB before it started), "
          f"largest worker {fast['peak_rss_mb_largest_worker']} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
