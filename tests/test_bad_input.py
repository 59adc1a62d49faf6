"""Bad input costs seconds and a clear sentence, never memory, hours or a traceback (README "Reliability").

Flags are checked while they are parsed; hostile raw files, checkpoints and disks are refused before
the work that they would spoil. Each test injects one bad input at tiny sizes.
"""
import errno
import io
import os
import pickle
import shutil
import tracemalloc
import zipfile

import pytest
import torch
from test_msr_gendata import random_sequence, write_msr_file
from test_pku_gendata import random_video, write_video
from conftest import make_demo_data

from checkpoint import MAX_INFLATION, CheckpointError, read_checkpoint, save_atomic
from data_gen import msr_gendata, ntu_gendata, pku_gendata, synthetic
from data_gen.common import DiskFullError, SkeletonFileError, output_bytes
from data_gen.ntu_gendata import InvalidFilesError, convert_chunk, max_file_bytes, max_file_lines, read_xyz
from dataset import build_downstream_datasets
from options.checks import Checked, at_least, between, fraction, non_negative_finite, positive_finite
from options.common import check_model_sizes
from options.downstream import build_recognition_parser, build_retrieval_parser, build_tsne_parser
from options.pretrain import build_parser as build_pretrain_parser
from safe_io import DataFileError

PARSERS = {"pretrain.py": build_pretrain_parser, "action_recognition.py": build_recognition_parser,
           "action_retrieval.py": build_retrieval_parser, "tsne.py": build_tsne_parser}


# ---------------------------------------------------------------------------------------------------------
# Numeric flags


def test_rules_say_what_a_value_must_be():
    assert at_least(1)(1) is None and at_least(1)(0) == "must be at least 1"
    assert at_least(0)(float("nan")) == "must be at least 0"
    assert between(1, 64)(64) is None and between(1, 64)(65) == "must be between 1 and 64"
    assert positive_finite(0.03) is None
    assert {positive_finite(v) for v in (0.0, -1.0, float("inf"), float("nan"))} == {"must be a positive finite number"}
    assert non_negative_finite(0.0) is None and non_negative_finite(float("inf")) is not None
    assert fraction(1.0) is None and fraction(0.0) == "must be in (0, 1]"


