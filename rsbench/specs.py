"""Typed specifications: what a defense, an attack, a run and a result are.

Every spec is a frozen Pydantic model that forbids unknown fields, so a typo in a
registry YAML file is an error rather than a silently ignored setting. Each spec
has a content hash (``spec_hash``) recorded with every result, so a leaderboard
entry can be traced to the exact configuration that produced it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_serializer, model_validator

SCHEMA_VERSION = 1
"""Version of the result-file schema; bumped on any breaking change to RunResult."""

DatasetName = Literal["digits", "rgbdigits", "mnist", "cifar10", "imagenet", "tiny-imagenet", "tensors"]
Norm = Literal["l2", "linf"]
Split = Literal["train", "test", "test-train", "test-eval"]
"""Dataset splits; `test-train` and `test-eval` halve MNIST's test set (`rsbench.data.TEST_HALVES`)."""
Goal = Literal["evasion", "degradation", "spoofing"]
DefenseKind = Literal["smoothing", "gloro", "kw", "crownibp", "plugin"]
GOALS_BY_KIND: dict[str, tuple[Goal, ...]] = {
    "smoothing": ("evasion", "degradation", "spoofing"),
    "gloro": ("evasion", "degradation", "spoofing"),
    "kw": ("evasion", "degradation", "spoofing"),
    "crownibp": ("evasion", "degradation", "spoofing"),
    "plugin": ("evasion", "degradation", "spoofing"),
}
"""Attack goals each kind of defense can be evaluated under: every certifier can be evaded, made to reject clean
inputs (degradation) or made to certify a wrong label (spoofing). A plugin is attacked by every attack whose needs
its class meets (`rsbench.defenses.base.Defense`); the others are refused, one by one."""
CODE_REFERENCE = r"^(?P<target>[^:\s]+):(?P<attr>[A-Za-z_]\w*)$"
"""`module.path:name` or `path/to/file.py:name`: code in the user's own files (a model factory, a plugin class)."""
NAME_PATTERN = r"^[a-z0-9][a-z0-9.\-]*$"
STRICT_CONFIRMATION_GOALS: tuple[Goal, ...] = ("evasion", "degradation")
"""Goals whose smoothing runs confirm with the judge's bounds (`RunConfig.confirm_bounds`)."""


