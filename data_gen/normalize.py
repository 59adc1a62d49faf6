"""Skeleton normalisation applied once to every sample before training (SPEC.md, "NTU RGB+D preprocessing").

Three steps, each a small pure function vectorised over samples, bodies, frames and joints:

1. `pad_null_frames`: a body whose first frame is empty has its non-empty frames moved to the front;
   then the empty tail after its last real frame is filled by repeating the real frames cyclically.
2. `center`: subtract the main body's centre joint (NTU: joint 2, spine middle), frame by frame, from
   every joint that is present (non-zero), so missing joints stay exactly zero.
3. `align_shoulders_to_x`: rotate every sample so that the main body's left -> right shoulder vector
   in frame 0 points along +x (the released UmURL variant has this step only, no z-axis alignment).
   For 2D keypoints (C = 2) the rotation is the in-plane one that does the same; a layout without
   shoulders skips the step.

"Empty" means all-zero: a frame of a body is empty when all its V*C numbers are zero, a joint is
absent when its xyz are all zero. The released code tests `sum() == 0` instead, which differs only for
non-zero numbers that happen to sum to exactly zero; that never happens with sensor data.

Shape legend: N samples, C = 3 coordinates (xyz; 2 for image keypoints), T frames, V joints, M bodies;
body 0 is the main body.
"""
import numpy as np

from skeleton import NTU_25

# Below these L1 norms a vector or an angle counts as zero and the rotation is the identity, as in the
# released code: a missing shoulder (zero vector) must not produce an arbitrary rotation.
AXIS_EPS = 1e-6
ANGLE_EPS = 1e-6


def nonempty_frames(data):
    """(N, C, T, V, M) -> (N, M, T) bool: True where the body has at least one non-zero number."""
    N, C, T, V, M = data.shape
    # Reducing one contiguous trailing axis is several times faster than numpy's axis=(1, 3) reduction.
    return (data != 0).transpose(0, 4, 2, 1, 3).reshape(N, M, T, C * V).any(-1)  # (N, M, T)


def pad_null_frames(data):
    """Step 1: move a late-starting body to the front, then fill its empty tail cyclically.

    For each body, `length` real frames are kept at the front (the non-empty frames, compacted, when
    the first frame is empty; otherwise everything up to the last non-empty frame, gaps included),
    and output frame t is kept frame `t % length`. All-empty bodies are left as they are.

    data: (N, C, T, V, M). Returns a new array of the same shape and dtype.
    """
    T = data.shape[2]
    frames = np.arange(T)
    nonempty = nonempty_frames(data)  # (N, M, T)
    count = nonempty.sum(-1)  # (N, M)
    last = T - 1 - np.argmax(nonempty[..., ::-1], axis=-1)  # (N, M) index of the last non-empty frame
    shifted = (count > 0) & ~nonempty[..., 0]  # (N, M) bodies whose first frame is empty

    # A stable sort of "is empty" lists the non-empty frames first, in their original order.
    compacted = np.argsort(~nonempty, axis=-1, kind="stable")  # (N, M, T)
    order = np.where(shifted[..., None], compacted, frames)  # (N, M, T) frame order after step 1a
    length = np.where(shifted, count, last + 1)  # (N, M) real frames at the front
    length = np.where(count > 0, length, T)  # empty bodies: identity
    source = np.take_along_axis(order, frames % length[..., None], axis=-1)  # (N, M, T)

    samples = np.arange(data.shape[0])[:, None, None]  # (N, 1, 1)
    bodies = np.arange(data.shape[4])[None, :, None]  # (1, M, 1)
    padded = data.transpose(0, 4, 2, 1, 3)[samples, bodies, source]  # (N, M, T, C, V)
    return np.ascontiguousarray(padded.transpose(0, 3, 2, 4, 1))  # (N, C, T, V, M)


def center(data, center_joint):
    """Step 2: subtract the main body's `center_joint`, frame by frame, at every present joint.

    Absent (all-zero) joints stay zero so that they remain recognisably missing. The main body's own
    centre joint becomes zero too; that is intended.

    center_joint: one joint, or a tuple of joints whose mean is the centre (e.g. the two hips).
    data: (N, C, T, V, M). Returns a new array of the same shape and dtype.
    """
    if isinstance(center_joint, tuple):
        main_center = data[:, :, :, list(center_joint), 0:1].mean(axis=3, keepdims=True)  # (N, C, T, 1, 1)
    else:
        main_center = data[:, :, :, center_joint:center_joint + 1, 0:1]  # (N, C, T, 1, 1)
    present = (data != 0).any(axis=1, keepdims=True)  # (N, 1, T, V, M)
    return np.where(present, data - main_center, 0).astype(data.dtype, copy=False)  # (N, C, T, V, M)


