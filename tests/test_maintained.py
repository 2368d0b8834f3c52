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


def outside_link(repo: Path) -> None:
    """The whole benchmarks folder (the results' parent) a link to a copy outside the checkout."""
    outside = repo.parent / (repo.name + "-outside")
    shutil.copytree(repo / "benchmarks", outside)
    shutil.rmtree(repo / "benchmarks")
    (repo / "benchmarks").symlink_to(outside)


@pytest.mark.parametrize("change", [
    lambda r: (r / RUN / "samples.jsonl").chmod(0o755),
    lambda r: (r / maintained.BENCHMARK_RUNS / "paper-rule-mnist").mkdir(),
    outside_link,
], ids=["a file made executable", "an empty folder (a submodule's place)", "the parent folder a link outside"])
def test_what_git_would_record_as_a_change_is_refused(repo: Path, change: Callable[[Path], object]) -> None:
    listed = git(repo, "ls-tree", "-r", "HEAD", "--", maintained.BENCHMARK_RUNS)
    change(repo)
    with pytest.raises(RsbenchError, match=r"^benchmarks\S*: .*never in a pull request$"):
        maintained.benchmark_runs(repo, "HEAD", listed)


def test_a_submodule_added_under_the_stored_runs_is_refused_though_not_checked_out(repo: Path) -> None:
    """A pull request that adds a gitlink (a submodule, which CI does not check out: an empty folder) would bring
    other runs in once a maintainer initialises it."""
    base = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{base},{maintained.BENCHMARK_RUNS}/paper-rule-mnist")
    git(repo, "commit", "-qm", "a pull request")
    (repo / maintained.BENCHMARK_RUNS / "paper-rule-mnist").mkdir()
    with pytest.raises(RsbenchError, match=r"^benchmarks/results/paper-rule-mnist: changed since HEAD~1"):
        maintained.benchmark_runs(repo, "HEAD~1", git(repo, "ls-tree", "-r", "HEAD~1", "--", maintained.BENCHMARK_RUNS))


def test_a_stored_name_git_quotes_compares_as_itself(repo: Path) -> None:
    """git ls-tree quotes a name with a tab or a byte outside ASCII: unchanged it passes, edited it is refused."""
    odd = repo / RUN.parent / "r\u00e9-run\tb"
    odd.write_text("stored")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "a maintainer's run")
    listed = git(repo, "ls-tree", "-r", "HEAD", "--", maintained.BENCHMARK_RUNS)
    assert '"' in listed
    maintained.benchmark_runs(repo, "HEAD", listed)
    odd.write_text("edited")
    with pytest.raises(RsbenchError, match="r\u00e9-run\tb: changed since HEAD"):
        maintained.benchmark_runs(repo, "HEAD", listed)


def test_a_plot_git_ignores_is_a_local_file_and_ignore_rules_hide_no_committed_one(repo: Path) -> None:
    """A run's plot that git ignores (drawn again from the records) lies in a maintainer's checkout, never in a pull
    request's: it is no change. A tracked file stays compared whatever an ignore rule says."""
    (repo / ".gitignore").write_text("*.png\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "plots are not committed")
    listed = git(repo, "ls-tree", "-r", "HEAD", "--", maintained.BENCHMARK_RUNS)
    (repo / RUN / "attack_proportion.png").write_bytes(b"\x89PNG drawn here")
    maintained.benchmark_runs(repo, "HEAD", listed)
    (repo / ".gitignore").write_text("*.png\n*.jsonl\n")
    (repo / RUN / "samples.jsonl").write_text('{"index": 0, "success": true}\n')
    with pytest.raises(RsbenchError, match=r"^benchmarks/results/caa-cutoff-mnist/run/samples.jsonl: changed"):
        maintained.benchmark_runs(repo, "HEAD", listed)
