"""What a submission claims on the leaderboards: checked in seconds before anything runs, and measured to paste.

Before any code runs (and after `load_submission` checked metric names and values), every claimed track
must exist under the leaderboards' root (its newest version is meant), and the submission's name may not
be an entry's on a claimed track: admission would refuse it only after the whole run (an entry made from
this very folder, unchanged, is its own).
`block` writes what `rsbench submission measure` measured as the `claims:` block of `submission.yaml`,
each value with its 95% interval as a comment (YAML drops the comments when the file is read), and the
`seeds:` of the measurement, with which `verify` must find these very values.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rsbench.errors import RsbenchError
from rsbench.leaderboard import track_files
from rsbench.leaderboard.track_files import Interval, Leaderboard
from rsbench.submissions.submission_spec import Seeds, Submission, content_sha256


def track_file(root: Path, name: str, track: str) -> Path:
    """The newest file of a claimed track; refused with the nearest known track name otherwise."""
    path = track_files.latest(root, track)
    if path is None:
        known = sorted({p.parent.name for p in track_files.files(root)})
        close = difflib.get_close_matches(track, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"--root names the leaderboards' folder ({len(known)} " \
                                                           "tracks there)"
        raise RsbenchError(f"{name} claims track {track!r}, which has no leaderboard under {root}; {hint}")
    return path


def check_name(folder: Path, submission: Submission, track: str, board: Leaderboard) -> None:
    """Refuse a submission named like an entry of the track, unless that entry was made from this folder as it is."""
    for entry in board.entries:
        if entry.name != submission.name:
            continue
        source = entry.source
        if source.kind == "submission" and source.submission == submission.name \
                and source.content_sha256 == content_sha256(folder):
            continue
        made = {"registry": "a registry attack's run", "defense-submission": "a registry attack's run",
                "submission": "this submission's folder as it was then"}[source.kind]
        raise RsbenchError(f"{submission.name} is already an entry of {track} v{board.version}, from {made}; entries "
                           "are never replaced: a new or changed attack takes a name no entry of its tracks has")


def check(folder: Path, submission: Submission, root: Path) -> dict[str, Path]:
    """What needs the leaderboards, checked before anything runs: every claimed track exists and has no entry of the
    submission's name; each claimed track's newest file. (`load_submission` checked metric names and domains.)"""
    paths = {}
    for track in submission.claims:
        paths[track] = track_file(root, submission.name, track)
        check_name(folder, submission, track, track_files.load(paths[track]))
    return paths


@dataclass(frozen=True)
class Measured:
    """One track's metrics as a submission's run reproduced them."""

    track: str
    version: int
    samples: int
    """Samples run: the track's first `samples`."""
    protocol_samples: int
    """Samples of the track's protocol."""
    metrics: dict[str, Interval]
    self_reported: Sequence[str]
    """Metrics computed from what the attack reported about itself (times): shown, never claimed."""
    seeds: Seeds
    """The seeds of the run, with which verify reproduces it."""


def shown(value: float) -> float:
    """A value as the tables show it: three significant digits."""
    return float(f"{value:.3g}")


def _scalar(value: float | None) -> str:
    """A value as the leaderboard shows it (three significant digits), written so that YAML reads a number."""
    if value is None:
        return "null"
    value = shown(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    return text if "." in text else text.replace("e", ".0e")


def _interval(interval: Interval) -> str:
    if interval.value is None:
        return "undefined on this run"
    return f"95% interval [{_scalar(interval.ci_low)}, {_scalar(interval.ci_high)}]"


def block(name: str, measured: Sequence[Measured]) -> str:
    """The `claims:` block of the measured tracks, to paste into `submission.yaml`."""
    partial = [m for m in measured if m.samples < m.protocol_samples]
    lines = [f"# {name}: measured by rsbench submission measure, judged by rsbench; paste into submission.yaml"]
    if partial:
        lines.append("# NOT the tracks' protocols: " + "; ".join(
            f"{m.track} on its first {m.samples} of {m.protocol_samples} samples" for m in partial)
            + ". submission verify runs them in full, and these values may lie outside its intervals")
    lines.append("claims:  # on each track's newest version")
    for m in measured:
        protocol = "NOT its protocol" if m.samples < m.protocol_samples else "its protocol"
        lines.append(f"  {m.track}:  # v{m.version}, {m.samples} samples ({protocol})")
        claimed = {k: v for k, v in m.metrics.items() if k not in m.self_reported}
        width = max(len(k) + len(_scalar(v.value)) for k, v in claimed.items())
        for metric, interval in claimed.items():
            value = _scalar(interval.value)
            lines.append(f"    {metric}: {value}{' ' * (width - len(metric) - len(value))}  # {_interval(interval)}")
        own = [f"{k} {_scalar(v.value)} ({_interval(v)})" for k, v in m.metrics.items() if k in m.self_reported]
        if own:
            lines.append(f"    # measured by the attack itself on this machine, not claimed: {'; '.join(own)}")
    lines.append("seeds:  # of this measurement: verify runs and judges with them and must find these very claims")
    lines += [f"  {m.track}: {{run: {m.seeds.run}, judging: {m.seeds.judging}}}" for m in measured]
    return "\n".join(lines)
