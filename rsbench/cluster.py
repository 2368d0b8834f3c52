"""The Ray backend of the engine: a run's batches spread over Ray actors, on a local Ray or an existing cluster.

Each actor holds one worker (`engine.SampleWorker`), so a model is loaded once per actor, and
takes one batch at a time. An actor that dies is restarted and its in-flight batch retried
(`max_restarts`, `max_task_retries`), so a crash loses no more than that batch's time. A
retried batch gives the same outcomes, every noise stream being seeded from the sample and
the attack; the driver, which alone writes, drops any outcome it has already appended.
Ray is imported here only, so the single-process path needs nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from rsbench.errors import RsbenchError

RESTARTS = 3
"""Times an actor is restarted, and a batch retried, after its process dies: a batch that kills every worker it
reaches (out of memory, say) ends the run instead of looping."""
LOCAL_OBJECT_STORE = 256 * 2**20
"""Bytes of the object store of a local Ray: outcomes are records and a few examples, far below it."""


def import_ray() -> Any:
    """The ray module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RsbenchError('--backend ray needs Ray: pip install "rsbench[ray]"') from None
    return ray


def connect(ray: Any, address: str | None) -> None:
    """Join the cluster at `address`, or start a small local Ray, unless this process is connected already."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        ray.init(include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE, logging_level="WARNING")


class Actor:
    """One worker in its own process; a failure to build it (missing weights, say) is raised with the first batch,
    as the error it is, rather than as a dead actor that Ray would restart."""

    def __init__(self, factory: Callable[..., Callable[[list], list]], args: tuple) -> None:
        try:
            self.worker: Callable[[list], list] | Exception = factory(*args)
        except Exception as error:  # noqa: BLE001 - re-raised in run
            self.worker = error

    def run(self, batch: list) -> list:
        if isinstance(self.worker, Exception):
            raise self.worker
        return self.worker(batch)


def slot(device: torch.device) -> dict[str, float]:
    """The resources one actor claims: a GPU when the run is on CUDA, else a CPU core."""
    return {"num_gpus": 1} if device.type == "cuda" else {"num_cpus": 1}


def check_capacity(ray: Any, resources: dict[str, float], workers: int) -> None:
    """Refuse more actors than the cluster has slots for: the extra ones would never start, nor their batches."""
    name = "GPU" if "num_gpus" in resources else "CPU"
    slots = int(ray.cluster_resources().get(name, 0))
    if workers > slots:
        raise RsbenchError(f"--workers {workers} exceeds the Ray cluster's {slots} {name} slots")


def run_batches(factory: Callable[..., Callable[[list], list]], batches: list[list], args: tuple, workers: int,
                device: torch.device, address: str | None = None) -> Iterator[list]:
    """Outcomes of each batch as they finish, computed by `workers` actors each holding `factory(*args)`.

    Every actor has one batch in flight; each finished batch hands the actor the next one.
    """
    ray = import_ray()
    connect(ray, address)
    resources = slot(device)
    check_capacity(ray, resources, workers)
    remote = ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS, **resources)(Actor)
    actors = [remote.remote(factory, args) for _ in range(workers)]
    queue = iter(batches)
    pending = {actor.run.remote(batch): actor for actor, batch in zip(actors, queue)}
    try:
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ready)
            outcomes = result(ray, ready)
            following = next(queue, None)
            if following is not None:
                pending[actor.run.remote(following)] = actor
            yield outcomes
    finally:
        for actor in actors:
            ray.kill(actor)


def result(ray: Any, ref: Any) -> list:
    """A batch's outcomes; an error raised by the worker is raised here as itself (an RsbenchError stays one line)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        raise error.cause from None

