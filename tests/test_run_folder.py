"""run_folder.py and what pretrain.py does with it: one live run per folder, restarts that continue from the
folder's own state, refused configuration changes, resumes.jsonl, file permissions, stale temporaries."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import preemption
import pretrain
import run_folder
from checkpoint import read_checkpoint, save_atomic
from conftest import (ROOT, assert_same_training_state, epoch_losses, launched, pretrain_command, wait_for_progress)
from dataset import write_split
from options.pretrain import build_parser

SHORT = ["--batch-size", "8", "--workers", "0", "--seed", "3"]


def parse(data_root, run_dir, *extra):
    return build_parser().parse_args(pretrain_command(data_root, run_dir, *SHORT, *extra)[2:])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def data_root(demo_data_16):
    return demo_data_16  # 16 samples: two steps of 8 an epoch


# ---------------------------------------------------------------------------------------------------------
# Pure functions


BASE = {"dataset": "ntu60", "protocol": "cross_subject", "batch_size": 512, "lr": 5e-4, "schedule": [351],
        "cos": False, "weight_decay": 1e-5, "seed": 0, "hidden_size": 1024, "num_head": 8, "num_layer": 1,
        "projector_dim": 4096, "min_crop_length": 64, "augment_on_device": False, "epochs": 451,
        "train_samples": 40091, "train_names_sha256": "0123456789abcdef", "workers": 8, "device": "cuda:0",
        "world_size": 4, "checkpoint_path": "runs/a", "data_root": "/data"}


def test_config_changes_lists_the_result_changing_settings_only():
    assert run_folder.config_changes(BASE, dict(BASE)) == []
    new = {**BASE, "lr": 1e-3, "batch_size": 256, "workers": 2, "device": "cpu", "world_size": 1,
           "checkpoint_path": "moved", "data_root": "/elsewhere"}
    assert run_folder.config_changes(BASE, new) == [("batch_size", 512, 256), ("lr", 5e-4, 1e-3)]
    assert run_folder.config_changes(BASE, {**BASE, "train_names_sha256": "fedcba9876543210"}) == [
        ("train_names_sha256", "0123456789abcdef", "fedcba9876543210")]
    assert run_folder.describe_changes([("lr", 5e-4, 1e-3)]) == "lr 0.0005 -> 0.001"
    # A dict-valued setting names only the entries that differ (and one that only one side has).
    view = {"clip_length": 64, "num_corrupt": 15, "shear_magnitude": 0.5}
    assert run_folder.describe_changes([("view", view, {**view, "num_corrupt": 10, "new_key": 1}),
                                        ("lr", 5e-4, 1e-3)]) == \
        "view.num_corrupt 15 -> 10, view.new_key None -> 1, lr 0.0005 -> 0.001"


def test_more_epochs_change_the_result_only_under_a_cosine_schedule():
    # The step schedule's lr of an epoch does not depend on the total, so training longer is a legitimate
    # resume; a cosine schedule spreads over --epochs, so there a new total changes every remaining lr.
    assert run_folder.config_changes(BASE, {**BASE, "epochs": 600}) == []
    cosine = {**BASE, "cos": True}
    assert run_folder.config_changes(cosine, {**cosine, "epochs": 600}) == [("epochs", 451, 600)]
    assert ("epochs", 451, 600) in run_folder.config_changes(BASE, {**cosine, "epochs": 600})


def test_settings_a_checkpoint_does_not_record_are_not_compared():
    older = {key: value for key, value in BASE.items() if not key.startswith("train_")}
    assert run_folder.config_changes(older, BASE) == []
    assert run_folder.config_changes(BASE, older) == [("train_samples", 40091, None),
                                                      ("train_names_sha256", "0123456789abcdef", None)]


def test_data_fingerprint_follows_the_names_and_their_order():
    names = [f"S{i:03d}" for i in range(5)]
    fingerprint = run_folder.data_fingerprint(names)
    assert fingerprint["train_samples"] == 5 and len(fingerprint["train_names_sha256"]) == 16
    assert run_folder.data_fingerprint(list(names)) == fingerprint
    assert run_folder.data_fingerprint(names[::-1])["train_names_sha256"] != fingerprint["train_names_sha256"]
    assert run_folder.data_fingerprint(names[:4])["train_samples"] == 4


def test_resume_source_prefers_the_run_folder_s_own_state(tmp_path):
    seed = tmp_path / "seed.pth.tar"
    assert run_folder.resume_source(tmp_path, "last.pth", None) is None
    assert run_folder.resume_source(tmp_path, "last.pth", seed) == seed
    (tmp_path / "last.pth").write_bytes(b"")
    assert run_folder.resume_source(tmp_path, "last.pth", seed) == tmp_path / "last.pth"
    assert run_folder.resume_source(tmp_path, "last.pth", None) == tmp_path / "last.pth"


# ---------------------------------------------------------------------------------------------------------
# Restarts continue from the folder's latest state


def test_a_restart_with_resume_continues_from_the_run_folder_not_from_the_seed(data_root, tmp_path, monkeypatch,
                                                                             capsys):
    """--resume seeds a new folder; the same command started again after a crash continues from the folder's
    checkpoint_last. Before, it went back to the seed and silently trained every epoch since again."""
    seed, straight, job = tmp_path / "seed", tmp_path / "straight", tmp_path / "job"
    pretrain.main(parse(data_root, seed, "--epochs", "1"))
    pretrain.main(parse(data_root, straight, "--epochs", "3"))
    command = parse(data_root, job, "--epochs", "3", "--resume", str(seed / pretrain.LAST_CHECKPOINT))

    real_epoch, trained = pretrain.train_one_epoch, []

    def crashes_in_epoch_two(model, loader, optimizer, scaler, epoch, *args, **kwargs):
        trained.append(epoch)
        if epoch == 2 and trained.count(2) == 1:
            raise KeyboardInterrupt("killed in epoch 2")
        return real_epoch(model, loader, optimizer, scaler, epoch, *args, **kwargs)

    monkeypatch.setattr(pretrain, "train_one_epoch", crashes_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain.main(command)
    assert trained == [1, 2]
    capsys.readouterr()
    pretrain.main(command)  # the same command again, --resume included
    output = capsys.readouterr().out
    assert trained == [1, 2, 2], "the restart trained again what the folder already held"
    assert f"resumed from {job / pretrain.LAST_CHECKPOINT}: continuing at epoch 2" in output
    assert f"not from --resume {seed / pretrain.LAST_CHECKPOINT}" in output
    assert epoch_losses(job) == epoch_losses(straight)[1:]
    assert_same_training_state(straight / pretrain.LAST_CHECKPOINT, job / pretrain.LAST_CHECKPOINT)
    resumes = [json.loads(line) for line in (job / "resumes.jsonl").read_text().splitlines()]
    assert [(r["from"], r["epoch"]) for r in resumes] == [(str(seed / pretrain.LAST_CHECKPOINT), 1),
                                                          (str(job / pretrain.LAST_CHECKPOINT), 2)]


# ---------------------------------------------------------------------------------------------------------
# Configuration changes on resume


def test_a_resume_with_result_changing_settings_is_refused_and_allowed_only_on_request(data_root, tmp_path):
    run_dir = tmp_path / "run"
    pretrain.main(parse(data_root, run_dir, "--epochs", "1"))
    config_json = (run_dir / "config.json").read_text()
    before = read_checkpoint(run_dir / pretrain.LAST_CHECKPOINT)

    changed = ["--epochs", "2", "--lr", "0.001", "--seed", "4"]
    with pytest.raises(SystemExit) as refused:
        pretrain.main(parse(data_root, run_dir, *changed))
    message = str(refused.value)
    assert "lr 0.0005 -> 0.001, seed 3 -> 4" in message and "--allow-config-change" in message
    assert "epochs" not in message  # training longer is not a change of result under the step schedule
    assert not (run_dir / "resumes.jsonl").exists() and len(epoch_losses(run_dir)) == 1
    assert read_checkpoint(run_dir / pretrain.LAST_CHECKPOINT)["epoch"] == before["epoch"]

    pretrain.main(parse(data_root, run_dir, *changed, "--allow-config-change"))
    assert len(epoch_losses(run_dir)) == 2
    assert (run_dir / "config.json").read_text() == config_json  # how the run began stays
    (record,) = [json.loads(line) for line in (run_dir / "resumes.jsonl").read_text().splitlines()]
    assert record["changes"] == [{"setting": "lr", "old": 5e-4, "new": 1e-3}, {"setting": "seed", "old": 3, "new": 4}]
    assert record["epoch"] == 1 and record["config"]["lr"] == 1e-3 and record["config"]["allow_config_change"]
    assert read_checkpoint(run_dir / pretrain.LAST_CHECKPOINT)["config"]["lr"] == 1e-3  # the next resume's reference


def training_split(root, names):
    """A demo train split whose samples carry `names` (the data itself random)."""
    rng = np.random.default_rng(0)
    n = len(names)
    write_split(root / "demo" / "xsub", "train", rng.standard_normal((n, 3, 80, 25, 2)).astype(np.float32),
                rng.integers(10, 80, n), names, np.arange(n) % 4)
    return root


def test_a_resume_on_other_prepared_data_is_refused(tmp_path):
    names = [f"S{i:03d}" for i in range(16)]
    run_dir = tmp_path / "run"
    pretrain.main(parse(training_split(tmp_path / "data", names), run_dir, "--epochs", "1"))
    renamed = training_split(tmp_path / "renamed", [f"X{i:03d}" for i in range(16)])
    with pytest.raises(SystemExit, match=r"train_names_sha256 '[0-9a-f]{16}' -> '[0-9a-f]{16}'"):
        pretrain.main(parse(renamed, run_dir, "--epochs", "2"))
    fewer = training_split(tmp_path / "fewer", names[:12])
    with pytest.raises(SystemExit, match="train_samples 16 -> 12, train_names_sha256"):
        pretrain.main(parse(fewer, run_dir, "--epochs", "2"))
    pretrain.main(parse(training_split(tmp_path / "moved", names), run_dir, "--epochs", "2"))  # moved, not changed
    assert len(epoch_losses(run_dir)) == 2


# ---------------------------------------------------------------------------------------------------------
# One run folder, one run


def test_a_second_run_on_a_live_run_s_folder_is_refused_naming_it_and_a_killed_run_never_blocks(demo_data_16, tmp_path):
    """Before, both runs went on (each exit code 0), interleaved their logs and replaced each other's checkpoints.
    The holder is SIGKILLed alone while its DataLoader worker lives on for seconds: the lock must die with it."""
    run_dir = tmp_path / "run"
    # 16 samples in batches of 2: 8 steps an epoch, 50 epochs: alive for as long as the test needs.
    command = pretrain_command(demo_data_16, run_dir, "--epochs", "50", "--batch-size", "2", "--workers", "1",
                               "--seed", "3")
    with launched(command, tmp_path / "holder.log") as holder:
        try:
            wait_for_progress(holder, tmp_path / "holder.log", lambda epoch, done, total: done > 0)  # its worker runs
            with pytest.raises(SystemExit) as refused:
                pretrain.main(build_parser().parse_args(command[2:]))
            message = str(refused.value)
            assert message.startswith(f"{run_dir} is in use by another pretraining run (host {socket.gethostname()}, "
                                      f"pid {holder.pid}, started 20")
            assert "--checkpoint-path" in message
            assert not (run_dir / "log.jsonl").exists()

            os.kill(holder.pid, signal.SIGKILL)  # the main process only, as the OOM killer would
            holder.wait(timeout=30)
            # At once, while the killed run's loader worker may still be alive (it notices within 5 s); the same
            # command, one epoch long so that the test stays short: nothing or one epoch left to train.
            pretrain.main(build_parser().parse_args([*command[2:], "--epochs", "1"]))
            assert json.loads((run_dir / run_folder.LOCK_NAME).read_text())["pid"] == os.getpid()
            assert (run_dir / pretrain.LAST_CHECKPOINT).exists()
        finally:
            try:
                os.killpg(holder.pid, signal.SIGKILL)  # its orphaned loader worker, if still there
            except ProcessLookupError:
                pass


def test_a_lock_file_left_by_a_dead_run_is_no_lock(data_root, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / run_folder.LOCK_NAME).write_text('{"host": "elsewhere", "pid": 1, "started": "2020-01-01"}\n')
    pretrain.main(parse(data_root, run_dir, "--epochs", "1"))
    holder = json.loads((run_dir / run_folder.LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()


def test_a_loader_worker_survives_the_stop_signals_and_lets_go_of_the_lock(tmp_path):
    """What init_loader_worker does in a DataLoader worker (whatever the start method: a spawned worker does not
    inherit the main process's handlers): SIGTERM and SIGUSR1 leave it running, and it closes its copy of the
    lock's descriptor, so that the lock ends with the main process."""
    lock = run_folder.RunLock(tmp_path)
    shield = torch.ones((), dtype=torch.bool).share_memory_()  # training runs (StopSignals.shield)
    try:
        child = os.fork()
        if child == 0:  # the worker: report by exit status, never return into pytest
            code = 1
            try:
                pretrain.init_loader_worker(shield, 0)
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGUSR1)
                try:
                    os.fstat(lock.fd)
                    code = 2  # still open
                except OSError:
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.WIFEXITED(status), f"the worker died of signal {os.WTERMSIG(status)}"
        assert os.WEXITSTATUS(status) == 0, "the worker kept the lock's descriptor open"
    finally:
        lock.release()


