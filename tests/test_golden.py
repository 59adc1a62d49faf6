"""Faithfulness: the model and loss against numbers computed with the released code.

Tolerances from fixtures/README.md: 1e-5 relative on features, projections and loss, 1e-4 on
gradients. BatchNorm running statistics are checked too: they depend on the order in which each
projector sees its two batches.
"""
import pytest
import torch

from umurl import UmURL, umurl_loss

FEATURE_RTOL = 1e-5
GRAD_RTOL = 1e-4


def relative_error(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def golden_run(golden):
    """The golden model after one pretraining forward and backward in train mode."""
    model = UmURL(**golden["model_config"], projector_dim=golden["projector_dim"])
    model.load_state_dict({k.removeprefix("module."): v for k, v in golden["init_state_dict"].items()})
    model.train()
    z = model(*golden["views"])
    total, parts = umurl_loss(z)
    total.backward()
    return model, z, total, parts


def test_projections_match(golden, golden_run):
    _, z, _, _ = golden_run
    assert set(z) == set(golden["z"])
    for name, expected in golden["z"].items():
        assert relative_error(z[name], expected) < FEATURE_RTOL, name


def test_loss_parts_match(golden, golden_run):
    _, _, total, parts = golden_run
    expected = golden["loss"]
    assert total.item() == pytest.approx(expected["total"], rel=FEATURE_RTOL)
    for name in ("intra", "inter", "reg"):
        assert parts[name].item() == pytest.approx(expected[name], rel=FEATURE_RTOL), name


def zero_in_exact_arithmetic(name):
    """Biases whose gradient is exactly zero in exact arithmetic: each adds the same constant to every
    sample right before a normalisation over the batch that subtracts it again (the projectors' first
    two Linears before their BatchNorms; the encoder's last LayerNorm, whose constant survives
    max-pooling and reaches the first BatchNorm through a Linear). The fixture holds rounding noise
    there (~1e-6), and its digits depend on the summation order, e.g. on how the loss's covariance
    term is computed (umurl.covariance_penalty)."""
    return ("projector" in name and name.endswith((".0.bias", ".3.bias"))) or name.endswith("layers.0.norm2.bias")


def test_every_gradient_matches(golden, golden_run):
    model = golden_run[0]
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert set(grads) == set(golden["grads"])
    for name, expected in golden["grads"].items():
        if zero_in_exact_arithmetic(name):
            # Noise-sized, measured against the gradient scale of the layer's own weight.
            scale = golden["grads"][name.removesuffix("bias") + "weight"].abs().max()
            assert (grads[name] - expected).abs().max() < GRAD_RTOL * scale, name
        else:
            assert relative_error(grads[name], expected) < GRAD_RTOL, name


def test_batchnorm_running_statistics_match(golden, golden_run):
    state = golden_run[0].state_dict()
    for key, expected in golden["bn_buffers_after_forward"].items():
        actual = state[key.removeprefix("module.")]
        if key.endswith("num_batches_tracked"):
            assert actual.item() == expected.item(), key
        else:
            assert relative_error(actual, expected) < FEATURE_RTOL, key


@pytest.mark.parametrize("feature, modalities", [
    ("y_u", ("joint", "bone", "motion")), ("y_j", ("joint",)), ("y_b", ("bone",)), ("y_m", ("motion",)),
])
def test_encoder_features_match(golden, feature, modalities):
    model = UmURL(**golden["model_config"], projector_dim=golden["projector_dim"])
    model.load_state_dict({k.removeprefix("module."): v for k, v in golden["init_state_dict"].items()})
    model.eval()
    with torch.no_grad():
        y = model.backbone(golden["downstream_sample"].unsqueeze(0), modalities)[0]
    assert relative_error(y, golden[feature]) < FEATURE_RTOL
