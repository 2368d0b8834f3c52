"""GloRo: sound per-layer bounds against independent SVDs, certificates that ignore stored iterates,
soundness against attacks and slopes, monotonicity, training's power iteration."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import nn

from rsbench import hub, lipschitz, registry
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.gloro import GloRo, radii, with_bottom
from rsbench.errors import RsbenchError
from rsbench.layers import Normalize
from rsbench.specs import DefenseSpec
from rsbench.training.gloro import fit

INPUT_SHAPE = (1, 6, 6)


def tiny_cnn(seed: int = 0) -> nn.Sequential:
    """Random ReLU CNN on 1x6x6 inputs with every supported layer kind, including overlapping pooling."""
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize((0.5,), (0.25,)),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(4, 6, 2, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 12),
        nn.ReLU(),
        nn.Linear(12, 4),
    )


@pytest.fixture(scope="module")
def cnn() -> nn.Sequential:
    return tiny_cnn()


def estimate(layer: nn.Module) -> float:
    """The layer's current power-iteration estimate, in float64."""
    with torch.no_grad():
        return float(lipschitz.power_estimate(layer, torch.float64))


def explicit_conv(conv: nn.Conv2d, shape: tuple[int, ...], *, circular: bool = False) -> scipy.sparse.csr_matrix:
    """A convolution's linear part as a sparse matrix, entered tap by tap from its definition.

    y[o, i, j] = sum over c, a, b of w[o, c, a, b] * x[c, s*i - p + d*a, s*j - p + d*b], with x
    zero outside its C x H x W grid; with `circular`, x lives on the torus of the padded size
    instead, indices wrap around it and there are padded-size / stride outputs per axis.
    """
    w = conv.weight.detach().double().numpy()
    out_channels, group_in, kh, kw = w.shape
    channels, h, wd = shape
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    if circular:
        grid, offset = (h + 2 * ph, wd + 2 * pw), 0
        out_h, out_w = grid[0] // sh, grid[1] // sw
    else:
        grid, offset = (h, wd), 1
        out_h, out_w = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    i, j = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    rows, cols, values = [], [], []
    for o in range(out_channels):
        for c in range(group_in):
            source = o // (out_channels // conv.groups) * group_in + c
            for a in range(kh):
                for b in range(kw):
                    y, x = sh * i - offset * ph + dh * a, sw * j - offset * pw + dw * b
                    if circular:
                        y, x = y % grid[0], x % grid[1]
                    inside = (0 <= y) & (y < grid[0]) & (0 <= x) & (x < grid[1])
                    rows.append(((o * out_h + i) * out_w + j)[inside])
                    cols.append(((source * grid[0] + y) * grid[1] + x)[inside])
                    values.append(np.full(inside.sum(), w[o, c, a, b]))
    size = (out_channels * out_h * out_w, channels * grid[0] * grid[1])
    return scipy.sparse.coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), size).tocsr()


