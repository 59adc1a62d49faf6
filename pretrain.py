"""UmURL self-supervised pretraining.

    python pretrain.py --pre-dataset ntu60 --protocol cross_subject --checkpoint-path runs/ntu60_xsub
    torchrun --nproc_per_node=4 pretrain.py ...                      # one node, 4 GPUs (NCCL)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 pretrain.py ...
    torchrun --nproc_per_node=2 pretrain.py --device cpu ...         # several CPU processes (Gloo)

--batch-size is the global batch: each process takes its share, every projection is all-gathered
(with gradients) so the loss is the global batch's, and BatchNorm is synchronised.

The run folder (--checkpoint-path) receives config.json, log.jsonl (one line per epoch), TensorBoard
scalars, checkpoint_last.pth.tar after every epoch (everything needed to resume exactly) and
checkpoint_{epoch:04d}.pth.tar every --save-freq epochs (what the evaluation scripts load).

Restarts, preemption, blow-ups (README, Reliability):
- A run started again continues from its folder's checkpoint_last.pth.tar, whatever --resume says
  (--resume only seeds a new folder), after comparing the settings that change the result with the
  checkpoint's (run_folder.py); each such start appends a line to resumes.jsonl.
- One live run per folder: rank 0 holds a lock on run.lock while the run lives.
- SIGTERM or SIGUSR1 stops every process after the current step with a checkpoint inside the epoch,
  and the process exits with code 75 (preemption.py); the same command then carries on exactly.
- A state with NaN or Inf is never saved; the message names the latest good checkpoint (exit code 1).
"""
import dataclasses
import functools
import math
import sys
import time
from contextlib import contextmanager, nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

import console
import distributed
import preemption
import run_folder
import utils
from checkpoint import (CheckpointError, load_pretraining_weights, non_finite_tensors, read_checkpoint, save_atomic,
                        training_tensors)
from dataset import build_pretrain_dataset
from feeder.batch_augment import BatchAugment
from feeder.batches import EpochBatches, folds_single_sample
from options.common import model_config, size_flags
from options.pretrain import build_parser, loss_weights, resolve_pretraining_settings, view_config
from options.protocols import get_protocol
from safe_io import DataFileError
from umurl import RELEASED_LOSS_WEIGHTS, UmURL, umurl_loss

LAST_CHECKPOINT = "checkpoint_last.pth.tar"


class NonFiniteLoss(RuntimeError):
    pass


class NonFiniteState(RuntimeError):
    pass


class EpochProgress:
    """How far an epoch has got: steps done, the loss meters, samples seen, data and training time.

    The meters are "loss" and then whatever parts umurl_loss returns, in its order: a new loss term is
    logged (log.jsonl, TensorBoard, the epoch line) without a change here. A checkpoint taken inside an
    epoch stores `state_dict()`, so the resumed epoch skips the steps done and ends with the log line the
    uninterrupted epoch would have written (the meters' sums go on from the same floats). `plan` is
    (world size, global batch): the steps mean the same only under the same plan.
    """

    def __init__(self, plan, state=None):
        state = state or {}
        self.plan = list(plan)
        self.steps = state.get("steps", 0)
        self.meters = {}
        for name, (total, count) in state.get("meters", {}).items():
            self.meter(name).sum, self.meter(name).count = total, count
        self.samples = state.get("samples", 0)
        self.data_time = state.get("data_time_s", 0.0)
        self.train_time = state.get("train_time_s", 0.0)

    def meter(self, name):
        """The meter of one loss part, created when the part first appears."""
        return self.meters.setdefault(name, utils.AverageMeter())

    def add_losses(self, values, global_batch):
        """Count one step's {name: float} loss values, each standing for the step's global batch."""
        for name, value in values.items():
            self.meter(name).update(value, global_batch)

    def losses(self):
        """The epoch's mean of each loss part so far: {"loss": ..., then umurl_loss's parts}."""
        return {name: meter.avg for name, meter in self.meters.items()}

    def state_dict(self):
        return {"plan": self.plan, "steps": self.steps, "samples": self.samples, "data_time_s": self.data_time,
                "train_time_s": self.train_time,
                "meters": {name: (meter.sum, meter.count) for name, meter in self.meters.items()}}

    def stats(self):
        return {**self.losses(), "samples": self.samples,
                "samples_per_s": self.samples / max(self.train_time, 1e-9), "data_time_s": self.data_time,
                "epoch_time_s": self.train_time}


