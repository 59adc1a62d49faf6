"""Everything that talks to other processes lives here.

Launch through `torchrun` (env://): NCCL on GPUs, Gloo on CPU, one node or many. Without a process
group every helper degrades to the single-process answer (rank 0, world size 1, identity gather),
so the model, the loss and the tests run unchanged on one CPU.
"""
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_distributed() else 0


def get_world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main_process():
    return get_rank() == 0


def launched_by_torchrun():
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_kind):
    """Join the process group torchrun describes; return (rank, world_size, local_rank).

    A plain `python script.py` (no torchrun variables) stays single-process: no group, no DDP.
    """
    if not launched_by_torchrun():
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device_kind == "cuda" else "gloo"
    # DistributedDataParallel imports torch._dynamo, and an import of it while a process group exists keeps
    # references to that group which destroy_process_group cannot drop (torch 2.13). The group then outlives
    # cleanup() and its Gloo threads outlive the interpreter: one that frees a tensor during interpreter
    # shutdown aborts the process ("terminate called without an active exception") after a finished run.
    # Imported before the group exists, it holds none, and cleanup() really ends the group.
    import torch._dynamo  # noqa: F401
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    # A generous timeout: rank 0 may be writing a large checkpoint while the others wait.
    timeout = timedelta(minutes=30)
    store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and os.environ.get("GROUP_WORLD_SIZE") == "1":
        # torchrun --max-restarts restarts a failed worker group against the same store, which still
        # holds the dead group's addresses under the keys the new group uses: the new processes may
        # connect to dead ones and the restart fails. On one node the agent's restart count names the
        # attempt for every worker, so it can prefix the keys. (Agents on several nodes may count
        # differently; there, launch with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: a new store per attempt.)
        store = dist.PrefixStore(f"attempt_{os.environ['TORCHELASTIC_RESTART_COUNT']}/", store)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), local_rank


def cleanup():
    if is_distributed():
        dist.destroy_process_group()


def barrier():
    if is_distributed():
        dist.barrier()


def any_process(flag, device):
    """True on every process when `flag` is True on at least one of them (a collective: all must call it)."""
    if get_world_size() == 1:
        return bool(flag)
    flag = torch.tensor([int(flag)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def broadcast_from_main(obj):
    """Rank 0's `obj` (any picklable value) on every process (a collective: all must call it)."""
    if get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...] on every process (a collective: all must call it)."""
    if get_world_size() == 1:
        return [obj]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over processes and keeps our slice.

    Every process computes the same global loss from the gathered tensors, so the sum over
    processes is world_size times the true gradient of our slice; DDP's gradient averaging divides
    that factor out again, giving exactly the single-process gradient of the global batch.
    """

    @staticmethod
    def forward(ctx, x):
        gathered = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, x.contiguous())
        return tuple(gathered)

    @staticmethod
    def backward(ctx, *grads):
        grad = torch.stack(grads)
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def gather_with_grad(x):
    """Concatenate x (B_local, ...) from every process along dim 0, keeping gradients to ours."""
    if get_world_size() == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)  # (B_global, ...)


class _AllReduceWithGrad(torch.autograd.Function):
    """all_reduce(sum) whose backward is again an all_reduce(sum) (the sum's Jacobian is all ones)."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_with_grad(x):
    if get_world_size() == 1:
        return x
    return _AllReduceWithGrad.apply(x)


class SyncBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the global batch across processes.

    For devices torch's own nn.SyncBatchNorm does not run on (the CPU with Gloo; on CUDA that one is
    used, see convert_sync_batchnorm). Per process it reduces [sum, sum of squares, count] in float32
    with a gradient-carrying all_reduce, so it is also exact under fp16 autocast. With one process, or
    in eval mode, it is plain BatchNorm1d.
    """

    def forward(self, x):
        if not (self.training and get_world_size() > 1):
            return super().forward(x)
        x32 = x.float()
        count = torch.full((1,), x.shape[0], dtype=torch.float32, device=x.device)
        stats = all_reduce_with_grad(torch.cat([x32.sum(0), (x32 * x32).sum(0), count]))
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean * mean).clamp_min(0)  # biased, for normalising
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum
            self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
            # Running variance uses the unbiased estimate, as BatchNorm does.
            self.running_var.mul_(1 - momentum).add_(momentum * var.detach() * total / (total - 1))
        y = (x32 - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        return y.to(x.dtype)


def sync_batchnorm_name(device):
    """Which synchronised BatchNorm convert_sync_batchnorm uses on `device`.

    On CUDA torch's own nn.SyncBatchNorm, as released (its fused kernels; ours has not been measured
    against it on a GPU). Elsewhere SyncBatchNorm1d: torch's refuses CPU tensors ("expected input
    tensor to be on GPU or XPU or privateuseone", torch 2.13).
    """
    return "torch.nn.SyncBatchNorm" if torch.device(device).type == "cuda" else "distributed.SyncBatchNorm1d"


def convert_sync_batchnorm(module, device):
    """Replace every BatchNorm1d in `module` with the synchronised BatchNorm for `device`, keeping
    weights and buffers (sync_batchnorm_name says which)."""
    if sync_batchnorm_name(device) == "torch.nn.SyncBatchNorm":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_to_sync_batchnorm1d(module)


def _convert_to_sync_batchnorm1d(module):
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d) and not isinstance(child, SyncBatchNorm1d):
            synced = SyncBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            synced.to(child.weight.device)
            setattr(module, name, synced)
        else:
            _convert_to_sync_batchnorm1d(child)
    return module
