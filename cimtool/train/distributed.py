"""Training in several processes under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m cimtool train-ann …`` starts N copies of the command; each reads
its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins
one process group: ``gloo`` on CPU, ``nccl`` on CUDA (one GPU per process, ``cuda:LOCAL_RANK``).

How the run stays the single-process run (https://pytorch.org/docs/stable/notes/ddp.html):

- **Batches**: every rank draws the epoch's seeded order and augmentation exactly as one process
  would and takes rows ``rank::N`` of each global batch. Gradients are averaged across ranks, so
  each rank scales its loss by ``N × rows / batch`` and a step sees the gradient of the whole
  batch (batch size and learning rate keep their single-process meaning).
- **What differs**: BatchNorm normalises with each rank's share of the batch (as DDP does without
  SyncBatchNorm) and sums are reduced in another order, so figures agree to rounding, not to the
  bit. After every epoch the BN running statistics of rank 0 are sent to the others, so that all
  ranks validate (and choose the best epoch) alike.
- **Metrics** (train loss, train accuracy) are summed across ranks; validation runs on every rank
  (the same model and data: the same figures).
- **Writing**: only rank 0 writes checkpoints and the artifact. ``--resume``: rank 0 reads the
  checkpoint and sends it to the others.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Rank 0 writes checkpoints, artifacts and the terminal's progress."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch."""
        return batch[self.rank:: self.world] if self.active else batch

    def loss_scale(self, rows: int, batch: int) -> float:
        """Factor on this rank's mean loss so that averaging gradients over ranks gives the batch's."""
        return self.world * rows / batch

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def from_rank0(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled between our own processes, never from a file)."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BN running statistics) on every rank."""
        if self.active:
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def wrap(self, model: nn.Module, device: torch.device, unused_parameters: bool) -> nn.Module:
        """The model as it trains: DDP across ranks, itself in one process."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # images arrive channels_last: a 1-channel conv's weight gradient then has other (equally
        # valid) strides than DDP's bucket, which costs one copy, not correctness
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                       find_unused_parameters=unused_parameters)


SINGLE = Ranks()


def launched() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group(device: torch.device):
    """(ranks, this rank's device) for the duration of a stage; one process: (SINGLE, device)."""
    if not launched():
        yield SINGLE, device
        return
    import torch.distributed as dist

    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield ranks, device
    finally:
        dist.destroy_process_group()
