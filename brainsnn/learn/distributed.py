"""Data-parallel training on ``torch.distributed``: process group set-up from ``torchrun``'s
environment, the rank's share of a batch, sums over processes.

One training runs as W processes (``torchrun --nproc_per_node W ...``): every process holds
the whole network (wrapped in ``DistributedDataParallel`` by
:class:`brainsnn.learn.agd.AGDClassifier`), draws the same permutation and augmentation of
each global batch from the same seed, and trains on its share, images ``rank, rank + W, ...``
of the batch (the interleaving of ``torch.utils.data.DistributedSampler``, applied per batch
to the single-process order so that W processes take the steps one process would take).
Gradients are averaged by ``DistributedDataParallel``; only rank 0 writes files.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from brainsnn.engine.devices import torch_device
from brainsnn.errors import TrainingError

__all__ = ["init_from_env", "world_size", "rank", "is_main", "local_device", "share",
           "sum_over_processes", "broadcast_from_main", "barrier"]


def init_from_env(device="cpu"):
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE``, ``RANK``,
    ``MASTER_ADDR``/``MASTER_PORT`` in the environment); returns the world size.

    NCCL for a CUDA ``device`` (each process on GPU ``LOCAL_RANK``), gloo otherwise. Without
    torchrun's variables (a plain ``python`` start) nothing is done and 1 is returned.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or dist.is_initialized():
        return world_size()
    cuda = str(device).startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise TrainingError(f"device {device!r} under torchrun, but torch finds no CUDA GPU")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return world_size()


def world_size():
    """Processes in the training (1 without an initialised process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    """This process's rank (0 without an initialised process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main():
    """True in the process that writes files (rank 0, or the only process)."""
    return rank() == 0


def local_device(device):
    """The torch device of this process: a bare ``'cuda'`` becomes ``cuda:LOCAL_RANK``."""
    device = torch_device(device)
    if device.type == "cuda" and device.index is None and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def share(batch_indices):
    """This rank's images of a global batch: positions ``rank, rank + W, ...``."""
    return batch_indices[rank()::world_size()]


def sum_over_processes(values, device):
    """Sum of a list of numbers over all processes (a list of floats)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def broadcast_from_main(values, device):
    """Rank 0's list of numbers, in every process (decisions that must agree everywhere)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if world_size() > 1:
        dist.broadcast(t, 0)
    return t.tolist()


def barrier():
    if world_size() > 1:
        dist.barrier()
