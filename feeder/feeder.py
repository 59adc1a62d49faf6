"""Datasets over one prepared split: memory-mapped, copying only the sample being read.

A split is `{part}_data_joint.npy` (N, C, T, V, M), `{part}_num_frame.npy` (N,) and
`{part}_label.pkl`; see safe_io.py for the checks made when they are opened. The feeders return joint
coordinates only: the model builds bones and motion itself, on the device (skeleton.py).

Randomness. The views of sample `index` in epoch `epoch` come from the numpy Generator seeded with
(seed, epoch, index), so they are a pure function of those three integers:
- DataLoader workers never repeat each other's draws (different indices, different streams), and no
  global RNG (numpy, torch, random) is read or advanced, so no worker_init_fn is needed.
- A run gives the same views whatever num_workers, the batch size, the number of processes, or which
  worker happens to read which sample.
- Exact resume inside an interrupted epoch: build the dataset with the run's `seed`, call
  `set_epoch(epoch)`, rebuild that epoch's sample order (DistributedSampler, or a sampler whose
  torch.Generator is seeded from (seed, epoch), is a pure function of them) and skip the batches
  already done; the rest of the epoch is bit-identical to the uninterrupted run. No data-side RNG
  state has to go into the checkpoint.
The epoch is kept in a shared-memory tensor so that `set_epoch` also reaches workers that already
exist (persistent_workers=True). Call it before iterating over the epoch, as with samplers.
"""
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

import safe_io
from feeder.augmentations import NUM_VIEWS, downstream_view, pretrain_view


class SkeletonSplit(Dataset):
    """The arrays of one split and the read of one checked sample; the feeders below add the views.

    data_path: `{part}_data_joint.npy`; num_frame_path: `{part}_num_frame.npy`; label_path:
    `{part}_label.pkl` or None. Each sample is checked for NaN/Inf when it is read, over the frames
    read (the valid ones); `check_all_finite` also scans the whole file up front, padding included.
    """

    def __init__(self, data_path, num_frame_path, label_path=None, check_all_finite=False):
        self.data_path = Path(data_path)
        self._data = safe_io.open_joint_data(self.data_path)  # (N, C, T, V, M) memory map
        self.num_frames = safe_io.load_frame_counts(num_frame_path, max_frames=self._data.shape[2])  # (N,)
        lengths = [(self.data_path, len(self._data)), (Path(num_frame_path), len(self.num_frames))]
        self.label_path = None if label_path is None else Path(label_path)
        self.names, self.labels = None, None
        if label_path is not None:
            self.names, self.labels = safe_io.load_labels(label_path)  # N str, (N,) int64
            lengths.append((self.label_path, len(self.labels)))
        safe_io.check_same_length(lengths)
        if check_all_finite:
            safe_io.check_all_finite(self._data, self.data_path)

    @property
    def shape(self):
        """(N, C, T, V, M) of the data file."""
        return self._arrays().shape

    def __len__(self):
        return len(self.num_frames)

    def _arrays(self):
        # Reopened lazily in a spawned worker, whose copy of the dataset arrives without the map.
        if self._data is None:
            self._data = safe_io.open_joint_data(self.data_path)
        return self._data

    def __getstate__(self):
        # Pickling a memory map copies the whole array into the pickle; send the path instead.
        state = self.__dict__.copy()
        state["_data"] = None
        return state

    def read(self, index):
        """Copy one sample's real frames out of the map and check them.

        Returns (x, valid, index): x (C, valid, V, M) float32, a fresh array; the padding frames
        after `valid` are never read from disk. `index` comes back normalised to 0..N-1.
        """
        index = range(len(self))[index]  # negative indices wrap, out-of-range ones raise IndexError
        valid = int(self.num_frames[index])
        x = np.array(self._arrays()[index, :, :valid], dtype=np.float32)  # (C, valid, V, M)
        safe_io.check_finite(x, self.data_path, index)
        return x, valid, index


class PretrainDataset(SkeletonSplit):
    """Four independently augmented views of each sample for pretraining.

    Item: a tuple of NUM_VIEWS float32 tensors, each (C, view.out_frames, V, M), drawn by `pretrain_view`
    from np.random.default_rng((seed, epoch, index)); see the module docstring. `view` is the run's
    ViewConfig (options/pretrain.py `view_config`); `seed` a non-negative int, normally the run's seed.
    """

    def __init__(self, data_path, num_frame_path, label_path=None, *, view, seed, check_all_finite=False):
        super().__init__(data_path, num_frame_path, label_path, check_all_finite)
        if seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed}")
        self.view = view
        self.seed = int(seed)
        # Shared memory, so workers started before a set_epoch call still see the new epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self):
        return int(self._epoch)

    def set_epoch(self, epoch):
        """Select the epoch whose views are drawn; call before iterating over it."""
        self._epoch.fill_(epoch)

    def rng(self, index):
        """The Generator behind the views of sample `index` (0..N-1) in the current epoch."""
        return np.random.default_rng((self.seed, self.epoch, index))

    def __getitem__(self, index):
        x, valid, index = self.read(index)
        rng = self.rng(index)
        return tuple(torch.from_numpy(pretrain_view(x, valid, rng, self.view))
                     for _ in range(NUM_VIEWS))  # NUM_VIEWS x (C, out_frames, V, M)


class RawPretrainDataset(SkeletonSplit):
    """Raw samples for pretraining with the views drawn on the device (feeder/batch_augment.py).

    Item: (x, valid): x a float32 tensor (C, T, V, M) with T the file's frame count, holding the
    sample's real frames [0, valid) and zeros after them (the padding on disk is never read), and
    valid an int. Nothing here is random: BatchAugment holds the run's seed, epoch and view settings.
    """

    def __getitem__(self, index):
        x, valid, _ = self.read(index)
        c, t, v, m = self.shape[1:]
        padded = np.zeros((c, t, v, m), dtype=np.float32)
        padded[:, :valid] = x
        return torch.from_numpy(padded), valid  # (C, T, V, M), int


class DownstreamDataset(SkeletonSplit):
    """Samples for linear evaluation and kNN: the whole valid range resampled, nothing random.

    Item: (x, label), x a float32 tensor (C, out_frames, V, M), label an int. Needs the label file.
    out_frames: the clip length of the encoder being evaluated (ViewConfig.out_frames).
    """

    def __init__(self, data_path, num_frame_path, label_path, *, out_frames, check_all_finite=False):
        super().__init__(data_path, num_frame_path, label_path, check_all_finite)
        self.out_frames = out_frames

    def __getitem__(self, index):
        x, valid, index = self.read(index)
        return torch.from_numpy(downstream_view(x, valid, self.out_frames)), int(self.labels[index])
