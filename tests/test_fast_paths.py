"""The fast paths compute what the straightforward implementation computes.

benchmarks/naive_model.py (the released structure: sequence-first Transformers fed through permutes,
bones built in a loop, the full (D, D) covariance) is the yardstick; umurl.py takes the covariance
term from the Gram matrix, pretrain.py uses fused Adam and can draw the views on the device
(--augment-on-device, tests/test_batch_augment.py) or compile the model. Tolerances as in
tests/test_golden.py.
"""
from dataclasses import replace

import pytest
import torch

import pretrain
from benchmarks.naive_model import NaiveUmURL, bones_by_loop, naive_loss
from benchmarks.train_step import BatchedPass
from checkpoint import read_checkpoint
from conftest import epoch_losses, make_demo_data
from skeleton import NTU_25, joint_to_bone
from tests.test_golden import FEATURE_RTOL, GRAD_RTOL, golden_config, relative_error, zero_in_exact_arithmetic
from conftest import run_args
from umurl import UmURL, UmURLConfig, covariance_penalty, off_diagonal, umurl_loss, variance_covariance

TINY = UmURLConfig(hidden_size=16, num_head=2, num_layer=1)


def views(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 64, 25, 2, generator=generator) for _ in range(4)]


def golden_model(cls, golden):
    model = cls(golden_config(golden))
    model.load_state_dict({k.removeprefix("module."): v for k, v in golden["init_state_dict"].items()})
    return model.train()


def test_yardstick_reproduces_the_golden_fixture(golden):
    model = golden_model(NaiveUmURL, golden)
    z = model(*golden["views"])
    total = naive_loss(z)
    total.backward()
    for name, expected in golden["z"].items():
        assert relative_error(z[name], expected) < FEATURE_RTOL, name
    assert total.item() == pytest.approx(golden["loss"]["total"], rel=FEATURE_RTOL)
    for name, p in model.named_parameters():
        expected = golden["grads"][name]
        if zero_in_exact_arithmetic(name):
            scale = golden["grads"][name.removesuffix("bias") + "weight"].abs().max()
            assert (p.grad - expected).abs().max() < GRAD_RTOL * scale, name
        else:
            assert relative_error(p.grad, expected) < GRAD_RTOL, name


def test_umurl_and_the_yardstick_share_parameters_and_agree_on_random_views():
    torch.manual_seed(0)
    fast = UmURL(replace(TINY, projector_dim=64))
    naive = NaiveUmURL(replace(TINY, projector_dim=64))
    naive.load_state_dict(fast.state_dict())  # same names and shapes, strict
    inputs = views()
    z_fast, z_naive = fast(*inputs), naive(*inputs)
    for name in z_naive:
        assert relative_error(z_fast[name], z_naive[name]) < FEATURE_RTOL, name
    loss_fast, loss_naive = umurl_loss(z_fast)[0], naive_loss(z_naive)
    assert loss_fast.item() == pytest.approx(loss_naive.item(), rel=FEATURE_RTOL)
    # BatchNorm running statistics: same batches in the same order.
    for key, value in naive.state_dict().items():
        if "running" in key:
            assert relative_error(fast.state_dict()[key], value) < FEATURE_RTOL, key


def test_the_batched_encoder_pass_candidate_computes_the_same_projections():
    # Measured and not adopted (benchmarks/README.md), but the benchmark's figure is only meaningful
    # if the candidate computes what UmURL computes.
    torch.manual_seed(0)
    model = UmURL(replace(TINY, projector_dim=32))
    twin = UmURL(replace(TINY, projector_dim=32))
    twin.load_state_dict(model.state_dict())
    inputs = views(seed=1)
    batched, separate = BatchedPass(twin)(*inputs), model(*inputs)
    for name in separate:
        assert relative_error(batched[name], separate[name]) < FEATURE_RTOL, name


def test_bones_by_loop_equal_the_vectorised_bones():
    x = views(n=2)[0]
    assert torch.equal(bones_by_loop(x, NTU_25.parents), joint_to_bone(x, NTU_25.parents))


