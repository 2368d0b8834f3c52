"""A certifier honest only on the test samples themselves: the audit also certifies points it cannot tell apart.

Degradation trusts the certificate a defense gives at the attack's point x' (`goals.degradation.rejects`), and a
self-certified plugin gives it from its sandbox. One that answers honestly on the dataset's own images (the digits'
pixels are multiples of 1/16) and inflates its radius everywhere else passed an audit of the clean samples alone,
and no degradation attack could ever succeed against it. The audit now also certifies, per sample, a point within
the defense's epsilon drawn from the auditor's seed, and audits that certificate exactly as the sample's."""

from __future__ import annotations

import pytest
import torch

from rsbench import registry
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.base import Certificate
from rsbench.defenses.kw import KW
from rsbench.errors import RsbenchError
from rsbench.goals.degradation import rejects
from rsbench.submissions import soundness

SPEC = registry.get_defense("kw-digits-0.10")


class HonestOnTheGrid:
    """KW's certificates on inputs whose pixels are all multiples of 1/16 (the dataset's images); elsewhere the
    network's label with linf radius 0.5, which no degradation attack at epsilon 0.1 gets below."""

    def __init__(self, kw: KW) -> None:
        self.kw, self.model, self.device = kw, kw.model, torch.device("cpu")

    def certify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        if torch.equal(x * 16, (x * 16).round()):
            return self.kw.certify(x, generator=generator)
        with torch.no_grad():
            return Certificate(int(self.model(x[None]).argmax(1)), 0.5)

    def certified_at(self, x: torch.Tensor, eps: float, *, generator: torch.Generator | None = None) -> bool:
        certificate = self.certify(x, generator=generator)
        return certificate.prediction is not None and certificate.radius >= eps


@pytest.fixture(scope="module")
def samples() -> list[tuple[torch.Tensor, int]]:
    dataset = load_dataset("digits", "test")
    return [dataset[i] for i in range(3)]


def test_the_cheat_defeats_degradation_where_the_honest_certifier_rejects(samples: list[tuple[torch.Tensor, int]]) -> None:
    kw = load_defense(SPEC)
    x = samples[0][0]
    moved = (x + 0.1 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))).clamp(0, 1)
    assert rejects(kw, moved, 0.1)
    assert not rejects(HonestOnTheGrid(kw), moved, 0.1)


def test_a_certifier_honest_only_on_the_samples_is_caught_off_them(samples: list[tuple[torch.Tensor, int]]) -> None:
    cheat = HonestOnTheGrid(load_defense(SPEC))
    with pytest.raises(RsbenchError, match=r"unsound certificate at sample \d's point within epsilon: label \d "
                                           r"certified within linf radius 0\.5000, but pgd-linf found label \d"):
        soundness.check_deterministic(SPEC, cheat, samples, milp=False)


def test_an_honest_certifier_passes_on_and_off_the_samples(samples: list[tuple[torch.Tensor, int]]) -> None:
    report = soundness.check_deterministic(SPEC, load_defense(SPEC), samples)
    assert report.samples == 3
    assert "and one point within epsilon of each" in report.detail
    assert report.tested >= 4
