"""PYSKL annotation pickles (data_gen/pyskl_gendata.py) on generated files in PYSKL's exact structure.

The same skeletons written as raw NTU files and as a PYSKL pickle must give byte-identical prepared
folders; a pickle that would run code, and each kind of bad annotation, stop the run with one line
naming the file (and the entry) before anything is written.
"""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_safe_io import OpensFile, RunsShell

from data_gen import ntu_gendata, pyskl_gendata
from data_gen.common import SkeletonFileError
from data_gen.synthetic import skeleton_text, synthesize
from options.protocols import PARTS, prepared_folder, protocols_of
from safe_io import DataFileError

ROOT = Path(__file__).resolve().parents[1]
# (action, index) of the generated samples: one and two performers, a ghost third body, late partners
# and empty first frames among them (checked in `samples`).
SAMPLE_IDS = [(action, index) for action in (1, 2, 5, 10, 13) for index in range(6)] + [
    (5, 13), (5, 14), (61, 0), (75, 3)]


def quantized(bodies):
    """Round to multiples of 1/128 m: exact in float16 and in the raw files' '%.7f', so that both inputs
    hold exactly the same numbers."""
    return np.round(bodies * 128) / 128


@pytest.fixture(scope="module")
def samples():
    """{name: (keypoint (M, T, 25, 3) float16 as PYSKL stores it, raw file text)} of SAMPLE_IDS."""
    out = {}
    for action, index in SAMPLE_IDS:
        name, bodies, present = synthesize(action, index, seed=4)
        bodies = quantized(bodies)
        keypoint = np.where(present[..., None, None], bodies, 0).astype(np.float16)  # (M, T, V, C)
        assert np.array_equal(keypoint.astype(np.float64), np.where(present[..., None, None], bodies, 0))
        body_ids = [72057594037927936 + 1000 * index + b for b in range(len(bodies))]
        out[name] = keypoint, skeleton_text(bodies, present, body_ids)
    shapes = [keypoint.shape for keypoint, _ in out.values()]
    assert {1, 2, 3} <= {m for m, *_ in shapes}  # one, two and three bodies (a ghost)
    assert any(not keypoint[:, 0].any() for keypoint, _ in out.values())  # nobody in the first frame
    assert any(keypoint[0, 0].any() and not keypoint[1, 0].any() for keypoint, _ in out.values()
               if len(keypoint) > 1)  # a partner who comes in later
    return out


def pyskl_content(samples, dataset):
    """The dict PYSKL's annotation files hold, for the samples of `dataset` (NTU-60: actions 1-60)."""
    names = sorted(name for name in samples
                   if dataset == "ntu120" or ntu_gendata.in_ntu60(ntu_gendata.parse_name(name + ".skeleton")))
    split = {}
    for protocol in protocols_of(dataset):
        train = [n for n in names if ntu_gendata.is_training(ntu_gendata.parse_name(n + ".skeleton"), dataset,
                                                             protocol)]
        split[pyskl_gendata.split_name(protocol, "train")] = train
        split[pyskl_gendata.split_name(protocol, "val")] = [n for n in names if n not in train]
    annotations = [{"frame_dir": name, "label": int(name[-3:]) - 1, "keypoint": samples[name][0],
                    "total_frames": samples[name][0].shape[1]} for name in reversed(names)]  # any order
    return {"split": split, "annotations": annotations}


def dump(path, content, protocol=2):
    """mmcv, which wrote PYSKL's files, pickles with protocol 2."""
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return path


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------ conversion


