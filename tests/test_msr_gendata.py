"""MSR Action3D conversion: parsing, padding, split, output layout, and one run on the real shared data."""
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

import safe_io
from data_gen.common import SkeletonFileError, fit_length, parse_number_table
from data_gen.msr_gendata import gendata, main, parse_name, read_msr_skeleton, split_cross_subject
from data_gen.normalize import normalize_skeletons
from skeleton import MSR_20

MSR_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "msr_action3d"
V = MSR_20.num_joints


def write_msr_file(path, joints, seed=0):
    """joints (T, 20, 3) -> an MSR skeleton file: one `x y z c` line per joint, like the real release."""
    confidence = np.random.default_rng(seed).uniform(0, 1, joints.shape[:2] + (1,))
    np.savetxt(path, np.concatenate([joints, confidence], -1).reshape(-1, 4), fmt="%.6f")


def random_sequence(num_frames, seed):
    """An upright-ish (T, 20, 3) sequence in metres, rounded to what '%.6f' keeps; no exact zeros."""
    rng = np.random.default_rng(seed)
    pose = rng.uniform(-0.5, 0.5, (V, 3)) + [0.0, 0.0, 2.5]
    pose[0, 0], pose[1, 0] = -0.2, 0.2  # left shoulder at smaller x, as in the real data
    walk = np.cumsum(rng.normal(0, 0.01, (num_frames, V, 3)), axis=0)
    return np.round(pose + walk, 6)


def read_split(folder, part):
    data = np.load(folder / f"{part}_data_joint.npy")
    num_frame = np.load(folder / f"{part}_num_frame.npy")
    with open(folder / f"{part}_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    return data, num_frame, names, labels


# ----------------------------------------------------------------------------- parsing
def test_parse_number_table_reads_rows_and_tolerates_trailing_blanks_and_crlf():
    table = parse_number_table(b"1 2.5 -3e-1\r\n4\t5 6 \n\n\n", 3, "f.txt")
    np.testing.assert_array_equal(table, np.array([[1, 2.5, -0.3], [4, 5, 6]], np.float32))
    assert table.dtype == np.float32


@pytest.mark.parametrize("raw, message", [
    (b"1 2 3\n4 5\n7 8 9\n", "f.txt, line 2: expected 3 numbers, found 2"),
    (b"1 2 3\n4 5 6 7\n", "f.txt, line 2: expected 3 numbers, found 4"),
    (b"1 2 3\n\n4 5 6\n", "f.txt, line 2: expected 3 numbers, found 0"),
    (b"1 2 3\n4 5 6\n7 x 9\n", "f.txt, line 3: not a number: 'x'"),
    (b"1 2 3\n4 nan 6\n", "f.txt, line 2: non-finite value"),
])
def test_parse_number_table_names_file_and_line(raw, message):
    with pytest.raises(SkeletonFileError, match=message):
        parse_number_table(raw, 3, "f.txt")


def test_read_msr_skeleton_drops_confidence_and_orders_axes(tmp_path):
    joints = random_sequence(7, seed=1)  # (T, V, 3)
    path = tmp_path / "a01_s01_e01_skeleton3D.txt"
    write_msr_file(path, joints)
    seq = read_msr_skeleton(path)
    assert seq.shape == (3, 7, V, 1) and seq.dtype == np.float32
    np.testing.assert_allclose(seq[..., 0], joints.transpose(2, 0, 1), atol=1e-6)  # (C, T, V)


def test_read_msr_skeleton_rejects_an_incomplete_frame(tmp_path):
    path = tmp_path / "a01_s01_e01_skeleton3D.txt"
    write_msr_file(path, random_sequence(3, seed=2))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-5]) + "\n")  # 55 lines: the third frame is cut short
    with pytest.raises(SkeletonFileError, match=rf"{path.name}, line 41: 55 lines is not a whole"):
        read_msr_skeleton(path)


def test_parse_name_and_cross_subject_split():
    assert parse_name("a13_s09_e02") == (13, 9, 2)
    assert parse_name("a13_s09_e02_skeleton3D.txt") == (13, 9, 2)
    with pytest.raises(ValueError, match="aAA_sSS_eEE"):
        parse_name("a13_s09")
    names = [f"a01_s{s:02d}_e01" for s in range(1, 11)]
    split = split_cross_subject(names)
    assert split["train"] == [f"a01_s{s:02d}_e01" for s in (1, 3, 5, 7, 9)]
    assert split["val"] == [f"a01_s{s:02d}_e01" for s in (2, 4, 6, 8, 10)]


