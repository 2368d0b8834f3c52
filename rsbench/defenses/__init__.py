"""Build a defense from its registry spec: weights -> architecture -> certifier of the spec's kind."""

from __future__ import annotations

import torch

from rsbench.defenses.base import Certificate, Defense
from rsbench.specs import DefenseSpec

BUILDERS = {
    "smoothing": "rsbench.defenses.smoothing:from_spec",
    "gloro": "rsbench.defenses.gloro:from_spec",
    "kw": "rsbench.defenses.kw:from_spec",
    "crownibp": "rsbench.defenses.crown_ibp:from_spec",
}
"""Per kind, `module:function` turning (spec, loaded model) into a Defense; imported on use."""


def load_defense(defense: str | DefenseSpec, device: str | torch.device = "cpu") -> Defense:
    """The defense a registry name (or spec) describes, with verified weights, on `device`."""
    from rsbench import hub, models, registry

    spec = registry.get_defense(defense) if isinstance(defense, str) else defense
    model = models.create_model(spec.architecture, spec.num_classes)
    models.load_weights_into(model, hub.load_checkpoint(spec.weights))
    return registry.resolve(BUILDERS[spec.kind])(spec, model).to(device)


__all__ = ["Certificate", "Defense", "load_defense", "BUILDERS"]
