"""A track's exact run is re-checked on every check, and a pull request may not change it: tampered records refused.

The run is the committed one of evasion-kw-digits-0.05 (20 digits, epsilon 0.05): sample 0 is adversarial (PGD's
example, which the track's pgd-linf entry found too), sample 2 robust and certified.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rsbench.data import load_dataset
from rsbench.errors import RsbenchError
from rsbench.gate import audit, exact_runs
from rsbench.leaderboard import track_files

TRACK = "evasion-kw-digits-0.05"
SHIPPED = Path(__file__).resolve().parents[1] / "leaderboards" / TRACK


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(SHIPPED, tmp_path / "leaderboards" / TRACK, ignore=shutil.ignore_patterns("site"))
    return tmp_path / "leaderboards"


def edit(root: Path, index: int, **fields: object) -> None:
    """Rewrite one record of the exact run."""
    path = root / TRACK / "exact" / "samples.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[index].update(fields)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))


def example(root: Path, index: int = 0) -> Path:
    return root / TRACK / "exact" / "examples" / f"{index:05d}.npy"


def clean_x(root: Path) -> None:
    """Sample 0's example replaced by x itself, its sha256 and distance made to match: no longer adversarial."""
    np.save(example(root), load_dataset("digits", "test")[0][0].numpy())
    edit(root, 0, example_sha256=hashlib.sha256(example(root).read_bytes()).hexdigest(), distance=0.0)


def linked(root: Path) -> None:
    """Sample 0's example replaced by a link to a file of the same bytes outside the run (which a later change could
    edit without touching the run)."""
    outside = root.parent / "elsewhere.npy"
    outside.write_bytes(example(root).read_bytes())
    example(root).unlink()
    example(root).symlink_to(outside)


def pickled(root: Path) -> None:
    """Sample 0's example an object array, which only unpickling reads, its sha256 made to match."""
    np.save(example(root), np.array([{"x": 1}], dtype=object), allow_pickle=True)
    edit(root, 0, example_sha256=hashlib.sha256(example(root).read_bytes()).hexdigest())


def newer_version(root: Path) -> None:
    """A v2 of the track on its first 100 samples, which the run (of 20) does not decide: its columns must not carry
    over to v2 silently."""
    board = track_files.load(root / TRACK / "v1.json")
    protocol = board.protocol.model_copy(update={"num_samples": 100})
    v2 = board.model_copy(update={"version": 2, "protocol": protocol, "protocol_hash": protocol.spec_hash(),
                                  "entries": [], "clean": board.clean.model_copy(update={"path": ""})})
    (root / TRACK / "v2.json").write_text(v2.model_dump_json(indent=1))


TAMPERS: dict[str, tuple[Callable[[Path], object], str]] = {
    "adversarial turned robust": (lambda r: (edit(r, 0, exact="robust", example=None, example_sha256=None),
                                             example(r).unlink()),
                                  r"pgd-linf succeeded on samples \[0\], which the MILP proved robust"),
    "certified turned unknown": (lambda r: edit(r, 2, exact="unknown"),
                                 r"samples \[2\] are certified but not exactly robust"),
    "robust turned adversarial": (lambda r: edit(r, 2, exact="adversarial"),
                                  r"sample 2 is adversarial but its example examples/00002.npy is missing"),
    "example deleted": (lambda r: example(r).unlink(), r"sample 0 is adversarial but its example .* is missing"),
    "example edited": (lambda r: example(r).write_bytes(example(r).read_bytes()[:-4] + b"\1\0\0\0"),
                       r"examples/00000.npy does not match its sha256"),
    "example not adversarial": (clean_x, r"examples/00000.npy is not adversarial: the network gives it label 4"),
    "distance edited": (lambda r: edit(r, 0, distance=0.01), r"not within epsilon 0.05 of sample 0 .* recorded"),
    "stray example": (lambda r: shutil.copy(example(r), example(r, 7)), r"examples/00007.npy is no adversarial"),
    "sample recorded twice": (lambda r: (r / TRACK / "exact" / "samples.jsonl").write_text(
        (r / TRACK / "exact" / "samples.jsonl").read_text() + '{"index":9,"label":8,"prediction":8,"exact":"robust",'
        '"certified":false,"neurons":484,"stable":484,"solves":0,"time_s":1.0}\n'), r"samples \[9\] are recorded twice"),
    "epsilon edited": (lambda r: (r / TRACK / "exact" / "config.json").write_text(
        (r / TRACK / "exact" / "config.json").read_text().replace('"epsilon": 0.05', '"epsilon": 0.06')),
                       r"not an exact run of evasion-kw-digits-0.05 v1"),
    "example a link": (lambda r: linked(r), r"exact: exact/examples/00000.npy is a link; an exact run holds the files"),
    "example pickled": (lambda r: pickled(r), r"examples/00000.npy is not an array of numbers as rsbench exact saves"),
    "a newer version on more samples": (lambda r: newer_version(r),
                                        r"exact: not an exact run of evasion-kw-digits-0.05 v2's defense, split"),
}


