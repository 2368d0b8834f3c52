"""A submitted defense validated, attacked by the standard suite of each goal, and given its tracks.

`validate` loads the folder (`defense_submissions.load`: schema, names, files, the graph; no code
runs) and, on the graph in rsbench's own process (a self-certified plugin's certifier served from its
sandbox, `defense_server.served`), certifies the track's samples again (claims outside their 95%
intervals refused) and runs the soundness checks on noise drawn from the operating system. `verify` does the same, then runs `SUITE` on the standard
protocol of each track (`defense_submissions.track_protocols`) and adds `<goal>-<name>` v1 with one
entry per attack, whose Source records the folder's content hash. Every attack runs here, in rsbench's
process, on the graph (or a self-certified plugin's stand-in), on streams of a seed drawn for it; the examples it keeps are
then judged again (`rederive.rebuild`) on noise of a seed drawn after it finished, exactly as a
submitted attack's are. Before the suite, each goal's time is estimated from its first sample
(`estimates`); a track's entries are written once all of them are judged, as the track ends, so that a run
stopped later keeps the tracks it finished and, run again, skips them.

`replay` is what `leaderboard check` asks of such an entry: running its attack again with its two
seeds must give its records. Re-judging the stored examples cannot see a success turned into a
failure (a defense's author would forge that one); running the attack again does.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from rsbench import engine, goals, registry, runner
from rsbench.errors import RsbenchError
from rsbench.hub import pinned_sha256
from rsbench.leaderboard import admission, rederive, track_files
from rsbench.leaderboard.scoring import point_metrics
from rsbench.leaderboard.track_files import (
    Entry,
    Judging,
    Leaderboard,
    Protocol,
    Source,
    StoredFile,
    jsonl,
    record_type,
)
from rsbench.records import RunConfig, SampleRecord
from rsbench.rundir import RunDir
from rsbench.specs import GRAPH, AttackSpec, DefenseSpec
from rsbench.submissions import estimates, sandbox, submission_run
from rsbench.submissions.defense_server import needs_serving, served
from rsbench.submissions.defense_submissions import (
    TRACK_PROTOCOL,
    DefenseSubmission,
    check_soundness,
    load,
    recertify,
    track_protocols,
)
from rsbench.submissions.submission_spec import commit_of, content_sha256

SUITE: dict[str, dict[str, tuple[str, ...]]] = {
    "evasion": {"l2": ("pgd-l2", "caa", "pgd", "deepfool", "caa-direct"), "linf": ("pgd-linf",)},
    "degradation": {"l2": ("degradation-pgd", "degradation-eps-pgd", "degradation-adaptive", "degradation-spgd"),
                    "linf": ("degradation-pgd-linf", "degradation-eps-pgd-linf", "degradation-adaptive-linf")},
    "spoofing": {"l2": ("shadow-1ch",), "linf": ("shadow-1ch",)},
}
"""The standard attack suite of each goal, per norm of the defense; of these, the attacks of the defense's kind
(and, for a plugin, whose needs its class meets: `goals.check_attack`) run. Evasion: bounded PGD on deterministic
certifiers; CAA, PGD, DeepFool and the released CAA on smoothing (C-W and AutoAttack take minutes a sample).
Degradation: PGD on the classifier, PGD within epsilon and the adaptive attack on the rejection itself, SPGD on
smoothing. Spoofing: the Shadow Attack with one grey perturbation (no colour change), every wrong class."""
CHECK_TIMEOUT = 6 * 3600
"""Seconds a defense may stay served while `leaderboard check` derives its entries again."""


def suite(spec: DefenseSpec, goal: str) -> list[AttackSpec]:
    """The suite's attacks that attack this defense under `goal` (call it while the defense is served: a plugin's
    class is asked what it provides)."""
    chosen = []
    for name in SUITE[goal][spec.norm]:
        attack = registry.get_attack(name)
        try:
            goals.check_attack(attack, spec)
        except RsbenchError:
            continue
        chosen.append(attack)
    return chosen


@contextmanager
def serving(specs: Iterable[DefenseSpec], root: Path | None, timeout: float, isolated: bool = True) -> Iterator[None]:
    """For the block, serve every distinct defense among `specs` that names code of its own from the folder it was
    read from (`defense_submissions.located`), each in its own sandboxed process."""
    with ExitStack() as stack:
        started = set()
        for spec in specs:
            if not needs_serving(spec) or spec.spec_hash() in started:
                continue
            folder = spec._folder
            if folder is None:
                raise RsbenchError(f"{spec.name} names code of its own but was not read from a submission folder")
            started.add(spec.spec_hash())
            stack.enter_context(served(spec, folder, timeout=timeout, isolated=isolated,
                                       guard=submission_run.guarded(root, folder)))
        yield


def _attack_run(board: Leaderboard, clean: list[SampleRecord], attack: AttackSpec, seed: int, work: Path,
                progress: bool = False, indices: list[int] | None = None) -> Path:
    """Run one attack on the track's attacked samples (or only `indices`) on streams of `seed`, resuming the records
    its folder under `work` holds; that folder."""
    out = work / f"{attack.name}-{seed}"
    out.mkdir(parents=True, exist_ok=True)  # a trial run again resumes its records there
    (out / "clean.jsonl").write_bytes(jsonl(clean))  # the engine attacks; it certifies nothing
    engine.evaluate(board.defense, [attack], _config(board, attack, seed), out, torch.device("cpu"),
                    save_examples=True, progress=progress, indices=indices)
    return out


def _config(board: Leaderboard, attack: AttackSpec, seed: int) -> RunConfig:
    return board.protocol.run_config([attack]).model_copy(update={"seed": seed})


def judged_run(board: Leaderboard, clean: list[SampleRecord], attack: AttackSpec, seed: int, judge_seed: int | None,
               work: Path, progress: bool = False) -> tuple[list, dict | None, Judging]:
    """One attack on the track's attacked samples (`clean`: the track's certificates), run here on streams of `seed`,
    then every example it keeps judged again on noise of `judge_seed` (default: drawn now, after the run)."""
    out = _attack_run(board, clean, attack, seed, work, progress)
    defense, dataset = submission_run.prepare(board)
    proposals, reports = submission_run.returned(board, dataset, attack.name, out)
    judge_seed = secrets.randbits(63) if judge_seed is None else judge_seed
    environment = runner.environment(torch.device("cpu"))
    judging = Judging(seed=judge_seed, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      rsbench_version=environment.rsbench_version, git_commit=environment.git_commit)
    records, examples = rederive.rebuild(board, defense, dataset, clean, attack.name, proposals, reports, judge_seed)
    return records, examples, judging


def _first_sample(board: Leaderboard, clean: list[SampleRecord], attack: AttackSpec, seed: int,
                  work: Path) -> tuple[float, int]:
    """Run the attack on its first attacked sample still without a record, which the whole run then resumes:
    the seconds its record took, and the samples it has left after it."""
    out = work / f"{attack.name}-{seed}"
    done = {r.index for r in RunDir(out, _config(board, attack, seed), "samples.jsonl")
            .records(record_type(board.protocol.goal))} if (out / "samples.jsonl").is_file() else set()
    todo = [c.index for c in rederive.attacked(board, clean) if c.index not in done]
    if not todo:
        return 0.0, 0
    _attack_run(board, clean, attack, seed, work, indices=todo[:1])
    first = next(r for r in RunDir(out, _config(board, attack, seed), "samples.jsonl")
                 .records(record_type(board.protocol.goal)) if r.index == todo[0])
    return first.total_time_s, len(todo) - 1


def replay(board: Leaderboard, entry: Entry, clean: list[SampleRecord], records: list) -> None:
    """Refuse, with one line, a defense submission's entry whose records are not what running its attack again with
    its seed, and judging what it keeps on its judging's seed, gives (times aside)."""
    where = f"{board.track} v{board.version} entry {entry.name}"
    if entry.judging is None:
        raise RsbenchError(f"{where}: records no judging to replay")
    with tempfile.TemporaryDirectory(prefix="rsbench-replay-") as scratch:
        again, _, _ = judged_run(board, clean, entry.attack, entry.seed, entry.judging.seed, Path(scratch))
    rederive.same_records(where, records, again)


