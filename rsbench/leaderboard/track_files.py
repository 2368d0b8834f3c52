"""Leaderboards: one file per track version, entries anyone can re-check, append-only.

A track is a defense and a goal under a fixed `Protocol` (samples, certification, judge,
epsilon, seeds, metric definitions, bootstrap). Its file `leaderboards/<track>/v<version>.json`
holds the protocol and its hash, and one `Entry` per attack: every metric of the goal with a
95% bootstrap interval over samples, the run's seeds, versions and hardware, and the sha256 of
its per-sample records and saved examples, stored gzip-compressed in `v<version>/` beside it.
A run with another protocol starts a new version; old versions and entries are never
rewritten (`rsbench.leaderboard.admission` adds entries, `rsbench.gate.audit` checks and re-judges them). Only the
`comparison` block (`best`, paired comparisons) changes when an entry is added, recomputed from the
stored records of all entries (`rsbench.leaderboard.scoring`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from rsbench import registry
from rsbench.errors import RsbenchError
from rsbench.goals import GOALS
from rsbench.records import Environment, RunConfig, SampleRecord
from rsbench.specs import AttackSpec, DefenseSpec, Spec, Split
from rsbench.stats import BOOTSTRAP_RESAMPLES

LEADERBOARD_SCHEMA_VERSION = 1
"""Version of the leaderboard file schema; bumped on any breaking change to `Leaderboard`."""
COMPARATIVE = {"best"}
"""Metrics that compare an entry with the others of its track; kept in `Leaderboard.comparison`."""
METRICS: dict[str, dict[str, str]] = {
    "evasion": {
        "success": "% of attacked samples with a confirmed adversarial example",
        "best": "% of attacked samples where this entry's smallest example is the smallest of the track (ties credit all)",
        "r50": "median radius (in the defense's norm) of the smallest confirmed example, over successes",
        "pct_cohen": "median % excess of that radius over the clean sample's certificate",
        "time_s": "median seconds to the smallest example, over successes",
        "total_time_s": "median seconds the attack ran",
        "first_ratio_r50": "median radius of the first confirmed example over r50",
        "first_ratio_time": "median time to the first example over the median total time",
        "confirmed": "% of kept candidates that passed confirmation on fresh noise",
        "robust_accuracy": "GloRo and KW: % of all samples correct and not broken within epsilon",
    },
    "degradation": {
        "fpr_lower": "% of test_R (correct and certified at epsilon) the attack made the defense reject",
        "best": "% of test_R where this entry's rejected point is the closest of the track",
        "utility_reduction": "% of all samples turned from certified answers into rejections (VRA x fpr_lower)",
    },
    "spoofing": {
        "success": "% of attacked samples certified with a wrong label at the attack image",
        "best": "% of attacked samples where this entry's spoofed image is the most similar (SSIM) of the track",
        "spoof_rate": "% whose wrong-label radius is at least the natural one",
        "spoofed_mean": "mean certified radius of the wrong labels, over successes",
        "ssim_mean": "mean SSIM of attack and natural image",
        "l2_mean": "mean l2 distance of attack and natural image",
        "robust_error": "GloRo and KW: % of natural images wrong or not certified at epsilon",
        "attack_error": "GloRo and KW: % of attack images not certified with a wrong label at epsilon",
    },
}
"""Each goal's leaderboard metrics and their definitions (part of the protocol); rates are percentages."""
PERCENT, NON_NEGATIVE = (0.0, 100.0), (0.0, math.inf)
DOMAINS: dict[str, tuple[float, float]] = {
    "success": PERCENT, "best": PERCENT, "confirmed": PERCENT, "robust_accuracy": PERCENT, "fpr_lower": PERCENT,
    "utility_reduction": PERCENT, "spoof_rate": PERCENT, "robust_error": PERCENT, "attack_error": PERCENT,
    "r50": NON_NEGATIVE, "spoofed_mean": NON_NEGATIVE, "l2_mean": NON_NEGATIVE, "time_s": NON_NEGATIVE,
    "total_time_s": NON_NEGATIVE, "first_ratio_r50": NON_NEGATIVE, "first_ratio_time": NON_NEGATIVE,
    "pct_cohen": (-100.0, math.inf), "ssim_mean": (-1.0, 1.0),
}
"""The values each metric of `METRICS` can take, as its definition gives them: rates are percentages, radii,
distances, times and their ratios are not negative, a radius's excess over a certificate is at least -100% (the
radius is at least 0), SSIM lies in [-1, 1]."""
SMOOTHING_DEFINITIONS: dict[str, dict[str, str]] = {
    "degradation": {
        "fpr_lower": "% of test_R (correct and certified at epsilon) the attack made the defense reject, with "
                     "confidence: on judge_n copies, and again on confirm_n fresh ones, every class's Goodman upper "
                     "bound (at judge_alpha) stays below Phi(epsilon / sigma)",
    },
}
"""Definitions that differ on smoothing, whose verdicts are statistical; they are part of its protocols too."""
STRICT_DEFINITIONS: dict[str, dict[str, str]] = {
    "evasion": {
        "success": "% of attacked samples with a confirmed adversarial example: the frequencies of confirm_n fresh "
                   "copies pass the judge's own test, Goodman bounds of judge_n copies at judge_alpha, so a point "
                   "the judge accepted on one lucky draw is not counted",
    },
    "degradation": {
        "fpr_lower": "% of test_R (correct and certified at epsilon) the attack made the defense reject, with "
                     "confidence: on judge_n copies, and again at the frequencies of confirm_n fresh copies with the "
                     "judge's bounds (Goodman, judge_n copies, judge_alpha), every class's upper bound stays below "
                     "Phi(epsilon / sigma)",
    },
}
"""Smoothing definitions of protocols whose confirmation takes the judge's bounds (`Protocol.confirm_bounds`)."""
HEADLINE = {"evasion": ("success", "r50"), "degradation": ("fpr_lower",), "spoofing": ("success", "ssim_mean")}
"""Each goal's headline metrics: what a submission must claim on every track it claims."""
SCORE = {"evasion": "best_radius", "degradation": "distance", "spoofing": "ssim"}
"""The per-sample field `best` and paired comparisons rank by: smaller is better (SSIM: larger), failures last."""


