"""Bad input costs seconds and a clear sentence, never memory, hours or a traceback (README "Reliability").

Flags are checked while they are parsed; hostile raw files, checkpoints and disks are refused before
the work that they would spoil. Each test injects one bad input at tiny sizes.
"""
import pytest
from test_pretrain import make_demo_data

from data_gen import msr_gendata, ntu_gendata, pku_gendata, synthetic
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
    ("pretrain.py", ["--schedule", "351", "0"], "--schedule must be at least 1, got 0"),
    ("pretrain.py", ["--lr", "nan"], "--lr must be a positive finite number, got nan"),
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
