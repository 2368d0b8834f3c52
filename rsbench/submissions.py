"""Submissions by pull request: `submissions/<name>/submission.yaml` plus the attack's code.

`validate` checks the schema, then imports and runs the attack on a tiny embedded track in a
subprocess with a time limit. `verify` runs each claimed track's protocol in a subprocess,
judges every returned example itself in this process (which never imports the submission),
compares the claimed metrics with the reproduced intervals and adds the entry. The subprocess
writes a run directory, but nothing it writes is taken on trust: every example a success rests
on is judged again here on fresh noise, its distance recomputed, and the track's clean
certificates must match; so a submission can neither write its own records nor judge itself.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from pydantic import Field, ValidationError

from rsbench import admission, audit, leaderboard, registry, runner
from rsbench.defenses import load_defense
from rsbench.errors import RsbenchError
from rsbench.leaderboard import Leaderboard, Protocol, Source
from rsbench.specs import NAME_PATTERN, AttackSpec, Spec

SMOKE_DEFENSES = {"smoothing": "smoothing-digits-0.50", "gloro": "gloro-digits-0.25", "kw": "kw-digits-0.05",
                  "crownibp": "crownibp-digits-0.10"}
"""The defense of the embedded smoke track, per defense kind the attack claims to attack."""
SMOKE_SAMPLES = 2
"""Samples of the smoke track: enough to run every code path, few enough for seconds."""


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
    claims: dict[str, dict[str, float]] = Field(min_length=1)
    """Per claimed track (`<goal>-<defense>`), the metrics the authors measured (as the leaderboard reports them)."""


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
    for track in submission.claims:
        if not track.startswith(f"{submission.attack.goal}-"):
            raise RsbenchError(f"{path}: claims track {track!r}, but the attack's goal is {submission.attack.goal}")
    return submission


def smoke_protocol(submission: Submission, kind: str) -> tuple[Protocol, Leaderboard]:
    """The embedded smoke track of a defense kind: the first SMOKE_SAMPLES samples, light certification."""
    spec = registry.get_defense(SMOKE_DEFENSES[kind])
    eps = spec.epsilon if submission.attack.goal != "evasion" or kind != "smoothing" else None
    eps = spec.sigma if eps is None and submission.attack.goal == "degradation" else eps
    protocol = Protocol(defense=spec.name, defense_hash=spec.spec_hash(), goal=submission.attack.goal, epsilon=eps,
                        split="test", num_samples=SMOKE_SAMPLES, n0=100, n=1000, alpha=0.001, judge_n=200,
                        judge_alpha=0.005, confirm_n=2000, seed=0, metrics=leaderboard.goal_metrics(submission.attack.goal, kind))
    board = Leaderboard(track="smoke", version=1, defense=spec, protocol=protocol, protocol_hash=protocol.spec_hash(),
                        clean=leaderboard.StoredFile(path="", sha256=""))
    return protocol, board


def run_isolated(folder: Path, board: Leaderboard, out: Path, timeout: float) -> None:
    """Run the submission's attack on a track's protocol in a subprocess that writes `out`, within `timeout` s."""
    command = [sys.executable, "-c", "import sys; from rsbench.submissions import child; child(*sys.argv[1:])",
               str(folder.resolve()), board.model_dump_json(), str(out)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RsbenchError(f"{folder.name} ran past its time limit of {timeout:g} s on {board.track}") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RsbenchError(f"{folder.name} failed on {board.track}: {lines[-1] if lines else done.returncode}")


def child(folder: str, board_json: str, out: str) -> None:
    """The subprocess: import the submission from its folder and run the engine on the track's protocol."""
    from rsbench import engine

    sys.path.insert(0, folder)
    submission = load_submission(Path(folder))
    board = Leaderboard.model_validate_json(board_json)
    config = board.protocol.run_config([submission.attack])
    engine.evaluate(board.defense, [submission.attack], config, Path(out), torch.device("cpu"), save_examples=True,
                    progress=False)


