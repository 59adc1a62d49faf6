"""UmURL self-supervised pretraining.

    python pretrain.py --pre-dataset ntu60 --protocol cross_subject --checkpoint-path runs/ntu60_xsub
    torchrun --nproc_per_node=4 pretrain.py ...                      # one node, 4 GPUs (NCCL)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 pretrain.py ...
    torchrun --nproc_per_node=2 pretrain.py --device cpu ...         # several CPU processes (Gloo)

--batch-size is the global batch: each process takes its share, every projection is all-gathered
(with gradients) so the loss is the global batch's, and BatchNorm is synchronised.

The run folder (--checkpoint-path) receives config.json, log.jsonl (one line per epoch), TensorBoard
scalars, checkpoint_last.pth.tar after every epoch (everything needed to resume exactly) and
checkpoint_{epoch:04d}.pth.tar every --save-freq epochs (what the evaluation scripts load). A run
started again with the same command resumes from checkpoint_last.pth.tar.
"""
import math
import sys
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import distributed
import utils
from checkpoint import CheckpointError, load_pretraining_weights, read_checkpoint, save_atomic
from dataset import build_pretrain_dataset
from feeder.batch_augment import BatchAugment
from feeder.batches import EpochBatches, folds_single_sample
from options.common import model_sizes
from options.pretrain import build_parser, resolve_pretraining_settings
from options.protocols import get_protocol
from safe_io import DataFileError
from umurl import UmURL, umurl_loss

LAST_CHECKPOINT = "checkpoint_last.pth.tar"


class NonFiniteLoss(RuntimeError):
    pass


def batch_views(batch, device, augment=None):
    """The four views (B, C, T, V, M) of a loader batch on `device`: moved there as they are, or (with
    --augment-on-device) drawn there from the raw samples and frame counts by `augment`."""
    if augment is None:
        return [v.to(device, non_blocking=True) for v in batch]
    x, valid = (t.to(device, non_blocking=True) for t in batch)
    return augment(x, valid)


def train_one_epoch(model, loader, optimizer, scaler, epoch, device, amp_dtype, print_freq=10, augment=None):
    """One pass over the loader; returns the epoch's mean loss and its parts (weighted by each step's
    global batch), the samples seen over all processes, throughput and data time.

    augment: None when the loader yields the views, else the BatchAugment that draws them on the device.
    """
    model.train()
    meters = {name: utils.AverageMeter() for name in ("loss", "intra", "inter", "reg")}
    data_time, samples, start = 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not distributed.is_main_process(), dynamic_ncols=True,
               leave=False)
    tick = time.perf_counter()
    for step, batch in enumerate(bar):
        views = batch_views(batch, device, augment)  # 4 x (B, C, T, V, M)
        data_time += time.perf_counter() - tick

        with utils.autocast(device, amp_dtype):
            z = model(*views)
        # The loss is that of the global batch: gather every projection from every process.
        z = {name: distributed.gather_with_grad(value) for name, value in z.items()}
        loss, parts = umurl_loss(z)
        global_batch = len(z["z_j"])  # the last step of an epoch is smaller, as released

        loss_value = loss.item()  # one sync per step: a non-finite loss must stop the run at once
        if not math.isfinite(loss_value):
            raise NonFiniteLoss(f"non-finite loss ({loss_value}) at epoch {epoch}, step {step}: stopping; "
                                f"the last checkpoint written before this epoch is intact")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

        meters["loss"].update(loss_value, global_batch)
        for name, value in parts.items():
            meters[name].update(value.item(), global_batch)
        samples += global_batch
        if step % print_freq == 0:
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            samples_per_s=f"{samples / elapsed:.1f}")
        tick = time.perf_counter()
    elapsed = time.perf_counter() - start
    return {**{name: meter.avg for name, meter in meters.items()}, "samples": samples,
            "samples_per_s": samples / elapsed, "data_time_s": data_time, "epoch_time_s": elapsed}


def periodic_checkpoint_due(epoch, total_epochs, save_freq):
    """Released rule: epochs 0, 50, 100, ... and the last (so 451 epochs end with checkpoint_0450)."""
    return epoch % save_freq == 0 or epoch == total_epochs - 1


