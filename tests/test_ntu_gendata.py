"""NTU conversion (data_gen/ntu_gendata.py): reader, malformed files, splits, output layout, atomic writes."""
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import safe_io
from benchmarks.naive_preprocess import naive_convert, normalize_naive, read_xyz_naive
from data_gen import common, ntu_gendata
from data_gen.common import SkeletonFileError, body_energy, fields_per_line
from data_gen.normalize import normalize_skeletons
from data_gen.ntu_gendata import (
    NTU60_TRAIN_SUBJECTS,
    NTU120_TRAIN_SUBJECTS,
    InvalidFilesError,
    convert_chunk,
    gendata,
    main,
    parse_name,
    read_xyz,
)
from data_gen.synthetic import generate, skeleton_text
from options.protocols import prepared_folder

GOLDEN_FILE = "S002C003P008R002A055.skeleton"
FINAL_NAMES = ("train_data_joint.npy", "train_num_frame.npy", "train_label.pkl",
               "val_data_joint.npy", "val_num_frame.npy", "val_label.pkl")


@pytest.fixture(scope="module")
def raw_folder(tmp_path_factory):
    """40 synthetic raw files: 4 classes x 10 samples (ids cycle through cameras, setups, subjects)."""
    folder = tmp_path_factory.mktemp("raw")
    generate(folder, num_classes=4, samples_per_class=10, seed=3)
    return folder


def copy_of(raw_folder, tmp_path, count=None):
    """A private copy of (the first `count` of) the synthetic files, safe to modify."""
    folder = tmp_path / "raw"
    folder.mkdir()
    for path in sorted(raw_folder.iterdir())[:count]:
        shutil.copy(path, folder)
    return folder


def small_file_text(num_frames=2, seed=0):
    """A valid raw file with one body: line 1 frame count, then per frame 28 lines (1 + 1 + 1 + 25)."""
    bodies = np.random.default_rng(seed).normal(size=(1, num_frames, 25, 3)) + [0, 0, 3]
    return skeleton_text(bodies, np.ones((1, num_frames), bool), [72057594037927936])


def final_files(folder):
    """Every file under `folder` whose name looks finished (not a temporary)."""
    return sorted(p.name for p in Path(folder).rglob("*") if p.is_file() and ".tmp" not in p.name)


# ------------------------------------------------------------------------------------------ reading


def test_reader_matches_golden(golden, fixtures_dir):
    xyz = read_xyz(fixtures_dir / golden["reader_file"])
    assert xyz.shape == (3, 57, 25, 2) and xyz.dtype == np.float32
    np.testing.assert_allclose(xyz, golden["reader_xyz"].numpy(), rtol=0, atol=1e-5)


def test_reader_reads_crlf_and_a_missing_final_newline(fixtures_dir, tmp_path):
    raw = (fixtures_dir / GOLDEN_FILE).read_bytes().replace(b"\r\n", b"\n")
    crlf = tmp_path / "crlf.skeleton"
    crlf.write_bytes(raw.replace(b"\n", b"\r\n"))
    bare = tmp_path / "bare.skeleton"
    bare.write_bytes(raw.rstrip(b"\n"))
    expected = read_xyz(fixtures_dir / GOLDEN_FILE)
    assert b"\r\n" in crlf.read_bytes()
    np.testing.assert_array_equal(read_xyz(crlf), expected)
    np.testing.assert_array_equal(read_xyz(bare), expected)


def test_fields_per_line():
    assert fields_per_line(b"1\n 2  3 \r\n\n4\t5").tolist() == [1, 2, 0, 2]
    assert fields_per_line(b"").tolist() == [0]
    assert fields_per_line(b"7\n").tolist() == [1, 0]


def test_body_energy():
    bodies = np.zeros((3, 4, 2, 3))  # (M, T, V, C)
    bodies[0, :2] = [[[0, 0, 0], [2, 0, 0]]]  # frames 0-1: std(x) = 1, y and z constant
    bodies[1] = np.arange(24).reshape(4, 2, 3)
    energy = body_energy(bodies)
    assert energy[0] == pytest.approx(1.0)  # the empty frames 2-3 do not count
    assert energy[1] == pytest.approx(3 * np.arange(0, 24, 3).std())
    assert energy[2] == 0


