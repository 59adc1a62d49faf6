"""Checkpoint I/O: atomic writes, safe reads, and strict, explained weight loading.

Checkpoints come from our own runs (unprefixed keys) or from the released code (`state_dict` with
the `module.` prefix of the data-parallel wrapper); both load. Reading never executes code from the
file (`weights_only=True`), and a checkpoint that does not fit the model is refused with every
missing, unexpected and wrong-shaped key named, never merged in part.
"""
import pickle
import zipfile
from pathlib import Path

import torch

from safe_io import write_atomic

PROJECTOR_PREFIXES = ("j_projector.", "b_projector.", "m_projector.")
HEAD_PREFIXES = ("fc.",)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, does not fit the model, or holds unusable weights."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint whose keys or tensor shapes do not fit the model (another size or layout)."""


def save_atomic(obj, path):
    """torch.save to `path` atomically (safe_io.write_atomic): the previous file or the complete new one."""
    write_atomic(path, lambda f: torch.save(obj, f))


# torch.save stores a checkpoint's members uncompressed in a zip archive, so their sizes add up to
# less than the file's; re-compressed with deflate, float weights shrink by a few percent only (they
# inflate 1.03x for a trained tiny checkpoint with its Adam state, 1.09x for the default-size model).
# torch.load allocates every member at the size the zip's central directory declares, so a file whose
# members add up to many times its own size can only be a compression bomb (a few MB of zeros that
# inflate to GBs). A bound relative to the file, not an absolute one, refuses those at any model size
# while every honest checkpoint, however large, still loads; the allowance lets a tiny file's
# well-compressed pickle through.
MAX_INFLATION = 4
INFLATION_ALLOWANCE = 2**20  # bytes
ZIP_MAGIC = b"PK\x03\x04"


def check_container(path):
    """Refuse, from its first bytes and the zip central directory, a file torch.load must not be given.

    An empty file, a zip archive cut short (no central directory), and one whose members would inflate
    beyond MAX_INFLATION x the file + INFLATION_ALLOWANCE raise CheckpointError with a sentence;
    nothing is decompressed. Files in the legacy (non-zip) format pass: torch reads their tensors at
    the size they occupy in the file.
    """
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes), not a checkpoint")
    with open(path, "rb") as f:
        if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            return
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise CheckpointError(f"{path}: a zip archive without a readable central directory ({size} bytes): the file "
                              f"was cut short or damaged, e.g. by an interrupted write, copy or download") from None
    if inflated > MAX_INFLATION * size + INFLATION_ALLOWANCE:
        raise CheckpointError(f"{path}: refused, its {size / 2**20:.1f} MiB would inflate to {inflated / 2**20:.1f} "
                              f"MiB, more than {MAX_INFLATION}x: torch.save does not compress, so this looks like a "
                              f"compression bomb")


def non_finite_tensors(named_tensors):
    """The names of the floating-point tensors holding NaN or Inf, from (name, tensor) pairs; one device
    sync in all, and a per-tensor look only when something is wrong."""
    named = [(name, t) for name, t in named_tensors if torch.is_tensor(t) and t.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([t.isfinite().all() for _, t in named])
    if bool(finite.all()):
        return []
    return [name for (name, _), ok in zip(named, finite.tolist()) if not ok]


def training_tensors(model, optimizer):
    """(name, tensor) of every weight, buffer and optimizer state tensor: what a checkpoint must hold finite."""
    yield from model.state_dict().items()
    names = {id(p): name for name, p in model.named_parameters()}
    for parameter, state in optimizer.state.items():
        for key, value in state.items():
            yield f"optimizer {key} of {names.get(id(parameter), '?')}", value


def read_checkpoint(path):
    """Load a checkpoint on the CPU without executing any code stored in it.

    The file is checked first (`check_container`): an empty or truncated file gets a sentence, and a
    compression bomb is refused before anything is inflated, so the memory a checkpoint can take is
    at most MAX_INFLATION x its size + 1 MiB.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    check_container(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused, it holds objects other than tensors and plain containers "
            f"(loading it could run code): {error}") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({error})") from None


def model_state_dict(checkpoint):
    """The weights of a checkpoint dict, with any `module.` prefix removed.

    Accepts {"state_dict": ...} (released and our periodic files), {"model": ...} (our
    checkpoint_last) or a bare state_dict.
    """
    state_dict = checkpoint
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            state_dict = checkpoint[key]
            break
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise CheckpointError("no state_dict of tensors found in the checkpoint")
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def compare_keys(model, state_dict):
    """(missing, unexpected, wrong_shape) key lists of state_dict against model's own."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(f"{key}: checkpoint {tuple(state_dict[key].shape)}, model {tuple(value.shape)}"
                         for key, value in expected.items()
                         if key in state_dict and state_dict[key].shape != value.shape)
    return missing, unexpected, wrong_shape


