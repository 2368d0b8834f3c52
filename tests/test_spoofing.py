"""Spoofing measures and metrics: hand-computed values, SSIM against scikit-image, the examples figure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from rsbench.goals import spoofing
from rsbench.goals.spoofing import SpoofExample


def test_distances_by_hand() -> None:
    x = torch.zeros(1, 2, 2)
    x_adv = torch.tensor([[[0.0, 0.3], [0.4, 0.0]]])
    assert spoofing.l2(x, x_adv) == pytest.approx(0.5)
    assert spoofing.linf(x, x_adv) == pytest.approx(0.4)
    assert spoofing.tv(x, x_adv) == pytest.approx(2 * 0.09 + 2 * 0.16)  # rows 0.3, 0.4; columns 0.4, 0.3


@pytest.mark.parametrize("shape,sigma", [((3, 16, 16), 1.5), ((1, 8, 8), 0.7)])
def test_ssim_matches_scikit_image(shape: tuple[int, int, int], sigma: float) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=generator)
    x_adv = (x + 0.2 * torch.randn(shape, generator=generator)).clamp(0, 1)
    expected = metrics.structural_similarity(
        x.numpy(), x_adv.numpy(), data_range=1.0, channel_axis=0,
        gaussian_weights=True, sigma=sigma, use_sample_covariance=False,
    )
    assert spoofing.ssim(x, x_adv, sigma=sigma) == pytest.approx(expected, abs=1e-6)
    assert spoofing.ssim(x, x) == pytest.approx(1.0)


def test_ssim_window_is_cut_to_small_images() -> None:
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    # an 11x11 window cannot fit an 8x8 image: a 7x7 one is used, and a constant shift still lowers the index
    assert 0.0 < spoofing.ssim(x, (x + 0.3).clamp(0, 1)) < 1.0


@dataclass(frozen=True)
class Outcome:
    label: int
    natural_prediction: int | None
    natural_radius: float
    adv_prediction: int | None
    adv_radius: float


OUTCOMES = [
    Outcome(0, 0, 0.5, 3, 0.7),  # spoofed, stronger than natural
    Outcome(1, 1, 0.3, 2, 0.1),  # spoofed, weaker
    Outcome(2, 2, 0.4, 2, 0.9),  # the attack image keeps the true label
    Outcome(3, 3, 0.2, None, 0.0),  # abstains at the attack image
]


def test_table_1_metrics_by_hand() -> None:
    assert spoofing.success_rate(OUTCOMES) == 50.0
    assert spoofing.spoof_rate(OUTCOMES) == 25.0
    table = spoofing.radius_table(OUTCOMES)
    assert table["natural_mean"] == pytest.approx(0.35)
    assert table["natural_std"] == pytest.approx(math.sqrt((0.15**2 + 0.05**2 * 2 + 0.15**2) / 4))
    assert table["spoofed_mean"] == pytest.approx(0.4) and table["spoofed_std"] == pytest.approx(0.3)
    assert spoofing.radius_table([])["spoofed_mean"] is None


def test_table_2_errors_by_hand() -> None:
    outcomes = [*OUTCOMES, Outcome(4, 7, 0.6, 5, 0.05)]  # a natural error, spoofed only below epsilon
    assert spoofing.robust_error(outcomes, 0.25) == pytest.approx(100 - 100 * 3 / 5)  # certified >= 0.25: 0, 1, 2
    assert spoofing.attack_error(outcomes, 0.25) == pytest.approx(100 - 100 * 1 / 5)  # only sample 0
    metrics = spoofing.summary(outcomes, epsilon=0.25)
    assert metrics["attack_error"] == pytest.approx(80.0) and metrics["attacked"] == 5.0
    assert "robust_error" not in spoofing.summary(outcomes)


def test_examples_figure_is_written(tmp_path: Path) -> None:
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    examples = [SpoofExample(x, (x + 0.1).clamp(0, 1), 3, 0.42, 5, 0.61), SpoofExample(x[:1], x[:1].flip(-1), 1, 0.2, None, 0.0)]
    path = spoofing.shadow_examples_plot(examples, "shadow on rgbdigits", tmp_path / "shadow_examples.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
