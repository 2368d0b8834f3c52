"""What a run is and what it produces: its configuration, which a resumed run must match, and the records and
results it writes (`samples.jsonl`, the attacks' records, `result.json`)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from rsbench.specs import AttackSpec, DefenseSpec, Spec, Split

SCHEMA_VERSION = 1
"""Version of the result-file schema; bumped on any breaking change to RunResult."""


class RunConfig(Spec):
    """Everything that determines a run's results; a resumed run must match it."""

    omitted_when_default: ClassVar[frozenset[str]] = frozenset({"minimal", "time_limit"})
    command: Literal["certify", "evaluate", "exact"]
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

    minimal: bool = False
    """exact: whether each adversarial sample's closest example was searched for (its exact l_inf distance)."""
    time_limit: float | None = Field(None, gt=0)
    """exact: seconds of MILP solving allowed per sample; a sample not decided by then is recorded unknown."""

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
    """Commit of the rsbench checkout the run started from, when available (`-dirty`: the package's files differed
    from it)."""
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
    judged_best_radius: float | None = None
    """l2 distance of the smallest candidate the in-loop judge accepted, confirmed or not: `best_radius` under the
    certification-aware-attack paper's rule (one Goodman test on judge_n copies, no confirmation); null when the
    judge accepted none, in records written before it was recorded and in those of submitted attacks, whose one
    returned example the harness judges by the strict rule only (success under the paper's rule is still
    `candidates > 0` for records of rsbench's own runs)."""


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
