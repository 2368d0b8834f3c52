"""The interface every certified defense implements, whatever its kind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rsbench.errors import RsbenchError


@dataclass(frozen=True)
class Certificate:
    """A defense's answer at one input: its label (None = abstain/⊥) and the radius it certifies."""

    prediction: int | None
    """Predicted class, or None when the defense abstains."""
    radius: float
    """Certified radius in the defense's norm; 0.0 when abstaining."""
    p_lower: float | None = None
    """Smoothing only: lower confidence bound on the top class's probability."""


def check_input(x: torch.Tensor) -> None:
    """Refuse inputs that are not finite pixels in [0, 1]: certificates are only meaningful there."""
    if not torch.isfinite(x).all():
        raise RsbenchError("input contains NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise RsbenchError(f"input pixels must lie in [0, 1], got range [{low:.4g}, {high:.4g}]")


class Defense(ABC):
    """A classifier that can abstain and certify its answers.

    `x` is always one input of shape (C, H, W) with pixels in [0, 1]. Randomized
    defenses take a `generator` so that a run is reproducible; deterministic ones ignore it.
    """

    norm: str = "l2"
    """Norm in which radii are certified."""

    @abstractmethod
    def predict(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> int | None:
        """The defense's label at x, or None to abstain."""

    @abstractmethod
    def certify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        """The label at x and the largest radius the defense certifies for it."""

    def certify_many(self, xs: Sequence[torch.Tensor], generators: Sequence[torch.Generator | None]) -> list[Certificate]:
        """`certify` of several inputs, input i with `generators[i]`; defenses that batch them override this."""
        return [self.certify(x, generator=g) for x, g in zip(xs, generators)]

    def certified_at(self, x: torch.Tensor, eps: float, *, generator: torch.Generator | None = None) -> bool:
        """Whether the defense certifies its label at x within radius eps."""
        certificate = self.certify(x, generator=generator)
        return certificate.prediction is not None and certificate.radius >= eps

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Device the model runs on."""

    @abstractmethod
    def to(self, device: torch.device | str) -> Defense:
        """Move the model to a device; returns self."""
