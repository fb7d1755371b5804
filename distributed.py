"""Many processes (torchrun) for train.py: the process group, gradient averaging, each process's
share of a global batch. On one process: rank 0 of 1, nothing to average, every batch whole.
"""

import os

import torch
import torch.distributed as dist

from data import EpochBatches


def setup_distributed(args):
    """(rank, world size, device). Under torchrun: one process group, NCCL on CUDA, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, torch.device(args.device)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def average_gradients(params, world_size: int):
    """What DDP does after backward, in one all-reduce: every process ends with the mean gradient
    (the gradient of the global-batch loss, since the loss is each process's share)."""
    if world_size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads]).div_(world_size)
    dist.all_reduce(flat)
    for grad, average in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(average.view_as(grad))


def average_over_processes(values: torch.Tensor, world_size: int) -> torch.Tensor:
    """The mean of `values` over processes (the global-batch loss terms, so all processes stop together)."""
    if world_size > 1:
        dist.all_reduce(values.div_(world_size))
    return values


class RankShard(torch.utils.data.Sampler):
    """This process's contiguous block of every global batch: rank r of W takes rows r*b..(r+1)*b-1,
    the order in which loss.gather_features concatenates features (positives at r*b + i)."""

    def __init__(self, batches: EpochBatches, rank: int, world_size: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self):
        for batch in self.batches:
            block = len(batch) // self.world_size
            yield batch[self.rank * block:(self.rank + 1) * block]
