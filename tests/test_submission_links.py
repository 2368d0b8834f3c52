"""No submission folder may hold a link: the parent would read its target (the checkout's .git/config, its own
/proc/self/environ) and copy it into the sandbox, whose errors are echoed. Every way in is refused in one line
before anything is read, and what a child's error echoes is one short line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rsbench.cli import cli
from rsbench.errors import RsbenchError
from rsbench.submissions import defense_submissions, sandbox, submission_spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "submissions" / "defenses" / "aol-digits"
SECRET = "s3cr3t-token-of-the-checkout"


def attack_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "submissions" / "idle"
    folder.mkdir(parents=True)
    (folder / "idle.py").write_text("from rsbench.attacks.base import Attack\n")
    (folder / "submission.yaml").write_text(yaml.safe_dump({
        "name": "idle", "authors": ["a"], "paper": "https://example.org", "licence": "MIT",
        "claims": {"evasion-smoothing-digits-0.50": {"success": 0, "r50": None}},
        "attack": {"name": "idle", "implementation": "idle:Idle", "goal": "evasion", "norm": "l2"}}))
    return folder


def defense_folder(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "submissions" / "defenses" / "aol-digits"))


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Two files a link could reach: a checkout's git config holding a token, and this process's environment."""
    config = tmp_path / "checkout" / ".git" / "config"
    config.parent.mkdir(parents=True)
    config.write_text(f'[http]\n\textraheader = AUTHORIZATION: basic {SECRET}\n')
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    return {"git config": config, "environ": Path("/proc/self/environ")}


@pytest.mark.parametrize("make", [attack_folder, defense_folder], ids=["attack", "defense"])
@pytest.mark.parametrize("target", ["git config", "environ"])
@pytest.mark.parametrize("linked", ["notes.txt", "submission.yaml"])
def test_validate_refuses_a_folder_holding_a_link_and_prints_nothing_it_points_at(
        tmp_path: Path, secrets: dict[str, Path], make, target: str, linked: str) -> None:
    folder = make(tmp_path)
    (folder / linked).unlink(missing_ok=True)
    (folder / linked).symlink_to(secrets[target])
    done = CliRunner().invoke(cli, ["submission", "validate", str(folder)])
    assert done.exit_code != 0
    assert "plain files only, not links" in done.output and len(done.output.strip().splitlines()) == 1
    assert SECRET not in done.output


def test_a_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    real = defense_folder(tmp_path / "elsewhere")
    (tmp_path / "submissions" / "defenses").mkdir(parents=True)
    (tmp_path / "submissions" / "defenses" / "aol-digits").symlink_to(real)
    with pytest.raises(RsbenchError, match="a submission is a folder of plain files, not a link"):
        defense_submissions.load(tmp_path / "submissions" / "defenses" / "aol-digits")


def test_every_copy_refuses_links_rather_than_following_them(tmp_path: Path, secrets: dict[str, Path]) -> None:
    """Even a link that appears after the folder was checked is copied as a link, and refused, never read."""
    folder = attack_folder(tmp_path)
    checked = submission_spec.files

    def then_a_link(where: Path) -> list[Path]:
        found = checked(where)
        if where == folder:
            (folder / "late.txt").symlink_to(secrets["git config"])
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(submission_spec, "files", then_a_link)
        with pytest.raises(RsbenchError, match="plain files only, not links"):
            submission_spec.copy(folder, tmp_path / "copy")
    assert (tmp_path / "copy" / "late.txt").is_symlink()  # copied as a link, never as its target's bytes


def test_a_childs_error_is_echoed_as_one_short_line() -> None:
    poured = "Traceback (most recent call last):\n" + f"ValueError: {SECRET * 40}\x1b[2J\n\n"
    echoed = sandbox.echoed(poured)
    assert "\n" not in echoed and len(echoed) == sandbox.ECHO_CHARS and echoed.startswith("ValueError: ")
    assert "\x1b" not in sandbox.echoed("ValueError: \x1b[2J clear")
    assert sandbox.echoed("") == ""
