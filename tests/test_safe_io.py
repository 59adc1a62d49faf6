"""Safe label loading and the array checks: bad files are refused with errors naming the file."""
import os
import pickle

import numpy as np
import pytest

from safe_io import (
    DataFileError,
    check_all_finite,
    check_finite,
    check_label_range,
    check_same_length,
    load_array_pickle,
    load_frame_counts,
    load_labels,
    open_joint_data,
)


def dump(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


class OpensFile:
    """A payload whose unpickling creates a file: builtins.open(marker, "w")."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


class RunsShell:
    """A payload whose unpickling runs a shell command through os.system."""

    def __init__(self, marker):
        self.command = f"touch {marker}"

    def __reduce__(self):
        return os.system, (self.command,)


# ----------------------------------------------------------------------------- labels: accepted

@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_labels_load(tmp_path, protocol):
    path = dump(tmp_path / "train_label.pkl", (["S001C001P001R001A001", "b"], [0, 59]), protocol)
    names, labels = load_labels(path)
    assert names == ["S001C001P001R001A001", "b"]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 59]


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy_integer_labels_load(tmp_path, protocol):
    path = dump(tmp_path / "l.pkl", (["a", "b", "c"], [np.int64(3), np.int32(4), np.uint8(5)]), protocol)
    assert load_labels(path)[1].tolist() == [3, 4, 5]


def test_numpy1_module_path_loads(tmp_path):
    # numpy 1.x wrote numpy.core.multiarray; numpy 2 writes numpy._core.multiarray.
    data = pickle.dumps((["a"], [np.int64(7)]), protocol=2)
    assert b"numpy._core.multiarray" in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert load_labels(path)[1].tolist() == [7]


# ----------------------------------------------------------------------------- labels: refused

@pytest.mark.parametrize("payload", [OpensFile, RunsShell])
def test_malicious_pickle_is_refused_before_it_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = dump(tmp_path / "train_label.pkl", (["a"], [payload(marker)]))
    with pytest.raises(DataFileError, match="refused global") as error:
        load_labels(path)
    assert str(path) in str(error.value)
    assert not marker.exists()


def test_the_payload_is_live_for_plain_pickle(tmp_path):
    # The control for the test above: an ordinary unpickler does create the marker.
    marker = tmp_path / "pwned"
    path = dump(tmp_path / "train_label.pkl", (["a"], [OpensFile(marker)]))
    with open(path, "rb") as f:
        _, labels = pickle.load(f)
    labels[0].close()
    assert marker.exists()


@pytest.mark.parametrize("content, problem", [
    ((["a"], [np.float64(1.0)]), "only integer labels"),
    ((["a", "b"], np.array([1, 2])), "refused global"),
    ((["a"], [True]), "labels must be a list of int"),
    ((["a"], [1.0]), "labels must be a list of int"),
    (([1], [1]), "names must be a list of str"),
    ((["a", "b"], [1]), "2 sample names but 1 labels"),
    ((["a"], [1], "extra"), "expected a pair"),
    ({"names": ["a"]}, "expected a pair"),
])
def test_malformed_labels_name_the_file_and_the_problem(tmp_path, content, problem):
    path = dump(tmp_path / "val_label.pkl", content)
    with pytest.raises(DataFileError, match=problem) as error:
        load_labels(path)
    assert str(error.value).startswith(str(path))


def test_truncated_and_missing_label_files(tmp_path):
    path = dump(tmp_path / "l.pkl", (["a"], [1]))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataFileError, match=str(path)):
        load_labels(path)
    with pytest.raises(DataFileError, match="label file not found"):
        load_labels(tmp_path / "absent.pkl")


def test_label_range():
    check_label_range(np.array([0, 59]), 60, "l.pkl")
    with pytest.raises(DataFileError, match=r"l.pkl: 1 labels outside \[0, 60\), first at sample 1"):
        check_label_range(np.array([0, 60]), 60, "l.pkl")


def test_a_label_dtype_state_cannot_turn_numbers_into_objects(tmp_path):
    # numpy's dtype.__setstate__ trusts the flags a file gives it (0x3f: "holds Python objects"); the
    # restricted unpickler uses nothing of the state but the byte order.
    data = pickle.dumps((["a"], [np.int64(7)]), protocol=2)
    flagged = data.replace(b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t", b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK?t")
    assert flagged != data
    path = tmp_path / "l.pkl"
    path.write_bytes(flagged)
    assert load_labels(path)[1].tolist() == [7]


# ----------------------------------------------------------------------------- array pickles (PYSKL annotations)

ARRAYS = {"float16": np.arange(24, dtype=np.float16).reshape(2, 3, 4) / 8,
          "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
          "big_endian": np.arange(3, dtype=">i4"),
          "empty": np.zeros((1, 0, 25, 3), np.float32),
          "bool": np.array([True, False])}


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_array_pickles_load_as_plain_arrays(tmp_path, protocol):
    content = {"split": {"xsub_train": ["S001"]}, "annotations": [
        {"frame_dir": "S001", "label": np.int64(3), "score": np.float16(0.5), **ARRAYS}]}
    loaded = load_array_pickle(dump(tmp_path / "anno.pkl", content, protocol))
    annotation = loaded["annotations"][0]
    assert loaded["split"] == content["split"] and annotation["frame_dir"] == "S001"
    assert type(annotation["label"]) is np.int64 and annotation["label"] == 3 and annotation["score"] == 0.5
    for key, array in ARRAYS.items():
        assert type(annotation[key]) is np.ndarray and annotation[key].dtype == array.dtype, key
        np.testing.assert_array_equal(annotation[key], array)
        assert annotation[key].flags.writeable


@pytest.mark.parametrize("array", [np.array([1, "a"], dtype=object), np.zeros(2, dtype=[("a", "f4")]),
                                   np.array(["text"]), np.zeros(2, "V8")], ids=["object", "structured", "str", "void"])
def test_array_pickles_refuse_arrays_that_are_not_plain_numbers(tmp_path, array):
    path = dump(tmp_path / "anno.pkl", {"keypoint": array}, protocol=2)
    with pytest.raises(DataFileError, match="only plain number dtypes are allowed") as error:
        load_array_pickle(path, "annotation pickle")
    assert str(error.value).startswith(f"{path}: not a safe annotation pickle: numpy dtype ")


def test_an_array_dtype_state_cannot_turn_numbers_into_objects(tmp_path):
    data = pickle.dumps({"keypoint": np.zeros(2)}, protocol=2)
    flagged = data.replace(b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t", b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK?t")
    assert flagged != data
    believer = np.dtype("f8", False, True)  # the control: numpy's own unpickling takes the flags as given
    believer.__setstate__((3, "<", None, None, None, -1, -1, 0x3F))
    assert believer.hasobject
    path = tmp_path / "anno.pkl"
    path.write_bytes(flagged)
    keypoint = load_array_pickle(path)["keypoint"]
    assert keypoint.dtype == np.float64 and not keypoint.dtype.hasobject and keypoint.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("payload", [OpensFile, RunsShell])
def test_array_pickles_that_would_run_code_are_refused_before_it_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = dump(tmp_path / "anno.pkl", {"annotations": [{"keypoint": np.zeros(3), "extra": payload(marker)}]})
    with pytest.raises(DataFileError, match=r"refused global '\w+\.(open|system)'") as error:
        load_array_pickle(path, "annotation pickle")
    assert str(error.value).startswith(f"{path}: not a safe annotation pickle: refused global")
    assert "\n" not in str(error.value) and not marker.exists()


# ----------------------------------------------------------------------------- arrays

def test_frame_counts_are_checked(tmp_path):
    path = tmp_path / "train_num_frame.npy"
    np.save(path, np.array([1, 300, 57]))
    assert load_frame_counts(path, 300).tolist() == [1, 300, 57]
    np.save(path, np.array([5.0, 300.0]))
    assert load_frame_counts(path, 300).dtype == np.int64  # whole-number floats convert losslessly
    for bad, problem in [([5, 0, 7], "outside 1..300, first at sample 1"),
                         ([5, 301], "outside 1..300, first at sample 1"),
                         ([5.5], "must be integers"),
                         ([[5, 6]], r"expected shape \(N,\)")]:
        np.save(path, np.array(bad))
        with pytest.raises(DataFileError, match=problem) as error:
            load_frame_counts(path, 300)
        assert str(error.value).startswith(str(path))


def test_joint_data_layout_is_checked(tmp_path):
    path = tmp_path / "train_data_joint.npy"
    np.save(path, np.zeros((2, 3, 10, 25, 2), np.float32))
    assert isinstance(open_joint_data(path), np.memmap)
    np.save(path, np.zeros((2, 2, 10, 17, 2), np.float32))  # x y image keypoints (dataset custom)
    assert open_joint_data(path).shape[1] == 2
    for bad, problem in [(np.zeros((2, 3, 10, 25), np.float32), "expected shape"),
                         (np.zeros((2, 4, 10, 25, 2), np.float32), "expected shape"),
                         (np.zeros((2, 3, 10, 25, 2), np.int16), "expected a float array")]:
        np.save(path, bad)
        with pytest.raises(DataFileError, match=problem):
            open_joint_data(path)


def test_pickled_npy_is_refused(tmp_path):
    path = tmp_path / "train_data_joint.npy"
    np.save(path, np.array([OpensFile(tmp_path / "pwned")], dtype=object), allow_pickle=True)
    with pytest.raises(DataFileError, match="not a plain .npy array"):
        open_joint_data(path)
    assert not (tmp_path / "pwned").exists()


def test_sample_counts_must_agree():
    check_same_length([("a.npy", 3), ("b.npy", 3)])
    with pytest.raises(DataFileError, match="a.npy has 3, b.npy has 4"):
        check_same_length([("a.npy", 3), ("b.npy", 4)])


def test_finite_checks_name_the_file_and_samples():
    data = np.zeros((7, 3, 4, 2, 1), np.float32)
    check_all_finite(data, "d.npy", chunk=2)
    data[3, 0, 1, 1, 0] = np.nan
    data[6, 2, 0, 0, 0] = -np.inf
    with pytest.raises(DataFileError, match=r"d.npy: 2 samples contain NaN or Inf, first ones: \[3, 6\]"):
        check_all_finite(data, "d.npy", chunk=2)
    with pytest.raises(DataFileError, match="d.npy: sample 3 contains NaN or Inf"):
        check_finite(data[3], "d.npy", 3)
