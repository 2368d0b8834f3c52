"""l2 Lipschitz bounds of layers: sound ones for certificates, cheap estimates for training.

A network's Lipschitz constant is bounded by the product of its layers' bounds: the
spectral norm of each Linear and Conv2d operator and a constant for each fixed layer. A
layer whose bound rsbench does not know is refused rather than assumed 1-Lipschitz, since
that would make every certificate above it unsound.

Certificates use `operator_norm`, which depends on the weights alone: the exact spectral
norm of a Linear layer and of a convolution whose explicit matrix is small (both from a
float64 SVD), and for larger convolutions the exact norm of a circular convolution that
contains the layer's operator as a submatrix (see `circulant_bound`), an upper bound.

Training instead takes one power-iteration step per batch from a vector stored in each
layer (buffer `power_iterate`, saved with the weights): ||A v|| / ||v|| is differentiable
and never above the true norm, so it suits a loss but never a certificate, whatever the
stored vectors hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from rsbench.errors import RsbenchError
from rsbench.layers import Normalize

ITERATE = "power_iterate"
"""Name of the buffer holding a layer's power-iteration vector (shape of the layer's input)."""

AFFINE = (nn.Linear, nn.Conv2d)
SUPPORTED = "Linear, Conv2d, ReLU, Flatten, Identity, MaxPool2d and Normalize"

DENSE_LIMIT = 2**24
"""Most float64 entries (128 MiB) of the identity basis and of the explicit matrix of a
convolution whose norm is computed exactly. Every convolution on 1x28x28 MNIST inputs fits
(the largest, 16x14x14 -> 32x7x7, takes about 5 s on one core); larger ones are bounded."""

Bound = TypeVar("Bound", float, torch.Tensor)


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
    """l2 Lipschitz constant of a layer without weights.

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


def input_shapes(layers: list[nn.Module], input_shape: tuple[int, ...] | None) -> dict[int, tuple[int, ...]]:
    """Each layer's input shape (no batch axis), by `id`, from a forward pass of zeros.

    A convolution's operator depends on the size of its input, so models with Conv2d
    layers need `input_shape` (C, H, W); models without them get an empty dict.
    """
    if not any(isinstance(layer, nn.Conv2d) for layer in layers):
        return {}
    if input_shape is None:
        raise RsbenchError("GloRo needs the input shape (C, H, W) to bound convolutions")
    reference = layers[-1].weight
    x = torch.zeros(1, *input_shape, dtype=reference.dtype, device=reference.device)
    shapes = {}
    with torch.no_grad():
        for layer in layers:
            shapes[id(layer)] = tuple(x.shape[1:])
            x = layer(x)
    return shapes


