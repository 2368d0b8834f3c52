import pytest
from statsmodels.stats.proportion import binom_test, proportion_confint

from rsbench.stats import binomial_p_value, clopper_pearson, lower_confidence_bound

CASES = [(0, 10), (1, 10), (5, 10), (10, 10), (37, 100), (99_990, 100_000), (100_000, 100_000)]


@pytest.mark.parametrize("successes,trials", CASES)
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_matches_statsmodels(successes: int, trials: int, alpha: float) -> None:
    expected = proportion_confint(successes, trials, alpha=alpha, method="beta")
    assert clopper_pearson(successes, trials, alpha) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("successes,trials", CASES)
def test_one_sided_lower_bound_is_two_sided_at_twice_alpha(successes: int, trials: int) -> None:
    expected = proportion_confint(successes, trials, alpha=0.002, method="beta")[0]
    assert lower_confidence_bound(successes, trials, 0.001) == pytest.approx(expected, abs=1e-12)


def test_lower_bound_with_all_successes_is_alpha_to_the_one_over_n() -> None:
    assert lower_confidence_bound(1000, 1000, 0.001) == pytest.approx(0.001 ** (1 / 1000), rel=1e-12)


@pytest.mark.parametrize("successes,trials", [(50, 100), (60, 100), (7, 8), (90, 100)])
def test_binomial_p_value_matches_statsmodels(successes: int, trials: int) -> None:
    assert binomial_p_value(successes, trials) == pytest.approx(binom_test(successes, trials, 0.5), rel=1e-9)
