"""Defense submissions: `submissions/defenses/<name>/` with `submission.yaml`, the model's code and (small) weights.

`submission.yaml` holds the defense's spec (its network an ONNX graph, `architecture: onnx`, in the submission's
folder or on the Hugging Face Hub at a pinned commit, with one of rsbench's certifier kinds; or, self-certified, a
plugin certifier in the folder whose network is that graph), the authors, the paper, the licence and, for each
track the defense will get (`<goal>-<name>` for every goal its kind supports, under the standard
protocol `track_protocols` gives), the clean and certified accuracies the authors measured there.

`load` refuses a folder that is or holds a link, then checks the schema, the names (never a registry defense's name or alias: a submitted defense is
named by its folder's path, and is no registry defense), that every file the spec names is in the
folder and that the weights have their sha256; it runs no code. `recertify` certifies the first
samples of each track as the track will and refuses a claimed accuracy outside the reproduced 95%
Clopper-Pearson interval. `check_soundness` checks the certifier itself (`rsbench.submissions.soundness`). Both
load the defense through `load_defense`: a graph with rsbench's certifier in rsbench's process, where nothing of
the submission runs; a self-certified plugin served from its sandbox (`rsbench.submissions.defense_server`) by
`rsbench.submissions.defense_tracks`, its code never in rsbench's own process. `located` finds the submission
folder that holds a track's defense.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import torch
from pydantic import Field, ValidationError

from rsbench import hub, metrics, registry, runner, user_code
from rsbench.data import load_dataset
from rsbench.errors import RsbenchError
from rsbench.leaderboard.track_files import Protocol
from rsbench.records import SampleRecord
from rsbench.specs import GOALS_BY_KIND, GRAPH, DefenseSpec, Spec
from rsbench.submissions import soundness
from rsbench.submissions.defense_server import needs_serving
from rsbench.submissions.submission_spec import Authored, files

TRACK_PROTOCOL = {"num_samples": 20, "n0": 100, "n": 10_000, "alpha": 0.001, "judge_n": 1500, "judge_alpha": 0.005,
                  "confirm_n": 15_000, "seed": 0}
"""The standard protocol of a submitted defense's tracks, on its dataset's evaluation split: that of the seeded
tracks (first 20 samples, n = 10,000; on smoothing a judge of N = 1500 confirmed on 15,000 fresh copies), which
fits a 2-core CPU."""


class AccuracyClaim(Spec):
    """What the authors measured on one track's samples, in % of them."""

    clean_accuracy: float = Field(ge=0, le=100)
    """Samples classified correctly (with a certificate of any radius)."""
    certified_accuracy: dict[float, float] = Field(default_factory=dict)
    """Per radius (in the defense's norm), samples classified correctly with a certified radius at least that."""


class DefenseSubmission(Authored):
    """`submission.yaml` of a defense: the spec, who made it, and what it claims on which tracks."""

    defense: DefenseSpec
    """The defense's spec; relative paths (code, `folder` weights) are in the submission's folder."""
    claims: dict[str, AccuracyClaim] = Field(min_length=1)
    """Per track to be (`<goal>-<name>`), the accuracies the authors measured on its samples."""


def track_protocols(spec: DefenseSpec, samples: int | None = None) -> dict[str, Protocol]:
    """The standard protocol of each track a defense gets: one per goal its kind supports, at the defense's own
    epsilon (smoothing: none for evasion and spoofing, sigma for degradation), exactly as `rsbench evaluate` with
    these settings records it (smoothing's evasion and degradation confirm with the judge's bounds); `samples`
    takes the first K samples only (a trial, not a track)."""
    settings = TRACK_PROTOCOL | ({"num_samples": samples} if samples else {})
    protocols = {}
    for goal in GOALS_BY_KIND[spec.kind]:
        config = runner.run_config(spec, "evaluate", goal=goal, epsilon=runner.default_epsilon(spec, goal, None),
                                   **settings)
        protocols[f"{goal}-{spec.name}"] = Protocol.of_run(config, spec.kind)
    return protocols


def is_defense(folder: Path) -> bool:
    """Whether a submission folder holds a defense (its submission.yaml has a `defense`) rather than an attack."""
    try:
        data = registry.read_yaml(folder / "submission.yaml")
    except RsbenchError:
        return False
    return isinstance(data, dict) and "defense" in data and "attack" not in data