def save_checkpoints(run_dir, model, optimizer, scaler, epoch, args, config):
    """checkpoint_last (resumable) every epoch, checkpoint_{epoch:04d} when due; atomic writes.

    RNG states of every process are gathered here (a collective: all processes call this).
    """
    rng_states = [None] * distributed.get_world_size()
    if distributed.is_distributed():
        torch.distributed.all_gather_object(rng_states, utils.rng_state())
    else:
        rng_states = [utils.rng_state()]
    if distributed.is_main_process():
        state = {"epoch": epoch + 1, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}
        # The periodic file first: a crash between the two writes then resumes before this epoch and
        # writes it again, whereas the other order would resume after it and never write it.
        if periodic_checkpoint_due(epoch, args.epochs, args.save_freq):
            save_atomic(state, run_dir / f"checkpoint_{epoch:04d}.pth.tar")
        save_atomic({**state, "scaler": scaler.state_dict(), "rng_states": rng_states, "config": config},
                    run_dir / LAST_CHECKPOINT)
    distributed.barrier()


def build_optimizer(model, lr, weight_decay, device):
    """Adam as released, with the fused kernel on CPU and CUDA: one pass over all 72 M parameters
    instead of a chain of small ops per tensor (on a 2-core CPU 0.05 s instead of 0.5 s a step,
    see benchmarks/README.md). The update is the same up to float rounding."""
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay,
                            fused=device.type in ("cpu", "cuda"))


def resume(path, model, optimizer, scaler):
    """Restore model, optimizer, scaler and this process's RNG states; return the next epoch."""
    checkpoint = read_checkpoint(path)
    load_pretraining_weights(model, checkpoint)
    if "optimizer" in checkpoint:
        fused = [group["fused"] for group in optimizer.param_groups]
        optimizer.load_state_dict(checkpoint["optimizer"])
        # The saved groups carry the kernel choice of the run that wrote them (None in the released
        # checkpoints): keep this machine's, or a resumed run silently loses the fused kernel.
        for group, choice in zip(optimizer.param_groups, fused):
            group["fused"] = choice
    if "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    rng_states = checkpoint.get("rng_states") or []
    if len(rng_states) == distributed.get_world_size():
        utils.set_rng_state(rng_states[distributed.get_rank()])
    else:
        utils.main_print(f"note: {path} holds RNG states of {len(rng_states)} processes, this run has "
                         f"{distributed.get_world_size()}: weights and data order resume exactly, RNG states do not")
    return int(checkpoint["epoch"])


