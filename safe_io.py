"""Loading the prepared skeleton files safely, with checks whose errors name the file.

A prepared split is three files (released layout, see SPEC.md "NTU RGB+D preprocessing"):

    {part}_data_joint.npy  float (N, C, T, V, M), C = 3 (xyz) or 2 (xy), read memory-mapped
    {part}_num_frame.npy   integer (N,), the real frame count of each sample, 1..T
    {part}_label.pkl       pickle of (list of N sample names, list of N integer labels)

The label file is a pickle, and unpickling runs whatever callable the file names. Label files (and
the annotation pickles data_gen/pyskl_gendata.py converts) get downloaded and shared, so they are read
with an unpickler that resolves no global at all except numpy's constructors of dtypes, scalars and,
for annotation pickles, arrays, each behind a check; anything else fails before it runs. The .npy files
are read with numpy's default `allow_pickle=False`.

Every problem is a `DataFileError` whose message starts with the file's path.

Writing goes through one `write_atomic`: checkpoints, results, pictures and exported features are
either the previous file or the complete new one, never a partial file under the final name.
"""
import codecs
import math
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np


class DataFileError(ValueError):
    """A data file is unreadable, malformed or inconsistent with its sibling files."""


def _error(path, problem):
    return DataFileError(f"{path}: {problem}")


# ----------------------------------------------------------------------------- restricted pickles

# numpy's own scalar constructor, taken from a scalar's pickle recipe rather than from a private module
# path (numpy 1 pickles name it numpy.core.multiarray.scalar, numpy 2 numpy._core.multiarray.scalar).
_NUMPY_SCALAR = np.int64(0).__reduce__()[0]
NUMBER_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex: plain bytes, never objects
INTEGER_KINDS = "iu"


def _refuse(problem):
    return pickle.UnpicklingError(problem)


class _PickledNumpy:
    """A numpy object as a pickle builds it: `value` is the real object, made from checked parts.

    The pickle only ever holds these small stand-ins, never numpy's objects, so that no numpy
    `__setstate__` sees the file's data: numpy's dtype.__setstate__ trusts the flags it is given, and a
    float dtype told that it holds Python objects would make an array read the file's bytes as pointers.
    `_resolved` swaps each stand-in for its value once the whole file is read.
    """

    value = None

    def __setstate__(self, state):
        raise _refuse(f"unexpected state for a {type(self).__name__.strip('_').lower()}")


class _Dtype(_PickledNumpy):
    """numpy.dtype(name, align, copy) of a plain number type (`kinds`), with only the byte order of its state."""

    def __init__(self, kinds, name, align=False, copy=False):
        try:
            dtype = np.dtype(name) if isinstance(name, str) else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
            raise _refuse(f"numpy dtype {name!r} (only plain number dtypes are allowed)")
        self.value = dtype

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, item size, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[1] in ("<", ">", "|", "=")
                and all(part is None for part in state[2:5])):
            raise _refuse("a numpy dtype state other than a plain number type's")
        if state[1] in ("<", ">"):
            self.value = self.value.newbyteorder(state[1])


class _Array(_PickledNumpy):
    """A numpy array: made empty by numpy's _reconstruct, filled by its state (or at once from a buffer)."""

    def __setstate__(self, state):
        # (version, shape, dtype, Fortran order, raw bytes), as ndarray.__reduce__ writes it
        if self.value is not None or not (isinstance(state, tuple) and len(state) == 5):
            raise _refuse("a numpy array state other than (version, shape, dtype, order, bytes)")
        _, shape, dtype, fortran_order, raw = state
        self.value = _array_from_bytes(raw, dtype, shape, "F" if fortran_order else "C")


