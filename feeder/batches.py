"""The pretraining batches of an epoch: the released sample order, with its partial last batch.

The released loader is a DistributedSampler(shuffle=True) with its default seed 0, whatever the
run's --seed, and a DataLoader without drop_last. So every epoch takes ceil(N / world / batch) steps
per process and the last one is smaller. The sampler pads the dataset (repeating its first indices
of the shuffled order) to a multiple of the process count, so every process holds the same number
of samples and every process's last batch has the same size; the projections gathered for the loss
are those of the global batch.

One case the released code cannot run: a last global batch of a single sample (one process and
N % batch == 1). The variance term of the loss (unbiased, over the batch) is undefined for one
sample and BatchNorm refuses it in training mode. That sample then joins the previous step, whose
batch is one larger; the epoch still sees every sample once (`step_sizes`).
"""
from torch.utils.data import DistributedSampler, Sampler

SAMPLE_ORDER_SEED = 0  # the released DistributedSampler's default seed; --seed does not change it


def step_sizes(samples_per_process, batch_size, world_size=1):
    """The per-process batch size of every step of an epoch.

    samples_per_process: what the sampler hands each process (the padded N / world_size);
    batch_size: the per-process batch. Full batches, then the partial remainder, which joins the
    step before it when the global last batch would hold a single sample (see the module docstring).
    """
    if samples_per_process < 1 or batch_size < 1:
        raise ValueError(f"need at least one sample and a batch of at least one, got "
                         f"{samples_per_process} samples and batch {batch_size}")
    full, last = divmod(samples_per_process, batch_size)
    sizes = [batch_size] * full + ([last] if last else [])
    if len(sizes) > 1 and sizes[-1] * world_size == 1:
        sizes[-2:] = [sizes[-2] + 1]
    return sizes


def folds_single_sample(samples_per_process, batch_size, world_size=1):
    """Whether `step_sizes` moves a lone last sample into the step before it (one step fewer than batches)."""
    return len(step_sizes(samples_per_process, batch_size, world_size)) < -(-samples_per_process // batch_size)


class EpochBatches(Sampler):
    """Batch sampler over a DistributedSampler: the released order, split by `step_sizes`.

    Call `set_epoch(epoch)` before each epoch, as with the DistributedSampler it wraps; the batches
    are then a pure function of (epoch, rank, world size, batch size). `set_epoch(epoch, first_step)`
    leaves out the epoch's first steps: a run resumed inside an epoch takes exactly the steps it had left.
    """

    def __init__(self, dataset, batch_size, world_size=1, rank=0):
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=SAMPLE_ORDER_SEED, drop_last=False)
        self.sizes = step_sizes(self.sampler.num_samples, batch_size, world_size)
        self.first_step = 0

    def set_epoch(self, epoch, first_step=0):
        if not 0 <= first_step <= len(self.sizes):
            raise ValueError(f"first step {first_step} is outside an epoch of {len(self.sizes)} steps")
        self.sampler.set_epoch(epoch)
        self.first_step = first_step

    @property
    def steps_per_epoch(self):
        return len(self.sizes)

    def __len__(self):
        return len(self.sizes) - self.first_step  # the steps this pass yields

    def __iter__(self):
        indices = list(self.sampler)
        start = sum(self.sizes[:self.first_step])
        for size in self.sizes[self.first_step:]:
            yield indices[start:start + size]
            start += size

