"""Property-based fuzzing of every input file the project reads (GitHub issue 8, "bad input").

Raw skeleton files. Valid files from data_gen/synthetic.py are mutated (truncation, junk bytes, changed
counts, huge numbers, NaN, empty files, CRLF, extra or missing fields, moved lines) and read by
`read_xyz` and by the whole conversion of one file (`convert_chunk`: read, pad, normalise). Each input
must either give a finite array of the right shape, or raise SkeletonFileError naming the file and a
line; any other exception fails the test. "Never a silent wrong array" is checked against an
independent line-by-line reader written here: an accepted file must be one the format allows, read to
the same numbers.

Prepared arrays. A valid split (`{part}_data_joint.npy`, `_num_frame.npy`, `_label.pkl`) is mutated
(wrong shapes and dtypes, frame counts out of range, NaN/Inf inside or after the real frames, label
files with wrong structure or a code-running payload, truncated, junk-filled, empty or missing files)
and opened with the dataset builders, then every sample is read. Each step must succeed with finite
samples or raise DataFileError naming the file; mutations that make the data wrong must be refused.

Both fuzzers are derandomised (the same inputs on every run, for CI) and count the inputs they try;
the counts go to `<tmp>/umurl_fuzz_counts.json` and are printed (`pytest -s` shows them).
"""
import difflib
import json
import os
import pickle
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_gen.ntu_gendata import MAX_ABS_COORDINATE, MAX_FRAMES, SkeletonFileError, convert_chunk, read_xyz
from data_gen.synthetic import skeleton_text, synthesize
from dataset import build_downstream_datasets, build_pretrain_dataset, write_split
from feeder.augmentations import OUT_FRAMES, RELEASED_VIEW, downstream_view
from safe_io import DataFileError

NUM_JOINTS, SLOTS_READ, SLOTS_KEPT = 25, 4, 2
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
COUNTS_FILE = Path(tempfile.gettempdir()) / "umurl_fuzz_counts.json"
COUNTS = {}  # fuzzer name -> {"outcomes": Counter, "mutations": Counter}, saved to COUNTS_FILE


def record(fuzzer, outcome, mutations):
    """Count one input: its outcome (accepted, refused...) and the mutations that made it."""
    counts = COUNTS.setdefault(fuzzer, {"outcomes": Counter(), "mutations": Counter()})
    counts["outcomes"][outcome] += 1
    counts["mutations"].update(mutations)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    """After the module: print the inputs tried per fuzzer and save them for the release notes."""
    yield
    summary = {name: {"inputs": sum(c["outcomes"].values()), **{k: dict(sorted(v.items())) for k, v in c.items()}}
               for name, c in COUNTS.items()}
    COUNTS_FILE.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nfuzz inputs tried ({COUNTS_FILE}): {json.dumps(summary)}")