def main(args):
    device_kind = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    rank, world_size, local_rank = distributed.init_distributed(device_kind)
    device = utils.resolve_device(args.device, local_rank)
    amp_dtype = utils.resolve_amp_dtype(device, args.amp, args.amp_dtype)

    # Start-up checks first: a bad setting must fail in seconds, not after an epoch.
    protocol = get_protocol(args.dataset, args.protocol)
    resolve_pretraining_settings(args)  # the protocol's released global batch unless given
    if args.batch_size % world_size:
        raise SystemExit(f"--batch-size {args.batch_size} does not divide over {world_size} processes")
    run_dir = utils.prepare_run_folder(args.checkpoint_path) if rank == 0 else args.checkpoint_path
    dataset = build_pretrain_dataset(args.data_root, args.dataset, args.protocol, seed=args.seed,
                                     min_crop_length=args.min_crop_length, raw=args.augment_on_device)
    augment = BatchAugment(args.seed, device, rank, dataset.num_corrupt, dataset.out_frames,
                           dataset.min_crop_length) if args.augment_on_device else None
    per_process_batch = args.batch_size // world_size
    if len(dataset) < args.batch_size:
        raise SystemExit(f"{len(dataset)} training samples cannot fill one global batch of {args.batch_size}")

    config = {**utils.config_dict(args), "min_crop_length": dataset.min_crop_length,  # resolved from the protocol
              "world_size": world_size, "device": str(device),
              "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
              "sync_batchnorm": distributed.sync_batchnorm_name(device) if world_size > 1 else None}
    if rank == 0:
        utils.write_config(run_dir, config)

    utils.seed_everything(args.seed)
    model = UmURL(**model_sizes(args, protocol), projector_dim=args.projector_dim).to(device)
    if world_size > 1:  # before the optimizer is built: conversion creates new BatchNorm parameters
        model = distributed.convert_sync_batchnorm(model, device)
    optimizer = build_optimizer(model, args.lr, args.weight_decay, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    resume_path = args.resume or (run_dir / LAST_CHECKPOINT if (run_dir / LAST_CHECKPOINT).exists() else None)
    start_epoch = 0
    if resume_path is not None:
        start_epoch = resume(resume_path, model, optimizer, scaler)
        utils.main_print(f"resumed from {resume_path}: continuing at epoch {start_epoch}")

    model_without_ddp = model
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        model_without_ddp = model.module
    if args.compile:  # after the DDP wrapper, as torch recommends; checkpoints keep the plain module
        model = torch.compile(model)

    # The released sample order (seed 0) with its partial last batch (feeder/batches.py); the order
    # and the feeder's views depend on the epoch only, so a resumed epoch sees exactly the batches
    # the uninterrupted run would have seen.
    batches = EpochBatches(dataset, per_process_batch, world_size, rank)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=args.workers,
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    if folds_single_sample(batches.sampler.num_samples, per_process_batch, world_size):
        utils.main_print(f"note: {len(dataset)} samples leave 1 for the last step of each epoch; a batch of one has "
                         f"no variance, so it joins the step before ({len(batches)} steps per epoch)")
    if rank == 0:
        utils.truncate_log(run_dir / "log.jsonl", start_epoch)
    writer = SummaryWriter(run_dir / "tensorboard", purge_step=start_epoch) if rank == 0 else None
    utils.main_print(f"pretraining on {len(dataset)} samples, {world_size} process(es) on {device.type}, "
                     f"global batch {args.batch_size} ({per_process_batch} per process), "
                     f"precision {config['amp_dtype']}, epochs {start_epoch}..{args.epochs - 1}, run folder {run_dir}"
                     + (f", BatchNorm synchronised by {config['sync_batchnorm']}" if world_size > 1 else ""))

    run_start = time.perf_counter()
    for epoch in range(start_epoch, args.epochs):
        batches.set_epoch(epoch)
        dataset.set_epoch(epoch)
        if augment is not None:
            augment.set_epoch(epoch)
        lr = utils.learning_rate(epoch, args.lr, args.epochs, args.schedule, args.cos)
        utils.set_learning_rate(optimizer, lr)
        try:
            stats = train_one_epoch(model, loader, optimizer, scaler, epoch, device, amp_dtype, args.print_freq,
                                    augment)
        except NonFiniteLoss as error:
            utils.main_print(f"error: {error}")
            distributed.cleanup()
            sys.exit(1)
        # Log, then checkpoint: after a crash between the two, the run resumes before this epoch and
        # first drops what was logged of it (truncate_log, purge_step), so no epoch is lost or doubled.
        if rank == 0:
            record = {"epoch": epoch, "lr": lr, **stats}
            utils.append_jsonl(run_dir / "log.jsonl", record)
            writer.add_scalar("train_loss", stats["loss"], epoch)  # the released scalar's name
            for name in ("intra", "inter", "reg", "samples_per_s", "data_time_s"):
                writer.add_scalar(f"train/{name}", stats[name], epoch)
            writer.add_scalar("train/lr", lr, epoch)
            writer.flush()
            done = epoch + 1 - start_epoch
            eta = (time.perf_counter() - run_start) / done * (args.epochs - epoch - 1)
            print(f"epoch {epoch}: loss {stats['loss']:.4f} (intra {stats['intra']:.4f}, inter {stats['inter']:.4f}, "
                  f"reg {stats['reg']:.4f}), lr {lr:.2e}, {stats['samples_per_s']:.1f} samples/s, "
                  f"data wait {stats['data_time_s']:.1f}s, ETA {eta / 60:.1f} min", flush=True)
        save_checkpoints(run_dir, model_without_ddp, optimizer, scaler, epoch, args, config)
    if writer is not None:
        writer.close()
    distributed.cleanup()


if __name__ == "__main__":
    try:
        main(build_parser().parse_args())
    except (DataFileError, CheckpointError) as error:
        # Bad data or a checkpoint that does not fit: the message names the file and what is wrong,
        # and a traceback would only bury it.
        raise SystemExit(f"error: {error}") from None
