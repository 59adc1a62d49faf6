"""Normalisation (data_gen/normalize.py): golden values and each step on tiny hand-made inputs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_gen.normalize import (
    align_shoulders_to_x,
    angle_between,
    center,
    normalize_skeletons,
    pad_null_frames,
    rotation_matrix,
)
from skeleton import MSR_20, NTU_25


def body_frames(values, V=2):
    """One sample, one body: frame t holds the constant values[t] at every joint. -> (1, 3, T, V, 1)."""
    values = np.asarray(values, dtype=np.float32)
    return np.broadcast_to(values[None, None, :, None, None], (1, 3, len(values), V, 1)).copy()


def frame_values(data, body=0):
    """Inverse of body_frames: the value of joint 0, coordinate 0 of each frame."""
    return data[0, 0, :, 0, body].tolist()


def test_golden_normalisation(golden):
    data = golden["prenorm_input"].numpy()
    before = data.copy()
    out = normalize_skeletons(data)
    np.testing.assert_allclose(out, golden["prenorm_output"].numpy(), rtol=0, atol=1e-5)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(data, before)  # the input is not modified


@pytest.mark.parametrize("frames, expected", [
    ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),  # full: unchanged
    ([1, 2, 0, 0, 0], [1, 2, 1, 2, 1]),  # tail filled cyclically
    ([0, 0, 1, 2, 0], [1, 2, 1, 2, 1]),  # late start: moved to the front, then filled
    ([0, 1, 0, 2, 0], [1, 2, 1, 2, 1]),  # late start: the gap is squeezed out by the move
    ([1, 0, 2, 0, 0], [1, 0, 2, 1, 0]),  # starts on time: the gap is kept and repeated
    ([0, 0, 0, 0, 0], [0, 0, 0, 0, 0]),  # empty body: left alone
    ([0, 0, 0, 0, 7], [7, 7, 7, 7, 7]),
])
def test_pad_null_frames(frames, expected):
    assert frame_values(pad_null_frames(body_frames(frames))) == expected


def test_pad_null_frames_treats_bodies_and_samples_independently():
    a = np.concatenate([body_frames([1, 2, 0, 0]), body_frames([0, 5, 6, 0])], axis=-1)  # (1, 3, 4, 2, 2)
    b = np.concatenate([body_frames([3, 0, 0, 0]), body_frames([0, 0, 0, 0])], axis=-1)
    out = pad_null_frames(np.concatenate([a, b]))  # (2, 3, 4, 2, 2)
    assert out[0, 0, :, 0, 0].tolist() == [1, 2, 1, 2]
    assert out[0, 0, :, 0, 1].tolist() == [5, 6, 5, 6]
    assert out[1, 0, :, 0, 0].tolist() == [3, 3, 3, 3]
    assert out[1, 0, :, 0, 1].tolist() == [0, 0, 0, 0]


def test_pad_null_frames_keeps_a_frame_with_one_nonzero_number():
    data = body_frames([1, 0, 0])
    data[0, 2, 1, 1, 0] = 0.5  # frame 1 holds a single non-zero z
    out = pad_null_frames(data)
    np.testing.assert_array_equal(out[0, :, 1], data[0, :, 1])
    np.testing.assert_array_equal(out[0, :, 2], data[0, :, 0])


def test_center_subtracts_main_body_centre_at_present_joints_only():
    data = np.zeros((1, 3, 2, 3, 2), np.float32)  # (N, C, T, V, M)
    data[0, :, :, :, 0] = np.arange(18).reshape(3, 2, 3) + 1  # main body, every joint present
    data[0, :, 0, 0, 1] = [10, 20, 30]  # second body: joint 0 of frame 0 only
    out = center(data, center_joint=1)
    np.testing.assert_array_equal(out[0, :, :, :, 0], data[0, :, :, :, 0] - data[0, :, :, 1:2, 0])
    np.testing.assert_array_equal(out[0, :, 0, 0, 1], data[0, :, 0, 0, 1] - data[0, :, 0, 1, 0])
    np.testing.assert_array_equal(out[0, :, :, 1:, 1], 0)  # absent joints stay zero
    np.testing.assert_array_equal(out[0, :, 1, :, 1], 0)
    np.testing.assert_array_equal(out[0, :, :, 1, 0], 0)  # the centre joint itself becomes the origin


def test_rotation_matrix_known_rotation_and_degenerate_cases():
    quarter_z = rotation_matrix([0.0, 0.0, 2.0], np.pi / 2)  # the axis length does not matter
    np.testing.assert_allclose(quarter_z @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(rotation_matrix([0.0, 0.0, 0.0], 1.0), np.eye(3))
    np.testing.assert_array_equal(rotation_matrix([0.0, 0.0, 1.0], 1e-8), np.eye(3))
    batch = rotation_matrix(np.array([[1.0, 0, 0], [0, 0, 0]]), np.array([np.pi, 1.0]))  # (2, 3, 3)
    np.testing.assert_allclose(batch[0], np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    np.testing.assert_array_equal(batch[1], np.eye(3))


def test_angle_between():
    assert angle_between(np.array([1.0, 0, 0]), np.array([0, 3.0, 0])) == pytest.approx(np.pi / 2)
    assert angle_between(np.array([-2.0, 0, 0]), np.array([1.0, 0, 0])) == pytest.approx(np.pi)
    assert angle_between(np.array([0.0, 0, 0]), np.array([1.0, 0, 0])) == 0


def shoulders_sample(left, right, V=25):
    """A (1, 3, 2, V, 1) sample whose frame 0 has the given shoulders and a marker joint 0 at (1, 2, 3)."""
    data = np.zeros((1, 3, 2, V, 1), np.float32)
    data[0, :, 0, 4, 0] = left
    data[0, :, 0, 8, 0] = right
    data[0, :, :, 0, 0] = np.array([1.0, 2.0, 3.0])[:, None]
    return data


def test_align_shoulders_to_x_rotates_to_plus_x():
    data = shoulders_sample(left=[0, 0, 0], right=[0, 2, 0])  # shoulder vector along +y
    out = align_shoulders_to_x(data, NTU_25.shoulders)
    np.testing.assert_allclose(out[0, :, 0, 8, 0], [2, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[0, :, 1, 0, 0], [2, -1, 3], atol=1e-6)  # -90 degrees about z
    assert out.dtype == np.float32


def test_align_shoulders_to_x_identity_cases():
    missing = shoulders_sample(left=[0, 0, 0], right=[0, 0, 0])
    np.testing.assert_array_equal(align_shoulders_to_x(missing, NTU_25.shoulders), missing)
    aligned = shoulders_sample(left=[0, 0, 0], right=[3, 0, 0])
    np.testing.assert_array_equal(align_shoulders_to_x(aligned, NTU_25.shoulders), aligned)
    # Released behaviour: anti-parallel shoulders give a zero rotation axis, hence no rotation.
    backwards = shoulders_sample(left=[1, 0, 0], right=[0, 0, 0])
    np.testing.assert_array_equal(align_shoulders_to_x(backwards, NTU_25.shoulders), backwards)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), frames=st.integers(1, 12), start=st.integers(0, 3))
def test_normalize_invariants(seed, frames, start):
    """Shoulders end up along +x, and within a fully present frame all distances are kept."""
    rng = np.random.default_rng(seed)
    T = 16
    data = np.zeros((1, 3, T, 25, 2), np.float32)
    data[0, :, start:start + frames, :, 0] = rng.normal(size=(3, min(frames, T - start), 25))
    out = normalize_skeletons(data)
    shoulder = out[0, :, 0, 8, 0] - out[0, :, 0, 4, 0]
    np.testing.assert_allclose(shoulder[1:], 0, atol=1e-5)
    assert shoulder[0] > 0
    before = data[0, :, start, :, 0]  # (3, V) first real frame, which becomes frame 0
    after = out[0, :, 0, :, 0]
    distances = np.linalg.norm(before[:, :, None] - before[:, None, :], axis=0)
    np.testing.assert_allclose(np.linalg.norm(after[:, :, None] - after[:, None, :], axis=0),
                               distances, rtol=1e-5, atol=1e-5)
    assert (out[0, :, :, :, 1] == 0).all()  # the empty second body stays empty


def test_normalize_all_zero_sample_empty_batch_and_other_topology():
    np.testing.assert_array_equal(normalize_skeletons(np.zeros((2, 3, 5, 25, 2), np.float32)), 0)
    assert normalize_skeletons(np.zeros((0, 3, 5, 25, 2), np.float32)).shape == (0, 3, 5, 25, 2)
    data = np.random.default_rng(0).normal(size=(1, 3, 4, 20, 1)).astype(np.float32)
    out = normalize_skeletons(data, MSR_20)
    np.testing.assert_allclose(out[0, :, :, MSR_20.center_joint, 0], 0, atol=1e-6)
    left, right = MSR_20.shoulders
    np.testing.assert_allclose((out[0, :, 0, right, 0] - out[0, :, 0, left, 0])[1:], 0, atol=1e-5)
    with pytest.raises(AssertionError, match="25 joints"):
        normalize_skeletons(data)


# ---------------------------------------------------------------------------------------------
# Layouts of other datasets: 2D keypoints, a centre between two joints, no shoulders
# ---------------------------------------------------------------------------------------------

def test_2d_keypoints_are_turned_in_the_plane_so_the_shoulders_lie_along_x():
    from skeleton import read_layout

    coco = read_layout("coco17").topology
    rng = np.random.default_rng(3)
    data = rng.normal(size=(4, 2, 5, 17, 2)).astype(np.float32) + 3.0
    out = normalize_skeletons(data, coco)
    left, right = coco.shoulders
    shoulder = out[:, :, 0, right, 0] - out[:, :, 0, left, 0]  # (N, 2)
    np.testing.assert_allclose(shoulder[:, 1], 0.0, atol=1e-5)
    assert (shoulder[:, 0] > 0).all()
    # A rotation: every distance between two joints of a frame is kept.
    centred = center(pad_null_frames(data), coco.center_joint)
    np.testing.assert_allclose(np.linalg.norm(out[:, :, :, 3] - out[:, :, :, 9], axis=1),
                               np.linalg.norm(centred[:, :, :, 3] - centred[:, :, :, 9], axis=1), rtol=1e-5)


def test_a_centre_of_several_joints_is_their_mean():
    data = np.zeros((1, 3, 2, 4, 1), dtype=np.float32)
    data[0, :, :, :, 0] = np.arange(1, 5, dtype=np.float32)  # joint v sits at (v+1, v+1, v+1)
    out = center(data, (1, 2))  # mean of joints 1 and 2: 2.5
    np.testing.assert_array_equal(out[0, 0, 0, :, 0], np.array([-1.5, -0.5, 0.5, 1.5], dtype=np.float32))


def test_a_layout_without_shoulders_is_centred_but_not_rotated():
    from dataclasses import replace

    from skeleton import NTU_25

    rng = np.random.default_rng(4)
    data = rng.normal(size=(2, 3, 6, 25, 2)).astype(np.float32)
    out = normalize_skeletons(data, replace(NTU_25, shoulders=None))
    np.testing.assert_array_equal(out, center(pad_null_frames(data), NTU_25.center_joint))
