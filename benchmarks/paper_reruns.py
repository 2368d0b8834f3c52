"""The MNIST smoothing tracks run again, for what their records predate: the smallest radius the judge accepted
(`judged_best_radius`), which `best` and r50 under the certification-aware-attack paper's rule need. A re-run is
read only where its config gives the track's protocol hash and its attacks the track's attack specs; the tables
say how far its strict verdicts and radii lie from the track's."""

from __future__ import annotations

import json
from pathlib import Path

from paper_format import best_shares, judged_radius, median_estimates, percent, run_configs, share, strict_radius, text

from rsbench.errors import RsbenchError
from rsbench.leaderboard import track_files
from rsbench.records import RunConfig

REPOSITORY = Path(__file__).resolve().parents[1]
RUNS = REPOSITORY / "benchmarks" / "results" / "paper-rule-mnist"
"""Runs of the MNIST smoothing tracks' protocol, seed and attack specs again, whose records carry the judged radii
that the tracks' records predate: Tables 1 and 4 read the paper-rule best and r50 from them."""
COMMAND = ("rsbench evaluate --defense D --attack caa --attack pgd --attack deepfool "
           "--num-samples 100 --n 10000 --seed 0 --save-examples --judge-n 1500 --confirm-n 15000 "
           "--out benchmarks/results/paper-rule-mnist/evasion-D")


def rerun(runs: Path, board: track_files.Leaderboard) -> tuple[str, dict[str, list]] | None:
    """A run under `runs` of the track's protocol (its hash again from the run's config) with the track's attack
    specs, as its folder and rsbench commit and its records by attack; None when there is none."""
    hashes = {e.name: e.attack_hash for e in board.entries}
    for config, samples in run_configs(runs, board.defense.name, "evasion"):
        protocol = track_files.Protocol.of_run(RunConfig.model_validate(config), board.defense.kind)
        if protocol.spec_hash() == board.protocol_hash and all(
                hashes.get(a) == h for a, h in zip(config["attacks"], config["attack_hashes"], strict=True)):
            try:
                commit = json.loads((samples.parent / "result.json").read_text())["environment"]["git_commit"]
            except (OSError, ValueError, KeyError, TypeError):
                raise RsbenchError(f"{samples.parent}: no result.json naming the rsbench commit that ran it; an "
                                   "unfinished run is not read") from None
            records: dict[str, list] = {}
            for record in track_files.parse_jsonl(samples.read_bytes(), track_files.record_type("evasion")):
                records.setdefault(record.attack, []).append(record)
            if set(records) - set(config["attacks"]) or any(
                    len({r.index for r in rows}) != len(rows) for rows in records.values()):
                raise RsbenchError(f"{samples}: not one record per attacked sample of the attacks its config.json "
                                   f"names ({', '.join(config['attacks'])})")
            folder = samples.parent.resolve()
            shown = folder.relative_to(REPOSITORY) if folder.is_relative_to(REPOSITORY) else folder
            return f"{shown}, rsbench {commit[:7]}", records
    return None


def rerun_rows(attack: str, records: dict[str, list], names: list[str]) -> list[str]:
    """An attack's success, best (among `names`) and r50 in a re-run under both rules, from the same records."""
    rows = records[attack]
    lines = []
    for rule, radius in (("paper", judged_radius), ("strict", strict_radius)):
        hits = sum(radius(r) is not None for r in rows)
        best = best_shares(records, names, radius).get(attack)
        r50 = text(median_estimates(rows, {"r50": radius})["r50"])
        lines.append(f"  {attack + ' (re-run)':<20}{rule:<10}{share(hits, len(rows)).split(' (')[0]:>20}"
                     f"{percent(best):>20}{r50:>20}")
    return lines


def agreement(track_records: dict[str, list], again: dict[str, list], names: list[str]) -> str:
    """Per attack, on how many samples a re-run's strict verdict (success or not) differs from the track's (a sample
    one of them lacks differs), and how far apart the smallest radii lie where both succeed (floating point: the
    re-run may have run on another CPU)."""
    parts = []
    for name in names:
        mine = {r.index: strict_radius(r) for r in track_records[name]}
        theirs = {r.index: strict_radius(r) for r in again.get(name, [])}
        differ = sum(i not in theirs or (mine[i] is None) != (theirs[i] is None) for i in mine) + len(
            theirs.keys() - mine.keys())
        gaps = [abs(mine[i] - theirs[i]) for i in mine if mine[i] is not None and theirs.get(i) is not None]
        verdicts = f"the same on all {len(mine)} samples" if not differ else f"differs on {differ} of {len(mine)}"
        parts.append(f"{name} success {verdicts}" + (f", radii within {max(gaps):.1g}" if gaps else ""))
    return ", ".join(parts)
