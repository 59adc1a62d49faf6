"""The pretraining augmentations of SPEC.md for a whole batch, as tensor ops on the batch's device.

feeder/augmentations.py draws the views one sample at a time in numpy, in DataLoader workers; on a
fast GPU those workers cannot keep up. Here the loader only reads raw samples (RawPretrainDataset:
the real frames, zero-padded, and their count) and the views are drawn where the batch already is.

As in augmentations.py, each transform is a pure function of the batch and explicit parameters, and
the parameters come from separate `draw_*` functions, here taking a torch.Generator on the batch's
device. Given the same parameters every transform returns exactly the numbers of its numpy
counterpart: the arithmetic is done in float64 in the same order and rounded to float32 once, as
numpy does. The random streams differ from numpy's, so the views are equal in distribution, not draw
for draw; the default pipeline stays the numpy one. `AUGMENTATION_TWINS` at the end pairs every step
with its numpy twin, and tests/test_batch_augment.py walks that table: a new augmentation is one row.
The settings come from the run's ViewConfig (feeder/augmentations.py), the one the numpy feeder gets.

Shapes: x (N, C, T, V, M) with real frames [0, valid[n]) per sample; valid (N,) int64. C is 3 (xyz) or 2
(xy, image keypoints), whose matrices are the 2x2 ones augmentations.py draws.
"""
from typing import Callable, NamedTuple

import numpy as np
import torch

from feeder import augmentations as single
from feeder.augmentations import NUM_VIEWS


def _uniform(shape, low, high, generator):
    """float64 draws from U(low, high) on the generator's device: low + (high - low) * U[0, 1), like numpy."""
    return low + (high - low) * torch.rand(shape, dtype=torch.float64, generator=generator,
                                           device=generator.device)


# ----------------------------------------------------------------------------- temporal crop-resize

def draw_crops(valid, generator, scale_range, min_length):
    """A crop per sample, as augmentations.choose_crop: (start, length), each (N,) int64.

    length = min(max(floor(valid * scale), min_length), valid) with scale ~ U(scale_range);
    start uniform in [0, valid - length].
    """
    scale = _uniform(valid.shape, *scale_range, generator)
    length = torch.minimum(torch.floor(valid * scale).long().clamp(min=min_length), valid)
    choices = valid - length + 1  # start takes one of this many values
    start = torch.floor(_uniform(valid.shape, 0.0, 1.0, generator) * choices).long().minimum(choices - 1)
    return start, length


def resample(x, start, length, out_frames):
    """Frames [start, start + length) of each sample linearly resampled to out_frames (half-pixel
    centres, see augmentations.resample): (N, C, T, V, M) -> (N, C, out_frames, V, M) float32."""
    n, c, _, v, m = x.shape
    position = (torch.arange(out_frames, dtype=torch.float64, device=x.device) + 0.5) \
        * (length.double()[:, None] / out_frames) - 0.5
    position = position.clamp(min=0.0)  # (N, out_frames)
    lower = position.floor().long()
    upper = torch.minimum(lower + 1, length[:, None] - 1)
    weight = (position - lower).view(n, 1, out_frames, 1, 1)

    def frames(offsets):  # (N, out_frames) frame numbers -> (N, C, out_frames, V, M)
        index = (start[:, None] + offsets).view(n, 1, out_frames, 1, 1).expand(n, c, out_frames, v, m)
        return torch.gather(x, 2, index).double()
    return ((1.0 - weight) * frames(lower) + weight * frames(upper)).float()


# ----------------------------------------------------------------------------- spatial transforms

def transform_coordinates(x, matrices):
    """Each sample's coordinate row vectors times its own CxC matrix: out[n, :, t, v, m] = x[n, :, t, v, m] @ A[n].

    x: (N, C, T, V, M); matrices: (N, C, C) float64 -> (N, C, T, V, M) float32, summed over the
    input coordinate in order 0, 1(, 2) in float64 like numpy's einsum.
    """
    n, c = x.shape[:2]
    x = x.double()
    out = sum(x[:, k:k + 1] * matrices[:, k].view(n, c, 1, 1, 1) for k in range(c))  # (N, C, T, V, M)
    return out.float()


def draw_corruptions(n, num_joints, generator, num_corrupt, zero_probability, magnitude, num_coords=3):
    """Parameters of joint corruption for n samples, as augmentations.choose_corruption.

    Returns (joints, zero, matrices): joints (N, V) bool with exactly num_corrupt True per row, a
    uniformly random subset (the first num_corrupt of a random permutation); zero (N,) bool, True
    w.p. zero_probability (zero the joints, else transform them); matrices (N, C, C) float64 entries
    U(-magnitude, magnitude), C = num_coords.
    """
    device = generator.device
    order = torch.rand(n, num_joints, generator=generator, device=device).argsort(dim=1)
    joints = torch.zeros(n, num_joints, dtype=torch.bool, device=device)
    joints.scatter_(1, order[:, :num_corrupt], True)
    zero = draw_coin(n, generator, zero_probability)
    return joints, zero, _uniform((n, num_coords, num_coords), -magnitude, magnitude, generator)


