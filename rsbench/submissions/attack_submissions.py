"""Submissions: `submissions/<name>/submission.yaml` plus the attack's code, validated and verified.

`validate` checks the folder (`submission_spec`) and the claims (`claims`), then runs the attack on a tiny
embedded track of each defense kind it claims: one attacked sample of every label. `measure` runs tracks'
protocols and prints the claims to paste; `verify` runs every claimed track's protocol and compares the claims
with the reproduced intervals; unless asked for a dry run (or a subset of samples), it adds the entry. All run
the code in the sandbox and judge what it returns here (`submission_run`): nothing the submission
writes is taken for a judged fact, and the entry marks what only the attack could report
(`Entry.self_reported`) and records how its examples were judged (`Entry.judging`). A folder holding a
defense (`submissions/defenses/<name>/`) is validated and verified by `rsbench.submissions.defense_tracks` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from rsbench import registry, runner
from rsbench.errors import RsbenchError
from rsbench.hub import pinned_sha256
from rsbench.leaderboard import admission, rederive, track_files
from rsbench.leaderboard.scoring import entry_metrics
from rsbench.leaderboard.track_files import Leaderboard, Protocol, Source
from rsbench.progress import each
from rsbench.records import SampleRecord
from rsbench.submissions import claims, defense_claims, defense_submissions, defense_tracks, sandbox, submission_run
from rsbench.submissions.submission_spec import (
    Seeds,
    Submission,
    check_track,
    commit_of,
    content_sha256,
    load_submission,
)

SMOKE_DEFENSES = {"smoothing": "smoothing-digits-0.50", "gloro": "gloro-digits-0.25", "kw": "kw-digits-0.05",
                  "crownibp": "crownibp-digits-0.10"}
"""The defense of the embedded smoke track, per defense kind the attack claims to attack."""
SMOKE_CHUNK = 32
"""Samples certified at a time while looking for an attacked sample of every label."""


def smoke_protocol(submission: Submission, kind: str) -> tuple[Protocol, Leaderboard]:
    """The embedded smoke track of a defense kind: light certification and judge on the test split (`smoke_clean`
    picks its samples)."""
    spec = registry.get_defense(SMOKE_DEFENSES[kind])
    goal = submission.attack.goal
    config = runner.run_config(spec, "evaluate", num_samples=1, n0=100, n=1000, alpha=0.001, judge_n=200,
                               judge_alpha=0.005, confirm_n=2000, seed=0, goal=goal,
                               epsilon=runner.default_epsilon(spec, goal, None))
    protocol = Protocol.of_run(config, spec.kind)
    board = Leaderboard(track="smoke", version=1, defense=spec, protocol=protocol, protocol_hash=protocol.spec_hash(),
                        clean=track_files.StoredFile(path="", sha256=""))
    return protocol, board


def smoke_clean(board: Leaderboard) -> tuple[Leaderboard, list[SampleRecord]]:
    """The smoke track's samples: the first sample of each label that its goal attacks (correct, certified as it
    requires), certified in order until every label has one or the split ends; the track with its protocol
    covering them, and their clean certificates."""
    defense, dataset = submission_run.prepare(board)
    chosen: dict[int, SampleRecord] = {}
    for start in range(0, len(dataset), SMOKE_CHUNK):
        rows = [r for r in _rows(dataset, range(start, min(start + SMOKE_CHUNK, len(dataset)))) if r[1] not in chosen]
        certified = runner.certify_samples(defense, rows, board.protocol.seed, defense.device)
        for record in rederive.attacked(board, certified):
            chosen.setdefault(record.label, record)
        if len(chosen) == board.defense.num_classes:
            break
    if not chosen:
        raise RsbenchError(f"{board.defense.name} attacks no sample of its test split under the smoke protocol")
    clean = sorted(chosen.values(), key=lambda c: c.index)
    protocol = board.protocol.model_copy(update={"num_samples": clean[-1].index + 1})
    return board.model_copy(update={"protocol": protocol}), clean


def clean_of(board: Leaderboard, folder: Path) -> list[SampleRecord]:
    """The track's clean certificates of its samples: the stored ones, or, on a track that has none yet, certified
    here exactly as the engine certifies them (the protocol's seed)."""
    if board.clean.path:
        clean = track_files.stored_records(folder, board)[0]
        return [c for c in clean if c.index < board.protocol.num_samples]
    defense, dataset = submission_run.prepare(board)
    return runner.certify_samples(defense, _rows(dataset, range(board.protocol.num_samples)), board.protocol.seed,
                                  defense.device)


def _rows(dataset: Dataset, indices: Sequence[int]) -> list[tuple[torch.Tensor, int, int]]:
    """(x, label, index) of the dataset's samples at `indices`, as `runner.certify_samples` takes them."""
    return [(dataset[i][0], int(dataset[i][1]), i) for i in indices]


def validate(folder: Path, timeout: float = 300, isolated: bool = True, root: Path = Path("leaderboards")) -> str:
    """Schema and claims (metric names and domains: `load_submission`; tracks and the name: `claims.check`) and
    import, then a smoke run on the embedded track of each defense kind the attack claims, one attacked sample of
    every label; a summary line.
    A defense's folder: `defense_tracks.validate`, a line per check."""
    if defense_submissions.is_defense(folder):
        return "\n".join(defense_tracks.validate(folder, timeout, isolated))
    submission = load_submission(folder)
    claims.check(folder, submission, root)
    sandbox.require(isolated)
    kinds = sorted({registry.get_defense(track.split("-", 1)[1]).kind for track in submission.claims})
    successes, attacked, missing = 0, 0, []
    for kind in each(kinds, f"validate {submission.name}", "defense kind"):
        board, clean = smoke_clean(smoke_protocol(submission, kind)[1])
        judged = submission_run.run(folder, submission, board, clean, None, timeout=timeout, isolated=isolated)
        successes += sum(r.success for r in judged.records)
        attacked += len(judged.records)
        labels = {c.label for c in clean}
        missing += [f"{kind} {label}" for label in range(board.defense.num_classes) if label not in labels]
    gaps = f"; the split has no sample the goal attacks of label {', '.join(missing)}" if missing else ""
    return f"{submission.name}: schema and claims valid, imports, ran in the sandbox on the smoke track of " \
           f"{', '.join(kinds)}, one sample of every label ({successes}/{attacked} successes judged by rsbench" \
           f"{gaps})" + ("" if isolated else " (unsandboxed)")


@dataclass(frozen=True)
class Reproduced:
    """One run of a submission on a track's protocol (or its first samples), judged and scored here."""

    path: Path
    board: Leaderboard
    """The track, its protocol cut to the samples run."""
    subset: bool
    """Whether fewer samples than the track's protocol were run."""
    clean: list[SampleRecord]
    judged: submission_run.Judged
    metrics: dict[str, track_files.Interval]


def reproduce(folder: Path, submission: Submission, root: Path, track: str, timeout: float, samples: int | None,
              isolated: bool, seeds: Seeds | None = None) -> Reproduced:
    """Run the submission on the track's protocol (its first `samples` only, when fewer) in the sandbox, judge what it
    returns and compute the entry's metrics with their intervals, as the leaderboard does; with `seeds`, exactly
    as the measurement that used them did."""
    path = track_files.find(root, track)
    board = track_files.load(path)
    subset = samples is not None and samples < board.protocol.num_samples
    if subset:
        board = board.model_copy(update={"protocol": board.protocol.model_copy(update={"num_samples": samples})})
    clean = clean_of(board, path.parent)
    judged = submission_run.run(folder, submission, board, clean, root, timeout=timeout, isolated=isolated,
                                seed=seeds and seeds.run, judge_seed=seeds and seeds.judging)
    return Reproduced(path, board, subset, clean, judged, entry_metrics(board, submission.name, clean, judged.records))


def measure(folder: Path, root: Path, tracks: Sequence[str] = (), timeout: float = 1800, samples: int | None = None,
            isolated: bool = True, report: Callable[[str], None] | None = None) -> str:
    """Run each track's protocol (by default the claimed tracks'; its first `samples` only, when fewer) as `verify`
    does and return the `claims:` block of what rsbench judged, to paste into submission.yaml. Adds nothing. A
    defense's folder: `defense_claims.measure`, the accuracies it claims on its own tracks, its estimate told to
    `report` first."""
    if defense_submissions.is_defense(folder):
        if tracks:
            raise RsbenchError(f"{folder} holds a defense, which claims its own tracks (evasion-, degradation- and "
                               "spoofing-NAME): leave out --track")
        return defense_claims.measure(folder, timeout, samples, isolated, report)
    submission = load_submission(folder, claims=False)
    tracks = list(dict.fromkeys(tracks or submission.claims))
    if not tracks:
        raise RsbenchError(f"{submission.name} claims no track yet: name the tracks to measure with --track")
    for track in tracks:
        check_track(folder / "submission.yaml", submission.attack.goal, track)
        board = track_files.load(claims.track_file(root, submission.name, track))
        claims.check_name(folder, submission, track, board)
    sandbox.require(isolated)
    measured = []
    for track in each(tracks, f"measure {submission.name}", "track"):
        run = reproduce(folder, submission, root, track, timeout, samples, isolated)
        full = track_files.load(run.path).protocol.num_samples
        measured.append(claims.Measured(track, run.board.version, run.board.protocol.num_samples, full, run.metrics,
                                        rederive.SELF_REPORTED[run.board.protocol.goal],
                                        Seeds(run=run.judged.seed, judging=run.judged.judging.seed)))
    return claims.block(submission.name, measured)


def verify(folder: Path, root: Path, timeout: float = 1800, samples: int | None = None, *, dry_run: bool = False,
           isolated: bool = True, report: Callable[[str], None] | None = None) -> list[str]:
    """Run every claimed track's protocol, judge the examples, compare with the claims, add the entries.

    With `samples` (K), only the first K samples of each track are run, for tracks too large to re-run
    in CI: the claims are checked against the intervals of that subset, and no entry is added. With
    `dry_run`, the whole track is run and checked and the entry it would add is shown, not added.
    Unsandboxed runs (`isolated=False`, a local trial) never add entries either. A defense's folder:
    `defense_tracks.verify`, which adds the defense's tracks and tells `report` each attack's headline as it ends.
    """
    if defense_submissions.is_defense(folder):
        return defense_tracks.verify(folder, root, timeout, samples, dry_run=dry_run, isolated=isolated,
                                     report=report)
    submission = load_submission(folder)
    claims.check(folder, submission, root)
    sandbox.require(isolated)
    digest, commit = content_sha256(folder), commit_of(folder)
    lines = []
    for track, claimed in each(submission.claims.items(), f"verify {submission.name}", "track"):
        seeds = submission.seeds.get(track)
        run = reproduce(folder, submission, root, track, timeout, samples, isolated, seeds)
        check_claims(submission.name, track, claimed, run.metrics, exact=not run.subset)
        goal = run.board.protocol.goal
        summary = ", ".join(f"{k} {_value(run.metrics[k])}" for k in track_files.HEADLINE[goal])
        if run.subset:
            lines.append(f"{track}: claims consistent with the first {samples} samples ({summary}); no entry added "
                         "(run the whole track to add one)")
            continue
        if dry_run or not isolated:
            why = "dry run" if dry_run else "unsandboxed"
            lines.append(f"{track}: claims reproduced ({summary}); {why}, no entry added")
            continue
        source = Source(kind="submission", submission=submission.name, commit=commit, content_sha256=digest)
        environment = runner.environment(torch.device("cpu"))
        judged = run.judged if seeds is None else submission_run.judge(  # on noise no one knew before it ran
            run.board, run.clean, submission.name, run.judged.seed, run.judged.proposals, run.judged.reports)
        entry = admission.NewEntry(submission.attack, judged.records, judged.examples, source, environment,
                                   pinned_sha256(run.board.defense.weights), judged.judging.date, judged.seed,
                                   judged.judging, rederive.SELF_REPORTED[goal])
        admission.admit(run.path, run.board, run.clean, [entry])
        lines.append(f"{track}: claims reproduced ({summary}), entry {submission.name} added to {run.path}")
    return lines


def _value(interval: track_files.Interval) -> str:
    return "-" if interval.value is None else f"{interval.value:.3g} [{interval.ci_low:.3g}, {interval.ci_high:.3g}]"


def check_claims(name: str, track: str, values: dict[str, float | None], reproduced: dict, exact: bool = True) -> None:
    """Refuse, with one line, a claimed metric that is not what the run reproduces to the three significant digits
    the tables show (what `measure` printed, when the run used its seeds); with `exact` off (a run of the track's
    first samples only), one outside the reproduced 95% interval as the tables show it."""
    for metric, claimed in values.items():
        interval = reproduced.get(metric)
        if interval is None:
            raise RsbenchError(f"{name} claims {metric} on {track}, which the track does not report")
        if claimed is None or interval.value is None:
            if claimed is not None or interval.value is not None:
                raise RsbenchError(f"{name} claims {metric} {claimed} on {track}; its run reproduces "
                                   f"{_value(interval)}; refused")
            continue
        low, high = (interval.value, interval.value) if exact else (interval.ci_low, interval.ci_high)
        if not claims.shown(low) <= claims.shown(claimed) <= claims.shown(high):
            raise RsbenchError(f"{name} claims {metric} {claimed:g} on {track}; its run reproduces "
                               f"{interval.value:.3g} [{interval.ci_low:.3g}, {interval.ci_high:.3g}]"
                               f"{'' if exact else ' on its first samples'}; refused")
