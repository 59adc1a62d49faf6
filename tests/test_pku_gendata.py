"""PKU-MMD II conversion on generated files in the release format: readers, instance cutting, output."""
import pickle

import numpy as np
import pytest

import safe_io
from data_gen.common import SkeletonFileError, fit_length
from data_gen.normalize import normalize_skeletons
from data_gen.pku_gendata import (
    ActionInstance,
    cut_instance,
    gendata,
    main,
    main_body_first,
    read_labels,
    read_pku_skeleton,
    read_split_file,
)
from skeleton import NTU_25

V = NTU_25.num_joints


# ----------------------------------------------------------------------------- a tiny PKU-MMD II generator
def random_video(num_frames, seed, second_person=False):
    """(T, 2, 25, 3) skeletons of a video in metres, rounded as '%.6f' writes them; person 2 0 if absent."""
    rng = np.random.default_rng(seed)
    pose = rng.uniform(-0.5, 0.5, (2, V, 3)) + [0.0, 0.0, 3.0]
    walk = np.cumsum(rng.normal(0, 0.01, (num_frames, 2, V, 3)), axis=0)
    video = np.round(pose + walk, 6)
    if not second_person:
        video[:, 1] = 0
    return video


def write_video(root, video_name, skeleton, instances):
    """Write `<root>/skeleton/<video>.txt` (150 numbers a line) and `<root>/label/<video>.txt`."""
    for folder in ("skeleton", "label"):
        (root / folder).mkdir(exist_ok=True)
    np.savetxt(root / "skeleton" / f"{video_name}.txt", skeleton.reshape(len(skeleton), -1), fmt="%.6f")
    (root / "label" / f"{video_name}.txt").write_text(
        "".join(f"{label},{start},{end},{confidence}\n" for label, start, end, confidence in instances))


# As in the official cross-subject.txt: trailing blanks after headers and commas, its 'Validataion' typo.
OFFICIAL_SPLIT = ("Training videos: \n"
                  "A01N01-L, A01N01-M,\n"
                  "A02N01-R, \n"
                  "Validataion videos: \n"
                  "A05N01-L, A05N01-M\n")


@pytest.fixture
def pku_root(tmp_path):
    """Five videos (three train, two val) with their raw skeletons and label lines."""
    videos = {
        "A01N01-L": (random_video(60, 0), [(1, 1, 20, 2), (41, 21, 60, 1)]),
        "A01N01-M": (random_video(40, 1, second_person=True), [(7, 5, 14, 2)]),
        "A02N01-R": (random_video(400, 2), [(3, 11, 360, 2)]),  # a 350-frame instance
        "A05N01-L": (random_video(30, 3), [(2, 1, 30, 2), (2, 3, 3, 1)]),
        "A05N01-M": (random_video(10, 4), []),  # a video without any action instance
    }
    # An instance whose first person is missing: the second one must become the main body.
    videos["A01N01-M"][0][4:14, 0] = 0
    for name, (skeleton, instances) in videos.items():
        write_video(tmp_path, name, skeleton, instances)
    (tmp_path / "split.txt").write_text(OFFICIAL_SPLIT)
    return tmp_path, videos


def run_gendata(root, **kwargs):
    return gendata(root / "skeleton", root / "label", root / "split.txt", root / "out", **kwargs)


def read_part(root, part):
    folder = root / "out" / "PKU-MMD-II" / "xsub"
    with open(folder / f"{part}_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    return (np.load(folder / f"{part}_data_joint.npy"), np.load(folder / f"{part}_num_frame.npy"),
            names, labels)


# ----------------------------------------------------------------------------- readers
@pytest.mark.parametrize("text, expected", [
    (OFFICIAL_SPLIT, {"train": ["A01N01-L", "A01N01-M", "A02N01-R"], "val": ["A05N01-L", "A05N01-M"]}),
    ("training videos: a, b\n\n  c\nTesting videos:d,e,\n", {"train": ["a", "b", "c"], "val": ["d", "e"]}),
    ("Validation videos:\nx y\nTrain:\nz\n", {"train": ["z"], "val": ["x", "y"]}),
    ("\ufeffTraining videos: \r\na,\r\nval: b\r\n", {"train": ["a"], "val": ["b"]}),  # BOM and CRLF
])
def test_read_split_file_accepts_the_official_layout_and_variants(tmp_path, text, expected):
    path = tmp_path / "split.txt"
    path.write_text(text, encoding="utf-8")
    assert read_split_file(path) == expected