@pytest.mark.parametrize("b, d", [(4, 64), (16, 4096), (3, 3), (64, 8)])
def test_gram_covariance_equals_the_full_covariance(b, d):
    z = torch.randn(b, d, generator=torch.Generator().manual_seed(b), dtype=torch.float64) * 3 + 1
    z.requires_grad_(True)
    centred = z - z.mean(dim=0)
    direct = off_diagonal(centred.T @ centred / (b - 1)).pow(2).sum() / d  # the definition
    fast = covariance_penalty(z)
    assert fast.item() == pytest.approx(direct.item(), rel=1e-10)
    (grad_fast,) = torch.autograd.grad(fast, z)
    (grad_direct,) = torch.autograd.grad(direct, z)
    assert torch.allclose(grad_fast, grad_direct, rtol=1e-8, atol=1e-12)


def test_gram_covariance_by_hand_when_the_batch_is_smaller_than_the_width():
    # Rows (0,0,0), (2,2,4): centred (-1,-1,-2), (1,1,2); B - 1 = 1, so cov = [[2,2,4],[2,2,4],[4,4,8]].
    # Off-diagonal squares: 2 * (4 + 16 + 16) = 72, divided by D = 3.
    z = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 4.0]])
    assert covariance_penalty(z).item() == pytest.approx(24.0)
    assert variance_covariance(z).item() == pytest.approx(24.0)  # every std is above 1: no hinge


def test_fused_adam_makes_the_released_adams_updates():
    # Both optimisers see the same gradients (through the model, rounding noise in the gradients that
    # are zero in exact arithmetic would be amplified by Adam into lr-sized differences).
    torch.manual_seed(0)
    model = UmURL(replace(TINY, projector_dim=32))
    twin = UmURL(replace(TINY, projector_dim=32))
    twin.load_state_dict(model.state_dict())
    fused = pretrain.build_optimizer(model, 5e-4, 1e-5, torch.device("cpu"))
    released = torch.optim.Adam(twin.parameters(), lr=5e-4, weight_decay=1e-5)
    assert fused.param_groups[0]["fused"] and not released.param_groups[0]["fused"]
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        for a, b in zip(model.parameters(), twin.parameters()):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        fused.step()
        released.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7), name


def test_resume_keeps_the_fused_kernel_when_the_checkpoint_was_written_without_it(tmp_path):
    model = UmURL(replace(TINY, projector_dim=32))
    released = torch.optim.Adam(model.parameters(), lr=5e-4)  # "fused": None, as in released checkpoints
    torch.save({"epoch": 3, "state_dict": model.state_dict(), "optimizer": released.state_dict()},
               tmp_path / "ckpt.pth.tar")
    optimizer = pretrain.build_optimizer(model, 5e-4, 1e-5, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    saved = read_checkpoint(tmp_path / "ckpt.pth.tar")
    assert pretrain.resume(saved, tmp_path / "ckpt.pth.tar", model, optimizer, scaler, plan=(1, 8)) == (3, None)
    assert optimizer.param_groups[0]["fused"] is True


def test_pretraining_with_views_drawn_on_the_device(tmp_path):
    data_root = make_demo_data(tmp_path / "data")
    common = ["--epochs", "1", "--batch-size", "8", "--workers", "0", "--augment-on-device"]
    pretrain.main(run_args(data_root, tmp_path / "device", *common))
    pretrain.main(run_args(data_root, tmp_path / "again", *common))
    losses = epoch_losses(tmp_path / "device")
    assert len(losses) == 1 and all(torch.isfinite(torch.tensor(losses)))
    assert epoch_losses(tmp_path / "again") == losses  # seeded: the same views every run
    assert run_args(data_root, tmp_path / "x").augment_on_device is False  # off by default


def test_compile_flag_compiles_the_training_model_and_saves_the_plain_one(tmp_path, monkeypatch):
    compiled = []

    def fake_compile(model):  # the real compile takes a minute; what matters here is the wiring
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    data_root = make_demo_data(tmp_path / "data")
    pretrain.main(run_args(data_root, tmp_path / "run", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                           "--compile"))
    assert len(compiled) == 1 and isinstance(compiled[0], UmURL)
    state = read_checkpoint(tmp_path / "run" / "checkpoint_last.pth.tar")["state_dict"]
    assert not any(key.startswith(("_orig_mod.", "module.")) for key in state)
