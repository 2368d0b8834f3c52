"""Gaussian noise augmentation (Cohen et al. 2019): train the base classifier on x + N(0, sigma^2 I).

A base classifier that is accurate under noise makes a smoothed classifier with large
certified radii; this is the recipe of the paper's smoothing models.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from rsbench.progress import each
from rsbench.specs import DefenseSpec
from rsbench.training import seeded_loader


def fit(model: nn.Module, train_set: Dataset, spec: DefenseSpec, device: torch.device) -> None:
    """SGD with momentum and cosine decay on noisy copies of each batch."""
    recipe = spec.training
    generator = torch.Generator(device=device).manual_seed(recipe.seed)
    loader = seeded_loader(train_set, recipe.batch_size, recipe.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=float(recipe.options.get("weight_decay", 5e-4))
    )
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
            scheduler.step()
    model.eval()