@pytest.fixture(scope="module")
def scratch():
    """One folder reused by every example (hypothesis does not allow function-scoped fixtures)."""
    folder = Path(tempfile.mkdtemp(prefix="umurl_fuzz_"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# =========================================================================================================
# Raw skeleton files
# =========================================================================================================

def _synthetic_file(bodies, present):
    """Raw text (bytes) of bodies (B, T, V, 3) shown in the frames where present (B, T) is True."""
    ids = [72057594037927936 + b for b in range(len(bodies))]
    return skeleton_text(bodies, present, ids).encode()


def _base_files():
    """Small valid files (2-4 frames) covering the layouts the reader handles, from the synthetic generator."""
    _, one, _ = synthesize(action=1, index=0, seed=0)  # one performer
    _, pair, _ = synthesize(action=5, index=1, seed=0)  # action 5: two performers
    _, other, _ = synthesize(action=10, index=2, seed=0)
    late = np.ones((2, 4), bool)
    late[1, :2] = False  # the second performer enters in frame 3
    empty_first = np.ones((2, 3), bool)
    empty_first[:, 0] = False  # nobody in frame 1
    crowd = np.concatenate([pair[:, :2], other[:, :2], one[:, :2]])  # five bodies: one more than the slots read
    return {
        "one body": _synthetic_file(one[:, :3], np.ones((1, 3), bool)),
        "late second body": _synthetic_file(pair[:, :4], late),
        "empty first frame": _synthetic_file(pair[:, :3], empty_first),
        "five bodies": _synthetic_file(crowd, np.ones((5, 2), bool)),
        "one frame, nobody": b"1\n0\n",
    }


BASE_FILES = _base_files()

# ----------------------------------------------------------------------------- the reference reader

SEPARATORS = re.compile(rb"[\x00-\x20]+")  # the format's field separators: the space and every control byte
# What a sensor writes: letters, digits, signs, dots, spaces and tabs, LF or CRLF line ends. Anything else
# (control bytes, a lone CR inside a line, non-ASCII) is junk, which a reader may refuse.
CLEAN = re.compile(rb"(?:[0-9A-Za-z+\-. \t]|\r?\n|\r\Z)*")
DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)
INTEGER = re.compile(r"[+-]?\d+")


class Invalid(Exception):
    """The reference reader's verdict: the format does not allow this file."""


def reference_bodies(raw, strict):
    """Read a raw file the slow, obvious way -> (4 slots, T, V, 3) float64, or raise Invalid.

    Written from SPEC.md's description of the format, independently of data_gen/ntu_gendata.py:
    frame count; per frame a body count; per body a line of 10 fields, a joint count (25) and 25 lines
    of 12 fields whose first three (x y z) are finite and within MAX_ABS_COORDINATE. Trailing blank
    lines are allowed. strict: counts and coordinates must be plain decimal numbers; otherwise (files
    with junk bytes) whatever Python's int()/float() accept is taken, the most any reader may accept.
    """
    rows = [[field.decode("latin-1") for field in SEPARATORS.split(line) if field] for line in raw.split(b"\n")]
    while rows and not rows[-1]:
        rows.pop()
    position = 0

    def next_row():
        nonlocal position
        if position >= len(rows):
            raise Invalid("the file ends early")
        position += 1
        return rows[position - 1]

    def count():
        row = next_row()
        if len(row) != 1 or (strict and not INTEGER.fullmatch(row[0])):
            raise Invalid("not a count")
        try:
            value = int(row[0])
        except ValueError:
            raise Invalid("not a count") from None
        if value < 0:
            raise Invalid("negative count")
        return value

    def coordinate(field):
        if strict and not DECIMAL.fullmatch(field):
            raise Invalid("not a decimal number")
        try:
            value = float(field)
        except ValueError:
            raise Invalid("not a number") from None
        if not abs(value) <= MAX_ABS_COORDINATE:  # NaN fails this too
            raise Invalid("not finite, or beyond any sensor's range")
        return value

    num_frames = count()
    if num_frames == 0:
        raise Invalid("no frames")
    frames = []
    for _ in range(num_frames):
        bodies = []
        for _ in range(count()):
            if len(next_row()) != 10:
                raise Invalid("body line without 10 fields")
            if count() != NUM_JOINTS:
                raise Invalid("wrong joint count")
            joints = []
            for _ in range(NUM_JOINTS):
                row = next_row()
                if len(row) != 12:
                    raise Invalid("joint line without 12 fields")
                joints.append([coordinate(field) for field in row[:3]])
            bodies.append(joints)
        frames.append(bodies)
    if position < len(rows):
        raise Invalid("content after the last frame")
    slots = np.zeros((SLOTS_READ, num_frames, NUM_JOINTS, 3))  # (M, T, V, C)
    for t, bodies in enumerate(frames):
        for m, joints in enumerate(bodies[:SLOTS_READ]):  # bodies beyond the 4th are dropped, as released
            slots[m, t] = joints
    return slots


def reference_energy(slot):
    """std(x) + std(y) + std(z) over the slot's non-empty frames (T, V, 3), 0 when it has none."""
    frames = slot[(slot != 0).any(axis=(1, 2))]
    return float(sum(frames[..., c].std() for c in range(3))) if len(frames) else 0.0


def assert_kept_the_most_energetic(out, slots):
    """out (C, T, V, 2) must be two distinct slots of `slots`, read exactly, the two of highest energy."""
    energy = [reference_energy(slot) for slot in slots]
    kept = out.transpose(3, 1, 2, 0)  # (2, T, V, C)
    candidates = [[s for s in range(SLOTS_READ) if np.array_equal(kept[m], slots[s].astype(np.float32))]
                  for m in range(SLOTS_KEPT)]
    tolerance = 1e-9 * (1 + max(energy))
    for first in candidates[0]:
        for second in candidates[1]:
            others = [energy[s] for s in range(SLOTS_READ) if s not in (first, second)]
            if (first != second and energy[first] >= energy[second] - tolerance
                    and min(energy[first], energy[second]) >= max(others) - tolerance):
                return
    raise AssertionError(f"kept slots {candidates} are not the two most energetic of {energy}")


# ----------------------------------------------------------------------------- mutations

SPECIAL_FIELDS = ["nan", "NaN", "-nan", "inf", "-Infinity", "1e300", "-1e300", "3.4e38", "1e39", "1e309",
                  "1e6", "-1e6", "1000001", "99999999999999999999", "1e-320", "-0", "0", "+1", ".5", "5.",
                  "1e", "--1", "1,5", "1_0", "0x1A", "abc", "", "\xa01", "٣"]
JUNK = [b"\x00", b"\x01", b"\x1f", b"\x7f", b"\x85", b"\xa0", b"\xff", b"\t", b"\r", b"\x0b", b" ", b"\n",
        b"x", b"-", b"+", b".", b"e", b"_", b",", b"9", b"0"]


def _fields(line):
    return [field for field in SEPARATORS.split(line) if field]


def _rejoin(line, fields):
    """A line made of `fields`, keeping a CRLF file's carriage return."""
    return b" ".join(fields) + (b"\r" if line.endswith(b"\r") else b"")


def _pick_line(raw, draw, keep=lambda fields: True):
    """(lines, index of a line whose fields satisfy `keep`), or (lines, None) when there is none."""
    lines = raw.split(b"\n")
    choices = [i for i, line in enumerate(lines) if keep(_fields(line))]
    return lines, (draw(st.sampled_from(choices)) if choices else None)


def truncate(raw, draw):
    return raw[:draw(st.integers(0, len(raw)))]


def insert_junk(raw, draw):
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + b"".join(draw(st.lists(st.sampled_from(JUNK), min_size=1, max_size=4))) + raw[at:]


def overwrite_byte(raw, draw):
    if not raw:
        return raw
    at = draw(st.integers(0, len(raw) - 1))
    return raw[:at] + draw(st.sampled_from(JUNK)) + raw[at + 1:]


def change_count(raw, draw):
    """A frame, body or joint count (a line with one field) becomes another integer."""
    lines, i = _pick_line(raw, draw, lambda fields: len(fields) == 1)
    if i is None:
        return raw
    value = draw(st.one_of(st.integers(-2, 30), st.sampled_from([300, 301, 10**6, 2**63, 10**30])))
    lines[i] = _rejoin(lines[i], [str(value).encode()])
    return b"\n".join(lines)


def replace_field(raw, draw):
    """One field of a body or joint line becomes a special value, a huge, tiny or odd number, or junk."""
    lines, i = _pick_line(raw, draw, lambda fields: len(fields) >= 2)
    if i is None:
        return raw
    fields = _fields(lines[i])
    new = draw(st.one_of(st.sampled_from(SPECIAL_FIELDS), st.floats().map(repr), st.integers().map(str)))
    fields[draw(st.integers(0, min(len(fields), 4) - 1))] = new.encode("latin-1", errors="replace")
    lines[i] = _rejoin(lines[i], [field for field in fields if field])
    return b"\n".join(lines)


def extra_field(raw, draw):
    lines, i = _pick_line(raw, draw)
    lines[i] = _rejoin(lines[i], _fields(lines[i]) + [draw(st.sampled_from([b"7", b"0.5", b"x"]))])
    return b"\n".join(lines)


def drop_field(raw, draw):
    lines, i = _pick_line(raw, draw, lambda fields: len(fields) >= 1)
    if i is None:
        return raw
    lines[i] = _rejoin(lines[i], _fields(lines[i])[:-1])
    return b"\n".join(lines)


def move_lines(raw, draw):
    """Delete, duplicate or swap lines, or insert a blank one."""
    lines = raw.split(b"\n")
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["delete", "duplicate", "swap", "blank"]))
    if how == "delete":
        del lines[i]
    elif how == "duplicate":
        lines.insert(i, lines[i])
    elif how == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    else:
        lines.insert(i, b"")
    return b"\n".join(lines)