def test_reader_keeps_the_two_most_energetic_bodies_of_at_most_four(tmp_path):
    rng = np.random.default_rng(0)
    spreads = [0.1, 0.01, 0.5, 0.05, 1.0]  # slot 4 is beyond the four slots the reader keeps
    bodies = np.stack([rng.normal(scale=s, size=(3, 25, 3)) + [0, 0, 3] for s in spreads])
    path = tmp_path / "crowd.skeleton"
    path.write_text(skeleton_text(bodies, np.ones((5, 3), bool), list(range(5))))
    xyz = read_xyz(path)  # (C, T, V, 2)
    np.testing.assert_allclose(xyz[..., 0], bodies[2].transpose(2, 0, 1), atol=1e-6)
    np.testing.assert_allclose(xyz[..., 1], bodies[0].transpose(2, 0, 1), atol=1e-6)


def test_reader_pads_a_single_body_with_zeros_and_keeps_empty_frames(tmp_path):
    bodies = np.random.default_rng(1).normal(size=(1, 4, 25, 3)) + [0, 0, 3]
    present = np.array([[False, True, True, False]])
    path = tmp_path / "gaps.skeleton"
    path.write_text(skeleton_text(bodies, present, [1]))
    xyz = read_xyz(path)
    assert xyz.shape == (3, 4, 25, 2)
    assert not xyz[..., 1].any() and not xyz[:, [0, 3]].any()
    np.testing.assert_allclose(xyz[:, 1:3, :, 0], bodies[0, 1:3].transpose(2, 0, 1), atol=1e-6)


def replace_line(text, number, new):
    """Replace 1-based line `number`."""
    lines = text.split("\n")
    lines[number - 1] = new
    return "\n".join(lines)


def cut_after(text, number):
    """Keep lines 1..number."""
    return "\n".join(text.split("\n")[:number]) + "\n"


def joint_line(text, number, xyz):
    """Line `number` (a joint line) with its x y z replaced."""
    fields = text.split("\n")[number - 1].split()
    return replace_line(text, number, " ".join(list(xyz) + fields[3:]))


