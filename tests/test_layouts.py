"""Layout files (layouts/*.json): the shipped ones load and match skeleton.py; bad ones fail in one line."""
import json

import pytest

import skeleton
from skeleton import LAYOUTS_DIR, LayoutError, layout_from_dict, read_layout

SHIPPED = sorted(path.stem for path in LAYOUTS_DIR.glob("*.json"))


def test_the_issue_s_layouts_ship():
    assert {"ntu25", "msr20", "kinect_v1_20", "coco17", "openni15"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_layout_is_a_tree_and_round_trips(name):
    layout = read_layout(name)
    assert layout.topology.name == name
    assert layout_from_dict(layout.to_dict()) == layout
    assert read_layout(LAYOUTS_DIR / f"{name}.json") == layout


@pytest.mark.parametrize("name, table", [("ntu25", skeleton.NTU_25), ("msr20", skeleton.MSR_20)])
def test_the_built_in_tables_and_their_files_agree(name, table):
    topology = read_layout(name).topology
    assert (topology.parents, topology.center_joint, topology.shoulders) == \
        (table.parents, table.center_joint, table.shoulders)


def test_sizes_of_the_shipped_layouts():
    sizes = {name: (layout.num_joints, layout.num_coords, layout.num_persons)
             for name in SHIPPED for layout in [read_layout(name)]}
    assert sizes["coco17"] == (17, 2, 2)
    assert sizes["openni15"] == (15, 3, 2)
    assert sizes["kinect_v1_20"] == (20, 3, 1)


def small(**changes):
    record = {"name": "tiny", "coords": 3, "persons": 1, "center": "b", "shoulders": ["a", "c"],
              "joints": [{"name": "a", "parent": "b"}, {"name": "b", "parent": None}, {"name": "c", "parent": 1}]}
    record.update(changes)
    return record


def test_parents_by_name_index_or_null():
    layout = layout_from_dict(small())
    assert layout.topology.parents == (1, 1, 1)
    assert layout.topology.center_joint == 1 and layout.topology.shoulders == (0, 2)


@pytest.mark.parametrize("changes, words", [
    ({"joints": [{"name": "a", "parent": "b"}, {"name": "b", "parent": "a"}, {"name": "c", "parent": "c"}]},
     "cycle"),
    ({"joints": [{"name": "a", "parent": "a"}, {"name": "b", "parent": "b"}, {"name": "c", "parent": "a"}]},
     "found 2 roots"),
    ({"joints": [{"name": "a", "parent": 7}, {"name": "b", "parent": None}, {"name": "c", "parent": "b"}]},
     "joints[0]: joint index 7 is out of range 0..2"),
    ({"joints": [{"name": "a", "parent": "elbow"}, {"name": "b", "parent": None}, {"name": "c", "parent": "b"}]},
     "joints[0]: 'elbow' is not one of the layout's joints"),
    ({"joints": [{"name": "a", "parent": "a"}, {"name": "a", "parent": "a"}]}, "repeats the name 'a'"),
    ({"coords": 4}, "'coords' must be 2"),
    ({"persons": 0}, "'persons' must be"),
    ({"center": "z"}, "center: 'z' is not one of"),
    ({"shoulders": ["a"]}, "'shoulders' must be [left, right]"),
    ({"shoulders": ["a", "a"]}, "different joints"),
])
def test_a_bad_layout_is_one_line_naming_the_file_and_entry(changes, words):
    with pytest.raises(LayoutError) as error:
        layout_from_dict(small(**changes), "mine.json")
    message = str(error.value)
    assert message.startswith("mine.json") and words in message and "\n" not in message


def test_missing_keys_and_unreadable_files(tmp_path):
    with pytest.raises(LayoutError, match="missing coords, persons"):
        layout_from_dict({"name": "x", "center": 0, "joints": []}, "x.json")
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(LayoutError, match="broken.json: not a readable JSON layout file"):
        read_layout(path)
    with pytest.raises(LayoutError, match="no_such_layout: no such layout file, nor a shipped layout .*coco17"):
        read_layout("no_such_layout")
    path.write_text(json.dumps(small(shoulders=None)))
    assert read_layout(path).topology.shoulders is None