@pytest.mark.parametrize("text, message", [
    ("A01N01-L\nTraining videos:\nb\nValidation videos:\nc\n", r"split.txt, line 1: video names before"),
    ("Training videos:\na, b\n", r"no 'val' section"),
    ("Training videos:\n\nValidation videos:\nc\n", r"no 'train' section"),
    ("Training videos:\na, b\nValidation videos:\nb\n", r"1 videos listed more than once.*'b'"),
    ("Train:\na\nTraining videos:\nb\nValidation videos:\nc\n", r"split.txt, line 3: a second 'train'"),
])
def test_read_split_file_rejects_malformed_files(tmp_path, text, message):
    path = tmp_path / "split.txt"
    path.write_text(text)
    with pytest.raises(SkeletonFileError, match=message):
        read_split_file(path)


def test_read_labels(tmp_path):
    path = tmp_path / "A01N01-L.txt"
    path.write_text("1,1,20,2\n\n41, 21, 60, 1\n")
    assert read_labels(path) == [ActionInstance(1, 1, 20, 1), ActionInstance(41, 21, 60, 3)]


@pytest.mark.parametrize("line, message", [
    ("0,1,20,2", r"L.txt, line 2: label 0 outside 1..41"),
    ("42,1,20,2", r"L.txt, line 2: label 42 outside 1..41"),
    ("3,1,20", r"L.txt, line 2: expected 'label,start,end,confidence'"),
    ("3,1,2x,1", r"L.txt, line 2: expected integers"),
    ("3,1,20,high", r"L.txt, line 2: expected integers"),
    ("3,20,19,1", r"L.txt, line 2: start frame 20 after end frame 19"),
])
def test_read_labels_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "A01N01-L.txt"
    path.write_text(f"1,1,5,2\n{line}\n")
    with pytest.raises(SkeletonFileError, match=message):
        read_labels(path)


def test_read_pku_skeleton_layout(tmp_path):
    video = random_video(6, 0, second_person=True)  # (T, M, V, C)
    write_video(tmp_path, "A01N01-L", video, [])
    seq = read_pku_skeleton(tmp_path / "skeleton" / "A01N01-L.txt")
    assert seq.shape == (3, 6, V, 2) and seq.dtype == np.float32
    np.testing.assert_allclose(seq, video.transpose(3, 0, 2, 1), atol=1e-6)  # (C, T, V, M)


def test_read_pku_skeleton_names_a_short_line(tmp_path):
    write_video(tmp_path, "A01N01-L", random_video(9, 0), [])
    path = tmp_path / "skeleton" / "A01N01-L.txt"
    lines = path.read_text().splitlines()
    lines[6] = lines[6].rsplit(" ", 1)[0]  # 149 numbers on line 7
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SkeletonFileError, match=r"A01N01-L.txt, line 7: expected 150 numbers, found 149"):
        read_pku_skeleton(path)


# ----------------------------------------------------------------------------- instances
def frame_numbered(num_frames):
    """(3, T, 25, 2) whose every value is the 1-based frame number, to see which frames a cut keeps."""
    return np.broadcast_to(np.arange(1, num_frames + 1, dtype=np.float32)[None, :, None, None],
                           (3, num_frames, V, 2))


