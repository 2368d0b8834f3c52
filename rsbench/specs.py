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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1
"""Version of the result-file schema; bumped on any breaking change to RunResult."""

DatasetName = Literal["digits", "rgbdigits", "mnist", "cifar10", "imagenet", "tiny-imagenet"]
Norm = Literal["l2", "linf"]
NAME_PATTERN = r"^[a-z0-9][a-z0-9.\-]*$"


class Spec(BaseModel):
    """Base of every spec: frozen, strict about unknown fields, field docstrings as descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON form; equal specs hash equally on every machine."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class WeightsRef(Spec):
    """Where a model's weights come from, pinned by checksum."""

    source: Literal["package", "file", "hf"]
    """`package`: shipped inside rsbench; `file`: a local path; `hf`: a Hugging Face Hub repository."""
    filename: str
    """File name: inside `rsbench/weights/` for `package`, a path for `file` (relative to the data folder
    `$RSBENCH_DATA`, default `~/.cache/rsbench/data`), a path in the repository for `hf`."""
    sha256: str
    """Expected sha256 of the file; loading is refused when it differs."""
    repo_id: str | None = None
    """Hub repository id (`owner/name`); required for `hf`."""
    revision: str | None = None
    """Hub commit hash the weights are pinned to (40 hex digits); required for `hf`."""

    @field_validator("sha256")
    @classmethod
    def _hex64(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError(f"expected 64 lowercase hex digits, got {value!r}")
        return value

    @model_validator(mode="after")
    def _hub_fields(self) -> WeightsRef:
        if self.source == "hf":
            if not self.repo_id:
                raise ValueError("source 'hf' needs repo_id")
            if not self.revision or not re.fullmatch(r"[0-9a-f]{40}", self.revision):
                raise ValueError(
                    f"source 'hf' needs revision pinned to a 40-hex commit hash, got {self.revision!r}"
                )
        return self


class DatasetSpec(Spec):
    """A dataset and the split evaluated."""

    name: DatasetName
    """Dataset name; pixels are always in [0, 1]."""
    split: Literal["train", "test"] = "test"
    """Split used for evaluation."""
    root: str | None = None
    """Folder holding the files; defaults to `$RSBENCH_DATA` or `~/.cache/rsbench/data/<name>`."""


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

    recipe: Literal["gaussian", "macer", "gloro", "kw"]
    """Training method: Gaussian augmentation, MACER, GloRo or Wong-Kolter robust training."""
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

    name: str = Field(pattern=NAME_PATTERN)
    """Registry name, e.g. `smoothing-digits-0.50`."""
    kind: Literal["smoothing", "gloro", "kw"]
    """Certification method."""
    description: str = ""
    """One line for listings."""
    aliases: list[str] = Field(default_factory=list)
    """Other names this defense answers to."""
    dataset: DatasetSpec
    """Data the model was trained for and is evaluated on."""
    architecture: str
    """Architecture name known to `rsbench.models`, or `timm:NAME`."""
    num_classes: int = Field(ge=2)
    """Number of classes."""
    norm: Norm = "l2"
    """Norm of the certified radius."""
    sigma: float | None = Field(None, gt=0)
    """Gaussian noise level (smoothing only)."""
    epsilon: float | None = Field(None, gt=0)
    """Radius the defense was built to certify (gloro, kw)."""
    certify: CertifyDefaults = CertifyDefaults()
    """Default certification settings."""
    weights: WeightsRef
    """Pinned weights."""
    training: TrainingRecipe | None = None
    """Recipe that produced the weights, if reproducible with `rsbench train`."""
    version: int = Field(1, ge=1)
    """Bumped whenever a change alters results."""

    @model_validator(mode="after")
    def _kind_fields(self) -> DefenseSpec:
        if self.kind == "smoothing" and self.sigma is None:
            raise ValueError("kind 'smoothing' needs sigma")
        if self.kind == "smoothing" and self.norm != "l2":
            raise ValueError("kind 'smoothing' certifies the l2 norm, got norm " + self.norm)
        if self.kind in ("gloro", "kw") and self.epsilon is None:
            raise ValueError(f"kind {self.kind!r} needs epsilon")
        return self


class AttackSpec(Spec):
    """An attack: its implementation, threat model and parameters."""

    name: str = Field(pattern=NAME_PATTERN)
    """Registry name, e.g. `caa`."""
    implementation: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """`module:Class` of the implementation, imported only when the attack is used."""
    goal: Literal["evasion", "degradation", "spoofing"]
    """What the attack tries to achieve."""
    norm: Norm
    """Norm in which the perturbation is measured."""
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
    attacks: list[str] = Field(default_factory=list)
    """Attack names, in order (evaluate only)."""
    attack_hashes: list[str] = Field(default_factory=list)
    """spec_hash of each attack spec."""
    split: Literal["train", "test"] = "test"
    """Dataset split."""
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
    workers: int = Field(1, ge=1)
    """Processes that took samples side by side (evaluate); records do not depend on it, their times do,
    since the processes share the machine. It may change when a run is resumed."""


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
    """Wall-clock seconds spent certifying the sample."""


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
    """One attack on one certified test sample, as written to `samples.jsonl` by `evaluate`."""

    index: int
    """Position of the sample in the dataset split."""
    label: int
    """True class, which the defense certified at the clean sample."""
    attack: str
    """Registry name of the attack."""
    success: bool
    """Whether the attack found any example the harness judged adversarial."""
    first_radius: float | None
    """l2 distance of the first adversarial example found; null on failure."""
    first_time_s: float | None
    """Seconds from the start of the attack to the first adversarial example; null on failure."""
    best_radius: float | None
    """l2 distance of the smallest adversarial example found; null on failure."""
    best_time_s: float | None
    """Seconds from the start of the attack to the smallest adversarial example; null on failure."""
    cohen_radius: float
    """Certified radius sigma/2 (PhiInv(lower of top) - PhiInv(upper of runner-up)) at the clean sample,
    from hard counts with the attack's N and alpha: no adversarial example is closer (w.p. 1 - alpha)."""
    iterations: int
    """Iterations the attack ran."""


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
    first_ratio_r50: float | None
    """Median radius of the first examples divided by r50."""
    first_ratio_time: float | None
    """Median seconds to the first example divided by time_s."""
