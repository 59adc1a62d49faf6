"""feeder/batch_augment.py: exactly the numpy augmentations given the same parameters, and parameters
drawn from the same distributions as feeder/augmentations.py draws them."""
import numpy as np
import pytest
import torch

from feeder import augmentations as ref
from feeder import batch_augment as batch
from feeder.feeder import RawPretrainDataset
from view_kinds import kind_fractions, zeroed_fraction


def raw_batch(n=12, frames=300, seed=0, coords=3):
    """Random skeletons (N, coords, frames, 25, 2) with 20..frames real frames and NaN padding after them,
    so that any read past the real frames shows up in the output."""
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((n, coords, frames, 25, 2))).astype(np.float32)
    valid = rng.integers(20, frames + 1, n)
    valid[0], valid[1] = frames, 20  # the extremes: no padding at all; shorter than the 64-frame minimum
    for i, v in enumerate(valid):
        x[i, :, v:] = np.nan
    return x, valid


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- every numpy/torch pair

# The released view and one with every setting changed: both twins must honour each setting alike.
OTHER_VIEW = ref.ViewConfig(out_frames=48, min_crop_length=16, crop_scale=(0.3, 0.8), corruption_probability=0.7,
                            num_corrupt=9, zero_probability=0.2, corruption_magnitude=2.0, shear_magnitude=0.5)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def summaries(outputs):
    """A few numbers per output, to compare two samples of outputs by distribution: some fixed entries
    and the share of exact zeros (zeroed joints). outputs: (draws, ...) -> (draws, up to 7)."""
    flat = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    entries = flat[:, np.linspace(0, flat.shape[1] - 1, min(flat.shape[1], 6)).astype(int)]
    return np.column_stack([entries, (flat == 0).mean(axis=1)]) if flat.shape[1] > 6 else entries


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("coords", [3, 2], ids=["xyz", "xy"])  # 3D skeletons and 2D image keypoints
@pytest.mark.parametrize("view", [ref.RELEASED_VIEW, OTHER_VIEW], ids=["released", "other"])
@pytest.mark.parametrize("name", list(batch.AUGMENTATION_TWINS))
def test_every_augmentation_agrees_with_its_numpy_twin(name, view, coords, device):
    twin = batch.AUGMENTATION_TWINS[name]
    x, valid = raw_batch(coords=coords)  # NaN padding: a read past the real frames shows up
    xt, validt = torch.from_numpy(x).to(device), torch.from_numpy(valid).to(device)
    num_joints = x.shape[3]

    # The same drawn parameters give the same numbers, bit for bit.
    g = torch.Generator(device=device).manual_seed(0)
    parameters = twin.torch_draw(validt, num_joints, coords, g, view)
    out = twin.torch_apply(xt, parameters, view).cpu().numpy()
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i], twin.numpy_apply(x[i], twin.sample(parameters, i), view), err_msg=i)

    # Their own draws give the same distribution of outputs: numpy's one sample at a time, torch's a
    # batch of copies. A two-sample KS gap above 0.1 at 1000 + 1000 draws has probability < 1e-4.
    draws, frames = 1000, 80
    one = x[3, :, :frames, :, :1]  # 80 real frames of one person: small enough for 1000 copies
    rng = np.random.default_rng(1)
    numpy_out = [twin.numpy_apply(one, twin.numpy_draw(frames, num_joints, coords, rng, view), view)
                 for _ in range(draws)]
    copies = torch.from_numpy(np.broadcast_to(one, (draws, *one.shape)).copy()).to(device)
    g = torch.Generator(device=device).manual_seed(1)
    parameters = twin.torch_draw(torch.full((draws,), frames, device=device), num_joints, coords, g, view)
    torch_out = twin.torch_apply(copies, parameters, view).cpu().numpy()
    a, b = summaries(numpy_out), summaries(torch_out)
    for k in range(a.shape[1]):
        assert kolmogorov_smirnov(a[:, k], b[:, k]) < 0.1, (name, k)


# ----------------------------------------------------------------------------- same distributions

