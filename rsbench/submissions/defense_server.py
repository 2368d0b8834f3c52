"""A submitted defense's code in a sandboxed process of its own, reached by tensors only.

Code in the process that runs rsbench's attacks, judge and bookkeeping could change them: make an
attack find nothing, a verdict refuse every example, a soundness check pass. So a submitted
defense's code never runs there. `served` starts it in the bubblewrap sandbox (`rsbench.submissions.sandbox`:
a read-only copy of the harness, a copy of the submission, the verified checkpoint, no network, no
checkout) and holds a stand-in in this process (`rsbench.in_process`) that `load_defense` hands out:

- smoothing: rsbench's own `Smoothing` (noise, votes, CERTIFY) around a base classifier whose every
  batch goes to the child;
- a plugin: `RemotePlugin`, whose `certify`, `certify_many`, `predict` and, when the class provides
  it, `worst_case_margins` are requests, and whose `model` is a module forwarding to the child.
  `certified_at` (degradation's verdict) is what the interface defines it as, the certificate's
  radius against epsilon, so it can never disagree with `certify`. A plugin whose network is an ONNX graph
  (`architecture: onnx`) is self-certified and audited: `GraphPlugin` keeps only its certificates from the
  child; its `model`, which attacks differentiate, is rsbench's conversion of the graph, and the child's network
  must agree with it on every input it certifies.

Gradients cross too: each forward is an autograd function whose backward asks the child for the
vector-Jacobian product at the same input. Messages are a JSON header and raw tensor bytes
(`rsbench.submissions.tensor_pipe`: no pickle), bounded in size; every answer is checked for type, shape and
finiteness before rsbench uses it, and the whole session has a deadline. What the child controls is
what a defense is: its network's outputs and gradients, and its certificates. Its generators' states
cross with each certificate, so a randomized plugin is seeded by rsbench; a self-certified one (`GraphPlugin`),
audited as deterministic, gets generators the operating system seeds, never the run's, whose public seed it could
recognise. While the stand-in is held, this process refuses to import code a spec names (`user_code.refused`);
the trees no run may change are fingerprinted before and after (`submission_run.guarded`).
"""

from __future__ import annotations

import importlib
import math
import os
import secrets
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsbench import hub, in_process, user_code
from rsbench.defenses.base import Certificate, Defense, check_input, check_output
from rsbench.errors import RsbenchError
from rsbench.specs import GRAPH, DefenseSpec
from rsbench.submissions import sandbox, submission_spec
from rsbench.submissions.tensor_pipe import Pipe, states


WAIT_POLICY = "PASSIVE"
"""The served process's OpenMP threads sleep as soon as their work ends instead of spinning for it: it answers
one request at a time, in lockstep with rsbench's process, and threads spinning between requests took the cores
that the other process needed next. On a loaded 2-core machine a served forward pass took 4 to 24 ms with
spinning threads and 0.55 ms without (in-process: 0.12 ms; `benchmarks/served_overhead.py`). An OMP_WAIT_POLICY
of rsbench's own environment is passed on instead."""


