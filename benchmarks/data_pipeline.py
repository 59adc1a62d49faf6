"""Benchmark the pretraining data pipeline: batches/s out of the DataLoader, as pretrain.py builds it.

    python benchmarks/data_pipeline.py --num-samples 512 --batch-size 16 --json data_pipeline.json

A random split in the prepared NTU layout ((N, 3, 300, 25, 2) float32, 64 to 300 real frames) is
written to a temporary folder, then read through two pipelines with 0, 2 and all-cores workers:
- numpy views (the default): PretrainDataset draws the four views per sample in the workers;
- on-device views (--augment-on-device): RawPretrainDataset reads raw samples and BatchAugment draws
  the views for the whole batch on the device (here the CPU, and the GPU when there is one), in the
  training process; the time of both is counted.
Also timed: the raw loader alone (what it must supply when a GPU draws the views), and BatchAugment
on a batch already on the device (its ceiling when loading is free).
Each figure is batches/s over `--batches` batches after the first (worker start-up is not counted).
The training process runs its torch ops here with --threads (default 1) CPU threads: they are small
(a few MB each), so a second thread gains little, and on a busy machine two threads stall each other
at every op (measured: 20 ms per batch of 16 with one thread, 160-330 ms with two while another
process kept one core busy). DataLoader workers use one thread each whatever this says.
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (best_and_median, machine_info, markdown_table, section_main, synchronize,  # noqa: E402
                               time_calls, torch_threads)
from dataset import write_split  # noqa: E402
from feeder.augmentations import RELEASED_VIEW  # noqa: E402
from feeder.batch_augment import BatchAugment  # noqa: E402
from feeder.feeder import PretrainDataset, RawPretrainDataset  # noqa: E402


def write_random_split(folder, num_samples, max_frames=300, seed=0):
    """A train split of random skeletons with 64..max_frames real frames; returns its three paths."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((num_samples, 3, max_frames, 25, 2), dtype=np.float32)
    num_frames = rng.integers(64, max_frames + 1, num_samples)
    write_split(folder, "train", data, num_frames, [f"S{i:04d}" for i in range(num_samples)],
                np.zeros(num_samples, dtype=np.int64))
    return [Path(folder) / name for name in ("train_data_joint.npy", "train_num_frame.npy", "train_label.pkl")]


def batches_per_second(loader, num_batches, to_views=None, device="cpu"):
    """Batches/s of iterating `loader` (and turning each batch into views), after one untimed batch."""
    iterator = iter(loader)
    batch = next(iterator)  # starts the workers
    if to_views is not None:
        to_views(batch)
    synchronize(device)
    start, done = time.perf_counter(), 0
    for batch in iterator:
        if to_views is not None:
            to_views(batch)
        done += 1
        if done == num_batches:
            break
    synchronize(device)
    return done / (time.perf_counter() - start)


def on_device_views(augment, device):
    def to_views(batch):
        x, valid = (t.to(device, non_blocking=True) for t in batch)
        return augment(x, valid, step=0)
    return to_views


def augment_alone(raw_batch, device, repeats):
    """Batches/s of BatchAugment on a raw batch already on `device` (best of `repeats`)."""
    augment = BatchAugment(0, torch.device(device), 0, RELEASED_VIEW)
    x, valid = (t.to(device) for t in raw_batch)
    best, _ = best_and_median(time_calls(lambda: augment(x, valid, step=0), repeats=repeats, device=device))
    return 1 / best


def run(args):
    with torch_threads(args.threads):
        return measure(args)


def measure(args):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    worker_counts = sorted({0, min(2, os.cpu_count()), os.cpu_count()})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_random_split(tmp, args.num_samples)
        num_batches = min(args.batches, args.num_samples // args.batch_size - 1)
        for workers in worker_counts:
            loader = DataLoader(PretrainDataset(*paths, view=RELEASED_VIEW, seed=0), batch_size=args.batch_size,
                                shuffle=True, num_workers=workers, drop_last=True)
            rows.append({"pipeline": "numpy views (default)", "augment_device": "cpu (workers)", "workers": workers,
                         "batches_per_s": batches_per_second(loader, num_batches)})
            # What the loader alone must supply when the views are drawn on a GPU.
            loader = DataLoader(RawPretrainDataset(*paths), batch_size=args.batch_size, shuffle=True,
                                num_workers=workers, drop_last=True)
            rows.append({"pipeline": "raw samples only (no views)", "augment_device": "-", "workers": workers,
                         "batches_per_s": batches_per_second(loader, num_batches)})
            for device in devices:
                loader = DataLoader(RawPretrainDataset(*paths), batch_size=args.batch_size, shuffle=True,
                                    num_workers=workers, drop_last=True, pin_memory=device == "cuda")
                views = on_device_views(BatchAugment(0, torch.device(device), 0, RELEASED_VIEW), device)
                rows.append({"pipeline": "raw + on-device views", "augment_device": device, "workers": workers,
                             "batches_per_s": batches_per_second(loader, num_batches, views, device)})
        raw = next(iter(DataLoader(RawPretrainDataset(*paths), batch_size=args.batch_size)))
    for device in devices:
        rows.append({"pipeline": "on-device views alone (batch already there)", "augment_device": device,
                     "workers": "-", "batches_per_s": augment_alone(raw, device, max(num_batches, 3))})
    for row in rows:
        row["batches_per_s"] = round(row["batches_per_s"], 1)
        row["samples_per_s"] = round(row["batches_per_s"] * args.batch_size, 1)
    return {"machine": machine_info(), "batch_size": args.batch_size, "num_samples": args.num_samples,
            "threads": args.threads, "rows": rows}


def table(results):
    header = ("pipeline", "views drawn on", "workers", "batches/s", "samples/s")
    return markdown_table(header, [(r["pipeline"], r["augment_device"], r["workers"], r["batches_per_s"],
                                    r["samples_per_s"]) for r in results["rows"]])


def add_arguments(parser):
    parser.add_argument("--num-samples", type=int, default=512, help="samples in the generated split")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per batch (4 views each)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the training process")


def main(argv=None):
    section_main(__doc__, add_arguments, run, table, argv)


if __name__ == "__main__":
    main()