def test_cut_instance_frames_are_one_based_and_inclusive():
    seq = frame_numbered(10)
    cut = cut_instance(seq, ActionInstance(1, 3, 5, 1), frame_base=1, label_path="l.txt")
    assert cut[0, :, 0, 0].tolist() == [3, 4, 5]
    whole = cut_instance(seq, ActionInstance(1, 1, 10, 1), frame_base=1, label_path="l.txt")
    assert whole[0, :, 0, 0].tolist() == list(range(1, 11))
    zero_based = cut_instance(seq, ActionInstance(1, 0, 2, 1), frame_base=0, label_path="l.txt")
    assert zero_based[0, :, 0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("start, end, frame_base, message", [
    (5, 11, 1, r"^l.txt, line 4: frames 5..11 outside the video's 10 frames, counted from 1$"),
    (0, 3, 1, r"^l.txt, line 4: frames 0..3 outside .* from 1; are the frames 0-based\? try --frame_base 0$"),
    (5, 10, 0, r"^l.txt, line 4: frames 5..10 outside the video's 10 frames, counted from 0$"),
])
def test_cut_instance_rejects_instances_outside_the_video(start, end, frame_base, message):
    with pytest.raises(SkeletonFileError, match=message):
        cut_instance(frame_numbered(10), ActionInstance(1, start, end, 4), frame_base, label_path="l.txt")


def test_main_body_first_swaps_only_when_person_one_is_empty():
    seq = np.zeros((3, 4, V, 2), np.float32)
    seq[..., 1] = 1.0
    assert (main_body_first(seq)[..., 0] == 1).all() and (main_body_first(seq)[..., 1] == 0).all()
    seq[0, 2, 3, 0] = 5.0  # person 1 appears in one frame: keep the order
    np.testing.assert_array_equal(main_body_first(seq), seq)


# ----------------------------------------------------------------------------- conversion
def expected_sample(skeleton, start, end):
    """What one instance should become, computed from the generator's array, not from the files."""
    seq = skeleton[start - 1:end].transpose(3, 0, 2, 1).astype(np.float32)  # (C, T, V, M)
    if not seq[..., 0].any():
        seq = seq[..., ::-1]
    padded, num_frame = fit_length(seq, 300)
    return normalize_skeletons(padded[None], topology=NTU_25)[0], num_frame


def test_gendata_cuts_pads_and_normalises_every_instance(pku_root):
    root, videos = pku_root
    assert run_gendata(root) == {"train": 4, "val": 2}
    folder = root / "out" / "PKU-MMD-II" / "xsub"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{part}_{kind}" for part in ("train", "val")
        for kind in ("data_joint.npy", "num_frame.npy", "label.pkl"))  # no temporary file left behind

    data, num_frame, names, labels = read_part(root, "train")
    assert names == ["A01N01-L_001", "A01N01-L_002", "A01N01-M_001", "A02N01-R_001"]
    assert labels == [0, 40, 6, 2] and all(type(y) is int for y in labels)
    assert all(type(n) is str for n in names)
    assert data.shape == (4, 3, 300, V, 2) and data.dtype == np.float32
    assert num_frame.tolist() == [20, 40, 10, 300]  # the 350-frame instance is resampled to 300

    cuts = [("A01N01-L", 1, 20), ("A01N01-L", 21, 60), ("A01N01-M", 5, 14), ("A02N01-R", 11, 360)]
    for sample, (video, start, end) in zip(data, cuts):
        expected, _ = expected_sample(videos[video][0], start, end)
        np.testing.assert_allclose(sample, expected, atol=1e-5)
    # The A01N01-M instance has only person 2: it was moved to slot 0 and centred on its spine.
    assert data[2, :, :10, :, 0].any() and not data[2, :, :, :, 1].any()
    assert np.abs(data[2, :, :10, NTU_25.center_joint, 0]).max() < 1e-6

    data, num_frame, names, labels = read_part(root, "val")
    assert names == ["A05N01-L_001", "A05N01-L_002"] and labels == [1, 1] and num_frame.tolist() == [30, 1]

    # The feeders' own checks accept the files (labels in range of the 41 classes, counts in 1..300).
    for part in ("train", "val"):
        safe_io.load_frame_counts(folder / f"{part}_num_frame.npy", max_frames=300)
        _, labels = safe_io.load_labels(folder / f"{part}_label.pkl")
        safe_io.check_label_range(labels, 41, folder / f"{part}_label.pkl")
        assert safe_io.open_joint_data(folder / f"{part}_data_joint.npy").shape[1:] == (3, 300, V, 2)


def test_gendata_with_worker_processes_matches_one_process(pku_root):
    root, _ = pku_root
    run_gendata(root)
    single = [read_part(root, part) for part in ("train", "val")]
    run_gendata(root, workers=2)
    for one, many in zip(single, [read_part(root, part) for part in ("train", "val")]):
        np.testing.assert_array_equal(one[0], many[0])
        np.testing.assert_array_equal(one[1], many[1])
        assert one[2:] == many[2:]


def test_gendata_errors_name_the_file_and_line(pku_root):
    root, _ = pku_root
    (root / "label" / "A01N01-M.txt").write_text("7,5,41,2\n")  # the video has 40 frames
    with pytest.raises(SkeletonFileError, match=r"A01N01-M.txt, line 1: frames 5..41 outside the video's 40"):
        run_gendata(root, workers=2)
    (root / "label" / "A01N01-M.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 videos of the split have no label file .*A01N01-M.txt"):
        run_gendata(root)


def test_cli_converts_and_reports_problems_without_a_traceback(pku_root, capsys):
    root, _ = pku_root
    args = ["--skeleton_path", str(root / "skeleton"), "--label_path", str(root / "label"),
            "--split_file", str(root / "split.txt"), "--out_folder", str(root / "out"), "--workers", "1"]
    main(args)
    assert "4 train / 2 val instances" in capsys.readouterr().out

    (root / "label" / "A05N01-L.txt").write_text("51,0,29,2\n")  # a 0-based, phase-I style label
    with pytest.raises(SystemExit, match=r"error: .*A05N01-L.txt, line 1: label 51 outside 1..41"):
        main(args)
    with pytest.raises(SystemExit, match=r"error: .*A05N01-L.txt, line 1: frames 0..29 outside .*0-based"):
        main(args + ["--num_classes", "51"])
    # Read as 0-based, that line fits, but the other videos' 1-based last frames no longer do.
    with pytest.raises(SystemExit, match=r"A01N01-L.txt, line 2: frames 21..60 outside .* counted from 0$"):
        main(args + ["--num_classes", "51", "--frame_base", "0"])

    missing = root / "nowhere"
    with pytest.raises(SystemExit, match=f"^error: {missing} does not exist$"):
        main(["--skeleton_path", str(missing), "--label_path", str(root / "label"),
              "--split_file", str(root / "split.txt")])