def load(folder: Path) -> DefenseSubmission:
    """The folder's submission, its schema, names, files and weights checked; one line naming what is wrong."""
    path = folder / "submission.yaml"
    files(folder)  # before reading anything in it
    data = registry.read_yaml(path)
    try:
        submission = DefenseSubmission.model_validate(data)
    except ValidationError as error:
        raise RsbenchError(f"{path}: {registry.format_validation_error(error, DefenseSubmission)}") from None
    spec = registry.parse_spec(path, DefenseSpec, "defense")  # the same spec, with its folder and code pinned
    submission = submission.model_copy(update={"defense": spec})
    if not submission.name == spec.name == folder.resolve().name:
        raise RsbenchError(f"{path}: the folder, the submission and its defense must share one name")
    if spec.name in registry.names("defenses"):
        raise RsbenchError(f"{path}: {spec.name!r} is the name (or an alias) of a registry defense, whose tracks it "
                           "would take; choose another")
    if spec.aliases:
        raise RsbenchError(f"{path}: a submitted defense answers to its folder's name only; remove its aliases")
    if spec.architecture != GRAPH:
        raise RsbenchError(f"{path}: a submitted defense's network is an ONNX graph that rsbench runs with its own "
                           f"code (architecture: onnx, weights: its .onnx file), not {spec.architecture!r}")
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


def certificates(spec: DefenseSpec, protocol: Protocol, device: torch.device = torch.device("cpu"),
                 indices: range | None = None) -> list[SampleRecord]:
    """The clean certificates of a track's samples (or of `indices` among them), exactly as the track stores them
    (its protocol's seed, one generator per sample)."""
    defense = runner.load_for_run(spec, protocol.run_config([]), device)
    dataset = load_dataset(spec.dataset.name, protocol.split, spec.dataset.root)
    samples = [(dataset[i][0], int(dataset[i][1]), i) for i in (range(protocol.num_samples) if indices is None else indices)]
    return runner.certify_samples(defense, samples, protocol.seed, device)


def recertify(submission: DefenseSubmission, device: torch.device = torch.device("cpu"),
              samples: int | None = None) -> tuple[list[str], dict[str, list[SampleRecord]]]:
    """Certify the samples of every track the defense gets as the track will, and refuse a claim outside the 95%
    Clopper-Pearson interval of what that gives: a line per claimed track, and each track's clean certificates
    (tracks sharing their certification settings share one certification)."""
    spec, protocols = submission.defense, track_protocols(submission.defense, samples)
    runs: dict[tuple, list[SampleRecord]] = {}
    clean = {}
    for track, p in protocols.items():
        key = (p.split, p.num_samples, p.n0, p.n, p.alpha, p.seed)
        if key not in runs:
            runs[key] = certificates(spec, p, device)
        clean[track] = runs[key]
    return [check_claim(spec.name, track, claim, clean[track]) for track, claim in submission.claims.items()], clean


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


def check_soundness(spec: DefenseSpec, device: torch.device = torch.device("cpu"), samples: int = soundness.SAMPLES,
                    seed: int = 0) -> soundness.Report:
    """`rsbench.submissions.soundness.check` on the first `samples` test samples, of the certificates the standard tracks store
    (their seed), against noise and attacks drawn from `seed`."""
    p = TRACK_PROTOCOL
    config = runner.run_config(spec, "certify", num_samples=samples, n0=p["n0"], n=p["n"], alpha=p["alpha"])
    defense = runner.load_for_run(spec, config, device)
    dataset = load_dataset(spec.dataset.name, spec.dataset.split, spec.dataset.root)
    return soundness.check(spec, defense, [dataset[i] for i in range(min(samples, len(dataset)))], seed=seed,
                           track_seed=p["seed"])


def located(spec: DefenseSpec, submissions: Path) -> DefenseSpec:
    """A track's defense with the folder its files are in, when `submissions/defenses/<name>` holds that very spec
    (read without running any code); else the spec as it is, unless it names code of its own, which then has no
    folder to run from: refused."""
    folder = (submissions / "defenses" / spec.name).resolve()
    if (folder / "submission.yaml").is_file():
        files(submissions / "defenses" / spec.name)  # before reading anything in it
        try:
            held = registry.get_defense(str(folder))
        except RsbenchError:
            held = None
        if held is not None and held.spec_hash() == spec.spec_hash():
            return held
    if needs_serving(spec):
        raise RsbenchError(f"{spec.name} names code of its own ({', '.join(user_code.references(spec))}), but no "
                           f"submission folder {folder} holds its spec; its code runs only from there, in the sandbox")
    return spec
