"""What a defense needs on this machine (its data and weights), and the commands that provide it.

Checked before a run starts, so a new user reads everything that is missing in one line
rather than one failure at a time, and shown by `rsbench registry list`.
"""

from __future__ import annotations

from typing import Any

from rsbench import data, hub, registry
from rsbench.errors import RsbenchError
from rsbench.specs import GOALS_BY_KIND, DefenseSpec


def missing_requirements(spec: DefenseSpec) -> list[str]:
    """Each missing file or folder with the command (or place) that provides it; empty when all are present."""
    missing = [data.missing_data(spec.dataset), hub.missing_weights(spec.name, spec.weights, registry.folder_of(spec))]
    return [item for item in missing if item]


def require(spec: DefenseSpec) -> None:
    """Raise one line naming everything `spec` lacks on this machine."""
    missing = missing_requirements(spec)
    if missing:
        raise RsbenchError(f"{spec.name} needs files this machine lacks: {'; '.join(missing)}")


def status(spec: DefenseSpec) -> dict[str, Any]:
    """What a listing shows beyond the spec: the goals it can be evaluated under and whether its files are here."""
    return {
        "goals": list(GOALS_BY_KIND[spec.kind]),
        "data_present": data.missing_data(spec.dataset) is None,
        "weights_present": hub.missing_weights(spec.name, spec.weights, registry.folder_of(spec)) is None,
    }
