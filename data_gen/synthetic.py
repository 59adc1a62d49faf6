"""Synthetic NTU RGB+D raw files: learnable stand-ins for tests, benchmarks and smoke runs.

    python data_gen/synthetic.py --out_folder /tmp/synthetic_ntu --num_classes 10 --samples_per_class 60

writes `SsssCcccPpppRrrrAaaa.skeleton` files in the exact text format of the real data (SPEC.md,
"NTU RGB+D preprocessing"), which `data_gen/ntu_gendata.py` then converts like the real thing.

What makes the data learnable and realistic enough to exercise the pipeline:
- an action class is a fixed motion recipe: two or three joints (shoulders, elbows, hips, knees, neck,
  spine) swing about class-specific axes with class-specific amplitude, rhythm, phase and resting
  bend, plus, for some classes, a walk or bounce of the whole body; some classes have a second
  performer who does the same action facing the first;
- performers differ in size and limb proportions; each sample varies amplitude, rhythm and phase a
  little, has its own length (40-300 frames) and sensor noise;
- cameras 1-3 look from -45, 0 and +45 degrees, setups change camera height and distance;
- some samples start with empty frames or have the second performer enter late, and a few carry a
  spurious extra "body" (a small, nearly static blob, like the sensor's ghosts) listed after the
  performers; its energy is the lowest, so the reader drops it when two performers are present.

File ids make every split non-empty: the camera cycles 1-3, the setup 1-17 and the performer 1-40
with the sample index, so both NTU-60 benchmarks (subjects, cameras) and NTU-120's x-setup get train
and val samples. Class recipes depend only on the action number, samples only on (seed, action,
index): the output is deterministic given the seed.
"""
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_gen.normalize import rotation_matrix  # noqa: E402
from options.checks import between, checked, seed  # noqa: E402
from options.parser import ArgumentParser  # noqa: E402
from skeleton import NTU_25  # noqa: E402

NUM_SETUPS, NUM_CAMERAS, NUM_PERFORMERS = 17, 3, 40  # NTU-60's ranges, so files also count as NTU-60
MAX_CLASSES = 120  # actions 1..120, as in NTU-120
MAX_SAMPLES_PER_CLASS = 2 * NUM_SETUPS * NUM_CAMERAS * NUM_PERFORMERS  # 4080 unique names (`sample_name`)
CAMERA_YAW = {1: -np.pi / 4, 2: 0.0, 3: np.pi / 4}
MIN_FRAMES, MAX_FRAMES = 40, 300
NOISE = 0.004  # metres, per coordinate and frame

# Rest pose: offset (metres) of each joint from its parent in NTU_25.parents, performer facing the camera
# (camera axes: x right, y up, z away from the camera, so the performer's left is +x). 1-based numbers.
REST_OFFSET = {
    1: (0.0, -0.25, 0.0), 2: (0.0, -0.25, 0.0), 3: (0.0, 0.08, 0.0), 4: (0.0, 0.15, 0.0),  # spine, head
    5: (0.18, -0.03, 0.0), 6: (0.06, -0.27, 0.0), 7: (0.0, -0.25, 0.0), 8: (0.0, -0.08, 0.0),  # left arm
    9: (-0.18, -0.03, 0.0), 10: (-0.06, -0.27, 0.0), 11: (0.0, -0.25, 0.0), 12: (0.0, -0.08, 0.0),
    13: (0.09, -0.05, 0.0), 14: (0.0, -0.42, 0.0), 15: (0.0, -0.40, 0.0), 16: (0.0, -0.05, -0.10),  # legs
    17: (-0.09, -0.05, 0.0), 18: (0.0, -0.42, 0.0), 19: (0.0, -0.40, 0.0), 20: (0.0, -0.05, -0.10),
    21: (0.0, 0.0, 0.0),  # spine at shoulders: the root
    22: (-0.02, -0.05, -0.02), 23: (0.03, -0.03, -0.02), 24: (0.02, -0.05, -0.02), 25: (-0.03, -0.03, -0.02),
}
LIMB_GROUP = {**dict.fromkeys((5, 6, 7, 8, 9, 10, 11, 12, 22, 23, 24, 25), "arm"),
              **dict.fromkeys((13, 14, 15, 16, 17, 18, 19, 20), "leg")}  # the rest is "torso"
# Joints a class can swing: the rotation at a joint moves everything below it in the tree.
ACTUATED = (5, 6, 9, 10, 13, 14, 17, 18, 3, 2)  # shoulders, elbows, hips, knees, neck, spine middle
TWO_PERSON_EVERY = 5  # classes 5, 10, 15, ... are interactions of two performers


def _topological_order(parents):
    """Joints ordered so that each comes after its parent (the root first)."""
    order, placed = [], set()
    while len(order) < len(parents):
        for joint, parent in enumerate(parents):
            if joint not in placed and (parent == joint or parent in placed):
                order.append(joint)
                placed.add(joint)
    return order


JOINT_ORDER = _topological_order(NTU_25.parents)