def line_endings(raw, draw):
    """CRLF, a missing final newline, trailing blank lines, or tabs for spaces."""
    how = draw(st.sampled_from(["crlf", "no final newline", "trailing blanks", "tabs"]))
    return {"crlf": raw.replace(b"\n", b"\r\n"), "no final newline": raw.rstrip(b"\n"),
            "trailing blanks": raw + b"\n \n\t\n", "tabs": raw.replace(b" ", b"\t")}[how]


def empty(raw, draw):
    return draw(st.sampled_from([b"", b"\n", b" \r\n\t"]))


MUTATIONS = {f.__name__: f for f in (truncate, insert_junk, overwrite_byte, change_count, replace_field,
                                     extra_field, drop_field, move_lines, line_endings, empty)}


class MutatedFile:
    """A base file after some mutations; its repr (what hypothesis prints for a failure) shows the changes."""

    def __init__(self, base, mutations, raw):
        self.base, self.mutations, self.raw = base, mutations, raw

    def __repr__(self):
        before, after = ([line.rstrip(b"\r") for line in raw.split(b"\n")] for raw in (BASE_FILES[self.base], self.raw))
        diff = list(difflib.diff_bytes(difflib.unified_diff, before, after, lineterm=b"", n=0))[2:]  # CRs not shown
        shown = diff[:8] + ([f"... {len(diff) - 8} more".encode()] if len(diff) > 8 else [])
        return f"MutatedFile({self.base!r}, {self.mutations}, {len(self.raw)} bytes, diff {shown})"