def _array_from_bytes(raw, dtype, shape, order):
    """A new array of `shape` holding exactly the bytes `raw` of the number dtype `dtype` (a _Dtype)."""
    if isinstance(raw, str):  # protocol 0-2 spell bytes as latin-1 text
        raw = raw.encode("latin-1")
    if not isinstance(dtype, _Dtype) or not isinstance(raw, (bytes, bytearray)):  # protocol 5: bytearray
        raise _refuse("a numpy array of something other than a number dtype and bytes")
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise _refuse(f"a numpy array of shape {shape!r}")
    if len(raw) != math.prod(shape) * dtype.value.itemsize:
        raise _refuse(f"a numpy array of shape {shape} and dtype {dtype.value} in {len(raw)} bytes")
    return np.frombuffer(raw, dtype.value).reshape(shape, order=order).copy()  # a writable array of its own


def _new_array(subtype, shape, typecode):
    """numpy's _reconstruct(ndarray, (0,), b'b'): the empty array the state then fills."""
    if subtype is not _NDARRAY:
        raise _refuse("numpy _reconstruct of a type other than numpy.ndarray")
    return _Array()


def _array_from_buffer(buffer, dtype, shape, order):
    """numpy's _frombuffer(buffer, dtype, shape, order), for arrays pickled with protocol 5."""
    array = _Array()
    array.value = _array_from_bytes(buffer, dtype, shape, order)
    return array


class _Scalar(_PickledNumpy):
    """numpy's scalar(dtype, bytes) for a dtype of `kinds` (`what` says which, for the error)."""

    def __init__(self, kinds, what, dtype, data):
        if not isinstance(dtype, _Dtype) or dtype.value.kind not in kinds:
            shown = dtype.value if isinstance(dtype, _Dtype) else type(dtype).__name__
            raise _refuse(f"numpy scalar of dtype {shown} (only {what} are allowed)")
        if isinstance(data, str):
            data = data.encode("latin-1")
        if not isinstance(data, bytes) or len(data) != dtype.value.itemsize:
            raise _refuse(f"numpy scalar of dtype {dtype.value} from {type(data).__name__}")
        self.value = _NUMPY_SCALAR(dtype.value, data)


def _latin1_encode(text, encoding):
    """Protocol-2 pickles spell raw bytes (of numpy scalars and arrays) as codecs.encode(str, 'latin1')."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _refuse(f"_codecs.encode with {encoding!r}")
    return codecs.encode(text, encoding)


def _empty_bytes():
    return b""


_NDARRAY = object()  # what the global numpy.ndarray resolves to: a marker, never the class itself


def _allowed_globals(scalar_kinds, scalars_are, arrays):
    """(module, name) -> the callable a pickle may name, for files of numbers (`scalar_kinds`) and maybe arrays."""
    allowed = {("_codecs", "encode"): _latin1_encode}
    for builtins in ("builtins", "__builtin__"):  # protocols 0 and 1 spell b"" as bytes()
        allowed[builtins, "bytes"] = _empty_bytes
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 spellings
        allowed[core + ".multiarray", "scalar"] = lambda dtype, data: _Scalar(scalar_kinds, scalars_are, dtype, data)
        if arrays:
            allowed[core + ".multiarray", "_reconstruct"] = _new_array
            allowed[core + ".numeric", "_frombuffer"] = _array_from_buffer
    allowed["numpy", "dtype"] = lambda name, align=False, copy=False: _Dtype(NUMBER_KINDS, name, align, copy)
    if arrays:
        allowed["numpy", "ndarray"] = _NDARRAY
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds plain containers, strings and numbers, and numpy objects through the checked stand-ins
    above; refuses every other global before calling it.

    Lists, tuples, dicts, str, bytes, int, float, bool and None are built by pickle opcodes without
    `find_class`, so refusing in `find_class` blocks every callable (os.system, builtins.open,
    eval...) a crafted file could name, at the point it is named, before anything runs.
    """

    def __init__(self, file, allowed, holds):
        super().__init__(file)
        self.allowed, self.holds = allowed, holds

    def find_class(self, module, name):
        allowed = self.allowed.get((module, name))
        if allowed is None:
            raise _refuse(f"refused global '{module}.{name}': {self.holds}")
        return allowed