class Link:
    """This process's end of a served defense: one request, one answer, within the session's deadline."""

    def __init__(self, process: subprocess.Popen, name: str, deadline: float, stderr: Path) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process, self.name, self.stderr = process, name, stderr
        self.pipe = Pipe(process.stdout.fileno(), process.stdin.fileno(), deadline)

    def receive(self, what: str) -> tuple[Any, dict[str, torch.Tensor]]:
        """The value and tensors of the child's next answer; refused in one line when it is none."""
        try:
            header, tensors = self.pipe.receive()
        except TimeoutError:
            self.close()
            raise RsbenchError(f"{self.name}'s process ran past its time limit ({what})") from None
        except (EOFError, OSError, ValueError, struct.error) as error:
            self.close()
            raise RsbenchError(f"{self.name}'s process gave no valid answer to {what} "
                               f"({type(error).__name__}: {self.last_words()})") from None
        if "error" in header:
            raise RsbenchError(f"{self.name}'s code failed on {what}: {sandbox.echoed(str(header['error']))}")
        return header.get("value"), tensors

    def call(self, op: str, tensors: dict[str, torch.Tensor], **args: Any) -> tuple[Any, dict[str, torch.Tensor]]:
        try:
            self.pipe.send({"op": op, "args": args}, tensors)
        except (TimeoutError, OSError):
            self.close()
            raise RsbenchError(f"{self.name}'s process stopped reading ({op}: {self.last_words()})") from None
        return self.receive(op)

    def tensor(self, op: str, tensors: dict[str, torch.Tensor], shape: tuple[int, ...], **args: Any) -> torch.Tensor:
        """A finite float32 tensor of `shape` the child answers `op` with (`check_output`, as every path checks)."""
        _, answer = self.call(op, tensors, **args)
        value = answer.get("y")
        expected = f"expected finite float32 values of shape {list(shape)}; refused"
        if isinstance(value, torch.Tensor) and value.dtype != torch.float32:
            raise RsbenchError(f"{self.name}'s process answered {op} with {value.dtype} values; {expected}")
        return check_output(value, shape, f"{self.name}'s process answered {op} with", "values", expected)

    def last_words(self) -> str:
        """The last line the child wrote to standard error (read from the end: the child may have written a lot)."""
        with self.stderr.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            tail = handle.read().decode(errors="replace")
        return sandbox.echoed(tail) or f"exit status {self.process.poll()}"

    def close(self) -> None:
        """End the child and every process it started."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()


class _Remote(torch.autograd.Function):
    """A function of x computed by the child, differentiable: backward asks the child for its vector-Jacobian
    product at the same x."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, link: Link, function: str, extra: dict[str, torch.Tensor],
                width: int, args: dict[str, Any]) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.link, ctx.function, ctx.extra, ctx.args = link, function, extra, args
        return link.tensor("call", {"x": x.float(), **extra}, (len(x), width), function=function, **args).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        g = ctx.link.tensor("vjp", {"x": x.float(), "grad": grad.float(), **ctx.extra}, tuple(x.shape),
                            function=ctx.function, **ctx.args)
        return g.to(x.dtype), None, None, None, None, None


class RemoteModule(nn.Module):
    """The child's network as a module of this process: (B, C, H, W) inputs in, (B, num_classes) logits out."""

    def __init__(self, link: Link, num_classes: int) -> None:
        super().__init__()
        self.link, self.num_classes = link, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Remote.apply(x, self.link, "model", {}, self.num_classes, {})


def _advance(generators: Sequence[torch.Generator | None], answer: dict[str, torch.Tensor]) -> None:
    """Set each generator to the state the child's copy of it ended in."""
    seeded = [g for g in generators if g is not None]
    states = answer.get("states")
    if seeded and (states is None or states.shape != (len(seeded), *seeded[0].get_state().shape)):
        raise RsbenchError("a served defense answered without its generators' states; refused")
    for g, state in zip(seeded, states if seeded else []):
        g.set_state(state.clone())