def angle_between(u, v):
    """Angle in radians between vectors u and v, both (..., 3); 0 where either is near zero."""
    u_norm = np.linalg.norm(u, axis=-1)
    v_norm = np.linalg.norm(v, axis=-1)
    degenerate = (np.abs(u).sum(-1) < AXIS_EPS) | (np.abs(v).sum(-1) < AXIS_EPS)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (u * v).sum(-1) / (u_norm * v_norm)
    return np.where(degenerate, 0.0, np.arccos(np.clip(np.nan_to_num(cosine), -1.0, 1.0)))


def rotation_matrix(axis, angle):
    """Rotation by `angle` (right-handed) about `axis`, via Rodrigues' formula; batched.

    R = I + sin(a) K + (1 - cos(a)) K^2, with K the cross-product matrix of the unit axis, so that
    R @ p rotates a column vector p. Identity where the axis or the angle is near zero.

    axis: (..., 3), angle: (...). Returns (..., 3, 3) float64.
    """
    axis = np.asarray(axis, dtype=np.float64)
    angle = np.asarray(angle, dtype=np.float64)
    identity = np.broadcast_to(np.eye(3), axis.shape[:-1] + (3, 3))
    degenerate = (np.abs(axis).sum(-1) < AXIS_EPS) | (np.abs(angle) < ANGLE_EPS)  # (...)
    norm = np.linalg.norm(axis, axis=-1, keepdims=True)
    unit = axis / np.where(norm > 0, norm, 1.0)  # (..., 3)
    x, y, z = unit[..., 0], unit[..., 1], unit[..., 2]
    zero = np.zeros_like(x)
    cross = np.stack([
        np.stack([zero, -z, y], -1),
        np.stack([z, zero, -x], -1),
        np.stack([-y, x, zero], -1),
    ], -2)  # (..., 3, 3)
    sin = np.sin(angle)[..., None, None]
    cos = np.cos(angle)[..., None, None]
    rotation = identity + sin * cross + (1 - cos) * (cross @ cross)
    return np.where(degenerate[..., None, None], identity, rotation)  # (..., 3, 3)


def align_shoulders_to_x(data, shoulders):
    """Step 3: rotate each sample so the main body's left -> right shoulder in frame 0 is along +x.

    The rotation is about (shoulder vector x unit-x) by the angle between them; the identity when the
    shoulder vector is near zero (missing joints) or already along +x. Empty frames are zero and
    stay zero under the rotation, so every frame is rotated.

    data: (N, C=3, T, V, M); shoulders: (left, right) 0-based joints. Returns a new array, same dtype.
    2D data (C = 2) goes to `align_shoulders_to_x_2d`.
    """
    if data.shape[1] == 2:
        return align_shoulders_to_x_2d(data, shoulders)
    left, right = shoulders
    N, C, T, V, M = data.shape
    shoulder = data[:, :, 0, right, 0].astype(np.float64) - data[:, :, 0, left, 0]  # (N, 3)
    x_axis = np.array([1.0, 0.0, 0.0])
    rotation = rotation_matrix(np.cross(shoulder, x_axis), angle_between(shoulder, x_axis))  # (N, 3, 3)
    points = data.reshape(N, C, T * V * M).astype(np.float64)  # (N, 3, T*V*M)
    return (rotation @ points).reshape(data.shape).astype(data.dtype)  # (N, C, T, V, M)


def align_shoulders_to_x_2d(data, shoulders):
    """Step 3 for image keypoints: rotate each sample in its plane so the main body's left -> right
    shoulder in frame 0 points along +x; the identity where that vector is near zero, as in 3D.

    data: (N, C=2, T, V, M). Returns a new array, same dtype.
    """
    left, right = shoulders
    N, C, T, V, M = data.shape
    shoulder = data[:, :, 0, right, 0].astype(np.float64) - data[:, :, 0, left, 0]  # (N, 2)
    angle = -np.arctan2(shoulder[:, 1], shoulder[:, 0])  # (N,) turns the shoulder vector onto +x
    angle = np.where(np.abs(shoulder).sum(-1) < AXIS_EPS, 0.0, angle)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (N, 2, 2)
    points = data.reshape(N, C, T * V * M).astype(np.float64)  # (N, 2, T*V*M)
    return (rotation @ points).reshape(data.shape).astype(data.dtype)  # (N, C, T, V, M)


def normalize_skeletons(data, topology=NTU_25):
    """The three normalisation steps of SPEC.md, in order, on a batch of padded samples.

    data: float (N, C, T, V, M), C = 3 (xyz) or 2 (image keypoints), with zeros for missing frames,
    joints and bodies; body 0 is the main body. Returns a new array of the same shape and dtype; the
    input is not modified. A topology without shoulders skips the rotation.
    """
    assert data.ndim == 5 and data.shape[1] in (2, 3), f"expected (N, C=2 or 3, T, V, M), got {data.shape}"
    assert data.shape[3] == topology.num_joints, f"{topology.name} has {topology.num_joints} joints"
    data = pad_null_frames(data)
    data = center(data, topology.center_joint)
    if topology.shoulders is None:
        return data
    return align_shoulders_to_x(data, topology.shoulders)