def test_a_file_system_without_locks_gets_a_warning_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_folder.fcntl, "flock", no_locks)
    lock = run_folder.RunLock(tmp_path)
    assert lock.fd is None
    assert capsys.readouterr().out == (f"warning: cannot lock {tmp_path / run_folder.LOCK_NAME} (No locks available); "
                                       f"make sure no other run uses this folder\n")
    lock.release()


def test_temporaries_of_a_write_killed_mid_checkpoint_are_removed_at_start_up(data_root, tmp_path, capsys):
    from test_reliability import run_forked_until_killed, save_and_die  # fault injection lives there

    run_dir = tmp_path / "run"
    pretrain.main(parse(data_root, run_dir, "--epochs", "1"))
    last = run_dir / pretrain.LAST_CHECKPOINT
    state = read_checkpoint(last)
    assert run_forked_until_killed(save_and_die, state, last, "in the middle of the data",
                                   last.stat().st_size) == -signal.SIGKILL
    (stale,) = run_dir.glob(".checkpoint_last.pth.tar.*.tmp")
    capsys.readouterr()
    pretrain.main(parse(data_root, run_dir, "--epochs", "2"))
    assert f"removed 1 temporary file(s) a killed write left in {run_dir}: {stale.name}" in capsys.readouterr().out
    assert not stale.exists() and not list(run_dir.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------------------
# Permissions


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoint_files_take_the_user_s_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        save_atomic({"epoch": 1}, tmp_path / "checkpoint.pth.tar")
    finally:
        os.umask(previous)
    assert (tmp_path / "checkpoint.pth.tar").stat().st_mode & 0o777 == mode


def test_every_file_of_a_run_folder_is_readable_by_the_group_under_umask_022(data_root, tmp_path):
    """Before, checkpoints were 0600 (mkstemp's mode): lab-mates on shared storage could not read them."""
    run_dir = tmp_path / "run"
    previous = os.umask(0o022)
    try:
        pretrain.main(parse(data_root, run_dir, "--epochs", "1"))
        pretrain.main(parse(data_root, run_dir, "--epochs", "2"))  # a resume: resumes.jsonl too
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(run_dir)): oct(p.stat().st_mode & 0o777) for p in run_dir.rglob("*") if p.is_file()}
    assert {"checkpoint_last.pth.tar", "checkpoint_0001.pth.tar", "log.jsonl", "config.json", "resumes.jsonl",
            "run.lock"} <= set(modes)
    assert set(modes.values()) == {"0o644"}, modes


