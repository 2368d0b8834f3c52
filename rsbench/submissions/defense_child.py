"""The sandboxed process that holds a submitted defense and answers rsbench's requests (`defense_server`).

It builds the defense from the submission's folder, with the checkpoint the parent verified, and
answers one request at a time: a forward pass or vector-Jacobian product of the network (or of a
plugin's `worst_case_margins`), `certify_many` and `predict` with the parent's generators. Whatever
this code does, it does in this process: rsbench's attacks, judge and bookkeeping run in the parent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsbench import hub
from rsbench.defenses.base import Defense, provides
from rsbench.errors import RsbenchError
from rsbench.specs import WeightsRef
from rsbench.submissions.tensor_pipe import Pipe, states


def main(folder: str, spec_hash: str, checkpoint: str) -> None:
    """The sandboxed process: build the defense from the submission's folder, then answer requests until the
    parent closes the pipe. Its own prints go to standard error; the protocol has standard output to itself."""
    protocol = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    pipe = Pipe(0, protocol)
    try:
        defense, network = _load(folder, spec_hash, checkpoint)
    except Exception as error:  # noqa: BLE001 - any failure to build is the answer
        pipe.send({"error": _line(error)})
        return
    pipe.send({"value": {"norm": defense.norm, "num_classes": defense.num_classes,
                         "bound": provides(defense, "worst_case_margins")}})
    while True:
        try:
            header, tensors = pipe.receive()
        except EOFError:
            return
        try:
            value, out = _answer(defense, network, header["op"], header.get("args", {}), tensors)
        except Exception as error:  # noqa: BLE001 - reported to the parent, which stops
            pipe.send({"error": _line(error)})
            continue
        pipe.send({"value": value}, out)


def _line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def _load(folder: str, spec_hash: str, checkpoint: str) -> tuple[Defense, nn.Module]:
    """The defense the folder's spec describes with the parent's verified checkpoint, and the network it answers
    `model` requests with (a smoothing defense's base classifier)."""
    from rsbench import registry, runner
    from rsbench.defenses import load_defense

    spec = registry.get_defense(folder)
    if spec.spec_hash() != spec_hash:
        raise RsbenchError(f"the folder holds a spec with hash {spec.spec_hash()[:12]}, not {spec_hash[:12]}")
    sha256 = spec.weights.sha256 or hub.sha256_of(Path(checkpoint))
    weights = WeightsRef(source="file", filename=checkpoint, sha256=sha256)
    local = spec.model_copy(update={"weights": weights})
    local._folder = spec._folder
    defense = load_defense(local)
    return defense, runner.defense_model(defense)


def _generators(args: dict[str, Any], tensors: dict[str, torch.Tensor]) -> list[torch.Generator | None]:
    states = iter(tensors.get("states", torch.empty(0)))
    made: list[torch.Generator | None] = []
    for seeded in args["seeded"]:
        generator = torch.Generator() if seeded else None
        if generator is not None:
            generator.set_state(next(states).clone())
        made.append(generator)
    return made


def _answer(defense: Defense, network: nn.Module, op: str, args: dict[str, Any],
            tensors: dict[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor]]:
    """One request: `call` or `vjp` of a function (FUNCTIONS), or a certifier method with its generators."""
    x = tensors["x"]
    if op in ("call", "vjp"):
        def function(inputs: torch.Tensor) -> torch.Tensor:
            if args["function"] == "model":
                return network(inputs)
            return defense.worst_case_margins(inputs, tensors["labels"], args["epsilon"])

        if op == "call":
            with torch.no_grad():
                return None, {"y": function(x).float()}
        leaf = x.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(function(leaf), leaf, tensors["grad"])
        return None, {"y": gradient.float()}
    generators = _generators(args, tensors)
    if op == "certify":
        certificates = defense.certify_many(list(x), generators)
        value: Any = [[None if c.prediction is None else int(c.prediction), float(c.radius),
                       None if c.p_lower is None else float(c.p_lower)] for c in certificates]
    elif op == "predict":
        label = defense.predict(x, generator=generators[0])
        value = None if label is None else int(label)
    else:
        raise ValueError(f"unknown request {op!r}")
    return value, states(generators)