def batch_views(batch, device, augment=None, step=0):
    """The four views (B, C, T, V, M) of a loader batch on `device`: moved there as they are, or (with
    --augment-on-device) drawn there from the raw samples and frame counts by `augment`."""
    if augment is None:
        return [v.to(device, non_blocking=True) for v in batch]
    x, valid = (t.to(device, non_blocking=True) for t in batch)
    return augment(x, valid, step)


def train_one_epoch(model, loader, optimizer, scaler, epoch, device, amp_dtype, print_freq=10, augment=None,
                    progress=None, stop=None, weights=RELEASED_LOSS_WEIGHTS):
    """Train on the loader's batches of `epoch`; return its EpochProgress, whose stats() are the epoch's mean
    loss and parts (weighted by each step's global batch), the samples seen over all processes, throughput
    and data time.

    weights: the umurl.LossWeights of the objective (pretrain passes options/pretrain.py `loss_weights`).

    augment: None when the loader yields the views, else the BatchAugment that draws them on the device.
    progress: this epoch's EpochProgress when the run resumes inside it (the loader then yields only the
    steps left), else None. stop: a preemption.StopSignals; once any process has received a signal the
    epoch ends after the current step, with progress.steps short of the epoch's steps.
    """
    model.train()
    progress = progress or EpochProgress(plan=())
    trained_before = progress.train_time
    bar = console.progress_bar(loader, desc=f"epoch {epoch}", initial=progress.steps,
                               total=progress.steps + len(loader), disable=not distributed.is_main_process(),
                               dynamic_ncols=True, leave=False)
    start = tick = time.perf_counter()
    for step, batch in enumerate(bar, start=progress.steps):
        views = batch_views(batch, device, augment, step)  # 4 x (B, C, T, V, M)
        progress.data_time += time.perf_counter() - tick

        with utils.autocast(device, amp_dtype):
            z = model(*views)
        # The loss is that of the global batch: gather every projection from every process.
        z = {name: distributed.gather_with_grad(value) for name, value in z.items()}
        loss, parts = umurl_loss(z, weights)
        global_batch = len(z["z_j"])  # the last step of an epoch is smaller, as released

        loss_value = loss.item()  # one sync per step: a non-finite loss must stop the run at once
        if not math.isfinite(loss_value):
            raise NonFiniteLoss(f"non-finite loss ({loss_value}) at epoch {epoch}, step {step}: stopping")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

        progress.add_losses({"loss": loss_value, **{name: value.item() for name, value in parts.items()}},
                            global_batch)
        progress.samples += global_batch
        progress.steps = step + 1
        progress.train_time = trained_before + time.perf_counter() - start
        if step % print_freq == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            samples_per_s=f"{progress.samples / progress.train_time:.1f}")
        if stop is not None and stop.agreed(device):
            break
        tick = time.perf_counter()
    return progress


def periodic_checkpoint_due(epoch, total_epochs, save_freq):
    """Released rule: epochs 0, 50, 100, ... and the last (so 451 epochs end with checkpoint_0450)."""
    return epoch % save_freq == 0 or epoch == total_epochs - 1


def position_text(epoch, progress=None, steps_per_epoch=None):
    """Where a checkpoint stands, for messages: 'end of epoch 3' or 'epoch 4, step 17 of 32'."""
    if progress is None:
        return f"end of epoch {epoch - 1}" if epoch > 0 else "before epoch 0"
    return f"epoch {epoch}, step {progress.steps}" + (f" of {steps_per_epoch}" if steps_per_epoch else "")


