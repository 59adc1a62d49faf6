"""What every skeleton converter shares, so that a converter is a reader plus a call.

    folder = prepared_folder(out_folder, "msr", "cross_subject")        # options/protocols.py
    data, num_frames = normalized_batch(sequences, max_frames, MSR_20, num_persons=1)
    with all_or_nothing(folder, {(folder, "train"): n_train, (folder, "val"): n_val}, data.shape[1:]) as output:
        output.write(folder, "train", data, names, labels, num_frames)

- errors: `SkeletonFileError` names the input file and where in it (a 1-based line or an entry);
  `DiskFullError` names the output file and the free space;
- reading: `parse_number_table` (whitespace-separated numbers, checked line by line), `fields_per_line`;
- shaping: `main_bodies` (the bodies of highest motion energy, as the released NTU reader keeps them),
  `fit_length` (pad or evenly resample to the padded length) and `normalized_batch` (pad, then the
  released normalisation of data_gen/normalize.py);
- running: `parallel_map`, in order, over worker processes, cancelled when the caller stops early;
- writing: `all_or_nothing` checks the free space, streams rows into temporary files (`PartWriter`)
  and renames them into place only when every part is complete; the file names are those of
  `options.protocols.split_paths`, the names the feeders read.

Shape legend: C coordinates (xyz), T frames, V joints, M bodies, N samples.
"""
import collections
import contextlib
import errno
import math
import os
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from data_gen.normalize import normalize_skeletons
from options.protocols import split_paths

# Largest |x|, |y|, |z| accepted, in metres: far beyond any depth sensor's range, and far enough below
# float32's limit (3.4e38) that the float32 output and its normalisation cannot overflow.
MAX_ABS_COORDINATE = 1e6

# T_max: the frames of every prepared sample, as the released arrays hold them (longer sequences are resampled).
MAX_FRAMES = 300


# ----------------------------------------------------------------------------------------------------------
# Errors


class SkeletonFileError(ValueError):
    """An input file that cannot be used: names the file, the 1-based line or the entry (an annotation of
    a pickle, say), or neither when the whole file is wrong, and the reason."""

    def __init__(self, path, line, reason, entry=None):
        super().__init__(path, line, reason, entry)  # keeps the exception picklable across worker processes
        self.path, self.line, self.reason, self.entry = str(path), line, reason, entry

    def __str__(self):
        where = self.path if self.line is None else f"{self.path}, line {self.line}"
        if self.entry is not None:
            where += f", {self.entry}"
        return f"{where}: {self.reason}"


class DiskFullError(RuntimeError):
    """The output does not fit on its disk: refused up front, or the disk filled up while writing."""

    def __init__(self, path, free, needed=None):
        super().__init__(path, free, needed)
        self.path, self.free, self.needed = Path(path), free, needed

    def __str__(self):
        if self.needed is not None:
            return (f"{self.path}: the output needs {_size(self.needed)} but its disk has {_size(self.free)} free: "
                    f"free some space or choose another --out_folder")
        return (f"{self.path}: the disk filled up while writing it ({_size(self.free)} free now); nothing final was "
                f"written: free some space or choose another --out_folder, and run again")


def _size(num_bytes):
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.1f} MB"


# ----------------------------------------------------------------------------------------------------------
# Reading text tables of numbers


def fields_per_line(raw):
    """Number of whitespace-separated fields on each line of `raw` (bytes), counted without a Python loop.

    Lines are split at b"\\n" exactly like `raw.decode().split("\\n")`; "\\r" counts as whitespace, so
    CRLF and LF files give the same counts. Returns (number of lines,) int64.
    """
    byte = np.frombuffer(raw, dtype=np.uint8)
    solid = byte > ord(" ")  # space, tab, CR, LF and other control bytes separate fields
    field_start = np.flatnonzero(solid[1:] > solid[:-1]) + 1  # (fields,) byte offsets
    if len(solid) and solid[0]:
        field_start = np.concatenate([[0], field_start])
    newline = np.flatnonzero(byte == ord("\n"))  # (lines - 1,)
    line_of_field = np.searchsorted(newline, field_start)  # newlines before the field = its line index
    return np.bincount(line_of_field, minlength=len(newline) + 1)


