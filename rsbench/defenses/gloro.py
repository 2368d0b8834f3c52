"""GloRo nets (Leino, Wang, Fredrikson, ICML 2021): certification from a global Lipschitz bound.

Write the network as logits y = W h(x) + b, with h every layer below the last Linear.
If L bounds the l2 Lipschitz constant of h, the margin y_j - y_i changes by at most
K_ij * ||delta|| with K_ij = ||w_j - w_i|| * L. So the top class j is certified at x
within radius min_{i != j} (y_j - y_i) / K_ij, and a GloRo net adds a ⊥ logit
max_{i != j} (y_i + eps * K_ij) that wins exactly when the point is not certified at eps.

L is the product of per-layer bounds: the spectral norm of each Linear and Conv2d
operator (found by power iteration) and a constant for each fixed layer. A layer
whose bound rsbench does not know is refused rather than assumed 1-Lipschitz, since
that would make every certificate above it unsound.

Power iteration approaches the spectral norm from below, so the iterates are kept in
each layer's state (buffer `power_iterate`, saved with the weights) and are run to
convergence, in float64, before any certificate is issued; training takes one cheap
step per batch from the stored iterate instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rsbench.defenses.base import Certificate, Defense, check_input
from rsbench.errors import RsbenchError
from rsbench.models import Normalize
from rsbench.specs import DefenseSpec

ITERATE = "power_iterate"
"""Name of the buffer holding a layer's power-iteration vector (shape of the layer's input)."""

AFFINE = (nn.Linear, nn.Conv2d)
SUPPORTED = "Linear, Conv2d, ReLU, Flatten, Identity, MaxPool2d and Normalize"


def lipschitz_layers(model: nn.Module) -> list[nn.Module]:
    """The model as a flat list of layers with known l2 Lipschitz bounds, ending in a Linear.

    Only plain `nn.Sequential` containers are opened: a subclass with its own `forward`
    might not compose its children in order, so it is refused like any unknown layer.
    """

    def flatten(module: nn.Module) -> list[nn.Module]:
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            return [leaf for child in module for leaf in flatten(child)]
        return [module]

    layers = flatten(model)
    for layer in layers:
        if not isinstance(layer, AFFINE):
            fixed_bound(layer)  # raises for layers without a known bound
        elif isinstance(layer, nn.Conv2d) and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
            raise RsbenchError(
                f"GloRo supports Conv2d with numeric zero padding only, got padding {layer.padding!r} "
                f"in mode {layer.padding_mode!r}"
            )
    if not isinstance(layers[-1], nn.Linear):
        raise RsbenchError(f"GloRo needs a Linear last layer (the logits), got {type(layers[-1]).__name__}")
    return layers


def fixed_bound(layer: nn.Module) -> float:
    """l2 Lipschitz constant of a layer without weights to iterate on.

    MaxPool2d: each output is the max over its window, and |max a - max b| <= max |a - b|,
    so the squared output change is at most the sum over windows of the squared input
    changes inside them. An input lies in at most ceil(k/s) windows per spatial axis, so
    the bound is sqrt(prod ceil(k/s)): 1 for non-overlapping windows (k <= s), more
    when they overlap. Dilated windows are refused (their overlap count differs).
    """
    if isinstance(layer, (nn.ReLU, nn.Flatten, nn.Identity)):
        return 1.0
    if isinstance(layer, Normalize):
        return float(1.0 / layer.std.min())
    if isinstance(layer, nn.MaxPool2d):
        def pair(value: int | tuple[int, int]) -> tuple[int, int]:
            return value if isinstance(value, tuple) else (value, value)

        if pair(layer.dilation) != (1, 1) or layer.return_indices:
            raise RsbenchError("GloRo supports MaxPool2d without dilation or returned indices only")
        overlap = math.prod(math.ceil(k / s) for k, s in zip(pair(layer.kernel_size), pair(layer.stride)))
        return math.sqrt(overlap)
    raise RsbenchError(
        f"GloRo has no Lipschitz bound for layer {type(layer).__name__}; supported layers: {SUPPORTED}"
    )


def linear_operator(layer: nn.Module, weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The layer's linear part A (no bias) applied to one unbatched input, with the given weight."""
    if isinstance(layer, nn.Linear):
        return lambda v: F.linear(v, weight)
    return lambda v: F.conv2d(v[None], weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)[0]


