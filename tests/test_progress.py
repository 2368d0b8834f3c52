"""Progress on a terminal only, and a failing attack reported in one line with its sample, keeping what finished."""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import rsbench
from rsbench.cli import cli
from rsbench.engine import SampleOutcome, StepFailed
from rsbench.records import SampleRecord
from rsbench.submissions import sandbox
from rsbench.submissions.submission_run import written

CHECKOUT = str(Path(rsbench.__file__).resolve().parents[1])
TINY = ["--defense", "smoothing-digits-0.5", "--num-samples", "2", "--n0", "10", "--n", "200", "--alpha", "0.01",
        "--judge-n", "100", "--device", "cpu"]
FLAKY = '''
    import os

    from rsbench.attacks.base import Attack, ViewParams


    class Flaky(ViewParams):
        fail_on: int = -1
        """The label on which the attack raises while FLAKY_BROKEN=1."""


    class FlakyAttack(Attack):
        """Proposes nothing; raises on one label while FLAKY_BROKEN=1, as a buggy submission might."""

        Params = Flaky
        kinds = ("smoothing",)

        def run(self, view, x, label, tracker, generator):
            if os.environ.get("FLAKY_BROKEN") == "1" and label == self.params.fail_on:
                raise ValueError(f"cannot handle label {label}\\n(second line)")
'''