def top_singular(matrix: scipy.sparse.spmatrix | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two largest singular values (descending) and their right singular vectors (rows):
    numpy's SVD for small matrices, scipy's ARPACK for large sparse ones."""
    if max(matrix.shape) <= 2048:
        _, values, vt = np.linalg.svd(matrix.toarray() if scipy.sparse.issparse(matrix) else matrix)
        return values[:2], vt[:2]
    _, values, vt = scipy.sparse.linalg.svds(matrix, k=2, tol=1e-14, random_state=0)
    order = np.argsort(values)[::-1]
    return values[order], vt[order]


def reference_below(net: nn.Sequential, input_shape: tuple[int, ...]) -> float:
    """Product of the exact norms (SVDs of explicit operators) of a Conv2d/Linear/ReLU/Flatten net's
    layers below the logits."""
    x, below = torch.zeros(1, *input_shape), 1.0
    for layer in list(net)[:-1]:
        if isinstance(layer, nn.Conv2d):
            below *= top_singular(explicit_conv(layer, tuple(x.shape[1:])))[0][0]
        elif isinstance(layer, nn.Linear):
            below *= linear_norm(layer)
        else:
            assert isinstance(layer, (nn.ReLU, nn.Flatten))
        x = layer(x)
    return below


def linear_norm(layer: nn.Linear) -> float:
    return float(np.linalg.svd(layer.weight.detach().double().numpy(), compute_uv=False)[0])


def reference_k(weight: torch.Tensor, below: float) -> torch.Tensor:
    """K_ij = ||w_i - w_j|| * below, entry by entry in numpy."""
    w = weight.detach().double().numpy()
    return torch.tensor([[np.linalg.norm(a - b) * below for b in w] for a in w], dtype=torch.float64)


def pgd_min_margin(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, radius: torch.Tensor, steps: int = 40, restarts: int = 2
) -> torch.Tensor:
    """Smallest margin y_label - y_target that targeted l2 PGD finds within each point's ball, over every target.

    One attack per (point, other class), from random starts; there is no box constraint,
    since the certified radius holds in all of R^d. Negative means the label was lost.
    """
    num_classes = model(x[:1]).shape[1]
    targets = torch.arange(num_classes).repeat(len(x))
    keep = targets != labels.repeat_interleave(num_classes)
    point = torch.arange(len(x)).repeat_interleave(num_classes)[keep]
    x0, label, target = x[point], labels[point], targets[keep]
    scale = radius[point].view(-1, *[1] * (x.dim() - 1)).float()

    def margin(delta: torch.Tensor) -> torch.Tensor:
        logits = model(x0 + delta)
        return logits.gather(1, label[:, None])[:, 0] - logits.gather(1, target[:, None])[:, 0]

    def unit(v: torch.Tensor) -> torch.Tensor:
        return v / v.flatten(1).norm(dim=1).clamp(min=1e-12).view_as(scale)

    generator = torch.Generator().manual_seed(0)
    best = margin(torch.zeros_like(x0)).detach()
    for _ in range(restarts):
        delta = unit(torch.randn(x0.shape, generator=generator)) * scale * torch.rand(scale.shape, generator=generator)
        for _ in range(steps):
            delta.requires_grad_(True)
            current = margin(delta)
            (grad,) = torch.autograd.grad(current.sum(), delta)
            best = torch.minimum(best, current.detach())
            delta = delta.detach() - 2.5 * scale / steps * unit(grad)
            delta = delta * (scale / delta.flatten(1).norm(dim=1).clamp(min=1e-12).view_as(scale)).clamp(max=1.0)
        best = torch.minimum(best, margin(delta).detach())
    return torch.full((len(x),), torch.inf).scatter_reduce(0, point, best, "amin")


CONVS = [
    ({"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1}, (2, 6, 6)),
    ({"in_channels": 3, "out_channels": 4, "kernel_size": 4, "stride": 2, "padding": 1}, (3, 7, 7)),
    ({"in_channels": 4, "out_channels": 4, "kernel_size": 3, "stride": 2, "dilation": 2, "groups": 2}, (4, 9, 8)),
    ({"in_channels": 2, "out_channels": 5, "kernel_size": (3, 2), "stride": (1, 2), "padding": (2, 0)}, (2, 5, 6)),
]
"""Convolutions (keyword arguments, input shape) with stride, padding, dilation, groups and rectangular kernels."""


def seeded_conv(options: dict[str, object]) -> nn.Conv2d:
    torch.manual_seed(2)
    return nn.Conv2d(**options)


@pytest.mark.parametrize("shape", [(20, 30), (30, 7)])
def test_linear_bound_is_the_largest_singular_value(shape: tuple[int, int]) -> None:
    torch.manual_seed(1)
    layer = nn.Linear(shape[1], shape[0])
    assert lipschitz.operator_norm(layer) == pytest.approx(linear_norm(layer), rel=1e-12)


@pytest.mark.parametrize("options, shape", CONVS)
def test_small_conv_bound_is_the_exact_norm_and_the_circulant_bound_is_above_it(
    options: dict[str, object], shape: tuple[int, ...]
) -> None:
    conv = seeded_conv(options)
    matrix = explicit_conv(conv, shape)
    x = torch.randn(shape, dtype=torch.float64)
    image = lipschitz.linear_operator(conv, conv.weight.detach().double())(x)
    assert np.allclose(image.flatten().numpy(), matrix @ x.flatten().numpy())  # the reference is the layer
    exact = top_singular(matrix)[0][0]
    assert lipschitz.operator_norm(conv, shape) == pytest.approx(exact, rel=1e-12)
    assert exact <= lipschitz.circulant_bound(conv, shape) < 1.5 * exact


@pytest.mark.parametrize(
    "options, shape",
    [
        ({"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1}, (2, 6, 6)),
        ({"in_channels": 3, "out_channels": 4, "kernel_size": 4, "stride": 2, "padding": 1}, (3, 6, 6)),
        (
            {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "stride": 2, "dilation": 2, "groups": 2,
             "padding": 1},
            (4, 8, 6),
        ),
    ],
)
def test_circulant_bound_is_the_norm_of_the_circular_convolution(
    options: dict[str, object], shape: tuple[int, ...]
) -> None:
    # on a torus of the padded size (a multiple of the stride) the bound is attained exactly
    conv = seeded_conv(options)
    circular = top_singular(explicit_conv(conv, shape, circular=True))[0][0]
    assert lipschitz.circulant_bound(conv, shape) == pytest.approx(circular, rel=1e-10)


def large_conv_net() -> tuple[nn.Sequential, tuple[int, ...]]:
    """A convolution on 2x48x48 inputs, too large for the dense path, under one Linear."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 24 * 24, 3))
    return net, (2, 48, 48)


def test_large_conv_takes_the_circulant_upper_bound() -> None:
    net, shape = large_conv_net()
    conv = net[0]
    assert np.prod(shape) ** 2 > lipschitz.DENSE_LIMIT
    exact = top_singular(explicit_conv(conv, shape))[0][0]
    bound = lipschitz.operator_norm(conv, shape)
    assert bound == lipschitz.circulant_bound(conv, shape)
    assert exact <= bound < 1.01 * exact


def corrupt_iterates(net: nn.Module, shapes: dict[nn.Module, tuple[int, ...]], kind: str) -> None:
    """Overwrite each stored power iterate with its layer's second right singular vector, zeros or noise."""
    generator = torch.Generator().manual_seed(5)
    for layer, shape in shapes.items():
        if kind == "second":
            linear = isinstance(layer, nn.Linear)
            matrix = layer.weight.detach().double().numpy() if linear else explicit_conv(layer, shape)
            vector = torch.tensor(top_singular(matrix)[1][1].copy()).view(shape)
        elif kind == "zeros":
            vector = torch.zeros(shape)
        else:
            vector = torch.randn(shape, generator=generator)
        getattr(layer, lipschitz.ITERATE).copy_(vector)


@pytest.mark.parametrize("kind", ["second", "zeros", "random"])
def test_certificates_do_not_depend_on_stored_iterates(kind: str) -> None:
    # tiny_cnn: every bound exact, so K and the radii are the exact ones; the large conv: never below them
    net = lipschitz.attach_power_iterates(tiny_cnn(), INPUT_SHAPE)
    shapes = {net[1]: (1, 6, 6), net[4]: (4, 3, 3), net[7]: (24,)}
    corrupt_iterates(net, shapes, kind)
    if kind == "second":
        assert estimate(net[7]) < 0.99 * linear_norm(net[7])  # what the stored vector alone would suggest
    norms = [top_singular(explicit_conv(net[i], shapes[net[i]]))[0][0] for i in (1, 4)] + [linear_norm(net[7])]
    exact = reference_k(net[9].weight, 4.0 * norms[0] * 2.0 * norms[1] * norms[2])  # Normalize 1/0.25, pool sqrt(4)
    defense = GloRo(net, 4, 0.1, input_shape=INPUT_SHAPE)
    assert torch.allclose(defense.k, exact, rtol=1e-10)
    x = torch.rand(32, *INPUT_SHAPE)
    with torch.no_grad():
        assert torch.allclose(defense.certify_batch(x)[1], radii(net(x), exact)[1], rtol=1e-9)

    large, shape = large_conv_net()
    lipschitz.attach_power_iterates(large, shape)
    corrupt_iterates(large, {large[0]: shape}, kind)
    below = top_singular(explicit_conv(large[0], shape))[0][0]
    defense = GloRo(large, 3, 0.1, input_shape=shape)
    assert (defense.k >= reference_k(large[3].weight, below)).all()
    x = torch.rand(16, *shape)
    with torch.no_grad():
        assert (defense.certify_batch(x)[1] <= radii(large(x), reference_k(large[3].weight, below))[1]).all()


@pytest.mark.parametrize("shape", [(20, 30), (30, 7)])
def test_training_power_iteration_converges_to_dense_spectral_norm(shape: tuple[int, int]) -> None:
    torch.manual_seed(1)
    layer = nn.Linear(shape[1], shape[0])
    net = lipschitz.attach_power_iterates(nn.Sequential(layer, nn.ReLU(), nn.Linear(shape[0], 2)))
    few = estimate(layer)
    lipschitz.converge(net)
    exact = linear_norm(layer)
    assert few < exact  # a random start under-estimates
    assert estimate(layer) == pytest.approx(exact, rel=1e-6)


def test_training_power_iteration_converges_when_the_top_singular_values_are_close() -> None:
    # sigma_2 / sigma_1 = 0.9995: a stop at relative increments of 1e-9 would leave the estimate 5e-7 short
    torch.manual_seed(10)
    u, _ = torch.linalg.qr(torch.randn(24, 24, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(24, 24, dtype=torch.float64))
    singular = torch.cat([torch.tensor([2.0, 1.999]), torch.linspace(1.5, 0.1, 22)]).double()
    layer = nn.Linear(24, 24)
    with torch.no_grad():
        layer.weight.copy_(u @ torch.diag(singular) @ v.T)
    net = lipschitz.attach_power_iterates(nn.Sequential(layer, nn.ReLU(), nn.Linear(24, 2)))
    lipschitz.converge(net)
    exact = linear_norm(layer)
    assert exact * (1 - 2e-7) < estimate(layer) <= exact


@pytest.mark.parametrize("options, shape", CONVS)
def test_training_power_iteration_converges_to_conv_norm(options: dict[str, object], shape: tuple[int, ...]) -> None:
    conv = seeded_conv(options)
    matrix = explicit_conv(conv, shape)
    weight = conv.weight.detach().double()
    u = torch.randn(matrix.shape[0], dtype=torch.float64)
    transposed = lipschitz.transposed_operator(conv, weight, torch.Size(shape))
    output_shape = lipschitz.linear_operator(conv, weight)(torch.zeros(shape, dtype=torch.float64)).shape
    assert np.allclose(transposed(u.view(output_shape)).flatten().numpy(), matrix.T @ u.numpy())
    net = lipschitz.attach_power_iterates(nn.Sequential(conv, nn.Flatten(), nn.Linear(matrix.shape[0], 2)), shape)
    lipschitz.converge(net)
    assert estimate(conv) == pytest.approx(top_singular(matrix)[0][0], rel=1e-6)


def test_margin_bound_is_weight_difference_times_product_of_spectral_norms() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5))
    defense = GloRo(net, 5, 0.1)
    norms = [torch.linalg.matrix_norm(net[i].weight.detach().double(), ord=2) for i in (1, 3)]
    below = float(norms[0] * norms[1])
    w = net[5].weight.detach().double()
    x = torch.rand(3, *INPUT_SHAPE)
    with torch.no_grad():
        logits = net(x).double()
        bottom = defense.surrogate()(x)[:, -1].double()
    for row in range(3):
        j = int(logits[row].argmax())
        expected = max(logits[row, i] + 0.1 * (w[i] - w[j]).norm() * below for i in range(5) if i != j)
        assert float(bottom[row]) == pytest.approx(float(expected), rel=1e-5)
        for i in range(5):
            assert float(defense.k[i, j]) == pytest.approx(float((w[i] - w[j]).norm() * below), rel=1e-6)


