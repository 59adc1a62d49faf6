"""The yardstick for benchmarks/preprocess.py: NTU preprocessing written the straightforward way.

This is how a typical reference implementation reads and normalises NTU RGB+D: the file is parsed
line by line into nested lists, copied joint by joint into an array, and normalised with Python loops
over bodies, frames and joints; each benchmark parses its files again and holds a whole part in memory
before saving it. It computes the same arrays as data_gen/ntu_gendata.py (a test checks that) and is
kept only to measure the fast implementation against. Do not use it to prepare data.

Shape legend: C = 3 coordinates (xyz), T frames, V joints, M bodies.
"""
import math
import os
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_gen.ntu_gendata import is_training, list_samples  # noqa: E402
from options.protocols import prepared_folder, protocols_of  # noqa: E402
from skeleton import NTU_25  # noqa: E402


def read_skeleton_lines(path):
    """Parse a raw file into frames -> bodies -> joints -> [x, y, z], one line at a time."""
    frames = []
    with open(path) as file:
        num_frames = int(file.readline())
        for _ in range(num_frames):
            bodies = []
            num_bodies = int(file.readline())
            for _ in range(num_bodies):
                file.readline()  # the 10 body fields are not used
                num_joints = int(file.readline())
                joints = []
                for _ in range(num_joints):
                    fields = [float(value) for value in file.readline().split()]
                    joints.append(fields[:3])
                bodies.append(joints)
            frames.append(bodies)
    return frames


def read_xyz_naive(path, max_bodies=4, keep_bodies=2, num_joints=25):
    """(C, T, V, keep_bodies) float32: bodies slotted by order, the most energetic kept, highest first."""
    frames = read_skeleton_lines(path)
    data = np.zeros((max_bodies, len(frames), num_joints, 3))
    for t, bodies in enumerate(frames):
        for m, joints in enumerate(bodies):
            if m >= max_bodies:
                continue
            for v, xyz in enumerate(joints):
                data[m, t, v, :] = xyz
    energies = []
    for m in range(max_bodies):
        valid_frames = [t for t in range(len(frames)) if np.any(data[m, t] != 0)]
        if valid_frames:
            body = data[m, valid_frames]
            energies.append(body[:, :, 0].std() + body[:, :, 1].std() + body[:, :, 2].std())
        else:
            energies.append(0.0)
    order = sorted(range(max_bodies), key=lambda m: -energies[m])[:keep_bodies]
    return data[order].transpose(3, 1, 2, 0).astype(np.float32)


def rotation_matrix_naive(axis, angle):
    """3x3 rotation by `angle` about `axis` (Rodrigues), identity for a near-zero axis or angle."""
    if np.abs(axis).sum() < 1e-6 or abs(angle) < 1e-6:
        return np.eye(3)
    x, y, z = np.asarray(axis) / math.sqrt(np.dot(axis, axis))
    c, s = math.cos(angle), math.sin(angle)
    return np.array([
        [c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
        [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
        [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)],
    ])


def normalize_naive(sample, center_joint=NTU_25.center_joint, shoulders=NTU_25.shoulders):
    """The three SPEC.md normalisation steps on one (C, T, V, M) sample, with loops; returns a copy."""
    bodies = sample.transpose(3, 1, 2, 0).copy()  # (M, T, V, C)
    num_bodies, num_frames, num_joints, _ = bodies.shape

    for m in range(num_bodies):  # 1. pad null frames
        body = bodies[m]
        if not body.any():
            continue
        if not body[0].any():
            real = [body[t].copy() for t in range(num_frames) if body[t].any()]
            body[:] = 0
            for t, frame in enumerate(real):
                body[t] = frame
        for t in range(num_frames):
            if not body[t].any() and not body[t:].any():
                for k in range(t, num_frames):
                    body[k] = body[k % t]
                break

    main_center = bodies[0, :, center_joint].copy()  # (T, C)
    for m in range(num_bodies):  # 2. centre on the main body
        for t in range(num_frames):
            for v in range(num_joints):
                if bodies[m, t, v].any():
                    bodies[m, t, v] = bodies[m, t, v] - main_center[t]

    left, right = shoulders  # 3. left -> right shoulder of frame 0 along +x
    shoulder = bodies[0, 0, right].astype(np.float64) - bodies[0, 0, left]
    x_axis = np.array([1.0, 0.0, 0.0])
    if np.abs(shoulder).sum() < 1e-6:
        angle = 0.0
    else:
        cosine = np.dot(shoulder / np.linalg.norm(shoulder), x_axis)
        angle = math.acos(min(1.0, max(-1.0, cosine)))
    rotation = rotation_matrix_naive(np.cross(shoulder, x_axis), angle)
    for m in range(num_bodies):
        for t in range(num_frames):
            if not bodies[m, t].any():
                continue
            for v in range(num_joints):
                bodies[m, t, v] = np.dot(rotation, bodies[m, t, v])
    return bodies.transpose(3, 1, 2, 0)  # (C, T, V, M)


def naive_convert(paths, max_frames=300):
    """Read and normalise each file once -> (N, C, max_frames, V, M) float32; no splits, no writing."""
    data = np.zeros((len(paths), 3, max_frames, 25, 2), dtype=np.float32)
    for i, path in enumerate(paths):
        xyz = read_xyz_naive(path)
        data[i, :, :xyz.shape[1]] = xyz
        data[i] = normalize_naive(data[i])
    return data


def naive_gendata(data_path, out_folder, dataset, max_frames=300):
    """The released flow: for every benchmark and part, read its files, normalise them, save in one go."""
    samples, _, _ = list_samples([data_path], dataset)
    for protocol in protocols_of(dataset):
        out = prepared_folder(out_folder, dataset, protocol)
        os.makedirs(out, exist_ok=True)
        for part in ("train", "val"):
            chosen = [s for s in samples if is_training(s, dataset, protocol) == (part == "train")]
            data = np.zeros((len(chosen), 3, max_frames, 25, 2), dtype=np.float32)
            num_frames = np.zeros(len(chosen), dtype=np.int64)
            for i, sample in enumerate(chosen):
                xyz = read_xyz_naive(sample.path)
                data[i, :, :xyz.shape[1]] = xyz
                num_frames[i] = xyz.shape[1]
            for i in range(len(chosen)):
                data[i] = normalize_naive(data[i])
            np.save(out / f"{part}_data_joint.npy", data)
            np.save(out / f"{part}_num_frame.npy", num_frames)
            with open(out / f"{part}_label.pkl", "wb") as file:
                pickle.dump(([s.name for s in chosen], [s.label for s in chosen]), file)
