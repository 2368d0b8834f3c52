"""The Shadow Attack (Ghiasi, Shafahi, Goldstein, ICLR 2020): spoofed certificates for a wrong class.

A certificate only speaks about an l_p ball; an image far outside the ball around x, yet
looking like x, can carry a strong certificate for a wrong class. The attack finds one by
minimising, for a target class t, the defense's own loss toward t at x + δ plus three
penalties that keep δ looking natural while leaving its norm unbounded:

    λ_tv TV(δ)   sum of squared differences between neighbouring pixels (smoothness),
    λ_c  C(δ)    l2 norm of the per-channel means of |δ| (no global colour or brightness shift;
                 TV alone ignores constants); against CROWN-IBP (Section 5) the paper uses the
                 l2 norm of δ itself instead (`c_form: l2`),
    λ_s  Dissim  l2 norm of the squared differences between every pair of channels (no colour
                 change). The 1-channel form optimises one H x W array copied to every channel,
                 so Dissim is 0 by construction.

The loss toward t is the one the defense certifies with: the mean cross-entropy over
Gaussian copies of x + δ for smoothing (Section 3), the ⊥-augmented logits of a GloRo net
and the worst-case logits of the bound the defense certifies with for KW (the convex
relaxation) and CROWN-IBP (the larger of its IBP and CROWN-IBP bounds): the loss these nets
are trained with, as Section 5 uses CROWN-IBP's; and those of a plugin's own
`worst_case_margins` at the run's epsilon (a plugin without one is refused). The attack is
untargeted as in the paper: it runs
every wrong class (or a fixed subset on large label sets) and keeps the image whose
wrong-label certificate, issued by the defense itself on the attack's generator, is largest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from rsbench.attacks.base import Attack, AttackParams, Target, Tracker
from rsbench.defenses.base import Certificate, Defense, provides
from rsbench.defenses.gloro import GloRo
from rsbench.defenses.kw import KW
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError

TargetLoss = Callable[[Callable[[], torch.Tensor]], Iterator[torch.Tensor]]
"""Given a function building the current image x + δ (C, H, W) with its graph, the loss toward the
target as terms that add up to it; each term is back-propagated on its own, so at most one
term's activations are alive at a time."""


def total_variation(delta: torch.Tensor) -> torch.Tensor:
    """Squared anisotropic TV: sum of squared differences of horizontal and vertical neighbours, every channel."""
    return delta.diff(dim=-1).square().sum() + delta.diff(dim=-2).square().sum()


def colour_shift(delta: torch.Tensor) -> torch.Tensor:
    """C(δ): l2 norm of the vector of per-channel means of |δ| (δ of shape (C, H, W))."""
    return delta.abs().mean(dim=(-2, -1)).norm()


def penalty_c(delta: torch.Tensor, form: Literal["channel-means", "l2"]) -> torch.Tensor:
    """C(δ) in the paper's form for the target: Section 3's channel-mean norm, or Section 5's plain l2 norm of δ."""
    return colour_shift(delta) if form == "channel-means" else delta.norm()


def dissimilarity(delta: torch.Tensor) -> torch.Tensor:
    """Dissim(δ): l2 norm of the squared differences of every pair of channels; 0 for one channel."""
    pairs = [(delta[i] - delta[j]).square() for i in range(delta.shape[0]) for j in range(i + 1, delta.shape[0])]
    return torch.stack(pairs).norm() if pairs else delta.new_zeros(())


