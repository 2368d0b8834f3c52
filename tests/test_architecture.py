"""The tree shows the architecture: imports point one way, from the command line down to the core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rsbench"
LAYERS = ["core", "leaderboard", "submissions", "gate", "cli"]
"""Bottom to top: a module may import its own layer and those below it, never one above."""


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def imports(path: Path) -> set[str]:
    """Every rsbench module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("rsbench"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rsbench"))
    return found


def module_name(path: Path) -> str:
    return ".".join(("rsbench", *path.relative_to(PACKAGE).with_suffix("").parts))


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path: Path) -> None:
    own = LAYERS.index(layer(module_name(path)))
    upward = sorted(m for m in imports(path) if LAYERS.index(layer(m)) > own)
    assert not upward, f"{module_name(path)} ({LAYERS[own]}) imports a layer above it: {upward}"


def test_the_folders_name_the_architecture_and_say_what_they_may_import() -> None:
    for folder in ("attacks", "defenses", "goals", "training", *LAYERS[1:]):
        docstring = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        assert docstring, f"rsbench/{folder}/__init__.py says nothing of what it holds"
    for folder in LAYERS[1:]:
        assert "import" in ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
    flat = [p.name for p in PACKAGE.glob("*.py")]
    assert not [name for name in flat if name.startswith(("submission", "defense_", "cli"))]


def test_a_detected_upward_import_fails() -> None:
    """The check itself: a core module importing the leaderboard would be named."""
    assert layer("rsbench.leaderboard.site") == "leaderboard" and layer("rsbench.specs") == "core"
    assert LAYERS.index(layer("rsbench.leaderboard.site")) > LAYERS.index(layer("rsbench.runner"))