def save_checkpoints(run_dir, model, optimizer, scaler, epoch, args, config, progress=None):
    """After a whole epoch (progress None): checkpoint_{epoch:04d} when due, then checkpoint_last, which
    resumes at the next epoch. Inside an epoch: checkpoint_last only, holding `progress`, which resumes
    at the next step. Atomic writes; returns the text naming what checkpoint_last now holds.

    Every weight, buffer and optimizer tensor is checked first: a non-finite state raises NonFiniteState
    and nothing is written, so the files keep the last good state. RNG states of every process are
    gathered here (collectives: all processes call this).
    """
    position = position_text(epoch + 1, None) if progress is None else position_text(epoch, progress)
    bad = non_finite_tensors(training_tensors(model, optimizer))
    if distributed.any_process(bool(bad), next(model.parameters()).device):
        where = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more tensors" if len(bad) > 3 else "") if bad \
            else "the state of another process"
        raise NonFiniteState(f"non-finite values in {where} ({position}): nothing saved")
    rng_states = distributed.gather_objects(utils.rng_state())
    if distributed.is_main_process():
        # model_config: the sizes and skeleton, so that evaluation builds the encoder without size flags.
        state = {"epoch": epoch + 1, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "model_config": model.config.to_dict()}
        if progress is None:
            # The periodic file first: a crash between the two writes then resumes before this epoch and
            # writes it again, whereas the other order would resume after it and never write it.
            if periodic_checkpoint_due(epoch, args.epochs, args.save_freq):
                save_atomic(state, run_dir / f"checkpoint_{epoch:04d}.pth.tar")
        else:
            state = {**state, "epoch": epoch, "progress": progress.state_dict()}
        save_atomic({**state, "scaler": scaler.state_dict(), "rng_states": rng_states, "config": config},
                    run_dir / LAST_CHECKPOINT)
    distributed.barrier()
    return f"{run_dir / LAST_CHECKPOINT} ({position})"


def build_optimizer(model, lr, weight_decay, device):
    """Adam as released, with the fused kernel on CPU and CUDA: one pass over all 72 M parameters
    instead of a chain of small ops per tensor (on a 2-core CPU 0.05 s instead of 0.5 s a step,
    see benchmarks/README.md). The update is the same up to float rounding."""
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay,
                            fused=device.type in ("cpu", "cuda"))


def refuse_config_changes(saved, source, config, allowed):
    """The result-changing settings in which `config` differs from the checkpoint's; SystemExit listing
    them unless `allowed` (--allow-config-change). A checkpoint without a configuration (a released or
    periodic one) is not compared."""
    if not isinstance(saved.get("config"), dict):
        return []
    changes = run_folder.config_changes(saved["config"], config)
    if changes and not allowed:
        raise SystemExit(f"{source} was trained with other settings that change the result: "
                         f"{run_folder.describe_changes(changes)}. Run with the checkpoint's settings, start a new "
                         f"--checkpoint-path, or pass --allow-config-change to go on with the new ones "
                         f"(recorded in resumes.jsonl)")
    return changes


