"""The pretraining augmentations of SPEC.md for a whole batch, as tensor ops on the batch's device.

feeder/augmentations.py draws the views one sample at a time in numpy, in DataLoader workers; on a
fast GPU those workers cannot keep up. Here the loader only reads raw samples (RawPretrainDataset:
the real frames, zero-padded, and their count) and the views are drawn where the batch already is.

As in augmentations.py, each transform is a pure function of the batch and explicit parameters, and
the parameters come from separate `draw_*` functions, here taking a torch.Generator on the batch's
device. Given the same parameters every transform returns exactly the numbers of its numpy
counterpart: the arithmetic is done in float64 in the same order and rounded to float32 once, as
numpy does (tests/test_batch_augment.py). The random streams differ from numpy's, so the views are
equal in distribution, not draw for draw; the default pipeline stays the numpy one.

Shapes: x (N, C=3, T, V, M) with real frames [0, valid[n]) per sample; valid (N,) int64.
"""
import numpy as np
import torch

from feeder.augmentations import CROP_SCALE, MIN_CROP_LENGTH, NUM_CORRUPT, NUM_VIEWS, OUT_FRAMES


def _uniform(shape, low, high, generator):
    """float64 draws from U(low, high) on the generator's device: low + (high - low) * U[0, 1), like numpy."""
    return low + (high - low) * torch.rand(shape, dtype=torch.float64, generator=generator,
                                           device=generator.device)


# ----------------------------------------------------------------------------- temporal crop-resize

def draw_crops(valid, generator, scale_range=CROP_SCALE, min_length=MIN_CROP_LENGTH):
    """A crop per sample, as augmentations.choose_crop: (start, length), each (N,) int64.

    length = min(max(floor(valid * scale), min_length), valid) with scale ~ U(scale_range);
    start uniform in [0, valid - length].
    """
    scale = _uniform(valid.shape, *scale_range, generator)
    length = torch.minimum(torch.floor(valid * scale).long().clamp(min=min_length), valid)
    choices = valid - length + 1  # start takes one of this many values
    start = torch.floor(_uniform(valid.shape, 0.0, 1.0, generator) * choices).long().minimum(choices - 1)
    return start, length


def resample(x, start, length, out_frames=OUT_FRAMES):
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

def transform_xyz(x, matrices):
    """Each sample's xyz row vectors times its own 3x3 matrix: out[n, :, t, v, m] = x[n, :, t, v, m] @ A[n].

    x: (N, 3, T, V, M); matrices: (N, 3, 3) float64 -> (N, 3, T, V, M) float32, summed over the
    input coordinate in order 0, 1, 2 in float64 like numpy's einsum.
    """
    n = x.shape[0]
    x = x.double()
    out = sum(x[:, k:k + 1] * matrices[:, k].view(n, 3, 1, 1, 1) for k in range(3))  # (N, 3, T, V, M)
    return out.float()


def draw_corruptions(n, num_joints, generator, num_corrupt=NUM_CORRUPT):
    """Parameters of joint corruption for n samples, as augmentations.choose_corruption.

    Returns (joints, zero, matrices): joints (N, V) bool with exactly num_corrupt True per row, a
    uniformly random subset (the first num_corrupt of a random permutation); zero (N,) bool, True
    w.p. 1/2 (zero the joints, else transform them); matrices (N, 3, 3) float64 entries U(-1, 1).
    """
    device = generator.device
    order = torch.rand(n, num_joints, generator=generator, device=device).argsort(dim=1)
    joints = torch.zeros(n, num_joints, dtype=torch.bool, device=device)
    joints.scatter_(1, order[:, :num_corrupt], True)
    zero = torch.rand(n, generator=generator, device=device) < 0.5
    return joints, zero, _uniform((n, 3, 3), -1.0, 1.0, generator)


def corrupt_joints(x, joints, zero, matrices):
    """Zero the chosen joints (zero[n]) or map their xyz rows p to p @ matrices[n]; others untouched.

    x: (N, 3, T, V, M) -> (N, 3, T, V, M) float32.
    """
    n, _, _, v, _ = x.shape
    hit = torch.where(zero.view(n, 1, 1, 1, 1), torch.zeros_like(x), transform_xyz(x, matrices))
    return torch.where(joints.view(n, 1, 1, v, 1), hit, x)


def draw_shears(n, generator, magnitude=1.0):
    """Shear matrices S (N, 3, 3) float64: unit diagonal, off-diagonal entries U(-magnitude, magnitude)."""
    s = _uniform((n, 3, 3), -magnitude, magnitude, generator)
    s.diagonal(dim1=1, dim2=2).fill_(1.0)
    return s


def shear(x, s):
    """p -> S p for every point (p @ S^T as a row vector), each sample with its own S: (N, 3, T, V, M)."""
    return transform_xyz(x, s.transpose(1, 2))


def draw_coin(n, generator):
    """(N,) bool, each True with probability 1/2."""
    return torch.rand(n, generator=generator, device=generator.device) < 0.5


# ----------------------------------------------------------------------------- the view

def pretrain_views(x, valid, generator, num_corrupt=NUM_CORRUPT, out_frames=OUT_FRAMES, num_views=NUM_VIEWS,
                   min_crop_length=MIN_CROP_LENGTH):
    """num_views independent pretraining views of a raw batch, as augmentations.pretrain_view per view:
    crop-resize, then per sample a fair coin picks joint corruption or, else, shear (exactly one).

    x: (N, 3, T, V, M) with valid[n] real frames; returns num_views tensors (N, 3, out_frames, V, M).
    """
    n, _, _, num_joints, _ = x.shape
    views = []
    for _ in range(num_views):
        view = resample(x, *draw_crops(valid, generator, min_length=min_crop_length), out_frames=out_frames)
        corrupt, (joints, zero, matrices) = draw_coin(n, generator), draw_corruptions(n, num_joints, generator,
                                                                                        num_corrupt)
        corrupted = corrupt_joints(view, joints, zero, matrices)
        sheared = shear(view, draw_shears(n, generator))
        views.append(torch.where(corrupt.view(n, 1, 1, 1, 1), corrupted, sheared))
    return views


def step_seed(seed, epoch, rank, step):
    """A 63-bit seed for the generator of one (run seed, epoch, process, step), mixed by numpy's SeedSequence
    so that neighbouring tuples give unrelated streams."""
    return int(np.random.SeedSequence((seed, epoch, rank, step)).generate_state(1, dtype=np.uint64)[0] >> 1)


class BatchAugment:
    """The pretraining views of raw batches, drawn on `device` from a generator reseeded for every step.

    Call `set_epoch(epoch)` before each epoch and pass each batch's step number (counted from 0 in the
    epoch): the views of a step then depend only on (seed, epoch, rank, step) and the batch, so a run
    resumed anywhere, inside an epoch too, draws exactly what it would have drawn.
    """

    def __init__(self, seed, device, rank=0, num_corrupt=NUM_CORRUPT, out_frames=OUT_FRAMES,
                 min_crop_length=MIN_CROP_LENGTH):
        self.seed, self.rank, self.epoch = seed, rank, 0
        self.num_corrupt, self.out_frames, self.min_crop_length = num_corrupt, out_frames, min_crop_length
        self.generator = torch.Generator(device=device)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __call__(self, x, valid, step):
        self.generator.manual_seed(step_seed(self.seed, self.epoch, self.rank, step))
        return pretrain_views(x, valid, self.generator, self.num_corrupt, self.out_frames,
                              min_crop_length=self.min_crop_length)
