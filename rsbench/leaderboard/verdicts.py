"""Verdicts on one example, as a track's protocol defines success, on noise the caller draws.

Two questions, two rules:

- `admitted`: does the example achieve the goal? The protocol's own test, exactly as the engine
  confirms every kept candidate: the harness asks it of every example a submission returns, on
  noise from a seed drawn after the submission finished.
- `upheld`: do fresh copies refute a stored success? Verification (`rsbench leaderboard verify`,
  the re-judging of new entries in `check`) refutes a record only when the fresh copies show, at
  the protocol's confidence, that its example fails the protocol's test. A claim that holds is then
  refuted with probability at most judge_alpha, whereas running the admission test again would refuse
  a minimum-norm example, which lies close to the test's threshold by design, about half the time.
  Every class's Goodman interval of the fresh copies is taken at its end most favourable to the record,
  and the protocol's test (with the bounds `Protocol.confirm_bounds` names) must fail even there; GloRo
  and KW are judged exactly, so both rules agree.
"""

from __future__ import annotations

from statistics import NormalDist
from types import SimpleNamespace
from typing import Any

import torch

from rsbench.attacks.success import is_adversarial
from rsbench.defenses.base import Defense
from rsbench.defenses.smoothed_view import goodman_bounds
from rsbench.goals import within
from rsbench.goals.degradation import judged_rejection
from rsbench.goals.evasion import bounds_n, judge_view
from rsbench.goals.spoofing import spoofed
from rsbench.leaderboard.track_files import Leaderboard
from rsbench.stats import clopper_pearson


def distance(norm: str, x: torch.Tensor, x_adv: torch.Tensor) -> float:
    """||x_adv - x|| in the defense's norm."""
    delta = (x_adv - x).flatten()
    return float(delta.norm() if norm == "l2" else delta.abs().max())


def in_threat_model(board: Leaderboard, x: torch.Tensor, x_adv: torch.Tensor) -> bool:
    """Inside [0, 1] and within the protocol's epsilon (always, for a goal without one)."""
    if board.protocol.epsilon is None:
        return True
    inside = 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    return inside and within(distance(board.defense.norm, x, x_adv), board.protocol.epsilon)


def _smoothing(board: Leaderboard) -> bool:
    return board.defense.kind == "smoothing"


def admitted(board: Leaderboard, defense: Defense, label: int, x: torch.Tensor, x_adv: torch.Tensor,
             noise: torch.Generator) -> bool:
    """Whether x_adv achieves the track's goal against label, judged as the protocol confirms, on `noise`.

    Evasion of smoothing: the judge's test on confirm_n copies (with the judge's bounds under a strict
    protocol); of a deterministic defense: the network's label within epsilon inside [0, 1]; degradation: the
    defense's check rejects within epsilon (smoothing: with confidence, on confirm_n copies); spoofing:
    the defense certifies a wrong label (at epsilon for deterministic defenses).
    """
    protocol, config = board.protocol, board.protocol.run_config([])
    x, x_adv = x.to(defense.device), x_adv.to(defense.device)
    if protocol.goal == "evasion" and _smoothing(board):
        counts = judge_view(defense, config).hard_counts(x_adv, noise, protocol.confirm_n)
        return is_adversarial(counts, label, protocol.judge_alpha, bounds_n(config))
    if protocol.goal == "evasion":
        with torch.no_grad():
            return in_threat_model(board, x, x_adv) and int(defense.model(x_adv[None]).argmax(1)) != label
    if protocol.goal == "degradation":
        return in_threat_model(board, x, x_adv) and judged_rejection(
            defense, x_adv, protocol.epsilon, noise, protocol.confirm_n, protocol.judge_alpha, bounds_n(config))
    certificate = defense.certify(x_adv, generator=noise)
    eps = 0.0 if _smoothing(board) else protocol.epsilon or 0.0
    return spoofed(SimpleNamespace(label=label, adv_prediction=certificate.prediction, adv_radius=certificate.radius),
                   eps)


def upheld(board: Leaderboard, defense: Defense, record: Any, x: torch.Tensor, x_adv: torch.Tensor,
           noise: torch.Generator) -> bool:
    """Whether fresh copies on `noise` leave a stored success standing (see the module's docstring).

    Evasion and degradation of smoothing: confirm_n fresh copies, each class's Goodman interval taken at the end
    most favourable to the record, and the protocol's own test (bounds of judge_n copies under strict
    confirmation, of confirm_n before it) must fail even there. Spoofing of smoothing: refuted when the certified
    wrong class's probability is at most 1/2 with confidence 1 - alpha on n fresh copies (then no CERTIFY could
    have certified it). Deterministic defenses: the exact verdict.
    """
    protocol, config = board.protocol, board.protocol.run_config([])
    if not _smoothing(board):
        return admitted(board, defense, record.label, x, x_adv, noise)
    x, x_adv = x.to(defense.device), x_adv.to(defense.device)
    if protocol.goal == "spoofing":
        counts = defense.sample_counts(x_adv, protocol.n, noise)
        chosen = record.adv_prediction
        wrong = chosen is not None and chosen != record.label
        return wrong and clopper_pearson(int(counts[chosen]), protocol.n, 2 * protocol.alpha)[1] > 0.5
    alpha, fresh = protocol.judge_alpha, protocol.confirm_n
    bounds = bounds_n(config) or fresh
    if protocol.goal == "degradation":
        counts = defense.sample_counts(x_adv, fresh, noise)
        threshold = NormalDist().cdf(protocol.epsilon / defense.sigma)
        return in_threat_model(board, x, x_adv) and rejection_not_refuted(counts, threshold, alpha, bounds)
    counts = judge_view(defense, config).hard_counts(x_adv, noise, fresh)
    return adversarial_not_refuted(counts, record.label, alpha, bounds)


def adversarial_not_refuted(counts: torch.Tensor, original: int, alpha: float, bounds_n: int) -> bool:
    """Whether some class other than `original`, at the top of its Goodman interval from these counts (the others at
    the bottom of theirs), passes the protocol's test with the bounds of bounds_n copies."""
    total = int(counts.sum())
    lowest, highest = goodman_bounds(counts.double() / total, total, alpha)
    for winner in range(len(counts)):
        if winner == original:
            continue
        corner = lowest.clone()
        corner[winner] = highest[winner]
        lower, upper = goodman_bounds(corner, bounds_n, alpha)
        if bool(lower[winner] > torch.cat([upper[:winner], upper[winner + 1:]]).max()):
            return True
    return False


def rejection_not_refuted(counts: torch.Tensor, threshold: float, alpha: float, bounds_n: int) -> bool:
    """Whether every class, at the bottom of its Goodman interval from these counts, keeps the upper bound of
    bounds_n copies below `threshold` (Phi(epsilon / sigma))."""
    total = int(counts.sum())
    lowest, _ = goodman_bounds(counts.double() / total, total, alpha)
    return bool(goodman_bounds(lowest, bounds_n, alpha)[1].max() < threshold)