@st.composite
def mutated_files(draw):
    """A valid synthetic file after one to three mutations (MutatedFile)."""
    base = draw(st.sampled_from(sorted(BASE_FILES)))
    names = draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3))
    raw = BASE_FILES[base]
    for name in names:
        raw = MUTATIONS[name](raw, draw)
    return MutatedFile(base, names, raw)


# ----------------------------------------------------------------------------- the property

def check_raw_file(path, raw):
    """The property of the module docstring for one raw file; returns "accepted" or "refused"."""
    path.write_bytes(raw)
    clean = CLEAN.fullmatch(raw) is not None
    try:
        slots = reference_bodies(raw, strict=clean)
    except Invalid:
        slots = None

    chunk = convert_chunk([str(path)])  # the conversion of one file: read, pad to 300 frames, normalise
    try:
        out = read_xyz(path)  # any exception but SkeletonFileError fails the test
    except SkeletonFileError as error:
        last_line = len(raw.split(b"\n")) + 1  # "ends early" may point one past the last line
        assert error.path == str(path) and isinstance(error.line, int) and 1 <= error.line <= last_line, error
        assert str(error).startswith(f"{path}, line {error.line}: ")
        assert slots is None or not clean, f"a valid file was refused: {error}"
        assert [str(e) for e in chunk.errors] == [str(error)] and chunk.names == []
        return "refused"

    assert slots is not None, "a file the format does not allow was read without an error"
    num_frames = slots.shape[1]
    assert out.dtype == np.float32 and out.shape == (3, num_frames, NUM_JOINTS, SLOTS_KEPT)
    assert np.isfinite(out).all()
    assert_kept_the_most_energetic(out, slots)
    assert chunk.errors == [] and chunk.names == [path.name] and chunk.num_frames == [num_frames]
    assert chunk.data.shape == (1, 3, MAX_FRAMES, NUM_JOINTS, SLOTS_KEPT) and np.isfinite(chunk.data).all()
    return "accepted"


@settings(FUZZ, max_examples=800)
@given(case=mutated_files())
def test_mutated_raw_files_are_read_exactly_or_refused_with_file_and_line(scratch, case):
    outcome = check_raw_file(scratch / "S001C001P001R001A001.skeleton", case.raw)
    record("raw skeleton files", outcome, case.mutations)


def test_every_base_file_is_valid_and_the_reference_reader_agrees(scratch):
    """The unmutated inputs are read (the fuzzer starts from valid files), the same by both readers."""
    for raw in BASE_FILES.values():
        assert check_raw_file(scratch / "S001C001P001R001A001.skeleton", raw) == "accepted"