def numpy_crops(valid, num_draws, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([ref.choose_crop(valid, rng, (0.1, 1.0), 64) for _ in range(num_draws)])  # (draws, 2)


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
    start, length = batch.draw_crops(torch.full((500,), valid), generator(1), (0.1, 1.0), min_length)
    scale = 0.1 + 0.9 * torch.rand(500, dtype=torch.float64, generator=generator(1))  # draw_crops' first draw
    for i in range(500):
        largest_start, expected_length = ref.choose_crop(valid, ReplayedRng(scale[i].item()), (0.1, 1.0), min_length)
        assert length[i] == expected_length, i
        assert 0 <= start[i] <= largest_start


@pytest.mark.parametrize("valid", [300, 150, 64, 40])
def test_crop_lengths_and_starts_follow_the_numpy_distribution(valid):
    draws = 20000
    start, length = batch.draw_crops(torch.full((draws,), valid), generator(1), (0.1, 1.0), 64)
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
    joints, zero, matrices = batch.draw_corruptions(20000, 25, generator(2), 15, 0.5, 1.0)
    assert (joints.sum(dim=1) == 15).all()
    frequency = joints.double().mean(dim=0)
    assert torch.allclose(frequency, torch.full((25,), 15 / 25, dtype=torch.float64), atol=0.015)
    assert abs(zero.double().mean().item() - 0.5) < 0.015
    assert matrices.min() >= -1 and matrices.max() < 1
    assert abs(matrices.mean().item()) < 0.01 and abs(matrices.var().item() - 1 / 3) < 0.01


def test_corruption_count_follows_the_joint_count_of_other_layouts():
    joints, _, _ = batch.draw_corruptions(100, 20, generator(), 12, 0.5, 1.0)
    assert (joints.sum(dim=1) == 12).all()


@pytest.mark.parametrize("coords", [3, 2])
def test_shear_has_a_unit_diagonal_and_uniform_off_diagonal_entries(coords):
    s = batch.draw_shears(20000, generator(4), 1.0, coords)
    assert s.shape == (20000, coords, coords)
    diagonal = s.diagonal(dim1=1, dim2=2)
    assert (diagonal == 1.0).all()
    off = s[:, ~torch.eye(coords, dtype=torch.bool)]
    assert off.min() >= -1 and off.max() < 1
    assert abs(off.mean().item()) < 0.01 and abs(off.var().item() - 1 / 3) < 0.01


def test_each_coin_is_fair():
    assert abs(batch.draw_coin(40000, generator(5), 0.5).double().mean().item() - 0.5) < 0.01


@pytest.mark.parametrize("coords", [3, 2])
def test_views_of_a_batch_are_corrupted_or_sheared_never_both_never_neither(coords):
    n = 4000
    x = torch.ones(n, coords, 64, 25, 2)
    view = batch.pretrain_views(x, torch.full((n,), 64), generator(6), ref.RELEASED_VIEW, 1)[0].numpy()
    fractions = kind_fractions(view, num_corrupt=15)
    assert fractions["both"] == 0 and fractions["neither"] == 0
    assert abs(fractions["corruption"] - 0.5) < 0.03 and abs(fractions["shear"] - 0.5) < 0.03
    assert abs(zeroed_fraction(view) - 0.25) < 0.03  # corrupted (1/2), then zeroed (1/2)


# ----------------------------------------------------------------------------- BatchAugment and the raw feeder

def test_batch_augment_is_a_function_of_seed_epoch_rank_and_step():
    x, valid = (torch.from_numpy(a) for a in raw_batch(n=4))
    augment = batch.BatchAugment(7, torch.device("cpu"), 0, ref.RELEASED_VIEW)
    first = augment(x, valid, step=0)
    second = augment(x, valid, step=1)
    assert len(first) == batch.NUM_VIEWS
    assert not torch.equal(second[0], first[0])
    # A run resumed inside the epoch draws step 1 again without having drawn step 0 in this process.
    resumed = batch.BatchAugment(7, torch.device("cpu"), 0, ref.RELEASED_VIEW)
    assert all(torch.equal(a, b) for a, b in zip(resumed(x, valid, step=1), second))
    assert all(torch.equal(a, b) for a, b in zip(resumed(x, valid, step=0), first))
    augment.set_epoch(1)
    assert not torch.equal(augment(x, valid, step=0)[0], first[0])
    other_rank = batch.BatchAugment(7, torch.device("cpu"), 1, ref.RELEASED_VIEW)
    assert not torch.equal(other_rank(x, valid, step=0)[0], first[0])
    assert all(torch.isfinite(v).all() for v in first), "a view read a padding frame"


def test_batch_augment_passes_its_view_settings_to_the_views():
    x, valid = (torch.from_numpy(a) for a in raw_batch(n=6, frames=40))  # 20 to 40 real frames
    seed = batch.step_seed(3, 0, 0, 0)
    for view in (ref.RELEASED_VIEW, OTHER_VIEW):
        augment = batch.BatchAugment(3, torch.device("cpu"), 0, view)
        expected = batch.pretrain_views(x, valid, generator(seed), view, batch.NUM_VIEWS)
        drawn = augment(x, valid, step=0)
        assert len(drawn) == batch.NUM_VIEWS and drawn[0].shape[2] == view.out_frames
        assert all(torch.equal(a, b) for a, b in zip(drawn, expected))


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