# Lines of small_file_text(): 1 frame count | 2 body count | 3 body fields | 4 joint count | 5-29 joints |
# 30 body count of frame 2 | 31 body fields | 32 joint count | 33-57 joints.
MALFORMED = {
    "empty file": (lambda t: "", 1, "frame count"),
    "zero frames": (lambda t: "0\n", 1, "zero frames"),
    "frame count not a number": (lambda t: replace_line(t, 1, "two"), 1, "frame count"),
    "body count not a number": (lambda t: replace_line(t, 30, "1.5"), 30, "body count of frame 2"),
    "negative body count": (lambda t: replace_line(t, 2, "-1"), 2, "negative"),
    "short body line": (lambda t: replace_line(t, 3, "1 0 1 1 1 1 0 0.1 2"), 3, "10 fields"),
    "wrong joint count": (lambda t: replace_line(t, 32, "24"), 32, "24 joints"),
    "missing joint lines": (lambda t: cut_after(t, 50), 51, "ends early"),
    "truncated in a line": (lambda t: cut_after(t, 56) + "0.1 0.2 0.3 1", 57, "12 fields"),
    "missing frame": (lambda t: cut_after(t, 29), 30, "body count of frame 2"),
    "x is not a number": (lambda t: joint_line(t, 40, ["abc", "0", "3"]), 40, "not numbers"),
    "z is NaN": (lambda t: joint_line(t, 9, ["0.1", "0.2", "nan"]), 9, "finite"),
    "y is Inf": (lambda t: joint_line(t, 57, ["0.1", "-inf", "3"]), 57, "finite"),
    "extra joint field": (lambda t: replace_line(t, 20, t.split("\n")[19] + " 7"), 20, "12 fields"),
    "blank joint line": (lambda t: replace_line(t, 12, ""), 12, "found 0"),
    "content after the frames": (lambda t: t + "1\n", 58, "after the last"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_file_and_line(case, tmp_path):
    mutate, line, reason = MALFORMED[case]
    text = small_file_text()
    assert len(text.rstrip("\n").split("\n")) == 57
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(mutate(text))
    with pytest.raises(SkeletonFileError) as caught:
        read_xyz(path)
    assert caught.value.line == line, str(caught.value)
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"{path}, line {line}: ")


def test_valid_small_file_and_crlf_variant_read(tmp_path):
    path = tmp_path / "ok.skeleton"
    path.write_bytes(small_file_text().replace("\n", "\r\n").encode())
    assert read_xyz(path).shape == (3, 2, 25, 2)


def test_unreadable_file_and_too_many_frames(tmp_path):
    with pytest.raises(SkeletonFileError, match="cannot read"):
        read_xyz(tmp_path / "missing.skeleton")
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(small_file_text(num_frames=5))
    chunk = convert_chunk([str(path)], max_frames=4)
    assert chunk.names == [] and len(chunk.data) == 0
    assert chunk.errors[0].line == 1 and "5 frames, more than the 4" in str(chunk.errors[0])


def test_skeleton_file_error_survives_pickling():
    error = pickle.loads(pickle.dumps(SkeletonFileError("a.skeleton", 3, "bad")))
    assert (error.path, error.line, error.reason) == ("a.skeleton", 3, "bad")
    assert str(error) == "a.skeleton, line 3: bad"


def test_naive_yardstick_gives_the_same_arrays(raw_folder, golden):
    paths = sorted(raw_folder.iterdir())[:4]
    for path in paths:
        np.testing.assert_array_equal(read_xyz_naive(path), read_xyz(path))
    fast = convert_chunk([str(p) for p in paths]).data
    np.testing.assert_allclose(naive_convert(paths), fast, rtol=0, atol=1e-5)
    for sample, expected in zip(golden["prenorm_input"].numpy(), golden["prenorm_output"].numpy()):
        np.testing.assert_allclose(normalize_naive(sample), expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------ conversion


def load_part(folder, part):
    """(data, num_frame, names, labels) of a written part; the project's safe loaders must accept it."""
    data = np.load(folder / f"{part}_data_joint.npy", mmap_mode="r")
    num_frame = safe_io.load_frame_counts(folder / f"{part}_num_frame.npy", max_frames=data.shape[2])
    safe_io.load_labels(folder / f"{part}_label.pkl")
    with open(folder / f"{part}_label.pkl", "rb") as file:
        names, labels = pickle.load(file)
    return data, num_frame, names, labels


@pytest.mark.parametrize("dataset, protocols, workers", [
    ("ntu60", ("cross_subject", "cross_view"), 2),
    ("ntu120", ("cross_subject", "cross_setup"), 1),
])
def test_cli_writes_the_released_layout_and_splits(raw_folder, tmp_path, dataset, protocols, workers):
    main(["--data_path", str(raw_folder), "--dataset", dataset, "--out_folder", str(tmp_path),
          "--workers", str(workers)])
    all_names = sorted(p.name for p in raw_folder.iterdir())
    frames = {p.name: int(p.read_text().split("\n", 1)[0]) for p in raw_folder.iterdir()}
    first = sorted(raw_folder.iterdir())[0]
    expected_first = np.zeros((1, 3, 300, 25, 2), np.float32)
    expected_first[0, :, :frames[first.name]] = read_xyz(first)
    expected_first = normalize_skeletons(expected_first)[0]
    for protocol in protocols:
        folder = prepared_folder(tmp_path, dataset, protocol)
        assert sorted(p.name for p in folder.iterdir()) == sorted(FINAL_NAMES)
        seen = []
        for part in ("train", "val"):
            data, num_frame, names, labels = load_part(folder, part)
            assert data.dtype == np.float32 and data.shape == (len(names), 3, 300, 25, 2)
            assert len(names) > 0 and names == sorted(names)
            assert type(names) is list and type(labels) is list  # plain lists of str and int
            assert all(type(n) is str for n in names) and all(type(label) is int for label in labels)
            assert num_frame.dtype == np.int64 and num_frame.tolist() == [frames[n] for n in names]
            for name, label in zip(names, labels):
                sample = parse_name(name)
                assert label == sample.action - 1
                assert ntu_gendata.is_training(sample, dataset, protocol) == (part == "train")
            if first.name in names:
                np.testing.assert_array_equal(data[names.index(first.name)], expected_first)
            seen += names
        assert sorted(seen) == all_names  # every sample lands in exactly one part


def test_split_rules():
    sample = parse_name("S018C002P045R001A061.skeleton")
    assert (sample.setup, sample.camera, sample.subject, sample.replication) == (18, 2, 45, 1)
    assert sample.label == 60
    assert ntu_gendata.is_training(sample, "ntu120", "cross_subject")
    assert not ntu_gendata.is_training(sample, "ntu60", "cross_subject")  # subject 45 trains only in NTU-120
    assert ntu_gendata.is_training(sample, "ntu60", "cross_view")
    assert ntu_gendata.is_training(sample, "ntu120", "cross_setup")
    val = parse_name("S017C001P003R002A001.skeleton")
    assert not any(ntu_gendata.is_training(val, d, p) for d, p in [
        ("ntu60", "cross_subject"), ("ntu60", "cross_view"), ("ntu120", "cross_subject"), ("ntu120", "cross_setup")])
    assert len(NTU60_TRAIN_SUBJECTS) == 20 and len(NTU120_TRAIN_SUBJECTS) == 53
    assert parse_name("notes.skeleton") is None


def test_ignored_samples_and_ntu120_only_files_are_left_out(raw_folder, tmp_path):
    folder = copy_of(raw_folder, tmp_path, count=6)
    names = sorted(p.name for p in folder.iterdir())
    shutil.copy(folder / names[0], folder / "S018C001P050R001A001.skeleton")  # NTU-120 setup
    shutil.copy(folder / names[0], folder / "S001C001P001R001A061.skeleton")  # NTU-120 action
    ignore = tmp_path / "missing.txt"
    ignore.write_text(f"{names[1].removesuffix('.skeleton')}\n\n{names[2].removesuffix('.skeleton')}\n")
    summary = gendata(folder, tmp_path / "out", "ntu60", ignored_sample_path=ignore, progress=False)
    assert summary["converted"] == 4 and summary["left_out"] == 4
    written = []
    for part in ("train", "val"):
        written += load_part(tmp_path / "out" / "NTU-RGB-D-60-AGCN" / "xview", part)[2]
    assert sorted(written) == [names[0]] + names[3:]
    summary = gendata(folder, tmp_path / "out120", "ntu120", ignored_sample_path=ignore, progress=False)
    assert summary["converted"] == 6 and summary["left_out"] == 2


def test_ntu120_reads_several_folders_and_rejects_duplicates(raw_folder, tmp_path):
    names = sorted(p.name for p in raw_folder.iterdir())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i, name in enumerate(names[:6]):
        shutil.copy(raw_folder / name, tmp_path / ("a" if i % 2 else "b"))
    summary = gendata([tmp_path / "a", tmp_path / "b"], tmp_path / "out", "ntu120", progress=False)
    assert summary["converted"] == 6
    shutil.copy(raw_folder / names[1], tmp_path / "b")
    with pytest.raises(ntu_gendata.DataPathError, match="in two data paths"):
        gendata([tmp_path / "a", tmp_path / "b"], tmp_path / "out2", "ntu120", progress=False)


def break_one_file(folder):
    """Truncate the third file in the middle of a joint line; returns its name."""
    path = sorted(folder.iterdir())[2]
    text = path.read_text()
    path.write_text(text[:len(text) // 2].rsplit(" ", 3)[0])
    return path.name


def test_default_run_with_a_bad_file_writes_nothing(raw_folder, tmp_path):
    folder = copy_of(raw_folder, tmp_path, count=8)
    bad = break_one_file(folder)
    (folder / "notes.skeleton").write_text("1\n0\n")
    out = tmp_path / "out"
    with pytest.raises(InvalidFilesError) as caught:
        gendata(folder, out, "ntu60", progress=False)
    assert len(caught.value.errors) == 2  # every bad file is reported, not only the first
    message = str(caught.value)
    assert re.search(rf"{bad}, line \d+: ", message) and "notes.skeleton" in message
    assert "--skip-invalid" in message
    assert [p for p in out.rglob("*") if p.is_file()] == []  # neither final nor temporary files
    with pytest.raises(SystemExit, match="invalid skeleton file"):
        main(["--data_path", str(folder), "--dataset", "ntu60", "--out_folder", str(out), "--workers", "1"])


def test_skip_invalid_writes_the_rest_and_the_skip_list(raw_folder, tmp_path):
    folder = copy_of(raw_folder, tmp_path, count=8)
    bad = break_one_file(folder)
    out = tmp_path / "out"
    main(["--data_path", str(folder), "--dataset", "ntu60", "--out_folder", str(out), "--workers", "1",
          "--skip-invalid"])
    root = out / "NTU-RGB-D-60-AGCN"
    skipped = (root / "skipped_files.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(f"{bad}\t") and ", line " in skipped[0]
    for benchmark in ("xsub", "xview"):
        written = []
        for part in ("train", "val"):
            data, num_frame, names, labels = load_part(root / benchmark, part)
            assert len(data) == len(num_frame) == len(names) == len(labels)
            written += names
        assert sorted(written) == sorted(p.name for p in folder.iterdir() if p.name != bad)
    assert final_files(out) == sorted(["skipped_files.txt"] + 2 * list(FINAL_NAMES))


def test_interrupted_run_leaves_no_finished_looking_files(raw_folder, tmp_path, monkeypatch):
    folder = copy_of(raw_folder, tmp_path, count=8)
    out = tmp_path / "out"
    calls = []
    real_write = common.PartWriter.write

    def write_then_interrupt(self, *args):
        calls.append(self.part)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_write(self, *args)

    monkeypatch.setattr(common.PartWriter, "write", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        gendata(folder, out, "ntu60", chunk_size=2, progress=False)
    assert len(calls) == 3
    assert final_files(out) == [] and [p for p in out.rglob("*") if p.is_file()] == []


def test_only_temporary_names_exist_until_the_commit(raw_folder, tmp_path, monkeypatch):
    """A run killed at any point before the renames (here: just before) leaves only *.tmp files."""
    folder = copy_of(raw_folder, tmp_path, count=6)
    out = tmp_path / "out"
    listings = []
    real_commit = common.PartWriter.commit

    def look_then_commit(self):
        listings.append(sorted(p.name for p in out.rglob("*") if p.is_file()))
        real_commit(self)

    monkeypatch.setattr(common.PartWriter, "commit", look_then_commit)
    gendata(folder, out, "ntu60", progress=False)
    assert listings[0] and all(name.endswith(".tmp") for name in listings[0])
    assert final_files(out) == sorted(2 * list(FINAL_NAMES))


def test_parallel_map_keeps_the_order_and_reads_only_a_few_items_ahead():
    pulled = []

    def items():
        for i in range(20):
            pulled.append(i)
            yield -i

    results = common.parallel_map(abs, items(), workers=2)
    assert next(results) == 0 and len(pulled) <= 4  # two per worker in flight, not the whole input
    assert list(results) == list(range(1, 20))


def test_cli_reports_a_missing_data_path_without_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match="is not a folder"):
        main(["--data_path", str(tmp_path / "nowhere"), "--dataset", "ntu60", "--out_folder", str(tmp_path)])


def test_benchmark_script_runs_on_a_few_files():
    from benchmarks.preprocess import run

    results = run(num_files=3, workers=1, seed=0)
    assert results["num_files"] == 3 and results["output_mb"] > 0
    for key in ("fast", "naive", "naive_one_pass"):
        assert results[key]["files_per_s"] > 0
    assert results["speedup_end_to_end"] > 0 and results["fast"]["peak_rss_mb_main"] > 0
