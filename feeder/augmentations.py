"""Skeleton augmentations of SPEC.md "Augmentations", one sample at a time, in numpy.

Every transform is a pure function of a sample x of shape (C, T, V, M) and explicit parameters.
The random parameters come from separate `choose_*` / `draw_*` functions that take an
`np.random.Generator`, so a test can pin them and the feeder decides where randomness comes from.
A joint's coordinates are a row vector p per (frame, joint, person): a CxC matrix A maps p to p @ A.
C is 3 (xyz) for the built-in datasets, 2 (xy) for image keypoints; the 2D transforms are the 3D ones
restricted to x and y (the same rule draws their entries), and with C = 3 every draw is the released one.

Every setting of the views is a field of one frozen `ViewConfig`, whose defaults are the released
values; a run resolves its own once (options/pretrain.py `view_config`) and hands it to the numpy
feeder and to the on-device twin (feeder/batch_augment.py) alike. The pretraining view and the
downstream view are declared side by side at the end of the file.
"""
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

NUM_VIEWS = 4  # v1..v4 of SPEC.md "Pretraining objective": the model's joint, bone, motion and fused inputs


@dataclass(frozen=True)
class ViewConfig:
    """How a pretraining view is drawn (SPEC.md "Augmentations"); the defaults are the released settings.

    out_frames: T of every view, pretraining and downstream (the model's input length).
    min_crop_length: the shortest temporal crop in frames, unless the sample itself is shorter.
    crop_scale: (low, high), the crop length as a fraction of the valid frames, drawn uniformly.
    corruption_probability: the coin that picks joint corruption (else shear) for a view.
    num_corrupt: joints hit by joint corruption (15 of NTU's 25).
    zero_probability: a corruption zeroes its joints with this probability, else transforms them.
    corruption_magnitude: the corruption matrix's entries are U(-magnitude, magnitude).
    shear_magnitude: the shear's off-diagonal entries are U(-magnitude, magnitude).
    """

    out_frames: int = 64
    min_crop_length: int = 64
    crop_scale: tuple[float, float] = (0.1, 1.0)
    corruption_probability: float = 0.5
    num_corrupt: int = 15
    zero_probability: float = 0.5
    corruption_magnitude: float = 1.0
    shear_magnitude: float = 1.0

    def __post_init__(self):
        low, high = self.crop_scale
        problems = [
            (self.out_frames < 1, f"out_frames must be at least 1, got {self.out_frames}"),
            (not 1 <= self.min_crop_length <= self.out_frames,
             f"min_crop_length must be 1..out_frames ({self.out_frames}), got {self.min_crop_length}"),
            (not 0 < low <= high <= 1, f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}"),
            (self.num_corrupt < 0, f"num_corrupt must be non-negative, got {self.num_corrupt}"),
            (not 0 <= self.corruption_probability <= 1,
             f"corruption_probability must be in [0, 1], got {self.corruption_probability}"),
            (not 0 <= self.zero_probability <= 1, f"zero_probability must be in [0, 1], got {self.zero_probability}"),
            (self.corruption_magnitude < 0 or self.shear_magnitude < 0, "magnitudes must be non-negative"),
        ]
        for bad, message in problems:
            if bad:
                raise ValueError(f"view configuration: {message}")

    def as_dict(self):
        """Plain JSON types (lists for tuples), for config.json and checkpoints."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}


RELEASED_VIEW = ViewConfig()
OUT_FRAMES = RELEASED_VIEW.out_frames  # the released clip length, which the released model's input sizes assume


# ----------------------------------------------------------------------------- temporal crop-resize

def choose_crop(valid, rng, scale_range, min_length):
    """Draw a temporal crop inside the real frames [0, valid).

    scale ~ U(scale_range); length = min(max(floor(valid * scale), min_length), valid);
    start ~ uniform integer in [0, valid - length]. Returns (start, length), Python ints.
    """
    scale = rng.uniform(*scale_range)
    length = min(max(int(np.floor(valid * scale)), min_length), valid)
    start = int(rng.integers(0, valid - length + 1))
    return start, length


def resample(x, start, length, out_frames):
    """Resample frames [start, start + length) of x to `out_frames` frames by linear interpolation.

    Half-pixel centres, i.e. what torch's `interpolate(mode="linear"/"bilinear", align_corners=False)`
    does along time: output frame i reads source position (i + 0.5) * length / out_frames - 0.5,
    clamped at 0, and blends its two neighbouring frames (the last frame repeats past the end).
    x: (C, T, V, M) with T >= start + length -> (C, out_frames, V, M), same dtype.
    """
    position = (np.arange(out_frames) + 0.5) * (length / out_frames) - 0.5
    position = np.maximum(position, 0.0)                   # (out_frames,)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, length - 1)
    weight = (position - lower)[None, :, None, None]        # (1, out_frames, 1, 1)
    before, after = x[:, start + lower], x[:, start + upper]  # (C, out_frames, V, M) each
    return ((1.0 - weight) * before + weight * after).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- spatial transforms

def flip_coin(rng, probability):
    """True with the given probability (one draw of U[0, 1))."""
    return rng.random() < probability


def transform_coordinates(x, matrix):
    """Multiply every coordinate row vector by a CxC matrix: out[:, t, v, m] = x[:, t, v, m] @ matrix.

    x: (C, T, V, M) -> (C, T, V, M), same dtype.
    """
    return np.einsum("ctvm,cd->dtvm", x, matrix).astype(x.dtype, copy=False)


def choose_corruption(num_joints, rng, num_corrupt, zero_probability, magnitude, num_coords=3):
    """Draw a joint corruption: which joints, and what happens to them.

    Returns (joints, matrix): `num_corrupt` distinct joint indices out of `num_joints`, and with
    probability 1 - zero_probability a (C, C) matrix (C = num_coords) with entries
    U(-magnitude, magnitude), otherwise None (the joints are zeroed).
    """
    joints = rng.choice(num_joints, size=num_corrupt, replace=False)
    if flip_coin(rng, zero_probability):
        return joints, None
    return joints, rng.uniform(-magnitude, magnitude, size=(num_coords, num_coords))


def corrupt_joints(x, joints, matrix):
    """Zero the given joints (matrix None) or map their coordinate row vectors p to p @ matrix (CxC).

    x: (C, T, V, M) -> (C, T, V, M), a new array; joints not listed are untouched.
    """
    out = x.copy()
    out[:, :, joints] = 0.0 if matrix is None else transform_coordinates(x[:, :, joints], matrix)
    return out


def draw_shear(rng, magnitude, num_coords=3):
    """Shear matrix S = [[1, a, b], [c, 1, d], [e, f, 1]], off-diagonal entries U(-magnitude, magnitude);
    for num_coords = 2 its x, y part [[1, a], [c, 1]], drawn by the same rule."""
    s = rng.uniform(-magnitude, magnitude, size=(num_coords, num_coords))
    np.fill_diagonal(s, 1.0)
    return s


def shear(x, s):
    """Shear every point: p -> S p as a column vector, i.e. p @ S^T as a row vector.

    x: (C, T, V, M) -> (C, T, V, M), S CxC.
    """
    return transform_coordinates(x, s.T)


# ----------------------------------------------------------------------------- the two views

class ViewDraw(NamedTuple):
    """The random parameters of one pretraining view: the crop, then the corruption (joints, matrix or
    None) or else the shear matrix; exactly one of `corruption` and `shear` is None."""

    start: int
    length: int
    corruption: tuple | None
    shear: np.ndarray | None


def draw_pretrain_view(valid, num_joints, num_coords, rng, view):
    """The parameters of one pretraining view of a sample with `valid` real frames, `num_joints` joints of
    `num_coords` coordinates, in the released order of draws: the crop, the coin, then only the chosen
    spatial augmentation's parameters."""
    start, length = choose_crop(valid, rng, view.crop_scale, view.min_crop_length)
    if flip_coin(rng, view.corruption_probability):
        corruption = choose_corruption(num_joints, rng, view.num_corrupt, view.zero_probability,
                                       view.corruption_magnitude, num_coords)
        return ViewDraw(start, length, corruption, None)
    return ViewDraw(start, length, None, draw_shear(rng, view.shear_magnitude, num_coords))


def apply_pretrain_view(x, draw, view):
    """Crop-resize, then the drawn corruption or shear: (C, T, V, M) -> (C, view.out_frames, V, M) float32."""
    out = resample(x, draw.start, draw.length, view.out_frames)
    out = corrupt_joints(out, *draw.corruption) if draw.corruption is not None else shear(out, draw.shear)
    return out.astype(np.float32, copy=False)


def pretrain_view(x, valid, rng, view):
    """One pretraining view: crop-resize, then exactly one spatial augmentation (SPEC.md).

    A coin (fair as released) picks joint corruption, or else shear: never both, never neither, as the
    released feeder does. (Two independent coins, one per augmentation, learn measurably differently.)
    x: (C, T, V, M) with at least `valid` real frames -> (C, view.out_frames, V, M) float32.
    Call once per view with the same `rng`; successive calls make independent draws.
    """
    return apply_pretrain_view(x, draw_pretrain_view(valid, x.shape[2], x.shape[0], rng, view), view)


def downstream_view(x, valid, out_frames):
    """The evaluation input: the whole valid range [0, valid) resampled, nothing random.

    x: (C, T, V, M) -> (C, out_frames, V, M) float32.
    """
    return resample(x, 0, valid, out_frames).astype(np.float32, copy=False)