def non_finite_keys(state_dict):
    """Keys of the floating-point tensors that hold a NaN or an Inf, in the state_dict's order."""
    return [key for key, value in state_dict.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())]


def load_weights(model, source, may_lack=(), may_add=(), require_finite=False, name=None):
    """Load `source` (a path or a checkpoint dict) into `model`, refusing any misfit.

    `name` says where a checkpoint dict was read from, for the messages (default: the path, or
    "checkpoint").

    Keys starting with a prefix in `may_lack` may be missing from the checkpoint (e.g. a new
    linear head); keys starting with one in `may_add` may be left over (e.g. the projectors when
    only the encoder is wanted). Anything else missing or left over, and any shape difference,
    raises CheckpointMismatch naming every such key. With `require_finite`, a tensor to be loaded
    that holds NaN or Inf raises CheckpointError naming the first ones, and the model is left as it
    was. Returns the keys that were allowed to differ.
    """
    if name is None:
        name = source if isinstance(source, (str, Path)) else "checkpoint"
    name = str(name)
    checkpoint = read_checkpoint(source) if isinstance(source, (str, Path)) else source
    try:
        state_dict = model_state_dict(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"{name}: {error}") from None
    missing, unexpected, wrong_shape = compare_keys(model, state_dict)
    bad_missing = [key for key in missing if not key.startswith(may_lack)]
    bad_unexpected = [key for key in unexpected if not key.startswith(may_add)]
    if bad_missing or bad_unexpected or wrong_shape:
        problems = [f"missing {key}" for key in bad_missing]
        problems += [f"unexpected {key}" for key in bad_unexpected]
        problems += [f"wrong shape {entry}" for entry in wrong_shape]
        raise CheckpointMismatch(f"{name} does not fit {type(model).__name__} "
                              f"({len(problems)} problems; a different model size?):\n  "
                              + "\n  ".join(problems))
    kept = {key: value for key, value in state_dict.items() if key not in unexpected}
    bad = non_finite_keys(kept) if require_finite else []
    if bad:
        raise CheckpointError(f"{name}: {len(bad)} of its {type(model).__name__} tensors hold NaN or Inf, first "
                              f"{', '.join(bad[:3])}: the run that wrote it diverged; use an earlier checkpoint")
    model.load_state_dict(kept, strict=False)
    return {"missing": missing, "unexpected": unexpected}


def load_pretraining_weights(model, source):
    """Every key of the pretraining model (encoder and projectors) must be in the checkpoint."""
    return load_weights(model, source)


def load_encoder_weights(model, source, name=None):
    """Load a pretraining checkpoint into a downstream model: encoder keys all required; the
    projectors may be left over and the linear head may be missing. An encoder holding NaN or Inf
    is refused: every feature, and so every result, computed from it would be meaningless."""
    return load_weights(model, source, may_lack=HEAD_PREFIXES, may_add=PROJECTOR_PREFIXES, require_finite=True,
                        name=name)