def test_fit_length_pads_with_zeros_and_resamples_long_sequences_evenly():
    seq = np.arange(1, 11, dtype=np.float32).reshape(1, 10, 1, 1)  # value = 1-based frame number
    padded, n = fit_length(seq, 16)
    assert n == 10 and padded.shape == (1, 16, 1, 1)
    np.testing.assert_array_equal(padded[0, :, 0, 0], [*range(1, 11)] + [0] * 6)

    long = np.arange(1, 451, dtype=np.float32).reshape(1, 450, 1, 1)
    resampled, n = fit_length(long, 300)
    frames = resampled[0, :, 0, 0]
    assert n == 300 and resampled.shape == (1, 300, 1, 1)
    assert frames[0] == 1 and frames[-1] == 450  # the whole action survives, not its first 300 frames
    assert set(np.diff(frames)) <= {1.0, 2.0}  # evenly spread, no frame repeated


# ----------------------------------------------------------------------------- conversion
@pytest.fixture
def msr_folder(tmp_path):
    """Five generated files: subjects 1 and 3 (train) and 2 (val), actions 1, 2 and 20."""
    folder = tmp_path / "MSRAction3DSkeletonReal3D"
    folder.mkdir()
    specs = {"a01_s01_e01": 12, "a02_s03_e02": 20, "a20_s02_e01": 9, "a02_s02_e03": 15, "a20_s01_e01": 30}
    for seed, (name, frames) in enumerate(specs.items()):
        write_msr_file(folder / f"{name}_skeleton3D.txt", random_sequence(frames, seed), seed)
    return folder, specs


def test_gendata_writes_the_ntu_layout(msr_folder, tmp_path):
    folder, specs = msr_folder
    counts = gendata(folder, tmp_path / "out", max_frames=32)
    out = tmp_path / "out" / "MSR-Action3D" / "xsub"
    assert counts == {"train": 3, "val": 2}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{part}_{kind}" for part in ("train", "val")
        for kind in ("data_joint.npy", "num_frame.npy", "label.pkl"))  # no temporary file left behind

    data, num_frame, names, labels = read_split(out, "train")
    assert names == ["a01_s01_e01", "a02_s03_e02", "a20_s01_e01"]
    assert labels == [0, 1, 19] and all(type(y) is int for y in labels)
    assert data.shape == (3, 3, 32, V, 1) and data.dtype == np.float32
    assert num_frame.tolist() == [12, 20, 30]

    # Each sample is the file, padded and normalised exactly as normalize_skeletons does it.
    raw = np.stack([fit_length(read_msr_skeleton(folder / f"{n}_skeleton3D.txt"), 32)[0] for n in names])
    np.testing.assert_allclose(data, normalize_skeletons(raw, topology=MSR_20), atol=1e-6)
    # ... which means: centred on the spine, shoulders along +x in frame 0.
    assert np.abs(data[:, :, :, MSR_20.center_joint]).max() < 1e-6
    left, right = MSR_20.shoulders
    shoulder = data[:, :, 0, right, 0] - data[:, :, 0, left, 0]  # (N, 3)
    assert (shoulder[:, 0] > 0).all() and np.abs(shoulder[:, 1:]).max() < 1e-5

    _, num_frame, names, labels = read_split(out, "val")
    assert names == ["a02_s02_e03", "a20_s02_e01"] and labels == [1, 19] and num_frame.tolist() == [15, 9]


def test_gendata_keeps_only_the_sample_list(msr_folder, tmp_path):
    folder, _ = msr_folder
    sample_list = tmp_path / "list.txt"
    sample_list.write_text("a20_s01_e01\n\na02_s02_e03_skeleton3D.txt\n")  # blank line and a suffix
    assert gendata(folder, tmp_path / "out", sample_list) == {"train": 1, "val": 1}
    data, _, names, _ = read_split(tmp_path / "out" / "MSR-Action3D" / "xsub", "train")
    assert names == ["a20_s01_e01"] and data.shape == (1, 3, 300, V, 1)

    sample_list.write_text("a20_s01_e01\n")  # no validation subject left: an empty val part
    assert gendata(folder, tmp_path / "out", sample_list) == {"train": 1, "val": 0}
    data, num_frame, names, labels = read_split(tmp_path / "out" / "MSR-Action3D" / "xsub", "val")
    assert data.shape == (0, 3, 300, V, 1) and num_frame.shape == (0,) and names == labels == []

    sample_list.write_text("a20_s01_e01\na05_s01_e01\n")
    with pytest.raises(FileNotFoundError, match=r"1 samples of .*list.txt have no file.*a05_s01_e01"):
        gendata(folder, tmp_path / "out", sample_list)


