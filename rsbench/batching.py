"""How many test images share one pass through the device, chosen from its free memory.

Certifying or attacking a small model one image at a time leaves a GPU idle between small
batches, so the engine hands several images to a worker at once and the defense pushes their
noisy copies through the model together (`count_votes_many`). Every image keeps its own noise
stream drawn in the run's chunks, so the number of images per pass changes speed and memory,
never a record; it is therefore chosen freely: from the device's free memory, or by the user.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")
MAX_IMAGES = 64
"""Upper limit of the automatic choice: beyond it a pass is large enough to keep any device busy."""
MEMORY_SHARE = 0.5
"""Share of the free device memory the automatic choice plans to fill, leaving room for fragmentation."""


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive groups of `size` items (the last one shorter)."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def memory_per_image(model: nn.Module, shape: Sequence[int], copies: int, device: torch.device) -> int:
    """Peak device bytes of a forward and backward pass of `copies` noisy copies of one image (CUDA only)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    x = torch.rand((copies, *shape), device=device, requires_grad=True)
    model(x).logsumexp(dim=1).sum().backward()
    peak = torch.cuda.max_memory_allocated(device) - start
    model.zero_grad(set_to_none=True)
    return max(peak, 1)


def images_per_batch(model: nn.Module, shape: Sequence[int], copies: int, device: torch.device,
                     requested: int | None = None, sharing: int = 1) -> int:
    """Images per pass: `requested` when given; on CUDA, as many as fill MEMORY_SHARE of the free memory, split
    between the `sharing` processes that use the device, with forward-and-backward passes of `copies` copies
    each (attacks need the backward, certification less); on the CPU one, since its per-image loop already
    runs near the limit of its cores."""
    if requested is not None:
        return requested
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(MEMORY_SHARE * free / sharing // memory_per_image(model, shape, copies, device))
    return max(1, min(MAX_IMAGES, fits))
