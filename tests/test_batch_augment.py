"""feeder/batch_augment.py: exactly the numpy augmentations given the same parameters, and parameters
drawn from the same distributions as feeder/augmentations.py draws them."""
import numpy as np
import pytest
import torch

from feeder import augmentations as ref
from feeder import batch_augment as batch
from feeder.feeder import RawPretrainDataset
from view_kinds import kind_fractions, zeroed_fraction


def raw_batch(n=12, frames=300, seed=0):
    """Random skeletons (N, 3, frames, 25, 2) with 20..frames real frames and NaN padding after them,
    so that any read past the real frames shows up in the output."""
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((n, 3, frames, 25, 2))).astype(np.float32)
    valid = rng.integers(20, frames + 1, n)
    valid[0], valid[1] = frames, 20  # the extremes: no padding at all; shorter than the 64-frame minimum
    for i, v in enumerate(valid):
        x[i, :, v:] = np.nan
    return x, valid


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- same parameters, same numbers

def test_resample_equals_numpy_bit_for_bit():
    x, valid = raw_batch()
    start, length = batch.draw_crops(torch.from_numpy(valid), generator())
    views = batch.resample(torch.from_numpy(x), start, length).numpy()
    for i in range(len(x)):
        expected = ref.resample(x[i], int(start[i]), int(length[i]))
        assert np.array_equal(views[i], expected), i
    assert not np.isnan(views).any(), "a crop read a padding frame"


@pytest.mark.parametrize("zero", [True, False])
def test_corruption_equals_numpy_bit_for_bit(zero):
    x, _ = raw_batch(frames=64)
    x = np.nan_to_num(x)
    joints, _, matrices = batch.draw_corruptions(len(x), 25, generator())
    zeros = torch.full((len(x),), zero)
    out = batch.corrupt_joints(torch.from_numpy(x), joints, zeros, matrices).numpy()
    for i in range(len(x)):
        expected = ref.corrupt_joints(x[i], np.flatnonzero(joints[i].numpy()), None if zero else matrices[i].numpy())
        assert np.array_equal(out[i], expected), i


def test_shear_equals_numpy_bit_for_bit():
    x = np.nan_to_num(raw_batch(frames=64)[0])
    s = batch.draw_shears(len(x), generator())
    out = batch.shear(torch.from_numpy(x), s).numpy()
    for i in range(len(x)):
        assert np.array_equal(out[i], ref.shear(x[i], s[i].numpy())), i


def test_pretrain_views_compose_the_steps_like_pretrain_view():
    # Replay the draws of pretrain_views with an identically seeded generator, in the same order, and
    # apply the numpy functions sample by sample: the views must be those, bit for bit.
    x, valid = raw_batch()
    views = batch.pretrain_views(torch.from_numpy(x), torch.from_numpy(valid), generator(3), num_views=2)
    replay, n = generator(3), len(x)
    for view in views:
        start, length = batch.draw_crops(torch.from_numpy(valid), replay)
        corrupt = batch.draw_coin(n, replay)
        joints, zero, matrices = batch.draw_corruptions(n, 25, replay)
        shears = batch.draw_shears(n, replay)
        for i in range(n):
            expected = ref.resample(x[i], int(start[i]), int(length[i]))
            if corrupt[i]:
                expected = ref.corrupt_joints(expected, np.flatnonzero(joints[i].numpy()),
                                              None if zero[i] else matrices[i].numpy())
            else:
                expected = ref.shear(expected, shears[i].numpy())
            assert np.array_equal(view[i].numpy(), expected), i
        assert view.shape == (n, 3, 64, 25, 2) and view.dtype == torch.float32
    assert 0 < sum(batch.draw_coin(n, generator(3)).tolist()) < n  # both branches were exercised


# ----------------------------------------------------------------------------- same distributions