def class_recipe(action):
    """The motion recipe of an action class (1-based), fixed across seeds so classes stay the same."""
    rng = np.random.default_rng([7919, action])
    count = rng.integers(2, 4)
    # The class number picks the first swinging joint, so neighbouring classes differ in where they move.
    joints = [ACTUATED[(action - 1) % len(ACTUATED)]]
    joints += [j for j in rng.permutation(ACTUATED) if j != joints[0]][:count - 1]
    swings = []
    for joint in joints:
        axis = rng.normal(size=3)
        swings.append({
            "joint": int(joint) - 1,  # 0-based
            "axis": axis / np.linalg.norm(axis),
            "amplitude": rng.uniform(0.4, 1.3),  # radians
            "cycles": rng.uniform(0.5, 4.0),  # per sequence, so the rhythm does not depend on length
            "phase": rng.uniform(0, 2 * np.pi),
            "bias": rng.uniform(-0.8, 0.8),  # resting bend, radians
        })
    moves = rng.random() < 0.3
    return {
        "swings": swings,
        "walk": rng.normal(scale=0.4, size=3) * [1, 0, 1] if moves else np.zeros(3),  # metres per sequence
        "bounce": rng.uniform(0.05, 0.2) if rng.random() < 0.25 else 0.0,  # metres
        "bounce_cycles": rng.uniform(1, 4),
        "two_person": action % TWO_PERSON_EVERY == 0,
    }


def performer_offsets(seed, performer):
    """Rest offsets (V, 3) scaled by the performer's size and limb proportions."""
    rng = np.random.default_rng([seed, 104729, performer])
    scale = {"arm": rng.uniform(0.9, 1.1), "leg": rng.uniform(0.9, 1.1), "torso": rng.uniform(0.9, 1.1)}
    size = rng.uniform(0.85, 1.15)
    return np.array([np.multiply(REST_OFFSET[v], size * scale[LIMB_GROUP.get(v, "torso")])
                     for v in range(1, NTU_25.num_joints + 1)])  # (V, 3)


def pose_sequence(recipe, offsets, num_frames, rng, yaw=0.0):
    """Joint positions (T, V, 3) of one performer doing `recipe`, root at the origin, facing -z then yawed.

    Forward kinematics: each joint's global rotation is its parent's times its own swing, and its
    position its parent's plus the parent's global rotation applied to its rest offset.
    """
    time = np.linspace(0, 1, num_frames)  # (T,) fraction of the sequence
    local = np.broadcast_to(np.eye(3), (NTU_25.num_joints, num_frames, 3, 3)).copy()  # (V, T, 3, 3)
    for swing in recipe["swings"]:
        cycles = swing["cycles"] * rng.uniform(0.85, 1.15)
        angle = swing["bias"] + swing["amplitude"] * rng.uniform(0.8, 1.2) * np.sin(
            2 * np.pi * cycles * time + swing["phase"] + rng.normal(scale=0.3))  # (T,)
        local[swing["joint"]] = rotation_matrix(np.broadcast_to(swing["axis"], (num_frames, 3)), angle)
    root_turn = rotation_matrix(np.array([0.0, 1.0, 0.0]), yaw)  # (3, 3) facing of the performer

    rotation = np.empty_like(local)  # (V, T, 3, 3) global rotation of each joint
    position = np.empty((NTU_25.num_joints, num_frames, 3))  # (V, T, 3)
    for joint in JOINT_ORDER:
        parent = NTU_25.parents[joint]
        if parent == joint:
            rotation[joint] = root_turn @ local[joint]
            position[joint] = 0.0
        else:
            rotation[joint] = rotation[parent] @ local[joint]
            position[joint] = position[parent] + rotation[parent] @ offsets[joint]
    position += recipe["walk"] * time[None, :, None]  # (V, T, 3) walking, same direction for all joints
    position[..., 1] += recipe["bounce"] * np.abs(np.sin(np.pi * recipe["bounce_cycles"] * time))
    return position.transpose(1, 0, 2)  # (T, V, 3)