def resume(saved, source, model, optimizer, scaler, plan):
    """Restore model, optimizer, scaler and this process's RNG states from the checkpoint `saved` (read from
    `source`); return (the epoch to continue, its EpochProgress when the checkpoint was taken inside it, else None)."""
    load_pretraining_weights(model, saved)
    if "optimizer" in saved:
        fused = [group["fused"] for group in optimizer.param_groups]
        optimizer.load_state_dict(saved["optimizer"])
        # The saved groups carry the kernel choice of the run that wrote them (None in the released
        # checkpoints): keep this machine's, or a resumed run silently loses the fused kernel.
        for group, choice in zip(optimizer.param_groups, fused):
            group["fused"] = choice
    if "scaler" in saved:
        scaler.load_state_dict(saved["scaler"])
    rng_states = saved.get("rng_states") or []
    if len(rng_states) == distributed.get_world_size():
        utils.set_rng_state(rng_states[distributed.get_rank()])
    else:
        utils.main_print(f"note: {source} holds RNG states of {len(rng_states)} processes, this run has "
                         f"{distributed.get_world_size()}: weights and data order resume exactly, RNG states do not")
    epoch, progress = int(saved["epoch"]), saved.get("progress")
    if progress is None:
        return epoch, None
    if list(progress["plan"]) != list(plan):
        utils.main_print(f"note: {source} was taken inside epoch {epoch} with (processes, global batch) "
                         f"{tuple(progress['plan'])}, this run has {tuple(plan)}: epoch {epoch} starts again")
        return epoch, None
    return epoch, EpochProgress(plan, progress)


def init_loader_worker(shield, worker_id):
    """A DataLoader worker neither dies of a preemption signal while training runs (the main process stops
    the run; `shield` is StopSignals.shield) nor keeps the run folder locked once the main process is gone."""
    preemption.ignore_in_worker(shield)
    run_folder.RunLock.forget_in_child()


@contextmanager
def claim_run_folder(path, rank):
    """Rank 0 creates the run folder, locks it for as long as this block runs and clears the temporaries a
    killed write left there; a refusal (the folder unwritable or held by a live run) ends every process
    with the same message."""
    lock, refusal = None, None
    if rank == 0:
        try:
            utils.prepare_run_folder(path)
            lock = run_folder.RunLock(path)
            removed = run_folder.remove_stale_temporaries(path)
            if removed:
                print(f"removed {len(removed)} temporary file(s) a killed write left in {path}: "
                      f"{', '.join(removed)}", flush=True)
        except (SystemExit, run_folder.RunFolderBusy) as error:
            refusal = str(error)
    refusal = distributed.broadcast_from_main(refusal)
    if refusal is not None:
        raise SystemExit(refusal)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def main(args):
    device_kind = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    rank, world_size, local_rank = distributed.init_distributed(device_kind)
    device = utils.resolve_device(args.device, local_rank)
    amp_dtype = utils.resolve_amp_dtype(device, args.amp, args.amp_dtype)

    # Start-up checks first: a bad setting must fail in seconds, not after an epoch.
    resolve_pretraining_settings(args)  # the protocol's name and released global batch unless given
    protocol = get_protocol(args.dataset, args.protocol, args.data_root)
    if args.batch_size % world_size:
        raise SystemExit(f"--batch-size {args.batch_size} does not divide over {world_size} processes")
    with claim_run_folder(args.checkpoint_path, rank):
        # What rank 0 prints also goes to the run folder's train.log, as the released script kept it.
        with console.copy_output_to(args.checkpoint_path / "train.log") if rank == 0 else nullcontext():
            code = pretrain(args, rank, world_size, local_rank, device, amp_dtype, protocol)
    # Only here, where every process arrives together: after an error in one process, destroying its group
    # alone can hang on NCCL while the others wait in a collective; torchrun then ends them instead.
    distributed.cleanup()
    if code:
        sys.exit(code)


