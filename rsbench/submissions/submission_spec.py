"""A submission folder: `submissions/<name>/submission.yaml` and the attack's code, checked before anything runs.

The folder's name, the submission's and its attack's are one name, which no registry attack has (an
entry named like a registry attack would pass for it). Every claimed track is a track name of the
attack's goal, and each claim gives at least the goal's headline metrics, names only metrics the goal's
entries report (a near miss is named: `r_50`, did you mean `r50`) and values in their domains. The folder holds plain files
only (a link could pull any file of the machine into the sandbox), and every copy refuses links rather than
following them (`copy`). `content_sha256` fingerprints the
folder as it runs; its entry records it, and the commit only when the folder is exactly that commit's.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

import yaml
from pydantic import Field, ValidationError

from rsbench import registry
from rsbench.errors import RsbenchError
from rsbench.leaderboard.track_files import COMPARATIVE, DOMAINS, HEADLINE, METRICS
from rsbench.specs import NAME_PATTERN, AttackSpec, Spec

IGNORED = ("__pycache__", ".pytest_cache")
"""Folders of compiled files and caches a local trial leaves, which are not part of the submission."""


class Authored(Spec):
    """What every `submission.yaml` begins with, an attack's or a defense's: its name and who made it."""

    omitted_when_default: ClassVar[frozenset[str]] = frozenset({"venue"})
    name: str = Field(pattern=NAME_PATTERN)
    """The submission's folder name, which is also its attack's or defense's name."""
    authors: list[str] = Field(min_length=1)
    """Who made it."""
    paper: str
    """Link to the paper (or report) defining it."""
    licence: str
    """Licence of its code and weights (SPDX identifier)."""
    venue: str | None = None
    """Where the paper appeared (`ECCV 2022`), shown beside its link on the defense's profile."""


class Seeds(Spec):
    """The seeds of the run `rsbench submission measure` made on one track: with them, `verify` runs the attack and
    judges what it returns exactly as measure did, so the claims are reproduced to every digit the tables show."""

    run: int
    """The attack's streams."""
    judging: int
    """The judge's noise (an entry is judged once more, on a seed drawn after its run)."""


class Submission(Authored):
    """`submission.yaml`: the attack, who made it, and what it claims on which tracks."""

    attack: AttackSpec
    """The attack's spec; `implementation` names `module:Class` of a file in the submission's folder."""
    claims: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    """Per claimed track (`<goal>-<defense>`, its newest version), the metrics the authors measured, as the
    leaderboard reports them (null where it reports none; `rsbench submission measure` prints them); at least the
    goal's headline metrics, on at least one track."""
    seeds: dict[str, Seeds] = Field(default_factory=dict)
    """Per claimed track, the seeds of the measurement the claims come from (measure prints them with the claims);
    without them, verify draws its own, and only an attack and judge that no noise moves reproduce the claims."""


def files(folder: Path) -> list[Path]:
    """The submission's files, sorted; refused when the folder is or holds a link (the parent would read its target:
    the checkout's .git/config, /proc/self/environ, any file of this machine)."""
    if folder.is_symlink():
        raise RsbenchError(f"{folder}: a submission is a folder of plain files, not a link")
    found = []
    for path in sorted(folder.rglob("*")):
        if any(part in IGNORED for part in path.relative_to(folder).parts):
            continue
        if path.is_symlink():
            raise RsbenchError(f"{path}: submissions hold plain files only, not links")
        if path.is_file():
            found.append(path)
    return found


def copy(folder: Path, dest: Path) -> Path:
    """A copy of the submission folder at `dest` for the sandbox, made without following any link: the folder holds
    none (`files`), and one that appeared meanwhile is copied as a link and refused."""
    files(folder)
    shutil.copytree(folder, dest, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED))
    files(dest)
    return dest


def content_sha256(folder: Path) -> str:
    """sha256 over every file of the folder (its path in the folder and its bytes)."""
    total = hashlib.sha256()
    for path in files(folder):
        total.update(f"{path.relative_to(folder).as_posix()}\n{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return total.hexdigest()


def check_track(path: Path, goal: str, track: str) -> None:
    """Refuse a track name that is not one of the goal's, or that names a version."""
    if not track.startswith(f"{goal}-") or "@" in track:
        raise RsbenchError(f"{path}: {track!r} is not a track of the attack's goal, {goal}, named without a version "
                           "(entries go to a track's newest version)")


def _domain(low: float, high: float) -> str:
    return f"at least {low:g}" if math.isinf(high) else f"from {low:g} to {high:g}"


def check_values(path: Path, goal: str, track: str, claimed: dict[str, float | None]) -> None:
    """Refuse, with one line, a claimed metric that the goal's entries do not report (naming the nearest one), or a
    value outside its metric's domain (`track_files.DOMAINS`)."""
    metrics = [k for k in METRICS[goal] if k not in COMPARATIVE]
    for metric, value in claimed.items():
        if metric not in metrics:
            close = difflib.get_close_matches(metric, metrics, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"its entries report {', '.join(metrics)}"
            raise RsbenchError(f"{path}: claims {metric!r} on {track}, which is not a metric of {goal} entries; {hint}")
        low, high = DOMAINS[metric]
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise RsbenchError(f"{path}: claims {metric} {value:g} on {track}, outside its domain: {metric} is "
                               f"{_domain(low, high)} ({METRICS[goal][metric]})")


def load_submission(folder: Path, *, claims: bool = True) -> Submission:
    """The folder's submission.yaml, validated; refused with one line otherwise. Without `claims` (to measure
    them), its claims may be missing or incomplete and are not checked."""
    path = folder / "submission.yaml"
    files(folder)  # before reading anything in it
    try:
        submission = Submission.model_validate(yaml.safe_load(path.read_text()))
    except OSError as error:
        raise RsbenchError(f"{path}: cannot read ({error.strerror})") from None
    except (yaml.YAMLError, ValidationError) as error:
        detail = registry.format_validation_error(error, Submission) if isinstance(error, ValidationError) else error
        raise RsbenchError(f"{path}: {detail}") from None
    if submission.attack.name != submission.name or folder.resolve().name != submission.name:
        raise RsbenchError(f"{path}: the folder, the submission and its attack must share one name")
    if submission.name in registry.names("attacks"):
        raise RsbenchError(f"{path}: {submission.name!r} is the name of a registry attack; choose another")
    goal = submission.attack.goal
    if claims and not submission.claims:
        raise RsbenchError(f"{path}: claims no track (rsbench submission measure {folder} --track TRACK prints the "
                           "claims block)")
    unclaimed = sorted(set(submission.seeds) - set(submission.claims))
    if claims and unclaimed:
        raise RsbenchError(f"{path}: seeds of {', '.join(unclaimed)}, which it claims nothing on")
    for track, claimed in submission.claims.items() if claims else ():
        check_track(path, goal, track)
        check_values(path, goal, track, claimed)
        missing = [metric for metric in HEADLINE[goal] if metric not in claimed]
        if missing:
            raise RsbenchError(f"{path}: the claims on {track} must give {', '.join(HEADLINE[goal])} "
                               f"({', '.join(missing)} missing)")
    return submission


def commit_of(folder: Path) -> str | None:
    """The last commit of the folder when the folder is exactly that commit's (nothing changed or untracked)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)

    status = git("status", "--porcelain", "--untracked-files=all", "--", ".")
    if status.returncode != 0 or status.stdout.strip():
        return None
    return git("log", "-1", "--format=%H", "--", ".").stdout.strip() or None
