"""Certificate spoofing: how alike x and x' look, how often and how strongly a wrong label is certified.

A spoofing attack succeeds when the defense certifies a wrong label at x' (on the harness's
own noise stream for smoothing). Its perturbation is not norm-bounded, so l2 and l_inf
distances say little about whether x' still looks like x; TV and SSIM say more. The
metrics follow the Shadow Attack paper: Table 1 compares the radii certified at natural
images with those spoofed at attack images; Table 2 gives, for deterministic certifiers,
the robust error of natural images next to the attack error of attack images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import matplotlib
import torch
import torch.nn.functional as F

from rsbench import plots, runner
from rsbench.attacks.base import Target, Tracker
from rsbench.attacks.shadow import total_variation
from rsbench.errors import RsbenchError
from rsbench.goals import Goal
from rsbench.records import RunConfig, RunResult, SampleRecord
from rsbench.specs import DefenseSpec, Spec

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

SSIM_SIGMA = 1.5
"""Standard deviation of SSIM's Gaussian window (Wang et al. 2004), in pixels."""
SSIM_TRUNCATE = 3.5
"""The window reaches int(SSIM_TRUNCATE * sigma + 0.5) pixels from its centre (11 x 11 at sigma 1.5)."""


def l2(x: torch.Tensor, x_adv: torch.Tensor) -> float:
    """||x' - x||_2 over all pixels and channels."""
    return float((x_adv - x).flatten().norm())


def linf(x: torch.Tensor, x_adv: torch.Tensor) -> float:
    """max |x' - x|."""
    return float((x_adv - x).abs().max())


def tv(x: torch.Tensor, x_adv: torch.Tensor) -> float:
    """Squared anisotropic total variation of the perturbation x' - x (the Shadow Attack's smoothness penalty)."""
    return float(total_variation(x_adv - x))


