"""The classic attack losses, read on a smoothed classifier's log-frequencies.

Baseline attacks were designed for networks that output logits. The smoothed view
outputs class frequencies instead; their logarithms are the smoothed classifier's
log-probabilities. Every loss below depends on logits only through differences
(cross-entropy through log-softmax, the C-W margin, DeepFool's linearised gaps, DLR's
ratio), and log-softmax differs from logits by a constant per input, so on a plain
network these losses equal their textbook forms while on the view they act on the
smoothed prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rsbench.defenses.smoothed_view import ViewOutput


def scores(out: ViewOutput) -> torch.Tensor:
    """Log of the smoothed frequencies, floored so that a class no noisy copy votes for stays finite."""
    return out.freq.clamp(min=torch.finfo(out.freq.dtype).tiny).log()


def cross_entropy(logits: torch.Tensor, label: int) -> torch.Tensor:
    """Cross-entropy of one score vector against `label` (-log frequency of the label on the view)."""
    return F.cross_entropy(logits.unsqueeze(0), torch.tensor([label], device=logits.device))


def margin(logits: torch.Tensor, label: int) -> torch.Tensor:
    """logits[label] - max of the other logits: positive while `label` is predicted."""
    others = torch.cat([logits[:label], logits[label + 1 :]])
    return logits[label] - others.max()


def dlr(logits: torch.Tensor, label: int) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020): -margin / (z_pi1 - z_pi3); needs three classes.

    Dividing by the gap between the first and third largest logits makes the loss
    invariant to shifting and rescaling the logits, which CE is not.
    """
    if logits.numel() < 3:
        raise ValueError(f"DLR needs at least 3 classes, got {logits.numel()}")
    ordered = logits.sort(descending=True).values
    return -margin(logits, label) / (ordered[0] - ordered[2] + 1e-12)
