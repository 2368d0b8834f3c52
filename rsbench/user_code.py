"""Code from your own files that a defense spec names: found without running it, pinned by sha256, run on use.

A spec may name a model factory (`architecture: python:MODULE:FACTORY`) or a certifier class
(`kind: plugin`, `implementation: MODULE:CLASS`) that rsbench does not ship. MODULE is a dotted
module on the Python path, or a `.py` file: an absolute path, or one relative to the folder of
the YAML file holding the spec (to the working directory for a spec built in Python).

Reading the registry never runs such code. `locate` finds a module's file the way the import
system would, with its path finder, which reads folders and does not execute anything (a
dotted module's parent packages are not imported either). `pin` records each file's sha256 in
the spec's `code_sha256`, so the spec hash changes with the file: a changed model file is
another defense, and a run directory or leaderboard track of the old one refuses it. `load`
runs the code only when the defense is built, after checking the file against that pin; a
`.py` file is executed from the very bytes that were hashed.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

from rsbench.errors import RsbenchError
from rsbench.specs import CODE_REFERENCE, DefenseSpec


def references(spec: DefenseSpec) -> list[str]:
    """The code references a spec names: its `python:` architecture's and its plugin's, in that order."""
    found = [spec.architecture.removeprefix("python:")] if spec.architecture.startswith("python:") else []
    return found + ([spec.implementation] if spec.implementation else [])


def split(reference: str) -> tuple[str, str]:
    """(module or file, attribute) of `MODULE:NAME`."""
    match = re.fullmatch(CODE_REFERENCE, reference)
    if match is None:
        raise RsbenchError(f"expected MODULE:NAME or path/to/file.py:NAME, got {reference!r}")
    return match["target"], match["attr"]


def is_file(target: str) -> bool:
    """Whether a reference's target is a file path (ends in .py or has a folder) rather than a dotted module."""
    return target.endswith(".py") or "/" in target or "\\" in target


def locate(target: str, folder: Path | None) -> Path:
    """The source file of a module or file reference, found without executing anything."""
    if is_file(target):
        path = Path(target).expanduser()
        path = path if path.is_absolute() else (folder or Path.cwd()) / path
        if not path.is_file():
            raise RsbenchError(f"model code file {path} does not exist")
        return path.resolve()
    search: list[str] | None = None
    parts = target.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        found = PathFinder.find_spec(name, search)
        if found is None:
            raise RsbenchError(f"cannot find module {name!r} on the Python path (set PYTHONPATH, or name its file: "
                               f"python:path/to/{parts[-1]}.py:NAME)")
        search = list(found.submodule_search_locations or [])
    if found.origin is None or not found.origin.endswith(".py"):
        raise RsbenchError(f"module {target!r} has no Python source file whose sha256 could be pinned")
    return Path(found.origin).resolve()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pin(spec: DefenseSpec, folder: Path | None) -> DefenseSpec:
    """The spec with `code_sha256` holding the sha256 of every file it names, read from `folder`.

    A pin already in the spec must match the file (refused in one line otherwise), and every pin
    must name code the spec uses.
    """
    named = references(spec)
    unused = sorted(set(spec.code_sha256) - set(named))
    if unused:
        raise RsbenchError(f"{spec.name}: code_sha256 pins {', '.join(unused)}, which the spec does not name")
    pins = {}
    for reference in named:
        target, _ = split(reference)
        path = locate(target, folder)
        pins[reference] = sha256_bytes(path.read_bytes())
        check_pin(spec, reference, path, pins[reference])
    if pins == spec.code_sha256:
        return spec
    pinned = spec.model_copy(update={"code_sha256": pins})
    pinned._folder = spec._folder
    return pinned


def check_pin(spec: DefenseSpec, reference: str, path: Path, digest: str) -> None:
    """Refuse a file whose sha256 differs from the spec's pin (a spec without a pin for it accepts any)."""
    expected = spec.code_sha256.get(reference)
    if expected is not None and expected != digest:
        raise RsbenchError(f"{spec.name}: {path} has sha256 {digest[:12]}…, but the spec pins {expected[:12]}… for "
                           f"{reference} (the code changed: read the spec again to make it another defense)")


_REFUSING: list[str] = []
"""Why this process must not run code a spec names right now (the innermost reason last)."""


@contextmanager
def refused(reason: str) -> Iterator[None]:
    """Until exit, refuse to run code a spec names in this process (`reason` says why): a process holding the
    stand-in of a submitted defense, whose code runs in its sandbox, must never import that code itself."""
    _REFUSING.append(reason)
    try:
        yield
    finally:
        _REFUSING.pop()


def load(spec: DefenseSpec, reference: str, folder: Path | None) -> Any:
    """Import the module or file of `reference` after checking its pin, and return the named attribute."""
    if _REFUSING:
        raise RsbenchError(f"{spec.name}: {reference} would run in rsbench's own process, {_REFUSING[-1]}; refused")
    target, attr = split(reference)
    path = locate(target, folder)
    if is_file(target):
        source = path.read_bytes()
        check_pin(spec, reference, path, sha256_bytes(source))
        module = _run_file(path, source)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as error:  # noqa: BLE001 - user code may raise anything while importing
            raise RsbenchError(f"importing {target} failed: {type(error).__name__}: {error}") from None
        imported = Path(getattr(module, "__file__", "") or path).resolve()
        check_pin(spec, reference, imported, sha256_bytes(imported.read_bytes()))
    if not hasattr(module, attr):
        raise RsbenchError(f"{target} has no {attr!r} (named by {reference})")
    return getattr(module, attr)


def _run_file(path: Path, source: bytes) -> types.ModuleType:
    """The module made by executing `source` (the bytes read from `path`), once per distinct file content."""
    stem = re.sub(r"\W", "_", path.stem)
    name = f"rsbench_user_{stem}_{sha256_bytes(source)[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses and pickling look classes up by their module's name
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - the user's own, pinned code
    except Exception as error:  # noqa: BLE001 - user code may raise anything while importing
        del sys.modules[name]
        raise RsbenchError(f"running {path} failed: {type(error).__name__}: {error}") from None
    return module
