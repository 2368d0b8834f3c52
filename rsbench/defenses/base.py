"""The interface every certified defense implements, whatever its kind, and what each attack family needs from it.

rsbench's goals and attacks reach a defense only through this class, so a certifier rsbench does
not ship runs under them as a plugin (`kind: plugin`, `implementation: MODULE:CLASS`) as soon as it
implements the parts they use:

- every goal: `certify` / `certify_many` (the clean certificates), `num_classes`, `norm`, `device`, `to`;
- evasion of a deterministic defense (`pgd-l2`, `pgd-linf`): `model`, the network whose label the
  certificate protects. The harness counts a point within the budget where `model`'s label differs;
  the certificate promises there is none within its radius;
- degradation, every attack: `certified_at(x, eps)`, the run-time check the attack tries to make fail;
  `degradation-pgd` and `degradation-eps-pgd` ascend `model`'s cross-entropy, `degradation-adaptive`
  the largest entry of `worst_case_margins`;
- spoofing, every attack: `certify` at the attack image, the harness's verdict; `shadow` and
  `shadow-1ch` descend the defense's own bound, `worst_case_margins`, toward the target class.

Smoothing is the one randomized kind: its goals and attacks use its differentiable smoothed view
(`Smoothing.surrogate`) and judge on fresh noise. A plugin is a deterministic certifier: `certify`
gives the same certificate whatever the generator. An attack that needs what a plugin class does
not provide is refused in one line before a run starts (`rsbench.goals.check_attack`).

A certificate must also be sound, which `rsbench.submissions.soundness` tests on the first samples: its label is
`model`'s, repeated calls agree, and no attack finds a point within its radius where `model`'s label
changes. Degradation's upper bound on the false positive rate assumes a monotonic certifier (a
radius r at x implies a radius of at least r - d at every point within d of x), as a Lipschitz
margin, GloRo's and KW's certificates are.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rsbench.errors import RsbenchError

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.hooks import RemovableHandle

    from rsbench.specs import DefenseSpec


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


def check_output(value: object, shape: Sequence[int], subject: str, noun: str, expected: str, *,
                 finite: bool = True) -> torch.Tensor:
    """`value` when it is a floating-point tensor of `shape` (finite unless `finite` is False), else one line saying
    what came back ("`subject` `noun` of shape [5, 7]") and what was `expected`.

    The one check of what a network answers, on every path that reads one (votes, a deterministic model's
    logits, a served defense's answers): a NaN argmax is class 0 and an eleventh logit's vote lands in
    the next sample's counts, so outputs are refused before anything counts them.
    """
    wanted = list(shape)
    if not isinstance(value, torch.Tensor):
        raise RsbenchError(f"{subject} a {type(value).__name__}, not {noun}; {expected}")
    if not value.is_floating_point():
        raise RsbenchError(f"{subject} {str(value.dtype).removeprefix('torch.')} values, not floating-point {noun}; "
                           f"{expected}")
    if list(value.shape) != wanted:
        raise RsbenchError(f"{subject} {noun} of shape {list(value.shape)}; {expected}")
    if finite:
        refuse_nonfinite(int(nonfinite_rows(value)), len(value), subject, noun)
    return value


def nonfinite_rows(value: torch.Tensor) -> torch.Tensor:
    """How many rows (inputs) of `value` hold a NaN or an infinity, as a tensor on its device (nothing read back)."""
    return (~torch.isfinite(value)).reshape(len(value), -1).any(dim=1).sum()


def refuse_nonfinite(rows: int, total: int, subject: str, noun: str) -> None:
    """Refuse in one line when `rows` of `total` inputs got NaN or infinite outputs (see `check_output`)."""
    if rows:
        raise RsbenchError(f"{subject} NaN or infinite {noun} for {rows} of {total} inputs; only finite {noun} "
                           "can be counted")


def check_logits(logits: object, batch: int, num_classes: int, *, finite: bool = True) -> torch.Tensor:
    """`check_output` of a model's answer to `batch` inputs: finite logits of shape [batch, num_classes]."""
    return check_output(logits, (batch, num_classes), "your model returned", "logits",
                        f"the spec says {num_classes} classes", finite=finite)


class LogitsCheck:
    """A forward hook running `check_logits` on every answer of the network a deterministic defense certifies."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, module: nn.Module, inputs: tuple, output: object) -> None:
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        batch = len(x) if x is not None and x.dim() > 0 else len(output) if isinstance(output, torch.Tensor) else 0
        check_logits(output, batch, self.num_classes)


def watch_outputs(model: nn.Module, num_classes: int) -> RemovableHandle | None:
    """Check every answer of `model` from now on (a `LogitsCheck`); None when it is checked already."""
    for hook in model._forward_hooks.values():
        if isinstance(hook, LogitsCheck):
            hook.num_classes = num_classes
            return None
    return model.register_forward_hook(LogitsCheck(num_classes))


class Defense(ABC):
    """A classifier that can abstain and certify its answers.

    `x` is always one input of shape (C, H, W) with pixels in [0, 1]. Randomized
    defenses take a `generator` so that a run is reproducible; deterministic ones ignore it.
    """

    norm: str = "l2"
    """Norm in which radii are certified."""
    num_classes: int
    """Number of classes the defense chooses among."""
    model: nn.Module
    """Deterministic defenses: the network whose label the certificate protects, mapping (B, C, H, W) inputs in
    [0, 1] to (B, num_classes) logits; the deterministic attacks differentiate it."""

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

    def worst_case_margins(self, x: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Optional, differentiable in x: for inputs (B, C, H, W) and labels (B,), a (B, num_classes) upper bound on
        logit_j - logit_label over the epsilon-ball around each input, 0 at the label; the label is certified within
        epsilon when every other entry is negative. The Shadow Attack and adaptive degradation need it."""
        raise RsbenchError(f"{type(self).__name__} provides no differentiable bound (worst_case_margins)")

    @classmethod
    def from_spec(cls, spec: DefenseSpec, model: nn.Module) -> Defense:
        """A plugin's constructor from its registry spec and its loaded model (`kind: plugin` needs it)."""
        raise RsbenchError(f"{cls.__name__} cannot be built from a spec: it defines no from_spec(spec, model)")

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Device the model runs on."""

    @abstractmethod
    def to(self, device: torch.device | str) -> Defense:
        """Move the model to a device; returns self."""


def provides(defense: type[Defense] | Defense, method: str) -> bool:
    """Whether a defense class overrides one of the interface's optional methods (`worst_case_margins`,
    `from_spec`)."""
    cls = defense if isinstance(defense, type) else type(defense)
    return inspect.getattr_static(cls, method, None) is not inspect.getattr_static(Defense, method)
