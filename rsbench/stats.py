"""Confidence bounds used by certification (each checked against statsmodels in the tests) and bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from scipy.stats import beta, binomtest


@lru_cache(maxsize=65536)
def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two-sided (1 - alpha) Clopper-Pearson interval for a binomial proportion (cached: bootstrap intervals of
    rates ask for the same few counts thousands of times)."""
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound (Cohen et al.'s LOWERCONFBOUND)."""
    return clopper_pearson(successes, trials, 2 * alpha)[0]


def binomial_p_value(successes: int, trials: int) -> float:
    """Two-sided p-value of `successes` out of `trials` under p = 1/2 (Cohen et al.'s BINOMPVALUE)."""
    return float(binomtest(successes, trials, 0.5).pvalue)


BOOTSTRAP_RESAMPLES = 1000
"""Resamples of every bootstrap interval rsbench reports (leaderboards, `evaluate`'s tables)."""


def resample_draws(units: int, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
    """The positions drawn by each bootstrap resample, (resamples, units): the draws behind every interval, so
    that other statistics (ranks across entries) can be computed on exactly the same resamples."""
    if not units:
        return np.zeros((0, 0), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, units, size=(resamples, units))


Estimate = tuple[float | None, float, float]
"""A point value with its bootstrap interval (nan bounds where the value is undefined)."""


def bootstrap(statistic: Callable[[Sequence[int]], dict[str, float | None]], units: int, *, seed: int = 0,
              resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95) -> dict[str, Estimate]:
    """Point estimate and percentile bootstrap interval of each number `statistic` computes from a list of units.

    `statistic` receives positions in range(units): all of them for the point estimate, then `resamples`
    draws with replacement from a numpy generator seeded with `seed`, so an interval is reproduced exactly.
    Resamples where a number is undefined (None) are left out of its interval; a number undefined on the
    full sample has no interval. The interval is widened to the point estimate when the point falls outside
    it (a median of few samples can), so it always contains the number it qualifies.
    """
    point = statistic(list(range(units)))
    draws = resample_draws(units, seed, resamples)
    values: dict[str, list[float]] = {key: [] for key in point}
    for draw in draws:
        for key, value in statistic(draw.tolist()).items():
            if value is not None and key in values:
                values[key].append(value)
    tail = 100 * (1 - level) / 2
    intervals: dict[str, Estimate] = {}
    for key, value in point.items():
        if value is None or not values[key]:
            intervals[key] = (value, math.nan, math.nan) if value is None else (value, value, value)
            continue
        low, high = np.percentile(values[key], [tail, 100 - tail])
        intervals[key] = (value, min(float(low), value), max(float(high), value))
    return intervals
