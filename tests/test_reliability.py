"""Reliability (GitHub issue 8): crashes, interrupted writes, elastic restarts, untrusted files, start-up checks.

Faults are injected for real wherever the guarantee is about processes: a pretraining process is
SIGKILLed mid-epoch (DataLoader workers and all), `save_atomic` and the preprocessing writer are
SIGKILLed at chosen points of a write (in a forked child, so no `finally` or `except` runs), and a
torchrun worker exits abruptly (tests/fault_injection.py). Each test checks what a user would see:
the files left behind, and that running the same command again finishes with the bits of an
uninterrupted run. Every process a test starts is killed with all it started (torchrun's workers
and DataLoader workers included) in a `finally`, so a failing test leaves no stray process.
"""
import ast
import json
import multiprocessing
import os
import pickle
import re
import signal
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import torch

import pretrain
from checkpoint import CheckpointError, read_checkpoint, save_atomic
from conftest import (ROOT, SIXTY_FOUR, TIMEOUT, assert_same_training_state, checkpoint_names, epoch_losses,
                      launched, logged_epochs, make_demo_data, pretrain_command, run_to_end, torchrun,
                      two_process_command, wait_for_progress)
from data_gen import common, ntu_gendata
from data_gen.synthetic import generate
from options.pretrain import build_parser
from safe_io import DataFileError, load_labels

STARTUP_TIMES = Path(tempfile.gettempdir()) / "umurl_startup_failures.json"


# ---------------------------------------------------------------------------------------------------------
# Helpers: what a crash does (process helpers and reference runs shared with other files are in conftest.py)


def die():
    """What a crash does: SIGKILL this process, so that no finally, except or atexit code runs."""
    os.kill(os.getpid(), signal.SIGKILL)


def run_forked_until_killed(target, *args):
    """Run target(*args) in a forked child that is expected to SIGKILL itself; returns its exit code."""
    child = multiprocessing.get_context("fork").Process(target=target, args=args)
    child.start()
    try:
        child.join(TIMEOUT)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    return child.exitcode


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------------------
# Crash and resume


