"""Auditing leaderboards: every file and hash checked, history kept, stored examples judged again.

`check` is what CI runs on every pull request: each file validates, its protocol and specs
match their hashes, its stored records and examples match their sha256, its metrics are what
the records give, and against git history no file, protocol or entry was changed or removed.
`verify` re-executes the claims, as VNN-COMP re-executes counterexamples: every stored example
is judged again on noise no one has used (smoothing) or by the exact certifier.
"""

from __future__ import annotations

import io
import math
import re
import subprocess
from pathlib import Path

import torch

from rsbench.attacks.success import is_adversarial
from rsbench.defenses import load_defense
from rsbench.defenses.base import Defense
from rsbench.errors import RsbenchError
from rsbench.goals import within
from rsbench.goals.degradation import judged_rejection
from rsbench.goals.evasion import judge_view
from rsbench.leaderboard import (
    LEADERBOARD_SCHEMA_VERSION,
    Leaderboard,
    files,
    load,
    point_metrics,
    read_stored,
    stored_records,
    track_name,
)
from rsbench.runner import spec_for_run, stream


def check_file(path: Path) -> Leaderboard:
    """One file: schema, names, hashes of the protocol, specs and stored files, metrics recomputed from records."""
    board = load(path)
    if board.schema_version != LEADERBOARD_SCHEMA_VERSION:
        raise RsbenchError(f"{path}: schema version {board.schema_version}, expected {LEADERBOARD_SCHEMA_VERSION}")
    if path.parent.name != board.track or path.stem != f"v{board.version}" or board.track != track_name(board.protocol):
        raise RsbenchError(f"{path}: holds track {board.track} v{board.version}, not what its path says")
    if board.protocol_hash != board.protocol.spec_hash() or board.defense.spec_hash() != board.protocol.defense_hash:
        raise RsbenchError(f"{path}: the protocol or defense does not match its hash")
    names = [e.name for e in board.entries]
    if len(set(names)) != len(names):
        raise RsbenchError(f"{path}: an entry appears twice")
    clean, records = stored_records(path.parent, board)
    for entry in board.entries:
        if entry.attack_hash != entry.attack.spec_hash():
            raise RsbenchError(f"{path}: entry {entry.name}'s attack spec does not match its hash")
        if entry.examples is not None:
            read_stored(path.parent, entry.examples)
        for key, value in point_metrics(board, entry.name, clean, records[entry.name]).items():
            kept = entry.metrics.get(key)
            if kept is None or not _same(kept.value, value):
                raise RsbenchError(f"{path}: entry {entry.name}'s {key} is not what its records give")
    return board


def _same(a: float | None, b: float | None) -> bool:
    return a is None and b is None or a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def check(root: Path, against: str = "HEAD") -> list[Path]:
    """Check every file under root; in a git checkout also that no file or entry at `against` was removed or changed."""
    checked = [p for p in files(root)]
    boards = {p.resolve(): check_file(p) for p in checked}
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or _git(root, "rev-parse", "--verify", "--quiet", against) is None:
        return checked
    base = Path(top.strip())
    listed = _git(base, "ls-tree", "-r", "--name-only", against, "--", str(root.resolve().relative_to(base))) or ""
    for name in listed.splitlines():
        if not re.fullmatch(r".*/v\d+\.json", name):
            continue
        path = (base / name).resolve()
        if path not in boards:
            raise RsbenchError(f"{name}: removed since {against}; leaderboard files are never deleted")
        old = Leaderboard.model_validate_json(_git(base, "show", f"{against}:{name}") or "{}")
        now = {e.name: e for e in boards[path].entries}
        if old.protocol_hash != boards[path].protocol_hash:
            raise RsbenchError(f"{name}: its protocol changed since {against}; a new protocol is a new version")
        for entry in old.entries:
            if now.get(entry.name) != entry:
                raise RsbenchError(f"{name}: entry {entry.name} changed or was removed since {against}")
    return checked


def verify(path: Path, entry: str | None = None, device: torch.device = torch.device("cpu"),
           purpose: str = "verify") -> dict[str, tuple[int, int]]:
    """Re-judge every stored example on fresh noise (smoothing) or with the exact certifier; per entry,
    (examples whose verdict agrees with the record, examples re-judged)."""
    board = check_file(path)
    protocol = board.protocol
    config = protocol.run_config([])
    defense = load_defense(spec_for_run(board.defense, config), device)
    _, records = stored_records(path.parent, board)
    chosen = [e for e in board.entries if entry in (None, e.name)]
    if not chosen:
        raise RsbenchError(f"{board.track} has no entry {entry!r}; entries: {', '.join(e.name for e in board.entries)}")
    agreement: dict[str, tuple[int, int]] = {}
    for e in chosen:
        examples = None if e.examples is None else torch.load(io.BytesIO(read_stored(path.parent, e.examples)),
                                                               weights_only=True)
        agreement[e.name] = rejudge(board, defense, e.name, records[e.name], examples, purpose)
    return agreement


def rejudge(board: Leaderboard, defense: Defense, name: str, records: list, examples: dict | None,
            purpose: str = "verify") -> tuple[int, int]:
    """(saved examples judged as their records say, saved examples), each on its own fresh `purpose` stream."""
    if examples is None:
        return 0, 0
    by_index = {r.index: r for r in records}
    agree = 0
    for row, index in enumerate(examples["index"].tolist()):
        noise = stream(board.protocol.seed, index, name, purpose, defense.device)
        verdict = judges_success(board, defense, by_index[index].label, examples["x"][row], examples["x_adv"][row], noise)
        agree += verdict == by_index[index].success
    return agree, len(examples["index"])


def judges_success(board: Leaderboard, defense: Defense, label: int, x: torch.Tensor, x_adv: torch.Tensor,
                   noise: torch.Generator) -> bool:
    """Whether an example achieves the track's goal, judged as the protocol says on the noise of `noise`.

    Evasion of smoothing: the judge's test on confirm_n fresh copies; of GloRo, KW and CROWN-IBP: the network's label
    within epsilon inside [0, 1]; degradation: the defense's check rejects within epsilon (smoothing: with
    confidence, on confirm_n fresh copies); spoofing: the defense certifies a wrong label (at epsilon for
    GloRo, KW and CROWN-IBP).
    """
    protocol, spec = board.protocol, board.defense
    x, x_adv = x.to(defense.device), x_adv.to(defense.device)
    delta = (x_adv - x).flatten()
    inside = 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    distance = float(delta.norm() if spec.norm == "l2" else delta.abs().max())
    in_ball = protocol.epsilon is None or inside and within(distance, protocol.epsilon)
    if protocol.goal == "evasion" and spec.kind == "smoothing":
        view = judge_view(defense, protocol.run_config([]))
        return is_adversarial(view.hard_counts(x_adv, noise, protocol.confirm_n), label, protocol.judge_alpha)
    if protocol.goal == "evasion":
        with torch.no_grad():
            return in_ball and int(defense.model(x_adv[None]).argmax(1)) != label
    if protocol.goal == "degradation":
        return in_ball and judged_rejection(defense, x_adv, protocol.epsilon, noise, protocol.confirm_n,
                                            protocol.judge_alpha)
    certificate = defense.certify(x_adv, generator=noise)
    eps = 0.0 if spec.kind == "smoothing" else protocol.epsilon or 0.0
    return certificate.prediction is not None and certificate.prediction != label and certificate.radius >= eps
