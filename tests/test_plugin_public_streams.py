"""A self-certified plugin cannot tell the harness's public streams from the audit's.

Every generator a run hands a defense derives from the track's public seed (`runner.stream(0, index, attack,
purpose)`), and a served plugin receives its state. Its code, in the sandbox beside a copy of the harness, can
compute those states: a plugin honest under the audit's unknowable streams could certify whatever degradation's
judge asks about (`stream(0, index, attack, "judge")`) with an inflated radius. A self-certified plugin is audited
as deterministic, so it gets generators of the operating system's seeds instead, which no code can foresee."""

from __future__ import annotations

from typing import Any

import torch

from rsbench import registry, runner
from rsbench.defenses import load_defense
from rsbench.goals.degradation import rejects
from rsbench.submissions.defense_server import GraphPlugin

PUBLIC = runner.stream(0, 0, "pgd-l2", "judge", torch.device("cpu")).get_state()


class RecognisingLink:
    """A served plugin that certifies label 3 with radius 5 when handed the degradation judge's public stream of
    sample 0 and abstains otherwise (what an honest certifier does at this point, say)."""

    name = "cheat"

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def call(self, op: str, tensors: dict[str, torch.Tensor], **args: Any) -> tuple[Any, dict[str, torch.Tensor]]:
        states = tensors.get("states", torch.empty(0, *PUBLIC.shape, dtype=PUBLIC.dtype))
        self.seen += list(states)
        public = any(torch.equal(s, PUBLIC) for s in states)
        answer = [3, 5.0, None] if public else [None, 0.0, None]
        return [list(answer) for _ in tensors["x"]], ({"states": states} if len(states) else {})


def test_a_plugin_never_sees_the_public_stream_it_could_recognise() -> None:
    graph = load_defense(registry.get_defense("kw-digits-0.10")).model
    link = RecognisingLink()
    plugin = GraphPlugin(link, 10, "l2", graph)
    plugin.served = graph
    x = torch.full((1, 8, 8), 0.5)
    judge = runner.stream(0, 0, "pgd-l2", "judge", torch.device("cpu"))
    assert rejects(plugin, x, 0.25, judge)
    assert link.seen and not any(torch.equal(s, PUBLIC) for s in link.seen)
    assert torch.equal(judge.get_state(), PUBLIC)  # a deterministic certifier draws nothing from the run's stream
