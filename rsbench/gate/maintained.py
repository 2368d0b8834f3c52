"""Folders that only maintainers write: a pull request that adds, changes or removes a file in them is refused.

Two kinds of stored runs cannot be checked short of running them again: a track's exact run (`exact_runs`: a
'robust' verdict needs the MILP solved again) and the benchmark runs behind the paper tables (`BENCHMARK_RUNS`:
records without their examples, hours of CPU each). Maintainers commit them after running rsbench; a pull request
that touches them is refused, whatever the files say. The comparison is of what git stores, a file's mode and blob
or a link's target, so a file replaced by a link to the same bytes, or made executable, is a change; an empty
folder (which git never stores: the place of a submodule not checked out) is one too.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rsbench.errors import RsbenchError

LINK = "120000"
"""The mode git gives a symbolic link."""
FOLDER = "040000"
"""The mode of a folder, which git lists only as a submodule's place (mode 160000) when it holds no file."""
BENCHMARK_RUNS = "benchmarks/results"
"""The stored benchmark runs (relative to the checkout) that the paper tables and the README's cost table read."""


def git_blob(data: bytes) -> str:
    """The id git gives a file of these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def unchanged(base: Path, against: str, listed: str, folders: Sequence[Path], selected: Callable[[str], bool],
              reason: str) -> None:
    """Refuse, in one line ending in `reason`, a change since `against` to a file or link under `folders` whose path
    relative to the checkout `base` is `selected`; `listed` is `git ls-tree -r <against>` over those folders."""
    old = {}
    for line in listed.splitlines():
        info, _, name = line.partition("\t")
        name = _unquoted(name)
        if selected(name):
            mode, _, blob = info.split()
            old[name] = (mode, blob)
    now = {}
    for folder in folders:
        top = folder.parent.resolve() / folder.name
        if not top.is_relative_to(base):
            shown = folder.relative_to(base).as_posix() if folder.is_relative_to(base) else folder
            raise RsbenchError(f"{shown}: lies outside the checkout {base} (a folder above it is a link: the files "
                               f"{reason}")
        ignored = _ignored(base, top)
        for path in _entries(top):
            name = path.relative_to(base).as_posix()
            if selected(name) and name not in ignored:
                now[name] = _stored(path)
    changed = sorted(name for name in old.keys() | now.keys() if old.get(name) != now.get(name))
    if changed:
        raise RsbenchError(f"{changed[0]}: changed since {against} ({len(changed)} file(s) {reason}")


def benchmark_runs(base: Path, against: str, listed: str) -> None:
    """Refuse a pull request that changes the stored benchmark runs; `listed`: `git ls-tree -r <against> --
    benchmarks/results` at the top of the checkout `base`."""
    unchanged(base, against, listed, [base / BENCHMARK_RUNS],
              lambda name: name == BENCHMARK_RUNS or name.startswith(BENCHMARK_RUNS + "/"),
              f"under {BENCHMARK_RUNS}/); stored benchmark runs are written by maintainers running rsbench, never in "
              "a pull request")


def _ignored(base: Path, top: Path) -> set[str]:
    """The files under `top` that git ignores and does not track (a run's plots, drawn again from its records): a
    maintainer's checkout holds them, a pull request's (committed files only) never does, and a file a pull request
    commits is tracked, so ignore rules cannot hide it."""
    found = subprocess.run(["git", "-C", str(base), "ls-files", "-z", "--others", "--ignored", "--exclude-standard",
                            "--", top.relative_to(base).as_posix()], capture_output=True, check=False)
    return set(os.fsdecode(found.stdout).split("\0")) - {""} if found.returncode == 0 else set()


def _unquoted(name: str) -> str:
    """A path as `git ls-tree` prints it, its C-style quoting (a tab, a newline, a quote, a byte outside ASCII)
    undone."""
    if len(name) < 2 or not name.startswith('"') or not name.endswith('"'):
        return name
    return codecs.escape_decode(name[1:-1].encode("utf-8"))[0].decode("utf-8", "surrogateescape")


def _stored(path: Path) -> tuple[str, str | None]:
    """The mode and blob id git would store for a file or link; an empty folder's mode and no blob."""
    if path.is_symlink():
        return LINK, git_blob(os.readlink(path).encode())
    if path.is_dir():
        return FOLDER, None
    return ("100755" if path.stat().st_mode & stat.S_IXUSR else "100644"), git_blob(path.read_bytes())


def _entries(folder: Path) -> Iterator[Path]:
    """Every file, link and empty folder under `folder`, never following a link (the folder itself when it is
    one)."""
    if folder.is_symlink():
        yield folder
        return
    for top, dirs, files in os.walk(folder):
        if not dirs and not files and Path(top) != folder:
            yield Path(top)
        for name in [*dirs, *files]:
            path = Path(top) / name
            if path.is_symlink() or path.is_file():
                yield path
