"""Defense submissions: `submissions/defenses/<name>/` with `submission.yaml`, the model's code and (small) weights.

`submission.yaml` holds the defense's spec (its code and `folder` weights in the submission's folder, or
weights on the Hugging Face Hub at a pinned commit), the authors, the paper, the licence and, for each
track the defense will get (`<goal>-<name>` for every goal its kind supports, under the standard
protocol `track_protocols` gives), the clean and certified accuracies the authors measured there.

`load` checks the schema, the names, that every file the spec names is in the folder and that the
weights have their sha256. `recertify` certifies the first samples of each claimed track as the
track will and refuses a claimed accuracy outside the reproduced 95% Clopper-Pearson interval.
`rsbench.soundness` checks the certifier itself. `validate` runs the three. They run the submission's
code in this process: a caller that does not trust it runs them in a sandbox.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath

import torch
from pydantic import Field, ValidationError

from rsbench import hub, leaderboard, metrics, registry, runner, soundness, user_code
from rsbench.data import load_dataset
from rsbench.errors import RsbenchError
from rsbench.leaderboard import Protocol
from rsbench.specs import GOALS_BY_KIND, NAME_PATTERN, DefenseSpec, SampleRecord, Spec

TRACK_PROTOCOL = {"split": "test", "num_samples": 20, "n0": 100, "n": 10_000, "alpha": 0.001, "judge_n": 1500,
                  "judge_alpha": 0.005, "confirm_n": 15_000, "seed": 0}
"""The standard protocol of a submitted defense's tracks: that of the seeded tracks (first 20 test samples,
n = 10,000; on smoothing a judge of N = 1500 confirmed on 15,000 fresh copies), which fits a 2-core CPU."""


class AccuracyClaim(Spec):
    """What the authors measured on one track's samples, in % of them."""

    clean_accuracy: float = Field(ge=0, le=100)
    """Samples classified correctly (with a certificate of any radius)."""
    certified_accuracy: dict[float, float] = Field(default_factory=dict)
    """Per radius (in the defense's norm), samples classified correctly with a certified radius at least that."""


class DefenseSubmission(Spec):
    """`submission.yaml` of a defense: the spec, who made it, and what it claims on which tracks."""

    name: str = Field(pattern=NAME_PATTERN)
    """The submission's folder name, which is also its defense's name."""
    authors: list[str] = Field(min_length=1)
    """Who made the defense."""
    paper: str
    """Link to the paper (or report) defining the defense."""
    licence: str
    """Licence of the code and weights (SPDX identifier)."""
    defense: DefenseSpec
    """The defense's spec; relative paths (code, `folder` weights) are in the submission's folder."""
    claims: dict[str, AccuracyClaim] = Field(min_length=1)
    """Per track to be (`<goal>-<name>`), the accuracies the authors measured on its samples."""


def track_protocols(spec: DefenseSpec) -> dict[str, Protocol]:
    """The standard protocol of each track a defense gets: one per goal its kind supports, at the defense's own
    epsilon (smoothing: none for evasion and spoofing, sigma for degradation)."""
    return {f"{goal}-{spec.name}": Protocol(
        defense=spec.name, defense_hash=spec.spec_hash(), goal=goal, epsilon=runner.default_epsilon(spec, goal, None),
        metrics=leaderboard.goal_metrics(goal, spec.kind), **TRACK_PROTOCOL) for goal in GOALS_BY_KIND[spec.kind]}


def load(folder: Path) -> DefenseSubmission:
    """The folder's submission, its schema, names, files and weights checked; one line naming what is wrong."""
    path = folder / "submission.yaml"
    data = registry.read_yaml(path)
    try:
        submission = DefenseSubmission.model_validate(data)
    except ValidationError as error:
        raise RsbenchError(f"{path}: {registry.format_validation_error(error)}") from None
    spec = registry.parse_spec(path, DefenseSpec, "defense")  # the same spec, with its folder and code pinned
    submission = submission.model_copy(update={"defense": spec})
    if not submission.name == spec.name == folder.resolve().name:
        raise RsbenchError(f"{path}: the folder, the submission and its defense must share one name")
    check_files(spec, folder.resolve())
    tracks = track_protocols(spec)
    for track in submission.claims:
        if track not in tracks:
            raise RsbenchError(f"{path}: claims track {track!r}; {spec.name} gets {', '.join(tracks)}")
    return submission


