"""options/parser.py: every long flag answers to both spellings, as the released tools mixed them."""
import pytest

from options.parser import ArgumentParser


def parser():
    p = ArgumentParser(prog="tool")
    p.add_argument("--data_path")  # a released underscore flag
    p.add_argument("--batch-size", type=int)  # a released dash flag
    p.add_argument("name", nargs="?")
    return p


@pytest.mark.parametrize("argv", [
    ["--data_path", "a", "--batch-size", "8"],
    ["--data-path", "a", "--batch_size", "8"],
    ["--data-path=a", "--batch_size=8"],
])
def test_both_spellings_reach_the_same_flag(argv):
    args = parser().parse_args(argv)
    assert (args.data_path, args.batch_size) == ("a", 8)


def test_unknown_flags_and_positionals_after_a_bare_double_dash_are_left_alone(capsys):
    assert parser().parse_args(["--", "--data-path"]).name == "--data-path"
    with pytest.raises(SystemExit):
        parser().parse_args(["--batch--size", "8"])
    assert "unrecognized arguments: --batch--size" in capsys.readouterr().err


def test_the_project_s_commands_take_both_spellings():
    from data_gen import msr_gendata
    from options.pretrain import build_parser

    args = build_parser().parse_args(["--pre_dataset", "msr", "--checkpoint_path", "runs/x", "--batch_size", "4"])
    assert (args.dataset, str(args.checkpoint_path), args.batch_size) == ("msr", "runs/x", 4)
    assert isinstance(build_parser(), ArgumentParser)
    with pytest.raises(SystemExit, match="does not exist"):
        msr_gendata.main(["--data-path", "/no/such/folder", "--out-folder", "/tmp/x"])