def test_overlapping_max_pool_bound_is_attained() -> None:
    # a lone pixel that is the maximum of all 9 windows containing it moves 9 outputs by 1: ratio exactly 3
    pool = nn.MaxPool2d(3, stride=1)
    a = torch.zeros(1, 1, 7, 7)
    a[0, 0, 3, 3] = 1.0
    assert lipschitz.fixed_bound(pool) == pytest.approx(3.0)
    assert float((pool(a) - pool(torch.zeros_like(a))).norm()) == pytest.approx(3.0)
    assert lipschitz.fixed_bound(nn.MaxPool2d(2)) == 1.0
    torch.manual_seed(4)
    for _ in range(200):
        a, b = torch.randn(1, 2, 7, 7), torch.randn(1, 2, 7, 7)
        assert float((pool(a) - pool(b)).norm()) <= 3.0 * float((a - b).norm()) + 1e-6


def test_bound_is_never_below_observed_gradient_norms_and_slopes(cnn: nn.Sequential) -> None:
    net = cnn
    defense = GloRo(net, 4, 0.1, input_shape=INPUT_SHAPE)
    off_diagonal = ~torch.eye(4, dtype=torch.bool)
    torch.manual_seed(5)
    x = torch.rand(64, *INPUT_SHAPE, requires_grad=True)
    logits = net(x)
    gradient_norms = torch.zeros(4, 4, dtype=torch.float64)
    for i, j in off_diagonal.nonzero().tolist():
        (grad,) = torch.autograd.grad((logits[:, i] - logits[:, j]).sum(), x, retain_graph=True)
        gradient_norms[i, j] = grad.flatten(1).norm(dim=1).max()
    assert (gradient_norms[off_diagonal] > 0).all()
    assert (defense.k[off_diagonal] >= gradient_norms[off_diagonal]).all()
    nearby = (x + 0.05 * torch.randn(x.shape)).detach()
    change = (net(nearby) - logits).detach().double()
    distance = (nearby - x).detach().flatten(1).norm(dim=1).double()
    slopes = (change[:, :, None] - change[:, None, :]).abs() / distance[:, None, None]
    assert (defense.k >= slopes.amax(dim=0)).all()


