"""Whether retrained weights reproduce a defense's shipped ones, by the strongest comparison the machine allows.

Bit-for-bit equality of trained weights holds only where the same floating-point kernels run: PyTorch picks CPU
kernels by instruction set at run time, so another CPU (or `ATEN_CPU_CAPABILITY`) changes the last bits of a sum,
and many epochs of training amplify them into different weights of an equally good model. The model card of shipped
weights therefore records the environment they were built in (torch build, CPU capability, CPU model, one thread).
Where the current environment is that one, the sha256 must match the pin; elsewhere rsbench compares what the
weights do: clean predictions on the whole evaluation split agree on at least `MIN_AGREEMENT`, and certified accuracy
at every radius of the shipped model's curve lies inside the shipped model's 95% interval, both models certified on
the same samples with the same noise seeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel

from rsbench import hub
from rsbench.specs import DefenseSpec, WeightsRef

MIN_AGREEMENT = 0.97
"""Least share of evaluation images on which retrained and shipped weights must predict the same class. Two
trainings of smoothing-mnist-1.00 that differ only in their CPU kernels (AVX2 and AVX512) agree with the shipped
weights on 99.0% and 99.2% of the 5,000 test-eval images."""

UNRECORDED = "not recorded"

HOW_COMPARED = (f"- reproduction: bit for bit only in the build environment above; elsewhere `rsbench train` compares "
                f"predictions (at least {MIN_AGREEMENT:.0%} agree on the evaluation split) and certified accuracy "
                "(inside this card's 95% intervals on the same samples)")
"""The model card's line saying what a retraining is compared by."""


class BuildEnvironment(BaseModel):
    """What decides the bits of trained weights: the torch build, the CPU kernels it picked, the CPU and threads."""

    torch: str
    cpu_capability: str
    cpu: str
    threads: int = 1

    def describe(self) -> str:
        return (f"torch {self.torch}, CPU capability {self.cpu_capability}, {self.cpu}, "
                f"{self.threads} thread{'s' if self.threads != 1 else ''}")

    def line(self) -> str:
        """The model card's line, which `read_build_environment` parses back."""
        return f"- built in: {self.describe()}"


BUILT_IN = re.compile(r"^- built in: torch (\S+), CPU capability (.+?), (.+?), (\d+) threads?(?: \(.*\))?$", re.MULTILINE)


def current_environment(device: torch.device | str = "cpu") -> BuildEnvironment:
    """The environment training runs in here on `device` (`train` pins one CPU thread); on a GPU its kernels decide
    the bits, so its name stands for the CPU capability."""
    device = torch.device(device)
    if device.type == "cuda":
        return BuildEnvironment(torch=torch.__version__, cpu_capability=f"CUDA {torch.cuda.get_device_name(device)}",
                                cpu="GPU training")
    from rsbench.runner import cpu_names

    cpu = next(iter(cpu_names()), "unknown CPU")
    return BuildEnvironment(torch=torch.__version__, cpu_capability=torch.backends.cpu.get_cpu_capability(), cpu=cpu)


def read_build_environment(card: str) -> BuildEnvironment | None:
    """The environment a model card says its weights were built in, or None when it says none."""
    match = BUILT_IN.search(card)
    if match is None:
        return None
    version, capability, cpu, threads = match.groups()
    return BuildEnvironment(torch=version, cpu_capability=capability, cpu=cpu, threads=int(threads))


def bit_reproducible_here(built: BuildEnvironment | None, device: torch.device | str = "cpu") -> bool:
    """Whether retraining here must give the shipped bits: the card names an environment, and it is this one."""
    return built is not None and built.cpu_capability != UNRECORDED and built == current_environment(device)


def with_weights(spec: DefenseSpec, weights: Path) -> DefenseSpec:
    """The spec with its weights replaced by a local file, pinned to that file's sha256."""
    ref = WeightsRef(source="file", filename=str(weights.resolve()), sha256=hub.sha256_of(weights))
    return spec.model_copy(update={"weights": ref})


@dataclass(frozen=True)
class RadiusCheck:
    """Certified accuracy of the retrained weights at one radius, beside the shipped weights' interval."""

    radius: float
    retrained: float
    shipped: float
    shipped_low: float
    shipped_high: float

    @property
    def inside(self) -> bool:
        return self.shipped_low <= self.retrained <= self.shipped_high


