"""console.py: progress bars only on a terminal, and a plain train.log of what a run printed."""
import io
import json
import sys

import pytest

import console


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bars_only_on_a_terminal_and_never_with_tqdm_disable(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("UMURL_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # redirected to a file: no bar
    assert console.progress_bar(range(3)).disable
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert not console.progress_bar(range(3)).disable
    assert console.progress_bar(range(3), disable=True).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert console.progress_bar(range(3)).disable
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not console.progress_bar(range(3)).disable
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv("UMURL_PROGRESS_BARS", "1")  # asked for in a redirected stream too
    assert not console.progress_bar(range(3)).disable


def test_train_log_gets_what_is_printed_but_not_the_bars(tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("UMURL_PROGRESS_BARS", raising=False)
    terminal_out, terminal_err = Terminal(), Terminal()
    monkeypatch.setattr(sys, "stdout", terminal_out)
    monkeypatch.setattr(sys, "stderr", terminal_err)
    log = tmp_path / "train.log"
    with console.copy_output_to(log):
        print("epoch 0: loss 1.0")
        print("a warning", file=sys.stderr)
        for _ in console.progress_bar(range(3), desc="bar"):
            pass
    assert sys.stdout is terminal_out and sys.stderr is terminal_err
    assert log.read_text() == "epoch 0: loss 1.0\na warning\n"
    assert "epoch 0" in terminal_out.getvalue() and "bar" in terminal_err.getvalue()  # the bar stays on screen
    with pytest.raises(SystemExit), console.copy_output_to(log):  # appended, and the error is kept
        raise SystemExit("error: something named")
    with pytest.raises(ZeroDivisionError), console.copy_output_to(log):
        print(1 / 0)
    text = log.read_text()
    assert text.startswith("epoch 0: loss 1.0\na warning\nerror: something named\nTraceback")
    assert "ZeroDivisionError" in text


def test_every_run_folder_holds_its_train_log_and_environment(tmp_path, capsys):
    import action_retrieval
    import pretrain
    from options.downstream import build_retrieval_parser
    from conftest import make_demo_data
    from conftest import run_args

    root = make_demo_data(tmp_path / "data")
    run_dir = tmp_path / "pretrain"
    pretrain.main(run_args(root, run_dir, "--epochs", "1", "--batch-size", "8", "--workers", "0"))
    assert "epoch 0: loss" in (run_dir / "train.log").read_text()
    environment = json.loads((run_dir / "config.json").read_text())["environment"]
    assert environment["torch"] and environment["device_name"] and environment["git_dirty"] in (True, False, None)

    knn_dir = tmp_path / "knn"
    action_retrieval.main(build_retrieval_parser().parse_args(
        ["--hidden-size", "16", "--device", "cpu", "--workers", "0", "--finetune-dataset", "demo", "--data-root",
         str(root), "--checkpoint-path", str(knn_dir), "--pretrained", str(run_dir / "checkpoint_0000.pth.tar")]))
    lines = (knn_dir / "train.log").read_text().splitlines()
    assert lines[-1].startswith("RESULT knn top1=") and lines[-1] == capsys.readouterr().out.strip().splitlines()[-1]