def pretrain(args, rank, world_size, local_rank, device, amp_dtype, protocol):
    """Train until --epochs, a blow-up or a stop signal; returns the exit code: 0, 1 or preemption.EXIT_CODE."""
    run_dir = args.checkpoint_path
    # The view settings and loss weights, resolved once; the feeder or the on-device twin gets the view.
    view, weights = view_config(args, protocol), loss_weights(args)
    dataset = build_pretrain_dataset(args.data_root, args.dataset, args.protocol, view=view, seed=args.seed,
                                     raw=args.augment_on_device)
    augment = BatchAugment(args.seed, device, rank, view) if args.augment_on_device else None
    per_process_batch = args.batch_size // world_size
    if len(dataset) < args.batch_size:
        raise SystemExit(f"{len(dataset)} training samples cannot fill one global batch of {args.batch_size} "
                         f"({protocol.title}): pass a smaller --batch-size")

    config = {**utils.config_dict(args), "min_crop_length": view.min_crop_length,  # resolved from the protocol
              "view": view.as_dict(), "loss_weights": dataclasses.asdict(weights),
              **run_folder.data_fingerprint(dataset.names), "world_size": world_size, "device": str(device),
              "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
              "sync_batchnorm": distributed.sync_batchnorm_name(device) if world_size > 1 else None}

    # A run folder with a state continues from it; --resume only seeds one that has none.
    source = run_folder.resume_source(run_dir, LAST_CHECKPOINT, args.resume)
    if args.resume is not None and source != args.resume:
        utils.main_print(f"note: {run_dir} already holds this run's state: continuing from {source}, not from "
                         f"--resume {args.resume} (it only seeds a new run folder; to go back to it, move {source} "
                         f"away first)")
    saved = read_checkpoint(source) if source is not None else None
    changes = refuse_config_changes(saved, source, config, args.allow_config_change) if saved else []
    if rank == 0:
        run_folder.write_config_once(run_dir, config, has_state=(run_dir / LAST_CHECKPOINT).exists())

    utils.seed_everything(args.seed)
    model = UmURL(model_config(protocol, **size_flags(args))).to(device)
    if world_size > 1:  # before the optimizer is built: conversion creates new BatchNorm parameters
        model = distributed.convert_sync_batchnorm(model, device)
    optimizer = build_optimizer(model, args.lr, args.weight_decay, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    # The released sample order (seed 0) with its partial last batch (feeder/batches.py); the order
    # and the views depend on the epoch (and step) only, so a resumed epoch sees exactly the batches
    # the uninterrupted run would have seen, also when it resumes inside the epoch.
    batches = EpochBatches(dataset, per_process_batch, world_size, rank)
    plan = (world_size, args.batch_size)
    start_epoch, progress, latest_good = 0, None, "none yet, the run began from scratch"
    if saved is not None:
        start_epoch, progress = resume(saved, source, model, optimizer, scaler, plan)
        latest_good = f"{source} ({position_text(start_epoch, progress, batches.steps_per_epoch)})"
        utils.main_print(f"resumed from {source}: continuing at epoch {start_epoch}"
                         + (f", step {progress.steps} of {batches.steps_per_epoch}" if progress else ""))
        if changes:
            utils.main_print(f"note: settings changed (--allow-config-change): {run_folder.describe_changes(changes)}")
        if rank == 0:
            run_folder.record_resume(run_dir, source, start_epoch, progress.steps if progress else 0, config, changes)
        del saved

    model_without_ddp = model
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        model_without_ddp = model.module
    if args.compile:  # after the DDP wrapper, as torch recommends; checkpoints keep the plain module
        model = torch.compile(model)

    stop = preemption.StopSignals()
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=args.workers,
                        worker_init_fn=functools.partial(init_loader_worker, stop.shield),
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    if folds_single_sample(batches.sampler.num_samples, per_process_batch, world_size):
        utils.main_print(f"note: {len(dataset)} samples leave 1 for the last step of each epoch; a batch of one has "
                         f"no variance, so it joins the step before ({batches.steps_per_epoch} steps per epoch)")
    if rank == 0:
        utils.truncate_log(run_dir / "log.jsonl", start_epoch)
    writer = SummaryWriter(run_dir / "tensorboard", purge_step=start_epoch) if rank == 0 else None
    utils.main_print(f"pretraining on {len(dataset)} samples, {world_size} process(es) on {device.type}, "
                     f"global batch {args.batch_size} ({per_process_batch} per process), "
                     f"precision {config['amp_dtype']}, epochs {start_epoch}..{args.epochs - 1}, run folder {run_dir}"
                     + (f", BatchNorm synchronised by {config['sync_batchnorm']}" if world_size > 1 else ""))

    run_start, epochs_timed, code = time.perf_counter(), 0, 0
    with stop:
        for epoch in range(start_epoch, args.epochs):
            batches.set_epoch(epoch, first_step=progress.steps if progress else 0)
            (dataset if augment is None else augment).set_epoch(epoch)  # whichever draws the views
            lr = utils.learning_rate(epoch, args.lr, args.epochs, args.schedule, args.cos)
            utils.set_learning_rate(optimizer, lr)
            try:
                progress = train_one_epoch(model, loader, optimizer, scaler, epoch, device, amp_dtype,
                                           args.print_freq, augment, progress or EpochProgress(plan), stop, weights)
                finished = progress.steps == batches.steps_per_epoch
                if finished:
                    log_epoch(run_dir, writer, epoch, lr, progress, args.epochs, run_start, epochs_timed)
                    epochs_timed += 1
                latest_good = save_checkpoints(run_dir, model_without_ddp, optimizer, scaler, epoch, args, config,
                                               None if finished else progress)
            except (NonFiniteLoss, NonFiniteState) as error:
                utils.main_print(f"error: {error}; the latest good checkpoint is {latest_good}")
                code = 1
                break
            progress = None
            if stop.agreed(device):
                signal_name = stop.received or "a signal to another process"
                utils.main_print(f"stopped on {signal_name}: {latest_good} holds the run; the same command continues "
                                 f"it (exit code {preemption.EXIT_CODE})")
                code = preemption.EXIT_CODE
                break
    if writer is not None:
        writer.close()
    return code


def log_epoch(run_dir, writer, epoch, lr, progress, total_epochs, run_start, epochs_timed):
    """Rank 0: the epoch's log.jsonl line, TensorBoard scalars and one printed line with the ETA, each
    holding every loss part the epoch's EpochProgress counted.

    Logged before the epoch's checkpoint: after a crash between the two, the run resumes before this epoch
    and first drops what was logged of it (truncate_log, purge_step), so no epoch is lost or doubled."""
    if writer is None:
        return
    losses, stats = progress.losses(), progress.stats()
    utils.append_jsonl(run_dir / "log.jsonl", {"epoch": epoch, "lr": lr, **stats})
    writer.add_scalar("train_loss", losses["loss"], epoch)  # the released scalar's name
    parts = {name: value for name, value in losses.items() if name != "loss"}
    for name, value in {**parts, "samples_per_s": stats["samples_per_s"], "data_time_s": stats["data_time_s"]}.items():
        writer.add_scalar(f"train/{name}", value, epoch)
    writer.add_scalar("train/lr", lr, epoch)
    writer.flush()
    eta = (time.perf_counter() - run_start) / (epochs_timed + 1) * (total_epochs - epoch - 1)
    print(epoch_line(epoch, lr, losses, stats, eta), flush=True)


def epoch_line(epoch, lr, losses, stats, eta_s):
    """'epoch 3: loss 1.2345 (intra 0.1000, inter ..., reg ...), lr 5.00e-04, 123.4 samples/s, data wait 0.5s,
    ETA 1.2 min': the total, then each part of it in umurl_loss's order."""
    parts = ", ".join(f"{name} {value:.4f}" for name, value in losses.items() if name != "loss")
    return (f"epoch {epoch}: loss {losses['loss']:.4f}" + (f" ({parts})" if parts else "")
            + f", lr {lr:.2e}, {stats['samples_per_s']:.1f} samples/s, data wait {stats['data_time_s']:.1f}s, "
            f"ETA {eta_s / 60:.1f} min")


if __name__ == "__main__":
    try:
        main(build_parser().parse_args())
    except (DataFileError, CheckpointError) as error:
        # Bad data or a checkpoint that does not fit: the message names the file and what is wrong,
        # and a traceback would only bury it.
        raise SystemExit(f"error: {error}") from None
