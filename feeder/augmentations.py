"""Skeleton augmentations of SPEC.md "Augmentations", one sample at a time, in numpy.

Every transform is a pure function of a sample x of shape (C=3, T, V, M) and explicit parameters.
The random parameters come from separate `choose_*` / `draw_*` functions that take an
`np.random.Generator`, so a test can pin them and the feeder decides where randomness comes from.
xyz is treated as a row vector per (frame, joint, person): a 3x3 matrix A maps p to p @ A.

The pretraining view and the downstream view are declared side by side at the end of the file.
"""
import numpy as np

OUT_FRAMES = 64         # frames per view: the model's T
MIN_CROP_LENGTH = 64    # shortest temporal crop, unless the sample itself is shorter
CROP_SCALE = (0.1, 1.0)  # crop length as a fraction of the valid frames, drawn uniformly
NUM_CORRUPT = 15        # joints hit by corruption, out of NTU's 25
NUM_VIEWS = 4           # v1..v4 of SPEC.md "Pretraining objective": joint, bone, motion and fused inputs


# ----------------------------------------------------------------------------- temporal crop-resize

def choose_crop(valid, rng, scale_range=CROP_SCALE, min_length=MIN_CROP_LENGTH):
    """Draw a temporal crop inside the real frames [0, valid).

    scale ~ U(scale_range); length = min(max(floor(valid * scale), min_length), valid);
    start ~ uniform integer in [0, valid - length]. Returns (start, length), Python ints.
    """
    scale = rng.uniform(*scale_range)
    length = min(max(int(np.floor(valid * scale)), min_length), valid)
    start = int(rng.integers(0, valid - length + 1))
    return start, length


def resample(x, start, length, out_frames=OUT_FRAMES):
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

def transform_xyz(x, matrix):
    """Multiply every xyz row vector by a 3x3 matrix: out[:, t, v, m] = x[:, t, v, m] @ matrix.

    x: (C=3, T, V, M) -> (3, T, V, M), same dtype.
    """
    return np.einsum("ctvm,cd->dtvm", x, matrix).astype(x.dtype, copy=False)


def choose_corruption(num_joints, rng, num_corrupt=NUM_CORRUPT):
    """Draw a joint corruption: which joints, and what happens to them.

    Returns (joints, matrix): `num_corrupt` distinct joint indices out of `num_joints`, and with
    probability 1/2 a (3, 3) matrix with entries U(-1, 1), otherwise None (the joints are zeroed).
    """
    joints = rng.choice(num_joints, size=num_corrupt, replace=False)
    if rng.random() < 0.5:
        return joints, None
    return joints, rng.uniform(-1.0, 1.0, size=(3, 3))


def corrupt_joints(x, joints, matrix=None):
    """Zero the given joints (matrix None) or map their xyz row vectors p to p @ matrix.

    x: (C=3, T, V, M) -> (3, T, V, M), a new array; joints not listed are untouched.
    """
    out = x.copy()
    out[:, :, joints] = 0.0 if matrix is None else transform_xyz(x[:, :, joints], matrix)
    return out


def draw_shear(rng, magnitude=1.0):
    """Shear matrix S = [[1, a, b], [c, 1, d], [e, f, 1]], off-diagonal entries U(-magnitude, magnitude)."""
    s = rng.uniform(-magnitude, magnitude, size=(3, 3))
    np.fill_diagonal(s, 1.0)
    return s


def shear(x, s):
    """Shear every point: p -> S p as a column vector, i.e. p @ S^T as a row vector.

    x: (C=3, T, V, M) -> (3, T, V, M).
    """
    return transform_xyz(x, s.T)


# ----------------------------------------------------------------------------- the two views

def pretrain_view(x, valid, rng, num_corrupt=NUM_CORRUPT, out_frames=OUT_FRAMES, min_crop_length=MIN_CROP_LENGTH):
    """One pretraining view: crop-resize, then exactly one spatial augmentation (SPEC.md).

    A fair coin picks joint corruption, or else shear: never both, never neither, as the released
    feeder does. (Two independent coins, one per augmentation, learn measurably differently.)
    x: (C=3, T, V, M) with at least `valid` real frames -> (3, out_frames, V, M) float32.
    Call once per view with the same `rng`; successive calls make independent draws.
    """
    view = resample(x, *choose_crop(valid, rng, min_length=min_crop_length), out_frames=out_frames)
    if rng.random() < 0.5:
        view = corrupt_joints(view, *choose_corruption(x.shape[2], rng, num_corrupt))
    else:
        view = shear(view, draw_shear(rng))
    return view.astype(np.float32, copy=False)


def downstream_view(x, valid, out_frames=OUT_FRAMES):
    """The evaluation input: the whole valid range [0, valid) resampled, nothing random.

    x: (C=3, T, V, M) -> (3, out_frames, V, M) float32.
    """
    return resample(x, 0, valid, out_frames=out_frames).astype(np.float32, copy=False)
