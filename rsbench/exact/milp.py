"""Exact l_inf verification of a ReLU network as a mixed-integer linear program, solved by HiGHS through SciPy.

Why: every leaderboard ranks attacks against each other, and none says how far the best one is from the truth.
For a network small enough, a mixed-integer program (Tjeng, Xiao & Tedrake, "Evaluating Robustness of Neural
Networks with Mixed Integer Programming", ICLR 2019) decides whether any point of the ball changes the label, and
finds the closest one that does: the ground truth an attack's recall and a certificate's tightness are measured
against. This module is the program; `rsbench.exact.verifier` decides with it, one input at a time.

The formulation. The network is read as affine maps with a ReLU between consecutive ones (a Conv2d is the sparse
matrix of its convolution, Flatten the identity on flattened activations, two affine layers in a row one map). Each
ReLU's pre-activation z = W a + b has bounds l <= z <= u over the ball (the verifier's, from KW and IBP). A neuron
with l >= 0 is the identity and one with u <= 0 is zero; only an unstable one (l < 0 < u) needs a binary d, with
the exact encoding

    a >= 0,  a >= z,  a <= u d,  a <= z - l (1 - d).

The input ranges over the ball clipped to [0, 1]. Per class j, three objectives: reach (`solve_reach`) asks for a
point with f_y - f_j <= ROBUST_MARGIN, descending f_y - f_j and stopping at the first one found, so that HiGHS
declaring it infeasible proves that class out of reach (its dual bound on min f_y - f_j, valid even when a search is
cut short, passed ROBUST_MARGIN); worst (`solve_margin`) finds min f_y - f_j with its dual bound; distance
(`solve_distance`) minimizes t subject to |x' - x|_inf <= t and f_j - f_y >= MARGIN, t at most a ceiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn
from torch.nn import functional as F

from rsbench.defenses.kw import supported_layers
from rsbench.errors import RsbenchError

NAME = "the MILP verifier"
ROBUST_MARGIN = 1e-6
"""A class is ruled out only when the lower bound on f_y - f_j exceeds this: HiGHS's feasibility tolerances are
1e-7 on each constraint, so a bound of 0 up to rounding proves nothing."""
MARGIN = 1e-4
"""The closest example is the closest point where some class beats the label by at least this much, so that the
float32 forward pass that re-checks it agrees (a point exactly on the boundary could go either way); it moves the
distance by MARGIN over the margin's gradient norm, far below a pixel level."""
@dataclass(frozen=True)
class Affine:
    """One affine map z = W a + b between ReLU layers, in float64 on flattened activations."""

    weight: sparse.csr_array
    bias: np.ndarray


def affine_maps(model: nn.Module, input_shape: tuple[int, ...]) -> list[Affine]:
    """The network as affine maps, a ReLU after each but the last (the logits)."""
    shape, pending, maps = tuple(input_shape), None, []
    for layer in supported_layers(model, NAME):
        if isinstance(layer, nn.ReLU):
            if pending is None:
                raise RsbenchError(f"{NAME} needs an affine layer (Linear or Conv2d) before every ReLU")
            maps.append(pending)
            pending = None
            continue
        with torch.no_grad():
            out_shape = tuple(layer(torch.zeros(1, *shape, dtype=layer_dtype(layer))).shape[1:])
        if not isinstance(layer, nn.Flatten):  # Flatten keeps the row-major order of the flattened activations
            step = _affine(layer, shape)
            pending = step if pending is None else Affine(step.weight @ pending.weight,
                                                          step.weight @ pending.bias + step.bias)
        shape = out_shape
    if pending is None:
        raise RsbenchError(f"{NAME} needs the network to end with an affine layer (the logits)")
    return [*maps, pending]


