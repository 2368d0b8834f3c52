"""`rsbench.evaluate`: a goal's attacks on your defense from Python, through the engine `rsbench evaluate` runs.

The defense is a registry name, a `DefenseSpec` (a model of your own code as `python:MODULE:FACTORY`),
or a `Defense` built in Python (`Smoothing(model, num_classes, sigma)`, `GloRo(...)`, `KW(...)`, a plugin
class of yours). The data is a registered dataset's name or an (x, y) pair of tensors with pixels in
[0, 1]. The run is the command's: the same judge, confirmation, records, run directory and resume, and
the same `RunResult`.

A defense built in Python has no registry entry and no weights file: its spec records the sha256 of
its model's state dict (weights `memory`) and says that the run is not admissible to a leaderboard until
the defense is registered; `leaderboard add` refuses such a run. It runs in this process, where the
object lives (one worker).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch.utils.data import TensorDataset

from rsbench import engine, in_process, models, registry, requirements, rundir, runner
from rsbench.defenses import checked_while, smoothing
from rsbench.defenses.base import Defense
from rsbench.defenses.gloro import GloRo
from rsbench.defenses.kw import KW
from rsbench.errors import RsbenchError
from rsbench.records import RunResult
from rsbench.specs import (
    AttackSpec,
    CertifyDefaults,
    DatasetSpec,
    DefenseSpec,
    WeightsRef,
)

PROTOCOL = ("n0", "n", "alpha", "batch_size", "seed", "judge_n", "judge_alpha", "confirm_n", "precision",
            "channels_last")
"""Settings `evaluate` takes as keywords, as the command takes them as options (`rsbench evaluate --help`)."""
NOT_ADMISSIBLE = "built in Python: not admissible to a leaderboard until registered (a spec with pinned weights)"
"""The description of every spec `describe` makes, so that every result made from one says so."""

Data = str | tuple[torch.Tensor, torch.Tensor] | None


def evaluate(
    defense: str | DefenseSpec | Defense,
    attacks: str | AttackSpec | Sequence[str | AttackSpec],
    *,
    data: Data = None,
    num_samples: int = 10,
    out: str | Path | None = None,
    epsilon: float | None = None,
    device: str = "cpu",
    workers: int = 1,
    save_examples: bool = False,
    progress: bool = True,
    name: str | None = None,
    **protocol: Any,
) -> RunResult:
    """Run the attacks (one goal) on the first `num_samples` samples and return the run's summary.

    `protocol`: n0, n, alpha, batch_size, seed (certification), judge_n, judge_alpha, confirm_n (the judge of
    smoothing runs), precision, channels_last; left out, the defense's and the protocol's defaults apply.
    Re-running with the same `out` resumes; `out` defaults to `runs/<defense>/evaluate-<goal>-seed<seed>-<key>`.
    `name` names a defense built in Python (default `python-<kind>-<first hex digits of its weights' sha256>`).
    """
    unknown = sorted(set(protocol) - set(PROTOCOL))
    if unknown:
        raise RsbenchError(f"unknown setting {', '.join(unknown)}; evaluate takes {', '.join(PROTOCOL)}")
    listed = [attacks] if isinstance(attacks, (str, AttackSpec)) else list(attacks)
    attack_specs = [registry.get_attack(a) if isinstance(a, str) else a for a in listed]
    if isinstance(defense, Defense):
        if workers != 1:
            raise RsbenchError("a defense built in Python runs in the process holding it: use workers=1, or register "
                               "it (a spec with pinned weights) to run several workers")
        spec, held, tensors = describe(defense, data, name)
        holding = held_for_run(spec, held, tensors, defense)
    else:
        spec = registry.get_defense(defense) if isinstance(defense, str) else registry.pin_code(defense)
        if data is not None and data != spec.dataset.name:
            raise RsbenchError(f"{spec.name} is evaluated on its own dataset ({spec.dataset.name}); to evaluate it on "
                               "other data, pass the Defense object (rsbench.load_defense) with data=")
        requirements.require(spec)
        holding = nullcontext()
    try:
        config = engine.evaluate_config(spec, attack_specs, epsilon=epsilon, num_samples=num_samples, workers=workers,
                                        **protocol)
    except ValidationError as error:
        raise RsbenchError(registry.format_validation_error(error)) from None
    path = Path(out) if out is not None else rundir.default_path(config)
    with holding:
        return engine.evaluate(spec, attack_specs, config, path, runner.resolve_device(device),
                               save_examples=save_examples, progress=progress)


@contextmanager
def held_for_run(spec: DefenseSpec, held: in_process.Held, tensors: TensorDataset | None,
                 defense: Defense) -> Iterator[None]:
    """The defense (and tensors) held for the run, its network's answers checked while it runs and no longer."""
    with in_process.hold(spec, held, tensors), checked_while(defense):
        yield