def _checked(submission: DefenseSubmission, samples: int | None) -> tuple[list[str], dict[str, list[SampleRecord]]]:
    """With the defense served: the claims certified again and the soundness checks; lines, and each track's clean
    certificates."""
    spec = submission.defense
    how = ("an ONNX graph that rsbench certifies, attacks and judges in its own process; no submitted code runs"
           if not needs_serving(spec) else "its code runs in its sandbox, rsbench's attacks and judge in their own "
           "process" + (" on its ONNX graph; self-certified" if spec.architecture == GRAPH else ""))
    lines = [f"{spec.name}: schema, names, files and weights (sha256 {spec.weights.sha256[:12]}…) valid; {how}"]
    claims, clean = recertify(submission, samples=samples)
    count = samples or TRACK_PROTOCOL["num_samples"]
    seed = secrets.randbits(63)
    report = check_soundness(spec, samples=count, seed=seed)
    return [*lines, *claims, f"soundness on the first {count} test samples (noise seed {seed}): {report.detail}"], clean


def validate(folder: Path, timeout: float = 300, isolated: bool = True, samples: int | None = None) -> list[str]:
    """Schema, names, files and weights, then, served from the sandbox, the claims and the soundness checks."""
    sandbox.require(isolated)
    submission = load(folder)
    with serving([submission.defense], None, timeout, isolated):
        lines, _ = _checked(submission, samples)
    return lines + ([] if isolated else ["(unsandboxed: its code ran in a plain process of its own)"])


