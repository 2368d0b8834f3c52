"""Auditing leaderboards: every file re-derived, history kept, new entries judged again on secret noise.

`check` is what CI runs on every pull request. Each file validates; its protocol and specs match their
hashes; its stored records and examples match their sha256; every entry's metrics and intervals and the
whole `comparison` block are recomputed from the records; no two versions of a track share a protocol.
Against a git revision (which must resolve), no file, protocol, clean certificate or entry there may be
changed or removed, and every entry new since then is derived again: it goes to its track's newest
version; a registry entry has a registry attack's spec; a submission entry the content hash of the
submission folder it names; a defense submission's entry a registry attack's spec, the content hash of
the defense's folder, and records that running its attack again with its seeds reproduces
(`defense_tracks.replay`); its records are one per attacked sample, with the dataset's labels, x and
distances and the clean certificates of the track (recertified for a new track version); and every stored
example of a success is judged again (`verdicts.upheld`) on noise from a seed drawn now; no example of a
submitted attack equals another entry's, or lies on the segment from x to one (`provenance.borrowed`). In a pull
request,
a new registry entry is run again with its seed and its records compared, a new track version takes its goal's
standard protocol (`provenance`), the rendered tables must be what rendering the track files gives
(`rendered`), and no track's exact run may change (`exact_runs`, which also re-checks every exact run's
examples, in and out of a pull request). A graph defense is derived with rsbench's own code on its graph; a track
whose defense names code of its own (a self-certified plugin) is derived with that code served from its
submission folder, in the sandbox (`defense_tracks.serving`), never in this process, and its certificates are
audited again on its graph.
`verify` re-judges a track's stored examples the same way, with a fresh seed or one to replay.
"""

from __future__ import annotations

import io
import math
import secrets
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from rsbench import registry, runner
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.errors import RsbenchError
from rsbench.gate import exact_runs, maintained, provenance, rendered
from rsbench.leaderboard import rederive, verdicts
from rsbench.leaderboard.scoring import comparison, entry_metrics, point_metrics
from rsbench.leaderboard.track_files import (
    LEADERBOARD_SCHEMA_VERSION,
    Entry,
    Judging,
    Leaderboard,
    files,
    load,
    read_stored,
    stored_records,
    track_name,
)
from rsbench.leaderboard.verdicts import upheld
from rsbench.progress import each
from rsbench.submissions import defense_tracks
from rsbench.submissions.defense_submissions import check_soundness, located
from rsbench.submissions.submission_spec import content_sha256