def test_a_loader_worker_dies_of_sigterm_again_once_training_has_ended():
    """Once the main process has left training (StopSignals.shield cleared, also when an exception ended
    it), SIGTERM ends a worker: multiprocessing's exit handler terminates the workers with SIGTERM and waits
    for them, so a worker that ignored it for good made a crashed run hang at exit."""
    stop = preemption.StopSignals()
    child = os.fork()
    if child == 0:
        try:
            pretrain.init_loader_worker(stop.shield, 0)
            time.sleep(30)
        finally:
            os._exit(3)
    with stop:
        pass
    time.sleep(0.2)  # let the child install its handlers
    os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_a_crash_inside_training_with_loader_workers_exits_at_once(tmp_path):
    """An exception in the training loop with DataLoader workers must end the process, not leave it waiting
    on a worker that ignores the exit handler's SIGTERM."""
    script = tmp_path / "crash.py"
    script.write_text(f"""
import sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
from pathlib import Path
from conftest import make_demo_data
from conftest import run_args
import preemption
import pretrain
root = make_demo_data(Path({str(tmp_path / "data")!r}))
real, calls = pretrain.umurl_loss, []
def crash(z, *weights):
    calls.append(1)
    if len(calls) == 2:
        raise RuntimeError("injected crash")
    return real(z, *weights)
pretrain.umurl_loss = crash
pretrain.main(run_args(root, Path({str(tmp_path / "run")!r}), "--epochs", "1", "--batch-size", "4", "--workers", "1"))
""")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "injected crash" in result.stderr
