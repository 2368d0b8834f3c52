"""MACER (Zhai et al., ICLR 2020): train a smoothing base model to enlarge its certified radii.

Gaussian augmentation only asks the base model to be right under noise; MACER also
rewards the margin that sets the certified radius, sigma/2 * (PhiInv(p_y) - PhiInv(p_2)),
without any attack in the loop. Each input is seen through k noisy copies; their
averaged softmax is a differentiable stand-in for the smoothed classifier. The loss is

    cross-entropy of mean_j softmax(z_j)
    + lambda * sigma/2 * max(gamma - (PhiInv(p_y) - PhiInv(p_2)), 0),   p = mean_j softmax(beta * z_j),

the hinge counted only on inputs whose soft smoothed top class is the label, and both
terms averaged over the whole batch. The inverse temperature beta sharpens each copy's
softmax towards the hard vote that certification counts; the classification term keeps
beta = 1, as in the authors' released training code.

The first `warmup_epochs` are the `gaussian` recipe at `warmup_lr`, so the hinge starts
from a model that already classifies noisy inputs; with the same seed, batch size and
epochs as a `smoothing-*` entry, the warm-up reproduces that entry's weights and MACER is
a fine-tuning of it. The hinge's gradient is tens of times the cross-entropy's, and small
models without batch normalisation lose their accuracy at the warm-up's learning rate, so
MACER's own `lr` is much lower (0.001 after 0.05 for the shipped digits models). The
result is certified by the ordinary smoothing defense.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import Dataset

from rsbench.errors import RsbenchError
from rsbench.progress import bar
from rsbench.specs import DefenseSpec
from rsbench.training import gaussian, seeded_loader

DEFAULTS: dict[str, float | str] = {
    "k": 16,
    "beta": 16.0,
    "gamma": 8.0,
    "lambda": 12.0,
    "warmup_epochs": 0,
    "warmup_lr": 0.05,
    "warmup_optimizer": "sgd",
    "weight_decay": 5e-4,
}
"""Recipe options and their defaults: the paper's k, beta, gamma, lambda for sigma 0.25 and 0.50,
Gaussian warm-up epochs (counted in `epochs`), their learning rate and optimizer (`gaussian.OPTIMIZERS`), and
the weight decay of both phases."""


def macer_loss(
    logits: torch.Tensor, labels: torch.Tensor, sigma: float, *, beta: float, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(classification, robustness) terms for logits of shape (batch, k, classes); total = c + lambda * r.

    The margin is infinite where a probability rounds to 0 or 1, and then far beyond any
    sensible gamma; such inputs are dropped before PhiInv, so no infinite derivative
    reaches the backward pass (masking after PhiInv would turn 0 * inf into NaN).
    """
    batch, k, _ = logits.shape
    log_smoothed = torch.logsumexp(logits.log_softmax(dim=-1), dim=1) - math.log(k)
    classification = nn.functional.nll_loss(log_smoothed, labels)
    top2 = (beta * logits).softmax(dim=-1).mean(dim=1).topk(2, dim=1)
    correct = top2.indices[:, 0] == labels
    p_top, p_second = top2.values[correct, 0], top2.values[correct, 1]
    with torch.no_grad():
        margin = torch.special.ndtri(p_top) - torch.special.ndtri(p_second)
        active = torch.isfinite(margin) & (margin < gamma)
    margin = torch.special.ndtri(p_top[active]) - torch.special.ndtri(p_second[active])
    robustness = sigma / 2 * (gamma - margin).sum() / batch
    return classification, robustness


def recipe_options(spec: DefenseSpec) -> dict[str, float | str]:
    """The recipe's options over DEFAULTS, refusing unknown names and non-numeric values."""
    options = dict(spec.training.options)
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise RsbenchError(f"unknown MACER option(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    for name, value in options.items():
        if name == "warmup_optimizer":
            if value not in gaussian.OPTIMIZERS:
                raise RsbenchError(f"MACER option 'warmup_optimizer' must be one of {', '.join(gaussian.OPTIMIZERS)}, "
                                   f"got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RsbenchError(f"MACER option {name!r} must be a number, got {value!r}")
    merged = {**DEFAULTS, **options}
    if int(merged["k"]) != merged["k"] or merged["k"] < 2:
        raise RsbenchError(f"MACER option 'k' must be an integer >= 2, got {merged['k']!r}")
    warmup = merged["warmup_epochs"]
    if int(warmup) != warmup or not 0 <= warmup < spec.training.epochs:
        raise RsbenchError(
            f"MACER option 'warmup_epochs' must be an integer in [0, epochs), got {merged['warmup_epochs']!r}"
        )
    return merged


def warmup_spec(spec: DefenseSpec, options: dict[str, float | str]) -> DefenseSpec:
    """The spec of the Gaussian-augmentation warm-up: same seed and batch size, its own epochs, lr and optimizer."""
    warmup = spec.training.model_copy(
        update={
            "recipe": "gaussian",
            "epochs": int(options["warmup_epochs"]),
            "lr": options["warmup_lr"],
            "options": {"weight_decay": options["weight_decay"], "optimizer": options["warmup_optimizer"]},
        }
    )
    return spec.model_copy(update={"training": warmup})


def fit(model: nn.Module, train_set: Dataset, spec: DefenseSpec, device: torch.device) -> None:
    """Warm up with Gaussian augmentation, then minimise the MACER loss with SGD, momentum and cosine decay."""
    if spec.sigma is None:
        raise RsbenchError(f"MACER trains smoothing models, but defense {spec.name!r} has no sigma")
    recipe, options = spec.training, recipe_options(spec)
    if options["warmup_epochs"]:
        gaussian.fit(model, train_set, warmup_spec(spec, options), device)
    k = int(options["k"])
    generator = torch.Generator(device=device).manual_seed(recipe.seed)
    loader = seeded_loader(train_set, recipe.batch_size, recipe.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, weight_decay=options["weight_decay"])
    epochs = recipe.epochs - int(options["warmup_epochs"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    model.train()
    with bar(epochs, f"train {spec.name} (MACER)", "epoch") as progress:
        for _ in range(epochs):
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                copies = x.unsqueeze(1).expand(-1, k, *x.shape[1:])
                noisy = copies + spec.sigma * torch.randn(copies.shape, generator=generator, device=device)
                logits = model(noisy.flatten(0, 1)).view(len(x), k, -1)
                classification, robustness = macer_loss(
                    logits, y, spec.sigma, beta=options["beta"], gamma=options["gamma"]
                )
                loss = classification + options["lambda"] * robustness
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
            progress.set_postfix(classification=f"{classification.item():.3f}",
                                 robustness=f"{robustness.item():.3f}", refresh=False)
            progress.update(1)
    model.eval()
