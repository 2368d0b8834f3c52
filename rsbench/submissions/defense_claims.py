"""`rsbench submission measure` on a defense's folder: the `claims:` block of its submission.yaml, measured.

A defense claims, per track it will get, its clean accuracy and its certified accuracy at the radii
it reports, in % of the track's samples. `measure` certifies those samples exactly as the tracks (and
`submission validate`) will, with the defense served from its sandbox, and writes the block with each
value's 95% Clopper-Pearson interval as a comment, so that nobody copies numbers by hand. The radii are
those the folder already claims, else epsilon and 2 epsilon (smoothing: sigma / 2 and sigma).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rsbench import metrics, registry
from rsbench.errors import RsbenchError
from rsbench.leaderboard.track_files import Protocol
from rsbench.records import CertifiedPoint, SampleRecord
from rsbench.specs import DefenseSpec
from rsbench.submissions import estimates, sandbox
from rsbench.submissions.defense_submissions import (
    TRACK_PROTOCOL,
    certificates,
    check_files,
    track_protocols,
)
from rsbench.submissions.defense_tracks import serving


def radii(spec: DefenseSpec, claimed: object) -> list[float]:
    """The radii to measure on a track: those its claim names, else the defense's epsilon and twice it (smoothing:
    half its sigma and its sigma)."""
    if isinstance(claimed, dict) and isinstance(claimed.get("certified_accuracy"), dict):
        try:
            return sorted(float(r) for r in claimed["certified_accuracy"])
        except (TypeError, ValueError):
            raise RsbenchError(f"{spec.name}: a claimed radius is not a number: "
                               f"{list(claimed['certified_accuracy'])}") from None
    base = spec.epsilon if spec.epsilon else (spec.sigma or 0.5) / 2
    return [base, 2 * base]


def measure(folder: Path, timeout: float = 1800, samples: int | None = None, isolated: bool = True,
            report: Callable[[str], None] | None = None) -> str:
    """The measured `claims:` block of a defense's folder; its spec and weights are checked first (no code runs for
    that), then every track's samples are certified with the defense served from its sandbox, after `report` is
    told each goal's estimate (`estimates`; from each certification's first sample)."""
    path = folder / "submission.yaml"
    spec = registry.parse_spec(path, DefenseSpec, "defense")
    check_files(spec, folder.resolve())
    data = registry.read_yaml(path)
    claimed = data.get("claims") if isinstance(data, dict) and isinstance(data.get("claims"), dict) else {}
    protocols = track_protocols(spec, samples)
    sandbox.require(isolated)
    runs: dict[tuple, list[SampleRecord]] = {}
    with serving([spec], None, timeout, isolated):
        told, sharing = [], {}
        for protocol in protocols.values():  # tracks sharing their certification settings share one certification
            key = _key(protocol)
            if key in runs:
                told.append(estimates.Estimate(protocol.goal, 0.0, 0, 0.0, f"shares {sharing[key]}'s certificates"))
                continue
            runs[key], sharing[key] = certificates(spec, protocol, indices=range(1)), protocol.goal
            first, left = runs[key][0].time_s, protocol.num_samples - 1
            told.append(estimates.Estimate(protocol.goal, first, left, first * left, "certification"))
        for line in estimates.lines(told, "certification"):
            (report or (lambda _: None))(f"# {line}")
        for protocol in {_key(p): p for p in protocols.values()}.values():
            runs[_key(protocol)] += certificates(spec, protocol, indices=range(1, protocol.num_samples))
    count = samples or TRACK_PROTOCOL["num_samples"]
    lines = [(f"# {spec.name}: measured by rsbench submission measure (certified as each track will, its code "
              "served from its sandbox); paste into submission.yaml")]
    if samples is not None and samples < TRACK_PROTOCOL["num_samples"]:
        lines.append(f"# NOT the tracks' protocol: their first {samples} of {TRACK_PROTOCOL['num_samples']} samples; "
                     "submission validate certifies them all, and these values may lie outside its intervals")
    lines.append("claims:")
    for track, protocol in protocols.items():
        records = runs[_key(protocol)]
        clean = metrics.certified_accuracy(records, 0.0)
        points = [metrics.certified_accuracy(records, r) for r in radii(spec, claimed.get(track))]
        settings = f", n0={protocol.n0}, n={protocol.n}, alpha={protocol.alpha:g}" if spec.kind == "smoothing" else ""
        certified = ", ".join(f"{p.radius:g}: {_percent(p.accuracy)}" for p in points)
        intervals = "; ".join(f"{p.radius:g}: [{_interval(p)}]" for p in points)
        lines += [f"  {track}:  # first {count} {protocol.split} samples{settings}",
                  f"    clean_accuracy: {_percent(clean.accuracy)}  # 95% [{_interval(clean)}]",
                  f"    certified_accuracy: {{{certified}}}  # {intervals}"]
    return "\n".join(lines)


def _key(protocol: Protocol) -> tuple:
    """The certification settings of a track: tracks with the same key share one certification."""
    return protocol.split, protocol.num_samples, protocol.n0, protocol.n, protocol.alpha, protocol.seed


def _percent(value: float) -> float:
    return round(100 * value, 1)


def _interval(point: CertifiedPoint) -> str:
    return f"{100 * point.ci_low:.1f}, {100 * point.ci_high:.1f}"
