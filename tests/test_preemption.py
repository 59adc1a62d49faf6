"""Preemption and blow-ups: a stop signal ends pretraining at a step boundary with a checkpoint inside the epoch,
and the same command then ends bit-identical to a run that was never stopped; a non-finite state is never saved.

Signals are real: sent by the run to itself at a chosen step (in-process, deterministic), to every process of a
run as SLURM does on preemption, to one torchrun worker only, and to scripts/slurm_pretrain.sbatch run through
stand-in `srun`, `torchrun` and `scontrol` executables.
"""
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import torch

import preemption
import pretrain
from checkpoint import read_checkpoint
from conftest import (ENV, ROOT, SIXTY_FOUR, TIMEOUT, assert_same_training_state, checkpoint_names, descendants,
                      launched, logged_epochs, pretrain_command, run_to_end, torchrun, two_process_command,
                      wait_for_progress)
from options.pretrain import build_parser

LOGGED = ("epoch", "lr", "loss", "intra", "inter", "reg", "samples")  # a log line's fields that are not timings


def parse(command):
    return build_parser().parse_args(command[2:])


def log_records(run_dir):
    return [{key: record[key] for key in LOGGED}
            for record in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())]


def assert_same_run(reference, run_dir):
    """Every checkpoint file and every log line (timings aside) of the two run folders are the same."""
    assert checkpoint_names(run_dir) == checkpoint_names(reference)
    for name in checkpoint_names(reference):
        assert_same_training_state(reference / name, run_dir / name)
    assert log_records(run_dir) == log_records(reference)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------------------
# A stop signal at a known step


@pytest.fixture(scope="module")
def straight_16(demo_data_16, tmp_path_factory):
    """Uninterrupted runs on the 16 samples, by their flags; each is run once for the module."""
    runs = {}

    def run_dir(*flags):
        if flags not in runs:
            runs[flags] = tmp_path_factory.mktemp("straight16")
            pretrain.main(parse(pretrain_command(demo_data_16, runs[flags], *flags)))
        return runs[flags]
    return run_dir


@pytest.mark.parametrize("extra, number, at_step, position, resumes_at", [
    ([], signal.SIGUSR1, 4, "epoch 1, step 2", "epoch 1, step 2 of 3"),
    (["--augment-on-device"], signal.SIGTERM, 4, "epoch 1, step 2", "epoch 1, step 2 of 3"),
    ([], signal.SIGTERM, 2, "end of epoch 0", "epoch 1"),
], ids=["views in loader workers", "views on the device", "in the last step of an epoch"])
def test_a_stop_signal_checkpoints_after_the_step_and_the_same_command_ends_bit_identical(
        demo_data_16, straight_16, tmp_path, monkeypatch, capsys, extra, number, at_step, position, resumes_at):
    # 16 samples in batches of 6: steps of 6, 6 and 4. The signal arrives during the at_step-th step of the run
    # (counted from 0: 4 is step 1 of epoch 1, 2 the last step of epoch 0).
    flags = ["--epochs", "2", "--batch-size", "6", "--workers", "2", "--seed", "7", *extra]
    straight, stopped = straight_16(*flags), tmp_path / "stopped"

    real_loss, steps = pretrain.umurl_loss, []

    def loss_and_signal(z, *weights):
        if len(steps) == at_step:
            os.kill(os.getpid(), number)
        steps.append(1)
        return real_loss(z, *weights)

    monkeypatch.setattr(pretrain, "umurl_loss", loss_and_signal)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        pretrain.main(parse(pretrain_command(demo_data_16, stopped, *flags)))
    output = capsys.readouterr().out
    assert stop.value.code == preemption.EXIT_CODE == 75
    assert len(steps) == at_step + 1, "steps were taken after the signal"
    last = stopped / pretrain.LAST_CHECKPOINT
    assert output.splitlines()[-1] == (f"stopped on {number.name}: {last} ({position}) holds the run; the same "
                                       f"command continues it (exit code 75)")
    assert signal.getsignal(number) is signal.SIG_DFL  # the handlers are put back

    monkeypatch.undo()
    pretrain.main(parse(pretrain_command(demo_data_16, stopped, *flags)))  # the same command again
    assert f"resumed from {last}: continuing at {resumes_at}\n" in capsys.readouterr().out
    assert_same_run(straight, stopped)


