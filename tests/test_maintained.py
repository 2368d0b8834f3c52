"""A pull request may not touch the stored benchmark runs behind the paper tables: maintainers write them by running
rsbench, and nothing short of running again re-checks them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rsbench.errors import RsbenchError
from rsbench.gate import audit, maintained

TRACK = "evasion-kw-digits-0.05"
SHIPPED = Path(__file__).resolve().parents[1] / "leaderboards" / TRACK
RUN = Path(maintained.BENCHMARK_RUNS) / "caa-cutoff-mnist" / "run"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout with one track and one stored benchmark run, committed."""
    shutil.copytree(SHIPPED, tmp_path / "leaderboards" / TRACK, ignore=shutil.ignore_patterns("site"))
    (tmp_path / RUN).mkdir(parents=True)
    (tmp_path / RUN / "samples.jsonl").write_text('{"index": 0, "success": false}\n')
    (tmp_path / RUN / "config.json").write_text('{"seed": 0}\n')
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "base")
    return tmp_path.resolve()


def relink(repo: Path) -> None:
    """The records replaced by a link to a file of the same bytes outside the run."""
    outside = repo / "elsewhere.jsonl"
    outside.write_bytes((repo / RUN / "samples.jsonl").read_bytes())
    (repo / RUN / "samples.jsonl").unlink()
    (repo / RUN / "samples.jsonl").symlink_to(outside)


def folder_linked(repo: Path) -> None:
    """The whole folder of stored runs replaced by a link to a copy."""
    shutil.move(repo / maintained.BENCHMARK_RUNS, repo / "copy")
    (repo / maintained.BENCHMARK_RUNS).symlink_to(repo / "copy")


@pytest.mark.parametrize("change", [
    lambda r: (r / RUN / "samples.jsonl").write_text('{"index": 0, "success": true}\n'),
    lambda r: (r / RUN / "result.json").write_text("{}"),
    lambda r: (r / RUN / "config.json").unlink(),
    relink,
    folder_linked,
], ids=["records edited", "file added", "file removed", "a link to the same bytes", "the folder a link"])
def test_a_pull_request_may_not_change_a_stored_benchmark_run(repo: Path, change: Callable[[Path], object]) -> None:
    root = repo / "leaderboards"
    listed = git(repo, "ls-tree", "-r", "HEAD", "--", maintained.BENCHMARK_RUNS)
    maintained.benchmark_runs(repo, "HEAD", listed)  # untouched: passes
    change(repo)
    with pytest.raises(RsbenchError, match=r"^benchmarks/results\S*: changed since HEAD \(\d file\(s\) under "
                                           r"benchmarks/results/\); .* never in a pull request$"):
        audit.check(root, "HEAD", intervals=False, pull_request=True)
    audit.check(root, "HEAD", intervals=False)  # a maintainer's check (not a pull request) reads them as they are


def test_a_change_elsewhere_passes(repo: Path) -> None:
    (repo / "benchmarks" / "notes.md").write_text("a benchmark script's notes, reviewed as code")
    (repo / "benchmarks" / "results.md").write_text("a name that only starts like the folder")
    maintained.benchmark_runs(repo, "HEAD", git(repo, "ls-tree", "-r", "HEAD", "--", maintained.BENCHMARK_RUNS))
