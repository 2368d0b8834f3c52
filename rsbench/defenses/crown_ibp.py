"""CROWN-IBP (Zhang et al., ICLR 2020): interval bounds forwards, one linear-relaxation pass backwards.

Both bounds below are lower bounds on every margin f_y(x') - f_j(x') over the l_inf ball
of radius eps around x, kept inside [0, 1] by default (the paper's "bounded input").

- IBP (interval bound propagation, Gowal et al. 2018) pushes a box through the network:
  an affine layer maps a box of centre c and half-width r to centre W c + b and half-width
  |W| r, a ReLU clamps both ends at 0. It bounds every neuron of every layer at the cost
  of two forward passes.
- CROWN (Zhang et al. 2018) bounds a linear function of the logits backwards. Walking
  from the output to the input it keeps a linear lower bound in the current layer's
  neurons; at a ReLU whose pre-activation bounds l < 0 < u it substitutes a line under
  the ReLU on [l, u] where the coefficient is positive (z when u >= -l, else 0: the
  choice with the smaller gap) and the chord u (z - l) / (u - l) over it where the
  coefficient is negative; an affine layer is substituted exactly. At the input the bound
  is an affine function of x', whose minimum over the box is exact.
- CROWN-IBP takes every intermediate l and u from IBP and runs CROWN once, from the
  margins: one backward pass with m rows instead of CROWN's pass per neuron.

As in the paper's implementation, the margins' last layer is folded into the
specification (rows w_y - w_j of the logit layer), which can only tighten both bounds.

Which bound certifies. The paper trains on a mix, beta CROWN-IBP + (1 - beta) IBP with
beta ramped from 1 to 0 as eps grows, and reports its verified errors from IBP alone: its
evaluation configurations bound with interval arithmetic on the ball inside [0, 1], the
network being shaped for IBP by the end of training. A `crownibp` defense certifies the same
way. Neither bound is tighter in general (on a neuron with u > -l CROWN-IBP can go down to
w l where IBP stops at w 0, while it gains wherever the neurons of a layer move together),
and IBP has a property CROWN-IBP lacks: interval arithmetic is inclusion-monotone, so a
certificate at 2 eps around x implies one at eps around every x' within eps of x, which the
degradation goal's upper bound rests on; CROWN-IBP's choice of lower line changes with the
intervals and carries no such guarantee. Every check, surrogate and attack of the defense
uses its IBP bound; CROWN-IBP's serves training. Everything is batched and differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsbench.defenses.kw import KW, TOLERANCE, supported_layers
from rsbench.errors import RsbenchError
from rsbench.specs import DefenseSpec

CERTIFIER = "CROWN-IBP"


def _input_box(x: torch.Tensor, eps: float | torch.Tensor, box: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The ball's corners (B, ...): x -/+ eps per input, clipped to [0, 1] with `box`."""
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(x.shape[0])
    eps = eps.view(-1, *[1] * (x.dim() - 1))
    low, high = x - eps, x + eps
    return (low.clamp(min=0), high.clamp(max=1)) if box else (low, high)


def _abs_affine(layer: nn.Module, radius: torch.Tensor) -> torch.Tensor:
    """|W| r: the half-width an affine layer maps a box of half-width r to."""
    if isinstance(layer, nn.Linear):
        return F.linear(radius, layer.weight.abs())
    return F.conv2d(radius, layer.weight.abs(), None, layer.stride, layer.padding, layer.dilation, layer.groups)


