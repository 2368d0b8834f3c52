"""The rendered tables are what the track files give: `leaderboards/README.md` and `leaderboards/site/` are
rendered again from the track files into a temporary folder and compared byte for byte with the committed
ones, so a pull request cannot rewrite a table, a picture or a profile that no track file backs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rsbench.errors import RsbenchError
from rsbench.leaderboard import site

RENDERED = ("README.md", "site")
"""What `rsbench leaderboard render` writes under the leaderboards folder."""
SHOWN = 5
"""Differing paths a refusal names."""


def contents(root: Path) -> dict[str, bytes]:
    """Every rendered file under root (path relative to root, bytes); a link counts as a difference, never followed."""
    found = {}
    for name in RENDERED:
        top = root / name
        for path in [top, *top.rglob("*")] if top.is_dir() and not top.is_symlink() else [top]:
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[relative] = b"link"
            elif path.is_file():
                found[relative] = path.read_bytes()
    return found


def differences(root: Path, submissions: Path | None = None) -> list[str]:
    """The rendered files under root that differ from rendering its track files again (missing, extra or changed);
    submitted defenses' profiles read their folders under `submissions` (default: beside root), as rendering does."""
    with tempfile.TemporaryDirectory(prefix="rsbench-render-") as scratch:
        again = Path(scratch) / "leaderboards"
        shutil.copytree(root, again, symlinks=True,
                        ignore=lambda folder, names: RENDERED if Path(folder) == root else ())
        site.render(again, submissions or root.parent / "submissions")
        fresh, committed = contents(again), contents(root)
    return sorted(p for p in fresh.keys() | committed.keys() if fresh.get(p) != committed.get(p))


def check(root: Path, submissions: Path | None = None) -> None:
    """Refuse, in one line, rendered tables that are not what the track files give."""
    differing = differences(root, submissions)
    if differing:
        shown = ", ".join(differing[:SHOWN]) + (f" and {len(differing) - SHOWN} more" if len(differing) > SHOWN else "")
        raise RsbenchError(f"{root}: the rendered tables are not what the track files give ({shown} differ); they are "
                           "written by rsbench leaderboard render, never by hand")
