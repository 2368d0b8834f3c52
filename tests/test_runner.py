"""The certify job: records as samples finish, resume without loss or duplicates, config checks."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rsbench import registry, runner
from rsbench.errors import RsbenchError
from rsbench.records import RunConfig

SPEC = registry.get_defense("smoothing-digits-0.50")


def config(**changes: object) -> RunConfig:
    settings = dict(command="certify", defense=SPEC.name, defense_hash=SPEC.spec_hash(), num_samples=6,
                    n0=20, n=300, alpha=0.01, batch_size=100, seed=3)
    return RunConfig(**{**settings, **changes})


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "samples.jsonl").read_text().splitlines()]


def without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("reference")
    return out, runner.certify(SPEC, config(), out, torch.device("cpu"), progress=False)


def test_writes_records_result_and_plot(reference: tuple[Path, object]) -> None:
    out, result = reference
    records = lines(out)
    assert [r["index"] for r in records] == list(range(6))
    assert set(records[0]) == {"index", "label", "prediction", "radius", "correct", "time_s"}
    assert all(r["correct"] == (r["prediction"] == r["label"]) for r in records)
    saved = json.loads((out / "result.json").read_text())
    assert saved["config"]["seed"] == 3 and saved["config"]["alpha"] == 0.01
    assert saved["defense"]["name"] == SPEC.name and saved["environment"]["torch_version"] == torch.__version__
    assert saved["clean_accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 6)
    assert saved["certified_accuracy"][0]["radius"] == 0.0
    assert saved["average_certified_radius"] == pytest.approx(sum(r["radius"] for r in records if r["correct"]) / 6)
    assert (out / "certified_accuracy.png").stat().st_size > 1000


def test_resume_after_a_torn_write_loses_nothing_and_duplicates_nothing(reference, tmp_path: Path) -> None:
    out, _ = reference
    text = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "samples.jsonl").write_text("".join(text[:2]) + text[2][:15])  # killed while writing sample 2
    (tmp_path / "config.json").write_text((out / "config.json").read_text())
    runner.certify(SPEC, config(), tmp_path, torch.device("cpu"), progress=False)
    assert without_time(lines(tmp_path)) == without_time(lines(out))
    assert [r["time_s"] for r in lines(tmp_path)[:2]] == [r["time_s"] for r in lines(out)[:2]]  # kept, not redone


def test_a_killed_process_resumes_to_the_same_records(tmp_path: Path) -> None:
    settings = config(num_samples=30, n=1000)
    reference_out = tmp_path / "reference"
    runner.certify(SPEC, settings, reference_out, torch.device("cpu"), progress=False)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "rsbench", "certify", "--defense", SPEC.name, "--num-samples", "30",
               "--n0", "20", "--n", "1000", "--alpha", "0.01", "--batch-size", "100", "--seed", "3",
               "--device", "cpu", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        path = out / "samples.jsonl"
        if path.exists() and path.read_text().count("\n") >= 2:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert process.wait() == -signal.SIGKILL
    assert len(lines(out)) < 30  # really interrupted mid-way
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert without_time(lines(out)) == without_time(lines(reference_out))


def test_extending_a_run_certifies_only_the_new_samples(reference, tmp_path: Path) -> None:
    out, _ = reference
    runner.certify(SPEC, config(num_samples=3), tmp_path, torch.device("cpu"), progress=False)
    result = runner.certify(SPEC, config(), tmp_path, torch.device("cpu"), progress=False)
    assert result.num_samples == 6
    assert without_time(lines(tmp_path)) == without_time(lines(out))


def test_a_changed_config_is_refused_and_nothing_is_lost(reference, tmp_path: Path) -> None:
    runner.certify(SPEC, config(num_samples=2), tmp_path, torch.device("cpu"), progress=False)
    before = (tmp_path / "samples.jsonl").read_text()
    with pytest.raises(RsbenchError, match=r"different config \(n, alpha changed\)"):
        runner.certify(SPEC, config(n=500, alpha=0.05), tmp_path, torch.device("cpu"), progress=False)
    assert (tmp_path / "samples.jsonl").read_text() == before


def test_unwritable_out_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RsbenchError, match="cannot write to run directory"):
        runner.certify(SPEC, config(), blocker / "run", torch.device("cpu"), progress=False)


def test_too_many_samples_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RsbenchError, match="exceeds the 500 samples"):
        runner.certify(SPEC, config(num_samples=501), tmp_path, torch.device("cpu"), progress=False)


def test_sample_generators_are_independent_of_order() -> None:
    a = runner.sample_generator(0, 5, torch.device("cpu"))
    b = runner.sample_generator(0, 5, torch.device("cpu"))
    c = runner.sample_generator(0, 6, torch.device("cpu"))
    first = torch.randn(4, generator=a)
    assert torch.equal(first, torch.randn(4, generator=b)) and not torch.equal(first, torch.randn(4, generator=c))


def test_a_run_records_the_commit_it_started_from_not_the_one_it_ends_at(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkout moves on during a long run (a commit lands, a file of the package is edited): the result names the
    code the run loaded, and marks it dirty where the package's tracked files differed from its commit."""
    heads = iter(["a" * 40, *["b" * 40] * 10])
    status = {"changed": ""}

    def git(args: list[str], **_: object) -> subprocess.CompletedProcess:
        out = next(heads) if "rev-parse" in args else status["changed"]
        return subprocess.CompletedProcess(args, 0, stdout=out + "\n", stderr="")

    monkeypatch.setattr(runner.subprocess, "run", git)
    runner.loaded_commit.cache_clear()
    try:
        result = runner.certify(SPEC, config(num_samples=1), tmp_path / "run", torch.device("cpu"), progress=False)
        assert result.environment.git_commit == "a" * 40
        runner.loaded_commit.cache_clear()
        status["changed"] = " M rsbench/metrics.py"
        assert runner.environment(torch.device("cpu")).git_commit == "b" * 40 + "-dirty"
    finally:
        runner.loaded_commit.cache_clear()
