"""feeder/batches.py: the released sample order and its partial last batch."""
import pytest
import torch
from torch.utils.data import DistributedSampler

from feeder.batches import EpochBatches, folds_single_sample, step_sizes


@pytest.mark.parametrize("samples, batch, world, sizes", [
    (16, 4, 1, [4, 4, 4, 4]),            # divides: no partial batch
    (200, 32, 1, [32] * 6 + [8]),          # the demo set: 8 samples that drop_last would lose
    (65, 32, 1, [32, 33]),                 # a lone last sample joins the step before
    (1, 32, 1, [1]),                       # a single step is never folded
    (17, 8, 2, [8, 8, 1]),                 # two processes: the last global batch holds 2, kept as it is
])
def test_step_sizes(samples, batch, world, sizes):
    assert step_sizes(samples, batch, world) == sizes
    assert sum(sizes) == samples
    assert folds_single_sample(samples, batch, world) == (len(sizes) < -(-samples // batch))


def test_batches_follow_the_released_sampler_whatever_the_run_seed():
    # The released loader: DistributedSampler(shuffle=True), default seed 0, no drop_last.
    dataset = list(range(23))
    batches = EpochBatches(dataset, batch_size=4, world_size=2, rank=1)
    batches.set_epoch(3)
    released = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True)
    released.set_epoch(3)
    expected = list(released)
    assert [i for batch in batches for i in batch] == expected
    assert [len(batch) for batch in batches] == [4, 4, 4]
    assert list(torch.utils.data.BatchSampler(expected, 4, drop_last=False)) == list(batches)


def test_processes_share_the_step_count_and_every_sample_is_seen():
    dataset = list(range(23))
    ranks = [EpochBatches(dataset, batch_size=4, world_size=3, rank=r) for r in range(3)]
    assert len({len(b) for b in ranks}) == 1
    seen = {i for b in ranks for batch in b for i in batch}
    assert seen == set(dataset)  # padded with repeats to 24, but nothing is left out


def test_a_first_step_leaves_out_the_steps_an_interrupted_epoch_took():
    dataset = list(range(23))
    batches = EpochBatches(dataset, batch_size=4, world_size=1)
    batches.set_epoch(3)
    whole = list(batches)
    batches.set_epoch(3, first_step=2)
    assert list(batches) == whole[2:] and len(batches) == len(whole) - 2 and batches.steps_per_epoch == len(whole)
    batches.set_epoch(4)  # the next epoch is whole again
    assert len(list(batches)) == len(whole) == len(batches)
    with pytest.raises(ValueError, match="outside an epoch of 6 steps"):
        batches.set_epoch(3, first_step=7)