def judged_run(board: Leaderboard, out: Path, name: str) -> tuple[list, list]:
    """The clean and attack records of a subprocess's run, refused unless this process confirms every example."""
    clean = leaderboard.parse_jsonl((out / "clean.jsonl").read_bytes(), leaderboard.SampleRecord)
    records = leaderboard.parse_jsonl((out / "samples.jsonl").read_bytes(), leaderboard.record_type(board.protocol.goal))
    examples_path = out / "adversarial" / f"{name}.pt"
    examples = torch.load(examples_path, weights_only=True) if examples_path.exists() else None
    reason = admission.unconfirmed(board.protocol, board.defense, records, examples)
    if reason:
        raise RsbenchError(f"{name} on {board.track}: {reason}; refused")
    defense = load_defense(runner.spec_for_run(board.defense, board.protocol.run_config([])))
    agree, total = audit.rejudge(board, defense, name, records, examples, purpose="submission")
    if agree != total:
        raise RsbenchError(f"{name} on {board.track}: {total - agree} of {total} returned examples are not what their "
                           f"records claim when rsbench judges them; refused")
    return clean, records


def validate(folder: Path, timeout: float = 300) -> str:
    """Schema, import and a smoke run on the embedded track of each defense kind the attack claims; a summary line."""
    submission = load_submission(folder)
    kinds = sorted({leaderboard_kind(track) for track in submission.claims})
    for kind in kinds:
        _, board = smoke_protocol(submission, kind)
        with tempfile.TemporaryDirectory() as scratch:
            run_isolated(folder, board, Path(scratch) / "run", timeout)
            _, records = judged_run(board, Path(scratch) / "run", submission.name)
    return f"{submission.name}: schema valid, imports, ran on the smoke track of {', '.join(kinds)} " \
           f"({sum(r.success for r in records)}/{len(records)} successes judged by rsbench)"


def leaderboard_kind(track: str) -> str:
    """The defense kind of a claimed track name."""
    defense = track.split("-", 1)[1]
    return registry.get_defense(defense).kind


def commit_of(folder: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(folder), "log", "-1", "--format=%H", "--", "."], capture_output=True,
                          text=True)
    return done.stdout.strip() or None


def verify(folder: Path, root: Path, timeout: float = 1800, samples: int | None = None) -> list[str]:
    """Run every claimed track's protocol, judge the examples, compare with the claims, add the entries.

    With `samples` (K), only the first K samples of each track are run, for tracks too large to re-run
    in CI: each sample's records are the ones the full protocol gives it (every stream is seeded from
    the sample), so the claims are checked against the intervals of that subset, and no entry is added.
    """
    submission = load_submission(folder)
    lines = []
    for track, claims in submission.claims.items():
        board = leaderboard.load(leaderboard.find(root, track))
        subset = samples is not None and samples < board.protocol.num_samples
        if subset:
            board = board.model_copy(update={"protocol": board.protocol.model_copy(update={"num_samples": samples})})
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "run"
            run_isolated(folder, board, out, timeout)
            clean, records = judged_run(board, out, submission.name)
            check_claims(submission.name, track, claims,
                         leaderboard.entry_metrics(board, submission.name, sorted(clean, key=lambda c: c.index), records))
            if subset:
                lines.append(f"{track}: claims consistent with the first {samples} samples; no entry added "
                             "(run the whole track to add one)")
                continue
            source = Source(kind="submission", submission=submission.name, commit=commit_of(folder))
            written, _ = admission.add_run(root, out, source)
        lines.append(f"{track}: claims reproduced, entry {submission.name} added to {written}")
    return lines


def check_claims(name: str, track: str, claims: dict[str, float], reproduced: dict) -> None:
    """Refuse, with one line, a claimed metric outside the 95% interval its run reproduces."""
    for metric, claimed in claims.items():
        interval = reproduced.get(metric)
        if interval is None or interval.value is None:
            raise RsbenchError(f"{name} claims {metric} on {track}, which the track does not report")
        if not interval.ci_low - 1e-9 <= claimed <= interval.ci_high + 1e-9:
            raise RsbenchError(f"{name} claims {metric} {claimed:g} on {track}; its run reproduces "
                               f"{interval.value:.3g} [{interval.ci_low:.3g}, {interval.ci_high:.3g}]; refused")
