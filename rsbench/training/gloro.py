"""GloRo training (Leino, Wang, Fredrikson 2021): cross-entropy over the m + 1 logits with ⊥.

The ⊥ logit grows with ε times the Lipschitz bound, so minimising the loss both widens
margins and shrinks the bound. Starting at the full ε stalls learning (⊥ wins
everywhere), hence ε ramps up linearly; training at a slightly larger ε than the one
certified leaves slack for points near the margin. Each batch takes one power-iteration
step from the stored iterates (they track the slowly changing weights) and uses the
resulting estimates, which are cheap and differentiable; they are run to convergence at
the end, so the saved checkpoint holds converged iterates. Certificates do not use them.

Options (`spec.training.options`):
    epsilon_factor   train at ε × this (default 1.2)
    ramp_fraction    fraction of the steps over which ε grows from 0 (default 0.3)
    power_steps      power-iteration steps per batch (default 1)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from rsbench.defenses.gloro import margin_lipschitz, with_bottom
from rsbench.errors import RsbenchError
from rsbench.lipschitz import (
    converge,
    iterated_layers,
    lipschitz_below,
    lipschitz_layers,
    power_estimate,
    power_step,
)
from rsbench.progress import each
from rsbench.specs import DefenseSpec
from rsbench.training import seeded_loader

OPTIONS = {"epsilon_factor", "ramp_fraction", "power_steps"}


def fit(model: nn.Module, train_set: Dataset, spec: DefenseSpec, device: torch.device) -> None:
    """Adam with cosine decay on the GloRo loss, ε ramped up over the first steps."""
    recipe = spec.training
    if spec.epsilon is None or recipe is None:
        raise RsbenchError(f"defense {spec.name!r} needs epsilon and a training recipe for GloRo training")
    options = recipe.options
    unknown = set(options) - OPTIONS
    if unknown:
        raise RsbenchError(f"unknown GloRo training options {sorted(unknown)}; known: {sorted(OPTIONS)}")
    target = spec.epsilon * float(options.get("epsilon_factor", 1.2))
    steps_per_batch = int(options.get("power_steps", 1))
    layers = lipschitz_layers(model)
    iterated_layers(layers)  # refuse an architecture whose checkpoint would lack the iterates

    def estimate(layer: nn.Module) -> torch.Tensor:
        for _ in range(steps_per_batch):
            power_step(layer)
        return power_estimate(layer)

    loader = seeded_loader(train_set, recipe.batch_size, recipe.seed)
    total = recipe.epochs * len(loader)
    ramp = max(1, round(float(options.get("ramp_fraction", 0.3)) * total))
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    model.train()
    step = 0
    for _ in each(range(recipe.epochs), f"train {spec.name}", "epoch"):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            epsilon = target * min(1.0, step / ramp)
            k = margin_lipschitz(layers[-1].weight, lipschitz_below(layers, estimate))
            loss = nn.functional.cross_entropy(with_bottom(model(x), k, epsilon), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
    model.eval()
    converge(model)
