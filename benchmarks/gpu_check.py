"""The GPU figures of the README: what benchmarks/gpu_check.sh measures after the golden tests, printed
as markdown with the device's name.

    python benchmarks/gpu_check.py --json gpu_check.json       # on CUDA: a few minutes
    python benchmarks/gpu_check.py --device cpu --quick --two-processes   # tiny sizes: checks the plumbing

1. The device, and the dense fp16 peak the MFU is measured against: the vendor's figure from
   DENSE_FP16_PEAK_TFLOPS, or for a device not in that table a fp16 matmul peak measured here (said so).
2. One fp16 training step at the default model size, as pretrain.py runs it (fp16 autocast, float32
   loss, GradScaler, fused Adam), for global batches 128 (the released per-GPU batch) and 512 (the
   released global batch) on one device: step time, samples/s, peak memory, MFU.
3. The data pipeline with N CPU workers, as pretrain.py builds it: numpy views drawn in the workers
   (the default) and raw samples with the views drawn on the device (--augment-on-device), in
   samples/s against what the step consumes at the same batch.
4. With two GPUs or more (or --two-processes): pretrain.py on generated data in two processes (NCCL
   on GPUs) against one process, same global batch: the first epoch's loss of each and samples/s.
5. The projected wall time of the released NTU-60 x-sub pretraining (451 epochs, global batch 512)
   on one such device, from the measured step time: a projection, not a measured run.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import train_step  # noqa: E402
from benchmarks.common import (best_and_median, machine_info, machine_line, markdown_table, matmul_peak,  # noqa: E402
                               synchronize, time_calls)
from benchmarks.data_pipeline import write_random_split  # noqa: E402
from dataset import write_split  # noqa: E402
from feeder.augmentations import RELEASED_VIEW  # noqa: E402
from feeder.batch_augment import BatchAugment  # noqa: E402
from feeder.feeder import PretrainDataset, RawPretrainDataset  # noqa: E402
from pretrain import batch_views  # noqa: E402
from umurl import UmURLConfig  # noqa: E402

# Dense (no sparsity) fp16 tensor-core peak in TFLOP/s from the vendors' data sheets, by device name.
# The H100 PCIe and NVL have lower peaks and are left to the measured fallback.
DENSE_FP16_PEAK_TFLOPS = (
    (r"\bH200\b", 989.4),
    (r"\bH100\b.*(SXM|HBM3)", 989.4),  # the SXM part reports itself as "H100 80GB HBM3"
    (r"\bA100\b", 312.0),
)
# The released NTU-60 x-sub pretraining: the training split after the official missing-skeleton list
# (40,091 of NTU-60's 56,578 kept samples), 451 epochs, global batch 512, every batch including the
# partial last one.
NTU60_XSUB_TRAIN_SAMPLES, RELEASED_EPOCHS, RELEASED_GLOBAL_BATCH = 40091, 451, 512

FULL = dict(batch_sizes=(128, 512), steps=10, warmup=3, hidden_size=UmURLConfig().hidden_size,
            projector_dim=4096, pipeline_batch=128, pipeline_batches=30, pipeline_samples=2048,
            two_process=dict(samples=1024, batch_size=256, epochs=2, workers=4))
QUICK = dict(batch_sizes=(4, 8), steps=1, warmup=1, hidden_size=16, projector_dim=32,
             pipeline_batch=4, pipeline_batches=2, pipeline_samples=16,
             two_process=dict(samples=8, batch_size=8, epochs=1, workers=0))


def dense_fp16_peak(device_name):
    """The vendor's dense fp16 peak in FLOP/s for a device name, or None when it is not in the table."""
    for pattern, tflops in DENSE_FP16_PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return tflops * 1e12
    return None


