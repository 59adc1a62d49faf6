"""Loading the prepared skeleton files safely, with checks whose errors name the file.

A prepared split is three files (released layout, see SPEC.md "NTU RGB+D preprocessing"):

    {part}_data_joint.npy  float (N, C=3, T, V, M), read memory-mapped
    {part}_num_frame.npy   integer (N,), the real frame count of each sample, 1..T
    {part}_label.pkl       pickle of (list of N sample names, list of N integer labels)

The label file is a pickle, and unpickling runs whatever callable the file names. Label files get
downloaded and shared, so they are read with an unpickler that resolves no global at all except
numpy's integer-scalar and dtype constructors (labels saved as numpy ints need them); anything else
fails before it runs. The .npy files are read with numpy's default `allow_pickle=False`.

Every problem is a `DataFileError` whose message starts with the file's path.
"""
import codecs
import pickle
from pathlib import Path

import numpy as np


class DataFileError(ValueError):
    """A data file is unreadable, malformed or inconsistent with its sibling files."""


def _error(path, problem):
    return DataFileError(f"{path}: {problem}")


# ----------------------------------------------------------------------------- labels

# numpy's own scalar constructor, taken from a scalar's pickle recipe rather than from a private
# module path (numpy 1 pickles name it numpy.core.multiarray.scalar, numpy 2 numpy._core...).
_NUMPY_SCALAR = np.int64(0).__reduce__()[0]


def _integer_scalar(dtype, data):
    """numpy's scalar constructor restricted to integer dtypes (no object or structured dtypes)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "iu":
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} (only integer labels are allowed)")
    return _NUMPY_SCALAR(dtype, data)


def _latin1_encode(text, encoding):
    """Protocol-2 pickles spell a numpy scalar's raw bytes as codecs.encode(str, 'latin1')."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return codecs.encode(text, encoding)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "scalar"): _integer_scalar,
    ("numpy._core.multiarray", "scalar"): _integer_scalar,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _LabelUnpickler(pickle.Unpickler):
    """Builds plain containers, strings and numbers; refuses every other global before calling it.

    Lists, tuples, dicts, str, bytes, int, float, bool and None are built by pickle opcodes without
    `find_class`, so refusing in `find_class` blocks every callable (os.system, builtins.open,
    eval...) a crafted file could name, at the point it is named, before anything runs.
    """

    def find_class(self, module, name):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"refused global '{module}.{name}': a label file holds only (list of str, list of int)"
            )
        return allowed


def load_labels(path):
    """Read a `{part}_label.pkl` file without executing code from it.

    Returns (names, labels): a list of N str and an int64 array (N,). Labels may be Python or numpy
    integers; a numpy *array* of labels is refused (re-save it with `labels.tolist()`).
    Raises DataFileError naming the file for a missing file, a refused global, or a wrong structure.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            content = _LabelUnpickler(f).load()
    except FileNotFoundError:
        raise _error(path, "label file not found") from None
    except Exception as e:  # a refused global, a truncated or corrupt file: all mean "cannot use this"
        raise _error(path, f"not a safe label pickle: {e}") from e

    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise _error(path, f"expected a pair (names, labels), got {type(content).__name__}")
    names, labels = content
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise _error(path, "sample names must be a list of str")
    # bool is an int subclass; a True label is almost surely a bug upstream, not class 1.
    if not isinstance(labels, (list, tuple)) or not all(
        isinstance(y, (int, np.integer)) and not isinstance(y, bool) for y in labels
    ):
        raise _error(path, "labels must be a list of int")
    if len(names) != len(labels):
        raise _error(path, f"{len(names)} sample names but {len(labels)} labels")
    return list(names), np.asarray(labels, dtype=np.int64).reshape(len(labels))  # (N,)


def check_label_range(labels, num_classes, path):
    """Every label must lie in [0, num_classes); a wrong class count fails here, not in the loss."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise _error(path, f"{bad.size} labels outside [0, {num_classes}), first at sample {bad[0]} "
                           f"(label {labels[bad[0]]})")


# ----------------------------------------------------------------------------- arrays

def open_joint_data(path):
    """Memory-map `{part}_data_joint.npy`: a float array (N, C=3, T, V, M); nothing is read yet."""
    path = Path(path)
    try:
        data = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise _error(path, "data file not found") from None
    # Object arrays (allow_pickle=False) and corrupt headers raise ValueError, but an empty file raises
    # EOFError, a damaged header tokenize.TokenError or SyntaxError, a folder IsADirectoryError.
    except Exception as e:
        raise _error(path, f"not a plain .npy array: {e!r}") from None
    if data.ndim != 5 or data.shape[1] != 3:
        raise _error(path, f"expected shape (N, 3, T, V, M), got {data.shape}")
    if data.dtype.kind != "f":
        raise _error(path, f"expected a float array, got dtype {data.dtype}")
    return data


def load_frame_counts(path, max_frames):
    """Read `{part}_num_frame.npy` as int64 (N,) and check every count lies in 1..max_frames (= T)."""
    path = Path(path)
    try:
        counts = np.load(path)
    except FileNotFoundError:
        raise _error(path, "frame-count file not found") from None
    except Exception as e:  # as in open_joint_data
        raise _error(path, f"not a plain .npy array: {e!r}") from None
    if counts.ndim != 1:
        raise _error(path, f"expected shape (N,), got {counts.shape}")
    # Some tools save counts as floats; whole-number floats convert losslessly, anything else is a bug.
    if counts.dtype.kind == "f" and np.all(np.isfinite(counts)) and np.all(counts == np.round(counts)):
        counts = counts.astype(np.int64)
    if counts.dtype.kind not in "iu":
        raise _error(path, f"frame counts must be integers, got dtype {counts.dtype}")
    counts = counts.astype(np.int64)
    bad = np.flatnonzero((counts < 1) | (counts > max_frames))
    if bad.size:
        raise _error(path, f"{bad.size} frame counts outside 1..{max_frames}, first at sample {bad[0]} "
                           f"({counts[bad[0]]} frames)")
    return counts


def check_same_length(paths_and_lengths):
    """All files of a split describe the same N samples. Takes [(path, length), ...]."""
    lengths = {n for _, n in paths_and_lengths}
    if len(lengths) > 1:
        listing = ", ".join(f"{p} has {n}" for p, n in paths_and_lengths)
        raise DataFileError(f"sample counts disagree: {listing}")


def check_finite(sample, path, index):
    """Raise if one sample (any shape) holds NaN or Inf; cheap enough to run on every read."""
    if not np.isfinite(sample).all():
        raise _error(path, f"sample {index} contains NaN or Inf")


def check_all_finite(data, path, chunk=256):
    """Scan a whole (N, ...) array, `chunk` samples at a time so a memory map is never read in full.

    Raises naming the first few bad sample indices. Optional: reading NTU-120 takes minutes.
    """
    bad = []
    for first in range(0, len(data), chunk):
        block = np.asarray(data[first:first + chunk])
        finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)  # (chunk,)
        bad.extend((first + np.flatnonzero(~finite)).tolist())
    if bad:
        raise _error(path, f"{len(bad)} samples contain NaN or Inf, first ones: {bad[:10]}")
