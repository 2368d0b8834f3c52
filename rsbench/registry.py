"""Read and validate the YAML specs under `registry/`, and resolve implementations lazily.

Specs are parsed with `yaml.safe_load` (YAML never executes code) and validated by the
Pydantic models of `rsbench.specs`; an error names the file and the field. Implementations
(`module:Class`) are imported only when an attack is used, so listing the registry never
imports torch-heavy code. A defense naming code of your own has that code's sha256 pinned
when it is read (`rsbench.user_code`), never imported. `get_defense` also takes the path of a
defense's YAML file, or of a defense submission's folder (`submissions/defenses/<name>/`, its
submission.yaml's `defense`): submitted defenses are named by their folder, never listed here,
so nothing a pull request adds joins the registry, takes a registered name or is swept up by a
pattern.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from rsbench import user_code
from rsbench.errors import RsbenchError
from rsbench.specs import AttackSpec, DefenseSpec

Kind = Literal["defenses", "attacks"]
SpecT = TypeVar("SpecT", bound=BaseModel)
_SPEC_TYPES: dict[str, type[BaseModel]] = {"defenses": DefenseSpec, "attacks": AttackSpec}


def registry_dirs() -> list[Path]:
    """Registry folders: those in `$RSBENCH_REGISTRY` (os.pathsep-separated), then the built-in one."""
    extra = [Path(p) for p in os.environ.get("RSBENCH_REGISTRY", "").split(os.pathsep) if p]
    packaged = Path(__file__).parent / "_registry"
    builtin = packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "registry"
    return [*extra, builtin]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"; did you mean a, b?" naming the known names closest to a misspelt one, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def format_validation_error(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line: the first failing field and why; an unknown field of `model` (or of a model nested in it) with the
    fields it may have meant."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    hint = ""
    if first["type"] == "extra_forbidden" and model is not None and first["loc"]:
        hint = did_you_mean(str(first["loc"][-1]), _fields_at(model, first["loc"][:-1]))
    return f"field '{field}': {first['msg']}{hint}{more}"


def _fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The fields of the model found at `loc` inside `model` (following fields whose type is a model), else none."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        inner = [t for t in (field.annotation, *get_args(field.annotation)) if isinstance(t, type) and
                 issubclass(t, BaseModel)] if field is not None else []
        if not inner:
            return []
        model = inner[0]
    return list(model.model_fields)


def read_yaml(path: Path) -> Any:
    """A YAML file's content, read with `yaml.safe_load`; one line naming the file when it cannot be."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RsbenchError(f"{path}: malformed YAML{where}") from None
    except OSError as error:
        raise RsbenchError(f"{path}: cannot read ({error.strerror})") from None


def parse_spec(path: Path, spec_type: type[SpecT], key: str | None = None) -> SpecT:
    """Load one YAML file (or the mapping under `key` in it) into a spec, naming the file and field on error.

    A defense spec is returned with the folder of its file, against which its relative paths resolve,
    and with the sha256 of the code of yours it names pinned.
    """
    data = read_yaml(path)
    if key is not None:
        data = data.get(key) if isinstance(data, dict) else None
        if data is None:
            raise RsbenchError(f"{path}: no {key!r} mapping")
    if not isinstance(data, dict):
        raise RsbenchError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    try:
        spec = spec_type.model_validate(data)
    except ValidationError as error:
        where = f"{key}." if key else ""
        raise RsbenchError(f"{path}: {where}{format_validation_error(error, spec_type)}") from None
    if isinstance(spec, DefenseSpec):
        try:
            spec = pin_code(spec, path.parent.resolve())
        except RsbenchError as error:
            raise RsbenchError(f"{path}: {error}") from None
    return spec


def pin_code(spec: DefenseSpec, folder: Path | None = None) -> DefenseSpec:
    """The spec, with `folder` (default: the one it was read from, else the working directory) as the folder its
    relative paths resolve against, and the sha256 of the code of yours it names pinned (`user_code.pin`)."""
    folder = folder or spec._folder or Path.cwd().resolve()
    pinned = user_code.pin(spec, folder)
    if pinned is spec and spec._folder == folder:
        return spec
    pinned = pinned.model_copy() if pinned is spec else pinned
    pinned._folder = folder
    return pinned


