"""Confirmation at least as strict as the judge, unpredictable verification noise, and verification that refutes
only what fresh noise disproves, on a smoothed linear classifier whose probabilities are known exactly.

f(x) = [w.x + b > 0] with |w| = 1, smoothed with noise sigma, gives class 1 the probability Phi(d / sigma) at
signed distance d past the boundary; with two classes every test below accepts a point exactly when its
count of class 1 reaches a threshold, so each acceptance probability is a binomial tail, computed here.
"""

from __future__ import annotations

import torch
from conftest import BinaryLinear, harness
from scipy.optimize import brentq
from scipy.stats import binom, norm
from test_judge import SIGMA, Proposer, W  # noqa: F401 - Proposer is resolved by name as test_judge:Proposer

from rsbench import runner
from rsbench.attacks.success import is_adversarial
from rsbench.defenses.smoothing import Smoothing
from rsbench.goals.degradation import judged_rejection
from rsbench.leaderboard.track_files import Leaderboard, Protocol, StoredFile
from rsbench.leaderboard.verdicts import admitted, adversarial_not_refuted
from rsbench.specs import AttackSpec, DefenseSpec

JUDGE_N, CONFIRM_N, ALPHA = 1500, 15_000, 0.005
X = (-0.3 * W + 0.5 * torch.tensor([0.0, 0.0, 1.0, 1.0])).view(1, 2, 2)  # class 0, 0.3 from the boundary


def first_count(accepts, total: int) -> int:
    """The smallest count of class 1 out of `total` that `accepts` (monotone in the count), by bisection."""
    low, high = 0, total
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if accepts(torch.tensor([total - middle, middle])) else (middle + 1, high)
    return low


def judge(bounds_n: int | None):
    return lambda counts: is_adversarial(counts, 0, ALPHA, bounds_n)


K_JUDGE = first_count(judge(None), JUDGE_N)
K_OLD = first_count(judge(None), CONFIRM_N)  # confirmation's bounds at confirm_n, as before
K_STRICT = first_count(judge(JUDGE_N), CONFIRM_N)  # the judge's bounds at confirm_n's frequencies
K_UPHELD = first_count(lambda counts: adversarial_not_refuted(counts, 0, ALPHA, JUDGE_N), CONFIRM_N)


def accepted(k: int, total: int, p: float) -> float:
    """P(Binomial(total, p) >= k)."""
    return float(binom.sf(k - 1, total, p))


def distance(p: float) -> float:
    return SIGMA * float(norm.ppf(p))


LUCKY = brentq(lambda p: accepted(K_JUDGE, JUDGE_N, p) - 0.1, 0.5, 0.99)
"""A point the judge accepts on one draw in ten."""
HONEST = brentq(lambda p: accepted(K_STRICT, CONFIRM_N, p) - 0.5, 0.5, 0.99)
"""Where strict confirmation accepts half the time: minimum-norm attacks end about here."""


def test_a_point_accepted_on_one_lucky_judge_draw_no_longer_passes_confirmation() -> None:
    assert accepted(K_OLD, CONFIRM_N, LUCKY) > 0.99  # bounds at confirm_n needed a third of the judge's margin
    assert accepted(K_STRICT, CONFIRM_N, LUCKY) < 1e-4
    spec = AttackSpec(name="proposer", implementation="test_judge:Proposer", goal="evasion", norm="l2",
                      params={"distances": (distance(LUCKY),), "repeats": 300})
    defense = Smoothing(BinaryLinear(W, 0.0), 2, SIGMA, batch_size=5000)
    outcomes = {}
    for rule in (None, "judge_n"):
        job = harness(defense, [spec], sigma=SIGMA, judge_n=JUDGE_N, confirm_n=CONFIRM_N, confirm_bounds=rule)
        records = [job.attack("proposer", X, 0, seed, None)[0] for seed in range(4)]
        assert all(r.candidates > 0 for r in records)  # 300 tries at 10% each: the judge accepts it
        outcomes[rule] = sum(r.success for r in records)
    assert outcomes == {None: 4, "judge_n": 0}


def board(bounds: str | None = "judge_n") -> tuple[Leaderboard, Smoothing]:
    spec = DefenseSpec(name="hand-built", kind="smoothing", dataset={"name": "digits"}, architecture="hand-built",
                       num_classes=2, sigma=SIGMA, weights={"source": "file", "filename": "none", "sha256": "0" * 64})
    protocol = Protocol(defense=spec.name, defense_hash=spec.spec_hash(), goal="evasion", epsilon=None, split="test",
                        num_samples=1, n0=1, n=1, alpha=0.01, judge_n=JUDGE_N, judge_alpha=ALPHA, confirm_n=CONFIRM_N,
                        confirm_bounds=bounds, seed=0, metrics={})
    track = Leaderboard(track="evasion-hand-built", version=1, defense=spec, protocol=protocol,
                        protocol_hash=protocol.spec_hash(), clean=StoredFile(path="", sha256=""))
    return track, Smoothing(BinaryLinear(W, 0.0), 2, SIGMA, batch_size=5000)


