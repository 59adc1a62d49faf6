"""The loss terms against values worked out by hand on tiny inputs."""
import math

import pytest
import torch

from umurl import (RELEASED_LOSS_WEIGHTS, LossWeights, covariance_penalty, inter_modal_consistency,
                   intra_modal_consistency, off_diagonal, umurl_loss, variance_covariance, variance_hinge)


def test_off_diagonal_picks_every_entry_off_the_diagonal_once():
    matrix = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    assert sorted(off_diagonal(matrix).tolist()) == [2.0, 3.0, 4.0, 6.0, 7.0, 8.0]


def test_variance_hinge_uses_unbiased_variance_and_eps():
    # Column 0 has unbiased variance 2 (std above 1: no penalty); column 1 is constant: std = sqrt(1e-4).
    z = torch.tensor([[0.0, 5.0], [2.0, 5.0]])
    assert variance_hinge(z).item() == pytest.approx((0.0 + (1 - math.sqrt(1e-4))) / 2)


def test_covariance_penalty_sums_squared_off_diagonal_over_dimension():
    # Centred rows (-1,-1), (0,0), (1,1): covariance [[1,1],[1,1]] with B-1 = 2; off-diagonal 1 and 1.
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert covariance_penalty(z).item() == pytest.approx(2.0 / 2)


def test_variance_covariance_weights_the_hinge_by_five():
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # std 1 per column: no hinge
    assert variance_covariance(z).item() == pytest.approx(1.0)
    constant = torch.ones(3, 2)
    assert variance_covariance(constant).item() == pytest.approx(5 * (1 - math.sqrt(1e-4)))


def test_intra_is_the_sum_of_three_mean_squared_errors():
    zeros = torch.zeros(2, 3)
    assert intra_modal_consistency(zeros + 1, zeros + 2, zeros + 3, zeros, zeros, zeros).item() == 1 + 4 + 9


def test_inter_compares_each_modality_with_their_mean():
    zeros = torch.zeros(2, 3)
    # c = 3: (0-3)^2 + (3-3)^2 + (6-3)^2
    assert inter_modal_consistency(zeros, zeros + 3, zeros + 6).item() == 18.0


def test_inter_lets_gradients_flow_through_the_mean():
    z_j = torch.zeros(2, 3, requires_grad=True)
    z_b, z_m = torch.full((2, 3), 3.0), torch.full((2, 3), 6.0)
    inter_modal_consistency(z_j, z_b, z_m).backward()
    # d/dz_j of mean((z_j-c)^2) + mean((z_b-c)^2) + mean((z_m-c)^2) with c = (z_j+z_b+z_m)/3,
    # per element over 6 elements: [2(z_j-c)(2/3) - 2(z_b-c)/3 - 2(z_m-c)/3] / 6 = [-4 - 0 - 2] / 6 = -1.
    assert torch.allclose(z_j.grad, torch.full((2, 3), -1.0))


def test_total_composes_the_parts():
    zeros = torch.zeros(2, 2)
    z = {"z_j": zeros, "z_b": zeros + 3, "z_m": zeros + 6, "z_uj": zeros + 1, "z_ub": zeros + 3, "z_um": zeros + 6}
    total, parts = umurl_loss(z)
    hinge_per_z = 5 * (1 - math.sqrt(1e-4))  # every z is constant over the batch: no covariance
    assert parts["intra"].item() == pytest.approx(1.0)
    assert parts["inter"].item() == pytest.approx(18.0)
    assert parts["reg"].item() == pytest.approx(6 * hinge_per_z)
    assert total.item() == pytest.approx(5 * (1.0 + 18.0) + 6 * hinge_per_z)


def test_released_weights_are_specs():
    # SPEC.md: loss = 5 (intra + inter) + sum over six z of (5 variance hinge + covariance penalty).
    assert RELEASED_LOSS_WEIGHTS == LossWeights(consistency=5.0, variance=5.0, covariance=1.0)


def test_other_weights_change_the_loss_as_the_formula_says():
    generator = torch.Generator().manual_seed(0)
    z = {name: torch.randn(8, 4, generator=generator) for name in ("z_j", "z_b", "z_m", "z_uj", "z_ub", "z_um")}
    weights = LossWeights(consistency=2.0, variance=3.0, covariance=0.5)
    total, parts = umurl_loss(z, weights)
    intra = intra_modal_consistency(z["z_j"], z["z_b"], z["z_m"], z["z_uj"], z["z_ub"], z["z_um"])
    inter = inter_modal_consistency(z["z_j"], z["z_b"], z["z_m"])
    reg = sum(3.0 * variance_hinge(value) + 0.5 * covariance_penalty(value) for value in z.values())
    assert parts["reg"].item() == pytest.approx(reg.item(), rel=1e-6)
    assert total.item() == pytest.approx((2.0 * (intra + inter) + reg).item(), rel=1e-6)
    released, _ = umurl_loss(z)
    assert total.item() != pytest.approx(released.item(), rel=1e-3)
    assert umurl_loss(z, RELEASED_LOSS_WEIGHTS)[0].item() == released.item()


def test_loss_is_float32_under_low_precision_autocast():
    generator = torch.Generator().manual_seed(0)
    z32 = {name: torch.randn(16, 64, generator=generator) for name in ("z_j", "z_b", "z_m", "z_uj", "z_ub", "z_um")}
    z16 = {name: value.bfloat16() for name, value in z32.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = umurl_loss(z16)
    reference, _ = umurl_loss({name: value.float() for name, value in z16.items()})
    assert total.dtype == torch.float32 and parts["reg"].dtype == torch.float32
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)
