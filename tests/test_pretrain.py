"""pretrain.py end to end on tiny data: data parallelism, exact resume, checkpoints, failures."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pretrain
from checkpoint import load_encoder_weights, read_checkpoint
from conftest import TINY_RUN as TINY
from conftest import epoch_losses, make_demo_data, run_args, straight_and_resumed, without_zero_gradient_entries
from options.pretrain import build_parser
from umurl import DownstreamModel, LossWeights, UmURLConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("data"))


def log_field(run_dir, name):
    return [json.loads(line)[name] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def weights(run_dir, name="checkpoint_last.pth.tar"):
    return read_checkpoint(run_dir / name)["state_dict"]


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(data_root, tmp_path):
    # 12 samples, global batch 8: a full step, then the partial last batch of 4, as released. Two
    # processes take 4 + 2 each; the all-gather and the synchronised BatchNorm must make both steps
    # identical to one process taking 8 + 4 (the same samples: the sampler deals them out in turn).
    root = make_demo_data(tmp_path / "data", num_train=12)
    common = [*TINY, "--data-root", str(root), "--epochs", "1", "--batch-size", "8", "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, double = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "pretrain.py", *common, "--checkpoint-path", str(single)],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "pretrain.py", *common, "--checkpoint-path", str(double)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "2 process(es)" in launched.stdout
    assert epoch_losses(double)[0] == pytest.approx(epoch_losses(single)[0], rel=1e-5)
    assert log_field(single, "samples") == log_field(double, "samples") == [12]
    one, two = weights(single), weights(double)
    assert one.keys() == two.keys()
    for key in one:
        # A BatchNorm's running mean follows the bias before it, which is rounding noise after the
        # first step (see without_zero_gradient_entries); its running variance does not.
        if not key.endswith("running_mean"):
            a, b = without_zero_gradient_entries(key, one[key].float(), two[key].float())
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), key
    # The BatchNorm running statistics are those of the global batch on both.
    assert torch.allclose(one["j_projector.1.running_var"], two["j_projector.1.running_var"], rtol=1e-4)


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(data_root, tmp_path, monkeypatch):
    # 16 samples in batches of 6: every epoch ends with a partial batch of 4.
    extra = ["--epochs", "3", "--batch-size", "6", "--workers", "2", "--seed", "7"]
    straight, resumed = straight_and_resumed(data_root, tmp_path, extra, monkeypatch)
    assert epoch_losses(resumed) == epoch_losses(straight)
    final_straight, final_resumed = weights(straight), weights(resumed)
    assert all(torch.equal(final_straight[k], final_resumed[k]) for k in final_straight)


def test_checkpoints_follow_the_released_schedule_and_load_downstream(data_root, tmp_path):
    run_dir = tmp_path / "run"
    pretrain.main(run_args(data_root, run_dir, "--epochs", "5", "--batch-size", "8", "--workers", "0",
                           "--save-freq", "2"))
    names = sorted(p.name for p in run_dir.glob("checkpoint_*.pth.tar"))
    assert names == ["checkpoint_0000.pth.tar", "checkpoint_0002.pth.tar", "checkpoint_0004.pth.tar",
                     "checkpoint_last.pth.tar"]
    last = read_checkpoint(run_dir / "checkpoint_last.pth.tar")
    assert {"epoch", "state_dict", "optimizer", "scaler", "rng_states", "config", "model_config"} <= set(last)
    assert last["epoch"] == 5 and last["config"]["epochs"] == 5
    model = DownstreamModel(UmURLConfig(hidden_size=16), 4)
    report = load_encoder_weights(model, run_dir / "checkpoint_0004.pth.tar")
    assert report["missing"] == ["fc.bias", "fc.weight"]
    key = "backbone.j_emb.t_embedding.0.weight"
    assert torch.equal(model.state_dict()[key], last["state_dict"][key])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["batch_size"] == 8 and "command" in config
    assert config["config"]["min_crop_length"] == 64  # the protocol's, recorded even when not given
    assert any((run_dir / "tensorboard").iterdir())


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(data_root, tmp_path, monkeypatch,
                                                                                capsys):
    run_dir = tmp_path / "run"
    pretrain.main(run_args(data_root, run_dir, "--epochs", "1", "--batch-size", "8", "--workers", "0"))
    before = weights(run_dir)
    real_loss = pretrain.umurl_loss

    def nan_loss(z, weights):
        total, parts = real_loss(z, weights)
        return total * float("nan"), parts

    monkeypatch.setattr(pretrain, "umurl_loss", nan_loss)
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(run_args(data_root, run_dir, "--epochs", "2", "--batch-size", "8", "--workers", "0"))
    assert exit_info.value.code == 1
    assert "non-finite loss (nan) at epoch 1, step 0" in capsys.readouterr().out
    after = read_checkpoint(run_dir / "checkpoint_last.pth.tar")
    assert after["epoch"] == 1
    assert all(torch.equal(before[k], after["state_dict"][k]) for k in before)


def test_bad_settings_fail_at_start_up(data_root, tmp_path):
    with pytest.raises(SystemExit, match="cannot fill one global batch"):
        pretrain.main(run_args(data_root, tmp_path / "a", "--batch-size", "64"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="cannot write to the run folder"):
        pretrain.main(run_args(data_root, blocker / "run"))
    with pytest.raises(Exception, match="train_data_joint.npy"):
        pretrain.main(run_args(tmp_path / "no_data", tmp_path / "b"))


def test_every_epoch_keeps_its_partial_last_batch(data_root, tmp_path):
    # 16 samples in global batches of 6: steps of 6, 6 and 4, every sample once (the released loader
    # has no drop_last). The fold case: 13 samples in batches of 6 would end with a lone sample,
    # whose variance is undefined; it joins the step before (6, 7).
    run_dir = tmp_path / "run"
    pretrain.main(run_args(data_root, run_dir, "--epochs", "2", "--batch-size", "6", "--workers", "0"))
    assert log_field(run_dir, "samples") == [16, 16]
    root = make_demo_data(tmp_path / "data13", num_train=13)
    pretrain.main(run_args(root, tmp_path / "fold", "--epochs", "1", "--batch-size", "6", "--workers", "0"))
    assert log_field(tmp_path / "fold", "samples") == [13]
    assert all(np.isfinite(epoch_losses(tmp_path / "fold")))


def test_the_pretraining_batch_defaults_to_the_released_one_of_the_protocol(tmp_path):
    from options.protocols import get_protocol
    released = {("ntu60", "cross_subject"): 512, ("ntu60", "cross_view"): 1024,
                ("ntu120", "cross_subject"): 1024, ("ntu120", "cross_setup"): 1024}
    for (dataset, protocol), batch in released.items():
        assert get_protocol(dataset, protocol).pretrain_batch_size == batch
    assert build_parser().parse_args([]).batch_size is None  # resolved from the protocol at start-up
    root = make_demo_data(tmp_path / "data", num_train=8)
    with pytest.raises(SystemExit, match="cannot fill one global batch of 512"):
        pretrain.main(run_args(root, tmp_path / "run"))


# ---------------------------------------------------------------------------------------------------------
# The loss's parts drive the logs; the view and the loss weights are recorded settings

def test_a_new_loss_part_is_logged_without_a_change_to_pretrain(data_root, tmp_path, monkeypatch, capsys):
    # A researcher adds a term to umurl_loss: its part reaches log.jsonl, TensorBoard and the epoch line.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    real_loss = pretrain.umurl_loss

    def loss_with_a_new_term(z, weights):
        total, parts = real_loss(z, weights)
        novelty = z["z_j"].float().abs().mean()
        return total + 0.01 * novelty, {**parts, "novelty": novelty.detach()}

    monkeypatch.setattr(pretrain, "umurl_loss", loss_with_a_new_term)
    run_dir = tmp_path / "run"
    pretrain.main(run_args(data_root, run_dir, "--epochs", "2", "--batch-size", "8", "--workers", "0"))
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [list(record)[2:7] for record in records] == [["loss", "intra", "inter", "reg", "novelty"]] * 2
    assert all(record["novelty"] > 0 for record in records)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and all(", reg " in line and ", novelty " in line for line in lines)
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert {"train_loss", "train/intra", "train/novelty"} <= set(events.Tags()["scalars"])


def test_epoch_progress_follows_the_parts_and_resumes_them_exactly():
    steps = [{"loss": 3.1, "intra": 0.1, "new": 0.7}, {"loss": 2.9, "intra": 0.3, "new": 0.2},
             {"loss": 2.5, "intra": 0.2, "new": 0.9}]
    straight, interrupted = pretrain.EpochProgress((1, 8)), pretrain.EpochProgress((1, 8))
    for values in steps:
        straight.add_losses(values, 8)
    interrupted.add_losses(steps[0], 8)
    resumed = pretrain.EpochProgress((1, 8), interrupted.state_dict())
    for values in steps[1:]:
        resumed.add_losses(values, 8)
    assert list(resumed.losses()) == ["loss", "intra", "new"]
    assert resumed.losses() == straight.losses()  # the same floats, not approximately


def test_the_epoch_line_names_every_part_in_the_loss_s_order():
    stats = {"samples_per_s": 123.45, "data_time_s": 0.52}
    line = pretrain.epoch_line(3, 5e-4, {"loss": 1.23456, "intra": 0.1, "inter": 0.2, "reg": 0.3}, stats, 90.0)
    assert line == ("epoch 3: loss 1.2346 (intra 0.1000, inter 0.2000, reg 0.3000), lr 5.00e-04, 123.5 samples/s, "
                    "data wait 0.5s, ETA 1.5 min")


def test_the_view_and_the_loss_weights_are_recorded_and_a_resume_that_changes_one_is_refused(data_root, tmp_path):
    from feeder.augmentations import RELEASED_VIEW

    run_dir = tmp_path / "run"
    common = ["--batch-size", "8", "--workers", "0"]
    pretrain.main(run_args(data_root, run_dir, "--epochs", "1", *common))
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["view"] == RELEASED_VIEW.as_dict()
    assert config["loss_weights"] == {"consistency": 5.0, "variance": 5.0, "covariance": 1.0}
    assert read_checkpoint(run_dir / "checkpoint_last.pth.tar")["config"]["view"] == RELEASED_VIEW.as_dict()
    for changed, named in ((["--variance-weight", "2"], "loss_weights.variance 5.0 -> 2.0"),
                           (["--min-crop-length", "16"], "view.min_crop_length 64 -> 16")):
        with pytest.raises(SystemExit, match="change the result") as refusal:
            pretrain.main(run_args(data_root, run_dir, "--epochs", "2", *common, *changed))
        assert named in str(refusal.value)  # the entry that differs, not the whole dict twice


def test_loss_weights_reach_the_loss(data_root, tmp_path, monkeypatch):
    seen = []
    real_loss = pretrain.umurl_loss

    def recording_loss(z, weights):
        seen.append(weights)
        return real_loss(z, weights)

    monkeypatch.setattr(pretrain, "umurl_loss", recording_loss)
    pretrain.main(run_args(data_root, tmp_path / "run", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                           "--consistency-weight", "1.5", "--variance-weight", "2", "--covariance-weight", "0"))
    assert set(seen) == {LossWeights(consistency=1.5, variance=2.0, covariance=0.0)}
