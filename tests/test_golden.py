"""Faithfulness: the model and loss against numbers computed with the released code.

Tolerances from fixtures/README.md: 1e-5 relative on features, projections and loss, 1e-4 on
gradients. BatchNorm running statistics are checked too: they depend on the order in which each
projector sees its two batches.

Every test runs on the CPU and, when there is a GPU, on CUDA twice (benchmarks/gpu_check.sh runs
`-k cuda`): in full fp32, to the same tolerances, and with TF32 matmuls, which round their inputs to
10 mantissa bits (2^-11 relative). TF32's tolerances are wider, from bf16 (8 bits) on the CPU: bf16
autocast moves the projections by 5e-2 relative, features, loss parts and BatchNorm statistics by
under 7e-3, gradients by up to 0.7; TF32's rounding is 8x finer, so 2e-2 and 0.25 leave about a
factor 3.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch

from umurl import UmURL, UmURLConfig, umurl_loss

FEATURE_RTOL, GRAD_RTOL = 1e-5, 1e-4  # fixtures/README.md

@dataclass(frozen=True)
class Setting:
    device: str
    tf32: bool
    feature_rtol: float  # features, projections, loss parts, BatchNorm statistics
    grad_rtol: float


SETTINGS = {
    "cpu": Setting("cpu", False, FEATURE_RTOL, GRAD_RTOL),
    "cuda-fp32": Setting("cuda", False, FEATURE_RTOL, GRAD_RTOL),
    "cuda-tf32": Setting("cuda", True, 2e-2, 0.25),
}


@contextmanager
def matmul_precision(tf32):
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if tf32 else "highest")  # "high": TF32 on CUDA
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.fixture(scope="module", params=list(SETTINGS))
def setting(request):
    chosen = SETTINGS[request.param]
    if chosen.device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device: the golden tests on CUDA run where there is one (benchmarks/gpu_check.sh)")
    with matmul_precision(chosen.tf32):
        yield chosen


def relative_error(actual, expected):
    actual, expected = actual.detach().cpu().float(), expected.float()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def golden_config(golden):
    """The fixture's sizes as a UmURLConfig: the released NTU-25 skeleton (its input widths are derived)."""
    sizes = golden["model_config"]
    config = UmURLConfig(hidden_size=sizes["hidden_size"], num_head=sizes["num_head"], num_layer=sizes["num_layer"],
                         projector_dim=golden["projector_dim"])
    assert (config.t_input_size, config.s_input_size) == (sizes["t_input_size"], sizes["s_input_size"])
    return config


def golden_model(golden, device):
    model = UmURL(golden_config(golden))
    model.load_state_dict({k.removeprefix("module."): v for k, v in golden["init_state_dict"].items()})
    return model.to(device)


@pytest.fixture(scope="module")
def golden_run(golden, setting):
    """The golden model after one pretraining forward and backward in train mode."""
    model = golden_model(golden, setting.device)
    model.train()
    z = model(*(view.to(setting.device) for view in golden["views"]))
    total, parts = umurl_loss(z)
    total.backward()
    return model, z, total, parts


def test_projections_match(golden, golden_run, setting):
    _, z, _, _ = golden_run
    assert set(z) == set(golden["z"])
    for name, expected in golden["z"].items():
        assert relative_error(z[name], expected) < setting.feature_rtol, name


def test_loss_parts_match(golden, golden_run, setting):
    _, _, total, parts = golden_run
    expected = golden["loss"]
    assert total.item() == pytest.approx(expected["total"], rel=setting.feature_rtol)
    for name in ("intra", "inter", "reg"):
        assert parts[name].item() == pytest.approx(expected[name], rel=setting.feature_rtol), name


def zero_in_exact_arithmetic(name):
    """Biases whose gradient is exactly zero in exact arithmetic: each adds the same constant to every
    sample right before a normalisation over the batch that subtracts it again (the projectors' first
    two Linears before their BatchNorms; the encoder's last LayerNorm, whose constant survives
    max-pooling and reaches the first BatchNorm through a Linear). The fixture holds rounding noise
    there (~1e-6), and its digits depend on the summation order, e.g. on how the loss's covariance
    term is computed (umurl.covariance_penalty)."""
    return ("projector" in name and name.endswith((".0.bias", ".3.bias"))) or name.endswith("layers.0.norm2.bias")


def test_every_gradient_matches(golden, golden_run, setting):
    model = golden_run[0]
    grads = {name: p.grad.cpu() for name, p in model.named_parameters()}
    assert set(grads) == set(golden["grads"])
    for name, expected in golden["grads"].items():
        if zero_in_exact_arithmetic(name):
            # Noise-sized, measured against the gradient scale of the layer's own weight.
            scale = golden["grads"][name.removesuffix("bias") + "weight"].abs().max()
            assert (grads[name] - expected).abs().max() < setting.grad_rtol * scale, name
        else:
            assert relative_error(grads[name], expected) < setting.grad_rtol, name


def test_batchnorm_running_statistics_match(golden, golden_run, setting):
    state = golden_run[0].state_dict()
    for key, expected in golden["bn_buffers_after_forward"].items():
        actual = state[key.removeprefix("module.")]
        if key.endswith("num_batches_tracked"):
            assert actual.item() == expected.item(), key
        else:
            assert relative_error(actual, expected) < setting.feature_rtol, key


@pytest.mark.parametrize("feature, modalities", [
    ("y_u", ("joint", "bone", "motion")), ("y_j", ("joint",)), ("y_b", ("bone",)), ("y_m", ("motion",)),
])
def test_encoder_features_match(golden, setting, feature, modalities):
    model = golden_model(golden, setting.device)
    model.eval()
    with torch.no_grad():
        y = model.backbone(golden["downstream_sample"].unsqueeze(0).to(setting.device), modalities)[0]
    assert relative_error(y, golden[feature]) < setting.feature_rtol
