"""What pretrain.py and the evaluation scripts share: device and precision choice, seeding and RNG
state, the learning-rate schedule, meters, accuracy, the run folder's basics (a writable folder,
config.json with the environment, log.jsonl). What only the evaluation scripts share (a pretrained
encoder, features, the result line) is in evaluation.py."""
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

import distributed


# ---------------------------------------------------------------------------------------------
# Device and precision
# ---------------------------------------------------------------------------------------------

def resolve_device(choice, local_rank=0):
    """'auto' picks the process's GPU when there is one, else the CPU."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for, but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def resolve_amp_dtype(device, amp, amp_dtype):
    """The autocast dtype, or None for full fp32.

    amp: True/False/None (None = the default of the device: fp16 on CUDA as released, fp32 on CPU).
    amp_dtype: 'fp16' or 'bf16' ('auto' = fp16 on CUDA, bf16 on CPU). fp16 on the CPU is allowed when
    asked for by name: it runs the CUDA recipe (fp16 autocast, float32 loss, GradScaler) on any
    machine, which is how that path is tested without a GPU.
    """
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if amp_dtype == "auto":
        amp_dtype = "fp16" if device.type == "cuda" else "bf16"
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[amp_dtype]


def autocast(device, dtype):
    """Autocast for the forward pass and loss, or nothing when dtype is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


# ---------------------------------------------------------------------------------------------
# Seeds and RNG state
# ---------------------------------------------------------------------------------------------

def seed_everything(seed):
    """Seed python, numpy and torch (all devices). Data augmentation does not read these: its
    views are a pure function of (seed, epoch, index), see feeder/feeder.py."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state():
    """This process's RNG states, as tensors and plain values (loadable with weights_only=True)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------

def learning_rate(epoch, base_lr, total_epochs, milestones=(), cosine=False):
    """The lr of a (possibly fractional) epoch.

    Released schedule: base_lr times 0.1 for every milestone reached (pretraining: [351]; linear
    probe: [120, 140]). With cosine=True, half a cosine from base_lr to 0 over total_epochs instead.
    """
    if cosine:
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / total_epochs))
    return base_lr * 0.1 ** sum(epoch >= milestone for milestone in milestones)


def set_learning_rate(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


# ---------------------------------------------------------------------------------------------
# Meters and accuracy
# ---------------------------------------------------------------------------------------------

class AverageMeter:
    """Running mean of a scalar, weighted by the number of samples each value stands for."""

    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value, n=1):
        self.sum += float(value) * n
        self.count += n

    @property
    def avg(self):
        return self.sum / max(self.count, 1)


def topk_correct(logits, targets, ks=(1, 5)):
    """Number of samples whose target is among the top-k predictions, for each k (capped at classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (N, K)
    hits = top.eq(targets.unsqueeze(1))  # (N, K)
    return [int(hits[:, :k].any(dim=1).sum()) for k in ks]


# ---------------------------------------------------------------------------------------------
# The run folder
# ---------------------------------------------------------------------------------------------

def git_revision():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def prepare_run_folder(folder):
    """Create the run folder and prove it is writable, in the first second rather than after an epoch."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise SystemExit(f"cannot write to the run folder {folder}: {error}") from None
    return folder


def git_tree_dirty():
    """Whether tracked files differ from the revision in git_revision() (None outside a git checkout)."""
    try:
        result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(result.stdout.strip()) if result.returncode == 0 else None


def device_name(device):
    """The GPU's name for a CUDA device, else the CPU model (from /proc/cpuinfo where there is one)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):  # a flag's choice such as "auto"
        device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device):
    """What produced a run besides the code: library versions, the device, and uncommitted changes."""
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "numpy": np.__version__, "device_name": device_name(device), "git_dirty": git_tree_dirty()}


def write_config(folder, config, name="config.json"):
    """Freeze the resolved configuration, the command line, the code revision (and whether the work tree
    had uncommitted changes) and the environment beside the run."""
    record = {"config": config, "command": [sys.executable, *sys.argv], "git": git_revision(),
              "environment": environment(config.get("device", "cpu")),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    (Path(folder) / name).write_text(json.dumps(record, indent=2, default=str) + "\n")


def append_jsonl(path, record):
    """One JSON object per line: easy for people to read and for scripts to parse."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(path, epoch):
    """Keep only the records of epochs before `epoch` in a log.jsonl (a resumed run logs the rest again).

    A line cut short by a crash is dropped too. The file is replaced atomically.
    """
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line)["epoch"] < epoch:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass
    if len(kept) < len(lines):
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text("".join(kept))
        os.replace(temporary, path)


def config_dict(args):
    """argparse Namespace -> plain dict (paths as strings), for the run folder and checkpoints."""
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}


def main_print(*args, **kwargs):
    if distributed.is_main_process():
        print(*args, **kwargs, flush=True)
