"""Model cards record where their weights were built, and retrained weights are compared bit for bit only there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from rsbench import hub, registry
from rsbench.training import reproduction

PACKAGED = sorted(name for name, spec in registry.all_specs("defenses").items()
                  if spec.weights.source == "package" and spec.training is not None)


def test_the_build_environment_line_reads_back_what_was_written() -> None:
    here = reproduction.current_environment()
    assert here.cpu_capability == torch.backends.cpu.get_cpu_capability() and here.threads == 1
    assert reproduction.read_build_environment(f"# x\n\n{here.line()}\n- more\n") == here
    assert reproduction.read_build_environment("# a card without the line\n") is None


@pytest.mark.parametrize("name", PACKAGED)
def test_every_shipped_card_says_where_its_weights_were_built_and_how_they_are_compared(name: str) -> None:
    card = reproduction.shipped_card(registry.get_defense(name))
    built = reproduction.read_build_environment(card)
    assert built is not None and built.torch.startswith("2.") and built.threads == 1
    assert reproduction.HOW_COMPARED in card
    # the kernels these weights were trained with were not recorded: no machine may demand their bits
    assert built.cpu_capability == reproduction.UNRECORDED and not reproduction.bit_reproducible_here(built)


def test_in_the_build_environment_only_the_same_bits_reproduce(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A card naming this very environment makes the comparison bitwise: the shipped file itself passes, weights
    that differ in one value fail, and nothing is certified to decide it."""
    spec = registry.get_defense("smoothing-digits-0.25")
    monkeypatch.setattr(reproduction, "shipped_card",
                        lambda _: f"# card\n{reproduction.current_environment().line()}\n")
    shipped = tmp_path / "shipped.pt"
    shutil.copyfile(hub.resolve_weights(spec.weights), shipped)
    same = reproduction.compare(spec, shipped, tmp_path / "runs")
    assert same.method == "bit-for-bit" and same.reproduced and "reproduced bit for bit" in same.summary()
    state = torch.load(shipped, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1e-7
    torch.save(state, tmp_path / "nudged.pt")
    nudged = reproduction.compare(spec, tmp_path / "nudged.pt", tmp_path / "runs")
    assert nudged.method == "bit-for-bit" and not nudged.reproduced and not (tmp_path / "runs").exists()


def test_elsewhere_the_shipped_weights_reproduce_themselves_functionally(tmp_path: Path) -> None:
    """The functional comparison of the shipped weights with a copy of themselves: every prediction agrees and
    every certified accuracy equals the shipped one, inside its interval."""
    spec = registry.get_defense("gloro-digits-0.25")
    copy = tmp_path / "copy.pt"
    shutil.copyfile(hub.resolve_weights(spec.weights), copy)
    verdict = reproduction.compare(spec, copy, tmp_path / "runs", samples=60)
    assert verdict.method == "functional" and verdict.agreement == 1.0 and verdict.images == 500
    assert len(verdict.radii) >= 2 and all(check.retrained == check.shipped for check in verdict.radii)
    assert verdict.reproduced
