"""One run of a submitted attack on a track: in the sandbox, then judged here.

The parent (`run`) imports every module it will judge with and loads the defense and the dataset
before the child starts, fingerprints the harness package (compiled files included), the registry,
the leaderboards and the submission, and starts the child (`child`) in the sandbox with a read-only
copy of the harness, a copy of the submission and one scratch folder. The child runs the engine on
the track's attacked samples (their clean certificates are handed to it), seeded from a number drawn
from the operating system for this run, and writes its records and examples. Once it has exited, every
fingerprint must be unchanged; then the examples it returned are judged here (`rederive.rebuild`) on
noise from another seed drawn only now, so nobody knows either seed in advance. While it runs, the
records it has written so far advance the progress display (and nothing else).
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch.utils.data import Dataset

import rsbench
from rsbench import runner
from rsbench.data import data_home, load_dataset
from rsbench.defenses import BUILDERS, load_defense
from rsbench.defenses.base import Defense
from rsbench.errors import RsbenchError
from rsbench.goals import GOALS
from rsbench.hub import weights_home
from rsbench.leaderboard import rederive
from rsbench.leaderboard.track_files import Comparison, Judging, Leaderboard, jsonl, parse_jsonl, record_type
from rsbench.progress import bar
from rsbench.records import SampleRecord
from rsbench.submissions import sandbox, submission_spec
from rsbench.submissions.submission_spec import Submission, load_submission

MAX_OUTPUT_BYTES = 256 * 2**20
"""Largest examples file read back from a child (a run of every digits sample needs a few MB)."""
PROGRESS_BYTES = 16 * 2**20
"""Most of a running child's records read to show its progress (tens of thousands of records)."""


@dataclass(frozen=True)
class Judged:
    """What the harness made of one run: records and examples to store, and how it judged them."""

    records: list
    examples: dict | None
    judging: Judging
    seed: int
    """The seed of the child's run (attack, in-run judge and confirmation streams)."""
    proposals: dict[int, torch.Tensor]
    """The examples the child returned, by sample index, to judge again on other noise (`judge`)."""
    reports: dict[int, Any]
    """The child's own records, by sample index."""


def prepare(board: Leaderboard) -> tuple[Defense, Dataset]:
    """Import every module the judging uses and load the track's defense and dataset, before any child runs, so
    that nothing this process loads afterwards can come from a file the child wrote."""
    for target in [*GOALS.values(), *BUILDERS.values()]:
        importlib.import_module(target.partition(":")[0])
    defense = load_defense(runner.spec_for_run(board.defense, board.protocol.run_config([])))
    dataset = load_dataset(board.defense.dataset.name, board.protocol.split, board.defense.dataset.root)
    return defense, dataset


def guarded(root: Path | None, folder: Path) -> dict[str, Path]:
    """The trees no run may change: the harness package, the registry beside it, the leaderboards, the submission."""
    package = Path(rsbench.__file__).resolve().parent
    trees = {"the rsbench package": package, "the registry": package.parent / "registry", "the submission": folder}
    return trees | ({"the leaderboards": root} if root is not None else {})


def run(folder: Path, submission: Submission, board: Leaderboard, clean: list[SampleRecord], root: Path | None, *,
        timeout: float, isolated: bool = True, seed: int | None = None, judge_seed: int | None = None) -> Judged:
    """Run the submission on the track's attacked samples in the sandbox, on streams of `seed`, and judge what it
    returns on noise of `judge_seed` (each drawn from the operating system when not given; the judge's after the
    child has exited)."""
    defense, dataset = prepare(board)
    box = sandbox.Sandbox(isolated)
    trees = guarded(root, folder)
    before = {name: sandbox.digest(path) for name, path in trees.items()}
    seed = secrets.randbits(63) if seed is None else seed
    with tempfile.TemporaryDirectory(prefix="rsbench-submission-") as scratch:
        work = Path(scratch)
        harness = box.mount(sandbox.harness_copy(work / "harness"), "/harness")
        submission_spec.copy(folder, work / "submissions" / submission.name)
        code = box.mount(work / "submissions", "/submissions") + f"/{submission.name}"
        (work / "out" / "run").mkdir(parents=True)
        (work / "out" / "run" / "clean.jsonl").write_bytes(jsonl(clean))  # the engine attacks; it certifies nothing
        task = board.model_copy(update={"entries": [], "comparison": Comparison()}).model_dump(mode="json")
        indices = [c.index for c in clean]  # the samples it runs on: the track's, or the smoke track's chosen ones
        (work / "out" / "task.json").write_text(json.dumps({"board": task, "seed": seed, "indices": indices}))
        out = box.mount(work / "out", "/out", writable=True)
        env = {"PYTHONPATH": harness, "HF_HUB_OFFLINE": "1"}
        for variable, path, inside in (("RSBENCH_DATA", data_home(), "/data"), ("RSBENCH_WEIGHTS", weights_home(), "/weights")):
            if path.is_dir():
                env[variable] = box.mount(path, inside)
        env |= {name: os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ}
        argv = [sys.executable, "-c", "import sys; from rsbench.submissions.submission_run import child; child(*sys.argv[1:])",
                code, out]
        records = work / "out" / "run" / "samples.jsonl"
        with bar(len(rederive.attacked(board, clean)), f"run {submission.name} on {board.track}", "sample") as shown:
            def tick() -> None:
                shown.update(written(records) - shown.n)

            try:
                done = box.run(argv, env, out, timeout, None if shown.disable else tick)
            except subprocess.TimeoutExpired:
                raise RsbenchError(f"{submission.name} ran past its time limit of {timeout:g} s on {board.track}") \
                    from None
        changed = [name for name, path in trees.items() if sandbox.digest(path) != before[name]]
        if changed:
            raise RsbenchError(f"{' and '.join(changed)} changed while {submission.name} ran; refused")
        if done.returncode != 0:
            raise RsbenchError(f"{submission.name} failed on {board.track}: "
                               f"{sandbox.echoed(done.stderr) or done.returncode}")
        proposals, reports = returned(board, dataset, submission.name, work / "out" / "run")
    return judge(board, clean, submission.name, seed, proposals, reports, judge_seed, (defense, dataset))