def test_linear_model_radius_is_exact_and_pgd_breaks_just_beyond_it() -> None:
    torch.manual_seed(6)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 5))
    defense = GloRo(net, 5, 0.1)
    x = torch.rand(16, *INPUT_SHAPE)
    top, radius = defense.certify_batch(x)
    assert (radius > 0).all()
    radius = radius.float()
    assert (pgd_min_margin(net, x, top, 0.999 * radius) > 0).all()
    assert (pgd_min_margin(net, x, top, 1.01 * radius) < 0).all()


def test_pgd_never_breaks_a_certified_point_of_a_relu_net(cnn: nn.Sequential) -> None:
    net = cnn
    defense = GloRo(net, 4, 0.1, input_shape=INPUT_SHAPE)
    torch.manual_seed(7)
    x = torch.rand(32, *INPUT_SHAPE)
    top, radius = defense.certify_batch(x)
    radius = radius.float()
    assert (radius > 0).float().mean() > 0.9
    assert (pgd_min_margin(net, x, top, radius) > 0).all()
    # nor do 500 random perturbations per point, on the certified sphere and inside it
    directions = torch.randn(500, *x.shape, generator=torch.Generator().manual_seed(11))
    directions = directions / directions.flatten(2).norm(dim=2)[..., None, None, None]
    scales = torch.cat([torch.ones(250), torch.rand(250, generator=torch.Generator().manual_seed(12))])
    with torch.no_grad():
        moved = net((x + scales.view(-1, 1, 1, 1, 1) * radius.view(1, -1, 1, 1, 1) * directions).flatten(0, 1))
    assert (moved.argmax(dim=1).view(500, -1) == top).all()
    # the same attack does flip these points once it may go far enough
    assert (pgd_min_margin(net, x, top, 50 * radius) < 0).float().mean() > 0.5


