"""GloRo nets (Leino, Wang, Fredrikson, ICML 2021): certification from a global Lipschitz bound.

Write the network as logits y = W h(x) + b, with h every layer below the last Linear.
If L bounds the l2 Lipschitz constant of h, the margin y_j - y_i changes by at most
K_ij * ||delta|| with K_ij = ||w_j - w_i|| * L. So the top class j is certified at x
within radius min_{i != j} (y_j - y_i) / K_ij, and a GloRo net adds a ⊥ logit
max_{i != j} (y_i + eps * K_ij) that wins exactly when the point is not certified at eps.

L is the product of per-layer bounds (`rsbench.lipschitz`). Certificates take them from
the weights alone (exact spectral norms, or a guaranteed upper bound for large
convolutions), never from the power iterates a checkpoint stores for training: a stale
or crafted iterate could otherwise make them claim too much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rsbench.defenses.base import Certificate, Defense, check_input
from rsbench.errors import RsbenchError
from rsbench.lipschitz import input_shapes, lipschitz_below, lipschitz_layers, operator_norm
from rsbench.specs import DefenseSpec


def margin_lipschitz(weight: torch.Tensor, below: torch.Tensor | float) -> torch.Tensor:
    """K (m x m): K_ij bounds the Lipschitz constant of y_i - y_j, ||w_i - w_j|| (rows of the
    logit layer's weight) times the bound `below` on the layers under it."""
    return torch.cdist(weight, weight, compute_mode="donot_use_mm_for_euclid_dist") * below


def with_bottom(logits: torch.Tensor, k: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The m + 1 GloRo logits: y and ⊥ = max_{i != j} (y_i + epsilon * K_ji), j the top class."""
    top = logits.argmax(dim=1)
    raised = (logits + epsilon * k[top].to(logits.dtype)).masked_fill(F.one_hot(top, logits.shape[1]).bool(), -math.inf)
    return torch.cat([logits, raised.max(dim=1, keepdim=True).values], dim=1)


def radii(logits: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top class j and certified radius min_{i != j} (y_j - y_i) / K_ji of each row, in float64.

    A zero K_ji (identical weight rows) leaves y_j - y_i constant: it then limits nothing
    if positive and gives radius 0 if not.
    """
    logits, k = logits.double(), k.double()
    top = logits.argmax(dim=1)
    margins = logits.gather(1, top[:, None]) - logits
    bounds = k[top]
    ratios = torch.where(bounds > 0, margins / bounds, torch.where(margins > 0, math.inf, 0.0))
    ratios = ratios.masked_fill(F.one_hot(top, logits.shape[1]).bool(), math.inf)
    return top, ratios.min(dim=1).values.clamp(min=0.0)


class GloRo(Defense):
    """A Lipschitz-certified classifier: the model, its bounds K, and the ε it abstains at.

    The model's weights are frozen once the defense is built: K is computed then, from the
    weights alone, and reused for each certificate. Convolutions are bounded on inputs of
    `input_shape` (C, H, W), the only shape the defense then accepts.
    """

    norm = "l2"

    def __init__(
        self, model: nn.Module, num_classes: int, epsilon: float, *, input_shape: tuple[int, ...] | None = None
    ) -> None:
        if epsilon <= 0:
            raise RsbenchError(f"epsilon must be positive, got {epsilon!r}")
        self.layers = lipschitz_layers(model)
        if self.layers[-1].out_features != num_classes:
            raise RsbenchError(f"expected {num_classes} logits, the model has {self.layers[-1].out_features}")
        self.model = model.eval()
        self.num_classes, self.epsilon = num_classes, epsilon
        shapes = input_shapes(self.layers, input_shape)
        self.input_shape = tuple(input_shape) if shapes else None
        below = lipschitz_below(self.layers, lambda layer: operator_norm(layer, shapes.get(id(layer))))
        self.k = margin_lipschitz(self.layers[-1].weight.detach().double(), below)

    @property
    def device(self) -> torch.device:
        return self.layers[-1].weight.device

    def to(self, device: torch.device | str) -> GloRo:
        self.model.to(device)
        self.k = self.k.to(device)
        return self

    @torch.no_grad()
    def certify_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top class and certified radius for a batch (B, C, H, W); radius 0 means no certificate."""
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise RsbenchError(f"expected inputs of shape {self.input_shape}, got {tuple(x.shape[1:])}")
        return radii(self.model(x.to(self.device)), self.k)

    def certify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        """The top class and min_{i != j} (y_j - y_i) / K_ji; abstains only on a tie for the top."""
        check_input(x)
        top, radius = self.certify_batch(x[None])
        if radius[0] <= 0:
            return Certificate(prediction=None, radius=0.0)
        return Certificate(prediction=int(top[0]), radius=float(radius[0]))

    def predict(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> int | None:
        """The GloRo net's label at the spec's ε: None when ⊥ wins, i.e. when the radius is below ε."""
        certificate = self.certify(x)
        return certificate.prediction if certificate.radius >= self.epsilon else None

    def surrogate(self, *, epsilon: float | None = None) -> BottomLogits:
        """The view attacks differentiate: the m + 1 logits with ⊥ at `epsilon` (default: the spec's)."""
        return BottomLogits(self.model, self.k, self.epsilon if epsilon is None else epsilon)


@dataclass(frozen=True)
class BottomLogits:
    """A GloRo net as attacks see it: (B, C, H, W) -> (B, m + 1) logits, ⊥ last, differentiable in x."""

    model: nn.Module
    k: torch.Tensor
    """The certifier's K_ij, fixed: attacks move the input, not the weights."""
    epsilon: float
    """Radius at which ⊥ is computed."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return with_bottom(self.model(x), self.k, self.epsilon)


def from_spec(spec: DefenseSpec, model: nn.Module) -> GloRo:
    """Build the GloRo defense a registry spec describes around its loaded model.

    Convolutions are bounded on the input shape of the spec's dataset (`rsbench.data.INPUT_SHAPES`), so the
    defense loads without the dataset's files.
    """
    from rsbench.data import INPUT_SHAPES

    if spec.norm != "l2":
        raise RsbenchError(f"GloRo certifies the l2 norm, got norm {spec.norm!r}")
    input_shape = None
    if any(isinstance(layer, nn.Conv2d) for layer in lipschitz_layers(model)):
        input_shape = INPUT_SHAPES[spec.dataset.name]
    return GloRo(model, spec.num_classes, spec.epsilon, input_shape=input_shape)
