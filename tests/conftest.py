"""Shared test helpers: the golden numbers, tiny demo data, processes that never outlive a test, and the
uninterrupted reference runs several test files compare against (computed once per session)."""
import io
import json
import lzma
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"  # where the numbers come from: golden/README.md
sys.path.insert(0, str(ROOT))

from benchmarks.common import torch_threads  # noqa: E402
from checkpoint import read_checkpoint  # noqa: E402
from dataset import write_split  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# Golden numbers


@pytest.fixture(scope="session")
def fixtures_dir():
    """The folder of golden files: the raw NTU file, the released checkpoint's key list, the numbers."""
    return GOLDEN


@pytest.fixture(scope="session")
def golden(fixtures_dir):
    """The golden numbers (see golden/README.md), xz-compressed, a fifth smaller than the plain torch file."""
    import torch

    with lzma.open(fixtures_dir / "umurl_golden.pt.xz") as compressed:
        return torch.load(io.BytesIO(compressed.read()), weights_only=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Runs inside the test process use one thread, like the subprocesses the same tests start: on a busy
    2-core machine two spinning threads per run make in-process runs several times slower. Use with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    with torch_threads(1):
        yield


# ---------------------------------------------------------------------------------------------------------
# Tiny pretraining runs on random data

TINY_RUN = ["--hidden-size", "16", "--projector-dim", "32", "--pre-dataset", "demo", "--device", "cpu"]


def make_demo_data(root, num_train=16, num_val=8, seed=0):
    """A random dataset in the released layout under root/demo/xsub (enough for plumbing tests)."""
    rng = np.random.default_rng(seed)
    for part, n in (("train", num_train), ("val", num_val)):
        data = rng.standard_normal((n, 3, 80, 25, 2)).astype(np.float32)
        write_split(root / "demo" / "xsub", part, data, rng.integers(10, 80, n), [f"S{i:03d}" for i in range(n)],
                    np.arange(n) % 4)
    return root


def pretrain_command(data_root, run_dir, *extra):
    """The command line of a tiny pretraining run (argv[2:] is what build_parser parses)."""
    return [sys.executable, "pretrain.py", *TINY_RUN, "--data-root", str(data_root), "--checkpoint-path",
            str(run_dir), *extra]


def pretrain_in_process(command):
    """Run a pretrain_command inside the test process (no interpreter start-up to pay)."""
    import pretrain
    from options.pretrain import build_parser

    pretrain.main(build_parser().parse_args(command[2:]))


def torchrun(*args):
    # --standalone picks a free port itself (--master_port=0 hangs).
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]


