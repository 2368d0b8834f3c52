"""Wong & Kolter (ICML 2018): certificates from the convex outer polytope of a ReLU network.

Over an l_inf ball every unstable ReLU (pre-activation bounds l < 0 < u) is replaced by
its convex hull on [l, u]: z >= 0, z >= z_hat, z <= u (z_hat - l) / (u - l). Minimizing a
margin f_y - f_j over that polytope is a linear program. Wong & Kolter pick one feasible
point of its dual (lower slope u / (u - l), the slope of the upper chord), whose value is
therefore a lower bound on the LP and hence on the true minimum margin; it reads

    L(x) - eps * ||A||_1 + sum over unstable ReLUs j of  min(G_j, 0) * (-l_j u_j / (u_j - l_j)),

where L is the network with every ReLU replaced by multiplication with its slope (1 active,
0 inactive, u / (u - l) unstable), A its Jacobian with respect to the input and G_j its
Jacobian with respect to the output of unstable ReLU j. As in their implementation, A and
G are built forwards: the identity over the input, and a unit vector at each unstable
ReLU once its layer is reached, are pushed through the layers with L. This gives the
bounds of every neuron of a layer at once, which fixes the next layer's slopes; before the
first ReLU the map is affine and the bound is exact. Pushing forwards costs one pass per
input pixel plus one per unstable ReLU, instead of one per neuron backwards, and runs as
ordinary convolutions.

Everything is batched over inputs and differentiable, so the same code gives the robust
training loss and the attacks' surrogate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from rsbench.defenses.base import Certificate, Defense, check_input
from rsbench.errors import RsbenchError
from rsbench.specs import DefenseSpec

SUPPORTED = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten)
"""Layers the dual network knows; anything else is refused rather than guessed at."""

TOLERANCE = 1e-3
"""Absolute accuracy of the certified radius found by bisection, in pixel units (1/255 ~ 0.0039)."""

CEILING = 1.0
"""Largest radius searched: an l_inf ball of radius 1 around any image already covers all of [0, 1]^d."""

MarginBound = Callable[..., torch.Tensor]
"""`bound(model, x, eps, labels, box=...)` -> (B, m) lower bounds on f_y - f_j over the l_inf ball (0 at j = y),
sound for every j: `margin_lower_bounds` here, CROWN-IBP's in `rsbench.defenses.crown_ibp`."""


def supported_layers(model: nn.Module, certifier: str = "KW") -> list[nn.Module]:
    """The model as a flat list of Linear, Conv2d, ReLU and Flatten layers, or a clear refusal naming `certifier`.

    Only plain `nn.Sequential` containers are opened: a subclass with its own `forward`
    might not apply its children in order.
    """
    if isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward:
        return [layer for child in model for layer in supported_layers(child, certifier)]
    if not isinstance(model, SUPPORTED):
        raise RsbenchError(
            f"{certifier} certifies networks of Linear, Conv2d, ReLU and Flatten layers, got {type(model).__name__}"
        )
    if isinstance(model, nn.Conv2d) and model.padding_mode != "zeros":
        raise RsbenchError(f"{certifier} needs Conv2d with zero padding, got padding_mode {model.padding_mode!r}")
    if isinstance(model, nn.Flatten) and model.start_dim == 0:
        raise RsbenchError(f"{certifier} needs Flatten to keep the batch dimension (start_dim >= 1)")
    return [model]


