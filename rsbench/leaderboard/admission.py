"""Admitting a finished run to its track: what is refused, and how entries are written.

`add_run` turns every attack of an `rsbench evaluate` run into an entry of the track its protocol
names, or refuses the whole run with one line: another protocol than the track's newest version,
stored records that no longer match their hash, clean certificates that differ from the track's,
an entry already on the track, or a success that does not rest on a confirmed, saved example.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from rsbench.errors import RsbenchError
from rsbench.leaderboard.scoring import comparison, entry_metrics
from rsbench.leaderboard.track_files import (
    Entry,
    Judging,
    Leaderboard,
    Protocol,
    Source,
    StoredFile,
    files,
    jsonl,
    latest,
    load,
    parse_jsonl,
    record_type,
    save,
    stored_records,
    track_name,
    write_stored,
)
from rsbench.records import Environment, RunResult, SampleRecord
from rsbench.specs import AttackSpec, DefenseSpec


def unconfirmed(protocol: Protocol, defense: DefenseSpec, records: Sequence[Any], examples: dict | None,
                require_examples: bool = True) -> str | None:
    """Why some success of the records does not rest on a confirmed (and, when required, saved) example; None
    when all do."""
    saved = {} if examples is None else {i: k for k, i in enumerate(examples["index"].tolist())}
    for r in records:
        if not r.success:
            continue
        where = f"record of {r.attack} on sample {r.index}"
        if protocol.goal == "evasion" and defense.kind == "smoothing" and (
                r.confirm_n != protocol.confirm_n or r.judge_n != protocol.judge_n or r.candidates - r.rejected < 1):
            return f"{where}: its example was not confirmed on the protocol's {protocol.confirm_n} fresh copies"
        if protocol.goal == "degradation" and not r.judged:
            return f"{where}: a success the in-loop check never saw"
        if protocol.goal == "spoofing":
            wrong = r.adv_prediction is not None and r.adv_prediction != r.label
            if not wrong or r.adv_radius < (r.epsilon or 0.0):
                return f"{where}: a success the harness's certificate does not support"
        if r.index not in saved:
            if not require_examples:
                continue
            return f"{where}: its example is not among the saved examples"
        if protocol.goal != "spoofing":
            row = saved[r.index]
            delta = (examples["x_adv"][row] - examples["x"][row]).flatten()
            distance = float(delta.norm() if defense.norm == "l2" else delta.abs().max())
            claimed = r.best_radius if protocol.goal == "evasion" else r.distance
            if not math.isclose(distance, claimed, rel_tol=1e-3, abs_tol=1e-5):
                return f"{where}: the saved example lies at {distance:.4f}, the record claims {claimed:.4f}"
    return None


def _read_run(run_dir: Path) -> tuple[RunResult, list[SampleRecord], list]:
    try:
        result = RunResult.model_validate_json((run_dir / "result.json").read_text())
        clean = parse_jsonl((run_dir / "clean.jsonl").read_bytes(), SampleRecord)
        records = parse_jsonl((run_dir / "samples.jsonl").read_bytes(), record_type(result.config.goal))
    except (OSError, ValidationError) as error:
        raise RsbenchError(f"{run_dir} is not a finished evaluate run ({error.__class__.__name__})") from None
    keep = result.config.num_samples
    return result, sorted((c for c in clean if c.index < keep), key=lambda c: c.index), [r for r in records if r.index < keep]


def _examples(path: Path) -> dict | None:
    return torch.load(path, weights_only=True) if path.exists() else None


def _torch_bytes(examples: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(examples, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class NewEntry:
    """An entry about to be added: the attack, its judged records and examples, and where they come from."""

    spec: AttackSpec
    records: list
    examples: dict | None
    source: Source
    environment: Environment
    weights_sha256: str | None
    date: str
    seed: int
    """Master seed of the run that produced the records."""
    judging: Judging | None = None
    self_reported: list[str] = field(default_factory=list)


def add_run(root: Path, run_dir: Path, source: Source = Source(kind="registry"), *,
            new_version: bool = False, preview: bool = False) -> tuple[Path, list[str]]:
    """Add every attack of a finished run as an entry of its track; nothing is written unless all are accepted.

    Refused with one line: a protocol differing from the track's newest version (unless `new_version`),
    stored records not matching their hash, clean certificates differing from the track's, an entry
    already on the track, a success without a confirmed, saved example, a run in which no sample was
    attacked (an entry would measure nothing). `preview` (evaluate's table, in a scratch folder) lets
    the last two pass: runs made without --save-examples, or with nothing to attack, are shown too.
    """
    result, clean, records = _read_run(run_dir)
    if result.defense.weights.source == "memory" and not preview:
        raise RsbenchError(f"{run_dir}: {result.defense.name} was built in Python (weights: a model object, state dict "
                           f"sha256 {result.defense.weights.sha256[:12]}…); register it with pinned weights and run "
                           "the track's protocol on the registered defense; refused")
    if not records and not preview:
        raise RsbenchError(f"{run_dir}: none of its {len(clean)} samples was attacked (none is correct and certified "
                           "where the goal needs it), so an entry would measure nothing; refused")
    protocol = Protocol.of_run(result.config, result.defense.kind)
    track = track_name(protocol)
    path = latest(root, track)
    board = load(path) if path else None
    if board is not None and board.protocol_hash != protocol.spec_hash():
        changed = [k for k in Protocol.model_fields if getattr(board.protocol, k) != getattr(protocol, k)]
        if not new_version:
            raise RsbenchError(f"the run's protocol hash {protocol.spec_hash()[:12]} differs from {track} "
                               f"v{board.version}'s {board.protocol_hash[:12]} ({', '.join(changed)} changed); "
                               f"follow its protocol or pass --new-version")
        earlier = [q for q in files(root) if q.parent.name == track and load(q).protocol_hash == protocol.spec_hash()]
        if earlier:
            raise RsbenchError(f"the run's protocol is that of {track} {earlier[0].stem}, which v{board.version} "
                               "supersedes; new entries go to the newest version only")
        path, board = None, None
    if board is None:
        version = 1 + max((int(p.stem[1:]) for p in files(root) if p.parent.name == track), default=0)
        path = root / track / f"v{version}.json"
        board = Leaderboard(track=track, version=version, defense=result.defense, protocol=protocol,
                            protocol_hash=protocol.spec_hash(), clean=StoredFile(path="", sha256=""))
    assert path is not None
    if board.clean.path:
        stored_clean, _ = stored_records(path.parent, board)
        if [(c.index, c.prediction, c.correct) for c in stored_clean] != [(c.index, c.prediction, c.correct) for c in clean]:
            raise RsbenchError(f"the run's clean certificates differ from those of {track} v{board.version}")
    new = []
    for spec in result.attacks:
        mine = [r for r in records if r.attack == spec.name]
        examples = _examples(run_dir / "adversarial" / f"{spec.name}.pt")
        reason = unconfirmed(protocol, result.defense, mine, examples, require_examples=not preview)
        if reason:
            raise RsbenchError(f"{run_dir}: {reason}; refused")
        new.append(NewEntry(spec, mine, examples, source, result.environment, result.weights_sha256,
                            result.finished_at, protocol.seed))
    return admit(path, board, clean, new), [spec.name for spec in result.attacks]


def admit(path: Path, board: Leaderboard, clean: list[SampleRecord], new: Sequence[NewEntry]) -> Path:
    """Write `new` entries to the track version at `path` (whose clean certificates are `clean`), recompute
    `comparison`, and save; refused with one line, before anything is written, when an entry's name or spec is
    already on the track or a success does not rest on a confirmed, saved example."""
    stored = stored_records(path.parent, board)[1] if board.clean.path else {}
    for item in new:
        if item.spec.name in stored or any(e.attack_hash == item.spec.spec_hash() for e in board.entries):
            raise RsbenchError(f"{board.track} v{board.version} already has an entry for {item.spec.name!r} (or its spec)")
        stored[item.spec.name] = item.records
    folder = path.parent / path.stem
    if not board.clean.path:
        board = board.model_copy(update={"clean": write_stored(folder.parent, f"{folder.name}/clean.jsonl.gz",
                                                               jsonl(clean))})
    entries = []
    for item in new:
        name = item.spec.name
        records_file = write_stored(folder.parent, f"{folder.name}/{name}.records.jsonl.gz", jsonl(item.records))
        examples_file = (write_stored(folder.parent, f"{folder.name}/{name}.examples.pt.gz", _torch_bytes(item.examples))
                         if item.examples is not None else None)
        entries.append(Entry(
            name=name, attack=item.spec, attack_hash=item.spec.spec_hash(), source=item.source,
            metrics=entry_metrics(board, name, clean, item.records), attacked=len(item.records), samples=len(clean),
            seed=item.seed, bootstrap_seed=board.protocol.bootstrap_seed, environment=item.environment,
            weights_sha256=item.weights_sha256, date=item.date, records=records_file, examples=examples_file,
            judging=item.judging, self_reported=item.self_reported,
        ))
    board = board.model_copy(update={"entries": [*board.entries, *entries]})
    board = board.model_copy(update={"comparison": comparison(board, clean, stored)})
    save(path, board)
    return path