def device_section(device, quick):
    """Name, memory and the fp16 peak MFU is measured against (and where that peak comes from)."""
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        name, memory_gib = properties.name, properties.total_memory / 2**30
    else:
        name, memory_gib = machine_info()["cpu"], None
    peak = dense_fp16_peak(name)
    source = "vendor's dense fp16 peak"
    if peak is None:
        peak = matmul_peak(torch.float16, device, size=256 if quick else 8192)
        source = "fp16 matmul peak measured here (device not in DENSE_FP16_PEAK_TFLOPS)"
    return {"name": name, "memory_gib": memory_gib, "fp16_peak_flop_s": peak, "peak_source": source}


def measure_step(batch_size, sizes, args, device, peak):
    """One fp16 pretraining step at `batch_size`: step time, samples/s, peak memory, MFU."""
    row = {"batch_size": batch_size}
    try:
        model, loss_fn, optimizer = train_step.build("umurl", sizes, args.projector_dim, device)
        views = train_step.random_views(batch_size, device)
        step = train_step.make_step(model, loss_fn, optimizer, views, torch.float16)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        best, median = best_and_median(time_calls(step, args.steps, args.warmup, device))
        memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        del model, optimizer, step, views
        flop = train_step.flops_per_sample("umurl", sizes, args.projector_dim, batch_size, device)
    except torch.OutOfMemoryError:
        return {**row, "error": "out of memory"}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    samples_per_s = batch_size / median
    return {**row, "step_s_median": median, "step_s_best": best, "samples_per_s": samples_per_s,
            "peak_memory_gib": memory, "gflop_per_sample": flop / 1e9, "mfu": flop * samples_per_s / peak}


def steady_samples_per_s(loader, to_views, device, skip, count):
    """Samples/s of taking `count` batches out of `loader` and making views of them, after `skip`
    batches: the workers' start-up and the batches they prefetched meanwhile are not counted."""
    batches = iter(loader)
    for _ in range(skip + 1):
        to_views(next(batches))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        to_views(next(batches))
    synchronize(device)
    return count * loader.batch_size / (time.perf_counter() - start)


