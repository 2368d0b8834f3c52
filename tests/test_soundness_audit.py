"""The soundness audit no defense can steer: rsbench's gradients, a gradient-free search and, in linf, the exact MILP.

A certifier that inflates its radii is caught by whichever of the three reaches a counterexample first: gradient
attacks on the network rsbench runs, the Square attack on its forward pass alone (what a network with useless
gradients cannot hide from), and the MILP, which needs no attack at all."""

from __future__ import annotations

import pytest
import torch

from rsbench import registry
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.base import Certificate
from rsbench.defenses.kw import KW
from rsbench.errors import RsbenchError
from rsbench.submissions import soundness
from test_square import Masked

SPEC = registry.get_defense("kw-digits-0.10")


class Tripled:
    """KW's certificates with every radius tripled (claims more than holds), over `model`: the network that attacks
    run and the audit labels with."""

    def __init__(self, kw: KW, model: torch.nn.Module) -> None:
        self.kw, self.model, self.device = kw, model, torch.device("cpu")

    def certify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        honest = self.kw.certify(x, generator=generator)
        return Certificate(honest.prediction, 3 * honest.radius)


@pytest.fixture(scope="module")
def samples() -> list[tuple[torch.Tensor, int]]:
    dataset = load_dataset("digits", "test")
    return [dataset[i] for i in range(4)]


def test_an_honest_kw_network_passes_and_the_milp_proves_every_certificate(samples) -> None:  # noqa: ANN001
    report = soundness.check(SPEC, load_defense(SPEC), samples)
    assert report.tested >= 3
    assert f"the exact MILP proved {report.tested} of them (0 undecided" in report.detail
    assert "pgd-linf, square-linf" in report.detail


def test_inflated_radii_behind_masked_gradients_are_found_by_the_search_that_needs_no_gradient(samples) -> None:  # noqa: ANN001
    kw = load_defense(SPEC)
    masked = Tripled(kw, Masked(kw.model))
    pgd_only = [registry.get_attack("pgd-linf")]
    assert soundness.check_deterministic(SPEC, masked, samples, attacks=pgd_only, milp=False).tested >= 3
    with pytest.raises(RsbenchError, match=r"unsound certificate at sample \d: label \d certified within linf radius "
                                           r"0\.\d+, but square-linf found label \d at distance 0\.\d+"):
        soundness.check_deterministic(SPEC, masked, samples, milp=False)


def test_the_milp_alone_finds_an_inflated_linf_certificate_no_attack_reached(samples) -> None:  # noqa: ANN001
    kw = load_defense(SPEC)
    inflated = Tripled(kw, kw.model)
    with pytest.raises(RsbenchError, match=r"unsound certificate at sample \d: label \d certified within linf radius "
                                           r"0\.\d+, but the exact MILP found label \d at distance 0\.\d+"):
        soundness.check_deterministic(SPEC, inflated, samples, attacks=[])


def test_no_milp_where_it_cannot_decide() -> None:
    assert soundness.milp_verifier(registry.get_defense("gloro-digits-0.50"), torch.nn.Linear(2, 2), (2,)) is None
    assert soundness.milp_verifier(SPEC, Masked(torch.nn.Linear(64, 10)), (1, 8, 8)) is None