# ---------------------------------------------------------------------------------------------------------
# Signals from outside


def test_sigterm_to_every_process_of_a_run_stops_it_inside_the_epoch_and_the_rerun_ends_bit_identical(
        demo_data_64, straight_64, tmp_path):
    """As SLURM preempts: SIGTERM to the run's whole process group, its two DataLoader workers included (they
    must not die of it). Before, the run died of the signal (exit -15) and its epoch was trained again."""
    run_dir = tmp_path / "run"
    command = pretrain_command(demo_data_64, run_dir, *SIXTY_FOUR)
    with launched(command, tmp_path / "a.log") as victim:
        wait_for_progress(victim, tmp_path / "a.log", lambda epoch, done, total: 1 <= done <= total // 2)
        workers = descendants(victim.pid)
        assert len(workers) == 2, "the loader workers are not running"
        os.killpg(victim.pid, signal.SIGTERM)
        assert victim.wait(timeout=TIMEOUT) == preemption.EXIT_CODE
    output = (tmp_path / "a.log").read_text(errors="replace")
    saved = read_checkpoint(run_dir / pretrain.LAST_CHECKPOINT)
    epoch, steps = saved["epoch"], saved["progress"]["steps"]
    assert 1 <= steps < 32
    assert f"stopped on SIGTERM: {run_dir / pretrain.LAST_CHECKPOINT} (epoch {epoch}, step {steps})" in output
    assert "DataLoader worker" not in output  # no worker died of the signal

    returncode, output = run_to_end(command, tmp_path / "b.log")
    assert returncode == 0, output[-3000:]
    assert f"continuing at epoch {epoch}, step {steps} of 32" in output
    assert_same_run(straight_64, run_dir)


def worker_of_rank(torchrun_pid, rank):
    """The torchrun worker process of `rank` (its child whose environment says RANK=rank)."""
    for pid in descendants(torchrun_pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == torchrun_pid and f"RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no worker of rank {rank} under {torchrun_pid}")


def test_under_torchrun_a_signal_to_one_process_stops_every_process_and_the_restart_continues_from_the_folder(
        demo_data_64, two_process_seed, straight_two_processes, tmp_path):
    """Two Gloo processes seeded with --resume; SIGUSR1 reaches rank 1 only. Both stop after the same step (an
    all_reduce of the flag) with one checkpoint; the same command, --resume included, then continues from the
    run folder's checkpoint inside the epoch (before: from --resume again) and ends as an uninterrupted job."""
    job = tmp_path / "job"
    command = torchrun("pretrain.py", *two_process_command(demo_data_64, two_process_seed, job, "--workers", "0"))
    with launched(command, tmp_path / "job.log") as stopped:
        wait_for_progress(stopped, tmp_path / "job.log", lambda epoch, done, total: epoch == 1 and 1 <= done <= 4)
        os.kill(worker_of_rank(stopped.pid, 1), signal.SIGUSR1)
        assert stopped.wait(timeout=TIMEOUT) != 0  # torchrun reports its workers' exit code 75 as a failure
    output = (tmp_path / "job.log").read_text(errors="replace")
    assert re.search(r"exitcode\s*:\s*75", output), output[-3000:]
    saved = read_checkpoint(job / pretrain.LAST_CHECKPOINT)
    steps = saved["progress"]["steps"]
    assert saved["epoch"] == 1 and 1 <= steps < 8
    assert f"stopped on a signal to another process: {job / pretrain.LAST_CHECKPOINT} (epoch 1, step {steps})" \
        in output  # rank 0 prints, and rank 0 never received the signal

    returncode, output = run_to_end(command, tmp_path / "again.log")
    assert returncode == 0, output[-3000:]
    assert f"resumed from {job / pretrain.LAST_CHECKPOINT}: continuing at epoch 1, step {steps} of 8" in output
    assert_same_run(straight_two_processes, job)


# ---------------------------------------------------------------------------------------------------------
# The SLURM template


SBATCH = ROOT / "scripts" / "slurm_pretrain.sbatch"
STAND_INS = {
    # srun: record the arguments, drop srun's own options, run the task in its place (so it gets the signals).
    "srun": 'printf "%s\\n" "$@" > "$CALLS/srun"\nwhile [[ $1 == -* ]]; do shift; done\nexec "$@"\n',
    # torchrun: record the arguments, then run the script as one process in its place.
    "torchrun": 'printf "%s\\n" "$@" > "$CALLS/torchrun"\nwhile [[ $1 == -* ]]; do shift; done\n'
                'exec "$PYTHON" "$@"\n',
    "scontrol": 'echo "$*" >> "$CALLS/scontrol"\n[ "$1 $2" = "show hostnames" ] && echo node-a\nexit 0\n',
}


@pytest.fixture
def slurm(tmp_path):
    """An environment with stand-in srun, torchrun and scontrol first on PATH, and what SLURM sets for a job."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {**ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls), "PYTHON": sys.executable,
           "SLURM_JOB_ID": "4242", "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "node-a", "SLURM_GPUS_ON_NODE": "4",
           "SLURM_SUBMIT_DIR": str(ROOT)}
    return env, calls


def test_the_sbatch_header_asks_for_the_warning_signal_and_requeueing():
    lines = SBATCH.read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    directives = [line.split(None, 1)[1] for line in lines if line.startswith("#SBATCH")]
    assert all(lines.index(f"#SBATCH {d}") < first_command for d in directives)  # sbatch reads no further
    assert "--signal=B:USR1@120" in directives and "--requeue" in directives


def test_the_sbatch_template_forwards_the_warning_signal_requeues_and_the_requeued_job_ends_bit_identical(
        demo_data_64, straight_64, tmp_path, slurm):
    env, calls = slurm
    run_dir = tmp_path / "run"
    flags = pretrain_command(demo_data_64, run_dir, *SIXTY_FOUR)[2:]
    command = ["bash", str(SBATCH), "demo", "cross_subject", *flags]
    log = tmp_path / "job.log"
    with launched(command, log, env, cwd=tmp_path) as job:
        wait_for_progress(job, log, lambda epoch, done, total: 1 <= done <= total // 2)
        os.kill(job.pid, signal.SIGUSR1)  # --signal=B:USR1: the batch shell only
        assert job.wait(timeout=TIMEOUT) == preemption.EXIT_CODE, log.read_text(errors="replace")[-3000:]
    output = log.read_text(errors="replace")
    assert "SIGUSR1 (time limit near): asking pretraining to checkpoint and stop; job 4242 will be requeued" in output
    assert f"stopped on SIGUSR1: {run_dir / pretrain.LAST_CHECKPOINT}" in output
    assert (calls / "scontrol").read_text().splitlines() == ["show hostnames node-a", "requeue 4242"]

    srun = (calls / "srun").read_text().splitlines()
    assert srun[:2] == ["--kill-on-bad-exit=1", "torchrun"]
    launcher = (calls / "torchrun").read_text().splitlines()
    script = launcher.index("pretrain.py")
    assert launcher[:script] == [
        "--nnodes=1", "--nproc_per_node=4", "--rdzv-backend=c10d", "--rdzv-endpoint=node-a:29500",
        "--rdzv-id=4242", "--max-restarts=3", "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        "--shutdown-timeout=110"]
    assert srun[2:] == launcher
    assert launcher[script:] == ["pretrain.py", "--pre-dataset", "demo", "--protocol", "cross_subject",
                                 "--checkpoint-path", "./checkpoints/demo_cross_subject", "--workers", "8", *flags]
    from torch.distributed.run import get_args_parser
    parsed = get_args_parser().parse_args(launcher)  # the pinned torch's torchrun takes every option
    assert parsed.signals_to_handle.endswith("SIGUSR1") and parsed.training_script == "pretrain.py"

    # The requeued job: the same script and arguments, run to its end.
    returncode, output = run_to_end(command, tmp_path / "requeued.log", env=env)
    assert returncode == 0, output[-3000:]
    assert f"resumed from {run_dir / pretrain.LAST_CHECKPOINT}: continuing at epoch" in output
    assert (calls / "scontrol").read_text().splitlines()[-1] == "show hostnames node-a"  # no requeue this time
    assert_same_run(straight_64, run_dir)


# ---------------------------------------------------------------------------------------------------------
# Blow-ups


def test_a_non_finite_state_at_an_epoch_end_is_never_saved_and_the_message_names_the_good_checkpoint(
        demo_data_16, tmp_path, monkeypatch, capsys):
    """NaN weights after the last step of epoch 1 (of 3). Before, they were written over checkpoint_last and
    checkpoint_0001 while the message claimed the last checkpoint intact; every restart then stopped at once."""
    run_dir = tmp_path / "run"
    flags = ["--epochs", "3", "--batch-size", "8", "--workers", "0", "--seed", "3", "--save-freq", "1"]
    real_epoch = pretrain.train_one_epoch

    def blows_up_in_epoch_one(model, loader, optimizer, scaler, epoch, *args, **kwargs):
        progress = real_epoch(model, loader, optimizer, scaler, epoch, *args, **kwargs)
        if epoch == 1:
            with torch.no_grad():
                next(model.parameters())[0] = float("nan")
        return progress

    monkeypatch.setattr(pretrain, "train_one_epoch", blows_up_in_epoch_one)
    with pytest.raises(SystemExit) as stop:
        pretrain.main(parse(pretrain_command(demo_data_16, run_dir, *flags)))
    assert stop.value.code == 1
    last = run_dir / pretrain.LAST_CHECKPOINT
    message = capsys.readouterr().out.splitlines()[-1]
    assert message == (f"error: non-finite values in backbone.j_emb.t_embedding.0.weight (end of epoch 1)"
                       f": nothing saved; the latest good checkpoint is {last} (end of epoch 0)")
    assert checkpoint_names(run_dir) == ["checkpoint_0000.pth.tar", "checkpoint_last.pth.tar"]
    saved = read_checkpoint(last)
    assert saved["epoch"] == 1 and all(torch.isfinite(t).all() for t in saved["state_dict"].values())

    monkeypatch.undo()
    pretrain.main(parse(pretrain_command(demo_data_16, run_dir, *flags)))  # a restart from the good state goes on
    assert logged_epochs(run_dir) == [0, 1, 2]


def test_a_non_finite_loss_names_the_latest_good_checkpoint(demo_data_16, tmp_path, monkeypatch, capsys):
    seed, run_dir = tmp_path / "seed", tmp_path / "run"
    flags = ["--batch-size", "8", "--workers", "0", "--seed", "3"]
    pretrain.main(parse(pretrain_command(demo_data_16, seed, *flags, "--epochs", "1")))
    real_loss = pretrain.umurl_loss
    monkeypatch.setattr(pretrain, "umurl_loss", lambda z, *w: (real_loss(z)[0] * float("nan"), real_loss(z)[1]))
    with pytest.raises(SystemExit):
        pretrain.main(parse(pretrain_command(demo_data_16, run_dir, *flags, "--epochs", "2", "--resume",
                                             str(seed / pretrain.LAST_CHECKPOINT))))
    # Nothing written in the new folder yet: the good state is the checkpoint it was seeded from.
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"error: non-finite loss (nan) at epoch 1, step 0: stopping; the latest good checkpoint is "
        f"{seed / pretrain.LAST_CHECKPOINT} (end of epoch 0)")
