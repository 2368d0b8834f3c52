"""The Ray backend on a local Ray: the same records as one process, a killed worker's batch retried, each
(sample, attack) appended once, and its errors in one line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import torch
from click.testing import CliRunner

from rsbench import cluster, engine, registry
from rsbench.cli import cli
from rsbench.errors import RsbenchError
from rsbench.records import RunResult

DEFENSE, ATTACK, SAMPLES = "gloro-digits-0.25", "degradation-pgd", 8


def evaluate(out: Path, workers: int = 1, **options: object) -> RunResult:
    spec, attacks = registry.get_defense(DEFENSE), [registry.get_attack(ATTACK)]
    config = engine.evaluate_config(spec, attacks, num_samples=SAMPLES, workers=workers)
    return engine.evaluate(spec, attacks, config, out, torch.device("cpu"), progress=False, **options)


def rows(out: Path, name: str) -> list[dict]:
    """The file's records as written (duplicates kept), times left out, in (sample, attack) order."""
    records = [json.loads(line) for line in (out / name).read_text().splitlines()]
    timeless = [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in records]
    return sorted(timeless, key=lambda r: (r["index"], r.get("attack", "")))


def same_records(out: Path, reference: Path) -> bool:
    return all(rows(out, name) == rows(reference, name) for name in ("clean.jsonl", "samples.jsonl"))


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread, as each Ray actor runs: a thread count orders float64 sums (GloRo's radii, say)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single-process")
    with one_thread():
        evaluate(out)
    assert rows(out, "samples.jsonl"), "no sample was attacked: the comparisons below would be empty"
    return out


def test_a_ray_run_equals_the_single_process_run_record_for_record(
    ray_cluster: ModuleType, single_process: Path, tmp_path: Path
) -> None:
    result = evaluate(tmp_path, workers=2, backend="ray")
    assert same_records(tmp_path, single_process)
    assert result.metrics == json.loads((single_process / "result.json").read_text())["metrics"]


def test_a_worker_killed_mid_run_is_retried_and_nothing_is_lost_or_duplicated(
    ray_cluster: ModuleType, single_process: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "killed"

    class KilledOnce(engine.SampleWorker):
        """Kills its actor's process on the first batch any actor receives (the marker says it happened)."""

        def __call__(self, tasks: list[engine.SampleTask]) -> list[engine.SampleOutcome]:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return super().__call__(tasks)
            os._exit(1)

    monkeypatch.setattr(engine, "SampleWorker", KilledOnce)
    evaluate(tmp_path / "run", workers=2, backend="ray", images_per_batch=2)
    assert marker.exists()
    assert same_records(tmp_path / "run", single_process)


def test_an_outcome_delivered_twice_is_appended_once(
    single_process: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_tasks = engine.run_tasks

    def twice(*args: object, **kwargs: object):
        for batch in run_tasks(*args, **kwargs):
            yield batch
            yield batch  # as a batch retried after its first result was delivered would be

    monkeypatch.setattr(engine, "run_tasks", twice)
    with one_thread():
        evaluate(tmp_path)
    assert same_records(tmp_path, single_process)


def test_a_worker_that_cannot_be_built_fails_the_run_with_its_own_error(ray_cluster: ModuleType) -> None:
    def cannot_be_built() -> None:
        raise RsbenchError("weights missing")

    with pytest.raises(RsbenchError, match="^weights missing$"):
        list(cluster.run_batches(cannot_be_built, [[0]], (), 1, torch.device("cpu")))


def test_backend_errors_are_one_line_and_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    command = ["evaluate", "--defense", DEFENSE, "--attack", ATTACK, "--num-samples", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, [*command, "--address", "auto"])
    assert result.exit_code == 2 and "needs --backend ray" in result.output and result.output.count("\n") == 1
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    result = CliRunner().invoke(cli, [*command, "--backend", "ray"])
    assert result.exit_code == 2 and 'pip install "rsbench[ray]"' in result.output
    assert result.output.count("\n") == 1
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