def _resolved(content):
    """`content` with every numpy stand-in replaced by its value (containers are rebuilt)."""
    if isinstance(content, _PickledNumpy):
        if content.value is None:
            raise _refuse("a numpy array without its data")
        return content.value
    if isinstance(content, dict):
        return {_resolved(key): _resolved(value) for key, value in content.items()}
    if isinstance(content, (list, tuple, set, frozenset)):
        return type(content)(_resolved(item) for item in content)
    return content


def _load_restricted(path, allowed, holds, what):
    """Unpickle `path` with only the `allowed` globals; DataFileError naming the file for anything else."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _resolved(_RestrictedUnpickler(f, allowed, holds).load())
    except FileNotFoundError:
        raise _error(path, f"{what} not found") from None
    except RecursionError:
        raise _error(path, f"not a safe {what}: nested too deeply") from None
    except Exception as e:  # a refused global, a truncated or corrupt file: all mean "cannot use this"
        raise _error(path, f"not a safe {what}: {e}") from e


_LABEL_GLOBALS = _allowed_globals(INTEGER_KINDS, "integer labels", arrays=False)
_ARRAY_GLOBALS = _allowed_globals(NUMBER_KINDS, "numbers", arrays=True)


def load_array_pickle(path, what="pickle"):
    """Read a pickle of plain containers, strings, numbers and numpy arrays, dtypes and number scalars
    (e.g. a PYSKL annotation file) without executing code from it.

    Arrays come back as ordinary writable numpy arrays. A pickle naming anything else (a class, a
    function, an object array) raises DataFileError naming the file and the refused global, before
    that global runs; so does a missing, truncated or corrupt file. `what` names the file in errors.
    """
    return _load_restricted(path, _ARRAY_GLOBALS, f"{what}s hold only containers, numbers, strings and numpy "
                                                  "arrays", what)


# ----------------------------------------------------------------------------- labels

def load_labels(path):
    """Read a `{part}_label.pkl` file without executing code from it.

    Returns (names, labels): a list of N str and an int64 array (N,). Labels may be Python or numpy
    integers; a numpy *array* of labels is refused (re-save it with `labels.tolist()`).
    Raises DataFileError naming the file for a missing file, a refused global, or a wrong structure.
    """
    path = Path(path)
    content = _load_restricted(path, _LABEL_GLOBALS, "a label file holds only (list of str, list of int)",
                               "label file")

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
    """Memory-map `{part}_data_joint.npy`: a float array (N, C, T, V, M), C = 3 (xyz) or 2 (xy); nothing is
    read yet."""
    path = Path(path)
    try:
        data = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise _error(path, "data file not found") from None
    # Object arrays (allow_pickle=False) and corrupt headers raise ValueError, but an empty file raises
    # EOFError, a damaged header tokenize.TokenError or SyntaxError, a folder IsADirectoryError.
    except Exception as e:
        raise _error(path, f"not a plain .npy array: {e!r}") from None
    if data.ndim != 5 or data.shape[1] not in (2, 3):
        raise _error(path, f"expected shape (N, C, T, V, M) with C = 3 or 2 coordinates, got {data.shape}")
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


# ---------------------------------------------------------------------------------------------
# Writing: whole files or nothing
# ---------------------------------------------------------------------------------------------

def current_umask():
    """This process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path, write):
    """Write the file `path` through `write(binary file object)` into a temporary file in the same folder,
    fsync it, then rename it over `path`.

    A crash at any moment leaves either the previous file or the complete new one, never a truncated
    file under the final name (run_folder.remove_stale_temporaries clears a killed write's leftover). The
    file gets the permissions of any file the user creates (0o666 less the umask), not mkstemp's
    owner-only 0o600: lab-mates on shared storage read checkpoints and results.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
