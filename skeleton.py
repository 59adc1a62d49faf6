"""Skeleton layouts and the three input modalities (joint, bone, motion).

This is the one home of the skeleton topology: the model, the feeders and the data
preparation tools all import it. The built-in layouts are also shipped as data in layouts/*.json,
the format in which a user describes their own skeleton (`read_layout`); a test keeps the two equal.

Shape legend: N batch, C coordinates (xyz), T frames, V joints, M persons.
No torch import here: the data preparation tools import the tables in many worker processes.
"""
import json
from dataclasses import dataclass
from pathlib import Path

LAYOUTS_DIR = Path(__file__).resolve().parent / "layouts"


@dataclass(frozen=True)
class Topology:
    """A skeleton layout.

    `parents[v]` is the 0-based parent joint of joint v; a root is its own parent, so its bone is
    zero. `center_joint` and `shoulders` (left, right) drive the NTU-style normalisation: the
    sequence is translated to the centre joint and rotated so that left -> right shoulder is +x.
    `center_joint` may be a tuple of joints, whose mean is the centre (COCO has no joint between
    the hips); `shoulders` may be None, and the rotation step is then skipped.
    """

    name: str
    parents: tuple
    center_joint: int | tuple
    shoulders: tuple | None
    joint_names: tuple = ()

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

# ---------------------------------------------------------------------------------------------
# Layouts as data: layouts/*.json
# ---------------------------------------------------------------------------------------------

class LayoutError(ValueError):
    """A layout file that cannot describe a skeleton; the message names the file and the entry."""


@dataclass(frozen=True)
class SkeletonLayout:
    """What a layout file holds: the joint tree, coordinates per joint (2 or 3) and persons per frame."""

    topology: Topology
    num_coords: int
    num_persons: int
    description: str = ""

    @property
    def num_joints(self):
        return self.topology.num_joints

    def to_dict(self):
        """The layout file's content (joint and parent names), for metadata files and checkpoints."""
        names = self.topology.joint_names or tuple(f"joint_{v}" for v in range(self.num_joints))
        center = self.topology.center_joint
        shoulders = self.topology.shoulders
        return {"name": self.topology.name, "description": self.description, "coords": self.num_coords,
                "persons": self.num_persons,
                "center": names[center] if isinstance(center, int) else [names[v] for v in center],
                "shoulders": None if shoulders is None else [names[v] for v in shoulders],
                "joints": [{"name": name, "parent": names[parent]}
                           for name, parent in zip(names, self.topology.parents)]}


def _joint_index(reference, names, where):
    """A joint given by name or 0-based index -> its index; LayoutError naming `where` otherwise."""
    if isinstance(reference, bool) or not isinstance(reference, (int, str)):
        raise LayoutError(f"{where}: a joint is a name or a 0-based index, got {reference!r}")
    if isinstance(reference, int):
        if not 0 <= reference < len(names):
            raise LayoutError(f"{where}: joint index {reference} is out of range 0..{len(names) - 1}")
        return reference
    if reference not in names:
        raise LayoutError(f"{where}: {reference!r} is not one of the layout's joints")
    return names.index(reference)


def check_tree(parents, where):
    """One root (its own parent) that every joint reaches by following parents; LayoutError otherwise."""
    roots = [v for v, parent in enumerate(parents) if parent == v]
    if len(roots) != 1:
        raise LayoutError(f"{where}: a skeleton is a tree with one root (a joint that is its own parent, or whose "
                          f"parent is null); found {len(roots)} roots")
    for joint in range(len(parents)):
        seen, v = set(), joint
        while parents[v] != v:
            if v in seen:
                raise LayoutError(f"{where}: joint {joint} never reaches the root: the parents form a cycle "
                                  f"through joint {v}")
            seen.add(v)
            v = parents[v]


def layout_from_dict(record, source="layout"):
    """Validate a layout record (the JSON of a layout file) and build it; LayoutError names `source` and the entry."""
    if not isinstance(record, dict):
        raise LayoutError(f"{source}: a layout is a JSON object, got {type(record).__name__}")
    missing = [key for key in ("name", "coords", "persons", "center", "joints") if key not in record]
    if missing:
        raise LayoutError(f"{source}: missing {', '.join(missing)} (see layouts/ntu25.json for a complete layout)")
    joints = record["joints"]
    if not isinstance(joints, list) or len(joints) < 2:
        raise LayoutError(f"{source}: 'joints' must list at least two joints")
    names = []
    for v, joint in enumerate(joints):
        if not isinstance(joint, dict) or not isinstance(joint.get("name"), str) or "parent" not in joint:
            raise LayoutError(f"{source}: joints[{v}] must be an object with a 'name' and a 'parent'")
        if joint["name"] in names:
            raise LayoutError(f"{source}: joints[{v}] repeats the name {joint['name']!r}")
        names.append(joint["name"])
    parents = tuple(v if joint["parent"] is None else _joint_index(joint["parent"], names, f"{source}: joints[{v}]")
                    for v, joint in enumerate(joints))
    check_tree(parents, source)
    coords, persons = record["coords"], record["persons"]
    if coords not in (2, 3) or isinstance(coords, bool):
        raise LayoutError(f"{source}: 'coords' must be 2 (x y) or 3 (x y z), got {coords!r}")
    if not isinstance(persons, int) or isinstance(persons, bool) or persons < 1:
        raise LayoutError(f"{source}: 'persons' must be a whole number >= 1, got {persons!r}")
    center = record["center"]
    if isinstance(center, list):
        if not center:
            raise LayoutError(f"{source}: 'center' lists no joint")
        center = tuple(_joint_index(c, names, f"{source}: center") for c in center)
    else:
        center = _joint_index(center, names, f"{source}: center")
    shoulders = record.get("shoulders")
    if shoulders is not None:
        if not isinstance(shoulders, list) or len(shoulders) != 2:
            raise LayoutError(f"{source}: 'shoulders' must be [left, right] or null (no rotation step)")
        shoulders = tuple(_joint_index(s, names, f"{source}: shoulders") for s in shoulders)
        if shoulders[0] == shoulders[1]:
            raise LayoutError(f"{source}: the two shoulders must be different joints")
    topology = Topology(name=str(record["name"]), parents=parents, center_joint=center, shoulders=shoulders,
                        joint_names=tuple(names))
    return SkeletonLayout(topology, coords, persons, str(record.get("description", "")))


def read_layout(path):
    """A layout file (JSON, format in layouts/README.md) -> SkeletonLayout. A name without a folder or
    suffix (e.g. 'coco17') is one of the shipped layouts in layouts/."""
    given = path = Path(path)
    if path.suffix != ".json" and path.parent == Path(".") and not path.exists():
        path = LAYOUTS_DIR / f"{path}.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.stem for p in LAYOUTS_DIR.glob("*.json")))
        raise LayoutError(f"{given}: no such layout file, nor a shipped layout ({shipped})") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise LayoutError(f"{path}: not a readable JSON layout file ({error})") from None
    return layout_from_dict(record, str(path))


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