class ShadowParams(AttackParams):
    """Settings of the Shadow Attack; defaults are the paper's against randomized smoothing (Section 3)."""

    num_noise: int = Field(400, ge=1)
    """Gaussian copies of x + δ whose cross-entropy is averaged at every step (smoothing only)."""
    steps: int = Field(300, ge=1)
    """SGD steps per target class."""
    lr: float = Field(0.1, gt=0)
    """SGD learning rate."""
    lr_cuts: bool = False
    """Divide the step by 3 after half of the steps and by 9 after five sixths of them, as the authors' CROWN-IBP
    code does (the paper gives only the starting rate); off: a constant step."""
    lambda_tv: float = Field(0.3, ge=0)
    """Weight of the total-variation penalty."""
    lambda_c: float = Field(1.0, ge=0)
    """Weight of the penalty C(δ)."""
    c_form: Literal["channel-means", "l2"] = "channel-means"
    """C(δ): the l2 norm of the per-channel means of |δ| (Section 3, against smoothing) or the l2 norm of δ
    (Section 5, against CROWN-IBP), which also penalises a perturbation's size, not only its colour."""
    lambda_s: float = Field(0.5, ge=0)
    """Weight of the channel-dissimilarity penalty (no effect in the 1-channel form)."""
    one_channel: bool = False
    """Optimise one H x W perturbation shared by every channel (a grey perturbation) instead of C of them."""
    init_range: float = Field(0.5, ge=0)
    """δ starts uniform in [-init_range, init_range]: the paper starts from a randomly perturbed copy of x
    without giving the spread; 0.5 spans the whole pixel range."""
    max_targets: int = Field(10, ge=1)
    """Wrong classes tried at most; label sets larger than this are cut to a fixed subset (the paper
    tries 10 classes on ImageNet)."""
    target_seed: int = 0
    """Seed of the fixed order of classes from which that subset is taken."""
    select_n: int | None = Field(None, ge=1)
    """Noise samples of the smoothing certificates that choose among target classes; None: the defense's n."""
    chunk_size: int = Field(400, ge=1)
    """Noisy copies per forward pass: memory does not grow with num_noise."""


