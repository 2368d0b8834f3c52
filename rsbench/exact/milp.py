"""Exact l_inf verification of a ReLU network as a mixed-integer linear program, solved by HiGHS through SciPy.

Why: every leaderboard ranks attacks against each other, and none says how far the best one is from the truth.
For a network small enough, a mixed-integer program (Tjeng, Xiao & Tedrake, "Evaluating Robustness of Neural
Networks with Mixed Integer Programming", ICLR 2019) decides whether any point of the ball changes the label, and
finds the closest one that does: the ground truth an attack's recall and a certificate's tightness are measured
against.

The formulation. The network is read as affine maps with a ReLU between consecutive ones (a Conv2d is the sparse
matrix of its convolution, Flatten the identity on flattened activations, two affine layers in a row one map). Each
ReLU's pre-activation z = W a + b gets bounds l <= z <= u over the ball, the tighter of rsbench's own two sound
ones: the dual network's (`kw.dual_bounds`) and interval arithmetic's (`crown_ibp.interval_relu_bounds`), both on
the ball clipped to [0, 1], which is also the MILP's domain. A neuron with l >= 0 is the identity and one with
u <= 0 is zero; only an unstable one (l < 0 < u) needs a binary d, with the exact encoding

    a >= 0,  a >= z,  a <= u d,  a <= z - l (1 - d).

Deciding: for each class j != y that the margin bounds of KW and IBP do not already rule out, the MILP asks for a
point of the ball with f_y - f_j <= ROBUST_MARGIN, descending f_y - f_j and stopping at the first one it finds.
HiGHS declaring it infeasible is the proof that class j is out of reach: its dual bound on min f_y - f_j, valid
even when a search is cut short, passed ROBUST_MARGIN. The label is robust when every open class is proved out of
reach. A point the solver returns is clipped to the ball and to [0, 1] and re-checked by a float32 forward pass of
the model: only a point the network itself misclassifies counts as adversarial. Anything else (the time limit, a
point the forward pass does not confirm) is unknown, never robust. A cheap attack (`search`, PGD in the job) may be
tried before the first MILP; its point counts on the same confirmation, and spares the solver most adversarial
inputs. `Verifier.solve(..., worst=True)` gives the exact minimum of f_y - f_j instead.

The closest example: per class j, minimize t subject to |x' - x|_inf <= t and f_j - f_y >= MARGIN, t at most eps
and at most the best distance found for an earlier class. Infeasible for every j means robust within eps.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn
from torch.nn import functional as F

from rsbench.defenses.crown_ibp import ibp_margins, interval_relu_bounds
from rsbench.defenses.kw import dual_bounds, supported_layers
from rsbench.errors import RsbenchError

Exact = Literal["robust", "adversarial", "unknown"]
Search = Callable[[torch.Tensor, int, float], "torch.Tensor | None"]
"""A cheap attack (x, label, eps) -> a candidate point or None, tried before the MILP (`rsbench.exact.run`: PGD)."""
NAME = "the MILP verifier"
ROBUST_MARGIN = 1e-6
"""A class is ruled out only when the lower bound on f_y - f_j exceeds this: HiGHS's feasibility tolerances are
1e-7 on each constraint, so a bound of 0 up to rounding proves nothing."""
MARGIN = 1e-4
"""The closest example is the closest point where some class beats the label by at least this much, so that the
float32 forward pass that re-checks it agrees (a point exactly on the boundary could go either way); it moves the
distance by MARGIN over the margin's gradient norm, far below a pixel level."""
BOUND_SLACK = 1e-7
"""Each pre-activation bound is widened by this, covering the rounding of the float64 passes that computed it."""


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


@dataclass(frozen=True)
class Verdict:
    """What the verifier proved about one input."""

    exact: Exact
    example: torch.Tensor | None
    """adversarial: a point of the ball (and [0, 1]) the model misclassifies, confirmed by a forward pass."""
    distance: float | None
    """adversarial: the example's l_inf distance from x."""
    distance_bound: float | None
    """closest search: a proven lower bound on the distance of every adversarial example (the distance itself
    when every solve was optimal)."""
    margin_bound: float | None
    """decision: a proven lower bound on min over j != y of f_y - f_j over the ball (positive when robust)."""
    neurons: int
    """ReLUs of the network."""
    stable: int
    """ReLUs the bounds proved stable (no binary variable)."""
    solves: int
    """MILPs solved (classes the bounds did not rule out, until a verdict)."""
    found_by: Literal["clean", "search", "milp"] | None = None
    """adversarial: x itself misclassified, the cheap search tried first, or the MILP."""
    searched: bool = False
    """Whether the cheap search ran (it runs only when the bounds leave a class open)."""


