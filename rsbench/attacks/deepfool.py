"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016), multiclass l2.

At each iterate the smoothed classifier is linearised: for every candidate class k the
gap f_k = z_k - z_y of log-frequencies (`rsbench.attacks.losses`) and its gradient w_k
give the distance |f_k| / ||w_k|| to k's linearised boundary. DeepFool steps to the
nearest one (plus 1e-4), accumulates the steps in r, and evaluates x + (1 + overshoot) r,
clipped to [0, 1]. On a linear classifier the first step lands on the exact
minimum-norm boundary point.

All gaps of one iterate are differentiated on the same noise draw, so they linearise
one function rather than K independently noisy ones. The loop ends when the tracker
confirms an iterate: later iterates only move further out, so could not be smaller.
With `stop_on_flip` it ends instead where classic DeepFool does, at the first iterate
whose smoothed prediction is no longer the label, confirmed or not.
"""

from __future__ import annotations

import torch
from pydantic import Field

from rsbench.attacks.base import Attack, Tracker, ViewParams
from rsbench.attacks.losses import scores
from rsbench.attacks.steps import TINY
from rsbench.defenses.smoothed_view import SmoothedView

STEP_SLACK = 1e-4
"""Added to every step length so that an iterate on a boundary still crosses it."""


class DeepFoolParams(ViewParams):
    """Appendix C's settings, plus the classes the linearisation considers."""

    iterations: int = Field(100, ge=1)
    """Largest number of linearisation steps (the paper's 100)."""
    overshoot: float = Field(0.02, ge=0)
    """The accumulated perturbation is scaled by 1 + overshoot (the paper's 0.02)."""
    candidates: int = Field(10, ge=2)
    """Classes linearised: the label and the top others at the clean input (DeepFool's reference uses 10)."""
    stop_on_flip: bool = False
    """Classic DeepFool's stopping rule: stop at the first iterate whose smoothed prediction (the argmax of the
    view's frequencies on the noise of the linearisation at that iterate) is not the label. Every iterate is
    still offered to the tracker, so the harness judges it as any other candidate; False keeps stepping until
    the tracker confirms one, which a smoothed classifier often needs well beyond the first flip."""


class DeepFool(Attack):
    """Steps to the nearest linearised boundary of the smoothed classifier until the harness confirms."""

    Params = DeepFoolParams
    kinds = ("smoothing",)
    params: DeepFoolParams

    def run(self, view: SmoothedView, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:
        p = self.params
        x = x.to(view.device)
        with torch.no_grad():
            clean = scores(view.bounds(x, generator))
        others = [k for k in clean.argsort(descending=True).tolist() if k != label][: p.candidates - 1]
        total = torch.zeros_like(x)
        x_adv = x
        for step in range(p.iterations):
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
            nearest, direction = float("inf"), None
            for k in others:
                same_noise = torch.Generator(device=generator.device).manual_seed(seed)
                gap, output, grad = view.grad(x_adv, lambda out, _: scores(out)[k] - scores(out)[label], same_noise)
                if p.stop_on_flip and step > 0 and output.top != label:
                    return  # the last iterate flipped the prediction: it was offered, and classic DeepFool ends
                norm = float(grad.norm(p=2))
                if norm > TINY and abs(gap) / norm < nearest:
                    nearest, direction = abs(gap) / norm, grad / norm
            if direction is None:
                return  # every gradient vanished: no boundary to step towards
            total = total + (nearest + STEP_SLACK) * direction
            x_adv = (x + (1 + p.overshoot) * total).clamp(0.0, 1.0)
            tracker.iterations += 1
            if tracker.offer(x_adv):
                return