def numpy_crops(valid, num_draws, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([ref.choose_crop(valid, rng) for _ in range(num_draws)])  # (draws, 2): start, length


def total_variation(a, b):
    """Total variation distance between the empirical distributions of two integer samples."""
    values = np.union1d(a, b)
    pa = np.array([(a == v).mean() for v in values])
    pb = np.array([(b == v).mean() for v in values])
    return 0.5 * np.abs(pa - pb).sum()


def kolmogorov_smirnov(a, b):
    """Largest gap between the empirical CDFs of two samples."""
    values = np.union1d(a, b)
    return np.abs(np.searchsorted(np.sort(a), values, side="right") / len(a)
                  - np.searchsorted(np.sort(b), values, side="right") / len(b)).max()


class ReplayedRng:
    """Stands in for the numpy Generator of augmentations.choose_crop: hands out given draws."""

    def __init__(self, scale):
        self.scale = scale

    def uniform(self, low, high):
        return self.scale

    def integers(self, low, high):
        return high - 1  # the largest start


@pytest.mark.parametrize("min_length", [64, 16])  # the released minimum and MSR Action3D's
@pytest.mark.parametrize("valid", [300, 150, 64, 40])
def test_crop_length_is_numpys_formula_of_the_same_scale(valid, min_length):
    start, length = batch.draw_crops(torch.full((500,), valid), generator(1), min_length=min_length)
    scale = 0.1 + 0.9 * torch.rand(500, dtype=torch.float64, generator=generator(1))  # draw_crops' first draw
    for i in range(500):
        largest_start, expected_length = ref.choose_crop(valid, ReplayedRng(scale[i].item()), min_length=min_length)
        assert length[i] == expected_length, i
        assert 0 <= start[i] <= largest_start


@pytest.mark.parametrize("valid", [300, 150, 64, 40])
def test_crop_lengths_and_starts_follow_the_numpy_distribution(valid):
    draws = 20000
    start, length = batch.draw_crops(torch.full((draws,), valid), generator(1))
    start, length = start.numpy(), length.numpy()
    expected = numpy_crops(valid, draws)
    # Two samples of 20000 from one distribution: the KS gap exceeds 0.025 with probability ~1e-5.
    assert kolmogorov_smirnov(length, expected[:, 1]) < 0.025
    assert kolmogorov_smirnov(start, expected[:, 0]) < 0.025
    assert abs((length == 64).mean() - (expected[:, 1] == 64).mean()) < 0.02  # the atom at the minimum
    assert length.min() == min(64, valid) and length.max() <= valid
    room = valid - length
    assert (start >= 0).all() and (start <= room).all()
    if valid > 64:  # otherwise the crop is the whole sequence and start is always 0
        wide = room > 10
        assert abs((start[wide] / room[wide]).mean() - 0.5) < 0.02  # uniform over [0, room]
    else:
        assert total_variation(start, expected[:, 0]) == 0


def test_corruption_hits_exactly_fifteen_joints_chosen_uniformly():
    joints, zero, matrices = batch.draw_corruptions(20000, 25, generator(2))
    assert (joints.sum(dim=1) == 15).all()
    frequency = joints.double().mean(dim=0)
    assert torch.allclose(frequency, torch.full((25,), 15 / 25, dtype=torch.float64), atol=0.015)
    assert abs(zero.double().mean().item() - 0.5) < 0.015
    assert matrices.min() >= -1 and matrices.max() < 1
    assert abs(matrices.mean().item()) < 0.01 and abs(matrices.var().item() - 1 / 3) < 0.01


def test_corruption_count_follows_the_joint_count_of_other_layouts():
    joints, _, _ = batch.draw_corruptions(100, 20, generator(), num_corrupt=12)
    assert (joints.sum(dim=1) == 12).all()


def test_shear_has_a_unit_diagonal_and_uniform_off_diagonal_entries():
    s = batch.draw_shears(20000, generator(4))
    diagonal = s.diagonal(dim1=1, dim2=2)
    assert (diagonal == 1.0).all()
    off = s[:, ~torch.eye(3, dtype=torch.bool)]
    assert off.min() >= -1 and off.max() < 1
    assert abs(off.mean().item()) < 0.01 and abs(off.var().item() - 1 / 3) < 0.01


def test_each_coin_is_fair():
    assert abs(batch.draw_coin(40000, generator(5)).double().mean().item() - 0.5) < 0.01


def test_views_of_a_batch_are_corrupted_or_sheared_never_both_never_neither():
    n = 4000
    x = torch.ones(n, 3, 64, 25, 2)
    view = batch.pretrain_views(x, torch.full((n,), 64), generator(6), num_views=1)[0].numpy()
    fractions = kind_fractions(view, num_corrupt=15)
    assert fractions["both"] == 0 and fractions["neither"] == 0
    assert abs(fractions["corruption"] - 0.5) < 0.03 and abs(fractions["shear"] - 0.5) < 0.03
    assert abs(zeroed_fraction(view) - 0.25) < 0.03  # corrupted (1/2), then zeroed (1/2)


def test_numpy_and_torch_views_agree_in_distribution():
    # The default numpy feeder and --augment-on-device draw from different random streams, so they
    # can only agree in distribution: same split between the spatial augmentations, same share of
    # zeroed joints, and the same distribution of a coordinate (a two-sample Kolmogorov-Smirnov gap
    # above 0.06 at 2000 + 2000 samples has probability below 1e-3 under one distribution).
    n = 2000
    x = np.ones((3, 64, 25, 2), dtype=np.float32)
    rng = np.random.default_rng(1)
    numpy_views = np.stack([ref.pretrain_view(x, 64, rng) for _ in range(n)])
    torch_views = batch.pretrain_views(torch.from_numpy(np.broadcast_to(x, (n, *x.shape)).copy()),
                                       torch.full((n,), 64), generator(7), num_views=1)[0].numpy()
    a, b = kind_fractions(numpy_views, 15), kind_fractions(torch_views, 15)
    for kind in a:
        assert abs(a[kind] - b[kind]) < 0.05, (kind, a, b)
    assert abs(zeroed_fraction(numpy_views) - zeroed_fraction(torch_views)) < 0.05
    assert kolmogorov_smirnov(numpy_views[:, 0, 0, 0, 0], torch_views[:, 0, 0, 0, 0]) < 0.06


# ----------------------------------------------------------------------------- BatchAugment and the raw feeder

def test_batch_augment_is_a_function_of_seed_epoch_rank_and_step():
    x, valid = (torch.from_numpy(a) for a in raw_batch(n=4))
    augment = batch.BatchAugment(seed=7, device=torch.device("cpu"))
    first = augment(x, valid, step=0)
    second = augment(x, valid, step=1)
    assert len(first) == batch.NUM_VIEWS
    assert not torch.equal(second[0], first[0])
    # A run resumed inside the epoch draws step 1 again without having drawn step 0 in this process.
    resumed = batch.BatchAugment(seed=7, device=torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(resumed(x, valid, step=1), second))
    assert all(torch.equal(a, b) for a, b in zip(resumed(x, valid, step=0), first))
    augment.set_epoch(1)
    assert not torch.equal(augment(x, valid, step=0)[0], first[0])
    other_rank = batch.BatchAugment(seed=7, device=torch.device("cpu"), rank=1)
    assert not torch.equal(other_rank(x, valid, step=0)[0], first[0])
    assert all(torch.isfinite(v).all() for v in first), "a view read a padding frame"


def test_batch_augment_passes_its_minimum_crop_to_the_views():
    x, valid = (torch.from_numpy(a) for a in raw_batch(n=6, frames=40))  # 20 to 40 real frames
    seed = batch.step_seed(3, 0, 0, 0)
    for min_crop_length in (64, 16):
        augment = batch.BatchAugment(seed=3, device=torch.device("cpu"), min_crop_length=min_crop_length)
        expected = batch.pretrain_views(x, valid, generator(seed), min_crop_length=min_crop_length)
        assert all(torch.equal(a, b) for a, b in zip(augment(x, valid, step=0), expected))
    default = batch.BatchAugment(seed=3, device=torch.device("cpu"))(x, valid, step=0)
    assert all(torch.equal(a, b) for a, b in zip(default, batch.pretrain_views(x, valid, generator(seed))))
    assert not torch.equal(default[0], expected[0])  # 16 lets crops of 40-frame samples vary, 64 does not


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_views_drawn_on_the_gpu_equal_numpy_given_the_same_parameters():
    x, valid = raw_batch()
    g = torch.Generator(device="cuda").manual_seed(0)
    start, length = batch.draw_crops(torch.from_numpy(valid).cuda(), g)
    views = batch.resample(torch.from_numpy(x).cuda(), start, length)
    s = batch.draw_shears(len(x), g)
    sheared = batch.shear(views, s).cpu().numpy()
    for i in range(len(x)):
        expected = ref.shear(ref.resample(x[i], int(start[i]), int(length[i])), s[i].cpu().numpy())
        assert np.array_equal(sheared[i], expected), i


def test_raw_dataset_returns_the_real_frames_then_zeros(tmp_path):
    from dataset import write_split

    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 3, 80, 25, 2)).astype(np.float32) + 5  # padding on disk is not zero
    write_split(tmp_path, "train", data, [80, 30, 64], ["a", "b", "c"], [0, 1, 2])
    split = RawPretrainDataset(tmp_path / "train_data_joint.npy", tmp_path / "train_num_frame.npy")
    x, valid = split[1]
    assert valid == 30 and x.shape == (3, 80, 25, 2) and x.dtype == torch.float32
    assert torch.equal(x[:, :30], torch.from_numpy(data[1, :, :30]))
    assert not x[:, 30:].any()