def parse_number_table(raw, width, path):
    """Whitespace-separated numbers, `width` per line -> (lines, width) float32.

    raw: the file's bytes. Trailing blank lines are ignored. A line with another count, a token that is
    not a number or a non-finite value raises SkeletonFileError naming the file and the 1-based line.
    Counting and parsing are single numpy passes; only the error path looks at lines one by one.
    """
    raw = raw.rstrip()
    if not raw:
        return np.zeros((0, width), np.float32)
    counts = fields_per_line(raw)  # (lines,)
    bad = np.flatnonzero(counts != width)
    if bad.size:
        raise SkeletonFileError(path, int(bad[0]) + 1, f"expected {width} numbers, found {counts[bad[0]]}")
    try:
        values = np.array(raw.split(), dtype=np.float32)  # (lines * width,)
    except ValueError:
        line, token = _first_non_number(raw)
        raise SkeletonFileError(path, line, f"not a number: {token!r}") from None
    finite = np.isfinite(values)
    if not finite.all():
        raise SkeletonFileError(path, int(np.argmin(finite)) // width + 1, "non-finite value")
    return values.reshape(-1, width)  # (lines, width)


def _first_non_number(raw):
    """Slow path, only after a failed parse: (1-based line, token) of the first token float() rejects."""
    for number, line in enumerate(raw.split(b"\n"), start=1):
        for token in line.split():
            try:
                float(token)
            except ValueError:
                return number, token.decode("latin-1")
    raise AssertionError("the table failed to parse, but every token parses on its own")


# ----------------------------------------------------------------------------------------------------------
# Shaping sequences into padded, normalised samples


def body_energy(bodies):
    """Energy of each body slot: std(x) + std(y) + std(z) over its non-empty frames (0 if none).

    bodies: (M, T, V, C) with all-zero frames where the slot is empty. Returns (M,) float64. The std
    is over all joints of all non-empty frames, per coordinate, as in the released reader.
    """
    nonempty = (bodies != 0).any(axis=(2, 3))  # (M, T)
    weight = nonempty[:, :, None, None]  # (M, T, 1, 1)
    count = np.maximum(nonempty.sum(1) * bodies.shape[2], 1)[:, None]  # (M, 1) joints in the std
    mean = (bodies * weight).sum(axis=(1, 2)) / count  # (M, C)
    variance = (((bodies - mean[:, None, None]) ** 2) * weight).sum(axis=(1, 2)) / count  # (M, C)
    return np.sqrt(variance).sum(axis=1) * nonempty.any(axis=1)  # (M,)


def main_bodies(bodies, keep):
    """The `keep` bodies of highest energy, highest first: (M, T, V, C) -> (keep, T, V, C).

    Body 0 is the one the normalisation centres and turns on. Ties (in practice only between empty
    slots) keep the lower slot first; with fewer than `keep` bodies the rest are empty (all zero).
    """
    if len(bodies) < keep:
        bodies = np.concatenate([bodies, np.zeros((keep - len(bodies), *bodies.shape[1:]), bodies.dtype)])
    order = np.argsort(-body_energy(bodies), kind="stable")[:keep]
    return bodies[order]


def fit_length(seq, max_frames):
    """Zero-pad (or, when longer, evenly resample) a sequence to exactly `max_frames` frames.

    seq: (C, T, V, M) -> ((C, max_frames, V, M) float32, num_frame = min(T, max_frames)).
    Resampling picks evenly spaced real frames, first and last included, rather than truncating, so a
    long action keeps its end; nothing is interpolated, so absent bodies and joints stay exactly zero.
    """
    num_frames = seq.shape[1]
    if num_frames > max_frames:
        keep = np.round(np.linspace(0, num_frames - 1, max_frames)).astype(np.int64)  # (max_frames,)
        return seq[:, keep].astype(np.float32), max_frames
    out = np.zeros((seq.shape[0], max_frames, *seq.shape[2:]), np.float32)
    out[:, :num_frames] = seq
    return out, num_frames


def normalized_batch(sequences, max_frames, topology, num_persons, num_coords=3):
    """Sequences (C, T_i, V, M) -> (data (N, C, max_frames, V, M) float32 normalised, [num_frame, ...]).

    Each sequence is fitted to `max_frames` (`fit_length`), then the batch gets the released
    normalisation (data_gen/normalize.py) for the skeleton `topology`. C is `num_coords`: 3 (xyz),
    or 2 for image keypoints.
    """
    data = np.zeros((len(sequences), num_coords, max_frames, topology.num_joints, num_persons), np.float32)
    num_frames = []
    for i, seq in enumerate(sequences):
        data[i], frames = fit_length(seq, max_frames)
        num_frames.append(frames)
    if len(sequences):  # normalize_skeletons cannot take an empty batch
        data = normalize_skeletons(data, topology)
    return data, num_frames


# ----------------------------------------------------------------------------------------------------------
# Running in parallel


def parallel_map(function, items, workers):
    """function(item) for each item, in order: in this process with one worker, else from `workers` processes.

    At most two items per worker are in flight, so a caller slower than the workers (writing to a slow
    disk) holds a few results in memory, not all of them; `items` is read as lazily. Leaving early (an
    error, or the caller closing the generator) cancels the items not yet started and waits for the
    running ones. (multiprocessing.Pool's terminate could hang there: its task thread blocked on a queue
    that terminated workers no longer read.)
    """
    if workers <= 1:
        yield from map(function, items)
        return
    pool = ProcessPoolExecutor(workers)
    try:
        in_flight = collections.deque()
        for item in items:
            in_flight.append(pool.submit(function, item))
            if len(in_flight) == 2 * workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------------------
# Writing: temporary files, renamed when everything succeeded


def temporary(path):
    """The name a file is written under until it is complete: `x.npy` -> `x.npy.tmp`."""
    return path.with_name(path.name + ".tmp")


def _free_bytes(folder):
    """Free bytes on the disk of `folder`, or of its nearest existing parent (it may not exist yet)."""
    folder = Path(folder).absolute()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    return shutil.disk_usage(existing).free


def output_bytes(capacities, sample_shape, cut_copy=False):
    """An upper bound of the bytes a conversion writes: float32 rows of `sample_shape` for each part's
    capacity, 4 KiB of header and 256 bytes of name, label and frame count per sample; with `cut_copy`
    (inputs may be skipped) also the largest part again, which `PartWriter.finish` copies."""
    row = 4 * math.prod(sample_shape)
    needed = sum(capacity * (row + 256) + 4096 for capacity in capacities)
    return needed + (max(capacities, default=0) * row if cut_copy else 0)


def check_free_space(folder, needed):
    """Refuse, before anything is written, an output of `needed` bytes that the disk of `folder` cannot hold."""
    free = _free_bytes(folder)
    if needed > free:
        raise DiskFullError(folder, free, needed)


@contextlib.contextmanager
def _disk_full_names(path):
    """Turn a full disk (ENOSPC, or EDQUOT: a full quota) while writing `path` into DiskFullError."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFullError(path, _free_bytes(Path(path).parent)) from None


def _reserve(file, size):
    """Allocate the blocks of an open file now (posix_fallocate), so that a disk too full to hold it fails
    here with ENOSPC rather than hours later; where the file system cannot, the up-front estimate is all."""
    if size == 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(file.fileno(), 0, size)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def _new_array_file(path, shape):
    """Create a float32 .npy file of `shape` with its blocks reserved; return the header's length in bytes."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    offset = array.offset
    del array  # header written and file sized; rows come later
    with open(path, "r+b") as file:
        _reserve(file, offset + 4 * math.prod(shape))
    return offset


def _write_at(file, data, offset):
    """All bytes of the array `data` at `offset` of an open file (one os.pwrite may write fewer)."""
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    while view:
        written = os.pwrite(file.fileno(), view, offset)
        view, offset = view[written:], offset + written


class PartWriter:
    """Streams the rows of one part (e.g. xsub/train) into temporary files; `commit` renames them.

    The data array is allocated for every sample that may land in the part, its blocks reserved on the
    disk up front, and filled from the front. Rows are written with plain writes, not through a memory
    map: a full disk then raises an error this class turns into DiskFullError (naming the file and the
    free space), where a memory-mapped write would kill the process with SIGBUS. Neither way do the
    written pages pile up in this process's resident memory.
    """

    def __init__(self, folder, part, capacity, sample_shape):
        """Create the part's temporary data file, sized for `capacity` rows of `sample_shape` (C, T, V, M).

        folder: where the part's files go; part: "train" or "val".
        """
        self.folder, self.part, self.count = Path(folder), part, 0
        self.names, self.labels, self.num_frames = [], [], []
        self.final_paths = list(split_paths(self.folder, part))  # data, num_frame, label
        self.data_path = self.final_paths[0]
        self.capacity, self.sample_shape = capacity, tuple(sample_shape)
        self.row_bytes = 4 * math.prod(sample_shape)
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            with _disk_full_names(self.data_path):
                self.offset = _new_array_file(temporary(self.data_path), (capacity, *self.sample_shape))
        except BaseException:  # the caller has no writer to discard yet
            self.discard()
            raise

    def write(self, data, names, labels, num_frames):
        """Append rows: data (n, C, T, V, M) float32 with their names, labels and frame counts."""
        assert len(data) == len(names) == len(labels) == len(num_frames), "one name, label, count per row"
        if len(data) == 0:
            return
        with _disk_full_names(self.data_path), open(temporary(self.data_path), "r+b") as file:
            _write_at(file, np.asarray(data, dtype=np.float32), self.offset + self.count * self.row_bytes)
        self.count += len(data)
        self.names += names
        self.labels += labels
        self.num_frames += num_frames

    def finish(self):
        """Write the small files and cut the data array to the rows written (after skipped inputs)."""
        data_tmp = temporary(self.data_path)
        with _disk_full_names(self.data_path):
            if self.count != self.capacity:  # only with skipped inputs: copy the written rows to a smaller array
                array = np.load(data_tmp, mmap_mode="r")
                cut_tmp = data_tmp.with_name(data_tmp.name + ".cut")
                offset = _new_array_file(cut_tmp, (self.count, *self.sample_shape))
                with open(cut_tmp, "r+b") as cut:
                    for start in range(0, self.count, 256):  # a few hundred rows at a time keeps memory flat
                        _write_at(cut, array[start:start + 256], offset + start * self.row_bytes)
                del array
                os.replace(cut_tmp, data_tmp)
        with _disk_full_names(self.final_paths[1]), open(temporary(self.final_paths[1]), "wb") as file:
            np.save(file, np.asarray(self.num_frames, dtype=np.int64))
        with _disk_full_names(self.final_paths[2]), open(temporary(self.final_paths[2]), "wb") as file:
            pickle.dump((list(self.names), [int(label) for label in self.labels]), file)

    def commit(self):
        """Give every file its final name; the data array goes last."""
        for path in reversed(self.final_paths):
            os.replace(temporary(path), path)

    def discard(self):
        """Delete whatever temporary files exist."""
        for path in self.final_paths:
            for leftover in (temporary(path), temporary(path).with_name(temporary(path).name + ".cut")):
                leftover.unlink(missing_ok=True)


class Output:
    """The parts of one conversion, as `all_or_nothing` hands them out: write rows, add small text files."""

    def __init__(self):
        self.writers = {}  # (folder, part) -> PartWriter
        self.texts = {}  # path -> text, written beside the parts at the end

    def write(self, folder, part, data, names, labels, num_frames):
        """Append rows to a part: data (n, C, T, V, M) float32 with their names, labels and frame counts."""
        self.writers[Path(folder), part].write(data, names, labels, num_frames)

    def add_text(self, path, text):
        """A text file to write with the parts (e.g. the list of skipped inputs), renamed into place with them."""
        self.texts[Path(path)] = text

    @property
    def counts(self):
        """{(folder, part): rows written}."""
        return {key: writer.count for key, writer in self.writers.items()}

    def _commit(self):
        for writer in self.writers.values():
            writer.finish()
        for path, text in self.texts.items():
            with _disk_full_names(path), open(temporary(path), "w") as file:
                file.write(text)
        for writer in self.writers.values():
            writer.commit()
        for path in self.texts:
            os.replace(temporary(path), path)

    def _discard(self):
        for writer in self.writers.values():
            writer.discard()
        for path in self.texts:
            temporary(path).unlink(missing_ok=True)


@contextlib.contextmanager
def all_or_nothing(root, capacities, sample_shape, cut_copy=False):
    """Write the parts of a conversion so that either all of them end up complete or none is written.

    root: the output's folder, named when the disk is too small; capacities: {(folder, part): the most
    rows the part may get}, in the order the parts are created and finished; sample_shape: (C, T, V, M);
    cut_copy: inputs may be skipped, so parts may end up shorter (counted in the space check).

    The free space is checked before anything is created; every part is written under temporary names
    and renamed into place only when the `with` block ends without an error and every part is finished.
    Any exception (an invalid input, a full disk, Ctrl-C) deletes every temporary file and propagates.
    """
    check_free_space(root, output_bytes(capacities.values(), sample_shape, cut_copy=cut_copy))
    output = Output()
    try:
        for (folder, part), capacity in capacities.items():
            output.writers[Path(folder), part] = PartWriter(folder, part, capacity, sample_shape)
        yield output
        output._commit()
    except BaseException:  # interrupted or failed: leave no partial files behind, final or temporary
        output._discard()
        raise