def test_cli_reports_a_missing_data_path_without_a_traceback(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit, match=f"^error: {missing} does not exist$"):
        main(["--data_path", str(missing), "--out_folder", str(tmp_path / "out")])


def test_cli_names_a_malformed_file(msr_folder, tmp_path):
    folder, _ = msr_folder
    bad = folder / "a01_s01_e01_skeleton3D.txt"
    lines = bad.read_text().splitlines()
    lines[3] = "0.1 0.2 zero 1.0"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit, match=rf"error: .*{bad.name}, line 4: not a number: 'zero'"):
        main(["--data_path", str(folder), "--out_folder", str(tmp_path / "out")])


# ----------------------------------------------------------------------------- the real data set
@pytest.fixture(scope="module")
def real_msr(tmp_path_factory):
    """The 557-sample cross-subject conversion of the shared MSR Action3D copy, done once."""
    if not MSR_DATA.is_dir():
        pytest.skip(f"real MSR Action3D data not found at {MSR_DATA}")
    out = tmp_path_factory.mktemp("msr")
    start = time.time()
    counts = gendata(MSR_DATA / "MSRAction3DSkeletonReal3D", out, MSR_DATA / "files_used_in_cvpr12_paper.txt")
    print(f"converted real MSR Action3D in {time.time() - start:.1f} s")
    return counts, out / "MSR-Action3D" / "xsub"


def test_real_msr_counts_and_labels(real_msr):
    counts, out = real_msr
    assert counts == {"train": 284, "val": 273}
    for part, subjects, shortest, longest in (("train", {1, 3, 5, 7, 9}, 13, 76),
                                              ("val", {2, 4, 6, 8, 10}, 18, 72)):
        data, num_frame, names, labels = read_split(out, part)
        assert data.shape == (counts[part], 3, 300, V, 1) and np.isfinite(data).all()
        assert sorted(set(labels)) == list(range(20))
        assert {parse_name(n)[1] for n in names} == subjects
        assert labels == [parse_name(n)[0] - 1 for n in names]
        # Frame count = lines / 20 of each file (counted here without the converter's parser).
        lines = [(MSR_DATA / "MSRAction3DSkeletonReal3D" / f"{n}_skeleton3D.txt").read_bytes().count(b"\n")
                 for n in names]
        assert num_frame.tolist() == [n // V for n in lines]
        assert (num_frame.min(), num_frame.max()) == (shortest, longest)


def test_real_msr_passes_the_feeders_file_checks(real_msr):
    _, out = real_msr
    for part in ("train", "val"):
        data = safe_io.open_joint_data(out / f"{part}_data_joint.npy")
        num_frame = safe_io.load_frame_counts(out / f"{part}_num_frame.npy", max_frames=data.shape[2])
        names, labels = safe_io.load_labels(out / f"{part}_label.pkl")
        safe_io.check_label_range(labels, 20, out / f"{part}_label.pkl")
        safe_io.check_same_length([("data", len(data)), ("frames", len(num_frame)), ("labels", len(names))])
        safe_io.check_all_finite(data, out / f"{part}_data_joint.npy")


def test_real_msr_is_upright_like_ntu(real_msr):
    """No axis flip is needed: after normalisation y is up, left -> right shoulder is +x and the subject
    faces the camera (-z, feet pointing forward), as in NTU's right-handed Kinect camera space."""
    _, out = real_msr
    data, num_frame, _, _ = read_split(out, "train")
    # Were MSR's x mirrored relative to NTU's, the shoulder alignment would turn the body ~180 degrees
    # about z and put the head below the feet; so this checks the convention, not just the rotation.
    frame = np.arange(data.shape[2])[None, :] < num_frame[:, None]  # (N, T) real frames only
    y = data[:, 1, :, :, 0][frame]  # (real frames, V)
    head, feet = 19, [17, 18]
    assert (y[:, head] > y[:, feet].max(1)).mean() > 0.99
    # A mirrored z (left-handed frame) would keep all of the above but turn the feet backwards.
    z = data[:, 2, :, :, 0][frame]  # (real frames, V)
    ankles = [15, 16]
    assert (z[:, feet].sum(1) < z[:, ankles].sum(1)).mean() > 0.9
    left, right = MSR_20.shoulders
    shoulder_x = data[:, 0, 0, right, 0] - data[:, 0, 0, left, 0]
    assert (shoulder_x > 0).all()