@dataclass
class _DualState:
    """The linearized network L up to the current layer, evaluated forwards (shapes: B inputs, layer shape S)."""

    center: torch.Tensor
    """L(x), biases included: (B, *S)."""
    jacobian: torch.Tensor
    """A: (B, input pixels, *S), row p is L's response to a unit change of pixel p."""
    relaxed: list[torch.Tensor]
    """G, one block (B, K, *S) per ReLU layer: L's response to a unit change at each of its unstable outputs."""
    intercepts: list[torch.Tensor]
    """Per block (B, K): each unstable ReLU's upper-line intercept -l u / (u - l); 0 pads unequal counts."""

    def apply(self, layer: nn.Module) -> None:
        """Push the state through a Linear, Conv2d or Flatten layer (rows without the bias)."""
        self.center = layer(self.center)
        self.jacobian = self._rows(layer, self.jacobian)
        self.relaxed = [self._rows(layer, block) for block in self.relaxed]

    def _rows(self, layer: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        batch, count = rows.shape[:2]
        if isinstance(layer, nn.Linear):
            return F.linear(rows, layer.weight)
        if isinstance(layer, nn.Conv2d):
            flat = rows.flatten(0, 1)
            flat = F.conv2d(flat, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
            return flat.view(batch, count, *flat.shape[1:])
        return rows.reshape(batch, count, *self.center.shape[1:])

    def bounds(self, x: torch.Tensor, eps: torch.Tensor, box: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds on every neuron of the current layer over the ball, each (B, *S)."""
        low = high = self.center
        for block, intercepts in zip(self.relaxed, self.intercepts):
            negative = torch.einsum("bk...,bk->b...", block.clamp(max=0), intercepts)
            low, high = low + negative, high + torch.einsum("bk...,bk->b...", block, intercepts) - negative
        pixels = x.flatten(1)
        if box:
            floor, top = (pixels - eps.unsqueeze(1)).clamp(min=0), (pixels + eps.unsqueeze(1)).clamp(max=1)
            negative = torch.einsum("bn...,bn->b...", self.jacobian.clamp(max=0), top - floor)
            low = low + torch.einsum("bn...,bn->b...", self.jacobian, floor - pixels) + negative
            high = high + torch.einsum("bn...,bn->b...", self.jacobian, top - pixels) - negative
            return low, high
        spread = eps.view(-1, *[1] * (self.center.dim() - 1)) * torch.linalg.vector_norm(self.jacobian, 1, dim=1)
        return low - spread, high + spread

    def relu(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        """Replace a ReLU with its slopes, and open a G row for each of its unstable neurons."""
        batch = lower.shape[0]
        unstable = (lower < 0) & (upper > 0)
        chord = upper / (upper - lower).clamp_min(torch.finfo(lower.dtype).tiny)
        slope = torch.where(unstable, chord, (lower >= 0).to(lower.dtype))
        self.center = slope * self.center
        self.jacobian = self.jacobian * slope.unsqueeze(1)
        self.relaxed = [block * slope.unsqueeze(1) for block in self.relaxed]
        flags = unstable.flatten(1)
        counts = flags.sum(1)
        width = int(counts.max()) if batch else 0
        if width == 0:
            return
        # each input's unstable neurons first, in index order; slots past its count are padding
        order = torch.argsort(flags.to(torch.int8), dim=1, descending=True, stable=True)[:, :width]
        used = (torch.arange(width, device=lower.device) < counts.unsqueeze(1)).to(lower.dtype)
        units = lower.new_zeros(batch, width, flags.shape[1]).scatter_(2, order.unsqueeze(2), used.unsqueeze(2))
        self.relaxed.append(units.view(batch, width, *lower.shape[1:]))
        self.intercepts.append((-chord * lower).flatten(1).gather(1, order) * used)


def _dual_forward(
    model: nn.Module, x: torch.Tensor, eps: torch.Tensor, box: bool
) -> tuple[_DualState, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The dual network pushed through every layer (eps: one radius per input), and each ReLU layer's
    pre-activation bounds (B, *S) on the way."""
    layers = supported_layers(model)
    batch, inputs = x.shape[0], x[0].numel()
    identity = torch.eye(inputs, dtype=x.dtype, device=x.device).view(1, inputs, *x.shape[1:])
    state = _DualState(x, identity.expand(batch, *identity.shape[1:]), [], [])
    relus = []
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            relus.append(state.bounds(x, eps, box))
            state.relu(*relus[-1])
        else:
            state.apply(layer)
    return state, relus


def margin_lower_bounds(
    model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor, labels: torch.Tensor, *, box: bool = False
) -> torch.Tensor:
    """Lower bounds on f_y(x') - f_j(x') over ||x' - x||_inf <= eps, for every class j.

    x: (B, C, H, W) or (B, D); eps: a float or one radius per input; labels: the y of each
    input. Returns (B, m) with exact zeros at j = y. With `box`, x' is also kept in [0, 1].
    Memory grows as B * (input pixels + unstable ReLUs) * widest layer.
    """
    return dual_bounds(model, x, eps, labels, box=box)[0]


def dual_bounds(
    model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor, labels: torch.Tensor, *, box: bool = False
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """`margin_lower_bounds`, and per ReLU layer, in order, the lower and upper bounds (B, *S) on its pre-activations
    that the dual network computed on the way (an exact verifier's big-M constants)."""
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(x.shape[0])
    state, relus = _dual_forward(model, x, eps, box)
    if state.center.dim() != 2:
        raise RsbenchError(f"KW needs the model to output a vector of logits, got shape {tuple(state.center.shape[1:])}")
    eye = torch.eye(state.center.shape[1], dtype=x.dtype, device=x.device)
    margins = eye[labels].unsqueeze(1) - eye.unsqueeze(0)  # (B, m, m): row j is e_y - e_j
    state.center = torch.einsum("bjk,bk->bj", margins, state.center)
    state.jacobian = torch.einsum("bjk,bnk->bnj", margins, state.jacobian)
    state.relaxed = [torch.einsum("bjk,bnk->bnj", margins, block) for block in state.relaxed]
    return state.bounds(x, eps, box)[0], relus


def certified(
    model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor, labels: torch.Tensor, *, box: bool = False,
    bound: MarginBound = margin_lower_bounds,
) -> torch.Tensor:
    """Per input, whether every margin of its label is provably positive within eps (by `bound`)."""
    bounds = bound(model, x, eps, labels, box=box)
    others = bounds.masked_fill(F.one_hot(labels, bounds.shape[1]).bool(), math.inf)
    return others.min(1).values > 0


@torch.no_grad()
def certified_radii(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    anchors: tuple[float, ...] = (),
    box: bool = False,
    tolerance: float = TOLERANCE,
    bound: MarginBound = margin_lower_bounds,
) -> torch.Tensor:
    """Per input, the largest eps in [0, CEILING] at which `certified` (by `bound`) holds, found by bisection.

    The search first tries the `anchors` (e.g. eps and 2 eps) in increasing order, so a
    radius is >= an anchor exactly when the anchor itself is certified; between the last
    certified and the first failed point it bisects until they are `tolerance` apart.
    The returned radius is always a point where `certified` was checked to hold (or 0).
    """
    count = x.shape[0]  # radii in float64, so a radius equals an anchor exactly when it is set to it
    low = torch.zeros(count, dtype=torch.float64, device=x.device)
    high = torch.full((count,), CEILING, dtype=torch.float64, device=x.device)
    rising = torch.ones(count, dtype=torch.bool, device=x.device)
    for point in sorted({a for a in anchors if 0 < a < CEILING} | {CEILING}):
        rows = rising.nonzero().flatten()
        if rows.numel() == 0:
            break
        ok = certified(model, x[rows], point, labels[rows], box=box, bound=bound)
        low[rows[ok]] = point
        high[rows[~ok]] = point
        rising[rows[~ok]] = False
    while True:
        rows = (high - low > tolerance).nonzero().flatten()
        if rows.numel() == 0:
            return low
        middle = (low[rows] + high[rows]) / 2
        ok = certified(model, x[rows], middle, labels[rows], box=box, bound=bound)
        low[rows[ok]] = middle[ok]
        high[rows[~ok]] = middle[~ok]


class WorstCaseLogits(nn.Module):
    """The differentiable surrogate: worst-case logits over the eps-ball, by a margin bound (default KW's dual).

    Entry j is -(lower bound on f_y - f_j), an upper bound on how far class j can rise
    above y; entry y is 0. The label is certified exactly when every other entry is
    negative, and cross-entropy on these logits is the robust loss the bound trains with
    (Wong & Kolter's for the dual bound).
    """

    def __init__(self, model: nn.Module, epsilon: float, *, box: bool = False,
                 bound: MarginBound = margin_lower_bounds) -> None:
        super().__init__()
        supported_layers(model)
        self.model, self.epsilon, self.box, self.bound = model, epsilon, box, bound

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Worst-case logits for `labels`, by default the network's own predictions at x."""
        if labels is None:
            with torch.no_grad():
                labels = self.model(x).argmax(1)
        return -self.bound(self.model, x, self.epsilon, labels, box=self.box)


class KW(Defense):
    """A ReLU network that answers only where the convex relaxation certifies it.

    `predict` follows the deployed defense: the network's label when it is certified at
    the defense's epsilon, else None (reject). `certify` reports the network's label with
    the largest certified l_inf radius (0 when none), so clean accuracy and certified
    accuracy at any radius can be read off one certificate. `box=True` also keeps the
    perturbed input inside [0, 1], which can only tighten the bound. A subclass certifies
    the same way with another sound margin bound (`bound`, named `certifier` in refusals).
    """

    norm = "linf"
    bound: ClassVar[MarginBound] = staticmethod(margin_lower_bounds)
    """The margin bound every certificate, check and surrogate uses."""
    certifier: ClassVar[str] = "KW"

    def __init__(
        self, model: nn.Module, num_classes: int, epsilon: float, *, box: bool = False, tolerance: float = TOLERANCE
    ) -> None:
        if epsilon <= 0:
            raise RsbenchError(f"epsilon must be positive, got {epsilon!r}")
        if not 0 < tolerance < epsilon:
            raise RsbenchError(f"tolerance must lie in (0, epsilon), got {tolerance!r}")
        supported_layers(model, self.certifier)
        self.model = model.eval()
        self.num_classes, self.epsilon, self.box, self.tolerance = num_classes, epsilon, box, tolerance

    @property
    def device(self) -> torch.device:
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> KW:
        self.model.to(device)
        return self

    def _label(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x)
        batch = x.unsqueeze(0).to(self.device)
        with torch.no_grad():
            return batch, self.model(batch).argmax(1)

    def certified_at(self, x: torch.Tensor, eps: float, *, generator: torch.Generator | None = None) -> bool:
        """One dual pass: is the network's label at x certified within eps?"""
        batch, label = self._label(x)
        with torch.no_grad():
            return bool(certified(self.model, batch, eps, label, box=self.box, bound=self.bound))

    def predict(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> int | None:
        """The network's label if certified at the defense's epsilon, else None."""
        batch, label = self._label(x)
        with torch.no_grad():
            return int(label) if certified(self.model, batch, self.epsilon, label, box=self.box, bound=self.bound) else None

    def certify_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's labels and certified radii for a batch (B, C, H, W), anchored at eps and 2 eps."""
        x = x.to(self.device)
        with torch.no_grad():
            labels = self.model(x).argmax(1)
        anchors = (self.epsilon, 2 * self.epsilon)
        return labels, certified_radii(self.model, x, labels, anchors=anchors, box=self.box, tolerance=self.tolerance,
                                       bound=self.bound)

    def certify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        """The network's label and its largest certified radius to within `tolerance`; abstains only on a tie."""
        check_input(x)
        with torch.no_grad():
            top2 = self.model(x[None].to(self.device)).topk(2, dim=1).values[0]
        if top2[0] <= top2[1]:
            return Certificate(prediction=None, radius=0.0)
        labels, radii = self.certify_batch(x[None])
        return Certificate(prediction=int(labels[0]), radius=float(radii[0]))

    def surrogate(self, *, epsilon: float | None = None, box: bool | None = None) -> WorstCaseLogits:
        """The differentiable worst-case logits of the defense's bound at epsilon, by default the defense's."""
        return WorstCaseLogits(
            self.model, self.epsilon if epsilon is None else epsilon, box=self.box if box is None else box,
            bound=self.bound,
        )


def from_spec(spec: DefenseSpec, model: nn.Module) -> KW:
    """Build the KW defense a registry spec describes around its loaded network."""
    if spec.norm != "linf":
        raise RsbenchError(f"KW certifies the linf norm, but defense {spec.name!r} declares norm {spec.norm}")
    return KW(model, spec.num_classes, spec.epsilon)
