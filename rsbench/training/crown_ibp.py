"""CROWN-IBP training (Zhang et al., ICLR 2020): cross-entropy on worst-case logits from a mix of two bounds.

Each batch is trained on kappa CE(f(x), y) + (1 - kappa) CE(-J, y), where J lower-bounds every
margin f_y - f_j over the l_inf ball inside [0, 1] (`rsbench.defenses.crown_ibp`) and mixes the
two bounds as beta CROWN-IBP + (1 - beta) IBP. After `warmup_epochs` of natural training
(eps = 0), eps grows linearly to the training radius (the spec's epsilon times
`epsilon_factor`) over `ramp_epochs`, while beta falls from 1 to `final_beta` and kappa from 1
to `final_kappa` in step with it: the tight CROWN-IBP bound steers the start, when IBP alone is
too loose to learn from, and the network ends shaped for the bound the paper verifies with.
Adam at the recipe's rate until the ramp ends, then cosine decay to 0 over the remaining epochs
(the paper decays in steps). When beta is 0 the backward pass is skipped.

Options (`spec.training.options`):
    epsilon_factor  train at epsilon x this (default 1)
    warmup_epochs   natural epochs before the ramp (default 1)
    ramp_epochs     epochs over which eps, beta and kappa move (default: half the epochs)
    final_beta      CROWN-IBP's weight at the end of the ramp (default 0)
    final_kappa     the natural loss's weight at the end of the ramp (default 0)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import Dataset

from rsbench.defenses.crown_ibp import margin_bounds
from rsbench.errors import RsbenchError
from rsbench.progress import each
from rsbench.specs import DefenseSpec
from rsbench.training import seeded_loader

OPTIONS = ("epsilon_factor", "warmup_epochs", "ramp_epochs", "final_beta", "final_kappa")


def schedule(spec: DefenseSpec) -> tuple[float, float, float, float, float]:
    """(training eps, warm-up epochs, ramp epochs, final beta, final kappa), checked."""
    recipe = spec.training
    if spec.epsilon is None or recipe is None:
        raise RsbenchError(f"defense {spec.name!r} needs epsilon and a training recipe for CROWN-IBP training")
    options = recipe.options
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise RsbenchError(f"unknown CROWN-IBP option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    for name, value in options.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RsbenchError(f"CROWN-IBP option {name!r} must be a number, got {value!r}")
    warmup = float(options.get("warmup_epochs", 1))
    ramp = float(options.get("ramp_epochs", recipe.epochs / 2))
    beta, kappa = float(options.get("final_beta", 0.0)), float(options.get("final_kappa", 0.0))
    target = spec.epsilon * float(options.get("epsilon_factor", 1.0))
    if warmup < 0 or ramp <= 0 or warmup + ramp > recipe.epochs or not (0 <= beta <= 1 and 0 <= kappa <= 1) \
            or target <= 0:
        raise RsbenchError("CROWN-IBP options need warmup_epochs >= 0, ramp_epochs > 0, their sum at most epochs, "
                           f"final_beta and final_kappa in [0, 1] and epsilon_factor > 0; got {dict(options)}")
    return target, warmup, ramp, beta, kappa


def fit(model: nn.Module, train_set: Dataset, spec: DefenseSpec, device: torch.device) -> None:
    """Train in place on the CROWN-IBP loss at a linearly growing eps, seeded by the recipe."""
    recipe = spec.training
    target, warmup, ramp, final_beta, final_kappa = schedule(spec)
    loader = seeded_loader(train_set, recipe.batch_size, recipe.seed)
    start, steps = warmup * len(loader), ramp * len(loader)
    decaying = recipe.epochs * len(loader) - (start + steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    model.train()
    step = 0
    for _ in each(range(recipe.epochs), f"train {spec.name} (CROWN-IBP)", "epoch"):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            progress = min(1.0, max(0.0, (step - start) / steps))
            beta, kappa = 1 - progress * (1 - final_beta), 1 - progress * (1 - final_kappa)
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            if progress > 0:
                interval, backward = margin_bounds(model, x, target * progress, y, crown=beta > 0)
                bound = interval if backward is None else beta * backward + (1 - beta) * interval
                loss = kappa * loss + (1 - kappa) * nn.functional.cross_entropy(-bound, y)
            past = step - (start + steps)
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr if past < 0 else recipe.lr * (1 + math.cos(math.pi * past / decaying)) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    model.eval()
