"""Augmentations: the golden resize, crop bounds, corruption, shear, the composed views and their settings."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from feeder.augmentations import (
    RELEASED_VIEW,
    ViewConfig,
    choose_corruption,
    choose_crop,
    corrupt_joints,
    downstream_view,
    draw_shear,
    pretrain_view,
    resample,
    shear,
)
from view_kinds import kind_fractions

VIEW = RELEASED_VIEW


def sample(seed, frames=300, joints=25, persons=2, coords=3):
    """A random (coords, frames, joints, persons) float32 sample with no zero entries."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.5, (coords, frames, joints, persons)) * rng.choice([-1, 1], (coords, 1, 1, 1)))\
        .astype(np.float32)


def torch_resample(x, start, length, out_frames=64):
    """The released code's resize: crop, lay time along H, bilinear interpolate to (out_frames, 1)."""
    c, _, v, m = x.shape
    crop = torch.from_numpy(x[:, start:start + length]).permute(0, 2, 3, 1).reshape(1, c * v * m, length, 1)
    out = F.interpolate(crop, size=(out_frames, 1), mode="bilinear", align_corners=False)
    return out.reshape(c, v, m, out_frames).permute(0, 3, 1, 2).numpy()  # (C, out_frames, V, M)


class PinnedRng:
    """Stands in for np.random.Generator with fixed draws, recording the integer range asked for."""

    def __init__(self, scale, pick_last_start):
        self.scale, self.pick_last_start, self.integer_range = scale, pick_last_start, None

    def uniform(self, low, high):
        return low + self.scale * (high - low)

    def integers(self, low, high):
        self.integer_range = (low, high)
        return high - 1 if self.pick_last_start else low


# ----------------------------------------------------------------------------- crop-resize

