"""A submission folder: `submissions/<name>/submission.yaml` and the attack's code, checked before anything runs.

The folder's name, the submission's and its attack's are one name, which no registry attack has (an
entry named like a registry attack would pass for it). Every claimed track is a track name of the
attack's goal, and each claim gives at least the goal's headline metrics. The folder holds plain files
only (a link could pull any file of the machine into the sandbox). `content_sha256` fingerprints the
folder as it runs; its entry records it, and the commit only when the folder is exactly that commit's.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from rsbench import registry
from rsbench.errors import RsbenchError
from rsbench.leaderboard import HEADLINE
from rsbench.specs import NAME_PATTERN, AttackSpec, Spec

IGNORED = ("__pycache__", ".pytest_cache")
"""Folders of compiled files and caches a local trial leaves, which are not part of the submission."""


class Submission(Spec):
    """`submission.yaml`: the attack, who made it, and what it claims on which tracks."""

    name: str = Field(pattern=NAME_PATTERN)
    """The submission's folder name, which is also its attack's name."""
    authors: list[str] = Field(min_length=1)
    """Who wrote the attack."""
    paper: str
    """Link to the paper (or report) defining the attack."""
    licence: str
    """Licence of the attack's code (SPDX identifier)."""
    attack: AttackSpec
    """The attack's spec; `implementation` names `module:Class` of a file in the submission's folder."""
    claims: dict[str, dict[str, float | None]] = Field(min_length=1)
    """Per claimed track (`<goal>-<defense>`, its newest version), the metrics the authors measured, as the
    leaderboard reports them (null where it reports none); at least the goal's headline metrics."""


def files(folder: Path) -> list[Path]:
    """The submission's files, sorted; refused when the folder holds a link."""
    found = []
    for path in sorted(folder.rglob("*")):
        if any(part in IGNORED for part in path.relative_to(folder).parts):
            continue
        if path.is_symlink():
            raise RsbenchError(f"{path}: submissions hold plain files only, not links")
        if path.is_file():
            found.append(path)
    return found


def content_sha256(folder: Path) -> str:
    """sha256 over every file of the folder (its path in the folder and its bytes)."""
    total = hashlib.sha256()
    for path in files(folder):
        total.update(f"{path.relative_to(folder).as_posix()}\n{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return total.hexdigest()


def load_submission(folder: Path) -> Submission:
    """The folder's submission.yaml, validated; refused with one line otherwise."""
    path = folder / "submission.yaml"
    try:
        submission = Submission.model_validate(yaml.safe_load(path.read_text()))
    except OSError as error:
        raise RsbenchError(f"{path}: cannot read ({error.strerror})") from None
    except (yaml.YAMLError, ValidationError) as error:
        detail = registry.format_validation_error(error) if isinstance(error, ValidationError) else error
        raise RsbenchError(f"{path}: {detail}") from None
    if submission.attack.name != submission.name or folder.resolve().name != submission.name:
        raise RsbenchError(f"{path}: the folder, the submission and its attack must share one name")
    if submission.name in registry.names("attacks"):
        raise RsbenchError(f"{path}: {submission.name!r} is the name of a registry attack; choose another")
    goal = submission.attack.goal
    for track, claims in submission.claims.items():
        if not track.startswith(f"{goal}-") or "@" in track:
            raise RsbenchError(f"{path}: claims track {track!r}; claims name tracks of the attack's goal, {goal}, "
                               "without a version (entries go to a track's newest version)")
        missing = [metric for metric in HEADLINE[goal] if metric not in claims]
        if missing:
            raise RsbenchError(f"{path}: the claims on {track} must give {', '.join(HEADLINE[goal])} "
                               f"({', '.join(missing)} missing)")
    files(folder)
    return submission


def commit_of(folder: Path) -> str | None:
    """The last commit of the folder when the folder is exactly that commit's (nothing changed or untracked)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)

    status = git("status", "--porcelain", "--untracked-files=all", "--", ".")
    if status.returncode != 0 or status.stdout.strip():
        return None
    return git("log", "-1", "--format=%H", "--", ".").stdout.strip() or None