class RemotePlugin(Defense):
    """A plugin certifier whose code runs in the child: every method a request, every answer checked."""

    def __init__(self, link: Link, num_classes: int, norm: str) -> None:
        self.link, self.num_classes, self.norm = link, num_classes, norm
        self.model = RemoteModule(link, num_classes)

    def _label(self, value: Any, what: str) -> int | None:
        if value is None or type(value) is int and 0 <= value < self.num_classes:
            return value
        raise RsbenchError(f"{self.link.name}'s process answered {what} with {str(value)[:40]}, not a label; refused")

    def certify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        return self.certify_many([x], [generator])[0]

    def certify_many(self, xs: Sequence[torch.Tensor],
                     generators: Sequence[torch.Generator | None]) -> list[Certificate]:
        for x in xs:
            check_input(x)
        value, answer = self.link.call("certify", {"x": torch.stack(list(xs)).float(), **states(generators)},
                                       seeded=[g is not None for g in generators])
        _advance(generators, answer)
        if not isinstance(value, list) or len(value) != len(xs):
            raise RsbenchError(f"{self.link.name}'s process answered certify without one certificate per input; "
                               "refused")
        certificates = []
        for item in value:
            prediction = self._label(item[0] if isinstance(item, list) and len(item) == 3 else "?", "certify")
            radius, p_lower = item[1], item[2]
            if type(radius) not in (int, float) or not math.isfinite(radius) or radius < 0 or \
                    p_lower is not None and (type(p_lower) not in (int, float) or not 0 <= p_lower <= 1):
                raise RsbenchError(f"{self.link.name}'s process answered certify with radius {str(radius)[:20]}; "
                                   "refused")
            certificates.append(Certificate(prediction, float(radius) if prediction is not None else 0.0,
                                            None if p_lower is None else float(p_lower)))
        return certificates

    def predict(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> int | None:
        check_input(x)
        value, answer = self.link.call("predict", {"x": x.float(), **states([generator])},
                                       seeded=[generator is not None])
        _advance([generator], answer)
        return self._label(value, "predict")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> RemotePlugin:
        if torch.device(device).type != "cpu":
            raise RsbenchError(f"{self.link.name} runs on the CPU, in its sandbox; pass --device cpu")
        return self


class RemotePluginWithBound(RemotePlugin):
    """A served plugin whose class provides `worst_case_margins`."""

    def worst_case_margins(self, x: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
        return _Remote.apply(x, self.link, "margins", {"labels": labels.long()}, self.num_classes,
                             {"epsilon": float(epsilon)})


class GraphPlugin(RemotePlugin):
    """A self-certified plugin whose network is an ONNX graph: its certificates come from its sandbox, but `model`,
    which every attack differentiates and the soundness check labels with, is rsbench's own conversion of the graph,
    and the served network must give the graph's logits at every input it certifies. It is audited as deterministic,
    so its generators are the operating system's (`unforeseeable`): the run's derive from the track's public seed,
    and code that recognised their states (the judge's, say) could certify more there than where it is audited."""

    def __init__(self, link: Link, num_classes: int, norm: str, graph: nn.Module) -> None:
        super().__init__(link, num_classes, norm)
        self.served, self.model = self.model, graph

    def certify_many(self, xs: Sequence[torch.Tensor],
                     generators: Sequence[torch.Generator | None]) -> list[Certificate]:
        from rsbench.graphs import TOLERANCE

        for x in xs:
            check_input(x)
        batch = torch.stack(list(xs)).float()
        with torch.no_grad():
            served, own = self.served(batch), self.model(batch)
        gap = float((served - own).abs().max())
        if not gap <= TOLERANCE * max(1.0, float(own.abs().max())):
            raise RsbenchError(f"{self.link.name}'s served network differs from its ONNX graph by {gap:.3g} in the "
                               "logits of an input it certifies; refused")
        return super().certify_many(xs, unforeseeable(generators))

    def predict(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> int | None:
        return super().predict(x, generator=unforeseeable([generator])[0])


def unforeseeable(generators: Sequence[torch.Generator | None]) -> list[torch.Generator | None]:
    """A generator seeded by the operating system in place of each given one (None stays None)."""
    return [None if g is None else torch.Generator(g.device).manual_seed(secrets.randbits(63)) for g in generators]


class GraphPluginWithBound(GraphPlugin, RemotePluginWithBound):
    """A self-certified plugin on a graph whose class provides `worst_case_margins`."""


def needs_serving(spec: DefenseSpec) -> bool:
    """Whether the defense names code of its own (a `python:` architecture, a plugin), which runs only in a child."""
    return bool(user_code.references(spec))


@contextmanager
def served(spec: DefenseSpec, folder: Path, *, timeout: float, isolated: bool = True,
           guard: dict[str, Path] | None = None) -> Iterator[None]:
    """For the length of the block, hold a stand-in of `spec`'s defense whose code runs in a sandboxed child started
    from the submission `folder` (which must hold that very spec); refused when a guarded tree changed meanwhile."""
    if spec.kind in ("gloro", "kw"):
        raise RsbenchError(f"{spec.name}: {spec.kind} certifies from the layers of its network, which rsbench reads in "
                           "its own process; submitted code runs only in its sandbox, so submit the certifier as a "
                           "plugin (kind: plugin)")
    box = sandbox.Sandbox(isolated)
    checkpoint = hub.resolve_weights(spec.weights, folder)
    _import_judging()
    before = {what: sandbox.digest(path) for what, path in (guard or {}).items()}
    with tempfile.TemporaryDirectory(prefix="rsbench-defense-") as scratch:
        work = Path(scratch)
        harness = box.mount(sandbox.harness_copy(work / "harness"), "/harness")
        submission_spec.copy(folder, work / "submission" / folder.name)
        code = box.mount(work / "submission", "/submission") + f"/{folder.name}"
        weights = box.mount(checkpoint, f"/checkpoint/{checkpoint.name}")
        (work / "home").mkdir()
        env = {"PYTHONPATH": harness, "HF_HUB_OFFLINE": "1"}
        env |= {name: os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ}
        env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", WAIT_POLICY)
        argv = [sys.executable, "-c", "import sys; from rsbench.submissions.defense_child import main; main(*sys.argv[1:])",
                code, spec.spec_hash(), weights]
        stderr = work / "stderr.txt"
        with stderr.open("wb") as errors:
            process = box.start(argv, env, "/tmp" if isolated else str(work / "home"), errors)
        link = Link(process, spec.name, time.monotonic() + timeout, stderr)
        try:
            info, _ = link.receive("loading its defense")
            held = _stand_in(spec, link, info, checkpoint)
            with in_process.hold(spec, held), user_code.refused(f"which holds {spec.name}'s sandboxed stand-in"):
                yield
        finally:
            link.close()
    changed = [what for what, path in (guard or {}).items() if sandbox.digest(path) != before[what]]
    if changed:
        raise RsbenchError(f"{' and '.join(changed)} changed while {spec.name} was served; refused")


def _import_judging() -> None:
    """Import every module this process attacks and judges with before the fingerprints are taken: a module first
    imported inside the block would write its compiled file into the package, and the fingerprints count those."""
    from rsbench import registry
    from rsbench.defenses import BUILDERS
    from rsbench.goals import GOALS

    attacks = [spec.implementation for spec in registry.all_specs("attacks").values()]
    for target in [*GOALS.values(), *BUILDERS.values(), *attacks, "rsbench.graphs:load"]:
        importlib.import_module(target.partition(":")[0])


def _stand_in(spec: DefenseSpec, link: Link, info: Any, checkpoint: Path) -> in_process.Held:
    """How this process builds the served defense for a spec (its run's certification settings), and its class; a
    plugin on an ONNX graph (`checkpoint`) gets rsbench's own conversion of it as its `model`."""
    if not isinstance(info, dict) or info.get("norm") != spec.norm or info.get("num_classes") != spec.num_classes:
        raise RsbenchError(f"{spec.name}'s process built a defense of another norm or number of classes than its "
                           "spec's; refused")
    if spec.kind == "smoothing":
        from rsbench.defenses.smoothing import Smoothing, from_spec

        module = RemoteModule(link, spec.num_classes)
        return in_process.Held(lambda s: from_spec(s, module), Smoothing)
    if spec.architecture == GRAPH:
        from rsbench import graphs
        from rsbench.data import INPUT_SHAPES

        graph = graphs.load(checkpoint, INPUT_SHAPES[spec.dataset.name], spec.num_classes)
        on_graph = GraphPluginWithBound if info.get("bound") is True else GraphPlugin
        return in_process.Held(lambda s: on_graph(link, spec.num_classes, spec.norm, graph), on_graph)
    cls = RemotePluginWithBound if info.get("bound") is True else RemotePlugin
    return in_process.Held(lambda s: cls(link, spec.num_classes, spec.norm), cls)
