"""Typed specifications: what a defense and an attack are (a run and what it writes: `rsbench.records`).

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

DatasetName = Literal["digits", "rgbdigits", "mnist", "cifar10", "imagenet", "tiny-imagenet", "tensors"]
Norm = Literal["l2", "linf"]
Split = Literal["train", "test", "test-train", "test-eval"]
"""Dataset splits; `test-train` and `test-eval` halve MNIST's test set (`rsbench.data.TEST_HALVES`)."""
Goal = Literal["evasion", "degradation", "spoofing"]
DefenseKind = Literal["smoothing", "gloro", "kw", "crownibp", "lipschitz", "plugin"]
GOALS_BY_KIND: dict[str, tuple[Goal, ...]] = {
    "smoothing": ("evasion", "degradation", "spoofing"),
    "gloro": ("evasion", "degradation", "spoofing"),
    "kw": ("evasion", "degradation", "spoofing"),
    "crownibp": ("evasion", "degradation", "spoofing"),
    "lipschitz": ("evasion", "degradation", "spoofing"),
    "plugin": ("evasion", "degradation", "spoofing"),
}
"""Attack goals each kind of defense can be evaluated under: every certifier can be evaded, made to reject clean
inputs (degradation) or made to certify a wrong label (spoofing). A plugin is attacked by every attack whose needs
its class meets (`rsbench.defenses.base.Defense`); the others are refused, one by one."""
CODE_REFERENCE = r"^(?P<target>[^:\s]+):(?P<attr>[A-Za-z_]\w*)$"
"""`module.path:name` or `path/to/file.py:name`: code in the user's own files (a model factory, a plugin class)."""
SELF_CERTIFIED = "self-certified: its certificates come from its own code, not from rsbench's certifiers"
"""The words that stand beside every number of a self-certified defense (`DefenseSpec.self_certified`)."""
GRAPH = "onnx"
"""`architecture` of a defense given as an ONNX graph (`rsbench.graphs`): its weights file is the graph."""
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
    """Certification method: rsbench's certifiers (`smoothing`, `gloro`, `kw`, `crownibp`, and `lipschitz`, the
    Lipschitz-margin certificate of an ONNX graph whose Lipschitz bound rsbench computes), or `plugin`, a certifier
    in your own code (self-certified)."""
    description: str = ""
    """One line for listings."""
    aliases: list[str] = Field(default_factory=list)
    """Other names this defense answers to."""
    dataset: DatasetSpec
    """Data the model was trained for and is evaluated on."""
    architecture: str
    """`onnx` for a defense given as an ONNX graph (its `weights` file, `.onnx`, run by rsbench's own code:
    `rsbench.graphs`), an architecture name known to `rsbench.models`, `timm:NAME`, or `python:MODULE:FACTORY` for a
    model in your own code: a dotted module on the Python path or a `.py` file (relative to the spec's folder), whose
    FACTORY is called as `FACTORY(num_classes, **architecture_options)` and returns an `nn.Module`."""
    architecture_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of a `python:` architecture's factory."""
    num_classes: int = Field(ge=2)
    """Number of classes."""
    norm: Norm = "l2"
    """Norm of the certified radius."""
    sigma: float | None = Field(None, gt=0)
    """Gaussian noise level (smoothing only)."""
    epsilon: float | None = Field(None, gt=0)
    """Radius the defense was built to certify (gloro, kw, crownibp, lipschitz)."""
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

    @property
    def self_certified(self) -> bool:
        """Whether the certificates come from the defense's own code (a plugin) rather than from rsbench's
        certifiers: such a defense is labelled so wherever its numbers appear and ranked apart."""
        return self.kind == "plugin"

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
        if self.kind == "lipschitz" and self.architecture != GRAPH:
            raise ValueError("kind 'lipschitz' bounds the weights of an ONNX graph: it needs architecture 'onnx'")
        if self.architecture == GRAPH and not self.weights.filename.endswith(".onnx"):
            raise ValueError(f"architecture 'onnx' reads its weights file as the graph, a .onnx file; got "
                             f"{self.weights.filename!r}")
        if self.kind in ("gloro", "kw", "crownibp", "lipschitz") and self.epsilon is None:
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