@pytest.mark.parametrize("field, problem", [
    ("1_0", "not numbers"), ("0.1\r", "not numbers"),  # used to end in an AssertionError
    ("1e300", "finite"), ("3.5e38", "finite"),  # used to become inf in the float32 output, without an error
    ("0\x855", "unexpected byte 0x85"), ("0\xa05", "unexpected byte 0xa0"),  # used to be read as two numbers
    ("nan", "finite"),
])
def test_fields_the_fuzzer_found_misread_are_refused_with_their_line(scratch, field, problem):
    """Regressions for the bugs the fuzzer found in the reader: the y of a joint line (line 9) becomes `field`.

    "1_0" and a lone CR: Python's float() reads them, np.loadtxt does not, and the slow path that looks
    for the bad line used float(), found none and raised AssertionError. 1e300: finite in float64, inf
    once cast to the float32 output. \x85 and \xa0: np.loadtxt splits fields there and the field counter
    does not, so "0\x855 y z ..." passed the count of 12 fields and was read as x=0, y=5, z=y.
    """
    lines = BASE_FILES["one body"].split(b"\n")
    fields = lines[8].split(b" ")  # line 9: a joint line
    lines[8] = b" ".join([fields[0], field.encode("latin-1"), *fields[2:]])
    path = scratch / "S001C001P001R001A001.skeleton"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(SkeletonFileError, match=problem) as caught:
        read_xyz(path)
    assert caught.value.line == 9


# =========================================================================================================
# Prepared arrays: safe_io and the dataset builders
# =========================================================================================================

N, T, NUM_CLASSES = 3, 12, 3
VALID = np.array([12, 5, 1])  # real frames of each sample: all, some, one


def base_split():
    """(data (N, 3, T, V, 2) float32, num_frames (N,), names, labels): a valid split, zero padding."""
    data = np.random.default_rng(0).standard_normal((N, 3, T, NUM_JOINTS, 2)).astype(np.float32)
    for i, valid in enumerate(VALID):
        data[i, :, valid:] = 0
    return data, VALID.copy(), [f"S{i:03d}" for i in range(N)], list(range(NUM_CLASSES))