class Shadow(Attack):
    """Certificate spoofing: the wrong-class image with the strongest certificate the defense issues itself."""

    Params = ShadowParams
    params: ShadowParams
    plugin_needs = ("worst_case_margins",)

    def run(self, target: Target, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:  # type: ignore[override]
        """Attack every target class, certify each result with the defense, offer the strongest wrong-label one."""
        defense = target.defense
        best: tuple[float, int, torch.Tensor, Certificate] | None = None
        for cls in self.targets(defense, label):
            x_adv, _ = self.descend(defense, x, cls, generator, target.epsilon or 0.0)
            tracker.iterations += self.params.steps
            certificate = self.certify(defense, x_adv, generator)
            spoofed = certificate.prediction is not None and certificate.prediction != label
            score = certificate.radius if spoofed else -1.0
            if best is None or score > best[0]:
                best = (score, cls, x_adv, certificate)
        assert best is not None  # targets() is never empty
        _, cls, x_adv, certificate = best
        tracker.notes["target"] = cls
        tracker.notes["attack_prediction"] = -1 if certificate.prediction is None else certificate.prediction
        tracker.notes["attack_radius"] = certificate.radius
        tracker.offer(x_adv)

    def targets(self, defense: Defense, label: int) -> list[int]:
        """The wrong classes to try: all of them, or the first `max_targets` of a fixed seeded order."""
        num_classes = _num_classes(defense)
        if num_classes - 1 <= self.params.max_targets:
            return [c for c in range(num_classes) if c != label]
        order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(self.params.target_seed))
        return sorted([c for c in order.tolist() if c != label][: self.params.max_targets])

    def certify(self, defense: Defense, x_adv: torch.Tensor, generator: torch.Generator) -> Certificate:
        """The defense's own certificate at x_adv, on the attack's generator."""
        if isinstance(defense, Smoothing) and self.params.select_n is not None:
            return defense.certify(x_adv, n=self.params.select_n, generator=generator)
        return defense.certify(x_adv, generator=generator)

    def descend(
        self, defense: Defense, x: torch.Tensor, cls: int, generator: torch.Generator, epsilon: float = 0.0
    ) -> tuple[torch.Tensor, list[float]]:
        """SGD on δ toward class `cls`; returns x + δ (in [0, 1]) and the loss toward `cls` before every step
        (`epsilon`: the radius of a plugin's bound)."""
        p = self.params
        x = x.detach().to(defense.device)
        low, high = -x, 1 - x  # the box for δ that keeps x + δ in [0, 1]
        if p.one_channel:  # one value per pixel must keep every channel in [0, 1]
            low, high = low.amax(0, keepdim=True), high.amin(0, keepdim=True)
        uniform = torch.rand(low.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
        delta = ((2 * uniform - 1) * p.init_range).clamp(low, high)
        loss = target_loss(defense, cls, p, generator, epsilon)
        history = []
        for step in range(p.steps):
            value, grad = objective_grad(delta, x, loss, p)
            history.append(value)
            delta = (delta - step_size(p, step) * grad).clamp(low, high)
        return (x + delta.expand_as(x)).clamp(0, 1), history


def step_size(params: ShadowParams, step: int) -> float:
    """The learning rate at `step` (counted from 0): constant, or cut to a third and a ninth (`lr_cuts`)."""
    if not params.lr_cuts or step < params.steps / 2:
        return params.lr
    return params.lr / 3 if step < params.steps * 5 / 6 else params.lr / 9


def objective_grad(
    delta: torch.Tensor, x: torch.Tensor, loss: TargetLoss, params: ShadowParams
) -> tuple[float, torch.Tensor]:
    """The loss toward the target at x + δ (its value) and the gradient of loss + penalties with respect to δ.

    δ has one channel or as many as x; it is copied to every channel of x.
    """
    leaf = delta.detach().requires_grad_(True)
    value, grad = 0.0, torch.zeros_like(leaf)
    for term in loss(lambda: x + leaf.expand_as(x)):
        grad += torch.autograd.grad(term, leaf)[0]
        value += float(term.detach())
    full = leaf.expand_as(x)
    penalty = (
        params.lambda_tv * total_variation(full)
        + params.lambda_c * penalty_c(full, params.c_form)
        + params.lambda_s * dissimilarity(full)
    )
    return value, grad + torch.autograd.grad(penalty, leaf)[0]


def target_loss(defense: Defense, cls: int, params: ShadowParams, generator: torch.Generator,
                epsilon: float = 0.0) -> TargetLoss:
    """The defense's own loss toward class `cls`, as terms (see TargetLoss); a plugin's bound at `epsilon`."""
    if isinstance(defense, Smoothing):
        return _noisy_cross_entropy(defense, cls, params, generator)
    if isinstance(defense, GloRo):
        bottom = defense.surrogate()
        return lambda image: iter([_cross_entropy(bottom(image()[None]), cls)])
    if isinstance(defense, KW):  # and CrownIBP, which derives from it: the defense's own bound
        bound = defense.surrogate()

        def worst_case(image: Callable[[], torch.Tensor]) -> Iterator[torch.Tensor]:
            x_adv = image()
            yield _cross_entropy(bound(x_adv[None], torch.tensor([cls], device=x_adv.device)), cls)

        return worst_case
    if provides(defense, "worst_case_margins"):

        def plugin_bound(image: Callable[[], torch.Tensor]) -> Iterator[torch.Tensor]:
            x_adv = image()
            target = torch.tensor([cls], device=x_adv.device)
            yield _cross_entropy(defense.worst_case_margins(x_adv[None], target, epsilon), cls)

        return plugin_bound
    raise RsbenchError(f"the Shadow Attack needs the defense's own differentiable bound; {type(defense).__name__} "
                       "provides none (worst_case_margins)")


def _noisy_cross_entropy(defense: Smoothing, cls: int, params: ShadowParams, generator: torch.Generator) -> TargetLoss:
    """Mean cross-entropy toward `cls` of the base classifier over num_noise fresh Gaussian copies, chunk by chunk."""

    def terms(image: Callable[[], torch.Tensor]) -> Iterator[torch.Tensor]:
        remaining = params.num_noise
        while remaining > 0:
            size = min(params.chunk_size, remaining)
            x_adv = image()
            noise = torch.randn((size, *x_adv.shape), generator=generator, device=generator.device, dtype=x_adv.dtype)
            logits = defense.base_classifier(x_adv[None] + defense.sigma * noise.to(x_adv.device))
            yield _cross_entropy(logits, cls) * (size / params.num_noise)
            remaining -= size

    return terms


def _cross_entropy(logits: torch.Tensor, cls: int) -> torch.Tensor:
    """Mean cross-entropy of a batch of logits toward class `cls`."""
    return F.cross_entropy(logits, torch.full((logits.shape[0],), cls, dtype=torch.long, device=logits.device))


def _num_classes(defense: Defense) -> int:
    count = getattr(defense, "num_classes", None)
    if not isinstance(count, int):
        raise RsbenchError(f"the Shadow Attack needs the defense's number of classes, {type(defense).__name__} has none")
    return count