def _track(root: Path, track: str, spec: DefenseSpec, protocol: Protocol, writing: bool) -> tuple[Path, Leaderboard]:
    """The track version the entries go to: its newest file when it holds this defense under this protocol (and
    entries are to be written), else a new v1; refused when the track holds another defense of this name."""
    path = track_files.latest(root, track)
    if path is not None:
        board = track_files.load(path)
        if board.protocol.defense_hash != spec.spec_hash():
            raise RsbenchError(f"{track} holds another defense named {spec.name} (spec hash "
                               f"{board.protocol.defense_hash[:12]}, this one {spec.spec_hash()[:12]}): a changed "
                               "defense is submitted under a new name")
        if writing:
            if board.protocol_hash != protocol.spec_hash():
                raise RsbenchError(f"{path} follows another protocol than the standard one of submitted defenses")
            return path, board
    return root / track / "v1.json", Leaderboard(track=track, version=1, defense=spec, protocol=protocol,
                                                  protocol_hash=protocol.spec_hash(),
                                                  clean=StoredFile(path="", sha256=""))


@dataclass
class _Plan:
    """One track's work: its file and version, clean certificates, folder of runs, and the attacks still to run with
    their seeds."""

    track: str
    path: Path
    board: Leaderboard
    clean: list[SampleRecord]
    work: Path
    todo: list[tuple[AttackSpec, int]]
    attacked: bool


