"""Submissions: `submissions/<name>/submission.yaml` plus the attack's code, validated and verified.

`validate` checks the folder (`submission_spec`) and runs the attack on a tiny embedded track of each
defense kind it claims. `verify` runs every claimed track's protocol and compares the claims with the
reproduced intervals; unless asked for a dry run (or a subset of samples), it adds the entry. Both run
the code in the sandbox and judge what it returns here (`submission_run`): nothing the submission
writes is taken for a judged fact, and the entry marks what only the attack could report
(`Entry.self_reported`) and records how its examples were judged (`Entry.judging`). A folder holding a
defense (`submissions/defenses/<name>/`) is validated and verified by `rsbench.defense_tracks` instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from rsbench import (
    admission,
    defense_submissions,
    defense_tracks,
    leaderboard,
    rederive,
    registry,
    runner,
    sandbox,
    submission_run,
)
from rsbench.errors import RsbenchError
from rsbench.hub import pinned_sha256
from rsbench.leaderboard import Leaderboard, Protocol, Source
from rsbench.scoring import entry_metrics
from rsbench.specs import SampleRecord
from rsbench.submission_spec import (
    Submission,
    commit_of,
    content_sha256,
    load_submission,
)

SMOKE_DEFENSES = {"smoothing": "smoothing-digits-0.50", "gloro": "gloro-digits-0.25", "kw": "kw-digits-0.05",
                  "crownibp": "crownibp-digits-0.10"}
"""The defense of the embedded smoke track, per defense kind the attack claims to attack."""
SMOKE_SAMPLES = 2
"""Samples of the smoke track: enough to run every code path, few enough for seconds."""


def smoke_protocol(submission: Submission, kind: str) -> tuple[Protocol, Leaderboard]:
    """The embedded smoke track of a defense kind: the first SMOKE_SAMPLES samples, light certification."""
    spec = registry.get_defense(SMOKE_DEFENSES[kind])
    goal = submission.attack.goal
    config = runner.run_config(spec, "evaluate", num_samples=SMOKE_SAMPLES, n0=100, n=1000, alpha=0.001, judge_n=200,
                               judge_alpha=0.005, confirm_n=2000, seed=0, goal=goal,
                               epsilon=runner.default_epsilon(spec, goal, None))
    protocol = Protocol.of_run(config, spec.kind)
    board = Leaderboard(track="smoke", version=1, defense=spec, protocol=protocol, protocol_hash=protocol.spec_hash(),
                        clean=leaderboard.StoredFile(path="", sha256=""))
    return protocol, board


def clean_of(board: Leaderboard, folder: Path | None) -> list[SampleRecord]:
    """The track's clean certificates: the stored ones of its samples, or, on a track that has none yet (the smoke
    track), certified here exactly as the engine certifies them (the protocol's seed)."""
    if board.clean.path:
        assert folder is not None
        clean = leaderboard.stored_records(folder, board)[0]
        return [c for c in clean if c.index < board.protocol.num_samples]
    defense, dataset = submission_run.prepare(board)
    samples = [(dataset[i][0], int(dataset[i][1]), i) for i in range(board.protocol.num_samples)]
    return runner.certify_samples(defense, samples, board.protocol.seed, defense.device)


def validate(folder: Path, timeout: float = 300, isolated: bool = True) -> str:
    """Schema, import and a smoke run on the embedded track of each defense kind the attack claims; a summary line.
    A defense's folder: `defense_tracks.validate`, a line per check."""
    if defense_submissions.is_defense(folder):
        return "\n".join(defense_tracks.validate(folder, timeout, isolated))
    sandbox.require(isolated)
    submission = load_submission(folder)
    kinds = sorted({registry.get_defense(track.split("-", 1)[1]).kind for track in submission.claims})
    successes, attacked = 0, 0
    for kind in kinds:
        _, board = smoke_protocol(submission, kind)
        judged = submission_run.run(folder, submission, board, clean_of(board, None), None, timeout=timeout,
                                    isolated=isolated)
        successes += sum(r.success for r in judged.records)
        attacked += len(judged.records)
    return f"{submission.name}: schema valid, imports, ran in the sandbox on the smoke track of {', '.join(kinds)} " \
           f"({successes}/{attacked} successes judged by rsbench)" + ("" if isolated else " (unsandboxed)")


def verify(folder: Path, root: Path, timeout: float = 1800, samples: int | None = None, *, dry_run: bool = False,
           isolated: bool = True) -> list[str]:
    """Run every claimed track's protocol, judge the examples, compare with the claims, add the entries.

    With `samples` (K), only the first K samples of each track are run, for tracks too large to re-run
    in CI: the claims are checked against the intervals of that subset, and no entry is added. With
    `dry_run`, the whole track is run and checked and the entry it would add is shown, not added.
    Unsandboxed runs (`isolated=False`, a local trial) never add entries either. A defense's folder:
    `defense_tracks.verify`, which adds the defense's tracks.
    """
    if defense_submissions.is_defense(folder):
        return defense_tracks.verify(folder, root, timeout, samples, dry_run=dry_run, isolated=isolated)
    sandbox.require(isolated)
    submission = load_submission(folder)
    digest, commit = content_sha256(folder), commit_of(folder)
    lines = []
    for track, claims in submission.claims.items():
        path = leaderboard.find(root, track)
        board = leaderboard.load(path)
        subset = samples is not None and samples < board.protocol.num_samples
        if subset:
            board = board.model_copy(update={"protocol": board.protocol.model_copy(update={"num_samples": samples})})
        clean = clean_of(board, path.parent)
        judged = submission_run.run(folder, submission, board, clean, root, timeout=timeout, isolated=isolated)
        reproduced = entry_metrics(board, submission.name, clean, judged.records)
        check_claims(submission.name, track, claims, reproduced)
        summary = ", ".join(f"{k} {_value(reproduced[k])}" for k in leaderboard.HEADLINE[board.protocol.goal])
        if subset:
            lines.append(f"{track}: claims consistent with the first {samples} samples ({summary}); no entry added "
                         "(run the whole track to add one)")
            continue
        if dry_run or not isolated:
            why = "dry run" if dry_run else "unsandboxed"
            lines.append(f"{track}: claims reproduced ({summary}); {why}, no entry added")
            continue
        source = Source(kind="submission", submission=submission.name, commit=commit, content_sha256=digest)
        environment = runner.environment(torch.device("cpu"))
        entry = admission.NewEntry(submission.attack, judged.records, judged.examples, source, environment,
                                   pinned_sha256(board.defense.weights), judged.judging.date, judged.seed,
                                   judged.judging, rederive.SELF_REPORTED[board.protocol.goal])
        admission.admit(path, board, clean, [entry])
        lines.append(f"{track}: claims reproduced ({summary}), entry {submission.name} added to {path}")
    return lines


def _value(interval: leaderboard.Interval) -> str:
    return "-" if interval.value is None else f"{interval.value:.3g} [{interval.ci_low:.3g}, {interval.ci_high:.3g}]"


def _shown(value: float) -> float:
    """Half a unit of the third significant digit, to which the leaderboard shows `value` (a claim copied from its
    table is as exact as the table)."""
    return 0.5 * 10 ** (math.floor(math.log10(abs(value))) - 2) if value else 1e-9


def check_claims(name: str, track: str, claims: dict[str, float | None], reproduced: dict) -> None:
    """Refuse, with one line, a claimed metric outside the 95% interval its run reproduces (as the leaderboard shows
    it, to three significant digits)."""
    for metric, claimed in claims.items():
        interval = reproduced.get(metric)
        if interval is None:
            raise RsbenchError(f"{name} claims {metric} on {track}, which the track does not report")
        if claimed is None or interval.value is None:
            if claimed is not None or interval.value is not None:
                raise RsbenchError(f"{name} claims {metric} {claimed} on {track}; its run reproduces "
                                   f"{_value(interval)}; refused")
            continue
        if not interval.ci_low - _shown(interval.ci_low) <= claimed <= interval.ci_high + _shown(interval.ci_high):
            raise RsbenchError(f"{name} claims {metric} {claimed:g} on {track}; its run reproduces "
                               f"{interval.value:.3g} [{interval.ci_low:.3g}, {interval.ci_high:.3g}]; refused")