class OpensFile:
    """A label-file payload: unpickling it calls open(marker, "w"), i.e. creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _save(path, array, allow_pickle=False):
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=allow_pickle)


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


# Each mutation writes something over one file of the train or val split and returns (expectation,
# description). Expectations: "refuse" (DataFileError when the builders open the files), "refuse
# downstream" (only evaluation, which checks labels against the classes, must refuse), ("nan", i, inside)
# (a NaN/Inf in sample i, inside or after its real frames), ("accept", data) (everything reads, to the
# values written) and "either" (byte damage that may or may not leave a valid file).

def data_shape(draw, paths, split):
    data = split[0]
    how = draw(st.sampled_from(["joints", "persons", "coords", "4-D", "6-D", "no frames", "too few frames",
                                "one sample more", "one sample less"]))
    bad = {"joints": data[..., :24, :], "persons": data[..., :1], "coords": data[:, :2], "4-D": data[..., 0],
           "6-D": data[..., None], "no frames": data[:, :, :0], "too few frames": data[:, :, :4],
           "one sample more": np.concatenate([data, data[:1]]), "one sample less": data[:-1]}[how]
    _save(paths[0], bad)
    return "refuse", f"data shape: {how}"


def data_dtype(draw, paths, split):
    dtype = draw(st.sampled_from(["float16", "float64", ">f4", "int16", "int64", "bool", "complex64", "object"]))
    if dtype == "object":
        _save(paths[0], split[0].astype(object), allow_pickle=True)
        return "refuse", "data dtype object"
    converted = split[0].astype(dtype)
    _save(paths[0], converted)
    if np.dtype(dtype).kind == "f":
        return ("accept", converted.astype(np.float32)), f"data dtype {dtype}"
    return "refuse", f"data dtype {dtype}"


def non_finite(draw, paths, split):
    data = split[0].copy()
    i = draw(st.integers(0, N - 1))
    inside = VALID[i] == T or draw(st.booleans())
    t = draw(st.integers(0, VALID[i] - 1)) if inside else draw(st.integers(VALID[i], T - 1))
    data[i, draw(st.integers(0, 2)), t, draw(st.integers(0, NUM_JOINTS - 1)), draw(st.integers(0, 1))] = \
        draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    _save(paths[0], data)
    # NaN in the padding is never read; only the full scan (check_all_finite) sees it.
    return ("nan", i, inside), "non-finite value " + ("inside the real frames" if inside else "in the padding")


def frame_counts(draw, paths, split):
    how = draw(st.sampled_from(["zero", "negative", "beyond T", "huge", "fraction", "NaN", "whole floats",
                                "uint8", "bool", "2-D", "one count less", "strings"]))
    counts = VALID.copy()
    bad = {"zero": np.array([12, 0, 1]), "negative": np.array([12, -5, 1]), "beyond T": np.array([12, 5, T + 1]),
           "huge": np.array([12, 2**62, 1]), "fraction": np.array([12, 5.5, 1]), "NaN": np.array([12, np.nan, 1]),
           "whole floats": counts.astype(np.float64), "uint8": counts.astype(np.uint8),
           "bool": np.array([True, True, True]), "2-D": counts[None], "one count less": counts[:-1],
           "strings": counts.astype(str)}[how]
    _save(paths[1], bad)
    return (("accept", split[0]) if how in ("whole floats", "uint8") else "refuse"), f"frame counts: {how}"


def label_file(draw, paths, split, marker):
    names, labels = split[2], split[3]
    how = draw(st.sampled_from(["numpy ints", "bool", "float", "negative", "one label less", "names not str",
                                "not a pair", "array", "payload"]))
    content = {"numpy ints": (names, [np.int64(y) for y in labels]), "bool": (names, [True] * N),
               "float": (names, [1.0] * N), "negative": (names, [-1] + labels[1:]),
               "one label less": (names, labels[:-1]), "names not str": (list(range(N)), labels),
               "not a pair": (names, labels, "extra"), "array": (names, np.array(labels)),
               "payload": (names, [OpensFile(marker)] * N)}[how]
    _dump(paths[2], content)
    if how == "numpy ints":
        return ("accept", split[0]), "labels: numpy ints"
    if how == "negative":  # pretraining ignores labels; evaluation must refuse a label outside the classes
        return "refuse downstream", "labels: negative"
    return "refuse", f"labels: {how}"


def damage_bytes(draw, paths, split):
    path = draw(st.sampled_from(paths))
    how = draw(st.sampled_from(["truncate", "junk", "empty", "directory", "missing"]))
    raw = path.read_bytes()
    if how == "truncate":
        path.write_bytes(raw[:draw(st.integers(0, len(raw) - 1))])
    elif how == "junk":
        at = draw(st.integers(0, len(raw) - 1))
        path.write_bytes(raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at + 1:])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        if how == "directory":
            path.mkdir()
    kind = path.name.split("_", 1)[1]
    return ("refuse" if how in ("empty", "directory", "missing") else "either"), f"{kind}: {how}"


ARRAY_MUTATIONS = [data_shape, data_dtype, non_finite, frame_counts, label_file, damage_bytes]


def rule(expected, builder, part, mutated_part):
    """What `builder` must do with `part` of the mutated split: "refuse", "read", ("read but", i), "either"."""
    if part != mutated_part or (builder == "pretrain" and expected == "refuse downstream"):
        return "read"
    if expected in ("refuse", "refuse downstream", "either"):
        return expected.split()[0]
    if expected[0] == "nan":
        _, i, inside = expected
        if builder == "full scan":  # the up-front scan sees every sample, padding included
            return "refuse"
        return ("read but", i) if inside else "read"
    return "read"  # ("accept", data)


def _open_and_read(build):
    """Build the feeders; returns ("refused", message) or ("opened", {part: [item or DataFileError]})."""
    try:
        splits = build()
    except DataFileError as error:
        return "refused", str(error)
    items = {}
    for part, split in splits.items():
        items[part] = []
        for i in range(len(split)):
            try:
                items[part].append(split[i])
            except DataFileError as error:
                items[part].append(error)
    return "opened", items


def check_array_split(root, draw):
    """Mutate one file of a valid split, open and read it through the builders.

    Returns ("accepted" or "refused" (by at least one builder, or when reading a sample), description).
    """
    folder = root / "demo" / "xsub"
    shutil.rmtree(root, ignore_errors=True)
    split = base_split()
    for part in ("train", "val"):
        write_split(folder, part, *split)
    mutated_part = draw(st.sampled_from(["train", "val"]))
    paths = [folder / f"{mutated_part}_{name}" for name in ("data_joint.npy", "num_frame.npy", "label.pkl")]
    marker = root / "payload_ran"
    mutation = draw(st.sampled_from(ARRAY_MUTATIONS))
    extra = (marker,) if mutation is label_file else ()
    expected, description = mutation(draw, paths, split, *extra)

    builders = {
        "pretrain": lambda: {"train": build_pretrain_dataset(root, "demo", "cross_subject", view=RELEASED_VIEW,
                                                             seed=1)},
        "downstream": lambda: dict(zip(("train", "val"), build_downstream_datasets(root, "demo", "cross_subject"))),
        "full scan": lambda: dict(zip(("train", "val"), build_downstream_datasets(root, "demo", "cross_subject",
                                                                                  check_all_finite=True))),
    }
    refused = False
    for builder, build in builders.items():
        outcome, result = _open_and_read(build)
        assert not marker.exists(), "a label file ran code while it was read"
        refused |= outcome == "refused" or any(isinstance(item, DataFileError)
                                               for items in (result.values() if outcome == "opened" else [])
                                               for item in items)
        parts = ["train"] if builder == "pretrain" else ["train", "val"]
        rules = {part: rule(expected, builder, part, mutated_part) for part in parts}
        if outcome == "refused":
            assert str(folder) in result, f"the error does not name the file: {result}"
            assert any(r in ("refuse", "either") for r in rules.values()), \
                f"{description}: {builder} refused a valid split: {result}"
            continue
        assert "refuse" not in rules.values(), f"{description}: {builder} opened a bad split without an error"
        for part, items in result.items():
            for i, item in enumerate(items):
                bad = rules[part] == ("read but", i)
                if isinstance(item, DataFileError):
                    assert bad or rules[part] == "either", f"{description}: {builder} refused {part} sample {i}"
                    assert str(folder / f"{part}_data_joint.npy") in str(item) and f"sample {i}" in str(item), item
                    continue
                assert not bad, f"{description}: {builder} read a sample holding NaN/Inf without an error"
                for x in (item if builder == "pretrain" else item[:1]):  # pretrain: 4 views; else (x, label)
                    assert x.dtype.is_floating_point and tuple(x.shape) == (3, OUT_FRAMES, NUM_JOINTS, 2)
                    assert bool(x.isfinite().all())
                if builder == "pretrain" or rules[part] == "either":
                    continue
                written = split[0]
                if part == mutated_part and isinstance(expected, tuple) and expected[0] == "accept":
                    written = expected[1]
                # Read as written: the values (through the deterministic downstream view) and the label.
                np.testing.assert_array_equal(item[0].numpy(), downstream_view(written[i, :, :VALID[i]], VALID[i],
                                                                                      OUT_FRAMES))
                assert item[1] == split[3][i]
    return ("refused" if refused else "accepted"), description


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_mutated_prepared_splits_are_read_as_written_or_refused_naming_the_file(scratch, data):
    outcome, description = check_array_split(scratch / "split", data.draw)
    record("prepared splits", outcome, [description])


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4', 'fortran_order", None])
@pytest.mark.parametrize("name", ["train_data_joint.npy", "train_num_frame.npy"])
def test_empty_damaged_or_folder_npy_files_raise_data_file_error(tmp_path, name, content):
    """Regression for what the fuzzer found in safe_io: only ValueError was turned into DataFileError, but
    numpy raises EOFError for an empty file and tokenize.TokenError for a damaged header, and opening a
    folder raises IsADirectoryError (content None: the path is a folder)."""
    from safe_io import load_frame_counts, open_joint_data

    path = tmp_path / name
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(DataFileError, match="not a plain .npy array") as caught:
        open_joint_data(path) if name.endswith("joint.npy") else load_frame_counts(path, 300)
    assert str(caught.value).startswith(str(path))


def test_the_payload_label_file_is_live(tmp_path):
    """Control for the fuzzer's payload: an ordinary unpickler does run it (and creates the marker)."""
    marker = tmp_path / "payload_ran"
    with open(marker.parent / "l.pkl", "wb") as f:
        pickle.dump((["a"], [OpensFile(marker)]), f)
    with open(marker.parent / "l.pkl", "rb") as f:
        pickle.load(f)[1][0].close()
    assert marker.exists()
    os.remove(marker)