def verify(folder: Path, root: Path, timeout: float = 1800, samples: int | None = None, *, dry_run: bool = False,
           isolated: bool = True, progress: bool = True, report: Callable[[str], None] | None = None) -> list[str]:
    """`validate`, then the suite of each goal on the standard protocol, judged by rsbench; the tracks added.

    `samples` (K) runs the first K samples only, and `dry_run` (or an unsandboxed local trial) the whole protocol,
    both adding nothing; `timeout` bounds the validation and each track, each served in a session of its own. Before
    the suite, `report` is told each goal's estimate (`estimates`), then each attack's headline as it finishes and
    each track's line as it ends. A track's entries are added as soon as it ends (between sessions: a served
    session refuses a changed leaderboard), so that a run stopped later keeps them and, run again, skips them. A trial that adds nothing keeps its runs in
    `runs/verify-NAME-<hash of the folder's content, the protocols and the suite>` and, run again, resumes them
    (each attack on the seed it drew first, a judged attack's headline kept); the runs that add entries draw their
    seeds afresh, in a folder nobody can prepare.
    """
    sandbox.require(isolated)
    submission = load(folder)
    spec = submission.defense
    writing = not dry_run and isolated and (samples is None or samples >= TRACK_PROTOCOL["num_samples"])
    protocols = track_protocols(spec, None if writing else samples)
    boards = {track: _track(root, track, spec, protocol, writing) for track, protocol in protocols.items()}
    source = Source(kind="defense-submission", submission=spec.name, commit=commit_of(folder),
                    content_sha256=content_sha256(folder))
    environment, weights = runner.environment(torch.device("cpu")), pinned_sha256(spec.weights)
    tell = report or (lambda line: None)
    why = "dry run" if dry_run else "unsandboxed" if not isolated else f"first {samples} samples only"

    def attacked(plan: _Plan) -> tuple[list[admission.NewEntry], list[str]]:
        """A track's attacks run and judged (a trial's judged ones read back): its entries, and each headline."""
        entries, shown = [], []
        for attack, seed in plan.todo:
            kept = _kept(plan, attack, seed)
            if not writing and kept.is_file():
                shown.append(f"{attack.name} {kept.read_text().strip()}")
                continue
            records, examples, judging = judged_run(plan.board, plan.clean, attack, seed, None, plan.work, progress)
            entries.append(admission.NewEntry(attack, records, examples, source, environment, weights, judging.date,
                                              seed, judging, []))
            headline = _headline(plan.board, entries[-1], plan.clean)
            if not writing:
                kept.write_text(f"{headline}\n")
            shown.append(f"{attack.name} {headline}")
            tell(f"{plan.track}: {shown[-1]}")
        return entries, shown

    trial = _trial(spec, str(source.content_sha256), protocols)
    with nullcontext(str(trial)) if not writing else tempfile.TemporaryDirectory(prefix="rsbench-verify-") as scratch:
        with serving([spec], root, timeout, isolated):
            lines, fresh = _checked(submission, samples)
            plans = []
            for track, (path, board) in boards.items():
                clean = track_files.stored_records(path.parent, board)[0] if board.clean.path else fresh[track]
                attacks, work = suite(spec, board.protocol.goal), Path(scratch) / track
                todo = [(a, secrets.randbits(63) if writing else _kept_seed(work / f"{a.name}.seed"))
                        for a in attacks if a.name not in {e.name for e in board.entries}]
                plans.append(_Plan(track, path, board, clean, work, todo, bool(attacks)))
            for line in estimates.lines([_estimate(plan, writing) for plan in plans],
                                        "attacks, judging their examples on top"):
                tell(line)
        for plan in plans:  # each track in a session of its own, so that its entries are written between sessions
            with serving([spec], root, timeout, isolated):
                entries, shown = attacked(plan)
            if not shown:
                lines.append(f"{plan.track}: " + ("every attack of the suite has its entry already" if plan.attacked
                                                  else f"no attack of the suite attacks {spec.name}"))
                continue
            if writing:
                admission.admit(plan.path, plan.board, plan.clean, entries)
            lines.append(f"{plan.track}: {'; '.join(shown)}; " + (f"entries added to {plan.path}" if writing else
                                                                  f"{why}, nothing added"))
            tell(lines[-1])
    return lines


def _kept(plan: _Plan, attack: AttackSpec, seed: int) -> Path:
    """Where a trial keeps an attack's headline once it is judged."""
    return plan.work / f"{attack.name}-{seed}" / "headline.txt"


def _estimate(plan: _Plan, writing: bool) -> estimates.Estimate:
    """A track's attacks timed on their first sample still to do (an attack whose headline a trial kept: none)."""
    timed = [_first_sample(plan.board, plan.clean, attack, seed, plan.work) for attack, seed in plan.todo
             if writing or not _kept(plan, attack, seed).is_file()]
    return estimates.Estimate(plan.board.protocol.goal, sum(t for t, _ in timed), max((n for _, n in timed), default=0),
                              sum(t * n for t, n in timed),
                              f"{len(timed)} attack{'' if len(timed) == 1 else 's'}")


def _trial(spec: DefenseSpec, content: str, protocols: dict[str, Protocol]) -> Path:
    """Where a trial keeps its runs: a folder per submission content, protocols and suite, so that a trial resumes
    only runs of the very same work."""
    hashes = [content, *(p.spec_hash() for p in protocols.values()),
              *(a.spec_hash() for p in protocols.values() for a in suite(spec, p.goal))]
    return Path("runs") / f"verify-{spec.name}-{hashlib.sha256(' '.join(hashes).encode()).hexdigest()[:12]}"


def _kept_seed(path: Path) -> int:
    """The seed a trial's attack drew when it first ran (kept in `path`), or one drawn now and kept."""
    if path.is_file():
        return int(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = secrets.randbits(63)
    path.write_text(f"{seed}\n")
    return seed


def _headline(board: Leaderboard, entry: admission.NewEntry, clean: list[SampleRecord]) -> str:
    values = point_metrics(board, entry.spec.name, clean, entry.records)
    return ", ".join(f"{name} {'-' if values[name] is None else format(values[name], '.3g')}"
                     for name in track_files.HEADLINE[board.protocol.goal])