def epoch_losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def logged_epochs(run_dir):
    return [json.loads(line)["epoch"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def checkpoint_names(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint"))


def assert_same_training_state(a, b):
    """Two checkpoint files hold bit-identical weights, optimizer state and epoch."""
    import torch

    first, second = read_checkpoint(a), read_checkpoint(b)
    assert first["epoch"] == second["epoch"]
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), f"{key} differs"
    for index, state in first["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(second["optimizer"]["state"][index][name])), \
                f"optimizer state {index}.{name} differs"


@pytest.fixture(scope="session")
def demo_data_16(tmp_path_factory):
    """16 training samples: two steps of 8 an epoch."""
    return make_demo_data(tmp_path_factory.mktemp("demo16"))


@pytest.fixture(scope="session")
def demo_data_64(tmp_path_factory):
    """64 training samples: in batches of 2 an epoch takes 32 steps, long enough to act inside one."""
    return make_demo_data(tmp_path_factory.mktemp("demo64"), num_train=64)


# The run that signal, kill and restart tests interrupt from outside, and its uninterrupted reference.
SIXTY_FOUR = ["--epochs", "2", "--batch-size", "2", "--workers", "2", "--seed", "13"]


@pytest.fixture(scope="session")
def straight_64(demo_data_64, tmp_path_factory):
    """An uninterrupted SIXTY_FOUR run (one torch thread, as the runs it is compared with)."""
    run_dir = tmp_path_factory.mktemp("straight64")
    with torch_threads(1):
        pretrain_in_process(pretrain_command(demo_data_64, run_dir, *SIXTY_FOUR))
    return run_dir


# Two Gloo processes seeded with --resume from one epoch trained in this process; global batch 8, so 8 steps
# an epoch. Elastic restarts and stop signals under torchrun interrupt it from outside.
TWO_PROCESS_FLAGS = ["--batch-size", "8", "--seed", "5"]
TWO_PROCESS_EPOCHS = 3


@pytest.fixture(scope="session")
def two_process_seed(demo_data_64, tmp_path_factory):
    """The checkpoint the two-process runs start from (--resume): epoch 0, trained in this process."""
    run_dir = tmp_path_factory.mktemp("two_process_seed")
    with torch_threads(1):
        pretrain_in_process(pretrain_command(demo_data_64, run_dir, *TWO_PROCESS_FLAGS, "--workers", "0",
                                             "--epochs", "1"))
    return run_dir / "checkpoint_last.pth.tar"


def two_process_command(demo_data_64, seed, run_dir, *extra):
    """The pretrain.py arguments (after the script name) of a seeded two-process run, epochs 1 and 2."""
    return pretrain_command(demo_data_64, run_dir, *TWO_PROCESS_FLAGS, "--epochs", str(TWO_PROCESS_EPOCHS),
                            "--resume", str(seed), *extra)[2:]


@pytest.fixture(scope="session")
def straight_two_processes(demo_data_64, two_process_seed, tmp_path_factory):
    """The uninterrupted two-process run, the reference of every interrupted one. Launched through
    tests/gloo_teardown.py, which runs pretrain.main unchanged and then reports, in the log beside the run
    folder, the Gloo threads each process has left (test_reliability checks there are none)."""
    folder = tmp_path_factory.mktemp("straight_two_processes")
    run_dir = folder / "run"
    returncode, output = run_to_end(
        torchrun("tests/gloo_teardown.py",
                 *two_process_command(demo_data_64, two_process_seed, run_dir, "--workers", "0")),
        folder / "log")
    assert returncode == 0, output[-3000:]
    return run_dir


# ---------------------------------------------------------------------------------------------------------
# Processes that never outlive the test

# One thread per process in every run that is compared bit for bit (torchrun sets the same).
# UMURL_PROGRESS_BARS: the runs' logs are files, and the tests time their faults by the progress bars.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "UMURL_PROGRESS_BARS": "1"}
TIMEOUT = 150  # seconds; far above the 5-30 s each run takes even on a busy 2-core machine: stops a hang
PROGRESS = re.compile(rb"epoch (\d+): +\d+%\|[^|\r\n]*\| *(\d+)/(\d+)")  # a tqdm line: epoch, steps done, total


def descendants(pid):
    """The ids of every process below `pid`, read from /proc (Linux)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # "pid (name) state ppid ..."
        except (OSError, IndexError, ValueError):  # the process ended while we looked
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid):
    """SIGKILL `pid`, every process below it, and their process groups.

    Process groups alone are not enough: torchrun starts each worker in a session of its own, so
    killing torchrun's group would orphan the workers (and their DataLoader workers).
    """
    for target in [pid, *descendants(pid)]:
        for kill in (os.killpg, os.kill):
            try:
                kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # already gone, or not a group leader
                pass


@contextmanager
def launched(command, log, env=None, cwd=ROOT):
    """Start `command` in a new session, stdout and stderr into `log`; on exit kill it and all it started.

    Nothing survives the test, whether it passed, failed or timed out.
    """
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env or ENV, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        # Only while it runs (or is an unreaped zombie) is its id sure to be still its own.
        if process.poll() is None:
            kill_tree(process.pid)
        process.wait(timeout=30)


def run_to_end(command, log, env=None, cwd=ROOT):
    """Run `command` to completion (within TIMEOUT); returns (exit code, its output as text)."""
    with launched(command, log, env, cwd) as process:
        returncode = process.wait(timeout=TIMEOUT)
    return returncode, Path(log).read_text(errors="replace")


def wait_for_progress(process, log, accept):
    """Poll a run's progress bars until accept(epoch, steps done, steps per epoch) holds; return that epoch."""
    deadline = time.monotonic() + TIMEOUT  # a hang guard, not a speed requirement
    while True:
        assert process.poll() is None, f"the run ended first:\n{Path(log).read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, "no progress seen"
        progress = PROGRESS.findall(Path(log).read_bytes())
        if progress and accept(*map(int, progress[-1])):
            return int(progress[-1][0])
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# In-process pretraining runs: straight, interrupted and resumed
# ---------------------------------------------------------------------------------------------

def run_args(data_root, run_dir, *extra):
    """pretrain.py's parsed arguments for a tiny run on `data_root` into `run_dir`."""
    from options.pretrain import build_parser

    return build_parser().parse_args([*TINY_RUN, "--data-root", str(data_root), "--checkpoint-path", str(run_dir),
                                      *extra])


def without_zero_gradient_entries(key, a, b):
    """Drop the entries whose gradient is zero in exact arithmetic, so rounding noise decides its sign.

    Adam's first step moves every weight by about lr * sign(gradient), so on those entries two
    correct runs differ by 2 lr. They are the key bias of attention (adding a constant to every key
    leaves the softmax unchanged), and every bias that shifts all samples of the batch alike right
    before a BatchNorm, which subtracts the batch mean: the projector Linears' biases and the encoder's
    last LayerNorm bias (a constant on every token survives max-pooling and reaches the projectors'
    first BatchNorm through a Linear).
    """
    if key.endswith("self_attn.in_proj_bias"):
        third = a.shape[0] // 3
        keep = torch.ones_like(a, dtype=torch.bool)
        keep[third:2 * third] = False
        return a[keep], b[keep]
    if ("projector" in key and key.endswith((".0.bias", ".3.bias"))) or key.endswith("layers.0.norm2.bias"):
        return a[:0], b[:0]
    return a, b


class Interrupted(Exception):
    pass


def straight_and_resumed(data_root, tmp_path, extra, monkeypatch):
    """Run `extra` straight through, and again interrupted in epoch 2 then started again with the same
    command; returns both run folders (for 3-epoch runs)."""
    import pretrain

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain.main(run_args(data_root, straight, *extra))
    real_epoch, calls = pretrain.train_one_epoch, []

    def dies_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted("killed during epoch 2")
        return real_epoch(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(pretrain, "train_one_epoch", dies_in_epoch_two)
        with pytest.raises(Interrupted):
            pretrain.main(run_args(data_root, resumed, *extra))
    assert read_checkpoint(resumed / "checkpoint_last.pth.tar")["epoch"] == 2
    pretrain.main(run_args(data_root, resumed, *extra))  # the same command again: resumes by itself
    return straight, resumed