def test_certification_is_monotonic_in_epsilon_and_under_perturbation(cnn: nn.Sequential) -> None:
    defense = GloRo(cnn, 4, 0.1, input_shape=INPUT_SHAPE)
    torch.manual_seed(8)
    epsilons = torch.linspace(0.0, 0.01, 26).tolist()
    for x in torch.rand(20, *INPUT_SHAPE):
        answers = [defense.certified_at(x, eps) for eps in epsilons]
        assert answers == sorted(answers, reverse=True)  # True ... True False ... False
    # certified at eps at x => certified at eps - ||x' - x|| at x' (Lipschitz-based certifiers are monotonic)
    x = torch.rand(64, *INPUT_SHAPE)
    _, radius = defense.certify_batch(x)
    step = torch.randn(x.shape)
    step = 0.5 * radius.float().view(-1, 1, 1, 1) * step / step.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    _, moved_radius = defense.certify_batch(x + step)
    assert (moved_radius >= radius - step.flatten(1).norm(dim=1).double() - 1e-6).all()


def test_bottom_wins_exactly_when_not_certified_at_epsilon(cnn: nn.Sequential) -> None:
    torch.manual_seed(9)
    x = torch.rand(40, *INPUT_SHAPE)
    _, radius = GloRo(cnn, 4, 0.1, input_shape=INPUT_SHAPE).certify_batch(x)
    ordered = radius.sort().values
    epsilon = float(ordered[19] + ordered[20]) / 2  # half the points certified, none on the boundary
    defense = GloRo(cnn, 4, epsilon, input_shape=INPUT_SHAPE)
    logits = defense.surrogate()(x)
    assert logits.shape == (40, 5)
    outcomes = set()
    for row, point in enumerate(x):
        abstains = bool(logits[row].argmax() == 4)
        assert abstains == (defense.predict(point) is None) == (not defense.certified_at(point, epsilon))
        outcomes.add(abstains)
    assert outcomes == {True, False}