def goal_metrics(goal: str, kind: str, confirm_bounds: str | None = None) -> dict[str, str]:
    """The goal's metrics and their definitions on a defense of `kind`, confirmed with `confirm_bounds`; the
    definitions METRICS gives for "GloRo and KW" name the certifier of a later deterministic kind (CROWN-IBP),
    whose tracks are defined alike."""
    metrics = METRICS[goal]
    if kind == "smoothing":
        strict = STRICT_DEFINITIONS.get(goal, {}) if confirm_bounds else {}
        metrics = metrics | SMOOTHING_DEFINITIONS.get(goal, {}) | strict
    if kind == "crownibp":
        metrics = {name: text.replace("GloRo and KW:", "CROWN-IBP:") for name, text in metrics.items()}
    return metrics


class Interval(Spec):
    """A number with its 95% bootstrap interval over samples; all null where the number is undefined."""

    value: float | None
    ci_low: float | None
    ci_high: float | None


class Protocol(Spec):
    """Everything that fixes a track's numbers; its `spec_hash` is the track's protocol hash."""

    defense: str
    """Defense name."""
    defense_hash: str
    """spec_hash of the defense spec."""
    goal: Literal["evasion", "degradation", "spoofing"]
    """What the attacks try to achieve."""
    epsilon: float | None
    """Radius of the threat model where the goal has one."""
    split: Split
    """Dataset split (the defense's evaluation split)."""
    num_samples: int
    """The first K samples of the split are evaluated."""
    n0: int
    """Certification: selection noise samples."""
    n: int
    """Certification: estimation noise samples."""
    alpha: float
    """Certification: failure probability."""
    judge_n: int
    """The judge's N (smoothing)."""
    judge_alpha: float
    """The judge's and the confirmation's alpha (smoothing)."""
    confirm_n: int
    """Copies of the confirmation (smoothing)."""
    confirm_bounds: Literal["judge_n"] | None = None
    """Smoothing evasion and degradation: confirmation applies the Goodman bounds of judge_n copies to the
    frequencies of its confirm_n copies (`RunConfig.confirm_bounds`); null: bounds at confirm_n. Left out of the
    hash while null, so the protocols written before the field existed keep theirs."""
    seed: int
    """Master seed of every noise stream."""
    metrics: dict[str, str]
    """The goal's metrics and their definitions."""
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES
    """Resamples (with replacement, over the evaluated samples) of every interval."""
    bootstrap_seed: int = 0
    """Seed of the numpy generator drawing the resamples."""

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON form, without `confirm_bounds` while it is null."""
        data = self.model_dump(mode="json", exclude={"confirm_bounds"} if self.confirm_bounds is None else set())
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @classmethod
    def of_run(cls, config: RunConfig, kind: str) -> Protocol:
        """The protocol a run on a defense of `kind` followed; tracks certify in float32, so a reduced-precision
        run has none."""
        if config.precision != "fp32":
            raise RsbenchError(f"the run certified in {config.precision}; leaderboard tracks certify in fp32")
        fields = {k: getattr(config, k) for k in cls.model_fields if k in RunConfig.model_fields}
        return cls(**fields, metrics=goal_metrics(config.goal, kind, config.confirm_bounds))

    def run_config(self, attacks: Sequence[AttackSpec], batch_size: int = 1000) -> RunConfig:
        """A run config that follows this protocol with `attacks`."""
        fields = {k: getattr(self, k) for k in RunConfig.model_fields if k in type(self).model_fields}
        return RunConfig(command="evaluate", **fields, attacks=[a.name for a in attacks],
                         attack_hashes=[a.spec_hash() for a in attacks], batch_size=batch_size)


class Source(Spec):
    """Where an entry comes from: a maintainer's run of a registry attack, a submitted attack, or the trusted job's
    run of a registry attack on a submitted defense (`rsbench submission verify submissions/defenses/<name>`)."""

    kind: Literal["registry", "submission", "defense-submission"]
    submission: str | None = None
    """The submission's folder name under `submissions/` (a defense's: under `submissions/defenses/`)."""
    commit: str | None = None
    """Git commit of the submission's code, when the folder that ran is that commit's (null otherwise)."""
    content_sha256: str | None = None
    """sha256 of the submission folder as it ran (every file's path and bytes, `submission_spec.content_sha256`)."""


class Judging(Spec):
    """How rsbench judged a submission's examples: on noise drawn from a seed no one knew in advance."""

    seed: int
    """Drawn from the operating system (`secrets`) once the submission had finished; with it, anyone replays every
    verdict (`rsbench leaderboard verify TRACK --entry NAME --seed SEED --as-admitted`)."""
    date: str
    """UTC time of the judging (ISO 8601)."""
    rsbench_version: str
    git_commit: str | None
    """Commit of the rsbench checkout that judged."""


class StoredFile(Spec):
    """A file stored gzip-compressed beside the leaderboard file, pinned by the sha256 of its uncompressed bytes."""

    path: str
    """Path relative to the leaderboard file's folder."""
    sha256: str


class Entry(Spec):
    """One attack on the track: never changed once added."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    """Entry name: the attack's name."""
    attack: AttackSpec
    """Full spec of the attack (its version and params)."""
    attack_hash: str
    """spec_hash of the attack spec."""
    source: Source
    metrics: dict[str, Interval]
    """The goal's metrics (not the comparative ones) with 95% bootstrap intervals over samples."""
    attacked: int
    """Samples attacked (those the goal lets through)."""
    samples: int
    """Samples evaluated."""
    seed: int
    """Master seed of the run."""
    bootstrap_seed: int
    """Seed of the intervals' resamples."""
    environment: Environment
    """rsbench, torch and python versions, git commit and hardware of the run."""
    weights_sha256: str | None
    """sha256 of the weights the run loaded."""
    date: str
    """UTC time the run finished (ISO 8601)."""
    records: StoredFile
    """The per-sample records (JSON lines)."""
    examples: StoredFile | None
    """The saved examples (`index`, `x`, `x_adv`), when the attack found any."""
    judging: Judging | None = None
    """Submissions: the seed, date and version of the harness's judging of every returned example."""
    self_reported: list[str] = Field(default_factory=list)
    """Metrics computed from numbers the attack reported about itself (times, iterations, its first example),
    which the harness did not judge; every other metric rests on the harness's verdicts."""


class Comparison(Spec):
    """Metrics comparing the entries, recomputed from the stored records whenever an entry is added."""

    best: dict[str, Interval] = Field(default_factory=dict)
    """Per entry, the goal's `best` metric (%) with its interval."""
    paired: dict[str, dict[str, Interval]] = Field(default_factory=dict)
    """paired[a][b]: % of samples attacked by both where a's example beats b's (`SCORE`), with its interval."""


class Leaderboard(Spec):
    """One track version: `leaderboards/<track>/v<version>.json`."""

    schema_version: int = LEADERBOARD_SCHEMA_VERSION
    track: str
    """`<goal>-<defense>`."""
    version: int = Field(ge=1)
    defense: DefenseSpec
    """Full spec of the defense."""
    protocol: Protocol
    protocol_hash: str
    """spec_hash of the protocol."""
    clean: StoredFile
    """Clean certificates of the evaluated samples (JSON lines)."""
    entries: list[Entry] = Field(default_factory=list)
    comparison: Comparison = Comparison()


def protocol_differences(mine: Protocol, theirs: Protocol) -> list[str]:
    """The fields in which two protocols differ, as "field mine ≠ theirs" (metric definitions by name only)."""
    def shown(field: str, value: object) -> str:
        return "(definitions)" if field == "metrics" else f"{value:,}" if isinstance(value, int) else str(value)

    return [f"{k} {shown(k, getattr(mine, k))} ≠ {shown(k, getattr(theirs, k))}" for k in Protocol.model_fields
            if getattr(mine, k) != getattr(theirs, k)]


def track_name(protocol: Protocol) -> str:
    """`<goal>-<defense>`: the folder of a track's versions."""
    return f"{protocol.goal}-{protocol.defense}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_stored(folder: Path, relative: str, data: bytes) -> StoredFile:
    """Store `data` gzip-compressed (reproducibly: no timestamp) at folder/relative."""
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0))
    return StoredFile(path=relative, sha256=sha256(data))