def corrupt_joints(x, joints, zero, matrices):
    """Zero the chosen joints (zero[n]) or map their coordinate rows p to p @ matrices[n]; others untouched.

    x: (N, C, T, V, M) -> (N, C, T, V, M) float32.
    """
    n, _, _, v, _ = x.shape
    hit = torch.where(zero.view(n, 1, 1, 1, 1), torch.zeros_like(x), transform_coordinates(x, matrices))
    return torch.where(joints.view(n, 1, 1, v, 1), hit, x)


def draw_shears(n, generator, magnitude, num_coords=3):
    """Shear matrices S (N, C, C) float64: unit diagonal, off-diagonal entries U(-magnitude, magnitude)."""
    s = _uniform((n, num_coords, num_coords), -magnitude, magnitude, generator)
    s.diagonal(dim1=1, dim2=2).fill_(1.0)
    return s


def shear(x, s):
    """p -> S p for every point (p @ S^T as a row vector), each sample with its own S: (N, C, T, V, M)."""
    return transform_coordinates(x, s.transpose(1, 2))


def draw_coin(n, generator, probability):
    """(N,) bool, each True with the given probability."""
    return torch.rand(n, generator=generator, device=generator.device) < probability


# ----------------------------------------------------------------------------- the view

class ViewDraws(NamedTuple):
    """The random parameters of one view of every sample: crops (N,) start and length; corrupt (N,)
    bool, the coin; joints, zero, matrices of the corruption and the shears (N, C, C), all drawn for
    every sample, whichever the coin picks (a batch draws the same amount whatever the coins say)."""

    start: torch.Tensor
    length: torch.Tensor
    corrupt: torch.Tensor
    joints: torch.Tensor
    zero: torch.Tensor
    matrices: torch.Tensor
    shears: torch.Tensor


def draw_pretrain_views(valid, num_joints, num_coords, generator, view):
    """The parameters of one pretraining view of each sample, as augmentations.draw_pretrain_view."""
    n = len(valid)
    start, length = draw_crops(valid, generator, view.crop_scale, view.min_crop_length)
    corrupt = draw_coin(n, generator, view.corruption_probability)
    joints, zero, matrices = draw_corruptions(n, num_joints, generator, view.num_corrupt, view.zero_probability,
                                              view.corruption_magnitude, num_coords)
    shears = draw_shears(n, generator, view.shear_magnitude, num_coords)
    return ViewDraws(start, length, corrupt, joints, zero, matrices, shears)


def apply_pretrain_views(x, draws, view):
    """Crop-resize, then per sample the corruption (draws.corrupt) or else the shear:
    (N, C, T, V, M) -> (N, C, view.out_frames, V, M) float32."""
    n = len(x)
    resampled = resample(x, draws.start, draws.length, view.out_frames)
    corrupted = corrupt_joints(resampled, draws.joints, draws.zero, draws.matrices)
    sheared = shear(resampled, draws.shears)
    return torch.where(draws.corrupt.view(n, 1, 1, 1, 1), corrupted, sheared)


def pretrain_views(x, valid, generator, view, num_views):
    """num_views independent pretraining views of a raw batch, as augmentations.pretrain_view per view:
    crop-resize, then per sample a coin picks joint corruption or, else, shear (exactly one).

    x: (N, C, T, V, M) with valid[n] real frames; returns num_views tensors (N, C, view.out_frames, V, M).
    """
    num_coords, num_joints = x.shape[1], x.shape[3]
    return [apply_pretrain_views(x, draw_pretrain_views(valid, num_joints, num_coords, generator, view), view)
            for _ in range(num_views)]


def step_seed(seed, epoch, rank, step):
    """A 63-bit seed for the generator of one (run seed, epoch, process, step), mixed by numpy's SeedSequence
    so that neighbouring tuples give unrelated streams."""
    return int(np.random.SeedSequence((seed, epoch, rank, step)).generate_state(1, dtype=np.uint64)[0] >> 1)


class BatchAugment:
    """The pretraining views of raw batches, drawn on `device` from a generator reseeded for every step.

    Call `set_epoch(epoch)` before each epoch and pass each batch's step number (counted from 0 in the
    epoch): the views of a step then depend only on (seed, epoch, rank, step) and the batch, so a run
    resumed anywhere, inside an epoch too, draws exactly what it would have drawn. `view` is the run's
    ViewConfig, the one the numpy feeder would get.
    """

    def __init__(self, seed, device, rank, view):
        self.seed, self.rank, self.epoch, self.view = seed, rank, 0, view
        self.generator = torch.Generator(device=device)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __call__(self, x, valid, step):
        self.generator.manual_seed(step_seed(self.seed, self.epoch, self.rank, step))
        return pretrain_views(x, valid, self.generator, self.view, NUM_VIEWS)


