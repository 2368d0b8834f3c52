"""Layers that rsbench's architectures share, kept apart so that any module can name them."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel (x - mean) / std as the model's first layer; its constants are not parameters."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Arithmetic a smoothing run may certify in: float32, or autocast to bfloat16 or float16."""


class ReducedPrecision(nn.Module):
    """A base classifier run under autocast and/or on channels-last inputs, returning float32 logits.

    Both trade exactness for speed on a GPU, and reduced precision changes the classifier being
    smoothed (its votes near a decision boundary), so a run records which one it used.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32", channels_last: bool = False) -> None:
        super().__init__()
        self.model, self.dtype, self.channels_last = model, PRECISIONS[precision], channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is None:
            return self.model(x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()