def user_registry(folder: Path, attacks: dict[str, tuple[str, dict]]) -> Path:
    (folder / "attacks").mkdir(parents=True)
    for name, (implementation, params) in attacks.items():
        spec = {"name": name, "implementation": implementation, "goal": "evasion", "norm": "l2", "params": params}
        (folder / "attacks" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return folder


def stderr_of(args: list[str], terminal: bool) -> str:
    """Run rsbench in this process with stderr on a pseudo-terminal (200 columns) or a pipe; what it wrote there."""
    if terminal:
        reader, writer = os.openpty()
        fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
    else:
        reader, writer = os.pipe()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(reader, 65536)
            except OSError:  # the terminal was closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    thread = threading.Thread(target=drain)
    thread.start()
    stream = os.fdopen(writer, "w")
    saved, sys.stderr = sys.stderr, stream
    try:
        cli.main(args, standalone_mode=False)
    finally:
        sys.stderr = saved
        stream.close()
        thread.join(timeout=30)
        os.close(reader)
    return b"".join(chunks).decode(errors="replace")


def test_progress_is_drawn_on_a_terminal_only_and_never_with_quiet(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    registry = user_registry(tmp_path / "registry", {"caa-tiny": ("rsbench.attacks.caa:CAA",
                                                                  {"num_noise": 50, "iterations": 2})})
    monkeypatch.setenv("RSBENCH_REGISTRY", str(registry))
    monkeypatch.setenv("RSBENCH_QUIET", "0")  # restored (unset) after the test, which --quiet sets to 1
    evaluate = ["evaluate", *TINY, "--workers", "1", "--attack", "caa-tiny"]
    shown = stderr_of([*evaluate, "--out", str(tmp_path / "a")], terminal=True)
    assert "evasion smoothing-digits-0.50" in shown and "\r" in shown
    assert "sample 0: certifying" in shown and "sample 0: caa-tiny" in shown  # what runs, as it starts
    piped = stderr_of([*evaluate, "--out", str(tmp_path / "b")], terminal=False)
    quiet = stderr_of(["--quiet", *evaluate, "--out", str(tmp_path / "c")], terminal=True)
    assert os.environ["RSBENCH_QUIET"] == "1"  # inherited by worker processes
    for silent in (piped, quiet):
        assert "evasion smoothing-digits-0.50" not in silent and "\r" not in silent and "sample 0" not in silent


def test_a_failing_attack_names_its_sample_keeps_what_finished_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flaky_attack.py").write_text(textwrap.dedent(FLAKY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), CHECKOUT]))  # for the worker processes
    registry = user_registry(tmp_path / "registry", {"steady": ("flaky_attack:FlakyAttack", {}),
                                                     "flaky": ("flaky_attack:FlakyAttack", {"fail_on": 9})})
    monkeypatch.setenv("RSBENCH_REGISTRY", str(registry))
    monkeypatch.setenv("FLAKY_BROKEN", "1")
    out = tmp_path / "run"
    args = ["evaluate", *TINY, "--num-samples", "5", "--attack", "steady", "--attack", "flaky", "--out", str(out)]
    failed = CliRunner().invoke(cli, [*args, "--workers", "2"])
    assert failed.exit_code == 2 and len(failed.output.strip().splitlines()) == 1
    clean = [SampleRecord.model_validate_json(line) for line in (out / "clean.jsonl").read_text().splitlines()]
    broken = next(c.index for c in clean if c.label == 9 and c.correct)  # the first qualifying label-9 sample
    assert (f"attack flaky failed on sample {broken} (label 9): ValueError: cannot handle label 9 (second line) "
            f"(traceback in {out / 'error.log'}); the finished records are kept") in failed.output
    assert "Traceback" not in failed.output and "ValueError" in (out / "error.log").read_text()
    before = (out / "samples.jsonl").read_text()
    kept = {(r["index"], r["attack"]) for r in map(json.loads, before.splitlines())}
    assert (broken, "steady") in kept and (broken, "flaky") not in kept  # the sample's finished attack is kept

    monkeypatch.setenv("FLAKY_BROKEN", "0")
    resumed = CliRunner().invoke(cli, [*args, "--workers", "1"])
    assert resumed.exit_code == 0, resumed.output
    after = (out / "samples.jsonl").read_text()
    assert after.startswith(before)
    pairs = [(r["index"], r["attack"]) for r in map(json.loads, after.splitlines())]
    qualifying = [c.index for c in map(SampleRecord.model_validate_json, (out / "clean.jsonl").read_text().splitlines())
                  if c.correct]
    assert sorted(pairs) == sorted((i, a) for i in qualifying for a in ("steady", "flaky"))  # each once


def test_a_step_failure_crosses_processes_with_what_finished() -> None:
    clean = SampleRecord(index=3, label=1, prediction=1, radius=0.5, correct=True, time_s=0.1)
    failure = pickle.loads(pickle.dumps(StepFailed("attack x failed on sample 3: E: why", "trace", [
        SampleOutcome(3, clean, [])])))
    assert str(failure) == "attack x failed on sample 3: E: why" and failure.details == "trace"
    assert failure.finished[0].clean == clean


def test_a_sandboxed_run_is_looked_at_while_it_runs_and_still_stopped_at_its_limit(tmp_path: Path) -> None:
    """A submission's run shows its progress from the records it has written so far: `tick` is called while the
    command runs, the time limit still holds, and the records are counted without following a link."""
    ticks: list[float] = []
    done = sandbox._run([sys.executable, "-c", "import time; time.sleep(1.3); print('done')"], None, None, 30,
                        lambda: ticks.append(time.monotonic()))
    assert done.stdout.strip() == "done" and len(ticks) >= 2
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        sandbox._run([sys.executable, "-c", "import time; time.sleep(30)"], None, None, 0.8, lambda: None)
    assert time.monotonic() - started < 5
    records = tmp_path / "samples.jsonl"
    assert written(records) == 0
    records.write_text('{"index": 0}\n{"index": 1}\n{"index": 2')  # the third still being written
    assert written(records) == 2
    (tmp_path / "link.jsonl").symlink_to(records)
    assert written(tmp_path / "link.jsonl") == 0


def test_a_failed_run_returns_even_when_a_killed_worker_held_the_report_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker terminated while it wrote a progress report leaves the queue's write lock taken; stopping the
    relay must not need that lock, or the parent hangs after the failure instead of reporting it."""
    import multiprocessing

    from rsbench import engine

    spawn = multiprocessing.get_context("spawn")

    class FailingPool:
        def __init__(self, *args: object) -> None:
            pass

        def imap_unordered(self, *args: object) -> object:
            raise RuntimeError("a worker failed")

        def close(self) -> None:
            pass

        terminate = join = close

    class Context:
        def SimpleQueue(self) -> object:  # noqa: N802 - multiprocessing's name
            queue = spawn.SimpleQueue()
            queue._wlock.acquire()  # as a worker killed mid-put leaves it
            return queue

        Pool = FailingPool

    monkeypatch.setattr(engine.multiprocessing, "get_context", lambda method: Context())
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            list(engine.run_tasks([[]], (), workers=2))
        except RuntimeError as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the parent hung on the report queue"
    assert [str(e) for e in outcome] == ["a worker failed"]
