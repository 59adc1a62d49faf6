"""Feeders on tiny splits written to a temporary folder: items, seeding with DataLoader workers, checks."""
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from dataset import write_split
from feeder import DownstreamDataset, PretrainDataset
from feeder.augmentations import RELEASED_VIEW, downstream_view
from safe_io import DataFileError

N, T, V, M = 6, 90, 25, 2


def make_split(folder, data=None, num_frames=None, labels=None, part="train"):
    """Write a split of N random samples (or the given arrays); returns its three paths."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((N, 3, T, V, M)).astype(np.float32) if data is None else data
    num_frames = np.array([90, 64, 30, 75, 1, 50])[:len(data)] if num_frames is None else num_frames
    labels = list(range(len(data))) if labels is None else labels
    write_split(folder, part, data, num_frames, [f"s{i}" for i in range(len(labels))], labels)
    return [folder / f"{part}_{name}" for name in ("data_joint.npy", "num_frame.npy", "label.pkl")]


def identical_samples(folder):
    """A split whose N samples are one and the same, so any difference between items is the draws'."""
    one = np.random.default_rng(1).standard_normal((1, 3, T, V, M)).astype(np.float32)
    return make_split(folder, np.repeat(one, N, axis=0), np.full(N, 80))


def batches(dataset, **loader_args):
    """Every batch of one pass, as a list of numpy arrays per batch."""
    return [[np.asarray(t) for t in batch] for batch in DataLoader(dataset, **loader_args)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


class WithWorkerId(Dataset):
    """Each item paired with the id of the worker process that produced it."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index], get_worker_info().id


class GeneratorInConstructor(Dataset):
    """The classic mistake: one Generator made up front is copied into every worker."""

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.rng.random(), get_worker_info().id


# ----------------------------------------------------------------------------- items

def test_pretrain_item_is_four_independent_views(tmp_path):
    views = PretrainDataset(*make_split(tmp_path), view=RELEASED_VIEW, seed=0)[0]
    assert len(views) == 4
    for view in views:
        assert view.shape == (3, 64, V, M) and view.dtype == torch.float32
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(views[i], views[j])


def test_views_are_a_function_of_seed_epoch_and_index(tmp_path):
    paths = identical_samples(tmp_path)
    first = PretrainDataset(*paths, view=RELEASED_VIEW, seed=3)
    again = PretrainDataset(*paths, view=RELEASED_VIEW, seed=3)
    other_seed = PretrainDataset(*paths, view=RELEASED_VIEW, seed=4)
    for a, b in zip(first[2], again[2]):
        assert torch.equal(a, b)
    assert not torch.equal(first[2][0], first[1][0])       # other index, same data
    assert not torch.equal(first[2][0], other_seed[2][0])  # other seed
    again.set_epoch(1)
    assert again.epoch == 1
    assert not torch.equal(first[2][0], again[2][0])       # other epoch
    assert torch.equal(first[-4][0], first[2][0])          # negative indices name the same sample


def test_downstream_item_is_the_whole_sequence_resampled(tmp_path):
    paths = make_split(tmp_path)
    split = DownstreamDataset(*paths, out_frames=64)
    data = np.load(paths[0])
    for index, valid in [(0, 90), (2, 30), (4, 1)]:
        x, label = split[index]
        assert x.dtype == torch.float32 and label == index
        np.testing.assert_array_equal(x.numpy(), downstream_view(data[index], valid, 64))


def test_padding_frames_are_never_read(tmp_path):
    data = np.random.default_rng(0).standard_normal((N, 3, T, V, M)).astype(np.float32)
    data[:, :, 30:] = np.nan  # sample 2 has 30 real frames
    split = PretrainDataset(*make_split(tmp_path, data), view=RELEASED_VIEW, seed=0)
    x, valid, _ = split.read(2)
    assert valid == 30 and x.shape == (3, 30, V, M) and not isinstance(x, np.memmap)
    assert all(torch.isfinite(view).all() for view in split[2])


def test_pickled_dataset_carries_paths_not_arrays(tmp_path):
    # Spawned workers receive the dataset pickled; the memory map must not travel with it.
    split = PretrainDataset(*make_split(tmp_path), view=RELEASED_VIEW, seed=5)
    split.set_epoch(2)
    clone = pickle.loads(pickle.dumps(split))
    assert len(pickle.dumps(split)) < 10_000 < np.load(split.data_path).nbytes
    assert clone.epoch == 2
    for a, b in zip(split[3], clone[3]):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- DataLoader workers

def test_a_generator_made_up_front_repeats_across_workers():
    # The failure our seeding avoids: both workers start from copies of the same Generator.
    (draw0, worker0), (draw1, worker1) = [(d.item(), w.item()) for d, w in
                                          DataLoader(GeneratorInConstructor(), num_workers=2)][:2]
    assert {worker0, worker1} == {0, 1}
    assert draw0 == draw1


def test_workers_never_draw_the_same_augmentations(tmp_path):
    split = WithWorkerId(PretrainDataset(*identical_samples(tmp_path), view=RELEASED_VIEW, seed=0))
    items = list(DataLoader(split, num_workers=2, batch_size=1))
    assert {worker.item() for _, worker in items} == {0, 1}
    views = [view[0].numpy() for item, _ in items for view in item]  # N samples x 4 views
    assert len({v.tobytes() for v in views}) == 4 * N


def test_seeded_runs_give_identical_batches_whatever_the_workers(tmp_path):
    paths = make_split(tmp_path)

    def run(num_workers):
        return batches(PretrainDataset(*paths, view=RELEASED_VIEW, seed=11), batch_size=4, shuffle=True,
                       num_workers=num_workers, generator=torch.Generator().manual_seed(11))

    two_workers = run(2)
    assert_same_batches(two_workers, run(2))
    assert_same_batches(two_workers, run(0))


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_set_epoch_reaches_persistent_workers(tmp_path, start_method):
    # spawn also checks that a worker reopens the memory map and shares the epoch with the parent.
    split = PretrainDataset(*make_split(tmp_path), view=RELEASED_VIEW, seed=0)
    loader = DataLoader(split, batch_size=3, num_workers=2, persistent_workers=True,
                        multiprocessing_context=start_method)
    epoch0 = [[np.asarray(t) for t in batch] for batch in loader]
    split.set_epoch(1)
    epoch1 = [[np.asarray(t) for t in batch] for batch in loader]
    assert not np.array_equal(epoch0[0][0], epoch1[0][0])
    fresh = PretrainDataset(*make_split(tmp_path), view=RELEASED_VIEW, seed=0)
    fresh.set_epoch(1)
    assert_same_batches(epoch1, batches(fresh, batch_size=3))


def test_resumed_epoch_continues_with_the_same_batches(tmp_path):
    # The recipe of feeder.py: same seed, set_epoch, same sample order, skip the batches done.
    paths, seed, epoch, done = make_split(tmp_path), 7, 3, 2
    order = torch.randperm(N, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
    uninterrupted = PretrainDataset(*paths, view=RELEASED_VIEW, seed=seed)
    uninterrupted.set_epoch(epoch)
    full = batches(uninterrupted, batch_size=2, sampler=order, num_workers=2)
    resumed = PretrainDataset(*paths, view=RELEASED_VIEW, seed=seed)
    resumed.set_epoch(epoch)
    assert_same_batches(full[done:], batches(resumed, batch_size=2, sampler=order[2 * done:], num_workers=2))


# ----------------------------------------------------------------------------- checks on open and read

def test_disagreeing_sample_counts_name_both_files(tmp_path):
    data_path, frames_path, label_path = make_split(tmp_path)
    np.save(frames_path, np.full(N - 1, 10))
    with pytest.raises(DataFileError, match="sample counts disagree") as error:
        PretrainDataset(data_path, frames_path, view=RELEASED_VIEW, seed=0)
    assert f"{data_path} has {N}" in str(error.value) and f"{frames_path} has {N - 1}" in str(error.value)
    np.save(frames_path, np.full(N, 10))
    with open(label_path, "wb") as f:
        pickle.dump((["a"], [0]), f)
    with pytest.raises(DataFileError, match=f"{label_path} has 1"):
        DownstreamDataset(data_path, frames_path, label_path, out_frames=64)


def test_frame_count_longer_than_the_data_is_refused(tmp_path):
    paths = make_split(tmp_path, num_frames=np.array([90, 64, 91, 75, 1, 50]))
    with pytest.raises(DataFileError, match="outside 1..90, first at sample 2") as error:
        DownstreamDataset(*paths, out_frames=64)
    assert str(error.value).startswith(str(paths[1]))


def test_nan_sample_fails_when_read_or_on_a_full_check(tmp_path):
    data = np.random.default_rng(0).standard_normal((N, 3, T, V, M)).astype(np.float32)
    data[3, 1, 10, 4, 0] = np.nan
    paths = make_split(tmp_path, data)
    split = DownstreamDataset(*paths, out_frames=64)
    split[2]  # other samples stay readable
    with pytest.raises(DataFileError, match="sample 3 contains NaN or Inf") as error:
        split[3]
    assert str(error.value).startswith(str(paths[0]))
    with pytest.raises(DataFileError, match=r"first ones: \[3\]"):
        PretrainDataset(*paths, view=RELEASED_VIEW, seed=0, check_all_finite=True)
