"""The step that runs on CUDA, tested on the CPU: fp16 autocast, the loss in float32, the scaled
backward, a step skipped on inf/NaN gradients, the scale update, the scaler state saved and resumed,
and data parallelism under fp16; plus which synchronised BatchNorm each device gets.

torch runs fp16 autocast and `torch.amp.GradScaler("cpu")` on the CPU, so `--amp --amp-dtype fp16
--device cpu` is the released CUDA recipe on any machine. Sizes are tiny: each test takes seconds.
"""
import functools
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import distributed
import pretrain
import utils
from checkpoint import read_checkpoint
from options.pretrain import build_parser
from conftest import TINY_RUN, epoch_losses, make_demo_data, torch_threads, torchrun
from conftest import straight_and_resumed, without_zero_gradient_entries
from umurl import UmURL, UmURLConfig, umurl_loss

ROOT = Path(__file__).resolve().parents[1]
FP16 = ["--amp", "--amp-dtype", "fp16"]
CPU = torch.device("cpu")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return UmURL(UmURLConfig(hidden_size=16, projector_dim=32))


def view_loader(num_samples=8, batch_size=8, seed=0):
    """A loader of four random views (B, C, T, V, M), as the pretraining loader yields them."""
    generator = torch.Generator().manual_seed(seed)
    views = [torch.randn(num_samples, 3, 64, 25, 2, generator=generator) for _ in range(4)]
    return DataLoader(TensorDataset(*views), batch_size=batch_size)


def trainable(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_fp16_is_granted_on_the_cpu_when_asked_for_by_name_and_defaults_are_unchanged():
    assert utils.resolve_amp_dtype(CPU, True, "fp16") == torch.float16
    assert utils.resolve_amp_dtype(CPU, True, "auto") == torch.bfloat16
    assert utils.resolve_amp_dtype(CPU, None, "auto") is None  # fp32 on the CPU by default
    assert utils.resolve_amp_dtype(torch.device("cuda"), None, "auto") == torch.float16  # as released


def test_fp16_forward_gives_fp16_projections_and_a_float32_loss():
    model = tiny_model()
    views = next(iter(view_loader()))
    with utils.autocast(CPU, torch.float16):
        z = model(*views)
    total, parts = umurl_loss(z)
    assert all(value.dtype == torch.float16 for value in z.values())
    assert total.dtype == torch.float32 and all(part.dtype == torch.float32 for part in parts.values())
    reference, _ = umurl_loss({name: value.float() for name, value in z.items()})
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_halves():
    model = tiny_model()
    optimizer = pretrain.build_optimizer(model, 5e-4, 1e-5, CPU)
    # 2^40 times a loss of ~25 overflows fp16's 65504 in the first backward op: every gradient is inf.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    before = trainable(model)
    pretrain.train_one_epoch(model, view_loader(), optimizer, scaler, 0, CPU, torch.float16)
    assert scaler.get_scale() == 2.0**39
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert all(int(state.get("step", 0)) == 0 for state in optimizer.state.values())  # Adam never stepped

    # A scale that fits: the same step is taken, the weights move, the scale stays (no overflow, and
    # growth waits 2000 steps).
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    pretrain.train_one_epoch(model, view_loader(), optimizer, scaler, 1, CPU, torch.float16)
    assert scaler.get_scale() == 2.0**8
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert not any(torch.equal(before[name], p) for name, p in model.named_parameters())


@pytest.fixture
def restless_scaler(monkeypatch):
    """GradScaler starting high and growing after every good step: the scale overflows, halves and
    grows again all through the run, so a resumed run that lost the scaler state would take a
    different set of steps."""
    monkeypatch.setattr(torch.amp, "GradScaler",
                        functools.partial(torch.amp.GradScaler, init_scale=2.0**24, growth_interval=1))


def test_an_fp16_run_resumed_with_its_scaler_state_ends_bit_identical(restless_scaler, tmp_path, monkeypatch):
    extra = [*FP16, "--epochs", "3", "--batch-size", "4", "--workers", "0", "--seed", "3"]
    straight, resumed = straight_and_resumed(make_demo_data(tmp_path / "data"), tmp_path, extra, monkeypatch)

    first, second = (read_checkpoint(run / "checkpoint_last.pth.tar") for run in (straight, resumed))
    assert first["config"]["amp_dtype"] == "float16"
    assert first["scaler"]["scale"] != 2.0**24  # the scale moved: the saved state carries information
    assert first["scaler"] == second["scaler"]
    assert epoch_losses(resumed) == epoch_losses(straight)
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])