# ----------------------------------------------------------------------------- the numpy twins

class AugmentationTwin(NamedTuple):
    """One augmentation step in numpy, one sample at a time (feeder/augmentations.py), and in torch, a
    batch at once (above), each split into drawing the parameters and applying them:

    numpy_draw(valid, num_joints, num_coords, rng, view) -> one sample's parameters (valid an int)
    numpy_apply(x, parameters, view) -> one sample's output, x (C, T, V, M)
    torch_draw(valid, num_joints, num_coords, generator, view) -> the batch's parameters (valid (N,) int64)
    torch_apply(x, parameters, view) -> the batch's output, x (N, C, T, V, M), output (N, ...)
    sample(parameters, i) -> sample i's part of the batch's parameters, in numpy's form

    The twins agree when numpy_apply(x[i], sample(p, i)) is torch_apply(x, p)[i] bit for bit, and the
    outputs of numpy_draw + numpy_apply follow the distribution of those of torch_draw + torch_apply.
    For a step that only draws (crop choice, coin) the output is the parameters themselves.
    """

    numpy_draw: Callable
    numpy_apply: Callable
    torch_draw: Callable
    torch_apply: Callable
    sample: Callable


def _matrix(matrices, i):
    return matrices[i].cpu().numpy()


def _corruption(draws, i):
    joints, zero, matrices = draws
    return np.flatnonzero(joints[i].cpu().numpy()), None if zero[i] else _matrix(matrices, i)


def _view(draws, i):
    corruption = _corruption((draws.joints, draws.zero, draws.matrices), i) if draws.corrupt[i] else None
    return single.ViewDraw(int(draws.start[i]), int(draws.length[i]), corruption,
                           None if draws.corrupt[i] else _matrix(draws.shears, i))


def _numpy_crop(valid, num_joints, num_coords, rng, view):
    return single.choose_crop(valid, rng, view.crop_scale, view.min_crop_length)


def _torch_crops(valid, num_joints, num_coords, generator, view):
    return draw_crops(valid, generator, view.crop_scale, view.min_crop_length)


def _numpy_corruption(valid, num_joints, num_coords, rng, view):
    return single.choose_corruption(num_joints, rng, view.num_corrupt, view.zero_probability,
                                    view.corruption_magnitude, num_coords)


def _torch_corruptions(valid, num_joints, num_coords, generator, view):
    return draw_corruptions(len(valid), num_joints, generator, view.num_corrupt, view.zero_probability,
                            view.corruption_magnitude, num_coords)


AUGMENTATION_TWINS = {
    "crop choice": AugmentationTwin(
        _numpy_crop, lambda x, crop, view: np.array(crop),
        _torch_crops, lambda x, crops, view: torch.stack(crops, dim=1),
        lambda crops, i: (int(crops[0][i]), int(crops[1][i]))),
    "resample": AugmentationTwin(
        _numpy_crop, lambda x, crop, view: single.resample(x, *crop, view.out_frames),
        _torch_crops, lambda x, crops, view: resample(x, *crops, view.out_frames),
        lambda crops, i: (int(crops[0][i]), int(crops[1][i]))),
    "coin": AugmentationTwin(
        lambda valid, num_joints, num_coords, rng, view: single.flip_coin(rng, view.corruption_probability),
        lambda x, heads, view: np.array(heads),
        lambda valid, num_joints, num_coords, generator, view: draw_coin(len(valid), generator,
                                                                         view.corruption_probability),
        lambda x, heads, view: heads,
        lambda heads, i: bool(heads[i])),
    "transform": AugmentationTwin(
        lambda valid, num_joints, num_coords, rng, view: rng.uniform(-1.0, 1.0, size=(num_coords, num_coords)),
        lambda x, matrix, view: single.transform_coordinates(x, matrix),
        lambda valid, num_joints, num_coords, generator, view: _uniform((len(valid), num_coords, num_coords),
                                                                        -1.0, 1.0, generator),
        lambda x, matrices, view: transform_coordinates(x, matrices),
        _matrix),
    "corruption": AugmentationTwin(
        _numpy_corruption, lambda x, corruption, view: single.corrupt_joints(x, *corruption),
        _torch_corruptions, lambda x, corruptions, view: corrupt_joints(x, *corruptions),
        _corruption),
    "shear": AugmentationTwin(
        lambda valid, num_joints, num_coords, rng, view: single.draw_shear(rng, view.shear_magnitude, num_coords),
        lambda x, s, view: single.shear(x, s),
        lambda valid, num_joints, num_coords, generator, view: draw_shears(len(valid), generator,
                                                                           view.shear_magnitude, num_coords),
        lambda x, s, view: shear(x, s),
        _matrix),
    "whole view": AugmentationTwin(
        single.draw_pretrain_view, single.apply_pretrain_view,
        draw_pretrain_views, apply_pretrain_views,
        _view),
}
