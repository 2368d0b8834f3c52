"""What a certifier cannot get past the audit or the sandbox's checks: each refused in one line naming it.

A radius that is NaN or infinite (an infinite one certifies every input; NaN compares false with everything), a
certificate that follows the generator, a label that is not the network's, and, for a served plugin on an ONNX
graph, a served network that differs from the graph rsbench attacks."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from rsbench import registry
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.base import Certificate
from rsbench.errors import RsbenchError
from rsbench.submissions import soundness
from rsbench.submissions.defense_server import GraphPlugin, RemotePlugin

SPEC = registry.get_defense("kw-digits-0.10")


class Rewritten:
    """KW's certificates rewritten by `change` (certificate, generator) -> certificate, over KW's network."""

    def __init__(self, change: Any) -> None:
        self.kw = load_defense(SPEC)
        self.model, self.device, self.change = self.kw.model, torch.device("cpu"), change

    def certify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        return self.change(self.kw.certify(x), generator)


class FakeLink:
    """A served defense's link that answers every certify request with `answer` per input."""

    name = "fake"

    def __init__(self, answer: list) -> None:
        self.answer = answer

    def call(self, op: str, tensors: dict[str, torch.Tensor], **args: Any) -> tuple[Any, dict[str, torch.Tensor]]:
        return [list(self.answer) for _ in tensors["x"]], {}


@pytest.fixture(scope="module")
def samples() -> list[tuple[torch.Tensor, int]]:
    dataset = load_dataset("digits", "test")
    return [dataset[i] for i in range(2)]


@pytest.mark.parametrize("radius", [math.nan, math.inf])
def test_a_radius_that_is_no_finite_number_is_refused(samples: list[tuple[torch.Tensor, int]], radius: float) -> None:
    cheat = Rewritten(lambda c, _: Certificate(c.prediction, radius))
    with pytest.raises(RsbenchError, match=rf"kw-digits-0\.10: sample 0: certified radius {radius} is not a finite "
                                           "number"):
        soundness.check_deterministic(SPEC, cheat, samples, milp=False)


def test_a_certificate_that_follows_the_generator_is_refused(samples: list[tuple[torch.Tensor, int]]) -> None:
    def drift(c: Certificate, generator: torch.Generator | None) -> Certificate:
        return Certificate(c.prediction, c.radius * (1 + float(torch.rand((), generator=generator))))

    with pytest.raises(RsbenchError, match=r"sample 0: two certificates of the same input differ .*a deterministic "
                                           "certifier must not depend on the generator"):
        soundness.check_deterministic(SPEC, Rewritten(drift), samples, milp=False)


def test_a_label_other_than_the_networks_is_refused(samples: list[tuple[torch.Tensor, int]]) -> None:
    label = int(load_defense(SPEC).certify(samples[0][0]).prediction)
    cheat = Rewritten(lambda c, _: Certificate((c.prediction + 1) % 10, c.radius))
    with pytest.raises(RsbenchError, match=rf"sample 0: certified label {(label + 1) % 10} is not the network's "
                                           rf"label {label}"):
        soundness.check_deterministic(SPEC, cheat, samples, milp=False)


@pytest.mark.parametrize("radius", [math.nan, math.inf, -1.0])
def test_a_served_plugin_answering_a_radius_that_is_no_finite_number_is_refused(radius: float) -> None:
    plugin = RemotePlugin(FakeLink([3, radius, None]), 10, "l2")
    with pytest.raises(RsbenchError, match=rf"fake's process answered certify with radius {radius}; refused"):
        plugin.certify(torch.full((1, 8, 8), 0.5))


def test_a_served_network_that_is_not_its_graph_is_refused() -> None:
    graph = load_defense(SPEC).model
    plugin = GraphPlugin(FakeLink([3, 0.1, None]), 10, "linf", graph)
    x = torch.full((1, 8, 8), 0.5)
    plugin.served = graph
    assert plugin.certify(x) == Certificate(3, 0.1)
    plugin.served = lambda batch: graph(batch) + 0.5
    with pytest.raises(RsbenchError, match=r"fake's served network differs from its ONNX graph by 0\.5 in the logits "
                                           "of an input it certifies; refused"):
        plugin.certify(x)


def test_a_label_other_than_the_networks_is_refused_at_radius_zero_too(samples: list[tuple[torch.Tensor, int]]) -> None:
    """A certificate of radius 0 still counts toward clean accuracy: a plugin that answered labels it looked up (the
    test set's, shipped in its folder) wherever its network errs, at radius 0, raised its clean accuracy unaudited."""
    label = int(load_defense(SPEC).certify(samples[0][0]).prediction)
    cheat = Rewritten(lambda c, _: Certificate((c.prediction + 1) % 10, 0.0))
    with pytest.raises(RsbenchError, match=rf"sample 0: certified label {(label + 1) % 10} is not the network's "
                                           rf"label {label}"):
        soundness.check_deterministic(SPEC, cheat, samples, milp=False)