def operator_norm(layer: nn.Module, shape: tuple[int, ...] | None = None) -> float:
    """Upper bound on the spectral norm of the layer's linear part (on inputs of `shape`, for Conv2d).

    Exact, up to float64 rounding, for Linear layers and for convolutions whose explicit
    matrix fits `DENSE_LIMIT` (its columns are the images of the input's basis vectors);
    the circulant bound for larger convolutions.
    """
    weight = layer.weight.detach().double()
    if isinstance(layer, nn.Linear):
        return float(torch.linalg.matrix_norm(weight, ord=2))
    if shape is None:
        raise RsbenchError("GloRo needs the input shape (C, H, W) to bound convolutions")
    size = math.prod(shape)
    outputs = linear_operator(layer, weight)(weight.new_zeros(shape)).numel()
    if size * max(size, outputs) > DENSE_LIMIT:
        return circulant_bound(layer, shape)
    basis = torch.eye(size, dtype=torch.float64, device=weight.device).view(size, *shape)
    images = F.conv2d(basis, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return float(torch.linalg.matrix_norm(images.flatten(1), ord=2))


def circulant_bound(conv: nn.Conv2d, shape: tuple[int, ...]) -> float:
    """Upper bound on the spectral norm of a zero-padded convolution on inputs of `shape`.

    Dilation spreads the kernel's taps with zeros. A stride-s convolution reads input
    index s*o + j; writing j = s*t + r splits the padded input into s x s phases (every
    s-th pixel from offset r, as extra channels) and the kernel alike, leaving a stride-1
    convolution with ceil(k/s) taps: the same operator up to a permutation of the input.
    Its outputs never read past the padded input, so it is a submatrix of the circular
    convolution on a torus of ceil((n + 2p) / s) pixels per axis, which the 2-D DFT turns
    into one small matrix per frequency: the kernel's transform there, (out x in*s*s) per
    group (Sedghi, Gupta, Long, ICLR 2019). The largest of their spectral norms is the
    circular operator's norm, hence a bound on the layer's.
    """
    weight = conv.weight.detach().double()
    out_channels, group_in = weight.shape[:2]
    taps = [d * (k - 1) + 1 for d, k in zip(conv.dilation, weight.shape[2:])]
    kernel = weight.new_zeros(out_channels, group_in, *taps)
    kernel[:, :, :: conv.dilation[0], :: conv.dilation[1]] = weight
    (sh, sw), phase_taps = conv.stride, [math.ceil(k / s) for k, s in zip(taps, conv.stride)]
    kernel = F.pad(kernel, (0, phase_taps[1] * sw - taps[1], 0, phase_taps[0] * sh - taps[0]))
    kernel = kernel.view(out_channels, group_in, phase_taps[0], sh, phase_taps[1], sw).permute(0, 1, 3, 5, 2, 4)
    kernel = kernel.reshape(conv.groups, out_channels // conv.groups, group_in * sh * sw, *phase_taps)
    torus = [math.ceil((n + 2 * p) / s) for n, p, s in zip(shape[1:], conv.padding, conv.stride)]
    blocks = torch.fft.fft2(kernel, s=torus).permute(0, 3, 4, 1, 2)
    return float(torch.linalg.matrix_norm(blocks, ord=2).amax())


def lipschitz_below(layers: list[nn.Module], affine_bound: Callable[[nn.Module], Bound]) -> Bound:
    """Bound on the Lipschitz constant of every layer but the last: `affine_bound` of each
    Linear and Conv2d times the fixed bound of each other layer."""
    bound = 1.0
    for layer in layers[:-1]:
        bound = bound * (affine_bound(layer) if isinstance(layer, AFFINE) else fixed_bound(layer))
    return bound


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

    The logit layer needs none: K uses its rows' differences directly.
    """
    layers = lipschitz_layers(model)
    missing = [layer for layer in layers[:-1] if isinstance(layer, AFFINE) and not hasattr(layer, ITERATE)]
    if not missing:
        return model
    shapes = input_shapes(layers, input_shape)
    generator = torch.Generator().manual_seed(seed)
    for layer in missing:
        shape = (layer.in_features,) if isinstance(layer, nn.Linear) else shapes[id(layer)]
        v = torch.randn(shape, generator=generator)
        layer.register_buffer(ITERATE, (v / v.norm()).to(layer.weight))
    return model


def iterated_layers(layers: list[nn.Module]) -> list[nn.Module]:
    """The Linear and Conv2d layers below the logit layer, each of which must carry its power iterate."""
    affine = [layer for layer in layers[:-1] if isinstance(layer, AFFINE)]
    if not all(hasattr(layer, ITERATE) for layer in affine):
        raise RsbenchError("model has no power iterates; build it with lipschitz.attach_power_iterates first")
    return affine


@torch.no_grad()
def power_step(layer: nn.Module, dtype: torch.dtype | None = None) -> None:
    """One step v <- A^T A v / ||A^T A v||, where A is the layer's linear operator, in `dtype`
    (default: the iterate's)."""
    iterate = getattr(layer, ITERATE)
    v, weight = iterate.to(dtype or iterate.dtype), layer.weight.to(dtype or iterate.dtype)
    w = transposed_operator(layer, weight, v.shape)(linear_operator(layer, weight)(v))
    norm = w.norm()
    if norm > 0:  # a zero operator keeps its iterate; its norm is 0 whatever v is
        iterate.copy_(w / norm)


def power_estimate(layer: nn.Module, dtype: torch.dtype | None = None) -> torch.Tensor:
    """||A v|| / ||v|| for the stored iterate v: the spectral-norm estimate (never above the true
    norm), differentiable in the weight."""
    weight = layer.weight if dtype is None else layer.weight.to(dtype)
    v = getattr(layer, ITERATE).to(weight.dtype)
    return linear_operator(layer, weight)(v).norm() / v.norm()


@torch.no_grad()
def converge(model: nn.Module, tolerance: float = 1e-7, max_iterations: int = 100_000) -> None:
    """Run each layer's power iteration, in float64, until its estimate is within `tolerance` (relative).

    Training ends with this, so that a checkpoint holds iterates from which further
    training starts well. The estimates rise monotonically, and their increments shrink
    geometrically at the rate r of the slowest remaining direction, so the distance still
    to go is about the last increment times r / (1 - r). Iteration stops once that stays
    below the tolerance for three steps, or the increments reach float64 rounding; running
    out of steps is an error.
    """
    for layer in iterated_layers(lipschitz_layers(model)):
        estimate, increment, settled = float(power_estimate(layer, torch.float64)), math.inf, 0
        for _ in range(max_iterations):
            power_step(layer, torch.float64)
            current = float(power_estimate(layer, torch.float64))
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