@pytest.mark.parametrize("script, flags, message", [
    ("pretrain.py", ["--save-freq", "0"], "--save-freq must be at least 1, got 0"),
    ("pretrain.py", ["-p", "0"], "-p must be at least 1, got 0"),
    ("pretrain.py", ["--print-freq", "0"], "--print-freq must be at least 1, got 0"),
    ("pretrain.py", ["--min-crop-length", "100"], "--min-crop-length must be between 1 and 64, got 100"),
    ("pretrain.py", ["--schedule", "351", "-1"], "--schedule must be at least 0, got -1"),
    ("pretrain.py", ["--lr", "nan"], "--lr must be a finite number at least 0, got nan"),
    ("pretrain.py", ["--wd=-1e-5"], "--wd must be a finite number at least 0, got -1e-05"),
    ("pretrain.py", ["--workers", "-1"], "--workers must be at least 0, got -1"),
    ("pretrain.py", ["--seed", "-1"], "--seed must be between 0 and 9223372036854775807, got -1"),
    ("pretrain.py", ["--projector-dim", "0"], "--projector-dim must be at least 1, got 0"),
    ("action_recognition.py", ["--label-fraction", "0"], "--label-fraction must be in (0, 1], got 0.0"),
    ("action_recognition.py", ["--eval-freq", "0"], "--eval-freq must be at least 1, got 0"),
    ("action_recognition.py", ["--epochs", "0"], "--epochs must be at least 1, got 0"),
    ("action_retrieval.py", ["--chunk-size", "0"], "--chunk-size must be at least 1, got 0"),
    ("action_retrieval.py", ["--knn-neighbours", "0"], "--knn-neighbours must be at least 1, got 0"),
    ("tsne.py", ["--perplexity", "inf"], "--perplexity must be a positive finite number, got inf"),
    ("tsne.py", ["--max-per-class", "0"], "--max-per-class must be at least 1, got 0"),
    ("tsne.py", ["--num-layer", "0"], "--num-layer must be at least 1, got 0"),
])
def test_a_bad_numeric_flag_stops_the_parse_with_one_sentence(script, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        PARSERS[script]().parse_args(flags)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")


@pytest.mark.parametrize("script", PARSERS)
def test_every_numeric_flag_of_every_script_is_checked(script):
    parser = PARSERS[script]()
    numeric = [action for action in parser._actions if action.type in (int, float)]
    assert numeric and [action.option_strings for action in numeric if not isinstance(action, Checked)] == []


def test_the_hidden_size_must_split_over_the_heads():
    assert check_model_sizes(1024, 1) is None and check_model_sizes(16, 4) is None
    assert check_model_sizes(16, 3) == "--hidden-size must be even and a multiple of --num-head (3), got 16"
    assert check_model_sizes(15, 1) is not None  # the position encoding pairs channels


@pytest.mark.parametrize("main, argv, message", [
    (ntu_gendata.main, ["--data_path", "raw", "--dataset", "demo", "--workers", "0"],
     "--workers must be at least 1, got 0"),
    (pku_gendata.main, ["--skeleton_path", "s", "--label_path", "l", "--split_file", "f", "--max_frames", "0"],
     "--max_frames must be at least 1, got 0"),
    (pku_gendata.main, ["--skeleton_path", "s", "--label_path", "l", "--split_file", "f", "--workers", "0"],
     "--workers must be at least 1, got 0"),
    (msr_gendata.main, ["--data_path", "d", "--max_frames", "-5"], "--max_frames must be at least 1, got -5"),
    (synthetic.main, ["--out_folder", "o", "--num_classes", "121"], "--num_classes must be between 1 and 120, got 121"),
])
def test_converters_check_their_numeric_flags(main, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")


def test_an_empty_validation_split_is_refused_naming_the_file(tmp_path):
    data_root = make_demo_data(tmp_path, num_train=8, num_val=0)
    with pytest.raises(DataFileError, match=r"val_data_joint\.npy: the val split holds no samples"):
        build_downstream_datasets(data_root, "demo", "cross_subject")


# ---------------------------------------------------------------------------------------------------------
# Hostile checkpoints


def deflated(checkpoint, path):
    """torch.save(checkpoint), then every zip member re-compressed with deflate (torch.save stores them)."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
    return path


def test_a_checkpoint_that_would_inflate_far_beyond_its_size_is_refused_before_it_is_read(tmp_path):
    bomb = deflated({"state_dict": {"w": torch.zeros(2**23)}}, tmp_path / "bomb.pth.tar")  # 32 MiB of zeros
    assert bomb.stat().st_size < 2**20 / 4
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"bomb\.pth\.tar: refused, its 0\.0 MiB would inflate to 32\.0 MiB"):
            read_checkpoint(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated to refuse it"
    # Control: the bomb is live, torch.load inflates it in full.
    assert torch.load(bomb, weights_only=True)["state_dict"]["w"].numel() == 2**23


def test_honest_checkpoints_load_whether_stored_or_re_compressed(tmp_path):
    torch.manual_seed(0)
    weights = {"w": torch.randn(256, 1024), "b": torch.zeros(1024)}  # mostly incompressible, as trained weights
    save_atomic({"state_dict": weights}, tmp_path / "stored.pth.tar")
    for path in (tmp_path / "stored.pth.tar", deflated({"state_dict": weights}, tmp_path / "deflated.pth.tar")):
        assert torch.equal(read_checkpoint(path)["state_dict"]["w"], weights["w"])
    inflation = 4 * 256 * 1024 / (tmp_path / "deflated.pth.tar").stat().st_size
    assert 1 < inflation < MAX_INFLATION / 3


def test_an_empty_or_truncated_checkpoint_gets_a_sentence(tmp_path):
    (tmp_path / "empty.pth.tar").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pth\.tar: the file is empty \(0 bytes\), not a checkpoint$"):
        read_checkpoint(tmp_path / "empty.pth.tar")
    save_atomic({"state_dict": {"w": torch.ones(1000)}}, tmp_path / "whole.pth.tar")
    (tmp_path / "cut.pth.tar").write_bytes((tmp_path / "whole.pth.tar").read_bytes()[:3000])
    with pytest.raises(CheckpointError, match=r"cut\.pth\.tar: a zip archive without a readable central directory "
                                              r"\(3000 bytes\): the file was cut short"):
        read_checkpoint(tmp_path / "cut.pth.tar")


# ---------------------------------------------------------------------------------------------------------
# Hostile raw files


def peak_bytes(function, *args, **kwargs):
    """(what function returned or raised, the peak of Python and numpy allocations while it ran)."""
    tracemalloc.start()
    try:
        try:
            outcome = function(*args, **kwargs)
        except Exception as error:  # returned for the caller to check
            outcome = error
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_file_of_400000_empty_frames_is_refused_after_its_first_line(tmp_path):
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_bytes(b"400000\n" + b"0\n" * 400_000)  # 800 KB (it took 1.9 GB to refuse)
    error, peak = peak_bytes(read_xyz, path)
    assert isinstance(error, SkeletonFileError) and error.line == 1
    assert error.reason == "400000 frames, more than the 300 frames of the output"
    assert peak < 2 * path.stat().st_size, f"{peak} bytes allocated"
    chunk, peak = peak_bytes(convert_chunk, [str(path)])
    assert chunk.names == [] and str(chunk.errors[0]) == str(error) and peak < 2 * path.stat().st_size


def test_raw_reading_memory_is_bounded_by_the_frame_limit_whatever_the_file_holds(tmp_path):
    max_frames = 20
    limit = max_file_bytes(max_frames)
    cases = {  # file content -> what the refusal says
        "too large": (b"3\n" + b"0\n" * (limit // 2), f"more than the {limit} that a recording"),
        "too many lines": (b"3\n" + b"\n" * (max_file_lines(max_frames) + 1), "lines, more than 20 frames"),
        # The largest file allowed, fields as dense as they get: refused by the full parse.
        "densest": (b"3\n" + b"1 " * ((limit - 2) // 2), "expected the body count of frame 1"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.skeleton"
        path.write_bytes(text)
        error, peak = peak_bytes(read_xyz, path, max_frames=max_frames)
        assert isinstance(error, SkeletonFileError) and message in str(error), (name, error)
        assert peak < 12 * limit, f"{name}: {peak} bytes allocated for a limit of {limit}"
        if name != "densest":  # refused before the file is split into lines
            assert peak < 2 * len(text) + 2**16, f"{name}: {peak} bytes allocated"


# ---------------------------------------------------------------------------------------------------------
# A full disk


@pytest.fixture(scope="module")
def raw_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    synthetic.generate(folder, num_classes=2, samples_per_class=3)  # 6 files, 2 of them validation
    return folder


def files_under(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def with_free_bytes(monkeypatch, free):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=free))


def test_the_output_estimate_bounds_what_a_conversion_writes(raw_folder, tmp_path):
    summary = ntu_gendata.gendata(raw_folder, tmp_path / "out", "demo", progress=False)
    written = sum(path.stat().st_size for path in (tmp_path / "out").rglob("*"))
    row = (3, 300, 25, 2)
    assert written <= output_bytes(summary["parts"].values(), row) < 1.01 * written + 20_000


def test_preprocessing_refuses_an_output_its_disk_cannot_hold_before_writing(raw_folder, tmp_path, monkeypatch,
                                                                            capsys):
    with_free_bytes(monkeypatch, 10**6)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        ntu_gendata.main(["--data_path", str(raw_folder), "--out_folder", str(out), "--dataset", "demo",
                          "--workers", "1"])
    assert str(exit_info.value) == (f"{out / 'demo'}: the output needs 1.1 MB but its disk has 1.0 MB free: "
                                    f"free some space or choose another --out_folder")
    assert not out.exists()


def test_pku_and_msr_conversions_check_the_disk_too(tmp_path, monkeypatch):
    (tmp_path / "pku").mkdir()
    (tmp_path / "msr").mkdir()
    for video in ("A01N01-L", "A05N01-L"):
        write_video(tmp_path / "pku", video, random_video(30, 0), [(1, 1, 20, 2)])
    (tmp_path / "pku" / "split.txt").write_text("Training videos: A01N01-L\nValidation videos: A05N01-L\n")
    for name in ("a01_s01_e01", "a01_s02_e01"):
        write_msr_file(tmp_path / "msr" / f"{name}_skeleton3D.txt", random_sequence(5, seed=0))
    with_free_bytes(monkeypatch, 1000)
    with pytest.raises(DiskFullError, match="PKU-MMD-II/xsub: the output needs .* but its disk has 0.0 MB free"):
        pku_gendata.gendata(tmp_path / "pku" / "skeleton", tmp_path / "pku" / "label", tmp_path / "pku" / "split.txt",
                            tmp_path / "out", progress=False)
    with pytest.raises(DiskFullError, match="MSR-Action3D/xsub: the output needs"):
        msr_gendata.gendata(tmp_path / "msr", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("fault, fills_while_writing", [
    ("the space cannot be reserved", "train_data_joint.npy"),  # os.posix_fallocate
    ("a row write", "val_data_joint.npy"),  # os.pwrite, after the first (training) rows went through
    ("the label file", "train_label.pkl"),  # pickle.dump in PartWriter.finish
])
def test_a_disk_that_fills_during_preprocessing_ends_with_one_line_and_no_temporary_file(
        raw_folder, tmp_path, monkeypatch, fault, fills_while_writing):
    if fault == "the space cannot be reserved":
        monkeypatch.setattr(os, "posix_fallocate", full_disk)
    elif fault == "a row write":
        real_pwrite, calls = os.pwrite, []

        def pwrite(*args):
            calls.append(1)
            return real_pwrite(*args) if len(calls) == 1 else full_disk()
        monkeypatch.setattr(os, "pwrite", pwrite)
    else:
        monkeypatch.setattr(pickle, "dump", full_disk)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        ntu_gendata.main(["--data_path", str(raw_folder), "--out_folder", str(out), "--dataset", "demo",
                          "--workers", "1"])
    message = str(exit_info.value)
    assert message.startswith(f"{out / 'demo' / 'xsub' / fills_while_writing}: the disk filled up while writing it (")
    assert "free now); nothing final was written" in message and "\n" not in message
    assert files_under(out) == []


# ---------------------------------------------------------------------------------------------------------
# NTU file names and the missing-skeleton list


@pytest.mark.parametrize("dataset", ["ntu60", "ntu120"])
def test_a_name_with_an_id_outside_ntu_is_refused_not_turned_into_a_label(raw_folder, tmp_path, dataset):
    folder = tmp_path / "raw"
    shutil.copytree(raw_folder, folder)
    one = next(folder.iterdir())
    for name in ("S001C001P001R001A000", "S001C001P001R001A999", "S001C004P001R001A001"):
        shutil.copy(one, folder / f"{name}.skeleton")
    with pytest.raises(InvalidFilesError) as caught:
        ntu_gendata.gendata(folder, tmp_path / "out", dataset, progress=False)
    assert [str(error) for error in caught.value.errors] == [
        f"{folder}/S001C001P001R001A000.skeleton: action A000 outside A001..A120, the ids of NTU RGB+D 120",
        f"{folder}/S001C001P001R001A999.skeleton: action A999 outside A001..A120, the ids of NTU RGB+D 120",
        f"{folder}/S001C004P001R001A001.skeleton: camera C004 outside C001..C003, the ids of NTU RGB+D 120"]
    assert files_under(tmp_path / "out") == []
    summary = ntu_gendata.gendata(folder, tmp_path / "out", dataset, skip_invalid=True, progress=False)
    assert len(summary["skipped"]) == 3 and summary["converted"] == 6


def test_a_missing_skeleton_list_that_does_not_exist_or_names_nothing_is_refused(raw_folder, tmp_path):
    argv = ["--data_path", str(raw_folder), "--out_folder", str(tmp_path / "out"), "--dataset", "demo"]
    with pytest.raises(SystemExit) as exit_info:
        ntu_gendata.main([*argv, "--ignored_sample_path", str(tmp_path / "absent.txt")])
    assert str(exit_info.value) == (f"missing-skeleton list {tmp_path / 'absent.txt'}: No such file or directory "
                                    f"(give its path with --ignored_sample_path)")
    (tmp_path / "notes.txt").write_text("302 of the captured samples have missing skeletons.\n\n")
    with pytest.raises(SystemExit, match="notes.txt holds no sample name"):
        ntu_gendata.main([*argv, "--ignored_sample_path", str(tmp_path / "notes.txt")])
    assert not (tmp_path / "out").exists()


def test_a_missing_skeleton_list_naming_unknown_files_is_warned_about_with_the_count(raw_folder, tmp_path, capsys):
    present = sorted(path.name.removesuffix(".skeleton") for path in raw_folder.iterdir())[0]
    listing = tmp_path / "NTU_RGBD120_samples_with_missing_skeletons.txt"
    listing.write_text(f"3 of the captured samples ...\n\nS018C001P008R001A061\n{present}\nS032C003P106R002A120\n")
    summary = ntu_gendata.gendata(raw_folder, tmp_path / "out", "demo", ignored_sample_path=listing, progress=False)
    assert summary["left_out"] == 1 and summary["converted"] == 5
    assert capsys.readouterr().err == (f"warning: 2 of the 3 names in {listing} match no .skeleton file under "
                                       f"{raw_folder}\n")


def test_an_msr_name_with_an_id_outside_msr_is_refused_naming_it(tmp_path, capsys):
    (tmp_path / "msr").mkdir()
    for name in ("a01_s01_e01", "a21_s02_e01"):
        write_msr_file(tmp_path / "msr" / f"{name}_skeleton3D.txt", random_sequence(5, seed=0))
    with pytest.raises(SystemExit) as exit_info:
        msr_gendata.main(["--data_path", str(tmp_path / "msr"), "--out_folder", str(tmp_path / "out")])
    assert str(exit_info.value) == "error: 'a21_s02_e01': a21 outside a01..a20, the ids of MSR Action3D"