class Verifier:
    """The MILP of one network, read once; `decide` and `closest` verify one input at a time."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        self.model = model.eval()
        self.exact_model = copy.deepcopy(model).double().cpu().eval()
        self.input_shape = tuple(input_shape)
        self.maps = affine_maps(self.exact_model, self.input_shape)

    def bounds(self, x: torch.Tensor, eps: float, label: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        """Per ReLU layer, flattened lower and upper pre-activation bounds over the ball inside [0, 1]; and lower
        bounds on f_y - f_j for every j. Each is the tighter of KW's and IBP's."""
        batch, labels = x.detach().double().cpu().unsqueeze(0), torch.tensor([label])
        with torch.no_grad():
            kw_margins, kw_relus = dual_bounds(self.exact_model, batch, eps, labels, box=True)
            margins = torch.maximum(kw_margins, ibp_margins(self.exact_model, batch, eps, labels))[0].numpy()
            pairs = zip(kw_relus, interval_relu_bounds(self.exact_model, batch, eps, box=True))
            relus = [(torch.maximum(kl, il).flatten().numpy() - BOUND_SLACK,
                      torch.minimum(ku, iu).flatten().numpy() + BOUND_SLACK) for (kl, ku), (il, iu) in pairs]
        return relus, margins

    def solve(self, x: torch.Tensor, label: int, target: int, eps: float, *, worst: bool = False,
              time_limit: float | None = None) -> Solve:
        """One class's MILP over the ball inside [0, 1], whatever the margin bounds say: `decide`'s (the first point
        with f_label - f_target <= ROBUST_MARGIN, or infeasible), or with `worst` the minimum of f_label - f_target."""
        bounds, _ = self.bounds(x, eps, label)
        problem = _Problem(self.maps, x.detach().double().cpu().flatten().numpy(), eps, bounds, closest=False)
        limit = math.inf if time_limit is None else time_limit
        return problem.solve_margin(label, target, limit) if worst else problem.solve_reach(label, target, limit)

    def decide(self, x: torch.Tensor, label: int, eps: float, time_limit: float | None = None,
               search: Search | None = None) -> Verdict:
        """Is there a point within eps of x (inside [0, 1]) whose label is not `label`?

        `search`, a cheap attack, is tried once before the first MILP (not at all when the bounds decide): a point
        it returns ends the search when the model, re-checked like the MILP's points, misclassifies it.
        """
        deadline = time.monotonic() + (math.inf if time_limit is None else time_limit)
        if self.predict(x) != label:
            return self._verdict("adversarial", x, 0.0, 0.0, None, [], 0, "clean")
        bounds, margins = self.bounds(x, eps, label)
        problem, lowest, undecided, solves = None, math.inf, False, 0
        for j in _candidates(margins, label):
            if margins[j] > ROBUST_MARGIN:
                lowest = min(lowest, float(margins[j]))
                continue
            if problem is None:  # built only for inputs the bounds do not already prove
                if search is not None:
                    found = self._confirmed(x, _as_point(search(x, label, eps)), label, eps)
                    if found is not None:
                        return self._verdict("adversarial", found, self._distance(found, x), None, None, bounds, 0,
                                             "search", True)
                problem = _Problem(self.maps, x.detach().double().cpu().flatten().numpy(), eps, bounds, closest=False)
            solves += 1
            outcome = problem.solve_reach(label, j, deadline - time.monotonic())
            if outcome.status == "infeasible":  # no point of the ball has f_y - f_j <= ROBUST_MARGIN
                lowest = min(lowest, ROBUST_MARGIN)
                continue
            example = self._confirmed(x, outcome.point, label, eps) if (outcome.value or 0) < 0 else None
            if example is not None:
                return self._verdict("adversarial", example, self._distance(example, x), None, None, bounds, solves,
                                     "milp", search is not None)
            undecided = True
        exact: Exact = "unknown" if undecided else "robust"
        return self._verdict(exact, None, None, None, None if undecided else lowest, bounds, solves, None,
                             problem is not None and search is not None)

    def closest(self, x: torch.Tensor, label: int, eps: float, time_limit: float | None = None,
                search: Search | None = None) -> Verdict:
        """The closest point within eps of x (inside [0, 1]) whose label is not `label`, with a proof of its distance.

        A confirmed point of `search` (tried as in `decide`) only lowers the ceiling of the MILPs' distance.
        """
        deadline = time.monotonic() + (math.inf if time_limit is None else time_limit)
        if self.predict(x) != label:
            return self._verdict("adversarial", x, 0.0, 0.0, None, [], 0, "clean")
        bounds, margins = self.bounds(x, eps, label)
        problem, best, example, lower, undecided, solves = None, eps, None, math.inf, False, 0
        found_by: Literal["search", "milp"] = "search"
        for j in _candidates(margins, label):
            if margins[j] > ROBUST_MARGIN:
                continue
            if problem is None:
                if search is not None:
                    example = self._confirmed(x, _as_point(search(x, label, eps)), label, eps)
                    best = self._distance(example, x) if example is not None else eps
                problem = _Problem(self.maps, x.detach().double().cpu().flatten().numpy(), eps, bounds, closest=True)
            solves += 1
            outcome = problem.solve_distance(label, j, best, deadline - time.monotonic())
            if outcome.status == "infeasible":
                continue
            found = self._confirmed(x, outcome.point, label, eps)
            if found is not None and (example is None or self._distance(found, x) < best):
                best, example, found_by = self._distance(found, x), found, "milp"
            if outcome.status != "optimal" or found is None:
                undecided = True
                lower = min(lower, outcome.bound if outcome.bound is not None else 0.0)
        searched = problem is not None and search is not None
        if example is not None:
            return self._verdict("adversarial", example, best, min(best, lower), None, bounds, solves, found_by,
                                 searched)
        return self._verdict("unknown" if undecided else "robust", None, None,
                             lower if undecided else eps, None, bounds, solves, None, searched)

    def predict(self, x: torch.Tensor) -> int:
        """The model's label at x (one input), by a plain forward pass."""
        parameter = next(self.model.parameters())
        with torch.no_grad():
            return int(self.model(x.to(parameter.device, parameter.dtype).unsqueeze(0)).argmax(1))

    def _confirmed(self, x: torch.Tensor, point: np.ndarray | None, label: int, eps: float) -> torch.Tensor | None:
        """The solver's point clipped to the ball and [0, 1], if the float32 model misclassifies it."""
        if point is None:
            return None
        candidate = torch.from_numpy(point).to(x.dtype).view(x.shape)
        candidate = torch.minimum(torch.maximum(candidate, x - eps), x + eps).clamp(0.0, 1.0)
        while True:  # x +- eps rounds in x's dtype; step each pixel that ends past eps one float back towards x
            outside = (candidate.double() - x.double()).abs() > eps
            if not outside.any():
                break
            candidate = torch.where(outside, torch.nextafter(candidate, x), candidate)
        return candidate if self.predict(candidate) != label else None

    @staticmethod
    def _distance(example: torch.Tensor, x: torch.Tensor) -> float:
        return float((example.double() - x.double()).abs().max())

    @staticmethod
    def _verdict(exact: Exact, example: torch.Tensor | None, distance: float | None, distance_bound: float | None,
                 margin_bound: float | None, bounds: list[tuple[np.ndarray, np.ndarray]], solves: int,
                 found_by: Literal["clean", "search", "milp"] | None = None, searched: bool = False) -> Verdict:
        neurons = sum(low.size for low, _ in bounds)
        stable = sum(int(((low >= 0) | (high <= 0)).sum()) for low, high in bounds)
        return Verdict(exact, example, distance, distance_bound, margin_bound, neurons, stable, solves, found_by,
                       searched)


def _as_point(example: torch.Tensor | None) -> np.ndarray | None:
    """A search's example as the solver's points are given: flat float64."""
    return None if example is None else example.detach().double().cpu().flatten().numpy()


def _candidates(margins: np.ndarray, label: int) -> list[int]:
    """The other classes, the one with the lowest margin bound (likeliest to be reached) first."""
    return sorted((j for j in range(len(margins)) if j != label), key=lambda j: float(margins[j]))


class _Problem:
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