def _transpose(layer: nn.Module, rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Rows (B, m, *output shape) of a linear form pulled back through the layer's weight to (B, m, *shape)."""
    batch, count = rows.shape[:2]
    if isinstance(layer, nn.Linear):
        return rows @ layer.weight
    flat = rows.flatten(0, 1)
    produced = [(n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in
                zip(flat.shape[2:], layer.stride, layer.padding, layer.dilation, layer.kernel_size)]
    extra = tuple(want - got for want, got in zip(shape[1:], produced))
    pulled = F.conv_transpose2d(flat, layer.weight, None, layer.stride, layer.padding, extra, layer.groups,
                                layer.dilation)
    return pulled.view(batch, count, *shape)


def _bias_term(layer: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """The bias's contribution to each row's value, (B, m)."""
    if layer.bias is None:
        return rows.new_zeros(rows.shape[:2])
    if isinstance(layer, nn.Linear):
        return rows @ layer.bias
    return torch.einsum("bmc...,c->bm", rows, layer.bias)


def _interval_forward(
    layers: list[nn.Module], low: torch.Tensor, high: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Size], list[tuple[torch.Tensor, torch.Tensor]]]:
    """IBP forwards through `layers` from the box [low, high]: the output box, each layer's input shape, and every
    ReLU's pre-activation bounds."""
    shapes, relus = [], []
    for layer in layers:
        shapes.append(low.shape[1:])
        if isinstance(layer, nn.ReLU):
            relus.append((low, high))
            low, high = low.clamp(min=0), high.clamp(min=0)
        elif isinstance(layer, nn.Flatten):
            low, high = layer(low), layer(high)
        else:
            centre, radius = layer((high + low) / 2), _abs_affine(layer, (high - low) / 2)
            low, high = centre - radius, centre + radius
    return low, high, shapes, relus


def interval_relu_bounds(
    model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor, *, box: bool = True
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per ReLU layer, in order, IBP's lower and upper bounds (B, *S) on its pre-activations over the l_inf ball."""
    return _interval_forward(supported_layers(model, CERTIFIER), *_input_box(x, eps, box))[3]


def margin_bounds(
    model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor, labels: torch.Tensor, *, box: bool = True,
    crown: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """IBP's and (with `crown`) CROWN-IBP's lower bounds on f_y - f_j over the ball, each (B, m), 0 at j = y.

    x: (B, C, H, W) or (B, D); eps: a float or one radius per input; labels: the y of each input.
    """
    layers = supported_layers(model, CERTIFIER)
    if not isinstance(layers[-1], nn.Linear):
        raise RsbenchError(f"{CERTIFIER} needs a Linear last layer (the logits), got {type(layers[-1]).__name__}")
    x_low, x_high = _input_box(x, eps, box)
    low, high, shapes, relus = _interval_forward(layers[:-1], x_low, x_high)
    last = layers[-1]
    rows = last.weight[labels].unsqueeze(1) - last.weight.unsqueeze(0)  # (B, m, features): w_y - w_j
    offset = (last.bias[labels].unsqueeze(1) - last.bias.unsqueeze(0)) if last.bias is not None else 0.0
    centre, radius = (high + low) / 2, (high - low) / 2
    interval = torch.einsum("bmf,bf->bm", rows, centre) - torch.einsum("bmf,bf->bm", rows.abs(), radius) + offset
    if not crown:
        return interval, None
    bias = rows.new_zeros(rows.shape[:2]) + offset
    for layer, shape in zip(reversed(layers[:-1]), reversed(shapes)):  # CROWN backwards from the margins
        if isinstance(layer, nn.ReLU):
            lower, upper = relus.pop()
            unstable = (lower < 0) & (upper > 0)
            active = (lower >= 0).to(rows.dtype)
            chord = torch.where(unstable, upper / (upper - lower).clamp_min(torch.finfo(rows.dtype).tiny), active)
            under = torch.where(unstable, (upper >= -lower).to(rows.dtype), active)
            positive, negative = rows.clamp(min=0), rows.clamp(max=0)
            bias = bias + torch.einsum("bm...,b...->bm", negative, torch.where(unstable, -chord * lower, 0.0))
            rows = positive * under.unsqueeze(1) + negative * chord.unsqueeze(1)
        elif isinstance(layer, nn.Flatten):
            rows = rows.reshape(*rows.shape[:2], *shape)
        else:
            bias = bias + _bias_term(layer, rows)
            rows = _transpose(layer, rows, shape)
    backward = (torch.einsum("bm...,b...->bm", rows.clamp(min=0), x_low)
                + torch.einsum("bm...,b...->bm", rows.clamp(max=0), x_high) + bias)
    return interval, backward


def ibp_margins(model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor, labels: torch.Tensor, *,
                box: bool = True) -> torch.Tensor:
    """IBP's lower bounds on every margin: the paper's verifier, and a `crownibp` defense's."""
    return margin_bounds(model, x, eps, labels, box=box, crown=False)[0]


def crown_ibp_margins(model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor, labels: torch.Tensor, *,
                      box: bool = True) -> torch.Tensor:
    """CROWN-IBP's lower bounds on every margin."""
    return margin_bounds(model, x, eps, labels, box=box)[1]


class CrownIBP(KW):
    """A CROWN-IBP-trained ReLU network that answers only where IBP certifies it, as the paper verifies.

    Certified like KW (`predict` rejects below the defense's epsilon; `certify` bisects the largest radius), with
    IBP's bound in place of the dual network's and the ball kept inside [0, 1], as the paper's training and
    evaluation keep it.
    """

    bound = staticmethod(ibp_margins)
    certifier = CERTIFIER

    def __init__(self, model: nn.Module, num_classes: int, epsilon: float, *, tolerance: float = TOLERANCE) -> None:
        super().__init__(model, num_classes, epsilon, box=True, tolerance=tolerance)


def from_spec(spec: DefenseSpec, model: nn.Module) -> CrownIBP:
    """Build the CROWN-IBP defense a registry spec describes around its loaded network."""
    if spec.norm != "linf":
        raise RsbenchError(f"CROWN-IBP certifies the linf norm, but defense {spec.name!r} declares norm {spec.norm}")
    return CrownIBP(model, spec.num_classes, spec.epsilon)
