"""The documentation: the site builds in strict mode, its references come from the code, its result tables from
the committed track files, and the README's table is what the track file gives."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rsbench.cli import cli
from rsbench.leaderboard import track_files

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def page_text(site: Path, page: str) -> str:
    """A built page's visible text, whitespace collapsed."""
    markup = (site / page / "index.html").read_text()
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def squashed(text: str) -> str:
    """`text` without whitespace or backticks (Markdown code becomes markup, which the page text drops)."""
    return "".join(text.split()).replace("`", "")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built with `mkdocs build --strict`: a broken link or anchor, or a page left out, fails it."""
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                            "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    return out


@pytest.mark.slow
def test_cli_reference_has_every_command(site: Path) -> None:
    text = page_text(site, "reference/cli")
    assert len(cli.commands) >= 10
    for name in cli.commands:
        assert f"rsbench {name}" in text, name
    commands = [(name, command) for name, command in cli.commands.items()]
    for name, command in commands:  # subcommands join the list as it is walked
        commands += [(f"{name} {sub}", c) for sub, c in getattr(command, "commands", {}).items()]
        assert squashed(command.get_short_help_str(limit=1000)) in squashed(text), name
        for option in command.params:  # help texts with placeholders such as <run directory> included
            assert squashed(getattr(option, "help", None) or "") in squashed(text), (name, option.name)


@pytest.mark.slow
def test_api_reference_shows_the_docstrings(site: Path) -> None:
    import rsbench
    from rsbench import api

    text = page_text(site, "reference/api")
    for function in (rsbench.evaluate, api.evaluate, rsbench.load_defense, rsbench.load_dataset):
        assert squashed(function.__doc__) in squashed(text), function.__qualname__


@pytest.mark.slow
def test_results_page_holds_every_track_file(site: Path) -> None:
    """Each track version's entries, as the files say, and the paper tables' rows from the same tracks."""
    text = page_text(site, "results/tracks")
    paths = track_files.files(ROOT / "leaderboards")
    assert len(paths) > 50
    for path in paths:
        board = track_files.load(path)
        assert f"{board.track} v{board.version}" in text
        for entry in board.entries:
            best = board.comparison.best[entry.name]
            if best.value is not None:
                assert f"{best.value:.3g} [{best.ci_low:.3g}, {best.ci_high:.3g}]" in text, (path, entry.name)
    caa = next(e for e in track_files.load(track_files.latest(ROOT / "leaderboards", "evasion-smoothing-mnist-0.50"))
               .entries if e.name == "caa")
    r50 = caa.metrics["r50"]
    assert f"{r50.value:.2f} [{r50.ci_low:.2f}, {r50.ci_high:.2f}]" in page_text(site, "results/papers")


@pytest.mark.slow
def test_contributing_page_is_contributing_md(site: Path) -> None:
    first = next(line for line in (ROOT / "CONTRIBUTING.md").read_text().splitlines()[1:] if line.startswith("## "))
    assert first[3:] in page_text(site, "contributing")


def test_readme_table_is_generated_from_the_track(generated: ModuleType) -> None:
    text = README.read_text()
    assert "<!-- generated: readme-track -->" in text
    assert generated.fill(text) == text, "README.md's table is stale: run python docs/generated.py"
    board = track_files.load(track_files.latest(ROOT / "leaderboards", generated.README_TRACK))
    assert f"{board.track} v{board.version}" in text


def test_readme_links_resolve_and_its_commands_are_ci_s() -> None:
    text = README.read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) > 20
    assert [link for link in links if not link.startswith("http") and not (ROOT / link).exists()] == []
    run = (ROOT / ".ci" / "run").read_text()
    for line in ('pip install -e ".[test]" && pytest',):
        assert line in text and line in run
    assert "rsbench evaluate --defense smoothing-digits-0.5 --attack caa" in text
    assert "rsbench evaluate --defense smoothing-cifar-0.5 --attack caa" in text
