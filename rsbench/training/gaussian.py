"""Gaussian noise augmentation (Cohen et al. 2019): train the base classifier on x + N(0, sigma^2 I).

A base classifier that is accurate under noise makes a smoothed classifier with large
certified radii; this is the recipe of the paper's smoothing models.

Options (`spec.training.options`):
    optimizer      `sgd` (default): SGD with momentum 0.9 and cosine decay, Cohen et al.'s;
                   `adam`: Adam at a constant rate, the certification-aware-attack paper's MNIST
                   and CIFAR-10 recipe (it names no schedule)
    weight_decay   L2 weight decay (default 5e-4)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from rsbench.errors import RsbenchError
from rsbench.progress import each
from rsbench.specs import DefenseSpec
from rsbench.training import seeded_loader

OPTIMIZERS = ("sgd", "adam")


def fit(model: nn.Module, train_set: Dataset, spec: DefenseSpec, device: torch.device) -> None:
    """Minimise the cross-entropy of noisy copies of each batch, one copy per image per step."""
    recipe = spec.training
    options = recipe.options
    unknown = sorted(set(options) - {"optimizer", "weight_decay"})
    if unknown:
        raise RsbenchError(f"unknown Gaussian option(s) {', '.join(unknown)}; known: optimizer, weight_decay")
    name, decay = options.get("optimizer", "sgd"), float(options.get("weight_decay", 5e-4))
    if name not in OPTIMIZERS:
        raise RsbenchError(f"Gaussian option 'optimizer' must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    generator = torch.Generator(device=device).manual_seed(recipe.seed)
    loader = seeded_loader(train_set, recipe.batch_size, recipe.seed)
    if name == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=decay)
        scheduler = None
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs * len(loader))
    model.train()
    for _ in each(range(recipe.epochs), f"train {spec.name}", "epoch"):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            noisy = x + spec.sigma * torch.randn(x.shape, generator=generator, device=device)
            loss = nn.functional.cross_entropy(model(noisy), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    model.eval()