def check_files(spec: DefenseSpec, folder: Path) -> None:
    """Every file the spec names lies in the submission's folder, and the weights have their sha256."""
    for reference in user_code.references(spec):
        target, _ = user_code.split(reference)
        if not user_code.is_file(target) or not _inside(target):
            raise RsbenchError(f"{spec.name}: code {reference!r} must be a .py file of the submission's folder, "
                               "named by its relative path (e.g. ./model.py:build)")
    weights = spec.weights
    if weights.source not in ("folder", "hf"):
        raise RsbenchError(f"{spec.name}: a submission's weights lie in its folder (source: folder) or on the Hugging "
                           f"Face Hub at a pinned commit (source: hf), not {weights.source!r}")
    hub.resolve_weights(weights, folder)


def _inside(relative: str) -> bool:
    path = PurePosixPath(relative.replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts


def recertify(submission: DefenseSubmission, device: torch.device = torch.device("cpu"),
              work: Path | None = None) -> list[str]:
    """Certify the first samples of every claimed track as the track will, and refuse a claim outside the 95%
    Clopper-Pearson interval of what that gives; one line per track on success. Tracks sharing their
    certification settings share one certification run (in `work`, a scratch folder by default)."""
    spec, protocols = submission.defense, track_protocols(submission.defense)
    lines, runs = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        root = work or Path(scratch)
        for track, claim in submission.claims.items():
            p = protocols[track]
            config = runner.run_config(spec, "certify", num_samples=p.num_samples, n0=p.n0, n=p.n, alpha=p.alpha,
                                       seed=p.seed)
            key = config.spec_hash()
            if key not in runs:
                out = root / f"certify-{key[:10]}"
                runner.certify(spec, config, out, device, progress=False)
                runs[key] = runner.certify_records(out, config)
            lines.append(check_claim(spec.name, track, claim, runs[key]))
    return lines


def check_claim(name: str, track: str, claim: AccuracyClaim, records: list[SampleRecord]) -> str:
    """Refuse, with one line, a claimed accuracy outside the 95% interval the records give; a summary line."""
    points = [("clean accuracy", 0.0, claim.clean_accuracy)]
    points += [(f"certified accuracy at radius {r:g}", r, v) for r, v in sorted(claim.certified_accuracy.items())]
    shown = []
    for what, radius, claimed in points:
        point = metrics.certified_accuracy(records, radius)
        low, value, high = 100 * point.ci_low, 100 * point.accuracy, 100 * point.ci_high
        if not low - 1e-9 <= claimed <= high + 1e-9:
            raise RsbenchError(f"{name} claims {what} {claimed:g}% on {track}; its first {len(records)} samples "
                               f"give {value:.1f}% [{low:.1f}, {high:.1f}]; refused")
        shown.append(f"{what} {claimed:g}% in [{low:.1f}, {high:.1f}]")
    return f"{track}: " + "; ".join(shown)


def check_soundness(spec: DefenseSpec, device: torch.device = torch.device("cpu"),
                    samples: int = soundness.SAMPLES) -> soundness.Report:
    """`rsbench.soundness.check` on the first `samples` test samples, certifying as the standard tracks do."""
    p = TRACK_PROTOCOL
    config = runner.run_config(spec, "certify", num_samples=samples, n0=p["n0"], n=p["n"], alpha=p["alpha"])
    defense = runner.load_for_run(spec, config, device)
    dataset = load_dataset(spec.dataset.name, spec.dataset.split, spec.dataset.root)
    return soundness.check(spec, defense, [dataset[i] for i in range(min(samples, len(dataset)))])


def validate(folder: Path, device: torch.device = torch.device("cpu"), samples: int = soundness.SAMPLES) -> list[str]:
    """Schema, names, files and weights; the claimed accuracies re-certified; the soundness checks. One line per
    step on success; raises one line on the first failure."""
    submission = load(folder)
    spec = submission.defense
    lines = [f"{spec.name}: schema, names, files and weights (sha256 {spec.weights.sha256[:12]}…) valid"]
    lines += recertify(submission, device)
    lines.append(f"soundness on the first {samples} test samples: {check_soundness(spec, device, samples).detail}")
    return lines
