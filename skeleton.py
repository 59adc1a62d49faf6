"""Skeleton layouts and the three input modalities (joint, bone, motion).

This is the one home of the skeleton topology: the model, the feeders and the data
preparation tools all import it. A new layout needs one `Topology` entry and nothing else.

Shape legend: N batch, C coordinates (xyz), T frames, V joints, M persons.
No torch import here: the data preparation tools import the tables in many worker processes.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    """A skeleton layout.

    `parents[v]` is the 0-based parent joint of joint v; a root is its own parent, so its bone is
    zero. `center_joint` and `shoulders` (left, right) drive the NTU-style normalisation: the
    sequence is translated to the centre joint and rotated so that left -> right shoulder is +x.
    """

    name: str
    parents: tuple
    center_joint: int
    shoulders: tuple

    @property
    def num_joints(self):
        return len(self.parents)


def _parents_from_pairs(pairs_1based):
    """(joint, parent) pairs, 1-based as in the papers, -> 0-based parent per joint."""
    parents = [None] * len(pairs_1based)
    for joint, parent in pairs_1based:
        parents[joint - 1] = parent - 1
    assert None not in parents, "every joint needs exactly one (joint, parent) pair"
    return tuple(parents)


# NTU RGB+D (Kinect v2, 25 joints). Pairs as in SPEC.md; joint 21 (spine at shoulders) is the root.
NTU_25 = Topology(
    name="ntu25",
    parents=_parents_from_pairs([
        (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
        (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
        (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12),
    ]),
    center_joint=1,      # joint 2, spine middle
    shoulders=(4, 8),    # joints 5 (left) and 9 (right)
)

# MSR Action3D (Kinect v1 skeletons in the MSR joint order, 20 joints, one person):
# 1 L shoulder, 2 R shoulder, 3 neck, 4 spine, 5 L hip, 6 R hip, 7 hip centre, 8 L elbow,
# 9 R elbow, 10 L wrist, 11 R wrist, 12 L hand, 13 R hand, 14 L knee, 15 R knee, 16 L ankle,
# 17 R ankle, 18 L foot, 19 R foot, 20 head. Rooted at the neck, like NTU's spine-at-shoulders.
MSR_20 = Topology(
    name="msr20",
    parents=_parents_from_pairs([
        (1, 3), (2, 3), (3, 3), (4, 3), (5, 7), (6, 7), (7, 4), (8, 1), (9, 2), (10, 8),
        (11, 9), (12, 10), (13, 11), (14, 5), (15, 6), (16, 14), (17, 15), (18, 16), (19, 17),
        (20, 3),
    ]),
    center_joint=3,      # joint 4, spine
    shoulders=(0, 1),
)

TOPOLOGIES = {t.name: t for t in (NTU_25, MSR_20)}


def joint_to_bone(x, parents):
    """Bone vectors: bone[v] = x[v] - x[parents[v]] along the joint axis.

    x: (N, C, T, V, M) tensor; parents: V 0-based indices. One gather, no loop over joints.
    """
    return x - x[:, :, :, list(parents)]  # (N, C, T, V, M)


def joint_to_motion(x):
    """Frame differences: motion[t] = x[t+1] - x[t]; the last frame's motion is zero.

    x: (N, C, T, V, M) tensor.
    """
    motion = x.clone()
    motion[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]  # (N, C, T, V, M)
    motion[:, :, -1] = 0
    return motion