def layer_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype a layer computes in (float32 for one without parameters)."""
    parameter = next(layer.parameters(), None)
    return parameter.dtype if parameter is not None else torch.float32


def _affine(layer: nn.Module, shape: tuple[int, ...]) -> Affine:
    """A Linear's or Conv2d's matrix (the response to each unit input, without the bias) and its bias."""
    size = math.prod(shape)
    weight = layer.weight.detach().double().cpu()
    bias = layer.bias.detach().double().cpu() if layer.bias is not None else None
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            matrix = weight.numpy()
            full_bias = bias if bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
        else:
            basis = torch.eye(size, dtype=torch.float64).view(size, *shape)
            responses = F.conv2d(basis, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
            matrix = responses.reshape(size, -1).T.numpy()
            spatial = math.prod(responses.shape[2:])
            full_bias = (bias if bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64))
            full_bias = full_bias.repeat_interleave(spatial)
    return Affine(sparse.csr_array(matrix), full_bias.numpy().copy())


@dataclass(frozen=True)
class Solve:
    """One MILP's outcome; `value` and `bound` include the objective's constant."""

    status: Literal["optimal", "limit", "infeasible", "failed"]
    value: float | None
    """Objective at the best point found (None: none found)."""
    bound: float | None
    """The solver's dual bound: a proven lower bound on the minimum (None: none proven)."""
    point: np.ndarray | None
    """The input part of the best point found."""