def sample_name(action, index):
    """SsssCcccPpppRrrrAaaa for the index-th sample of an action: ids cycle so that every split is hit.

    (camera, setup, replication) repeats every 102 samples and the performer then moves on by 29
    (mod 40), so names are unique for up to 4080 samples per class.
    """
    camera = index % NUM_CAMERAS + 1
    setup = index // NUM_CAMERAS % NUM_SETUPS + 1
    replication = index // (NUM_CAMERAS * NUM_SETUPS) % 2 + 1
    performer = (3 * action + index + 109 * (index // (2 * NUM_CAMERAS * NUM_SETUPS))) % NUM_PERFORMERS + 1
    return f"S{setup:03d}C{camera:03d}P{performer:03d}R{replication:03d}A{action:03d}"


def synthesize(action, index, seed):
    """One sample -> (name, bodies (B, T, V, 3) camera coordinates in metres, present (B, T) bool).

    Bodies are listed in the order they appear in each frame (slot order).
    """
    name = sample_name(action, index)
    setup, camera, performer = int(name[1:4]), int(name[5:8]), int(name[9:12])
    rng = np.random.default_rng([seed, action, index])
    recipe = class_recipe(action)
    num_frames = int(MIN_FRAMES + (MAX_FRAMES - MIN_FRAMES) * rng.random() ** 3)  # mostly short, as in NTU

    people = [pose_sequence(recipe, performer_offsets(seed, performer), num_frames, rng)]
    if recipe["two_person"]:  # the partner stands 1.2 m to the performer's left, facing them
        partner = pose_sequence(recipe, performer_offsets(seed, performer % NUM_PERFORMERS + 1), num_frames,
                                rng, yaw=np.pi / 2)
        people.append(partner + [1.2, 0.0, 0.0])
    bodies = np.stack(people)  # (B, T, V, 3)
    present = np.ones(bodies.shape[:2], dtype=bool)  # (B, T)
    if rng.random() < 0.1:  # the sensor finds nobody in the first frames
        present[:, :rng.integers(1, 6)] = False
    if len(people) == 2 and rng.random() < 0.3:  # the partner walks into view late
        present[1, :rng.integers(1, num_frames // 3)] = False
    if rng.random() < 0.08:  # a ghost: a small blob that hardly moves, seen in every frame
        blob = rng.normal(scale=0.05, size=(1, 1, NTU_25.num_joints, 3)) + rng.normal(scale=0.5, size=3)
        jitter = rng.normal(scale=0.002, size=(1, num_frames, NTU_25.num_joints, 3))
        bodies = np.concatenate([bodies, blob + jitter])  # (B + 1, T, V, 3)
        present = np.concatenate([present, np.ones((1, num_frames), dtype=bool)])

    # Into the camera: yaw by camera, then height and distance by setup (all bodies share the view).
    view = np.random.default_rng([seed, 15485863, setup])
    camera_turn = rotation_matrix(np.array([0.0, 1.0, 0.0]), CAMERA_YAW[camera])  # (3, 3)
    shift = np.array([0.0, view.uniform(0.2, 0.6), view.uniform(2.8, 3.6)])  # y up: root above camera axis
    bodies = bodies @ camera_turn.T + shift + rng.normal(scale=NOISE, size=bodies.shape)
    return name, bodies, present


# One joint line: x y z depthX depthY colorX colorY orientationW/X/Y/Z trackingState (tracked = 2).
_JOINT_BLOCK = "%.7f %.7f %.7f %.3f %.3f %.3f %.3f 0 0 0 0 2\n" * NTU_25.num_joints


def skeleton_text(bodies, present, body_ids):
    """The raw-file text of bodies (B, T, V, 3) in camera metres, present (B, T), one int id per body."""
    num_bodies, num_frames, num_joints, _ = bodies.shape
    depth = bodies[..., 2:3]  # (B, T, V, 1)
    # Pixel coordinates are a pinhole projection, like the sensor's; nothing downstream reads them.
    pixels = np.concatenate([256 + 365 * bodies[..., :1] / depth, 212 - 365 * bodies[..., 1:2] / depth,
                             960 + 1060 * bodies[..., :1] / depth, 540 - 1060 * bodies[..., 1:2] / depth], -1)
    fields = np.concatenate([bodies, pixels], -1).reshape(num_bodies, num_frames, -1)  # (B, T, V * 7)
    parts = [f"{num_frames}\n"]
    for t in range(num_frames):
        visible = np.flatnonzero(present[:, t])
        parts.append(f"{len(visible)}\n")
        for b in visible:
            parts.append(f"{body_ids[b]} 0 1 1 1 1 0 0.01 -0.02 2\n{num_joints}\n")
            parts.append(_JOINT_BLOCK % tuple(fields[b, t].tolist()))
    return "".join(parts)


def generate(out_folder, num_classes, samples_per_class, seed=0):
    """Write num_classes * samples_per_class raw files into out_folder; returns their paths, sorted."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES} (NTU-120 has 120 actions), got {num_classes}")
    if not 1 <= samples_per_class <= MAX_SAMPLES_PER_CLASS:
        raise ValueError(f"samples_per_class must be in 1..{MAX_SAMPLES_PER_CLASS} (unique file names), "
                         f"got {samples_per_class}")
    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for action in range(1, num_classes + 1):
        for index in range(samples_per_class):
            name, bodies, present = synthesize(action, index, seed)
            body_ids = [72057594037927936 + 1000 * index + b for b in range(len(bodies))]
            path = out_folder / f"{name}.skeleton"
            path.write_text(skeleton_text(bodies, present, body_ids))
            paths.append(path)
    return sorted(paths)


def main(argv=None):
    parser = ArgumentParser(description="Write synthetic NTU RGB+D .skeleton files.")
    parser.add_argument("--out_folder", required=True)
    parser.add_argument("--num_classes", type=int, default=10, action=checked(between(1, MAX_CLASSES)),
                        help="actions 1..num_classes")
    parser.add_argument("--samples_per_class", type=int, default=60,
                        action=checked(between(1, MAX_SAMPLES_PER_CLASS)))
    parser.add_argument("--seed", type=int, default=0, action=checked(seed))
    args = parser.parse_args(argv)
    paths = generate(args.out_folder, args.num_classes, args.samples_per_class, args.seed)
    print(f"wrote {len(paths)} files to {args.out_folder}")


if __name__ == "__main__":
    main()
