"""Per-class results: hand-counted confusion matrices, absent classes, class names and the PNG."""
import json

import numpy as np
import pytest
import torch

import metrics
import safe_io
from safe_io import DataFileError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_a_hand_counted_confusion_matrix():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predictions = [0, 0, 1, 1, 0, 2, 2, 2, 1]
    result = metrics.class_metrics(predictions, labels, num_classes=3)
    # Rows are true classes, columns predicted ones.
    assert result["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 1, 3]]
    assert result["per_class_top1"] == pytest.approx([200 / 3, 50.0, 75.0])
    assert result["mean_class_top1"] == pytest.approx((200 / 3 + 50.0 + 75.0) / 3)
    assert "class_names" not in result


def test_mean_class_accuracy_differs_from_top1_on_unbalanced_classes():
    # 9 of 10 samples of class 0 right, the single sample of class 1 wrong: top-1 90%, mean-class 45%.
    result = metrics.class_metrics([0] * 9 + [1] + [0], [0] * 10 + [1], num_classes=2)
    assert result["per_class_top1"] == [90.0, 0.0]
    assert result["mean_class_top1"] == 45.0


def test_a_class_without_samples_has_a_row_a_null_accuracy_and_no_weight_in_the_mean():
    # Class 1 never occurs among the labels (but is predicted once); class 3 occurs nowhere.
    result = metrics.class_metrics([0, 1, 2, 2], [0, 0, 2, 2], num_classes=4)
    assert result["confusion_matrix"] == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    assert result["per_class_top1"] == [50.0, None, 100.0, None]
    assert result["mean_class_top1"] == 75.0
    # JSON-ready as it is: null, not NaN (json.dumps would write the invalid token NaN).
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["per_class_top1"] == [50.0, None, 100.0, None]


def test_torch_tensors_and_numpy_arrays_give_the_same_result():
    labels, predictions = [2, 0, 1, 1, 0], [2, 1, 1, 1, 0]
    from_lists = metrics.class_metrics(predictions, labels, 3)
    assert metrics.class_metrics(torch.tensor(predictions), torch.tensor(labels), 3) == from_lists
    assert metrics.class_metrics(np.array(predictions, np.int32), np.array(labels, np.uint8), 3) == from_lists
    assert all(type(count) is int for row in from_lists["confusion_matrix"] for count in row)


def test_class_names_are_attached_and_must_match_the_class_count():
    result = metrics.class_metrics([0, 1], [0, 1], 2, class_names=("walk", "run"))
    assert result["class_names"] == ["walk", "run"]
    with pytest.raises(ValueError, match="3 class names for 2 classes"):
        metrics.class_metrics([0, 1], [0, 1], 2, class_names=["walk", "run", "jump"])


@pytest.mark.parametrize("predictions, labels, message", [
    ([0, 3], [0, 1], r"predictions must lie in 0\.\.2 \(3 classes\), found 3"),
    ([0, 1], [0, -1], r"labels must lie in 0\.\.2 \(3 classes\), found -1"),
    ([0, 1, 2], [0, 1], "3 predictions for 2 labels"),
    ([], [], "non-empty 1-D array"),
    ([0.0, 1.0], [0, 1], "integer labels"),
    ([[0, 1]], [0, 1], "1-D"),
])
def test_bad_inputs_fail_instead_of_being_dropped_from_the_counts(predictions, labels, message):
    # scikit-learn's confusion_matrix(labels=range(3)) would silently ignore a sample labelled 3.
    with pytest.raises(ValueError, match=message):
        metrics.class_metrics(predictions, labels, 3)


def test_built_in_class_names():
    ntu60, ntu120, msr = (metrics.class_names(dataset) for dataset in ("ntu60", "ntu120", "msr"))
    assert len(ntu60) == 60 and len(ntu120) == 120 and len(msr) == 20
    assert ntu120[:60] == ntu60  # A1-A60 are NTU RGB+D 60's actions
    assert (ntu60[0], ntu60[59], ntu120[60], ntu120[119]) == (
        "drink water", "walking apart from each other", "put on headphone",
        "finger-guessing game (playing rock-paper-scissors)")
    assert (msr[0], msr[11], msr[19]) == ("high arm wave", "side-boxing", "pick up & throw")
    assert metrics.class_names("pku2") is None and metrics.class_names("demo") is None


def test_every_names_file_is_valid():
    for path in metrics.CLASS_NAMES_DIR.glob("*.txt"):
        names = metrics.read_class_names(path)
        assert all(name.isascii() for name in names), path


@pytest.mark.parametrize("text, message", [
    ("walk\n\nrun\n", "line 2 is empty"),
    ("walk\nrun\nwalk\n", "line 3: 'walk' repeats line 1"),
    ("walk\nrun\n", "2 class names, the dataset has 3 classes"),
])
def test_a_bad_names_file_is_named_with_the_line(tmp_path, text, message):
    path = tmp_path / "names.txt"
    path.write_text(text)
    with pytest.raises(DataFileError, match=message) as error:
        metrics.read_class_names(path, num_classes=3)
    assert str(error.value).startswith(str(path))


def test_a_names_file_with_a_trailing_newline_and_spaces_reads_cleanly(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("walk \n  run\n")
    assert metrics.read_class_names(path, num_classes=2) == ["walk", "run"]
    with pytest.raises(DataFileError, match="cannot read class names"):
        metrics.read_class_names(tmp_path / "missing.txt")


def png_size(path):
    """(width, height) of a PNG from its IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("num_classes, with_names", [(3, True), (4, False), (45, False)])
def test_the_confusion_png_is_a_valid_png_and_leaves_no_temporary(tmp_path, num_classes, with_names):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, 200)
    labels[labels == 1] = 0  # class 1 without samples: a grey row, not a division by zero
    predictions = np.where(rng.random(200) < 0.7, labels, rng.integers(0, num_classes, 200))
    names = [f"action {i}" for i in range(num_classes)] if with_names else None
    result = metrics.class_metrics(predictions, labels, num_classes, names)
    path = tmp_path / "run" / "confusion_matrix.png"
    metrics.plot_confusion_matrix(result["confusion_matrix"], path, result.get("class_names"), title="probe")
    width, height = png_size(path)
    assert width > 100 and height > 100
    assert [p.name for p in path.parent.iterdir()] == ["confusion_matrix.png"]


def test_the_figure_grows_with_the_class_count(tmp_path):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    metrics.plot_confusion_matrix(np.eye(5, dtype=int), small)
    metrics.plot_confusion_matrix(np.eye(60, dtype=int), large)
    assert png_size(large)[1] > 1.5 * png_size(small)[1]


def test_a_failed_write_keeps_the_previous_png(tmp_path, monkeypatch):
    path = tmp_path / "confusion_matrix.png"
    metrics.plot_confusion_matrix(np.eye(3, dtype=int), path)
    before = path.read_bytes()

    def crash(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(safe_io.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        metrics.plot_confusion_matrix([[1, 2, 0], [0, 1, 0], [0, 0, 5]], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["confusion_matrix.png"]


def test_the_picture_refuses_a_matrix_that_is_not_square(tmp_path):
    with pytest.raises(ValueError, match="square"):
        metrics.plot_confusion_matrix([[1, 2, 3], [4, 5, 6]], tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        metrics.plot_confusion_matrix(np.eye(3, dtype=int), tmp_path / "x.png", ["a", "b"])
