"""Batches from in-memory tensors: a plain index batcher for small data sets (no DataLoader
overhead) and a DataLoader (pinned memory, persistent workers) for large ones."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

# moved to the data layer (cimtool.nn uses them without importing cimtool.train); re-exported here
from cimtool.data.tensors import TensorData, to_float

__all__ = ["LoaderBatcher", "MemoryBatcher", "TensorData", "make_batcher", "to_float"]

MEMORY_LIMIT_BYTES = 2 << 30  # auto: data sets above this go through a DataLoader


class MemoryBatcher:
    """Shuffled mini-batches by indexing tensors already on the training device."""

    def __init__(self, data: TensorData, batch_size: int, device: torch.device) -> None:
        self.x = data.x.to(device)
        self.y = data.y.to(device)
        self.batch_size = batch_size
        self.device = device

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(len(self.y), generator=generator).to(self.device)
        for start in range(0, len(perm), self.batch_size):
            idx = perm[start: start + self.batch_size]
            # index_select: the same rows as x[idx], without advanced indexing's overhead
            # (tests/bench: 22 -> 9 us per feature batch, 71 -> 12 us per 28x28 image batch)
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)


class _EpochOrder(torch.utils.data.Sampler):
    """Yields the permutation the training loop drew for the current epoch."""

    def __init__(self, n: int) -> None:
        self.order = list(range(n))

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class LoaderBatcher:
    """torch DataLoader with pinned memory and persistent workers, for large data sets.

    The epoch's order is drawn from the loop's generator exactly as in MemoryBatcher, so a
    resumed run sees the same batches; the loader's own generator only seeds its workers."""

    def __init__(self, data: TensorData, batch_size: int, device: torch.device) -> None:
        from torch.utils.data import DataLoader, TensorDataset

        workers = min(4, os.cpu_count() or 1)
        self.sampler = _EpochOrder(len(data))
        self.loader = DataLoader(
            TensorDataset(data.x, data.y), batch_size=batch_size, sampler=self.sampler,
            generator=torch.Generator().manual_seed(0), num_workers=workers,
            persistent_workers=workers > 0, pin_memory=device.type == "cuda",
        )
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.order = torch.randperm(len(self.sampler), generator=generator).tolist()
        for xb, yb in self.loader:
            yield (xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True))


def make_batcher(data: TensorData, batch_size: int, device: torch.device, loader: str):
    use_loader = loader == "dataloader" or (loader == "auto" and data.nbytes() > MEMORY_LIMIT_BYTES)
    cls = LoaderBatcher if use_loader else MemoryBatcher
    return cls(data, batch_size, device)
