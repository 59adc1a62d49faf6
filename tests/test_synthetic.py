"""Synthetic NTU raw files (data_gen/synthetic.py): format, determinism, split coverage, learnability."""
import numpy as np
import pytest

from data_gen.ntu_gendata import is_training, parse_name, read_xyz
from data_gen.normalize import normalize_skeletons
from data_gen.synthetic import class_recipe, generate, main, sample_name, skeleton_text, synthesize


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first = generate(tmp_path / "a", num_classes=3, samples_per_class=3, seed=5)
    again = generate(tmp_path / "b", num_classes=3, samples_per_class=3, seed=5)
    other = generate(tmp_path / "c", num_classes=3, samples_per_class=3, seed=6)
    assert [p.name for p in first] == [p.name for p in again] == [p.name for p in other]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(first, again))
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(first, other))


def test_files_parse_and_ids_cover_every_split(tmp_path):
    paths = generate(tmp_path, num_classes=3, samples_per_class=12, seed=0)
    assert len(paths) == len({p.name for p in paths}) == 36
    lengths = set()
    for path in paths:
        sample = parse_name(path)
        assert sample is not None and 1 <= sample.action <= 3
        xyz = read_xyz(path)  # raises on any format error
        assert 40 <= xyz.shape[1] <= 300 and np.abs(xyz).max() < 10
        lengths.add(xyz.shape[1])
    assert len(lengths) > 10  # lengths vary
    for dataset, protocol in [("ntu60", "cross_subject"), ("ntu60", "cross_view"), ("ntu120", "cross_setup")]:
        train = [is_training(parse_name(p), dataset, protocol) for p in paths]
        assert 0 < sum(train) < len(train), (dataset, protocol)


def test_names_are_unique_across_many_samples():
    names = {sample_name(action, index) for action in (1, 60) for index in range(4080)}
    assert len(names) == 2 * 4080


def test_two_person_classes_and_ghost_bodies(tmp_path):
    assert class_recipe(5)["two_person"] and not class_recipe(4)["two_person"]
    name, bodies, present = synthesize(5, 0, seed=0)  # an interaction that also has a ghost
    assert len(bodies) == 3 and present[2].all()
    path = tmp_path / f"{name}.skeleton"
    path.write_text(skeleton_text(bodies, present, [1, 2, 3]))
    xyz = read_xyz(path)  # (C, T, V, 2): the two performers, never the ghost
    last = [bodies[b, -1].T for b in range(3)]  # (C, V) of the last frame, where every body is present
    kept = [next(b for b in range(3) if np.allclose(xyz[:, -1, :, m], last[b], atol=1e-6)) for m in range(2)]
    assert sorted(kept) == [0, 1]


def test_some_samples_start_empty_or_have_a_late_partner():
    starts_empty = late_partner = 0
    for index in range(60):
        _, _, present = synthesize(10, index, seed=0)
        starts_empty += not present[:, 0].any()
        late_partner += len(present) > 1 and present[0, 0] and not present[1, 0]
    assert starts_empty > 0 and late_partner > 0


def features(path, frames=16):
    """Normalised main-body joints at `frames` evenly spaced real frames, flattened."""
    xyz = read_xyz(path)  # (C, T, V, M)
    data = normalize_skeletons(xyz[None])[0]
    index = np.linspace(0, xyz.shape[1] - 1, frames).round().astype(int)
    return data[:, index, :, 0].ravel()


def test_classes_are_learnable_by_nearest_neighbour(tmp_path):
    num_classes, per_class = 6, 8
    paths = generate(tmp_path, num_classes=num_classes, samples_per_class=per_class, seed=1)
    x = np.stack([features(p) for p in paths])
    y = np.array([parse_name(p).label for p in paths])
    distance = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(distance, np.inf)
    accuracy = (y[distance.argmin(1)] == y).mean()  # leave-one-out 1-NN
    assert accuracy > 0.5, f"1-NN accuracy {accuracy:.2f}, chance {1 / num_classes:.2f}"


def test_cli_and_argument_checks(tmp_path, capsys):
    main(["--out_folder", str(tmp_path), "--num_classes", "2", "--samples_per_class", "2", "--seed", "4"])
    assert len(list(tmp_path.glob("*.skeleton"))) == 4
    assert "wrote 4 files" in capsys.readouterr().out
    with pytest.raises(ValueError, match="num_classes"):
        generate(tmp_path, num_classes=0, samples_per_class=1)
    with pytest.raises(ValueError, match="samples_per_class"):
        generate(tmp_path, num_classes=1, samples_per_class=5000)
