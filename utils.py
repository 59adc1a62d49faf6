"""What pretrain.py, action_recognition.py, action_retrieval.py and tsne.py share: device and
precision choice, seeding and RNG state, the learning-rate schedule, meters, accuracy, the run folder,
and (for the evaluation scripts) loading a pretrained encoder, feature extraction and the result line."""
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import console
import distributed
from checkpoint import CheckpointMismatch, load_encoder_weights
from umurl import DownstreamModel


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


# What the evaluation scripts write into their run folder besides config.json. Any of them already there
# is an earlier run's result, which a new run would mix with (log.jsonl appended to, TensorBoard events
# side by side) or replace without a word.
EVALUATION_OUTPUTS = ("results.json", "log.jsonl", "tensorboard", "model_final.pth.tar", "labelled_samples.json",
                      "tsne.png", "train.log")


def prepare_evaluation_folder(folder, overwrite):
    """prepare_run_folder for an evaluation script: one run folder, one run.

    A folder holding an earlier run's EVALUATION_OUTPUTS is refused unless `overwrite`, which deletes
    them (and nothing else) first. A pretraining run folder is refused either way: its log.jsonl and
    TensorBoard logs are the pretraining run's, not for an evaluation to append to or delete.
    """
    folder = Path(folder)
    if any(folder.glob("checkpoint_*.pth.tar")):
        raise SystemExit(f"{folder} is a pretraining run folder (it holds checkpoints): give the evaluation its own "
                         f"--checkpoint-path")
    earlier = [name for name in EVALUATION_OUTPUTS if (folder / name).exists()]
    if earlier and not overwrite:
        raise SystemExit(f"{folder} already holds an earlier run's {', '.join(earlier)}: pass --overwrite to "
                         f"replace them, or choose another --checkpoint-path")
    for name in earlier:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return prepare_run_folder(folder)


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


# ---------------------------------------------------------------------------------------------
# Evaluation scripts: one process, a pretrained encoder, features, results
# ---------------------------------------------------------------------------------------------

def require_single_process(script):
    """Evaluation runs in one process on one device; refuse a multi-process torchrun launch at once.

    Features of a whole split fit on one device and the probe trains in seconds on them, so data
    parallelism would only add collectives. A one-process torchrun launch is accepted.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        raise SystemExit(f"{script} runs in a single process (features of a whole split fit on one device); "
                         f"it was launched with WORLD_SIZE={world_size}: run it with plain `python {script}`")


def evaluation_device(script, args):
    """(device, autocast dtype or None) of an evaluation script, after refusing a multi-process launch."""
    require_single_process(script)
    device = resolve_device(args.device)
    return device, resolve_amp_dtype(device, args.amp, args.amp_dtype)


def load_downstream_model(num_classes, sizes, modalities, pretrained):
    """DownstreamModel(num_classes, **sizes) with the encoder of `pretrained`, or random weights if None.

    `pretrained` may be our checkpoint or a released one (`module.` prefix). The sizes come from the
    dataset being evaluated (its skeleton fixes the input widths), so transfer works whenever the
    source dataset had the same layout; otherwise CheckpointMismatch names every misfit key and the
    sizes the target asks for. A missing, unreadable or diverged (NaN/Inf) checkpoint raises
    CheckpointError saying what is wrong, and nothing about sizes. Returns (model, a one-line
    description of where the weights came from).
    """
    model = DownstreamModel(num_classes, modalities=modalities, **sizes)
    if pretrained is None:
        return model, "randomly initialised encoder (no --pretrained): a baseline"
    try:
        load_encoder_weights(model, pretrained)
    except CheckpointMismatch as error:
        wanted = ", ".join(f"{key}={value}" for key, value in sizes.items() if key != "parents")
        raise CheckpointMismatch(
            f"{error}\nThe encoder was built for {wanted}: input widths follow the evaluated dataset's skeleton "
            f"(t = persons*joints*3, s = 64 frames*3), the rest from --hidden-size/--num-head/--num-layer. "
            f"A checkpoint pretrained with another skeleton layout or model size cannot be evaluated here."
        ) from None
    return model, f"encoder from {pretrained}"


@torch.no_grad()
def extract_features(model, dataset, batch_size, workers, device, amp_dtype, desc="features", print_freq=10):
    """Encode a dataset of (x, label) in order: features (N, 2H) float32 and labels (N,), on `device`.

    Puts the model in eval mode (the encoder must not change while it is read). Autocast, when
    enabled, covers the encoder; features are stored in float32 either way.
    """
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    features, labels = [], []
    for x, y in console.progress_bar(loader, desc=desc, miniters=print_freq, dynamic_ncols=True, leave=False):
        with autocast(device, amp_dtype):
            features.append(model.features(x.to(device, non_blocking=True)).float())  # (B, 2H)
        labels.append(y.to(device, non_blocking=True))
    return torch.cat(features), torch.cat(labels)


def write_results(folder, results):
    """results.json: the run's final metrics and what produced them."""
    (Path(folder) / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


def result_line(kind, fields):
    """`RESULT <kind> key=value ...` on one line, floats with two decimals: easy for shell scripts to parse."""
    def text(value):
        if isinstance(value, float):
            return f"{value:.2f}"
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        return str(value).replace(" ", "_")

    return " ".join(["RESULT", kind, *(f"{key}={text(value)}" for key, value in fields.items())])