class Spec(BaseModel):
    """Base of every spec: frozen, strict about unknown fields, field docstrings as descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    omitted_when_default: ClassVar[frozenset[str]] = frozenset()
    """Fields added after specs of this type were first written: left out of the dump (and so of `spec_hash`) while
    they hold their default, so that every spec, hash and leaderboard file written before them stays as it was."""

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: Any) -> Any:
        data = handler(self)
        fields = type(self).model_fields
        for name in self.omitted_when_default:
            if name in data and getattr(self, name) == fields[name].get_default(call_default_factory=True):
                del data[name]
        return data

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON form; equal specs hash equally on every machine."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class WeightsRef(Spec):
    """Where a model's weights come from, pinned by checksum (in the registry, or on import for releases without one)."""

    source: Literal["package", "file", "hf", "import", "folder", "memory"]
    """`package`: shipped inside rsbench; `file`: a local path; `hf`: a Hugging Face Hub repository; `import`: a
    released file without a published checksum, stored and pinned by `rsbench models import` (or `pull`);
    `folder`: a file beside the YAML file that holds the spec (a submission's own folder); `memory`: the model
    object of a defense built in Python and evaluated by `rsbench.evaluate` in the process holding it (never
    admitted to a leaderboard: register the defense first)."""
    filename: str
    """File name: inside `rsbench/weights/` for `package`, a path for `file` (relative to the data folder
    `$RSBENCH_DATA`, default `~/.cache/rsbench/data`), a path in the repository for `hf`, a name in the weights
    cache (`$RSBENCH_WEIGHTS`, default `~/.cache/rsbench/weights`) for `import`, a path relative to the spec's
    folder for `folder`, the model's class for `memory`."""
    sha256: str | None = None
    """Expected sha256 of the file; loading is refused when it differs. Required unless `source` is `import`, whose
    sha256 is pinned on this machine when the file is imported. For `memory`, the sha256 of the model's state dict
    (`rsbench.models.state_dict_sha256`)."""
    url: str | None = None
    """Where the file, or the release archive holding it, is published; `rsbench models pull` downloads it from
    there. Required for `import`."""
    member: str | None = None
    """Path of the file inside the release archive at `url`, when the release is an archive."""
    repo_id: str | None = None
    """Hub repository id (`owner/name`); required for `hf`."""
    revision: str | None = None
    """Hub commit hash the weights are pinned to (40 hex digits); required for `hf`."""

    @field_validator("sha256")
    @classmethod
    def _hex64(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(f"expected 64 lowercase hex digits, got {value!r}")
        return value

    @model_validator(mode="after")
    def _source_fields(self) -> WeightsRef:
        if self.source == "hf":
            if not self.repo_id:
                raise ValueError("source 'hf' needs repo_id")
            if not self.revision or not re.fullmatch(r"[0-9a-f]{40}", self.revision):
                raise ValueError(
                    f"source 'hf' needs revision pinned to a 40-hex commit hash, got {self.revision!r}"
                )
        if self.source == "import" and not self.url:
            raise ValueError("source 'import' needs the url the file is published at")
        if self.source != "import" and self.sha256 is None:
            raise ValueError(f"source {self.source!r} needs sha256 (only 'import' is pinned on import)")
        if self.member and not self.url:
            raise ValueError("member names a file inside the release archive at url; url is missing")
        if self.source == "folder" and (Path(self.filename).is_absolute() or ".." in Path(self.filename).parts):
            raise ValueError(f"source 'folder' names a file inside the spec's folder, got {self.filename!r}")
        return self


class DatasetSpec(Spec):
    """A dataset and the split evaluated."""

    omitted_when_default: ClassVar[frozenset[str]] = frozenset({"sha256"})
    name: DatasetName
    """Dataset name; pixels are always in [0, 1]. `tensors`: an (x, y) pair given to `rsbench.evaluate`."""
    split: Split = "test"
    """Split used for evaluation (`test-eval` for the MNIST models rsbench trains on the other half of MNIST's
    test set)."""
    root: str | None = None
    """Folder holding the files; defaults to `$RSBENCH_DATA` or `~/.cache/rsbench/data/<name>`."""
    sha256: str | None = None
    """`tensors` only: sha256 of the images and labels (`rsbench.api.data_spec`)."""

    @model_validator(mode="after")
    def _tensors_hashed(self) -> DatasetSpec:
        if (self.name == "tensors") != (self.sha256 is not None):
            raise ValueError("sha256 names the tensors of dataset 'tensors', and only those")
        return self


class CertifyDefaults(Spec):
    """Default certification settings of a defense (Cohen et al. 2019 for smoothing)."""

    n0: int = Field(100, ge=1)
    """Noise samples used to select the top class."""
    n: int = Field(100_000, ge=1)
    """Noise samples used to estimate the top class's probability."""
    alpha: float = Field(0.001, gt=0, lt=1)
    """Failure probability of the certificate."""
    batch_size: int = Field(1000, ge=1)
    """Noisy copies per forward pass; bounds memory whatever n is."""


class TrainingRecipe(Spec):
    """How the shipped weights were produced, so `rsbench train` can reproduce them."""

    recipe: Literal["gaussian", "macer", "gloro", "kw", "crownibp"]
    """Training method: Gaussian augmentation, MACER, GloRo, Wong-Kolter or CROWN-IBP robust training."""
    epochs: int = Field(ge=1)
    """Passes over the training split."""
    batch_size: int = Field(128, ge=1)
    """Training batch size."""
    lr: float = Field(gt=0)
    """Initial learning rate."""
    seed: int = 0
    """Seed of weight initialisation, shuffling and noise."""
    options: dict[str, float | int | str | bool] = Field(default_factory=dict)
    """Recipe-specific settings (e.g. MACER's k, beta, gamma, lambda)."""


class DefenseSpec(Spec):
    """A certified defense: a model, its weights and how it certifies."""

    omitted_when_default: ClassVar[frozenset[str]] = frozenset({"architecture_options", "implementation",
                                                                "code_sha256"})
    _folder: Path | None = PrivateAttr(default=None)
    """Folder of the YAML file the spec was read from: relative paths of its code and `folder` weights resolve
    there. Set by the registry; never part of the spec's dump or hash."""

    name: str = Field(pattern=NAME_PATTERN)
    """Registry name, e.g. `smoothing-digits-0.50`."""
    kind: DefenseKind
    """Certification method."""
    description: str = ""
    """One line for listings."""
    aliases: list[str] = Field(default_factory=list)
    """Other names this defense answers to."""
    dataset: DatasetSpec
    """Data the model was trained for and is evaluated on."""
    architecture: str
    """Architecture name known to `rsbench.models`, `timm:NAME`, or `python:MODULE:FACTORY` for a model in your
    own code: a dotted module on the Python path or a `.py` file (relative to the spec's folder), whose FACTORY is
    called as `FACTORY(num_classes, **architecture_options)` and returns an `nn.Module`."""
    architecture_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of a `python:` architecture's factory."""
    num_classes: int = Field(ge=2)
    """Number of classes."""
    norm: Norm = "l2"
    """Norm of the certified radius."""
    sigma: float | None = Field(None, gt=0)
    """Gaussian noise level (smoothing only)."""
    epsilon: float | None = Field(None, gt=0)
    """Radius the defense was built to certify (gloro, kw, crownibp)."""
    certify: CertifyDefaults = CertifyDefaults()
    """Default certification settings."""
    weights: WeightsRef
    """Pinned weights."""
    training: TrainingRecipe | None = None
    """Recipe that produced the weights, if reproducible with `rsbench train`."""
    version: int = Field(1, ge=1)
    """Bumped whenever a change alters results."""
    implementation: str | None = Field(None, pattern=CODE_REFERENCE)
    """`plugin` only: `MODULE:CLASS` (a dotted module or a `.py` file relative to the spec's folder) of a class
    implementing `rsbench.defenses.base.Defense`, built as `CLASS.from_spec(spec, model)`."""
    code_sha256: dict[str, str] = Field(default_factory=dict)
    """sha256 of each source file of your own code that the spec names (the `python:` architecture's module and the
    plugin's), by module or path as written. Filled when the spec is read; a file that no longer matches is
    refused, so a changed model file is a different defense with another spec hash."""

    @model_validator(mode="after")
    def _kind_fields(self) -> DefenseSpec:
        if (self.kind == "plugin") != (self.implementation is not None):
            raise ValueError("kind 'plugin' needs implementation (MODULE:CLASS), and only it takes one")
        if self.architecture_options and not self.architecture.startswith("python:"):
            raise ValueError("architecture_options are the keyword arguments of a python: architecture's factory")
        if self.architecture.startswith("python:") and not re.fullmatch(CODE_REFERENCE, self.architecture[7:]):
            raise ValueError(f"expected architecture python:MODULE:FACTORY, got {self.architecture!r}")
        if any(not re.fullmatch(r"[0-9a-f]{64}", v) for v in self.code_sha256.values()):
            raise ValueError("code_sha256 values must be 64 lowercase hex digits")
        if self.kind == "smoothing" and self.sigma is None:
            raise ValueError("kind 'smoothing' needs sigma")
        if self.kind == "smoothing" and self.norm != "l2":
            raise ValueError("kind 'smoothing' certifies the l2 norm, got norm " + self.norm)
        if self.kind in ("gloro", "kw", "crownibp") and self.epsilon is None:
            raise ValueError(f"kind {self.kind!r} needs epsilon")
        return self


class AttackSpec(Spec):
    """An attack: its implementation, threat model and parameters."""

    name: str = Field(pattern=NAME_PATTERN)
    """Registry name, e.g. `caa`."""
    implementation: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """`module:Class` of the implementation, imported only when the attack is used."""
    goal: Goal
    """What the attack tries to achieve."""
    norm: Norm | None = None
    """Norm in which the perturbation is measured; None: the norm the attacked defense certifies
    (degradation and spoofing attacks work in it)."""
    description: str = ""
    """One line for listings."""
    paper: str = ""
    """Citation of the paper that defines the attack."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Parameters, validated by the implementation's own `Params` model."""
    version: int = Field(1, ge=1)
    """Bumped whenever a change alters results."""


class RunConfig(Spec):
    """Everything that determines a run's results; a resumed run must match it."""

    command: Literal["certify", "evaluate"]
    """Which job produced the run."""
    defense: str
    """Defense name as resolved in the registry."""
    defense_hash: str
    """spec_hash of the defense spec."""
    goal: Literal["evasion", "degradation", "spoofing"] = "evasion"
    """What the run's attacks try to achieve (evaluate only); one goal per run."""
    epsilon: float | None = Field(None, gt=0)
    """Radius of the threat model where the goal has one (degradation; evasion of GloRo and KW)."""
    attacks: list[str] = Field(default_factory=list)
    """Attack names, in order (evaluate only)."""
    attack_hashes: list[str] = Field(default_factory=list)
    """spec_hash of each attack spec."""
    split: Split = "test"
    """Dataset split evaluated: the defense's (its dataset's `split`)."""
    num_samples: int = Field(ge=1)
    """Number of test samples (the first ones of the split, in order)."""
    n0: int = Field(ge=1)
    """Selection noise samples."""
    n: int = Field(ge=1)
    """Estimation noise samples."""
    alpha: float = Field(gt=0, lt=1)
    """Failure probability of each certificate."""
    batch_size: int = Field(ge=1)
    """Noisy copies per forward pass (does not change results for a given seed)."""
    seed: int
    """Master seed; sample i uses a generator seeded from (seed, i)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Arithmetic of the smoothed base classifier: float32, or autocast to bfloat16 or float16 (which changes the
    classifier being certified and attacked; leaderboard tracks are float32)."""
    channels_last: bool = False
    """Whether the base classifier ran on channels-last inputs (speed on GPUs; float rounding may differ)."""
    workers: int = Field(1, ge=1)
    """Processes that took samples side by side (evaluate); records do not depend on it, their times do,
    since the processes share the machine. It may change when a run is resumed."""
    judge_n: int = Field(1500, ge=1)
    """The judge's N (evaluate on smoothing): hard votes on this many fresh noisy copies decide whether a
    candidate is adversarial, for every attack of the run alike (the CAA paper's 1500)."""
    judge_alpha: float = Field(0.005, gt=0, lt=1)
    """Significance level of the judge's Goodman intervals, and of the confirmation (the CAA paper's 0.005)."""
    confirm_n: int = Field(15_000, ge=1)
    """Fresh noisy copies with which each kept candidate is tested again after the attack; only confirmed
    candidates are reported. At least judge_n (default ten times it)."""
    confirm_bounds: Literal["judge_n"] | None = None
    """Smoothing evasion and degradation: the N of the Goodman bounds confirmation puts around the frequencies
    it measures on confirm_n fresh copies. `judge_n` (every such run since this field exists) makes confirmation
    at least as strict as the judge it confirms, so a point the judge accepted on one lucky draw is not
    confirmed; null (earlier runs, kept as measured, and every other run): bounds at confirm_n."""

    @model_validator(mode="after")
    def _confirmation_not_weaker(self) -> RunConfig:
        if self.confirm_n < self.judge_n:
            raise ValueError(f"confirm_n ({self.confirm_n}) must be at least judge_n ({self.judge_n})")
        return self


class SampleRecord(Spec):
    """One certified test sample, as written to `samples.jsonl`."""

    index: int
    """Position in the dataset split."""
    label: int
    """True class."""
    prediction: int | None
    """Certified class, or null when the defense abstains."""
    radius: float
    """Certified radius (0 when abstaining)."""
    correct: bool
    """prediction == label."""
    time_s: float
    """Wall-clock seconds spent certifying the sample; when several samples shared the passes, an equal share
    of their time."""


class CertifiedPoint(Spec):
    """Certified accuracy at one radius, with a confidence interval over test samples."""

    radius: float
    """Radius r."""
    accuracy: float
    """Fraction of samples correct and certified with radius >= r."""
    ci_low: float
    """Lower end of the two-sided 95% Clopper-Pearson interval over the test samples."""
    ci_high: float
    """Upper end of that interval."""


class Environment(Spec):
    """Software and hardware a result was produced on."""

    rsbench_version: str
    """Installed rsbench version."""
    git_commit: str | None
    """Commit of the rsbench checkout, when available."""
    torch_version: str
    """PyTorch version."""
    python_version: str
    """Python version."""
    device: str
    """Device the model ran on (`cpu`, `cuda:0` …)."""
    hardware: str
    """CPU model and, for CUDA, the GPU name."""


class RunResult(Spec):
    """The summary written to `result.json`."""

    schema_version: int = SCHEMA_VERSION
    """Version of this schema."""
    config: RunConfig
    """Configuration of the run."""
    defense: DefenseSpec
    """Full spec of the defense."""
    attacks: list[AttackSpec] = Field(default_factory=list)
    """Full specs of the attacks (evaluate only)."""
    environment: Environment
    """Where the run happened."""
    weights_sha256: str | None = None
    """sha256 of the weights file the run loaded (the registry's pin, or the one `rsbench models import` recorded):
    two results made with different files differ here even when their specs are equal."""
    finished_at: str
    """UTC time the summary was written (ISO 8601)."""
    num_samples: int
    """Samples with a record."""
    clean_accuracy: float
    """Fraction of samples predicted correctly (certified with any radius >= 0)."""
    abstain_rate: float
    """Fraction of samples on which the defense abstained."""
    average_certified_radius: float
    """Mean over samples of radius if correct else 0."""
    certified_accuracy: list[CertifiedPoint]
    """Certified accuracy at radii 0, 0.25, 0.5, … up to the largest certified radius."""
    metrics: dict[str, Any] = Field(default_factory=dict)
    """Further metrics of the job (per-attack metrics for evaluate)."""
    statistics: str
    """How to read the numbers: their confidence levels and what is random."""


class AttackRecord(Spec):
    """One attack on one certified test sample, as written to `samples.jsonl` by `evaluate`.

    Only candidates confirmed on fresh noise count: `first_*` is the earliest confirmed
    candidate, `best_*` the smallest; candidates that failed confirmation are counted in
    `rejected` and never reported.
    """

    index: int
    """Position of the sample in the dataset split."""
    label: int
    """True class, which the defense certified at the clean sample."""
    attack: str
    """Registry name of the attack."""
    success: bool
    """Whether any candidate of the attack was confirmed adversarial."""
    first_radius: float | None
    """l2 distance of the earliest confirmed example; null on failure."""
    first_time_s: float | None
    """Seconds from the start of the attack until it found the earliest confirmed example; null on failure."""
    best_radius: float | None
    """l2 distance of the smallest confirmed example; null on failure."""
    best_time_s: float | None
    """Seconds from the start of the attack until it found the smallest confirmed example; null on failure."""
    total_time_s: float
    """Seconds the attack ran (confirmation excluded): the paper's "time". When samples were attacked together,
    an equal share of the batch's time, as are first_time_s and best_time_s."""
    cohen_radius: float
    """The clean sample's certificate, below which no adversarial example exists. Smoothing: equation 3's
    radius sigma/2 (PhiInv(lower of top) - PhiInv(upper of runner-up)) from hard votes with the judge's N and
    alpha (w.p. 1 - alpha); GloRo and KW: the deterministic certified radius."""
    iterations: int
    """Iterations the attack ran."""
    judge_calls: int
    """Candidates the in-loop judge tested."""
    candidates: int
    """Accepted candidates kept for confirmation (the few smallest and the first)."""
    rejected: int
    """Kept candidates that failed confirmation (always 0 for deterministic defenses, judged exactly)."""
    judge_n: int | None
    """The run's judge N (copies per in-loop test); null for deterministic defenses."""
    judge_alpha: float | None
    """The run's judge alpha (in-loop tests; the confirmation as a whole); null for deterministic defenses."""
    confirm_n: int | None
    """Copies per confirmation test; null for deterministic defenses."""


class AttackSummary(Spec):
    """One attack's row of the paper's Table 1, over the samples every attack of the run attacked."""

    attacked: int
    """Samples attacked: correctly classified and certified at the clean input."""
    success: float
    """Percentage of attacked samples with an adversarial example."""
    best: float
    """Percentage of attacked samples on which this attack's smallest example is the smallest of the
    run's attacks (failures count as infinite; ties credit every tied attack; none when all fail)."""
    r50: float | None
    """Median smallest radius over the successes; null without successes."""
    pct_cohen: float | None
    """Median over successes of 100 (best_radius - cohen_radius) / cohen_radius (samples with cohen_radius > 0)."""
    time_s: float | None
    """Median seconds to the smallest example over the successes."""
    total_time_s: float
    """Median seconds the attack ran, over the attacked samples."""
    first_ratio_r50: float | None
    """Median radius of the first examples divided by r50."""
    first_ratio_time: float | None
    """Median seconds to the first example over the successes, divided by total_time_s (the paper's ratio)."""
    confirmed: float | None
    """Percentage of kept candidates that passed confirmation; null when the attack left none."""
