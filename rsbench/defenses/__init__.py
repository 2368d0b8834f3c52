"""Build a defense from its registry spec: weights -> architecture -> certifier of the spec's kind.

A spec with `architecture: onnx` names an ONNX graph, which `rsbench.graphs` checks and converts, and which
rsbench's certifier of the spec's kind certifies (`load_graph`). A `plugin` spec names its certifier class in
your own code (`implementation`), built with
`CLASS.from_spec(spec, model)`; a spec with `memory` weights describes a defense built in Python
and held by `rsbench.evaluate`, and a submitted defense served from its sandbox is held too
(`rsbench.in_process`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from rsbench.defenses.base import Certificate, Defense, provides, watch_outputs
from rsbench.errors import RsbenchError
from rsbench.specs import GRAPH, DefenseSpec

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

BUILDERS = {
    "smoothing": "rsbench.defenses.smoothing:from_spec",
    "gloro": "rsbench.defenses.gloro:from_spec",
    "kw": "rsbench.defenses.kw:from_spec",
    "crownibp": "rsbench.defenses.crown_ibp:from_spec",
    "lipschitz": "rsbench.defenses.lipschitz_margin:from_spec",
}
"""Per kind, `module:function` turning (spec, loaded model) into a Defense; imported on use."""


def load_defense(defense: str | DefenseSpec, device: str | torch.device = "cpu") -> Defense:
    """The defense a registry name (or spec) describes, with verified weights, on `device`."""
    from rsbench import hub, models, registry

    spec = registry.get_defense(defense) if isinstance(defense, str) else defense
    from rsbench import in_process

    if spec.weights.source == "memory" or in_process.holds(spec):
        return checked(in_process.held_defense(spec)).to(device)
    if spec.architecture == GRAPH:
        model = load_graph(spec)
    else:
        model = models.build_model(spec)
        models.load_weights_into(model, hub.load_checkpoint(spec.weights, registry.folder_of(spec)))
    build = plugin_class(spec).from_spec if spec.kind == "plugin" else registry.resolve(BUILDERS[spec.kind])
    defense = build(spec, model)
    if not isinstance(defense, Defense):
        raise RsbenchError(f"{spec.implementation}.from_spec returned a {type(defense).__name__}, not a Defense")
    return checked(defense).to(device)


def checked(defense: Defense) -> Defense:
    """The defense, its network's every answer checked from now on (see `watch`)."""
    watch(defense)
    return defense


@contextmanager
def checked_while(defense: Defense) -> Iterator[None]:
    """`watch` a defense object its caller keeps (`rsbench.evaluate`'s) for the length of a run only."""
    handle = watch(defense)
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def watch(defense: Defense) -> RemovableHandle | None:
    """Check a deterministic defense's `model` on every answer (`watch_outputs`); a smoothing defense's votes are
    checked where they are counted, and a plugin without a `model` has no network to check."""
    from rsbench.defenses.smoothing import Smoothing

    model = getattr(defense, "model", None)
    if isinstance(defense, Smoothing) or not isinstance(model, nn.Module):
        return None
    return watch_outputs(model, defense.num_classes)


def load_graph(spec: DefenseSpec) -> torch.nn.Module:
    """The checked, converted ONNX graph of a spec with `architecture: onnx` (`rsbench.graphs.load`); for the kinds
    that read layers (GloRo, KW, CROWN-IBP), as their chain of layers."""
    from rsbench import graphs, hub, registry
    from rsbench.data import INPUT_SHAPES

    path = hub.resolve_weights(spec.weights, registry.folder_of(spec))
    network = graphs.load(path, INPUT_SHAPES[spec.dataset.name], spec.num_classes)
    return graphs.as_sequential(network, spec.name) if spec.kind in ("gloro", "kw", "crownibp") else network


def plugin_class(spec: DefenseSpec) -> type[Defense]:
    """The certifier class a plugin spec names, imported from your code (checked against its pin), or the class of
    the defense `rsbench.evaluate` holds for a spec with `memory` weights."""
    from rsbench import in_process, registry, user_code

    if spec.weights.source == "memory" or in_process.holds(spec):
        return in_process.held_class(spec)
    cls = user_code.load(spec, spec.implementation, registry.folder_of(spec))
    if not (isinstance(cls, type) and issubclass(cls, Defense)):
        raise RsbenchError(f"{spec.implementation} is not a class deriving rsbench.defenses.base.Defense")
    if not provides(cls, "from_spec"):
        raise RsbenchError(f"{spec.implementation} defines no from_spec(spec, model) classmethod to build it from a spec")
    return cls


__all__ = ["BUILDERS", "Certificate", "Defense", "load_defense", "load_graph", "plugin_class"]