def folder_of(spec: DefenseSpec) -> Path | None:
    """The folder a spec's relative paths resolve against: the one it was read from, else that of the registered
    spec with its name, code and weights (a spec read back from a result or leaderboard file, whose certification
    settings may be a run's), else None (the working directory). Whatever is found there is checked against the
    spec's own pins."""
    if spec._folder is not None:
        return spec._folder
    registered = all_specs("defenses").get(spec.name)
    same = registered is not None and (registered.code_sha256, registered.weights) == (spec.code_sha256, spec.weights)
    return registered._folder if same else None


@lru_cache(maxsize=None)
def _load(kind: Kind, dirs: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """Valid specs by name, and the error of each broken file by file stem.

    A broken file disables only its own name (also over a built-in spec of that name, which it
    was meant to override), so one bad user spec does not stop commands that do not use it.
    """
    specs: dict[str, Any] = {}
    broken: dict[str, str] = {}
    for folder in dirs:
        for path in sorted((folder / kind).glob("*.yaml")):
            if path.stem in specs or path.stem in broken:
                continue  # earlier folders (user registries) override the built-in one
            try:
                spec = parse_spec(path, _SPEC_TYPES[kind])
                if spec.name != path.stem:
                    raise RsbenchError(f"{path}: field 'name' is {spec.name!r} but the file is {path.stem}.yaml")
            except RsbenchError as error:
                broken[path.stem] = str(error)
                continue
            specs[spec.name] = spec
    return specs, broken


def _check_kind(kind: str) -> None:
    if kind not in _SPEC_TYPES:
        raise RsbenchError(f"expected kind 'defenses' or 'attacks', got {kind!r}")


def all_specs(kind: Kind) -> dict[str, Any]:
    """Every valid spec of a kind, by name."""
    _check_kind(kind)
    return _load(kind, tuple(registry_dirs()))[0]


def broken_specs(kind: Kind) -> dict[str, str]:
    """Every file of a kind that does not validate: its name (the file stem) and the error."""
    _check_kind(kind)
    return _load(kind, tuple(registry_dirs()))[1]


def names(kind: Kind) -> list[str]:
    """Every name of a kind the registry knows: specs, their aliases and broken files."""
    specs = all_specs(kind)
    return [*specs, *(a for s in specs.values() for a in getattr(s, "aliases", [])), *broken_specs(kind)]


def _lookup(kind: Kind, name: str) -> Any:
    specs, broken = all_specs(kind), broken_specs(kind)
    if name in specs:
        return specs[name]
    for spec in specs.values():
        if name in getattr(spec, "aliases", []):
            return spec
    if name in broken:
        raise RsbenchError(f"{kind[:-1]} {name!r} is broken: {broken[name]}")
    hint = did_you_mean(name, names(kind)) or f"; known: {', '.join(sorted(specs)) or 'none'}"
    raise RsbenchError(f"unknown {kind[:-1]} {name!r}{hint}")


def get_defense(name: str) -> DefenseSpec:
    """The defense spec registered under a name or alias, or held by a YAML file (`path/to/spec.yaml`) or a defense
    submission's folder (its submission.yaml's `defense`)."""
    path = Path(name)
    if name.endswith((".yaml", ".yml")) or path.is_dir() and (path / "submission.yaml").is_file():
        path = path / "submission.yaml" if path.is_dir() else path
        data = read_yaml(path)
        key = "defense" if isinstance(data, dict) and "defense" in data and "kind" not in data else None
        return parse_spec(path, DefenseSpec, key)
    return _lookup("defenses", name)


def get_attack(name: str) -> AttackSpec:
    """The attack spec registered under a name, with its params checked by the implementation."""
    spec: AttackSpec = _lookup("attacks", name)
    attack_params(spec)
    return spec


def find(name: str) -> DefenseSpec | AttackSpec:
    """The defense or attack registered under a name (an attack with its params checked)."""
    if name in names("defenses"):
        return get_defense(name)
    if name in names("attacks"):
        return get_attack(name)
    raise RsbenchError(f"unknown defense or attack {name!r}{did_you_mean(name, names('defenses') + names('attacks'))}")


def resolve(implementation: str) -> Any:
    """Import `module:attr` and return the attribute."""
    module_name, _, attr = implementation.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise RsbenchError(f"cannot import implementation {implementation!r}: {error}") from None


def attack_params(spec: AttackSpec) -> BaseModel:
    """The attack's params validated by its implementation's `Params` model."""
    cls = resolve(spec.implementation)
    try:
        return cls.Params.model_validate(spec.params)
    except ValidationError as error:
        raise RsbenchError(f"attack {spec.name!r}: params {format_validation_error(error, cls.Params)}") from None
