"""The pretraining run folder: one run at a time, where a start continues from, and what each start ran with.

- `RunLock`: an OS-level lock (flock) on `run.lock`, taken at start-up by rank 0. The lock dies with
  the process that holds it (crash, SIGKILL, node reboot), so a dead run never blocks the next one;
  a live one refuses a second run on the folder, naming its host, pid and start time.
- `resume_source`: a run folder that holds a state continues from it, whatever --resume says;
  --resume only seeds a folder that has none (a restart must never go back to where the run began).
- `config_changes`: the settings that change what a run computes, compared between the checkpoint
  and the new command line; a resume that changes one is refused unless --allow-config-change.
- config.json records how the run began and is never replaced once the run has a state; every start
  that continues from a checkpoint appends what it ran with to `resumes.jsonl`.
"""
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

import utils

LOCK_NAME = "run.lock"
RESUMES_NAME = "resumes.jsonl"
# What save_atomic and utils.truncate_log leave behind when killed mid-write.
STALE_TEMPORARIES = (".checkpoint_*.tmp", "log.jsonl.tmp")

# Settings that change what the run computes: a resume that changes one is refused by default.
# (--epochs only moves where the run ends under the step schedule; with --cos it reshapes every lr.)
RESULT_SETTINGS = ("dataset", "protocol", "batch_size", "lr", "schedule", "cos", "weight_decay", "seed",
                   "hidden_size", "num_head", "num_layer", "projector_dim", "min_crop_length", "view",
                   "loss_weights", "augment_on_device",
                   "train_samples", "train_names_sha256")


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder."""


class RunLock:
    """An exclusive flock on `<folder>/run.lock`, released when this process ends, however it ends.

    The file holds who has it (host, pid, start time), for the message that refuses a second run. The
    file itself stays; only the kernel's lock on it counts, so a file left by a dead run is harmless.
    """

    _held = None  # the descriptor of the lock this process holds (DataLoader workers forked from it close theirs)

    def __init__(self, folder):
        self.path = Path(folder) / LOCK_NAME
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFolderBusy(
                    f"{Path(folder)} is in use by another pretraining run ({holder_text(self.path)}); wait for it "
                    f"to end or stop it, or give this run another --checkpoint-path") from None
            # A file system without locks (e.g. Lustre mounted without -o flock): run, but say so.
            print(f"warning: cannot lock {self.path} ({error.strerror}); make sure no other run uses this folder",
                  flush=True)
            self.fd = None
            return
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        self.fd = RunLock._held = fd

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = RunLock._held = None

    @staticmethod
    def forget_in_child():
        """In a process forked from the holder: close the inherited descriptor, so that the lock ends with
        the holder rather than with its last DataLoader worker. (Closing is all it does: a child must never
        unlock, which would release the holder's lock too.)"""
        if RunLock._held is not None:
            os.close(RunLock._held)
            RunLock._held = None


def holder_text(lock_path):
    """'host H, pid P, started S' from a lock file, or what is known when it cannot be read yet."""
    try:
        holder = json.loads(Path(lock_path).read_text())
        return f"host {holder['host']}, pid {holder['pid']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not recorded yet: it is starting"


def remove_stale_temporaries(folder):
    """Delete the temporaries a killed write left in the run folder; call only while holding its lock
    (then no live process of this run is writing them). Returns the names removed."""
    removed = []
    for pattern in STALE_TEMPORARIES:
        for path in Path(folder).glob(pattern):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return sorted(removed)


def resume_source(run_dir, last_name, resume_flag):
    """The checkpoint a start continues from: the run folder's own latest state when it has one (so a
    restart never goes back to where the run began), else --resume (seeding a new run folder), else None."""
    last = Path(run_dir) / last_name
    if last.exists():
        return last
    return resume_flag


def data_fingerprint(names):
    """The prepared training split, recognisably: its sample count and a hash of its sample names in order."""
    digest = hashlib.sha256("\n".join(map(str, names)).encode()).hexdigest()[:16]
    return {"train_samples": len(names), "train_names_sha256": digest}


def config_changes(old, new):
    """The result-changing settings that differ between a checkpoint's configuration and this run's:
    [(name, old value, new value)]. --epochs counts only under a cosine schedule (see RESULT_SETTINGS).
    Settings that the checkpoint does not record (written by an older version) are not compared."""
    names = RESULT_SETTINGS + (("epochs",) if old.get("cos") or new.get("cos") else ())
    return [(name, old[name], new.get(name)) for name in names if name in old and old[name] != new.get(name)]


def describe_changes(changes):
    """'lr 0.0005 -> 0.001, view.num_corrupt 15 -> 10': of a setting that is a dict (view, loss_weights)
    only the entries that differ, rather than the whole dict twice."""
    parts = []
    for name, old, new in changes:
        if isinstance(old, dict) and isinstance(new, dict):
            keys = [*old, *(key for key in new if key not in old)]
            parts += [f"{name}.{key} {old.get(key)!r} -> {new.get(key)!r}" for key in keys
                      if old.get(key) != new.get(key)]
        else:
            parts.append(f"{name} {old!r} -> {new!r}")
    return ", ".join(parts)


def write_config_once(folder, config, has_state):
    """config.json: the configuration, command line and code revision the run began with. Written when
    the folder has no training state yet (an earlier start that trained nothing is replaced); never
    after, so later starts cannot hide how the run began."""
    if not (has_state and (Path(folder) / "config.json").exists()):
        utils.write_config(folder, config)


def record_resume(folder, source, epoch, step, config, changes):
    """Append one line to resumes.jsonl: when, from which checkpoint and where in it, with which command,
    code and configuration, and which result-changing settings differ (allowed by --allow-config-change)."""
    record = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "from": str(source), "epoch": epoch, "step": step,
              "changes": [{"setting": name, "old": old, "new": new} for name, old, new in changes],
              "command": [sys.executable, *sys.argv], "git": utils.git_revision(), "config": config}
    with open(Path(folder) / RESUMES_NAME, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
