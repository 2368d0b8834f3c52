"""What the soundness audit cannot see, stated as tests: attacks find counterexamples, they prove nothing.

In l2 (and in linf where the network is no chain of affine layers and ReLUs) no exact verifier runs, so a certificate
is refused only when PGD or the Square attack reaches a point inside it. A network whose other label lives in a
pocket far narrower than any step of theirs, with no gradient leading there, passes with an inflated radius; the
documentation says so (docs/defense-graphs.md, "What the audit cannot see")."""

from __future__ import annotations

import torch
from torch import nn

from rsbench import registry
from rsbench.data import load_dataset
from rsbench.defenses.base import Certificate
from rsbench.submissions import soundness

SPEC = registry.get_defense("gloro-digits-0.50")


class Pocket(nn.Module):
    """Label 0 everywhere but in an l2 ball of radius `width` around `centre`, where label 1 wins."""

    def __init__(self, centre: torch.Tensor, width: float) -> None:
        super().__init__()
        self.centre, self.width = centre, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bump = torch.relu(1 - (x - self.centre).flatten(1).norm(dim=1) / self.width)
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1.0
        return logits + 10 * bump[:, None] * torch.eye(10)[1]


class Claims:
    """Label 0 certified within l2 radius 2 at every input, over the pocketed network."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.device = model, torch.device("cpu")

    def certify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        return Certificate(0, 2.0)


def test_an_l2_certificate_broken_only_in_a_narrow_pocket_passes_the_audit() -> None:
    x = load_dataset("digits", "test")[0][0]
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    centre = (x + 0.3 * direction / direction.norm()).clamp(0, 1)
    network = Pocket(centre, 1e-3)
    assert int(network(centre[None]).argmax(1)) == 1 and float((centre - x).norm()) < 2.0  # the certificate is false
    report = soundness.check_deterministic(SPEC, Claims(network), [(x, 0)])
    assert report.tested == 2 and "by pgd-l2, square-l2: no label changed" in report.detail
    assert soundness.milp_verifier(SPEC, network, tuple(x.shape)) is None