def measure_pipeline(args, device, workers_list):
    """Samples/s of the two loaders pretrain.py builds, for each worker count, views on `device`.

    Batches are drawn with replacement from a generated split of --pipeline-samples NTU-sized samples
    (300 frames, 25 joints, 2 persons; the file stays in the page cache, as a real one does on a
    machine of this size), so every configuration reads as many batches as it needs.
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_random_split(tmp, args.pipeline_samples)
        for workers in workers_list:
            prefetched = 2 * workers  # the DataLoader's default prefetch factor
            total = (prefetched + 1 + args.pipeline_batches) * args.pipeline_batch
            for name, dataset, augment in (
                    ("numpy views in the workers (default)", PretrainDataset(*paths, view=RELEASED_VIEW, seed=0), None),
                    ("raw samples, views on the device (--augment-on-device)", RawPretrainDataset(*paths),
                     BatchAugment(0, device, 0, RELEASED_VIEW))):
                sampler = RandomSampler(dataset, replacement=True, num_samples=total,
                                        generator=torch.Generator().manual_seed(0))
                loader = DataLoader(dataset, batch_size=args.pipeline_batch, sampler=sampler, num_workers=workers,
                                    pin_memory=device.type == "cuda", drop_last=True)
                rate = steady_samples_per_s(loader, lambda batch, a=augment: batch_views(batch, device, a), device,
                                            prefetched, args.pipeline_batches)
                rows.append({"pipeline": name, "workers": workers, "batch_size": args.pipeline_batch,
                             "samples_per_s": rate})
    return rows


def write_demo_data(root, num_train, seed=0):
    """Random NTU-sized samples in the released layout under root/demo/xsub (the `demo` protocol)."""
    rng = np.random.default_rng(seed)
    for part, count in (("train", num_train), ("val", 8)):
        data = rng.standard_normal((count, 3, 300, 25, 2), dtype=np.float32)
        write_split(root / "demo" / "xsub", part, data, rng.integers(64, 301, count),
                    [f"S{i:05d}" for i in range(count)], np.arange(count) % 4)


def two_processes(args, device):
    """pretrain.py on the same generated data and global batch in one process and in two; returns the
    first epoch's loss and the last epoch's samples/s of each, and the wall time of each run."""
    settings = args.two_process
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_demo_data(tmp / "data", settings["samples"])
        common = ["pretrain.py", "--pre-dataset", "demo", "--data-root", str(tmp / "data"), "--device", device.type,
                  "--amp", "--amp-dtype", "fp16", "--epochs", str(settings["epochs"]),
                  "--batch-size", str(settings["batch_size"]), "--workers", str(settings["workers"]),
                  "--hidden-size", str(args.hidden_size), "--projector-dim", str(args.projector_dim)]
        launchers = {1: [sys.executable], 2: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                              "--nproc_per_node=2"]}
        for processes, launcher in launchers.items():
            run_dir = tmp / f"run_{processes}"
            start = time.perf_counter()
            done = subprocess.run([*launcher, *common, "--checkpoint-path", str(run_dir)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=480)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                rows.append({"processes": processes, "error": done.stderr.strip().splitlines()[-1:]})
                continue
            log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
            config = json.loads((run_dir / "config.json").read_text())["config"]
            rows.append({"processes": processes, "first_epoch_loss": log[0]["loss"],
                         "samples_per_s": log[-1]["samples_per_s"], "wall_s": wall,
                         "sync_batchnorm": config.get("sync_batchnorm")})
    if len(rows) == 2 and "error" not in rows[0] and "error" not in rows[1]:
        rows[1]["loss_relative_difference"] = abs(rows[1]["first_epoch_loss"] / rows[0]["first_epoch_loss"] - 1)
    return {"global_batch": settings["batch_size"], "samples": settings["samples"], "rows": rows}


def projection(steps, pipeline, global_batch=RELEASED_GLOBAL_BATCH):
    """Projected wall time of the released NTU-60 x-sub pretraining on one device, in hours, from the
    measured step at `global_batch` (the released 512; --quick projects from its own small batch)."""
    step = next((r for r in steps if r["batch_size"] == global_batch and "error" not in r), None)
    if step is None:
        return None
    steps_per_epoch = math.ceil(NTU60_XSUB_TRAIN_SAMPLES / global_batch)
    compute_s = RELEASED_EPOCHS * steps_per_epoch * step["step_s_median"]
    loader = max((r["samples_per_s"] for r in pipeline), default=None)
    loader_s = RELEASED_EPOCHS * NTU60_XSUB_TRAIN_SAMPLES / loader if loader else 0.0
    return {"global_batch": global_batch, "steps_per_epoch": steps_per_epoch, "step_s": step["step_s_median"],
            "compute_hours": compute_s / 3600,
            "loader_hours": loader_s / 3600, "hours": max(compute_s, loader_s) / 3600}


def run(args):
    device = torch.device(args.device)
    sizes = {"hidden_size": args.hidden_size}  # the released model's otherwise (umurl.UmURLConfig)
    results = {"machine": machine_info(), "device": device_section(device, args.quick), "quick": args.quick}
    report(results, "device")
    results["steps"] = [measure_step(b, sizes, args, device, results["device"]["fp16_peak_flop_s"])
                        for b in args.batch_sizes]
    report(results, "steps")
    workers = sorted({0, 2} if args.quick else {8, os.cpu_count()})  # 8: pretrain.py's default
    results["pipeline"] = measure_pipeline(args, device, workers)
    report(results, "pipeline")
    if args.two_processes or (device.type == "cuda" and torch.cuda.device_count() >= 2):
        results["two_processes"] = two_processes(args, device)
        report(results, "two_processes")
    results["projection"] = projection(results["steps"], results["pipeline"], max(args.batch_sizes))
    report(results, "projection")
    return results


def flop_rate(flop_s):
    return f"{flop_s / 1e12:.1f} TFLOP/s" if flop_s >= 1e12 else f"{flop_s / 1e9:.1f} GFLOP/s"


def gib(value):
    return "-" if value is None else f"{value:.1f} GiB"


def section_text(results, name):
    """The markdown of one section."""
    if name == "device":
        device = results["device"]
        memory = f", {device['memory_gib']:.0f} GiB" if device["memory_gib"] else ""
        return (f"## {device['name']}{memory}\n\n{machine_line(results['machine'])}\n\n"
                f"MFU against {flop_rate(device['fp16_peak_flop_s'])} ({device['peak_source']}).")
    if name == "steps":
        rows = [(r["batch_size"], r["error"], "-", "-", "-", "-") if "error" in r else
                (r["batch_size"], f"{r['step_s_median'] * 1000:.1f} ms (best {r['step_s_best'] * 1000:.1f})",
                 f"{r['samples_per_s']:.0f}", gib(r["peak_memory_gib"]), f"{r['gflop_per_sample']:.2f}",
                 f"{100 * r['mfu']:.1f}%") for r in results["steps"]]
        return ("### fp16 training step, default model size, one device\n\n" +
                markdown_table(("global batch", "step time (median)", "samples/s", "peak memory", "GFLOP/sample",
                                "MFU"), rows))
    if name == "pipeline":
        consumed = {r["batch_size"]: r["samples_per_s"] for r in results["steps"] if "error" not in r}
        rows = []
        for r in results["pipeline"]:
            step = consumed.get(r["batch_size"])
            ratio = f"{r['samples_per_s'] / step:.2f}x" if step else "-"
            rows.append((r["pipeline"], r["workers"], f"{r['samples_per_s']:.0f}", ratio))
        batch = results["pipeline"][0]["batch_size"] if results["pipeline"] else "-"
        return (f"### Data pipeline, batches of {batch}\n\n" +
                markdown_table(("loader", "CPU workers", "samples/s", "vs the step's consumption at this batch"),
                               rows))
    if name == "two_processes":
        part = results["two_processes"]
        rows = [(r["processes"], r["error"], "-", "-", "-") if "error" in r else
                (r["processes"], f"{r['first_epoch_loss']:.5f}", f"{r['samples_per_s']:.0f}", f"{r['wall_s']:.0f} s",
                 r["sync_batchnorm"] or "-") for r in part["rows"]]
        difference = next((r["loss_relative_difference"] for r in part["rows"] if "loss_relative_difference" in r),
                          None)
        note = "" if difference is None else f"\n\nFirst-epoch loss, two processes against one: {difference:.1e}."
        return (f"### pretrain.py in two processes against one (global batch {part['global_batch']}, "
                f"{part['samples']} generated samples)\n\n" +
                markdown_table(("processes", "first-epoch loss", "samples/s (last epoch)", "wall time",
                                "synchronised BatchNorm"), rows) + note)
    if name == "projection":
        p = results["projection"]
        if p is None:
            return "### Projection\n\nThe step at the largest batch did not run: nothing projected."
        return (f"### Projection (computed, not measured)\n\nThe released NTU-60 x-sub pretraining on one "
                f"{results['device']['name']}: {RELEASED_EPOCHS} epochs x {p['steps_per_epoch']} steps of global "
                f"batch {p['global_batch']} x {p['step_s'] * 1000:.1f} ms = {p['compute_hours']:.1f} h of "
                f"training steps; the fastest loader above needs {p['loader_hours']:.1f} h for the same samples, "
                f"so about {p['hours']:.1f} h, without start-up and checkpoint writes.")
    raise ValueError(name)


def report(results, name):
    print("\n" + section_text(results, name), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: the same sections on the CPU (fp16 autocast runs there too), for testing")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the plumbing in seconds")
    parser.add_argument("--two-processes", action="store_true",
                        help="run section 4 even without two GPUs (on the CPU: two Gloo processes)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing measured.")
        return None
    for key, value in (QUICK if args.quick else FULL).items():
        setattr(args, key, value)
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