def test_the_committed_run_checks_out(root: Path) -> None:
    exact_runs.check(root)


@pytest.mark.parametrize("tamper", TAMPERS, ids=list(TAMPERS))
def test_a_tampered_exact_run_is_refused_in_one_line(root: Path, tamper: str) -> None:
    change, message = TAMPERS[tamper]
    change(root)
    with pytest.raises(RsbenchError, match=message) as refused:
        exact_runs.check(root)
    assert "\n" not in str(refused.value)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.mark.parametrize("change", [
    lambda r: edit(r, 5, time_s=1.0),  # a change every other check accepts
    lambda r: (r / TRACK / "exact" / "notes.txt").write_text("solved again"),
    lambda r: (r / TRACK / "exact" / "result.json").unlink(),
], ids=["record edited", "file added", "file removed"])
def test_a_pull_request_may_not_change_an_exact_run(root: Path, change: Callable[[Path], object]) -> None:
    repo = root.parent
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    listed = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "HEAD", "--", "leaderboards"],
                            capture_output=True, text=True, check=True).stdout
    exact_runs.unchanged(root, repo.resolve(), "HEAD", listed)
    change(root)
    with pytest.raises(RsbenchError, match=r"leaderboards/evasion-kw-digits-0.05/exact/.*: changed since HEAD .*"
                                           r"written by maintainers running rsbench exact, never in a pull request"):
        audit.check(root, "HEAD", intervals=False, pull_request=True)


def test_a_run_whose_defense_lacks_files_here_is_named_as_not_rechecked_never_silently_passed(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mnist = "evasion-kw-mnist-0.1"
    shutil.copytree(SHIPPED.parent / mnist, root / mnist, ignore=shutil.ignore_patterns("site"))
    monkeypatch.setenv("RSBENCH_DATA", str(tmp_path / "no-data"))
    unchecked = exact_runs.check(root)
    assert len(unchecked) == 1 and unchecked[0].startswith(f"{mnist} (MNIST test idx files in ")
    assert audit.check(root).exact_unchecked == unchecked
    edit(root, 0, exact="robust")  # the digits run is still checked: its tampering refused
    with pytest.raises(RsbenchError):
        exact_runs.check(root)


@pytest.mark.parametrize("change", [linked, lambda r: (shutil.move(r / TRACK / "exact", r.parent / "copy"),
                                                       (r / TRACK / "exact").symlink_to(r.parent / "copy"))],
                         ids=["an example", "the whole run"])
def test_a_pull_request_may_not_turn_an_exact_run_into_links_to_the_same_bytes(
        root: Path, change: Callable[[Path], object]) -> None:
    repo = root.parent
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    listed = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "HEAD", "--", "leaderboards"],
                            capture_output=True, text=True, check=True).stdout
    change(root)
    with pytest.raises(RsbenchError, match=r"leaderboards/evasion-kw-digits-0.05/exact.*: changed since HEAD"):
        exact_runs.unchanged(root, repo.resolve(), "HEAD", listed)
    with pytest.raises(RsbenchError, match=r"exact/?\S*: exact\S* is a link"):
        exact_runs.check(root)


def committed(repo: Path) -> None:
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")


def test_a_pull_request_may_not_change_an_exact_run_behind_a_linked_leaderboards_folder(root: Path) -> None:
    """The leaderboards folder moved and replaced by a link to it, a robust record edited there: compared as the
    link it is, the exact run has gone from its place."""
    repo = root.parent.resolve()
    committed(repo)
    shutil.move(root, repo / "moved")
    root.symlink_to(repo / "moved")
    edit(root, 5, time_s=1.0)
    with pytest.raises(RsbenchError, match=r"leaderboards/evasion-kw-digits-0.05/exact/.*: changed since HEAD"):
        audit.check(root, "HEAD", intervals=False, pull_request=True)


def test_a_new_track_whose_folder_is_a_link_may_not_bring_an_exact_run(root: Path) -> None:
    """A track folder that is a link to one holding exact/ (which nothing else would show as new): refused in a pull
    request, and by every check."""
    repo = root.parent.resolve()
    shutil.move(root / TRACK, repo / "elsewhere")
    (root / "README.md").write_text("base")
    committed(repo)
    (root / TRACK).symlink_to(repo / "elsewhere")
    listed = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "HEAD", "--", "leaderboards"],
                            capture_output=True, text=True, check=True).stdout
    with pytest.raises(RsbenchError, match=rf"leaderboards/{TRACK}: changed since HEAD"):
        exact_runs.unchanged(root, repo, "HEAD", listed)
    with pytest.raises(RsbenchError, match=rf"the track folder {TRACK} is a link"):
        exact_runs.check(root)
