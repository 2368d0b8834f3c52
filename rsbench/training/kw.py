"""Wong & Kolter robust training: cross-entropy on the worst-case logits of the dual bound.

The loss is cross-entropy over -J, where J_j lower-bounds f_y - f_j over the eps-ball
(`rsbench.defenses.kw.margin_lower_bounds`); it upper-bounds the worst-case
cross-entropy within the ball, and is small only where every margin is certified.
Starting at the full eps leaves almost every ReLU unstable and the bound so loose that
learning stalls, so eps grows linearly from `epsilon_start` over the first
`warmup_epochs` (Wong & Kolter also start small). Adam with cosine decay.

Options (`spec.training.options`):
    epsilon_start   eps of the first batch (default 0.001)
    warmup_epochs   epochs over which eps reaches the spec's epsilon (default: half the epochs)
    box             keep the ball inside [0, 1] while training (default false)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from rsbench.defenses.kw import margin_lower_bounds, supported_layers
from rsbench.errors import RsbenchError
from rsbench.progress import bar
from rsbench.specs import DefenseSpec
from rsbench.training import seeded_loader

OPTIONS = ("epsilon_start", "warmup_epochs", "box")


def fit(model: nn.Module, train_set: Dataset, spec: DefenseSpec, device: torch.device) -> None:
    """Train in place on the robust cross-entropy at a linearly growing eps, seeded by the recipe."""
    recipe = spec.training
    if spec.epsilon is None or recipe is None:
        raise RsbenchError(f"defense {spec.name!r} needs epsilon and a training recipe for KW training")
    unknown = sorted(set(recipe.options) - set(OPTIONS))
    if unknown:
        raise RsbenchError(f"unknown KW option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    start = float(recipe.options.get("epsilon_start", 0.001))
    warmup = float(recipe.options.get("warmup_epochs", recipe.epochs / 2))
    box = bool(recipe.options.get("box", False))
    if not 0 < start <= spec.epsilon or not 0 <= warmup <= recipe.epochs:
        raise RsbenchError(
            f"KW options need 0 < epsilon_start <= epsilon and 0 <= warmup_epochs <= epochs, "
            f"got {start!r} and {warmup!r}"
        )
    supported_layers(model)
    loader = seeded_loader(train_set, recipe.batch_size, recipe.seed)
    ramp = max(1.0, warmup * len(loader))
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs * len(loader))
    model.train()
    step = 0
    with bar(recipe.epochs, f"train {spec.name}", "epoch") as progress:
        for _ in range(recipe.epochs):
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                epsilon = start + (spec.epsilon - start) * min(1.0, step / ramp)
                loss = nn.functional.cross_entropy(-margin_lower_bounds(model, x, epsilon, y, box=box), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
            progress.set_postfix(epsilon=f"{epsilon:.4f}", loss=f"{loss.item():.3f}", refresh=False)
            progress.update(1)
    model.eval()