@pytest.mark.parametrize("dataset, workers, pickle_protocol", [("ntu60", 2, 2), ("ntu120", 1, 5)])
def test_the_same_skeletons_give_the_same_files_as_the_raw_ntu_converter(samples, tmp_path, dataset, workers,
                                                                        pickle_protocol):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, (_, text) in samples.items():
        (raw / f"{name}.skeleton").write_text(text)
    ntu_gendata.gendata(raw, tmp_path / "from_raw", dataset, progress=False)
    pickle_path = dump(tmp_path / f"{dataset}_3danno.pkl", pyskl_content(samples, dataset), pickle_protocol)
    counts = pyskl_gendata.gendata(pickle_path, tmp_path / "from_pyskl", dataset, workers=workers, progress=False)

    written = files_under(tmp_path / "from_pyskl")
    assert written == files_under(tmp_path / "from_raw") and len(written) == 6 * len(protocols_of(dataset))
    for relative in written:
        assert (tmp_path / "from_pyskl" / relative).read_bytes() == (tmp_path / "from_raw" / relative).read_bytes()
    content = pyskl_content(samples, dataset)
    for protocol in protocols_of(dataset):
        folder = prepared_folder(tmp_path / "from_pyskl", dataset, protocol)
        for part in PARTS:
            expected = len(content["split"][pyskl_gendata.split_name(protocol, part)])
            assert counts[f"{folder.name}/{part}"] == expected > 0


def test_bodies_are_ranked_by_the_released_energy_whatever_order_pyskl_gives(samples):
    keypoint = next(k for k, _ in samples.values() if len(k) == 2 and k[1].any())
    np.testing.assert_array_equal(pyskl_gendata.to_sequence(keypoint[::-1]), pyskl_gendata.to_sequence(keypoint))
    one = pyskl_gendata.to_sequence(keypoint[:1])  # (C, T, V, 2): a one-body annotation gets an empty second body
    assert one.shape == (3, keypoint.shape[1], 25, 2) and not one[..., 1].any()


def test_cli_converts_and_reports_the_parts(samples, tmp_path, capsys):
    pickle_path = dump(tmp_path / "ntu60_3danno.pkl", pyskl_content(samples, "ntu60"))
    pyskl_gendata.main(["--annotation_path", str(pickle_path), "--dataset", "ntu60", "--out_folder",
                        str(tmp_path / "data"), "--workers", "1"])
    printed = capsys.readouterr().out
    assert "xsub/train: " in printed and "xview/val: " in printed
    assert len(files_under(prepared_folder(tmp_path / "data", "ntu60", "cross_view"))) == 6