def read_stored(folder: Path, stored: StoredFile) -> bytes:
    """A stored file's bytes, refused with one line when missing or not matching its sha256."""
    path = folder / stored.path
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise RsbenchError(f"{path}: cannot read ({error})") from None
    if sha256(data) != stored.sha256:
        raise RsbenchError(f"{path}: records do not match their sha256 in the leaderboard file (tampered?)")
    return data


def jsonl(records: Sequence[Spec]) -> bytes:
    return b"".join(json.dumps(r.model_dump(mode="json"), separators=(",", ":")).encode() + b"\n" for r in records)


def parse_jsonl(data: bytes, record_type: type) -> list:
    return [record_type.model_validate_json(line) for line in data.splitlines() if line.strip()]


def load(path: Path) -> Leaderboard:
    """A leaderboard file, validated; refused with one line when it is not one."""
    try:
        return Leaderboard.model_validate_json(path.read_text())
    except (OSError, ValidationError) as error:
        detail = error.errors()[0] if isinstance(error, ValidationError) else error
        raise RsbenchError(f"{path}: not a valid leaderboard file ({detail})") from None


def save(path: Path, board: Leaderboard) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(board.model_dump_json(indent=1) + "\n")


def files(root: Path) -> list[Path]:
    """Every leaderboard file under root, by track then version."""
    return sorted(root.glob("*/v*.json"), key=lambda p: (p.parent.name, int(p.stem[1:])))