class Problem:
    """The constraints of one input's MILP; the objective of each class is set by `solve_margin` / `solve_distance`.

    Variables: the input x' (n), then per ReLU layer its outputs a and one binary per unstable neuron, then (closest
    search) the distance t.
    """

    def __init__(self, maps: list[Affine], x: np.ndarray, eps: float, bounds: list[tuple[np.ndarray, np.ndarray]],
                 *, closest: bool) -> None:
        self.maps, n = maps, x.size
        lower, upper, integral = [np.maximum(x - eps, 0.0)], [np.minimum(x + eps, 1.0)], [np.zeros(n)]
        layers, previous, count = [], slice(0, n), n
        for affine, (low, high) in zip(maps, bounds):
            unstable = np.flatnonzero((low < 0) & (high > 0))
            outputs = slice(count, count + low.size)
            binaries = slice(outputs.stop, outputs.stop + unstable.size)
            layers.append((affine, low, high, previous, outputs, unstable, binaries))
            lower += [np.maximum(low, 0.0), np.zeros(unstable.size)]
            upper += [np.maximum(high, 0.0), np.ones(unstable.size)]
            integral += [np.zeros(low.size), np.ones(unstable.size)]
            previous, count = outputs, binaries.stop
        self.last = previous
        self.distance = count if closest else None
        if closest:
            lower, upper, integral = lower + [np.zeros(1)], upper + [np.full(1, eps)], integral + [np.zeros(1)]
            count += 1
        self.columns = count
        blocks, row_low, row_high = [], [], []
        for affine, low, high, previous, outputs, unstable, binaries in layers:
            active = np.flatnonzero(low >= 0)
            index = np.arange(unstable.size)
            blocks.append(self._rows(-affine.weight[active], previous, [(outputs.start + active, 1.0)]))
            row_low.append(affine.bias[active])  # a - W a' = b
            row_high.append(affine.bias[active])
            blocks.append(self._rows(affine.weight[unstable], previous, [(outputs.start + unstable, -1.0)]))
            row_low.append(np.full(unstable.size, -np.inf))  # z - a <= 0
            row_high.append(-affine.bias[unstable])
            blocks.append(self._rows(-affine.weight[unstable], previous,
                                     [(outputs.start + unstable, 1.0), (binaries.start + index, -low[unstable])]))
            row_low.append(np.full(unstable.size, -np.inf))  # a - z - l d <= -l
            row_high.append(affine.bias[unstable] - low[unstable])
            blocks.append(self._rows(None, previous,
                                     [(outputs.start + unstable, 1.0), (binaries.start + index, -high[unstable])]))
            row_low.append(np.full(unstable.size, -np.inf))  # a - u d <= 0
            row_high.append(np.zeros(unstable.size))
        if closest:  # x' - t <= x and x' + t >= x
            pixels = np.arange(n)
            blocks += [self._rows(None, None, [(pixels, 1.0), (np.full(n, count - 1), -1.0)]),
                       self._rows(None, None, [(pixels, 1.0), (np.full(n, count - 1), 1.0)])]
            row_low += [np.full(n, -np.inf), x]
            row_high += [x, np.full(n, np.inf)]
        self.matrix = sparse.vstack(blocks, format="csr")
        self.row_low, self.row_high = np.concatenate(row_low), np.concatenate(row_high)
        self.lower, self.upper, self.integral = np.concatenate(lower), np.concatenate(upper), np.concatenate(integral)
        self.n = n

    def _rows(self, weight: sparse.csr_array | None, previous: slice | None,
              diagonals: list[tuple[np.ndarray, float | np.ndarray]]) -> sparse.csr_array:
        """Rows of the constraint matrix: `weight` on the previous layer's columns, and in row k the coefficient
        k of each (columns, coefficients) pair at its column k."""
        size = diagonals[0][0].size
        rows = np.concatenate([np.arange(size)] * len(diagonals))
        columns = np.concatenate([column for column, _ in diagonals])
        values = np.concatenate([np.broadcast_to(value, (size,)) for _, value in diagonals]).astype(np.float64)
        block = sparse.coo_array((values, (rows, columns)), shape=(size, self.columns))
        if weight is not None and previous is not None:
            dense_rows = sparse.coo_array(weight)
            block = block + sparse.coo_array((dense_rows.data, (dense_rows.row, dense_rows.col + previous.start)),
                                             shape=(size, self.columns))
        return sparse.csr_array(block)

    def _logit_gap(self, label: int, target: int) -> tuple[np.ndarray, float]:
        """f_y - f_j as (coefficients over all variables, constant)."""
        last = self.maps[-1]
        coefficients = np.zeros(self.columns)
        row = last.weight[[label]].toarray()[0] - last.weight[[target]].toarray()[0]
        coefficients[self.last] = row
        return coefficients, float(last.bias[label] - last.bias[target])

    def solve_margin(self, label: int, target: int, time_limit: float) -> Solve:
        """Minimize f_y - f_j over the ball."""
        coefficients, constant = self._logit_gap(label, target)
        return self._solve(coefficients, constant, self.matrix, self.row_low, self.row_high, self.upper, time_limit)

    def solve_reach(self, label: int, target: int, time_limit: float) -> Solve:
        """Find a point with f_y - f_j <= ROBUST_MARGIN, stopping at the first one (descending f_y - f_j on the way);
        infeasible is the proof that none exists, the dual bound having passed ROBUST_MARGIN."""
        gap, constant = self._logit_gap(label, target)
        matrix = sparse.vstack([self.matrix, sparse.csr_array(gap[None])], format="csr")
        return self._solve(gap, constant, matrix, np.append(self.row_low, -np.inf),
                           np.append(self.row_high, ROBUST_MARGIN - constant), self.upper, time_limit, first=True)

    def solve_distance(self, label: int, target: int, ceiling: float, time_limit: float) -> Solve:
        """Minimize t subject to f_j - f_y >= MARGIN, t <= ceiling."""
        gap, constant = self._logit_gap(label, target)
        objective = np.zeros(self.columns)
        objective[self.distance] = 1.0
        upper = self.upper.copy()
        upper[self.distance] = ceiling
        matrix = sparse.vstack([self.matrix, sparse.csr_array(gap[None])], format="csr")
        return self._solve(objective, 0.0, matrix, np.append(self.row_low, -np.inf),
                           np.append(self.row_high, -MARGIN - constant), upper, time_limit)

    def _solve(self, objective: np.ndarray, constant: float, matrix: sparse.csr_array, row_low: np.ndarray,
               row_high: np.ndarray, upper: np.ndarray, time_limit: float, *, first: bool = False) -> Solve:
        """Solve with HiGHS; `first` stops at the first feasible point (any gap is accepted)."""
        if time_limit <= 0:
            return Solve("limit", None, None, None)
        options = {"time_limit": time_limit, "disp": False} | ({"mip_rel_gap": math.inf} if first else {})
        result = milp(objective, integrality=self.integral, bounds=Bounds(self.lower, upper),
                      constraints=LinearConstraint(matrix, row_low, row_high), options=options)
        if result.status == 2:
            return Solve("infeasible", None, None, None)
        point = result.x[:self.n].copy() if result.x is not None else None
        value = float(result.fun) + constant if result.x is not None else None
        dual = getattr(result, "mip_dual_bound", None)
        if dual is None or not np.isfinite(dual):
            dual = result.fun if result.status == 0 else None
        bound = float(dual) + constant if dual is not None else None
        status = {0: "optimal", 1: "limit"}.get(result.status, "failed")
        return Solve(status, value, bound if status != "failed" else None, point)
