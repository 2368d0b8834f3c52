"""Defenses and data held in this process while a run uses them, instead of being built from their specs.

The engine builds a run's defense and data from their specs (`load_defense`, `load_dataset`), in
every worker. A defense made in Python has no file to load: `rsbench.api` describes it by a spec
whose weights are `memory` (the sha256 of its model's state dict) and, for the length of the run,
`hold`s how to build it for a spec and the tensors it is evaluated on; `load_defense` and
`load_dataset` hand them out for such specs. A submitted defense's code runs in a sandboxed process
of its own (`rsbench.submissions.defense_server`), which holds the stand-in that reaches it the same way. Nothing
else reaches them, so only this process can run such a defense (one worker, no Ray), and nothing stays
held once the run returns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rsbench.errors import RsbenchError

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from rsbench.defenses.base import Defense
    from rsbench.specs import DefenseSpec


@dataclass(frozen=True)
class Held:
    """A defense built in Python: how to build it for a spec (the run's certification settings), and its class."""

    build: Callable[[DefenseSpec], Defense]
    cls: type[Defense]


_DEFENSES: dict[str, Held] = {}
"""Held defenses by `key`."""
_TENSORS: dict[str, Dataset] = {}
"""Held data by the sha256 of its tensors (the spec's `dataset.sha256`); at most one at a time."""


def key(spec: DefenseSpec) -> str:
    """What a held defense is found by: the sha256 of its model's state dict for a defense built in Python, else the
    spec's hash without its certification settings (a run's settings change those, not the defense)."""
    if spec.weights.source == "memory":
        return str(spec.weights.sha256)
    identity = json.dumps(spec.model_dump(mode="json", exclude={"certify"}), sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()


def holds(spec: DefenseSpec) -> bool:
    """Whether a defense for `spec` is held in this process (then `load_defense` hands it out)."""
    return key(spec) in _DEFENSES


@contextmanager
def hold(spec: DefenseSpec, held: Held, tensors: Dataset | None = None) -> Iterator[None]:
    """Make the defense (and the tensors, for a `tensors` dataset) of `spec` loadable in this process until exit."""
    key_, data_key = key(spec), spec.dataset.sha256
    if tensors is not None and any(k != data_key for k in _TENSORS):
        raise RsbenchError("another rsbench.evaluate on other tensors is running in this process")
    before = (_DEFENSES.get(key_), _TENSORS.get(data_key) if data_key else None)
    _DEFENSES[key_] = held
    if tensors is not None:
        _TENSORS[data_key] = tensors
    try:
        yield
    finally:
        for table, k, value in ((_DEFENSES, key_, before[0]), (_TENSORS, data_key, before[1])):
            if value is None:
                table.pop(k, None)
            else:
                table[k] = value


def _held(spec: DefenseSpec) -> Held:
    held = _DEFENSES.get(key(spec))
    if held is None:
        raise RsbenchError(f"{spec.name} was built in Python (its weights are a model object, state dict sha256 "
                           f"{spec.weights.sha256[:12]}…): it runs only through rsbench.evaluate, with one worker, in "
                           "the process that built it")
    return held


def held_defense(spec: DefenseSpec) -> Defense:
    """The held defense of a spec, built for the spec's certification settings."""
    return _held(spec).build(spec)


def held_class(spec: DefenseSpec) -> type[Defense]:
    """The class of the held defense of a spec."""
    return _held(spec).cls


def held_tensors() -> Dataset:
    """The tensors held for the running evaluation (dataset `tensors`)."""
    if not _TENSORS:
        raise RsbenchError("dataset 'tensors' is an (x, y) pair given to rsbench.evaluate; none is held in this process")
    return next(iter(_TENSORS.values()))