def latest(root: Path, track: str) -> Path | None:
    """The newest version's file of a track, or None."""
    versions = [p for p in files(root) if p.parent.name == track]
    return versions[-1] if versions else None


def find(root: Path, track: str) -> Path:
    """A track's file: `TRACK` (newest version) or `TRACK@vN`; refused with the known tracks otherwise."""
    name, _, version = track.partition("@")
    path = root / name / f"{version}.json" if version else latest(root, name)
    if path is None or not path.exists():
        known = sorted({p.parent.name for p in files(root)})
        raise RsbenchError(f"no track {track!r} under {root}; known: {', '.join(known) or 'none'}")
    return path


# -- metrics -------------------------------------------------------------------------------------------------


def goal_class(goal: str) -> Any:
    """The job of a goal (`rsbench.goals`), whose summary the leaderboard's metrics are read from."""
    return registry.resolve(GOALS[goal])


def record_type(goal: str) -> type:
    return goal_class(goal).record_type


def stored_records(folder: Path, board: Leaderboard) -> tuple[list[SampleRecord], dict[str, list]]:
    """The track's clean records and every entry's records, each checked against its sha256."""
    clean = parse_jsonl(read_stored(folder, board.clean), SampleRecord)
    kind = record_type(board.protocol.goal)
    return clean, {e.name: parse_jsonl(read_stored(folder, e.records), kind) for e in board.entries}