def ssim(x: torch.Tensor, x_adv: torch.Tensor, *, sigma: float = SSIM_SIGMA) -> float:
    """Mean structural similarity of two (C, H, W) images in [0, 1], with a Gaussian window.

    Wang et al.'s definition (K1 = 0.01, K2 = 0.03, population covariances), averaged over
    the positions where the whole window fits and over channels. On images smaller than
    the window (8 x 8 digits) the window is cut to the largest odd size that fits.
    """
    radius = min(int(SSIM_TRUNCATE * sigma + 0.5), (min(x.shape[-2:]) - 1) // 2)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    line /= line.sum()
    window = (line[:, None] * line[None, :])[None, None]

    def mean(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(image[:, None], window)

    a, b = x.double(), x_adv.double()
    mu_a, mu_b = mean(a), mean(b)
    var_a, var_b, cov = mean(a * a) - mu_a**2, mean(b * b) - mu_b**2, mean(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


class SpoofingOutcome(Protocol):
    """What the metrics read from one attacked sample (any record with these fields)."""

    label: int
    """True class."""
    natural_prediction: int | None
    """The defense's certified label at the natural image (None: abstained)."""
    natural_radius: float
    """Its certified radius (0 when abstaining)."""
    adv_prediction: int | None
    """The harness's certified label at the attack image (None: abstained)."""
    adv_radius: float
    """Its certified radius (0 when abstaining)."""


def spoofed(outcome: SpoofingOutcome, epsilon: float = 0.0) -> bool:
    """A wrong label is certified at the attack image, with radius at least epsilon."""
    return outcome.adv_prediction is not None and outcome.adv_prediction != outcome.label and outcome.adv_radius >= epsilon


def natural_certified(outcome: SpoofingOutcome, epsilon: float = 0.0) -> bool:
    """The true label is certified at the natural image, with radius at least epsilon."""
    return outcome.natural_prediction == outcome.label and outcome.natural_radius >= epsilon


def success_rate(outcomes: Sequence[SpoofingOutcome]) -> float:
    """Percentage of attacked samples at which a wrong label is certified."""
    return _percent(sum(spoofed(o) for o in outcomes), len(outcomes))


def spoof_rate(outcomes: Sequence[SpoofingOutcome]) -> float:
    """Percentage of attacked samples whose wrong-label certificate is at least as large as the natural one."""
    return _percent(sum(spoofed(o) and o.adv_radius >= (o.natural_radius if natural_certified(o) else 0.0) for o in outcomes), len(outcomes))


def radius_table(outcomes: Sequence[SpoofingOutcome]) -> dict[str, float | None]:
    """The paper's Table 1: mean and (population) standard deviation of the natural radii of correctly
    certified samples and of the spoofed radii of successful attacks; None where there are none."""
    natural = [o.natural_radius for o in outcomes if natural_certified(o)]
    spoof = [o.adv_radius for o in outcomes if spoofed(o)]
    return {
        "natural_mean": _mean(natural), "natural_std": _std(natural),
        "spoofed_mean": _mean(spoof), "spoofed_std": _std(spoof),
    }


def robust_error(outcomes: Sequence[SpoofingOutcome], epsilon: float) -> float:
    """Table 2, natural images: percentage wrongly labelled or not certified at epsilon (100 - VRA)."""
    return 100.0 - _percent(sum(natural_certified(o, epsilon) for o in outcomes), len(outcomes))


def attack_error(outcomes: Sequence[SpoofingOutcome], epsilon: float) -> float:
    """Table 2, attack images: percentage correctly labelled or not certified at epsilon (100 - share spoofed)."""
    return 100.0 - _percent(sum(spoofed(o, epsilon) for o in outcomes), len(outcomes))


def summary(outcomes: Sequence[SpoofingOutcome], epsilon: float | None = None) -> dict[str, float | None]:
    """Every metric of a set of attacked samples; with a deterministic certifier's epsilon, Table 2's errors too."""
    metrics: dict[str, float | None] = {
        "attacked": float(len(outcomes)), "success": success_rate(outcomes), "spoof_rate": spoof_rate(outcomes),
        **radius_table(outcomes),
    }
    if epsilon is not None:
        metrics |= {"robust_error": robust_error(outcomes, epsilon), "attack_error": attack_error(outcomes, epsilon)}
    return metrics


@dataclass(frozen=True)
class SpoofExample:
    """One row of the examples figure."""

    x: torch.Tensor
    """Natural image (C, H, W) in [0, 1]."""
    x_adv: torch.Tensor
    """Attack image (C, H, W) in [0, 1]."""
    label: int
    """True label, certified at x with `radius`."""
    radius: float
    """Natural certified radius."""
    adv_prediction: int | None
    """Label certified at x_adv (None: abstained)."""
    adv_radius: float
    """Its radius."""


def shadow_examples_plot(examples: Sequence[SpoofExample], title: str, path: Path) -> Path:
    """The paper's Figure 2 as a grid: natural image, perturbation (scaled for visibility) and attack image per row."""
    figure, axes = plt.subplots(len(examples), 3, figsize=(6.6, 2.2 * len(examples) + 0.4), squeeze=False)
    for row, example in zip(axes, examples):
        delta = example.x_adv - example.x
        scale = 0.5 / max(float(delta.abs().max()), 1e-12)
        adv = "abstain" if example.adv_prediction is None else f"{example.adv_prediction}, R={example.adv_radius:.2f}"
        panels = [
            (example.x, f"natural: {example.label}, R={example.radius:.2f}"),
            ((0.5 + scale * delta).clamp(0, 1), f"δ × {scale:.3g} + 0.5 (‖δ‖₂={l2(example.x, example.x_adv):.2f})"),
            (example.x_adv, f"attack: {adv}"),
        ]
        for axis, (image, caption) in zip(row, panels):
            picture = image.detach().cpu().permute(1, 2, 0).numpy()
            axis.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
            axis.set_title(caption, fontsize=8)
            axis.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return plots.save(figure, path)


def _percent(count: int, total: int) -> float:
    return 100.0 * count / total if total else 0.0


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: Sequence[float]) -> float | None:
    mean = _mean(values)
    return None if mean is None else math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


SPOOFING_NOTE = (
    "The attack chooses its image among target classes with certificates on its own noise; the reported "
    "certificate at that image comes from the defense's CERTIFY on an independent stream (smoothing: each "
    "certificate holds with probability 1 - alpha) or from the deterministic certifier, which a success needs "
    "at the run's epsilon. Radii are means and population standard deviations over samples; rates are "
    "percentages of the attacked samples (correctly classified and certified)."
)


class SpoofingRecord(Spec):
    """One spoofing attack on one sample, as written to `samples.jsonl`."""

    index: int
    """Position of the sample in the dataset split."""
    label: int
    """True class."""
    attack: str
    """Registry name of the attack."""
    target: int | None
    """The wrong class the attack's chosen image aims at (the attack's own report)."""
    natural_prediction: int | None
    """The defense's certified label at the natural image (null: abstained)."""
    natural_radius: float
    """Its certified radius."""
    attack_prediction: int | None
    """The label the attack's own certificate (its selection stream) gave the chosen image."""
    attack_radius: float
    """That certificate's radius; not reported as the result, since the image was chosen by it."""
    adv_prediction: int | None
    """The harness's certified label at the chosen image, from an independent stream (null: abstained)."""
    adv_radius: float
    """Its certified radius."""
    epsilon: float | None
    """Radius a deterministic certifier must certify for success (GloRo, KW); null for smoothing."""
    success: bool
    """A wrong label is certified (at epsilon, where there is one) at the attack image."""
    l2: float
    """||x' - x||_2."""
    linf: float
    """||x' - x||_inf."""
    tv: float
    """Total variation of x' - x."""
    ssim: float
    """Structural similarity of x and x'."""
    total_time_s: float
    """Seconds the attack ran (the harness's certificate excluded)."""
    iterations: int
    """Optimisation steps, over every target class."""


class Spoofing(Goal):
    """Certificate spoofing of smoothing, GloRo, KW and CROWN-IBP."""

    name = "spoofing"
    record_type = SpoofingRecord
    statistics = SPOOFING_NOTE
    keeps_examples = True

    @classmethod
    def qualifies(cls, config: RunConfig, clean: SampleRecord) -> bool:
        return clean.correct

    def attack(self, name: str, x: torch.Tensor, label: int, index: int,
               clean: SampleRecord) -> tuple[SpoofingRecord, torch.Tensor | None]:
        seed, device = self.config.seed, self.defense.device
        eps = None if self.spec.kind == "smoothing" else self.config.epsilon
        x = x.to(device)
        tracker = Tracker(x, lambda _: True, norm=self.spec.norm)
        self.attacks[name][1].run(Target(self.defense, eps, self.spec.norm), x, label, tracker,
                                  runner.stream(seed, index, name, "attack", device))
        total_time_s = time.perf_counter() - tracker.started
        if tracker.first is None:
            raise RsbenchError(f"spoofing attack {name!r} proposed no image for sample {index}")
        x_adv = tracker.first.x_adv.to(device)
        certificate = self.defense.certify(x_adv, generator=runner.stream(seed, index, name, "certify", device))
        notes = tracker.notes
        outcome = dict(label=label, natural_prediction=clean.prediction, natural_radius=clean.radius,
                       adv_prediction=certificate.prediction, adv_radius=certificate.radius)
        record = SpoofingRecord(
            index=index, attack=name, **outcome,
            target=notes.get("target"),
            attack_prediction=None if notes.get("attack_prediction", -1) == -1 else notes["attack_prediction"],
            attack_radius=float(notes.get("attack_radius", 0.0)),
            epsilon=eps, success=spoofed(SimpleNamespace(**outcome), eps or 0.0),
            l2=l2(x, x_adv), linf=linf(x, x_adv), tv=tv(x, x_adv), ssim=ssim(x, x_adv),
            total_time_s=total_time_s, iterations=tracker.iterations,
        )
        return record, x_adv.cpu()

    @classmethod
    def summarize(cls, spec: DefenseSpec, config: RunConfig, clean: list[SampleRecord],
                  records: list[SpoofingRecord]) -> dict[str, Any]:
        eps = None if spec.kind == "smoothing" else config.epsilon
        by_attack: dict[str, list[SpoofingRecord]] = {}
        for r in records:
            by_attack.setdefault(r.attack, []).append(r)
        return {
            "epsilon": eps,
            "attacked_samples": len({r.index for r in records}),
            "attacks": {
                name: {**summary(rows, eps), "l2_mean": _mean([r.l2 for r in rows]),
                       "ssim_mean": _mean([r.ssim for r in rows]), "tv_mean": _mean([r.tv for r in rows]),
                       "time_s": _mean([r.total_time_s for r in rows])}
                for name, rows in by_attack.items()
            },
        }

    @classmethod
    def headline(cls, result: RunResult) -> list[str]:
        m = result.metrics
        return [f"{name}: spoofed {row['success']:.0f}% of {m['attacked_samples']} attacked (certified with a wrong "
                f"label), SSIM {'-' if row['ssim_mean'] is None else format(row['ssim_mean'], '.2f')} to the original"
                for name, row in m["attacks"].items()]

    @classmethod
    def format_table(cls, result: RunResult) -> str:
        m = result.metrics

        def cell(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        lines = [f"{result.defense.name}: {result.num_samples} samples, {m['attacked_samples']} attacked "
                 f"(correct and certified)" + (f"; spoofing needs a certificate at epsilon {m['epsilon']:g}"
                                               if m["epsilon"] else ""),
                 f"{'Attack':<14}{'Success':>9}{'Spoof rate':>11}{'Natural R':>16}{'Spoofed R':>16}"
                 f"{'SSIM':>7}{'l2':>7}{'Time (s)':>10}" + (f"{'Robust err':>12}{'Attack err':>12}"
                                                            if m["epsilon"] else "")]
        for name, row in m["attacks"].items():
            natural = f"{cell(row['natural_mean'], '.2f')} ± {cell(row['natural_std'], '.2f')}"
            spoof = f"{cell(row['spoofed_mean'], '.2f')} ± {cell(row['spoofed_std'], '.2f')}"
            line = (f"{name:<14}{row['success']:>8.0f}%{row['spoof_rate']:>10.0f}%{natural:>16}{spoof:>16}"
                    f"{cell(row['ssim_mean'], '.2f'):>7}{cell(row['l2_mean'], '.2f'):>7}{cell(row['time_s'], '.1f'):>10}")
            if m["epsilon"]:
                line += f"{row['robust_error']:>11.0f}%{row['attack_error']:>11.0f}%"
            lines.append(line)
        lines.append("Success: % of attacked samples certified with a wrong label at the attack image (on a fresh "
                     "stream). Spoof rate: % whose wrong-label radius is at least the natural one. Radii: mean ± std.")
        return "\n".join(lines)

    @classmethod
    def plots(cls, spec: DefenseSpec, clean: list[SampleRecord], records: list[SpoofingRecord],
              folder: Path) -> list[Path]:
        saved = folder / "adversarial"
        chosen = [r for r in records if r.success][:6]
        if not chosen or not saved.is_dir():
            return []
        examples = []
        for r in chosen:
            path = saved / f"{r.attack}.pt"
            if not path.exists():
                continue
            table = torch.load(path, weights_only=True)
            row = table["index"].tolist().index(r.index)
            examples.append(SpoofExample(table["x"][row], table["x_adv"][row], r.label, r.natural_radius,
                                         r.adv_prediction, r.adv_radius))
        return [shadow_examples_plot(examples, spec.name, folder / "shadow_examples.png")] if examples else []
