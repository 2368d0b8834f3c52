"""An AOL network and its certifier: a 1-Lipschitz classifier whose l2 certificate is its logit margin over sqrt 2.

Almost-Orthogonal Layers (Prach & Lampert, ECCV 2022) rescale the columns of any weight matrix P by
d_i = (sum_j |P^T P|_ij)^(-1/2). The rescaled matrix P diag(d) has spectral norm at most 1 whatever P
is, so a stack of such layers with 1-Lipschitz activations is 1-Lipschitz in l2 by construction,
for the weights a checkpoint holds, trained or not. The logits z then move by at most ||delta||, and
a difference z_j - z_i by at most sqrt(2) ||delta||: the top class is certified within
(z_top - z_second) / sqrt(2).

`build` is the network's code, which train.py trains and exports to model.onnx, the graph rsbench certifies
(kind lipschitz) with its own code; none of this file runs there. `AOLCertifier` is the same certificate
as a self-certified plugin (`kind: plugin`, `implementation: ./aol.py:AOLCertifier`) on that graph.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rsbench.defenses.base import Certificate, Defense, check_input
from rsbench.errors import RsbenchError
from rsbench.specs import DefenseSpec

SQRT2 = math.sqrt(2.0)


def aol_scaling(weight: torch.Tensor) -> torch.Tensor:
    """The AOL column factors d_i = (sum_j |P^T P|_ij)^(-1/2) of a weight P (out x in); a zero column keeps 0."""
    gram = (weight.T @ weight).abs().sum(dim=1)
    return torch.where(gram > 0, gram.clamp_min(torch.finfo(weight.dtype).tiny).rsqrt(), torch.zeros_like(gram))


class AOLLinear(nn.Module):
    """x -> P diag(d) x + b with d the AOL factors of P: spectral norm at most 1 for every P."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(outputs, inputs))
        self.bias = nn.Parameter(torch.zeros(outputs))
        nn.init.orthogonal_(self.weight)
        self._frozen: tuple[tuple, torch.Tensor] | None = None

    def rescaled(self) -> torch.Tensor:
        """The matrix the layer applies, P diag(d); in eval mode computed once per version of P (no gradient to P)."""
        if self.training:
            return self.weight * aol_scaling(self.weight)
        key = (self.weight._version, self.weight.device, self.weight.dtype, id(self.weight))
        if self._frozen is None or self._frozen[0] != key:
            with torch.no_grad():
                self._frozen = (key, self.weight * aol_scaling(self.weight))
        return self._frozen[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.rescaled(), self.bias)


class MaxMin(nn.Module):
    """Sorts each pair of neighbouring features (max, min): 1-Lipschitz and norm preserving."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.unflatten(1, (-1, 2)).unbind(dim=2)
        return torch.stack([torch.maximum(a, b), torch.minimum(a, b)], dim=2).flatten(1)


def build(num_classes: int, inputs: int = 64, width: int = 128, depth: int = 3) -> nn.Sequential:
    """The model factory: flatten, `depth` AOL layers of `width` features with MaxMin, and AOL logits."""
    layers: list[nn.Module] = [nn.Flatten()]
    for k in range(depth):
        layers += [AOLLinear(inputs if k == 0 else width, width), MaxMin()]
    return nn.Sequential(*layers, AOLLinear(width, num_classes))


class AOLCertifier(Defense):
    """The plugin: labels and l2 certificates margin / sqrt 2 of a 1-Lipschitz network.

    `predict` answers like a GloRo net, only where the label is certified at `epsilon` (when one is
    set); `certify` gives the label and its whole radius.
    """

    norm = "l2"

    def __init__(self, model: nn.Module, num_classes: int, epsilon: float | None = None) -> None:
        self.model, self.num_classes, self.epsilon = model.eval(), num_classes, epsilon

    @classmethod
    def from_spec(cls, spec: DefenseSpec, model: nn.Module) -> AOLCertifier:
        if spec.norm != "l2":
            raise RsbenchError(f"AOL certifies the l2 norm, got norm {spec.norm!r}")
        return cls(model, spec.num_classes, spec.epsilon)

    @property
    def device(self) -> torch.device:
        tensor = next(iter([*self.model.parameters(), *self.model.buffers()]), None)  # a converted graph: buffers only
        return tensor.device if tensor is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> AOLCertifier:
        self.model.to(device)
        return self

    @torch.no_grad()
    def certify_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top class and radius (margin over the runner-up, in float64, over sqrt 2) of a batch (B, C, H, W)."""
        top2 = self.model(x.to(self.device)).double().topk(2, dim=1)
        return top2.indices[:, 0], (top2.values[:, 0] - top2.values[:, 1]) / SQRT2

    def certify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        return self.certify_many([x], [generator])[0]

    def certify_many(self, xs, generators) -> list[Certificate]:  # noqa: ANN001 - the interface's signature
        for x in xs:
            check_input(x)
        labels, radii = self.certify_batch(torch.stack(list(xs)))
        return [Certificate(prediction=int(label), radius=float(radius)) if radius > 0 else
                Certificate(prediction=None, radius=0.0) for label, radius in zip(labels, radii)]

    def predict(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> int | None:
        certificate = self.certify(x)
        return certificate.prediction if certificate.radius >= (self.epsilon or 0.0) else None

    def worst_case_margins(self, x: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
        """z_j - z_label + sqrt(2) epsilon for every other class j (0 at the label): no point within epsilon can
        raise z_j - z_label above it."""
        logits = self.model(x)
        own = logits.gather(1, labels[:, None])
        others = nn.functional.one_hot(labels, logits.shape[1]).logical_not()
        return (logits - own + SQRT2 * epsilon) * others
