"""Gaussian read noise in two seeded streams, drawn side by side on the CPU.

torch's CPU ``normal_`` runs on one thread (its generator is sequential), and read noise is one
draw per column current per read: on a 2-core machine it is the largest single cost of a noisy
array pass. Every chip therefore has two generators; a large draw fills its first half from one
and its second half from the other, on two threads when torch may use more than one (the split
is the same either way, so the numbers do not depend on the thread count).
"""

from __future__ import annotations

import threading

import torch

SPLIT_MIN = 1 << 18  # draws smaller than this come from the first stream only (a thread costs ~0.1 ms)


def streams(gen: torch.Generator) -> tuple[torch.Generator, torch.Generator]:
    """The two noise streams of a chip: ``gen`` and a generator seeded from it."""
    second = torch.Generator(gen.device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen,
                                                                       device=gen.device)))
    return gen, second


def randn_like(like: torch.Tensor, pair: tuple[torch.Generator, torch.Generator]) -> torch.Tensor:
    """Standard normal numbers in the shape and memory layout of ``like`` (a dense tensor, e.g. a
    channels-last one), from a pair of streams (see the module docstring)."""
    flat = torch.empty(like.numel(), device=like.device)
    if flat.numel() < SPLIT_MIN:
        flat.normal_(generator=pair[0])
    else:
        half = flat.numel() // 2
        if flat.device.type != "cpu" or torch.get_num_threads() < 2:
            flat[:half].normal_(generator=pair[0])
            flat[half:].normal_(generator=pair[1])
        else:
            worker = threading.Thread(target=flat[half:].normal_, kwargs={"generator": pair[1]})
            worker.start()
            flat[:half].normal_(generator=pair[0])
            worker.join()
    span = sum((size - 1) * stride for size, stride in zip(like.shape, like.stride(), strict=True))
    dense = span + 1 == like.numel()
    return flat.as_strided(like.shape, like.stride()) if dense else flat.view(like.shape)