@dataclass
class Verification:
    """A re-judging: the seed its noise came from (so anyone can replay it), when and by which rsbench, and per
    `track vN entry`, (stored successes upheld, stored successes re-judged)."""

    judging: Judging
    agreement: dict[str, tuple[int, int]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        j = self.judging
        head = (f"verification seed {j.seed} ({j.date}, rsbench {j.rsbench_version}"
                + (f" at {j.git_commit[:12]}" if j.git_commit else "") + ")")
        return [head, *(f"  {name:<48} {a}/{t} stored successes upheld" for name, (a, t) in self.agreement.items())]

    def refuted(self) -> list[str]:
        return [name for name, (agree, total) in self.agreement.items() if agree != total]


def judging(seed: int | None = None) -> Judging:
    """A judging on noise from `seed`, or from a seed drawn from the operating system now."""
    environment = runner.environment(torch.device("cpu"))
    return Judging(seed=secrets.randbits(63) if seed is None else seed,
                   date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   rsbench_version=environment.rsbench_version, git_commit=environment.git_commit)


def check_file(path: Path, intervals: bool = True) -> Leaderboard:
    """One file: schema, names, hashes of the protocol, specs and stored files, and every metric recomputed from
    the records; with `intervals`, every bootstrap interval and the whole comparison block too."""
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
    if not board.entries:
        return board
    clean, records = stored_records(path.parent, board)
    for entry in board.entries:
        if entry.attack_hash != entry.attack.spec_hash():
            raise RsbenchError(f"{path}: entry {entry.name}'s attack spec does not match its hash")
        if entry.examples is not None:
            read_stored(path.parent, entry.examples)
        if entry.attacked != len(records[entry.name]) or entry.samples != len(clean):
            raise RsbenchError(f"{path}: entry {entry.name}'s sample counts are not what its records give")
        if intervals:
            fresh = entry_metrics(board, entry.name, clean, records[entry.name])
            same = fresh.keys() == entry.metrics.keys() and all(
                _same(fresh[k].value, v.value) and _same(fresh[k].ci_low, v.ci_low) and _same(fresh[k].ci_high, v.ci_high)
                for k, v in entry.metrics.items())
        else:
            points = point_metrics(board, entry.name, clean, records[entry.name])
            same = points.keys() == entry.metrics.keys() and all(_same(entry.metrics[k].value, v) for k, v in points.items())
        if not same:
            raise RsbenchError(f"{path}: entry {entry.name}'s metrics are not what its records give")
    if intervals and board.comparison != comparison(board, clean, records):
        raise RsbenchError(f"{path}: its comparison block (best, paired) is not what the records give")
    return board


def _same(a: float | None, b: float | None) -> bool:
    return a is None and b is None or a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def in_git(root: Path) -> bool:
    """Whether root lies in a git checkout."""
    return _git(root, "rev-parse", "--show-toplevel") is not None


@dataclass
class Checked:
    """What `check` looked at: the files, the entries new since the revision, and their re-judging."""

    files: list[Path]
    new: list[str] = field(default_factory=list)
    verification: Verification | None = None
    exact_unchecked: list[str] = field(default_factory=list)
    """Tracks whose exact run this machine could not re-check (data or weights absent), with what is missing."""


def check(root: Path, against: str | None = None, *, intervals: bool = True, seed: int | None = None,
          pull_request: bool = False, submissions: Path | None = None) -> Checked:
    """Check every file under root and, against git revision `against`, the history and every new entry.

    `pull_request` refuses new submission entries (the trusted job adds those after merge), any change to the
    folders maintainers write (the tracks' exact runs, the stored benchmark runs: `maintained`), a new track version
    whose protocol is not its goal's standard one (`provenance.standard`) and rendered tables that are not what the
    track files give (`rendered.check`), and runs every new registry entry again; `submissions` is
    the folder of submission folders (default: beside root); `seed` replays a re-judging.
    """
    paths = files(root)
    boards = {p.resolve(): check_file(p, intervals) for p in each(paths, "check", "file")}
    hashes: dict[str, set[str]] = {}
    for board in boards.values():
        if board.protocol_hash in hashes.setdefault(board.track, set()):
            raise RsbenchError(f"{board.track}: two versions share one protocol; a new version is a new protocol")
        hashes[board.track].add(board.protocol_hash)
    unchecked = exact_runs.check(root)
    if against is None:
        return Checked(paths, exact_unchecked=unchecked)
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or _git(root, "rev-parse", "--verify", "--quiet", f"{against}^{{commit}}") is None:
        raise RsbenchError(f"--against {against!r} does not resolve to a commit in the git checkout of {root}")
    base = Path(top.strip())
    submissions = submissions or root.parent / "submissions"
    where = exact_runs.checkout_path(root, base)  # a link named as the link, not as where it points
    listed = _git(base, "ls-tree", "-r", "--name-only", against, "--", where) or ""
    if pull_request:
        exact_runs.unchanged(root, base, against, _git(base, "ls-tree", "-r", against, "--", where) or "")
        maintained.benchmark_runs(base, against,
                                  _git(base, "ls-tree", "-r", against, "--", maintained.BENCHMARK_RUNS) or "")
    old_files = {(base / name).resolve(): name for name in listed.splitlines() if _is_board(name)}
    new: list[tuple[Path, Leaderboard, Entry]] = []
    certified: list[Path] = []  # track versions whose clean certificates are new: certified again below
    for path, name in old_files.items():
        if path not in boards:
            raise RsbenchError(f"{name}: removed since {against}; leaderboard files are never deleted")
        old = Leaderboard.model_validate_json(_git(base, "show", f"{against}:{name}") or "{}")
        now = boards[path]
        fixed = ("track", "version", "defense", "protocol", "protocol_hash", *(("clean",) if old.clean.path else ()))
        if any(getattr(old, k) != getattr(now, k) for k in fixed):
            raise RsbenchError(f"{name}: its protocol, defense or clean certificates changed since {against}; "
                               "a new protocol is a new version")
        if now.entries[:len(old.entries)] != old.entries:
            raise RsbenchError(f"{name}: an entry changed or was removed since {against}")
        unchanged_defense(name, old, submissions)
        if not old.clean.path:  # a track file written with its protocol only: its first entry set its samples
            certified.append(path)
        new += [(path, now, e) for e in now.entries[len(old.entries):]]
    for path, board in boards.items():
        if path not in old_files:
            certified.append(path)
            new += [(path, board, e) for e in board.entries]
    newest = {b.track: max(o.version for o in boards.values() if o.track == b.track) for b in boards.values()}
    for path, board, entry in new:
        where = f"{board.track} v{board.version} entry {entry.name}"
        if board.version != newest[board.track]:
            raise RsbenchError(f"{where}: new entries go to the track's newest version, v{newest[board.track]}")
        check_source(where, board, entry, submissions, pull_request)
    if pull_request:
        for path in boards.keys() - old_files.keys():
            provenance.standard(f"{boards[path].track} v{boards[path].version}", boards[path])
        rendered.check(root, submissions)
    derived = {path: boards[path] for path in [*certified, *(path for path, _, _ in new)]}
    derived = {path: board.model_copy(update={"defense": located(board.defense, submissions)})
               for path, board in derived.items()}
    verification = Verification(judging(seed))
    with defense_tracks.serving([b.defense for b in derived.values()], root, defense_tracks.CHECK_TIMEOUT):
        for path in certified:
            recertify(path, derived[path])
        for path, _, entry in each(new, "re-judge", "entry"):
            board = derived[path]
            agreement = rederive_entry(path, board, entry, verification.judging.seed, pull_request)
            verification.agreement[f"{board.track} v{board.version} {entry.name}"] = agreement
    refuted = verification.refuted()
    if refuted:
        raise RsbenchError(f"fresh noise refutes stored successes of {', '.join(refuted)} (verification seed "
                           f"{verification.judging.seed}; replay with --seed)")
    return Checked(paths, [f"{b.track} v{b.version} {e.name}" for _, b, e in new], verification, unchecked)


def unchanged_defense(name: str, board: Leaderboard, submissions: Path) -> None:
    """A track's submitted defense stays as its tracks ran it: its code in the submission folder that holds its
    spec, and that folder exactly as the trusted job's entries record it (a changed defense has a new name)."""
    located(board.defense, submissions)
    recorded = {e.source.content_sha256 for e in board.entries if e.source.kind == "defense-submission"}
    folder = submissions / "defenses" / board.defense.name
    if recorded and (not folder.is_dir() or recorded != {content_sha256(folder)}):
        raise RsbenchError(f"{name}: {folder} is not the folder its entries were made from; a submitted defense's "
                           "folder never changes (a changed defense is submitted under a new name)")


def _is_board(name: str) -> bool:
    parts = name.rsplit("/", 1)[-1]
    return parts.startswith("v") and parts.endswith(".json") and parts[1:-5].isdigit()


def check_source(where: str, board: Leaderboard, entry: Entry, submissions: Path, pull_request: bool) -> None:
    """A new entry comes from where it says: a registry attack's spec; the submission folder it names, unchanged
    since it ran; or, on a submitted defense, a registry attack's spec and the defense's folder, unchanged since
    it ran. Never, in a pull request, a submission's entry: the trusted job adds those."""
    source = entry.source
    if source.kind != "submission":
        known = entry.name in registry.names("attacks") and registry.get_attack(entry.name).spec_hash()
        if known != entry.attack_hash:
            raise RsbenchError(f"{where}: comes from the registry, but no registry attack has its spec")
        if source.kind == "registry":
            return
    if pull_request:
        raise RsbenchError(f"{where}: submission entries are added by the trusted job once the submission is merged; "
                           "a pull request carries the submission folder only")
    if source.kind == "defense-submission":
        folder = submissions / "defenses" / (source.submission or "")
        if source.submission != board.defense.name or not folder.is_dir() or \
                source.content_sha256 != content_sha256(folder):
            raise RsbenchError(f"{where}: no defense submission folder {folder} with the content hash the entry "
                               "records")
        if located(board.defense, submissions)._folder != folder.resolve():
            raise RsbenchError(f"{where}: the track's defense is not the one {folder} holds")
        if entry.judging is None or entry.self_reported:
            raise RsbenchError(f"{where}: an entry of the trusted job records how rsbench judged it, and nothing "
                               "self-reported")
        return
    folder = submissions / (source.submission or "")
    if source.submission != entry.name or not folder.is_dir() or source.content_sha256 != content_sha256(folder):
        raise RsbenchError(f"{where}: no submission folder {folder} with the content hash the entry records")
    if entry.judging is None or entry.self_reported != rederive.SELF_REPORTED[board.protocol.goal]:
        raise RsbenchError(f"{where}: a submission entry records how rsbench judged it and what is self-reported")


def recertify(path: Path, board: Leaderboard) -> None:
    """A new track version's clean certificates, certified again with the protocol's seed: the same labels and
    predictions, radii within `rederive.RADIUS_TOLERANCE` (another device may count a vote or two differently); a
    self-certified defense's certificates then audited on its graph (`defense_submissions.check_soundness`)."""
    if not board.clean.path:
        return
    clean = stored_records(path.parent, board)[0]
    defense = load_defense(runner.spec_for_run(board.defense, board.protocol.run_config([])))
    dataset = load_dataset(board.defense.dataset.name, board.protocol.split, board.defense.dataset.root)
    if [c.index for c in clean] != list(range(board.protocol.num_samples)):
        raise RsbenchError(f"{path}: its clean certificates are not one per sample of the protocol")
    samples = [(dataset[c.index][0], int(dataset[c.index][1]), c.index) for c in clean]
    again = runner.certify_samples(defense, samples, board.protocol.seed, defense.device)
    for stored, fresh in zip(clean, again):
        if (stored.label, stored.prediction, stored.correct) != (fresh.label, fresh.prediction, fresh.correct) or \
                not math.isclose(stored.radius, fresh.radius, **rederive.RADIUS_TOLERANCE):
            raise RsbenchError(f"{path}: sample {stored.index}'s clean certificate is not what certifying it gives")
    if board.defense.kind == "plugin":  # self-certified: its certificates are audited again, never taken
        check_soundness(board.defense, samples=board.protocol.num_samples, seed=secrets.randbits(63))


def rederive_entry(path: Path, board: Leaderboard, entry: Entry, seed: int,
                   pull_request: bool = False) -> tuple[int, int]:
    """A new entry's records checked against the dataset and its examples (`rederive.check_entry`); a submitted
    attack's examples against every other entry's (`provenance.borrowed`: it could ship them in its folder); a
    defense submission's and, in a pull request, a registry entry's records against running its attack again;
    then every stored success judged again on noise of `seed`: (upheld, re-judged)."""
    where = f"{board.track} v{board.version} entry {entry.name}"
    defense = load_defense(runner.spec_for_run(board.defense, board.protocol.run_config([])))
    dataset = load_dataset(board.defense.dataset.name, board.protocol.split, board.defense.dataset.root)
    clean, records = stored_records(path.parent, board)
    examples = _examples(path, entry)
    rederive.check_entry(board, defense, dataset, clean, entry.name, records[entry.name], examples)
    if examples is not None and entry.source.kind == "submission":  # the others are run again (in a pull request)
        others = {e.name: _examples(path, e) for e in board.entries if e.name != entry.name}
        provenance.borrowed(where, examples, {name: kept for name, kept in others.items() if kept is not None})
    if entry.source.kind == "defense-submission":
        defense_tracks.replay(board, entry, clean, records[entry.name])
    elif entry.source.kind == "registry" and pull_request:
        provenance.rerun(where, board, entry, clean, records[entry.name])
    return rejudge(board, defense, entry.name, records[entry.name], examples, seed)


def _examples(path: Path, entry: Entry) -> dict | None:
    if entry.examples is None:
        return None
    return torch.load(io.BytesIO(read_stored(path.parent, entry.examples)), weights_only=True)


def rejudge(board: Leaderboard, defense, name: str, records: list, examples: dict | None, seed: int,
            as_admitted: bool = False) -> tuple[int, int]:
    """(stored successes upheld, stored successes re-judged), each on its own stream of `seed`. `as_admitted`
    replays a submission's judging instead: the admission rule on the streams it used, for every stored example."""
    if examples is None:
        return 0, 0
    by_index = {r.index: r for r in records}
    agree = total = 0
    for row, index in enumerate(examples["index"].tolist()):
        record = by_index[index]
        x, x_adv = examples["x"][row], examples["x_adv"][row]
        if as_admitted:
            purpose = "certify" if board.protocol.goal == "spoofing" else "confirm"
            noise = runner.stream(seed, index, name, purpose, defense.device)
            agree += verdicts.admitted(board, defense, record.label, x, x_adv, noise) == record.success
            total += 1
        elif record.success:
            agree += upheld(board, defense, record, x, x_adv, runner.stream(seed, index, name, "verify", defense.device))
            total += 1
    return agree, total


def verify(path: Path, entry: str | None = None, device: torch.device = torch.device("cpu"), seed: int | None = None,
           as_admitted: bool = False, submissions: Path | None = None) -> Verification:
    """Re-judge every stored success of the track (or of one entry) on noise of `seed` (default: drawn now); a
    defense with code of its own is served from its folder in `submissions` (default: beside the leaderboards)."""
    board = check_file(path, intervals=False)
    spec = located(board.defense, submissions or path.resolve().parents[2] / "submissions")
    with defense_tracks.serving([spec], path.parents[1], defense_tracks.CHECK_TIMEOUT):
        return _verify(path, board.model_copy(update={"defense": spec}), entry, device, seed, as_admitted)


def _verify(path: Path, board: Leaderboard, entry: str | None, device: torch.device, seed: int | None,
            as_admitted: bool) -> Verification:
    defense = load_defense(runner.spec_for_run(board.defense, board.protocol.run_config([])), device)
    _, records = stored_records(path.parent, board)
    chosen = [e for e in board.entries if entry in (None, e.name)]
    if not chosen:
        raise RsbenchError(f"{board.track} has no entry {entry!r}; entries: {', '.join(e.name for e in board.entries)}")
    if as_admitted and (len(chosen) != 1 or chosen[0].judging is None or seed is None):
        raise RsbenchError("--as-admitted replays one submission entry's judging: give --entry and its judging's --seed")
    verification = Verification(judging(seed))
    for e in each(chosen, f"verify {board.track}", "entry"):
        verification.agreement[e.name] = rejudge(board, defense, e.name, records[e.name], _examples(path, e),
                                                 verification.judging.seed, as_admitted)
    return verification