def judge(board: Leaderboard, clean: list[SampleRecord], name: str, seed: int, proposals: dict[int, torch.Tensor],
          reports: dict[int, Any], judge_seed: int | None = None,
          loaded: tuple[Defense, Dataset] | None = None) -> Judged:
    """A run's returned examples judged on noise of `judge_seed` (default: drawn from the operating system now)."""
    defense, dataset = loaded or prepare(board)
    judge_seed = secrets.randbits(63) if judge_seed is None else judge_seed
    environment = runner.environment(defense.device)
    judging = Judging(seed=judge_seed, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      rsbench_version=environment.rsbench_version, git_commit=environment.git_commit)
    records, examples = rederive.rebuild(board, defense, dataset, clean, name, proposals, reports, judge_seed)
    return Judged(records, examples, judging, seed, proposals, reports)


def written(path: Path) -> int:
    """Records a running child has written to `path` so far, for the progress display only: never read through a
    link, never more than PROGRESS_BYTES."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return 0
    with os.fdopen(handle, "rb") as file:
        return file.read(PROGRESS_BYTES).count(b"\n") if stat.S_ISREG(os.fstat(handle).st_mode) else 0


def _plain(path: Path, scratch: Path, name: str) -> Path | None:
    """`path` if it is a plain file of at most MAX_OUTPUT_BYTES inside the scratch folder (never through a link the
    child made, which could point at any file of this machine); None if it does not exist."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(scratch.resolve()) \
            or path.stat().st_size > MAX_OUTPUT_BYTES:
        raise RsbenchError(f"{name}'s run left {path.name} as something other than a plain file under "
                           f"{MAX_OUTPUT_BYTES >> 20} MiB in its scratch folder; refused")
    return path


def returned(board: Leaderboard, dataset: Dataset, name: str, run_dir: Path) -> tuple[dict[int, torch.Tensor], dict[int, Any]]:
    """The examples the child returned (by sample index) and its own records (by index), checked for form:
    one record per sample, one example per sample at most, each starting from the dataset's x."""
    scratch = run_dir.parent
    records = _plain(run_dir / "samples.jsonl", scratch, name)
    try:
        reports = parse_jsonl(records.read_bytes() if records else b"", record_type(board.protocol.goal))
    except (ValidationError, ValueError) as error:
        raise RsbenchError(f"{name}'s run left no readable records ({error.__class__.__name__}); refused") from None
    if any(r.attack != name for r in reports) or len({r.index for r in reports}) != len(reports):
        raise RsbenchError(f"{name}'s run left records of other attacks, or two of one sample; refused")
    path = _plain(run_dir / "adversarial" / f"{name}.pt", scratch, name)
    if path is None:
        return {}, {r.index: r for r in reports}
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
        index, xs, advs = saved["index"], saved["x"], saved["x_adv"]
        rows = index.tolist()
        shape = tuple(dataset[0][0].shape)
        well_formed = (index.dim() == 1 and len(set(rows)) == len(rows) and xs.shape == advs.shape == (len(rows), *shape)
                       and advs.is_floating_point() and bool(torch.isfinite(advs).all()))
    except Exception as error:  # noqa: BLE001 - any malformed file is refused in one line
        raise RsbenchError(f"{name}'s examples file is malformed ({error.__class__.__name__}); refused") from None
    if not well_formed or any(not 0 <= i < len(dataset) for i in rows):
        raise RsbenchError(f"{name}'s examples file is malformed (indices, shapes or values); refused")
    for row, i in enumerate(rows):
        if not torch.equal(xs[row].to(torch.float32), dataset[i][0].to(torch.float32)):
            raise RsbenchError(f"{name} returned an example of sample {i} whose x is not the dataset's; refused")
    return {i: advs[row].to(torch.float32) for row, i in enumerate(rows)}, {r.index: r for r in reports}


def child(code: str, out: str) -> None:
    """The sandboxed process: import the submission from its folder and run the engine on the task in `out`."""
    from rsbench import engine

    task = json.loads((Path(out) / "task.json").read_text())
    board = Leaderboard.model_validate(task["board"])
    sys.path.insert(0, code)
    submission = load_submission(Path(code), claims=False)  # checked by the parent; measure runs before any
    config = board.protocol.run_config([submission.attack]).model_copy(update={"seed": task["seed"]})
    try:
        engine.evaluate(board.defense, [submission.attack], config, Path(out) / "run", torch.device("cpu"),
                        save_examples=True, progress=False, indices=task["indices"])
    except engine.RunFailed as failure:
        sys.stderr.write(failure.details)
        sys.exit(failure.step)  # the last line the parent reports: which sample, its label, the attack, the error