def transposed_operator(
    layer: nn.Module, weight: torch.Tensor, shape: torch.Size
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A^T, mapping an output back to an input of `shape`.

    A strided convolution drops up to stride - 1 trailing rows and columns; the
    transposed convolution's output_padding restores them so the shapes match.
    """
    if isinstance(layer, nn.Linear):
        return lambda u: F.linear(u, weight.t())

    def transpose(u: torch.Tensor) -> torch.Tensor:
        produced = [
            (n - 1) * s - 2 * p + d * (k - 1) + 1
            for n, s, p, d, k in zip(u.shape[1:], layer.stride, layer.padding, layer.dilation, layer.kernel_size)
        ]
        extra = tuple(want - got for want, got in zip(shape[1:], produced))
        return F.conv_transpose2d(
            u[None], weight, None, layer.stride, layer.padding, extra, layer.groups, layer.dilation
        )[0]

    return transpose


def attach_power_iterates(model: nn.Module, input_shape: tuple[int, ...] | None = None, seed: int = 0) -> nn.Module:
    """Give every Linear and Conv2d below the logit layer a random unit `power_iterate` buffer, if it has none.

    A convolution's operator depends on the size of its input, so models with Conv2d
    layers need `input_shape` (C, H, W); the shapes are found by a forward pass of zeros.
    """
    layers = lipschitz_layers(model)
    missing = [layer for layer in layers[:-1] if isinstance(layer, AFFINE) and not hasattr(layer, ITERATE)]
    if not missing:
        return model
    shapes: dict[int, tuple[int, ...]] = {}
    if any(isinstance(layer, nn.Conv2d) for layer in missing):
        if input_shape is None:
            raise RsbenchError("GloRo needs the input shape (C, H, W) to bound convolutions")
        reference = next(model.parameters())
        x = torch.zeros(1, *input_shape, dtype=reference.dtype, device=reference.device)
        with torch.no_grad():
            for layer in layers:
                shapes[id(layer)] = tuple(x.shape[1:])
                x = layer(x)
    generator = torch.Generator().manual_seed(seed)
    for layer in missing:
        shape = (layer.in_features,) if isinstance(layer, nn.Linear) else shapes[id(layer)]
        v = torch.randn(shape, generator=generator)
        layer.register_buffer(ITERATE, (v / v.norm()).to(layer.weight))
    return model


def iterated_layers(layers: list[nn.Module]) -> list[nn.Module]:
    """The Linear and Conv2d layers below the logit layer, each of which must carry its power iterate.

    The logit layer needs none: K uses its rows' differences directly.
    """
    affine = [layer for layer in layers[:-1] if isinstance(layer, AFFINE)]
    if not all(hasattr(layer, ITERATE) for layer in affine):
        raise RsbenchError("model has no power iterates; build it with gloro.attach_power_iterates first")
    return affine


@torch.no_grad()
def _power_step(layer: nn.Module, dtype: torch.dtype) -> None:
    """One step v <- A^T A v / ||A^T A v||, where A is the layer's linear operator."""
    v = getattr(layer, ITERATE).to(dtype)
    weight = layer.weight.to(dtype)
    w = transposed_operator(layer, weight, v.shape)(linear_operator(layer, weight)(v))
    norm = w.norm()
    if norm > 0:  # a zero operator keeps its iterate; its norm is 0 whatever v is
        getattr(layer, ITERATE).copy_(w / norm)


def spectral_norm(layer: nn.Module, dtype: torch.dtype | None = None) -> torch.Tensor:
    """||A v|| / ||v|| for the stored iterate v: the spectral-norm estimate (never above the true
    norm), differentiable in the weight."""
    weight = layer.weight if dtype is None else layer.weight.to(dtype)
    v = getattr(layer, ITERATE).to(weight.dtype)
    return linear_operator(layer, weight)(v).norm() / v.norm()


@torch.no_grad()
def converge(model: nn.Module, tolerance: float = 1e-7, max_iterations: int = 100_000) -> None:
    """Run each layer's power iteration, in float64, until its estimate is within `tolerance` (relative).

    The estimates rise monotonically, and their increments shrink geometrically at the
    rate r of the slowest remaining direction, so the distance still to go is about the
    last increment times r / (1 - r). A small increment alone is no proof: when the two
    largest singular values are close, increments of 1e-9 still leave errors of 1e-6.
    Iteration stops once the extrapolated distance stays below the tolerance for three
    steps, or the increments reach float64 rounding; running out of steps is an error.
    """
    for layer in iterated_layers(lipschitz_layers(model)):
        estimate, increment, settled = float(spectral_norm(layer, torch.float64)), math.inf, 0
        for _ in range(max_iterations):
            _power_step(layer, torch.float64)
            current = float(spectral_norm(layer, torch.float64))
            previous, increment = increment, current - estimate
            estimate = current
            if increment <= 1e-14 * current:
                break
            rate = increment / previous if math.isfinite(previous) else 1.0
            settled = settled + 1 if rate < 1 and increment * rate / (1 - rate) <= tolerance * current else 0
            if settled == 3:
                break
        else:
            raise RsbenchError(f"power iteration did not converge within {max_iterations} steps")


def lipschitz_below(layers: list[nn.Module], *, steps: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Bound on the Lipschitz constant of every layer but the last; `steps` power steps first."""
    bound = torch.ones((), dtype=dtype or layers[-1].weight.dtype, device=layers[-1].weight.device)
    for layer in layers[:-1]:
        if isinstance(layer, AFFINE):
            for _ in range(steps):
                _power_step(layer, getattr(layer, ITERATE).dtype)
            bound = bound * spectral_norm(layer, dtype)
        else:
            bound = bound * fixed_bound(layer)
    return bound


def margin_lipschitz(layers: list[nn.Module], *, steps: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
    """K (m x m): K_ij bounds the Lipschitz constant of y_i - y_j, ||w_i - w_j|| times the bound below."""
    weight = layers[-1].weight if dtype is None else layers[-1].weight.to(dtype)
    distances = torch.cdist(weight, weight, compute_mode="donot_use_mm_for_euclid_dist")
    return distances * lipschitz_below(layers, steps=steps, dtype=dtype)


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
    """A Lipschitz-certified classifier: the model, its converged bounds K, and the ε it abstains at.

    The model's weights are frozen once the defense is built: K is computed then, with
    every power iteration converged, and reused for each certificate.
    """

    norm = "l2"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        epsilon: float,
        *,
        input_shape: tuple[int, ...] | None = None,
        tolerance: float = 1e-7,
    ) -> None:
        if epsilon <= 0:
            raise RsbenchError(f"epsilon must be positive, got {epsilon!r}")
        self.layers = lipschitz_layers(model)
        if self.layers[-1].out_features != num_classes:
            raise RsbenchError(f"expected {num_classes} logits, the model has {self.layers[-1].out_features}")
        self.model = attach_power_iterates(model, input_shape).eval()
        self.num_classes, self.epsilon = num_classes, epsilon
        converge(self.model, tolerance)
        # converged estimates sit up to `tolerance` below the true norms: raise each by that much
        slack = (1 + tolerance) ** len(iterated_layers(self.layers))
        with torch.no_grad():
            self.k = margin_lipschitz(self.layers, dtype=torch.float64) * slack

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

    Architectures made for GloRo carry their power iterates; for any other, the input
    shape the convolutions need is read from the first sample of the spec's dataset.
    """
    if spec.norm != "l2":
        raise RsbenchError(f"GloRo certifies the l2 norm, got norm {spec.norm!r}")
    input_shape = None
    layers = lipschitz_layers(model)
    if any(isinstance(layer, nn.Conv2d) and not hasattr(layer, ITERATE) for layer in layers):
        from rsbench.data import load_dataset

        dataset = spec.dataset
        input_shape = tuple(load_dataset(dataset.name, dataset.split, dataset.root)[0][0].shape)
    return GloRo(model, spec.num_classes, spec.epsilon, input_shape=input_shape)