def test_two_gloo_processes_under_fp16_take_the_one_process_step(tmp_path, monkeypatch):
    # 8 samples, global batch 8: one step. Two processes take 4 each; the all-gather and the
    # synchronised BatchNorm must make the gradient that of one process taking all 8. Adam's first
    # moment after one step is exactly 0.1 x the unscaled gradient, so it is compared directly.
    # The initial scale 2^10 fits both runs (at 2^16 these tiny sizes overflow, see fp16_launch.py).
    # Both must also take the same decision: DDP averages the gradients, so an inf in either process
    # reaches both, and found_inf is the same everywhere.
    root = make_demo_data(tmp_path / "data", num_train=8)
    common = [*TINY_RUN, *FP16, "--data-root", str(root), "--epochs", "1", "--batch-size", "8", "--workers", "0"]
    single, double = tmp_path / "one", tmp_path / "two"
    # The one-process run in this process (what fp16_launch.py does in the two), on one thread like them.
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=2.0**10))
    with torch_threads(1):
        pretrain.main(build_parser().parse_args([*common, "--checkpoint-path", str(single)]))
    launched = subprocess.run(torchrun("tests/fp16_launch.py", str(2.0**10), "--", *common,
                                       "--checkpoint-path", str(double)),
                              cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "precision float16" in launched.stdout and "synchronised by distributed.SyncBatchNorm1d" in launched.stdout
    config = json.loads((double / "config.json").read_text())["config"]
    assert (config["amp_dtype"], config["sync_batchnorm"]) == ("float16", "distributed.SyncBatchNorm1d")

    assert epoch_losses(double)[0] == pytest.approx(epoch_losses(single)[0], rel=1e-4)
    one, two = read_checkpoint(single / "checkpoint_last.pth.tar"), read_checkpoint(double / "checkpoint_last.pth.tar")
    assert one["scaler"] == two["scaler"]
    moments_one, moments_two = one["optimizer"]["state"], two["optimizer"]["state"]
    assert len(moments_one) == len(moments_two) == len(list(tiny_model().parameters()))
    assert all(int(state["step"]) == 1 for state in [*moments_one.values(), *moments_two.values()])  # taken
    # Within fp16's own rounding: at these sizes one fp16 process differs from one fp32 process by up
    # to 8% of a tensor's largest gradient; two processes differ from one by under 1.5%. Entries whose
    # gradient is zero in exact arithmetic hold only that rounding, and are left out.
    names = [name for name, _ in tiny_model().named_parameters()]
    for index in moments_one:
        a, b = without_zero_gradient_entries(names[index], moments_one[index]["exp_avg"], moments_two[index]["exp_avg"])
        assert a.numel() == 0 or (a - b).abs().max() <= 3e-2 * a.abs().max(), names[index]
    for key in ("j_projector.1.running_mean", "j_projector.1.running_var"):
        assert torch.allclose(one["state_dict"][key], two["state_dict"][key], rtol=1e-3, atol=1e-5), key


def test_each_device_gets_its_synchronised_batchnorm():
    # Converting modules needs no GPU: the CUDA choice is checked on a CPU model.
    for device, kind in (("cuda", torch.nn.SyncBatchNorm), ("cpu", distributed.SyncBatchNorm1d)):
        model = tiny_model()
        with torch.no_grad():
            model.j_projector[1].running_mean.fill_(0.5)
        state = model.state_dict()
        converted = distributed.convert_sync_batchnorm(model, torch.device(device))
        norms = [m for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert len(norms) == 6 and all(type(m) is kind for m in norms), device
        assert distributed.sync_batchnorm_name(device).endswith(kind.__name__)
        assert all(torch.equal(state[k], v) for k, v in converted.state_dict().items())