@dataclass(frozen=True)
class Reproduction:
    """The verdict on retrained weights and the comparison it rests on."""

    method: Literal["bit-for-bit", "functional"]
    sha256: str
    pinned: str
    built: BuildEnvironment | None
    here: BuildEnvironment
    agreement: float | None = None
    images: int = 0
    radii: tuple[RadiusCheck, ...] = ()
    samples: int = 0
    n: int = 0

    @property
    def reproduced(self) -> bool:
        if self.method == "bit-for-bit":
            return self.sha256 == self.pinned
        return (self.agreement is not None and self.agreement >= MIN_AGREEMENT and bool(self.radii)
                and all(check.inside for check in self.radii))

    def summary(self) -> str:
        """What was compared and what it found, in a few lines."""
        verdict = "reproduced" if self.reproduced else "NOT reproduced"
        if self.method == "bit-for-bit":
            return (f"{verdict} bit for bit: sha256 {self.sha256} {'==' if self.reproduced else '!='} pin "
                    f"{self.pinned} (the shipped weights were built in this environment: {self.here.describe()})")
        inside = sum(check.inside for check in self.radii)
        built = self.built.describe() if self.built else "not recorded"
        return (f"{verdict} functionally (bits are compared only in the shipped weights' build environment; "
                f"shipped: {built}; here: {self.here.describe()}):\n"
                f"  predictions agree on {self.agreement:.2%} of {self.images} evaluation images "
                f"(at least {MIN_AGREEMENT:.0%} required)\n"
                f"  certified accuracy inside the shipped weights' 95% interval at {inside}/{len(self.radii)} radii "
                f"({self.samples} samples" + (f", n={self.n}, same noise seeds)" if self.n else ", deterministic)")
                + "".join(f"\n    radius {c.radius:.3f}: {c.retrained:.3f} outside [{c.shipped_low:.3f}, "
                          f"{c.shipped_high:.3f}]" for c in self.radii if not c.inside))


def shipped_card(spec: DefenseSpec) -> str | None:
    """The model card shipped beside packaged weights, if any."""
    if spec.weights.source != "package":
        return None
    card = Path(__file__).resolve().parents[1] / "weights" / f"{spec.name}.md"
    return card.read_text() if card.exists() else None


def compare(spec: DefenseSpec, weights: Path, out: Path, device: torch.device | str = "cpu", *,
            samples: int = 500, n: int = 10_000) -> Reproduction:
    """Compare retrained `weights` with the spec's shipped ones: bit for bit where the card's build environment is
    this one, else by predictions and certified accuracy (certify runs kept in `out`, so a re-run resumes)."""
    card = shipped_card(spec)
    built = read_build_environment(card) if card else None
    here = current_environment(device)
    sha = hub.sha256_of(weights)
    if bit_reproducible_here(built, device):
        return Reproduction("bit-for-bit", sha, spec.weights.sha256, built, here)
    device = torch.device(device)
    retrained = with_weights(spec, weights)
    agreement, images = prediction_agreement(spec, retrained, device)
    shipped_curve, retrained_records, samples, n = certify_both(spec, retrained, out, device, samples, n)
    from rsbench import metrics

    radii = tuple(RadiusCheck(point.radius, metrics.certified_accuracy(retrained_records, point.radius).accuracy,
                              point.accuracy, point.ci_low, point.ci_high) for point in shipped_curve)
    return Reproduction("functional", sha, spec.weights.sha256, built, here, agreement, images, radii, samples, n)


def prediction_agreement(shipped: DefenseSpec, retrained: DefenseSpec, device: torch.device) -> tuple[float, int]:
    """Share of the evaluation split on which the two networks' clean predictions agree, and the split's size."""
    from rsbench.data import load_dataset
    from rsbench.defenses import load_defense
    from rsbench.runner import defense_model

    x, _ = load_dataset(shipped.dataset.name, shipped.dataset.split, shipped.dataset.root).tensors
    predictions = []
    for spec in (shipped, retrained):
        model = defense_model(load_defense(spec, device))
        with torch.no_grad():
            predictions.append(torch.cat([model(batch.to(device)).argmax(1).cpu() for batch in x.split(500)]))
    return float((predictions[0] == predictions[1]).float().mean()), len(x)


def certify_both(shipped: DefenseSpec, retrained: DefenseSpec, out: Path, device: torch.device, samples: int,
                 n: int) -> tuple[list, list, int, int]:
    """Certify both weights on the same samples with the same seed; the shipped curve and the retrained records."""
    from rsbench import data, runner

    samples = min(samples, len(data.load_dataset(shipped.dataset.name, shipped.dataset.split, shipped.dataset.root)))
    n = min(n, shipped.certify.n) if shipped.kind == "smoothing" else 0
    results = {}
    for label, spec in (("shipped", shipped), ("retrained", retrained)):
        config = runner.run_config(spec, "certify", num_samples=samples, n=n or None, seed=0)
        results[label] = runner.certify(spec, config, out / f"{shipped.name}-{label}-certify", device, progress=False)
    records = runner.certify_records(out / f"{shipped.name}-retrained-certify", results["retrained"].config)
    return results["shipped"].certified_accuracy, records, samples, n