def describe(defense: Defense, data: Data, name: str | None = None) -> tuple[DefenseSpec, in_process.Held,
                                                                              TensorDataset | None]:
    """The spec of a defense built in Python, how to build it for a run's spec, and its tensors (if data is some).

    Its weights are `memory`: the sha256 of its model's state dict, which every load checks again, so that
    a model changed during a run is refused rather than evaluated half old, half new.
    """
    model = defense.base_classifier if isinstance(defense, smoothing.Smoothing) else getattr(defense, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise RsbenchError(f"{type(defense).__name__} has no `model` (the network its certificate protects)")
    digest = models.state_dict_sha256(model)
    dataset, tensors = data_spec(data)
    cls = type(defense)
    fields: dict[str, Any] = {
        "name": name or f"python-{kind_of(defense)}-{digest[:8]}", "kind": kind_of(defense), "description": NOT_ADMISSIBLE,
        "dataset": dataset, "architecture": f"{type(model).__module__}.{type(model).__qualname__}",
        "num_classes": defense.num_classes, "norm": defense.norm,
        "weights": WeightsRef(source="memory", filename=f"{cls.__module__}.{cls.__qualname__}", sha256=digest),
    }
    if isinstance(defense, smoothing.Smoothing):
        fields |= {"sigma": defense.sigma, "certify": CertifyDefaults(
            n0=defense.n0, n=defense.n, alpha=defense.alpha, batch_size=defense.batch_size)}
    elif isinstance(defense, (GloRo, KW)):
        fields["epsilon"] = defense.epsilon
    else:
        fields |= {"implementation": f"{cls.__module__}:{cls.__name__}", "epsilon": getattr(defense, "epsilon", None)}
    try:
        spec = DefenseSpec(**fields)
    except ValidationError as error:
        raise RsbenchError(f"cannot describe {cls.__name__}: {registry.format_validation_error(error)}") from None

    def unchanged() -> None:
        if models.state_dict_sha256(model) != digest:
            raise RsbenchError(f"the weights of {spec.name} changed since the run started; run it again")

    def build(run_spec: DefenseSpec) -> Defense:
        unchanged()
        if isinstance(defense, smoothing.Smoothing):  # the run's n0, n, alpha and batch size
            return smoothing.from_spec(run_spec, defense.base_classifier)
        return defense

    return spec, in_process.Held(build, cls), tensors


def kind_of(defense: Defense) -> str:
    """The spec kind of a defense object: smoothing, gloro, kw, or plugin for any other class."""
    for cls, kind in ((smoothing.Smoothing, "smoothing"), (GloRo, "gloro"), (KW, "kw")):
        if isinstance(defense, cls):
            return kind
    return "plugin"


def data_spec(data: Data) -> tuple[DatasetSpec, TensorDataset | None]:
    """The dataset spec of a registered dataset's name, or of an (x, y) pair (with the tensors to hold)."""
    if data is None:
        raise RsbenchError("a defense built in Python needs data=: a dataset name ('digits', 'mnist', …) or an "
                           "(x, y) pair of tensors")
    if isinstance(data, str):
        try:
            return DatasetSpec(name=data), None
        except ValidationError as error:
            raise RsbenchError(f"data={data!r}: {registry.format_validation_error(error)}") from None
    x, y = _checked(data)
    digest = hashlib.sha256()
    for tensor in (x, y):
        digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return DatasetSpec(name="tensors", sha256=digest.hexdigest()), TensorDataset(x, y)


def _checked(data: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) as float32 (N, C, H, W) images in [0, 1] and int64 (N,) labels on the CPU, or one line saying why not."""
    if not (isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise RsbenchError(f"data must be a dataset name or an (x, y) pair of tensors, got {type(data).__name__}")
    x, y = data
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or len(x) == 0:
        raise RsbenchError(f"expected x of shape (N, C, H, W) and y of shape (N,), got {tuple(x.shape)} and "
                           f"{tuple(y.shape)}")
    if not x.is_floating_point() or y.is_floating_point() or y.dtype == torch.bool:
        raise RsbenchError(f"expected float images and integer labels, got {x.dtype} and {y.dtype}")
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise RsbenchError("image pixels must be finite and lie in [0, 1]")
    return x, y.detach().to("cpu", torch.int64)


def verify_exactly(defense: str, *, num_samples: int = 10, epsilon: float | None = None, minimal: bool = False,
                   time_limit: float | None = None, out: str | Path | None = None, progress: bool = True,
                   backend: str = "local", workers: int = 1, address: str | None = None) -> Any:
    """Decide exactly, by a MILP, which of the first `num_samples` test samples of a registry defense (a
    deterministic ReLU network in l_inf) have an adversarial example within `epsilon` (default: the defense's own);
    with `minimal`, also each one's exact closest distance. The run of `rsbench exact`: records in `out`
    (default `runs/<defense>/exact-seed0-<key>`), resumed when re-run; `backend="ray"` spreads the samples over
    `workers` Ray actors. Returns the run's `ExactResult`."""
    from rsbench.exact import run

    spec = registry.get_defense(defense)
    requirements.require(spec)
    config = run.exact_config(spec, num_samples=num_samples, epsilon=epsilon, minimal=minimal, time_limit=time_limit,
                              workers=workers)
    path = Path(out) if out is not None else rundir.default_path(config)
    return run.verify(spec, config, path, progress=progress, backend=backend, address=address)
