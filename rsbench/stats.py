"""Confidence bounds used by certification; each is checked against statsmodels in the tests."""

from __future__ import annotations

from scipy.stats import beta, binomtest


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two-sided (1 - alpha) Clopper-Pearson interval for a binomial proportion."""
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound (Cohen et al.'s LOWERCONFBOUND)."""
    return clopper_pearson(successes, trials, 2 * alpha)[0]


def binomial_p_value(successes: int, trials: int) -> float:
    """Two-sided p-value of `successes` out of `trials` under p = 1/2 (Cohen et al.'s BINOMPVALUE)."""
    return float(binomtest(successes, trials, 0.5).pvalue)