def test_runs_as_a_script_from_any_folder(samples, tmp_path):
    pickle_path = dump(tmp_path / "ntu120_3danno.pkl", pyskl_content(samples, "ntu120"))
    result = subprocess.run([sys.executable, str(ROOT / "data_gen" / "pyskl_gendata.py"), "--annotation_path",
                             str(pickle_path), "--dataset", "ntu120", "--out_folder", "data", "--workers", "1"],
                            cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert result.returncode == 0, result.stderr
    assert len(files_under(tmp_path / "data")) == 12


# ------------------------------------------------------------------------------------------ refused input


@pytest.mark.parametrize("payload", [OpensFile, RunsShell])
def test_a_pickle_that_would_run_code_is_refused_in_one_line_naming_the_file(samples, tmp_path, payload):
    content = pyskl_content(samples, "ntu60")
    marker = tmp_path / "pwned"
    content["annotations"][3]["keypoint_score"] = payload(marker)
    pickle_path = dump(tmp_path / "ntu60_3danno.pkl", content)
    with pytest.raises(DataFileError, match="refused global") as error:
        pyskl_gendata.gendata(pickle_path, tmp_path / "out", "ntu60", progress=False)
    assert str(error.value).startswith(f"{pickle_path}: not a safe annotation pickle: refused global '")
    with pytest.raises(SystemExit) as exit_info:
        pyskl_gendata.main(["--annotation_path", str(pickle_path), "--dataset", "ntu60", "--out_folder",
                            str(tmp_path / "out")])
    assert "\n" not in str(exit_info.value) and str(pickle_path) in str(exit_info.value)
    assert not marker.exists() and not (tmp_path / "out").exists()


def without(mapping, key):
    return {k: v for k, v in mapping.items() if k != key}


def first(content):
    """The first annotation of `content` and how errors name it."""
    annotation = content["annotations"][0]
    return annotation, f"annotation 0 ('{annotation['frame_dir']}')"


def break_content(content, how):
    """Apply one kind of damage to a PYSKL dict; returns (content, the entry the error names or None,
    what the error says)."""
    annotation, entry = first(content)
    if how == "no split key":
        return without(content, "split"), None, "expected a dict with 'split' and 'annotations'"
    if how == "no annotations key":
        return without(content, "annotations"), None, "expected a dict with 'split' and 'annotations'"
    if how == "a split name missing":
        content["split"] = without(content["split"], "xview_val")
        return content, None, "no split 'xview_val', which ntu60 cross_view needs"
    if how == "an empty split":
        content["split"]["xsub_val"] = []
        return content, None, "split 'xsub_val' lists no sample"
    if how == "a listed sample without annotation":
        content["split"]["xsub_train"].append("S001C001P001R001A099")
        return content, None, "'S001C001P001R001A099' of split 'xsub_train' has no annotation"
    if how == "an annotation key missing":
        content["annotations"][0] = without(annotation, "keypoint")
        return content, entry, "no 'keypoint'"
    if how == "zero frames":
        annotation.update(keypoint=np.zeros((1, 0, 25, 3), np.float16), total_frames=0)
        return content, entry, "holds no frame"
    if how == "NaN":
        annotation["keypoint"] = annotation["keypoint"].copy()
        annotation["keypoint"][0, 1, 4, 2] = np.nan
        return content, entry, "keypoint holds NaN"
    if how == "Inf":
        annotation["keypoint"] = annotation["keypoint"].copy()
        annotation["keypoint"][0, 0, 0, 0] = -np.inf
        return content, entry, "keypoint holds NaN, Inf"
    if how == "2D keypoints":
        annotation["keypoint"] = annotation["keypoint"][:, :, :17, :2]
        return content, entry, "keypoint has 17 joints x 2 coordinates, expected 25 x 3"
    if how == "label out of range":
        annotation["label"] = 60
        return content, entry, "label 60 outside 0..59"
    if how == "total_frames disagrees":
        annotation["total_frames"] += 1
        return content, entry, f"total_frames is {annotation['total_frames']} but keypoint has"
    if how == "more frames than the output":
        annotation["keypoint"] = np.ones((1, 301, 25, 3), np.float16)
        annotation["total_frames"] = 301
        return content, entry, "301 frames, more than the 300 frames of the output"
    raise AssertionError(how)


@pytest.mark.parametrize("how", [
    "no split key", "no annotations key", "a split name missing", "an empty split",
    "a listed sample without annotation", "an annotation key missing", "zero frames", "NaN", "Inf", "2D keypoints",
    "label out of range", "total_frames disagrees", "more frames than the output"])
def test_bad_input_is_one_line_naming_the_file_and_entry_before_anything_is_written(samples, tmp_path, how):
    content, entry, problem = break_content(pyskl_content(samples, "ntu60"), how)
    pickle_path = dump(tmp_path / "ntu60_3danno.pkl", content)
    with pytest.raises(SkeletonFileError) as error:
        pyskl_gendata.gendata(pickle_path, tmp_path / "out", "ntu60", progress=False)
    where = str(pickle_path) if entry is None else f"{pickle_path}, {entry}"
    assert str(error.value).startswith(f"{where}: ") and problem in str(error.value), str(error.value)
    with pytest.raises(SystemExit) as exit_info:
        pyskl_gendata.main(["--annotation_path", str(pickle_path), "--dataset", "ntu60", "--out_folder",
                            str(tmp_path / "out"), "--workers", "1"])
    assert str(exit_info.value) == f"error: {error.value}" and "\n" not in str(exit_info.value)
    assert not (tmp_path / "out").exists()


def test_an_ntu120_file_given_as_ntu60_says_which_splits_it_has(samples, tmp_path):
    pickle_path = dump(tmp_path / "ntu120_3danno.pkl", pyskl_content(samples, "ntu120"))
    with pytest.raises(SkeletonFileError, match=r"no split 'xview_train'.*xset_train.*is --dataset right\?"):
        pyskl_gendata.gendata(pickle_path, tmp_path / "out", "ntu60", progress=False)