def test_sigkilled_run_started_again_ends_with_the_uninterrupted_weights(demo_data_64, straight_64, tmp_path):
    """SIGKILL a run (and its DataLoader workers) inside an epoch after the first; the same command then
    resumes from checkpoint_last and ends bit-identical to a run that was never interrupted."""
    crashed = tmp_path / "crashed"
    command = pretrain_command(demo_data_64, crashed, *SIXTY_FOUR)
    with launched(command, tmp_path / "a.log") as victim:
        # Kill once an epoch >= 1 is under way and at most half done: it then has at least 16 steps
        # (a few hundred ms) left, far more than the time between reading its progress and the kill.
        killed_in = wait_for_progress(victim, tmp_path / "a.log",
                                      lambda epoch, done, total: epoch >= 1 and 1 <= done <= total // 2)
        os.killpg(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL

    # The kill landed inside epoch `killed_in`: the epochs before it are logged and checkpointed, it is not.
    assert logged_epochs(crashed) == list(range(killed_in))
    assert read_checkpoint(crashed / pretrain.LAST_CHECKPOINT)["epoch"] == killed_in

    returncode, output = run_to_end(command, tmp_path / "b.log")
    assert returncode == 0, output[-3000:]
    assert f"continuing at epoch {killed_in}" in output
    assert logged_epochs(crashed) == [0, 1]  # each epoch logged once
    assert epoch_losses(crashed) == epoch_losses(straight_64)
    assert checkpoint_names(crashed) == checkpoint_names(straight_64)
    for name in checkpoint_names(straight_64):
        assert_same_training_state(straight_64 / name, crashed / name)


class Killed(BaseException):
    """Stands in for SIGKILL inside this process: pretrain.py catches no BaseException and writes nothing
    on the way out, so the run folder is left exactly as a kill at that point would leave it."""


SHORT_RUN = ["--epochs", "2", "--batch-size", "8", "--workers", "0", "--seed", "3"]


@pytest.fixture(scope="module")
def uninterrupted_short_run(demo_data_16, tmp_path_factory):
    """The run folder of an uninterrupted SHORT_RUN: checkpoint_0000, checkpoint_0001 and checkpoint_last."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    pretrain.main(build_parser().parse_args(pretrain_command(demo_data_16, run_dir, *SHORT_RUN)[2:]))
    return run_dir


@pytest.mark.parametrize("when, write", [("before", 1), ("before", 2), ("after", 2), ("before", 4), ("after", 4)])
def test_a_crash_around_the_checkpoint_writes_leaves_a_run_that_completes_every_file(
        demo_data_16, uninterrupted_short_run, tmp_path, monkeypatch, when, write):
    """Crash just before or after the n-th checkpoint write of a 2-epoch run (each epoch: its log line,
    checkpoint_{epoch:04d}, checkpoint_last), start it again: every file and log line, exactly once.

    Found two bugs. checkpoint_last was written before the periodic checkpoint of the same epoch, so a
    crash between the two left checkpoint_last claiming an epoch whose checkpoint_{epoch:04d} (what the
    evaluation scripts load) was never written. And the log line came after both, so a crash before it
    lost that epoch's line for good; now it comes first and a resumed run drops the lines (and
    TensorBoard points) of epochs it redoes.
    """
    straight = uninterrupted_short_run
    real_save, writes = pretrain.save_atomic, []

    def crash_or_save(obj, path):
        if when == "before" and len(writes) + 1 == write:
            raise Killed(f"crashed after writing {writes}")
        real_save(obj, path)
        writes.append(Path(path).name)
        if when == "after" and len(writes) == write:
            raise Killed(f"crashed after writing {writes}")

    run_dir = tmp_path / "run"
    parsed = build_parser().parse_args(pretrain_command(demo_data_16, run_dir, *SHORT_RUN)[2:])
    monkeypatch.setattr(pretrain, "save_atomic", crash_or_save)
    with pytest.raises(Killed):
        pretrain.main(parsed)
    monkeypatch.undo()
    pretrain.main(parsed)  # the same command again

    assert checkpoint_names(run_dir) == checkpoint_names(straight), f"crashed after writing {writes}"
    for name in checkpoint_names(straight):
        assert_same_training_state(straight / name, run_dir / name)
    assert logged_epochs(run_dir) == [0, 1] and epoch_losses(run_dir) == epoch_losses(straight)


# ---------------------------------------------------------------------------------------------------------
# Interrupted writes


class DyingFile:
    """A file object that passes `limit` bytes through to `file`, then kills the process mid-write."""

    def __init__(self, file, limit):
        self.file, self.limit, self.written = file, limit, 0

    def write(self, data):
        room = self.limit - self.written
        if len(data) >= room:
            self.file.write(bytes(data[:room]))
            self.file.flush()
            die()
        self.written += len(data)
        return self.file.write(data)

    def flush(self):
        self.file.flush()


def save_and_die(obj, path, point, size):
    """Child process: save_atomic(obj, path), SIGKILLed at `point` of the write (size: bytes torch.save writes)."""
    import checkpoint
    import safe_io

    if point == "before the first byte":
        checkpoint.torch.save = lambda obj, file: die()
    elif point == "in the middle of the data":
        real_save = torch.save
        checkpoint.torch.save = lambda obj, file: real_save(obj, DyingFile(file, size // 2))
    elif point == "before fsync":
        safe_io.os.fsync = lambda fd: die()
    elif point == "before the rename":
        safe_io.os.replace = lambda source, target: die()
    elif point == "after the rename":
        real_replace = os.replace
        safe_io.os.replace = lambda source, target: (real_replace(source, target), die())
    save_atomic(obj, path)
    os._exit(0)  # reached only if the fault did not fire


@pytest.mark.parametrize("point", ["before the first byte", "in the middle of the data", "before fsync",
                                   "before the rename", "after the rename"])
def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint_intact(tmp_path, point):
    """SIGKILL save_atomic at each stage of replacing a checkpoint: the final name always holds a complete
    checkpoint (the previous one until the rename, the new one after it), and the next write works."""
    generator = torch.Generator().manual_seed(0)
    previous = {"epoch": 1, "weights": torch.randn(2**20, generator=generator)}  # 4 MB: many writes
    new = {"epoch": 2, "weights": torch.randn(2**20, generator=generator)}
    path = tmp_path / "checkpoint_last.pth.tar"
    save_atomic(previous, path)
    size = path.stat().st_size

    assert run_forked_until_killed(save_and_die, new, path, point, size) == -signal.SIGKILL

    survivor = read_checkpoint(path)  # complete and loadable, whatever the moment of the kill
    expected = new if point == "after the rename" else previous
    assert survivor["epoch"] == expected["epoch"] and torch.equal(survivor["weights"], expected["weights"])
    # Nothing half-written under a final name: only hidden temporaries may be left beside it.
    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert all(p.name.startswith(f".{path.name}.") and p.name.endswith(".tmp") for p in leftovers), leftovers
    if point == "in the middle of the data":  # the kill really hit a half-written file (under its temporary name)
        assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size < size
        with pytest.raises(CheckpointError):
            read_checkpoint(leftovers[0])
    save_atomic(new, path)  # and the next write succeeds
    assert read_checkpoint(path)["epoch"] == 2


def final_files(folder):
    """Files under `folder` with a final name (not a temporary)."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file() and ".tmp" not in p.name)


def gendata_and_die(raw, out, method, calls):
    """Child process: convert `raw`, SIGKILLed right after the `calls`-th call of PartWriter.`method`."""
    real, count = getattr(common.PartWriter, method), []

    def counted(self, *args):
        real(self, *args)
        count.append(1)
        if len(count) == calls:
            die()

    setattr(common.PartWriter, method, counted)
    ntu_gendata.gendata(raw, out, "ntu60", workers=1, chunk_size=2, progress=False)
    os._exit(0)  # reached only if the fault did not fire


def read_part(folder, part):
    """A written part through the project's own checked readers (which refuse a truncated file)."""
    from safe_io import load_frame_counts, open_joint_data

    data = np.array(open_joint_data(folder / f"{part}_data_joint.npy"))
    return data, load_frame_counts(folder / f"{part}_num_frame.npy", data.shape[2]), \
        load_labels(folder / f"{part}_label.pkl")


@pytest.fixture(scope="module")
def raw_and_reference(tmp_path_factory):
    """12 synthetic raw files and their conversion by an uninterrupted run."""
    raw = tmp_path_factory.mktemp("raw")
    generate(raw, num_classes=2, samples_per_class=6, seed=0)
    reference = tmp_path_factory.mktemp("reference")
    ntu_gendata.gendata(raw, reference, "ntu60", workers=1, chunk_size=2, progress=False)
    return raw, reference


@pytest.mark.parametrize("method, calls", [("write", 3), ("finish", 1), ("commit", 1)],
                         ids=["while writing rows", "after one part is finished", "after one part is renamed"])
def test_a_kill_during_preprocessing_leaves_nothing_final_looking_and_a_rerun_succeeds(
        raw_and_reference, tmp_path, method, calls):
    """SIGKILL ntu_gendata.gendata while it writes: no final-looking file until the renames, and the same
    command again writes exactly what an uninterrupted run writes."""
    raw, reference = raw_and_reference
    out = tmp_path / "out"
    assert run_forked_until_killed(gendata_and_die, raw, out, method, calls) == -signal.SIGKILL

    left = final_files(out)
    if method == "commit":
        # Parts are renamed one after the other (3 renames each, microseconds): a kill in between leaves
        # the parts already renamed, each complete, and the others under temporary names only.
        assert left == ["NTU-RGB-D-60-AGCN/xsub/train_data_joint.npy", "NTU-RGB-D-60-AGCN/xsub/train_label.pkl",
                        "NTU-RGB-D-60-AGCN/xsub/train_num_frame.npy"]
        written = read_part(out / "NTU-RGB-D-60-AGCN/xsub", "train")
        expected = read_part(reference / "NTU-RGB-D-60-AGCN/xsub", "train")
        np.testing.assert_array_equal(written[0], expected[0])
    else:
        assert left == [], f"final-looking files after a kill: {left}"
        assert any(out.rglob("*.tmp")), "the kill came before anything was written: not the fault intended"

    ntu_gendata.gendata(raw, out, "ntu60", workers=1, chunk_size=2, progress=False)  # the same command again
    assert final_files(out) == final_files(reference) and not any(out.rglob("*.tmp"))
    for benchmark in ("xsub", "xview"):
        for part in ("train", "val"):
            folder = f"NTU-RGB-D-60-AGCN/{benchmark}"
            data, counts, (names, labels) = read_part(out / folder, part)
            ref_data, ref_counts, (ref_names, ref_labels) = read_part(reference / folder, part)
            np.testing.assert_array_equal(data, ref_data)
            assert counts.tolist() == ref_counts.tolist() and names == ref_names
            assert labels.tolist() == ref_labels.tolist()


# ---------------------------------------------------------------------------------------------------------
# Elastic training


def test_a_worker_that_dies_is_restarted_and_the_job_ends_with_the_uninterrupted_weights(
        demo_data_64, two_process_seed, straight_two_processes, tmp_path):
    """torchrun --max-restarts=1, two processes with a DataLoader worker each: rank 1 exits abruptly after 1
    step of epoch 2 (tests/fault_injection.py); torchrun stops rank 0, restarts both, they resume from the
    checkpoint_last of epoch 1 and finish bit-identical to the uninterrupted run (which had no loader workers:
    the views do not depend on them).

    Found a bug: the restarted group reused the dead group's rendezvous keys and failed to connect
    ("Connection refused/reset by peer"); distributed.init_distributed now prefixes them per attempt.
    """
    marker, elastic = tmp_path / "rank1_died", tmp_path / "elastic"
    fault = ["--die-marker", str(marker), "--die-rank", "1", "--die-epoch", "2", "--die-after-steps", "1"]
    returncode, output = run_to_end(
        torchrun("--max-restarts=1", "tests/fault_injection.py", *fault, "--",
                 *two_process_command(demo_data_64, two_process_seed, elastic, "--workers", "1")),
        tmp_path / "elastic.log")
    assert returncode == 0, output[-4000:]
    assert marker.exists(), "the fault did not fire"
    assert "continuing at epoch 2" in output, "the restarted group did not resume from checkpoint_last"
    assert logged_epochs(elastic) == [1, 2]
    assert epoch_losses(elastic) == epoch_losses(straight_two_processes)
    assert checkpoint_names(elastic) == checkpoint_names(straight_two_processes)
    for name in checkpoint_names(straight_two_processes):
        assert_same_training_state(straight_two_processes / name, elastic / name)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names are read from /proc (Linux)")
def test_a_finished_two_process_run_leaves_no_gloo_thread_behind_for_interpreter_shutdown(straight_two_processes):
    """After pretrain.main returns, no process has a Gloo thread left: cleanup() destroyed the process group.

    Before the fix DistributedDataParallel's late import of torch._dynamo kept the group alive past
    destroy_process_group, its three threads per process outlived the interpreter, and once in CI rank 1
    of a run that had finished every epoch aborted at exit ("terminate called without an active exception").
    The run is conftest's straight_two_processes, launched through tests/gloo_teardown.py."""
    output = (straight_two_processes.parent / "log").read_text(errors="replace")
    left = sorted(re.findall(r"rank (\d): (\d+) Gloo threads left", output))
    assert left == [("0", "0"), ("1", "0")], output[-3000:]


# ---------------------------------------------------------------------------------------------------------
# Untrusted files


def unsafe_loads(source, filename="<string>"):
    """Calls in Python `source` that deserialise without restriction: (line, description) pairs.

    Flags torch.load without weights_only=True (also through `import torch as t` or `from torch import
    load`), and pickle.load/loads/Unpickler and np.load(..., allow_pickle=True).
    """
    tree = ast.parse(source, filename)
    torch_names, load_names, pickle_names = {"torch"}, set(), {"pickle"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "torch":
                    torch_names.add(alias.asname or "torch")
                if alias.name == "pickle":
                    pickle_names.add(alias.asname or "pickle")
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            load_names.update(alias.asname or alias.name for alias in node.names if alias.name == "load")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, keywords = node.func, {k.arg: k.value for k in node.keywords}
        is_torch_load = (isinstance(func, ast.Attribute) and func.attr == "load" and isinstance(func.value, ast.Name)
                         and func.value.id in torch_names) or (isinstance(func, ast.Name) and func.id in load_names)
        weights_only = keywords.get("weights_only")
        if is_torch_load and not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
            found.append((node.lineno, "torch.load without weights_only=True"))
        if (isinstance(func, ast.Attribute) and func.attr in ("load", "loads", "Unpickler")
                and isinstance(func.value, ast.Name) and func.value.id in pickle_names):
            found.append((node.lineno, f"pickle.{func.attr}"))
        allow_pickle = keywords.get("allow_pickle")
        if isinstance(func, ast.Attribute) and func.attr == "load" and isinstance(allow_pickle, ast.Constant) \
                and allow_pickle.value is True:
            found.append((node.lineno, "np.load(allow_pickle=True)"))
    return found


def python_files():
    return [p for p in ROOT.rglob("*.py") if not {".git", ".venv", "__pycache__"} & set(p.parts)]


def test_the_scanner_finds_unsafe_loads():
    source = "\n".join([
        "import torch as t", "import pickle", "from torch import load as L", "import numpy as np",
        "t.load('a')", "t.load('b', weights_only=False)", "L('c')", "pickle.loads(b'')",
        "np.load('d', allow_pickle=True)",  # lines 5-9: unsafe; lines 10-12: safe
        "t.load('e', weights_only=True)", "L('f', map_location='cpu', weights_only=True)", "np.load('g')",
    ])
    assert [line for line, _ in unsafe_loads(source)] == [5, 6, 7, 8, 9]


def test_every_torch_load_in_the_repository_is_weights_only():
    """Every torch.load in every .py file (tests too) passes weights_only=True; outside tests nothing else
    unpickles, except safe_io's restricted label unpickler (a pickle.Unpickler subclass, not a call)."""
    problems, torch_loads = [], 0
    for path in python_files():
        source = path.read_text()
        torch_loads += len(re.findall(r"\btorch\.load\(", source))
        for line, what in unsafe_loads(source, str(path)):
            is_test = path.parent.name == "tests"
            if what.startswith("torch.load") or not is_test:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert torch_loads >= 2, "the scan found no torch.load at all: is it looking at the repository?"
    assert problems == []


class OpensFile:
    """A payload whose unpickling calls open(marker, "w"): creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_resume_checkpoint_that_runs_code_is_refused_by_pretrain_before_anything_runs(demo_data_16, tmp_path):
    marker, evil = tmp_path / "payload_ran", tmp_path / "evil.pth.tar"
    torch.save({"epoch": 3, "state_dict": {}, "payload": OpensFile(marker)}, evil)
    run_dir = tmp_path / "run"
    args = build_parser().parse_args(pretrain_command(demo_data_16, run_dir, *SHORT_RUN, "--resume", str(evil))[2:])
    with pytest.raises(CheckpointError, match="refused"):
        pretrain.main(args)
    assert not marker.exists(), "the checkpoint's code ran"
    assert not (run_dir / "log.jsonl").exists()
    # Control: the payload is live; an unrestricted unpickler runs it.
    pickle.loads(pickle.dumps(OpensFile(marker))).close()
    assert marker.exists()


def test_a_label_file_that_runs_code_is_refused_by_pretrain_before_anything_runs(tmp_path):
    data_root = make_demo_data(tmp_path / "data")
    marker, label_file = tmp_path / "payload_ran", tmp_path / "data" / "demo" / "xsub" / "train_label.pkl"
    with open(label_file, "wb") as f:
        pickle.dump(([f"S{i:03d}" for i in range(16)], [OpensFile(marker)] * 16), f)
    with pytest.raises(DataFileError, match="refused global 'io.open'") as caught:
        pretrain.main(build_parser().parse_args(pretrain_command(data_root, tmp_path / "run", *SHORT_RUN)[2:]))
    assert str(caught.value).startswith(str(label_file))
    assert not marker.exists(), "the label file's code ran"


def test_resuming_from_a_checkpoint_of_another_model_size_names_the_mismatching_keys(
        demo_data_16, uninterrupted_short_run, tmp_path):
    other = tmp_path / "other"
    command = pretrain_command(demo_data_16, other, *SHORT_RUN, "--hidden-size", "8", "--resume",
                               str(uninterrupted_short_run / pretrain.LAST_CHECKPOINT))
    # The stored configuration says so first; allowed anyway, the weights themselves cannot fit.
    with pytest.raises(SystemExit, match="hidden_size 16 -> 8"):
        pretrain.main(build_parser().parse_args(command[2:]))
    with pytest.raises(CheckpointError, match="a different model size") as caught:
        pretrain.main(build_parser().parse_args([*command[2:], "--allow-config-change"]))
    message = str(caught.value)
    assert "wrong shape backbone.j_emb.t_embedding.0.weight: checkpoint (16, 150), model (8, 150)" in message
    assert "wrong shape j_projector.0.weight" in message
    assert not (other / "log.jsonl").exists()


# ---------------------------------------------------------------------------------------------------------
# Start-up checks


def test_bad_settings_fail_in_seconds_before_any_epoch(demo_data_64, tmp_path):
    """An unwritable run folder, a missing data file, and a global batch that does not divide over 2
    Gloo processes: each launch fails with a message naming the problem, before an epoch starts. The
    time from launch to failure is recorded in STARTUP_TIMES (interpreter and torch start-up included)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = {
        "unwritable run folder": (pretrain_command(demo_data_64, blocker / "run", "--epochs", "1"),
                                  "cannot write to the run folder", blocker / "run"),
        "missing data file": (pretrain_command(tmp_path / "no_data", tmp_path / "run_b", "--epochs", "1"),
                              "train_data_joint.npy: data file not found", tmp_path / "run_b"),
        "batch 7 over 2 processes": (torchrun(*pretrain_command(demo_data_64, tmp_path / "run_c", "--epochs", "1",
                                                                "--batch-size", "7")[1:]),
                                     "--batch-size 7 does not divide over 2 processes", tmp_path / "run_c"),
    }
    seconds = {}
    with ExitStack() as stack:  # launched together: each is timed from its own start
        started = {name: (time.monotonic(), stack.enter_context(launched(command, tmp_path / f"{i}.log")))
                   for i, (name, (command, _, _)) in enumerate(cases.items())}
        for name, (start, process) in started.items():
            process.wait(timeout=TIMEOUT)
            seconds[name] = round(time.monotonic() - start, 2)
    for i, (name, (_, message, run_dir)) in enumerate(cases.items()):
        output = (tmp_path / f"{i}.log").read_text(errors="replace")
        assert started[name][1].returncode != 0, f"{name}: the run did not fail"
        assert message in output, f"{name}: {output[-2000:]}"
        assert not re.search(r"epoch 0:", output), f"{name}: an epoch started before the failure"
        assert not (run_dir / "log.jsonl").exists() and not list(run_dir.glob("checkpoint*"))
    STARTUP_TIMES.write_text(json.dumps(seconds, indent=2) + "\n")
    print(f"\nseconds from launch to failure ({STARTUP_TIMES}): {seconds}")