def test_iterates_live_in_the_state_dict_and_load() -> None:
    net = lipschitz.attach_power_iterates(tiny_cnn(), INPUT_SHAPE)
    state = net.state_dict()
    assert [key for key in state if key.endswith(lipschitz.ITERATE)] == [f"{i}.{lipschitz.ITERATE}" for i in (1, 4, 7)]
    fresh = lipschitz.attach_power_iterates(tiny_cnn(seed=1), INPUT_SHAPE)
    fresh.load_state_dict(state)
    assert torch.equal(GloRo(fresh, 4, 0.1, input_shape=INPUT_SHAPE).k, GloRo(net, 4, 0.1, input_shape=INPUT_SHAPE).k)


class Square(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class Reordered(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[1](self[0](x))


@pytest.mark.parametrize(
    "layers, message",
    [
        ([Square()], "no Lipschitz bound for layer Square"),
        ([nn.BatchNorm1d(6)], "no Lipschitz bound for layer BatchNorm1d"),
        ([nn.Dropout()], "no Lipschitz bound for layer Dropout"),
        ([Reordered(nn.Linear(6, 6), nn.ReLU())], "no Lipschitz bound for layer Reordered"),
        ([nn.Conv2d(1, 1, 3, padding="same")], "numeric zero padding"),
        ([nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")], "numeric zero padding"),
        ([nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3), nn.ReLU()], "Linear last layer"),
    ],
)
def test_layers_without_known_bound_are_refused(layers: list[nn.Module], message: str) -> None:
    net = nn.Sequential(nn.Linear(6, 6), *layers, nn.Linear(6, 3)) if "last" not in message else nn.Sequential(*layers)
    with pytest.raises(RsbenchError, match=message):
        GloRo(net, 3, 0.1)


def test_dilated_pooling_and_missing_or_other_input_shapes_are_refused() -> None:
    with pytest.raises(RsbenchError, match="MaxPool2d"):
        lipschitz.fixed_bound(nn.MaxPool2d(2, dilation=2))
    with pytest.raises(RsbenchError, match="input shape"):
        GloRo(tiny_cnn(), 4, 0.1)
    # the convolutions' bounds hold for the shape they were computed on, so another shape is refused
    with pytest.raises(RsbenchError, match=r"expected inputs of shape \(1, 6, 6\), got \(1, 7, 7\)"):
        GloRo(tiny_cnn(), 4, 0.1, input_shape=INPUT_SHAPE).certify_batch(torch.rand(1, 1, 7, 7))


GLORO_DEFENSES = sorted(name for name, spec in registry.all_specs("defenses").items()
                        if spec.kind == "gloro" and spec.dataset.name == "digits")


@pytest.mark.parametrize("name", GLORO_DEFENSES)
def test_registry_defense_certifies_and_withstands_pgd(name: str) -> None:
    spec = registry.get_defense(name)
    checkpoint = hub.load_checkpoint(spec.weights)
    assert any(key.endswith(lipschitz.ITERATE) for key in checkpoint)  # checkpoints keep their training iterates
    defense = load_defense(name)
    x, y = load_dataset("digits", "test").tensors
    exact = reference_k(defense.layers[-1].weight, reference_below(defense.model, tuple(x.shape[1:])))
    assert torch.allclose(defense.k, exact, rtol=1e-10)
    x, y = x[:100], y[:100]
    top, radius = defense.certify_batch(x)
    assert (top == y).float().mean() > 0.8
    assert ((top == y) & (radius >= spec.epsilon)).float().mean() > 0.3
    certified = (radius > 0).nonzero()[:20, 0]
    assert (pgd_min_margin(defense.model, x[certified], top[certified], radius[certified]) > 0).all()
    # trained GloRo nets are nearly tight: gradients reach most of K, but never exceed it
    inputs = x.clone().requires_grad_(True)
    logits = defense.model(inputs)
    for i, j in (~torch.eye(10, dtype=torch.bool)).nonzero().tolist():
        (grad,) = torch.autograd.grad((logits[:, i] - logits[:, j]).sum(), inputs, retain_graph=True)
        assert float(grad.flatten(1).norm(dim=1).max()) <= float(defense.k[i, j])


def small_spec(epochs: int) -> DefenseSpec:
    return DefenseSpec.model_validate(
        {
            "name": "gloro-test",
            "kind": "gloro",
            "dataset": {"name": "digits"},
            "architecture": "digits-lipschitz-cnn",
            "num_classes": 10,
            "epsilon": 0.25,
            "weights": {"source": "package", "filename": "none.pt", "sha256": "0" * 64},
            "training": {"recipe": "gloro", "epochs": epochs, "batch_size": 32, "lr": 0.003, "seed": 3},
        }
    )


def dense_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return lipschitz.attach_power_iterates(net)


def test_fit_is_seeded_lowers_the_gloro_loss_and_leaves_converged_iterates() -> None:
    x, y = load_dataset("digits", "train").tensors
    x, y = x[:320], y[:320]

    def gloro_loss(net: nn.Module) -> float:
        k = GloRo(net, 10, 0.25).k
        with torch.no_grad():
            return float(nn.functional.cross_entropy(with_bottom(net(x), k, 0.25), y))

    trained = [dense_net(), dense_net()]
    for net in trained:
        fit(net, torch.utils.data.TensorDataset(x, y), small_spec(epochs=5), torch.device("cpu"))
    assert all(a.equal(b) for a, b in zip(trained[0].state_dict().values(), trained[1].state_dict().values()))
    assert gloro_loss(trained[0]) < 0.9 * gloro_loss(dense_net())
    layers = lipschitz.iterated_layers(lipschitz.lipschitz_layers(trained[0]))
    assert [estimate(layer) for layer in layers] == pytest.approx(
        [float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2)) for layer in layers], rel=1e-6
    )


def test_fit_refuses_a_model_without_power_iterates() -> None:
    x, y = load_dataset("digits", "train").tensors
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(RsbenchError, match="no power iterates"):
        fit(net, torch.utils.data.TensorDataset(x[:8], y[:8]), small_spec(epochs=1), torch.device("cpu"))


def test_fit_refuses_unknown_options() -> None:
    x, y = load_dataset("digits", "train").tensors
    spec = small_spec(epochs=1)
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"options": {"epsilon_factr": 1.5}})})
    with pytest.raises(RsbenchError, match="unknown GloRo training options"):
        fit(dense_net(), torch.utils.data.TensorDataset(x[:8], y[:8]), spec, torch.device("cpu"))
