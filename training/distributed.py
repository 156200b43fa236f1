"""Training under ``torchrun``: this process's place in the job and PyTorch's process group (gloo on CPU, NCCL on
GPUs). Run alone, the same code is a single process and nothing is initialised.

    torchrun --nproc-per-node 2 -m itermask.cli train …                         # one machine, 2 processes
    torchrun --nnodes 2 --node-rank R --master-addr HOST --nproc-per-node 4 -m itermask.cli train …
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from itermask._shared import choose_device
from itermask.cohort import local_rank, process_rank
from itermask.errors import ItermaskError


@dataclass(frozen=True)
class Process:
    """Where this process stands: ``rank`` of ``world`` processes, and the device it trains on."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs, figures and the bundle."""
        return self.rank == 0

    @property
    def mixed_precision(self) -> bool:
        """bfloat16 autocast: on GPUs that support it (no loss scaling needed, unlike float16)."""
        return self.device.type == "cuda" and torch.cuda.is_bf16_supported()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over all processes (a copy; no gradient flows through it)."""
        total = tensor.detach().clone()
        if self.world > 1:
            dist.all_reduce(total)
        return total

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def parallel(self, net: torch.nn.Module) -> torch.nn.Module:
        """``net`` on this process's device, wrapped so that its gradients are averaged over processes in backward."""
        net = net.to(self.device)
        if self.world == 1:
            return net
        return DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)


def start(device: str = "auto") -> Process:
    """Join the job ``torchrun`` started (its RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), or run alone.

    ``device``: ``cpu``, ``cuda`` or ``auto`` (a GPU when there is one; each process takes GPU ``LOCAL_RANK``); an
    :class:`~itermask.errors.ItermaskError` for another name, for ``cuda`` without a GPU, and for a RANK,
    WORLD_SIZE or LOCAL_RANK that is not a whole number in range.
    """
    where = choose_device(device, local_rank())
    rank, world = process_rank()
    cuda = where.type == "cuda"
    if cuda:
        if where.index >= torch.cuda.device_count():
            raise ItermaskError(f"LOCAL_RANK {where.index} names a GPU that is not there "
                                f"({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(where)
    if world > 1 and not dist.is_initialized():
        # Waits at barriers can be long (preparing a large cohort's share of the cache): allow two hours, not 30 min.
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
    return Process(rank, world, where)


def stop() -> None:
    """Leave the process group together: a gloo process that tears its group down while a peer is still in its last
    step (the main process saving the checkpoint) can abort ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