def test_downstream_view_matches_golden_resize(golden):
    out = downstream_view(golden["resize_input"].numpy(), golden["resize_num_frames"], VIEW.out_frames)
    assert out.shape == (3, 64, 25, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, golden["resize_output"].numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("start, length", [(0, 1), (3, 2), (10, 37), (0, 63), (5, 64), (2, 65), (40, 137),
                                           (0, 300)])
def test_resample_equals_torch_linear_interpolation(start, length):
    x = sample(0)
    expected = torch_resample(x, start, length)
    np.testing.assert_allclose(resample(x, start, length, 64), expected, rtol=0, atol=1e-6)


def test_resample_reads_only_the_crop():
    x = sample(1)
    x[:, :10] = np.nan
    x[:, 74:] = np.nan
    assert np.isfinite(resample(x, 10, 64, 64)).all()


@settings(max_examples=300, deadline=None)
@given(valid=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_crop_stays_inside_the_valid_frames(valid, seed):
    start, length = choose_crop(valid, np.random.default_rng(seed), VIEW.crop_scale, VIEW.min_crop_length)
    assert min(64, valid) <= length <= valid
    assert 0 <= start <= valid - length
    if valid <= 64:
        assert (start, length) == (0, valid)


def test_crop_length_follows_the_formula():
    # length = min(max(floor(valid * scale), 64), valid), scale = 0.1 + 0.9 u; start in [0, valid - length]
    cases = [(300, 0.5, 165), (300, 0.0, 64), (300, 1.0, 300), (50, 0.7, 50), (137, 0.3, 64)]
    for valid, u, expected in cases:
        rng = PinnedRng(u, pick_last_start=True)
        start, length = choose_crop(valid, rng, VIEW.crop_scale, VIEW.min_crop_length)
        assert length == expected
        assert rng.integer_range == (0, valid - expected + 1)  # exclusive high: start may reach valid-length
        assert start == valid - expected


def test_crop_draws_cover_the_range():
    rng = np.random.default_rng(0)
    crops = np.array([choose_crop(300, rng, VIEW.crop_scale, VIEW.min_crop_length) for _ in range(2000)])
    assert crops[:, 1].min() == 64 and crops[:, 1].max() > 290
    assert (crops[:, 1] == 64).mean() == pytest.approx(0.13, abs=0.03)  # P(300 (0.1 + 0.9u) < 65)
    assert crops[:, 0].min() == 0 and crops[:, 0].max() > 200


# ----------------------------------------------------------------------------- corruption and shear

@pytest.mark.parametrize("seed", range(20))
def test_corruption_changes_exactly_the_chosen_joints(seed):
    rng = np.random.default_rng(seed)
    x = sample(seed, frames=64)
    joints, matrix = choose_corruption(25, rng, 15, 0.5, 1.0)
    assert len(joints) == 15 and len(set(joints.tolist())) == 15
    out = corrupt_joints(x, joints, matrix)
    changed = np.flatnonzero((out != x).any(axis=(0, 1, 3)))
    assert sorted(changed.tolist()) == sorted(joints.tolist())
    if matrix is None:
        assert (out[:, :, joints] == 0).all()
    else:
        assert matrix.shape == (3, 3) and np.abs(matrix).max() <= 1
        rows = np.moveaxis(x[:, :, joints], 0, -1)  # (T, 15, M, 3): xyz as row vectors
        np.testing.assert_allclose(np.moveaxis(out[:, :, joints], 0, -1), rows @ matrix, rtol=1e-5, atol=1e-6)


def test_corruption_zeroes_or_transforms_half_the_time_each():
    rng = np.random.default_rng(0)
    zeroed = [choose_corruption(25, rng, 15, 0.5, 1.0)[1] is None for _ in range(1000)]
    assert np.mean(zeroed) == pytest.approx(0.5, abs=0.05)


def test_corruption_count_is_a_parameter():
    joints, _ = choose_corruption(20, np.random.default_rng(0), 12, 0.5, 1.0)
    assert len(set(joints.tolist())) == 12 and joints.max() < 20


def test_shear_matrix_has_unit_diagonal():
    rng = np.random.default_rng(0)
    for _ in range(100):
        s = draw_shear(rng, 1.0)
        assert (np.diag(s) == 1).all()
        off = s[~np.eye(3, dtype=bool)]
        assert (np.abs(off) < 1).all() and len(set(off.tolist())) == 6


@pytest.mark.parametrize("coords", [3, 2])
def test_shear_and_corruption_draw_the_released_numbers_with_c_3_and_their_xy_part_with_c_2(coords):
    # The rule: a CxC matrix of U(-1, 1) entries from the generator (the shear's diagonal then set to 1).
    # C = 3 is the released draw, bit for bit; C = 2 is the same rule on x and y.
    expected = np.random.default_rng(5).uniform(-1.0, 1.0, size=(coords, coords))
    s = draw_shear(np.random.default_rng(5), 1.0, coords)
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_array_equal(s, expected)
    if coords == 3:
        np.testing.assert_array_equal(draw_shear(np.random.default_rng(5), 1.0), expected)  # the default: xyz
    for seed in range(20):  # a transforming (not zeroing) corruption draws a CxC matrix the same way
        joints, matrix = choose_corruption(25, np.random.default_rng(seed), 15, 0.5, 1.0, coords)
        if matrix is not None:
            break
    rng = np.random.default_rng(seed)
    rng.choice(25, size=15, replace=False), rng.random()
    np.testing.assert_array_equal(matrix, rng.uniform(-1.0, 1.0, size=(coords, coords)))


def test_2d_shear_and_corruption_map_xy_points():
    s = np.array([[1.0, 0.2], [0.4, 1.0]])
    x = sample(1, frames=4, joints=5, persons=1, coords=2)
    np.testing.assert_allclose(np.moveaxis(shear(x, s), 0, -1), np.moveaxis(x, 0, -1) @ s.T, rtol=1e-6)
    joints, matrix = np.array([1, 3]), np.array([[0.5, -0.2], [0.1, 0.9]])
    out = corrupt_joints(x, joints, matrix)
    np.testing.assert_allclose(np.moveaxis(out[:, :, joints], 0, -1), np.moveaxis(x[:, :, joints], 0, -1) @ matrix,
                               rtol=1e-6)
    np.testing.assert_array_equal(out[:, :, [0, 2, 4]], x[:, :, [0, 2, 4]])


def test_shear_maps_each_point_p_to_s_times_p():
    s = np.array([[1.0, 0.2, 0.3], [0.4, 1.0, 0.5], [0.6, 0.7, 1.0]])
    x = np.zeros((3, 2, 1, 1), dtype=np.float32)
    x[:, 0, 0, 0] = [1.0, 0.0, 0.0]
    x[:, 1, 0, 0] = [1.0, 2.0, 3.0]
    out = shear(x, s)
    np.testing.assert_allclose(out[:, 0, 0, 0], s[:, 0], rtol=1e-6)  # a column of S, not a row: S p
    np.testing.assert_allclose(out[:, 1, 0, 0], s @ [1.0, 2.0, 3.0], rtol=1e-6)


# ----------------------------------------------------------------------------- composed views

@pytest.mark.parametrize("coords", [3, 2])
def test_pretrain_view_is_crop_then_exactly_one_spatial_augmentation(coords):
    # Replaying the same draws by hand, in SPEC.md's order, must give the same view: one coin, then
    # corruption on heads and shear on tails (the released feeder's if/else).
    x = sample(3, frames=137, coords=coords)
    for seed in range(40):
        view = pretrain_view(x, 137, np.random.default_rng(seed), VIEW)
        rng = np.random.default_rng(seed)
        expected = resample(x, *choose_crop(137, rng, (0.1, 1.0), 64), 64)
        if rng.random() < 0.5:
            expected = corrupt_joints(expected, *choose_corruption(25, rng, 15, 0.5, 1.0, coords))
        else:
            expected = shear(expected, draw_shear(rng, 1.0, coords))
        np.testing.assert_array_equal(view, expected.astype(np.float32))


@pytest.mark.parametrize("coords", [3, 2])
def test_pretrain_view_applies_corruption_or_shear_never_both_never_neither(coords):
    # 2,000 views of an all-ones skeleton: each view is corrupted or sheared, about half and half.
    # With two independent coins (the earlier reading of the method) a quarter would be both and a
    # quarter neither. Binomial(2000, 1/2): 0.5 +- 0.05 is more than 4 standard deviations.
    x = np.ones((coords, 64, 25, 2), dtype=np.float32)
    rng = np.random.default_rng(0)
    fractions = kind_fractions((pretrain_view(x, 64, rng, VIEW) for _ in range(2000)), num_corrupt=15)
    assert fractions["both"] == 0 and fractions["neither"] == 0
    assert abs(fractions["corruption"] - 0.5) < 0.05 and abs(fractions["shear"] - 0.5) < 0.05


def test_pretrain_view_shape_dtype_and_determinism():
    x = sample(4, frames=300, joints=20, persons=1)
    view = dataclasses.replace(VIEW, num_corrupt=12)
    a = pretrain_view(x, 250, np.random.default_rng(7), view)
    b = pretrain_view(x, 250, np.random.default_rng(7), view)
    c = pretrain_view(x, 250, np.random.default_rng(8), view)
    assert a.shape == (3, 64, 20, 1) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_short_sample_is_upsampled_whole():
    x = sample(5, frames=300)
    view = downstream_view(x, 20, 64)
    np.testing.assert_allclose(view, torch_resample(x, 0, 20), atol=1e-6)
    np.testing.assert_array_equal(view[:, 0], x[:, 0])  # first output frame sits before frame 0's centre


# ----------------------------------------------------------------------------- the view settings

def test_released_view_settings_are_specs():
    assert VIEW.as_dict() == {"out_frames": 64, "min_crop_length": 64, "crop_scale": [0.1, 1.0],
                              "corruption_probability": 0.5, "num_corrupt": 15, "zero_probability": 0.5,
                              "corruption_magnitude": 1.0, "shear_magnitude": 1.0}


CHANGED_SETTINGS = {"out_frames": 80, "min_crop_length": 16, "crop_scale": (0.5, 0.9), "corruption_probability": 0.9,
                    "num_corrupt": 5, "zero_probability": 0.1, "corruption_magnitude": 3.0, "shear_magnitude": 0.1}


def test_every_view_setting_reaches_the_view():
    # The same draws under one changed setting give other views: no setting is silently ignored.
    assert set(CHANGED_SETTINGS) == {field.name for field in dataclasses.fields(ViewConfig)}
    x = sample(6, frames=300)

    def views(view):
        rng = np.random.default_rng(0)
        return [pretrain_view(x, 200, rng, view) for _ in range(40)]

    released = views(VIEW)
    for name, value in CHANGED_SETTINGS.items():
        changed = views(dataclasses.replace(VIEW, **{name: value}))
        assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(released, changed)), name


@pytest.mark.parametrize("settings, message", [
    ({"min_crop_length": 0}, "min_crop_length"), ({"min_crop_length": 65}, "min_crop_length"),
    ({"crop_scale": (0.0, 1.0)}, "crop_scale"), ({"crop_scale": (0.8, 0.2)}, "crop_scale"),
    ({"corruption_probability": 1.5}, "corruption_probability"), ({"zero_probability": -0.1}, "zero_probability"),
    ({"num_corrupt": -1}, "num_corrupt"), ({"shear_magnitude": -1.0}, "magnitude")])
def test_a_bad_view_setting_is_refused_with_its_name(settings, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(VIEW, **settings)
