"""Exact verdicts on one input at a time: robust (proved), adversarial (an example confirmed by the model itself), or
unknown, from the MILP of `rsbench.exact.milp`.

Why a layer above the program: a solver's answer is not yet a verdict. Its big-M constants come from sound bounds
computed here, the tighter of rsbench's own two: the dual network's (`kw.dual_bounds`) and interval arithmetic's
(`crown_ibp.interval_relu_bounds`), on the ball clipped to [0, 1]; the same bounds rule out most classes before any
MILP. A point the solver returns is clipped to the ball and to [0, 1] and re-checked by a float32 forward pass of
the model: only a point the network itself misclassifies counts as adversarial. Anything else (the time limit, a
point the forward pass does not confirm) is unknown, never robust.

Deciding (`decide`): the label is robust when every class the bounds leave open is proved out of reach by its MILP.
A cheap attack (`search`, PGD in the job) may be tried before the first MILP; its point counts on the same
confirmation, and spares the solver most adversarial inputs. The closest example (`closest`): the distance MILP per
open class, each one's ceiling the best distance found so far (the search's, if any); infeasible for every class
means robust within eps.
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
from torch import nn

from rsbench.defenses.crown_ibp import ibp_margins, interval_relu_bounds
from rsbench.defenses.kw import dual_bounds
from rsbench.exact.milp import ROBUST_MARGIN, Problem, Solve, affine_maps

Exact = Literal["robust", "adversarial", "unknown"]
Search = Callable[[torch.Tensor, int, float], "torch.Tensor | None"]
"""A cheap attack (x, label, eps) -> a candidate point or None, tried before the MILP (`rsbench.exact.run`: PGD)."""
BOUND_SLACK = 1e-7
"""Each pre-activation bound is widened by this, covering the rounding of the float64 passes that computed it."""


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
    search_found: bool | None = None
    """Whether the cheap search found a confirmed example; None when it did not run (it runs only when the bounds
    leave a class open)."""


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
        problem = Problem(self.maps, x.detach().double().cpu().flatten().numpy(), eps, bounds, closest=False)
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
        problem, lowest, undecided, solves, searched = None, math.inf, False, 0, None
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
                    searched = False
                problem = Problem(self.maps, x.detach().double().cpu().flatten().numpy(), eps, bounds, closest=False)
            solves += 1
            outcome = problem.solve_reach(label, j, deadline - time.monotonic())
            if outcome.status == "infeasible":  # no point of the ball has f_y - f_j <= ROBUST_MARGIN
                lowest = min(lowest, ROBUST_MARGIN)
                continue
            example = self._confirmed(x, outcome.point, label, eps) if (outcome.value or 0) < 0 else None
            if example is not None:
                return self._verdict("adversarial", example, self._distance(example, x), None, None, bounds, solves,
                                     "milp", searched)
            undecided = True
        exact: Exact = "unknown" if undecided else "robust"
        return self._verdict(exact, None, None, None, None if undecided else lowest, bounds, solves, None, searched)

    def closest(self, x: torch.Tensor, label: int, eps: float, time_limit: float | None = None,
                search: Search | None = None) -> Verdict:
        """The closest point within eps of x (inside [0, 1]) whose label is not `label`, with a proof of its distance.

        A confirmed point of `search` (tried as in `decide`) only lowers the ceiling of the MILPs' distance.
        """
        deadline = time.monotonic() + (math.inf if time_limit is None else time_limit)
        if self.predict(x) != label:
            return self._verdict("adversarial", x, 0.0, 0.0, None, [], 0, "clean")
        bounds, margins = self.bounds(x, eps, label)
        problem, best, example, lower, undecided, solves, searched = None, eps, None, math.inf, False, 0, None
        found_by: Literal["search", "milp"] = "search"
        for j in _candidates(margins, label):
            if margins[j] > ROBUST_MARGIN:
                continue
            if problem is None:
                if search is not None:
                    example = self._confirmed(x, _as_point(search(x, label, eps)), label, eps)
                    best = self._distance(example, x) if example is not None else eps
                    searched = example is not None
                problem = Problem(self.maps, x.detach().double().cpu().flatten().numpy(), eps, bounds, closest=True)
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
        low, high = _inside(x.double() - eps, x.dtype, up=True), _inside(x.double() + eps, x.dtype, up=False)
        candidate = torch.minimum(torch.maximum(candidate, low), high).clamp(0.0, 1.0)
        return candidate if self.predict(candidate) != label else None

    @staticmethod
    def _distance(example: torch.Tensor, x: torch.Tensor) -> float:
        return float((example.double() - x.double()).abs().max())

    @staticmethod
    def _verdict(exact: Exact, example: torch.Tensor | None, distance: float | None, distance_bound: float | None,
                 margin_bound: float | None, bounds: list[tuple[np.ndarray, np.ndarray]], solves: int,
                 found_by: Literal["clean", "search", "milp"] | None = None, search_found: bool | None = None) -> Verdict:
        neurons = sum(low.size for low, _ in bounds)
        stable = sum(int(((low >= 0) | (high <= 0)).sum()) for low, high in bounds)
        return Verdict(exact, example, distance, distance_bound, margin_bound, neurons, stable, solves, found_by,
                       search_found)


def _inside(end: torch.Tensor, dtype: torch.dtype, *, up: bool) -> torch.Tensor:
    """The ball's end (exact, in float64) rounded into `dtype` towards the ball's inside, so that a point clipped to
    it is within eps of x exactly, not only up to the rounding of x +- eps."""
    rounded = end.to(dtype)
    beyond = rounded.double() < end if up else rounded.double() > end
    towards = torch.full_like(rounded, math.inf if up else -math.inf)
    return torch.where(beyond, torch.nextafter(rounded, towards), rounded)


def _as_point(example: torch.Tensor | None) -> np.ndarray | None:
    """A search's example as the solver's points are given: flat float64."""
    return None if example is None else example.detach().double().cpu().flatten().numpy()


def _candidates(margins: np.ndarray, label: int) -> list[int]:
    """The other classes, the one with the lowest margin bound (likeliest to be reached) first."""
    return sorted((j for j in range(len(margins)) if j != label), key=lambda j: float(margins[j]))
