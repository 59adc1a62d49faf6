"""What the benchmarks share: the machine line, a step timer, the measured matmul peak and the command
line of a section."""
import argparse
import json
import os
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from utils import cpu_model


def machine_info():
    """One dict that says where the figures were taken: CPU, cores, threads, load, versions, GPU."""
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if hasattr(os, "getloadavg"):
        # Other processes on the machine slow every figure; the load average says how busy it was.
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def machine_line(info):
    gpu = f", GPU {info['gpu']}" if info["gpu"] else ", no GPU"
    load = f", load average {info['load_average_1min']}" if "load_average_1min" in info else ""
    return (f"{info['cpu']}, {info['cores']} cores ({info['cpu_capability']}), torch {info['torch']} "
            f"with {info['torch_threads']} threads, Python {info['python']}{gpu}{load}")


@contextmanager
def torch_threads(count):
    """Run the block with `count` torch CPU threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(function, repeats, warmup=1, device="cpu"):
    """Seconds of each of `repeats` timed calls of function(), after `warmup` untimed ones."""
    for _ in range(warmup):
        function()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def best_and_median(seconds):
    """(best, median) of timed calls. The tables use the best: on a shared machine a call slowed by
    another process says nothing about the code, and the best is the figure least moved by that."""
    return min(seconds), statistics.median(seconds)


def matmul_peak(dtype, device="cpu", size=2048, repeats=5):
    """Measured matmul throughput in FLOP/s: the best of `repeats` (size x size) @ (size x size) products.

    The best, not the median: this is the ceiling the model-FLOP utilisation is measured against.
    """
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up: thread pool, kernel selection, packing buffers
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def markdown_table(header, rows):
    """A GitHub markdown table from a header tuple and rows of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def section_main(doc, add_arguments, run, table, argv=None):
    """The command line of one benchmark section (data_pipeline, train_step, evaluation): its flags
    plus --json, then run(args), the machine line and table(results) printed, the JSON written."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    results = run(args)
    print(machine_line(results["machine"]))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