def tuned_point() -> float:
    """The smallest distance past the boundary that the verification a submission got before, the admission test
    with bounds at confirm_n on the public stream (seed 0, sample 0, 'submission'), accepts: found by bisection
    against that very stream."""
    track, defense = board(None)
    low, high = 0.0, distance(HONEST)
    for _ in range(30):
        middle = (low + high) / 2
        point = X + (middle - float(W @ X.flatten())) * W.view_as(X)
        stream = runner.stream(0, 0, "tuned", "submission", defense.device)
        low, high = (low, middle) if admitted(track, defense, 0, X, point, stream) else (middle, high)
    return high


def test_an_attack_tuned_to_the_old_public_streams_gains_nothing() -> None:
    d = tuned_point()
    assert d < distance(HONEST)  # on the public stream the tuned point beat every honest minimum-norm example
    p = float(norm.cdf(d / SIGMA))
    assert accepted(K_STRICT, CONFIRM_N, p) < 1e-6  # judged on noise nobody can predict, under the strict rule
    track, defense = board()
    point = X + (d - float(W @ X.flatten())) * W.view_as(X)
    secret = [runner.stream(seed, 0, "tuned", "confirm", defense.device) for seed in (11, 12, 13)]
    assert not any(admitted(track, defense, 0, X, point, noise) for noise in secret)


def test_verification_refutes_only_what_fresh_noise_disproves() -> None:
    """A minimum-norm example sits where admission passes half the time: running admission again would refute it
    about half the time, verification almost never. A point well short of the judge's margin is refuted."""
    assert 0.4 < 1 - accepted(K_STRICT, CONFIRM_N, HONEST) < 0.6
    assert 1 - accepted(K_UPHELD, CONFIRM_N, HONEST) < ALPHA
    assert K_UPHELD < K_STRICT
    short = float(norm.cdf(norm.ppf(LUCKY) - 0.1))  # 0.05 short of the lucky point
    assert 1 - accepted(K_UPHELD, CONFIRM_N, short) > 0.999


class Counted(Smoothing):
    """A smoothed classifier whose votes for class 1 are set by hand: any rule read off counts, exactly."""

    def __init__(self) -> None:
        super().__init__(BinaryLinear(W, 0.0), 2, SIGMA)
        self.count = 0

    def sample_counts(self, x: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.tensor([num - self.count, self.count])


def last_rejected(total: int, bounds_n: int | None, eps: float) -> int:
    """The largest count of class 1 (of at least half) at which `judged_rejection` still rejects."""
    counted = Counted()

    def rejects(count: int) -> bool:
        counted.count = count
        return judged_rejection(counted, X, eps, torch.Generator(), total, ALPHA, bounds_n)

    low, high = total // 2, total
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if rejects(middle) else (low, middle - 1)
    return low


def test_degradation_confirmation_is_at_least_as_strict_as_its_judge() -> None:
    """A rejection at epsilon = sigma / 4 needs both classes' upper bounds below Phi(1/4) = 0.599. A point the
    judge rejects on one draw in fifty passed bounds at confirm_n about half the time; it never passes the
    judge's bounds at confirm_n's frequencies."""
    eps = SIGMA / 4
    judge_last, old_last = last_rejected(JUDGE_N, None, eps), last_rejected(CONFIRM_N, None, eps)
    strict_last = last_rejected(CONFIRM_N, JUDGE_N, eps)
    lucky = brentq(lambda p: float(binom.cdf(judge_last, JUDGE_N, p)) - 0.02, 0.5, 0.99)
    assert 0.3 < binom.cdf(old_last, CONFIRM_N, lucky) < 0.7
    assert binom.cdf(strict_last, CONFIRM_N, lucky) < 1e-6
    defense = Smoothing(BinaryLinear(W, 0.0), 2, SIGMA, batch_size=5000)
    point = X + (distance(lucky) - float(W @ X.flatten())) * W.view_as(X)

    def rejections(bounds_n: int | None) -> int:
        return sum(judged_rejection(defense, point, eps, torch.Generator().manual_seed(seed), CONFIRM_N, ALPHA,
                                    bounds_n) for seed in range(20))

    assert 3 <= rejections(None) <= 17 and rejections(JUDGE_N) == 0
