"""The run's protocol judges every attack, and only confirmed candidates are reported.

On a binary linear base classifier f(x) = [w.x + b > 0] smoothed with noise sigma, the
smoothed probability of class 1 at signed distance d past the boundary is Phi(d / sigma)
exactly, so whether a point is truly adversarial is known: d > 0.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import BinaryLinear, harness
from pydantic import Field
from scipy.stats import norm

from rsbench import engine, metrics, registry, runner
from rsbench.attacks.base import Attack, Tracker, ViewParams
from rsbench.cli import cli
from rsbench.defenses.smoothed_view import SmoothedView
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError
from rsbench.goals.evasion import Evasion
from rsbench.records import AttackRecord
from rsbench.specs import AttackSpec

SIGMA = 0.5
W = torch.tensor([0.6, -0.8, 0.0, 0.0])  # unit norm: w.x + b is the signed distance
BIAS = 0.0


class ProposerParams(ViewParams):
    """A loose view (N 50, alpha 0.5), which must not loosen the judge."""

    num_noise: int = Field(50, ge=1)
    alpha: float = Field(0.5, gt=0, lt=1)
    distances: tuple[float, ...] = (0.0,)
    """Signed distances past the boundary of the points proposed, in order."""
    repeats: int = Field(1, ge=1)
    """How often the whole list is proposed."""


class Proposer(Attack):
    """Proposes fixed points along w, ignoring the view: a stand-in for an attack that insists."""

    Params = ProposerParams
    params: ProposerParams

    def run(self, view: SmoothedView, x: torch.Tensor, label: int, tracker: Tracker, generator: torch.Generator) -> None:
        origin = float(W @ x.flatten())
        for _ in range(self.params.repeats):
            for d in self.params.distances:
                tracker.offer(x + (d - origin - BIAS) * W.view_as(x))
                tracker.iterations += 1


def run(params: dict[str, object], seed: int, **judge: float) -> tuple[AttackRecord, Evasion]:
    """One run of the proposer through the engine's evasion job on the linear problem, from x at distance -0.3."""
    defense = Smoothing(BinaryLinear(W, BIAS), 2, SIGMA, batch_size=5000)
    x = (-0.3 * W + 0.5 * torch.tensor([0.0, 0.0, 1.0, 1.0])).view(1, 2, 2)
    spec = AttackSpec(name="proposer", implementation="test_judge:Proposer", goal="evasion", norm="l2", params=params)
    job = harness(defense, [spec], sigma=SIGMA, seed=seed, **judge)
    record, _ = job.attack("proposer", x, 0, seed, None)
    return record, job


def test_a_point_just_inside_the_boundary_proposed_a_thousand_times_is_a_failure() -> None:
    inside = SIGMA * norm.ppf(0.499)  # class 1 has probability 0.499: not adversarial
    params = {"distances": (inside,), "repeats": 1000}
    # the Goodman band is about 3 standard errors wide at any N, so a small N shows the same
    trials = [run(params, seed, judge_n=300, confirm_n=3000)[0] for seed in range(20)]
    accepted = [r for r in trials if r.candidates > 0]
    # one Goodman test accepts the point about once in a thousand tries, so many trials see it
    # accepted at least once: without confirmation they would be reported as successes
    assert len(accepted) >= 8
    assert all(r.judge_calls < 1000 for r in accepted)  # the same point is judged again only until accepted
    assert sum(r.success for r in trials) == 0  # the Bonferroni-split alpha of 0.005 over 20 trials: ~0.05 expected
    assert all(r.rejected == r.candidates for r in trials)


def test_the_papers_rule_counts_what_the_judge_accepted_and_the_strict_rule_only_what_was_confirmed() -> None:
    """The same records read both ways: a point just inside the boundary, accepted by some of the judge's single
    Goodman tests, is a success under the certification-aware-attack paper's rule and never under rsbench's."""
    inside = SIGMA * norm.ppf(0.499)
    trials = [run({"distances": (inside,), "repeats": 1000}, seed, judge_n=300, confirm_n=3000)[0]
              for seed in range(10)]
    accepted = [r for r in trials if r.candidates > 0]
    assert accepted and all(r.judged_best_radius == pytest.approx(0.3 + inside, abs=1e-5) for r in accepted)
    assert all(r.judged_best_radius is None for r in trials if not r.candidates)
    trials = [r.model_copy(update={"index": i}) for i, r in enumerate(trials)]  # ten samples, not one ten times
    rules = metrics.rule_table(trials)
    paper, strict = rules["paper"]["proposer"], rules["strict"]["proposer"]
    assert paper["success"][0] == 100 * len(accepted) / len(trials) and strict["success"] == (0, 0, 0)
    assert paper["r50"][0] == pytest.approx(0.3 + inside, abs=1e-5) and strict["r50"][0] is None
    assert paper["success"][1] <= paper["success"][0] <= paper["success"][2]
    older = [r.model_copy(update={"judged_best_radius": None}) for r in trials]  # records from before the field
    assert metrics.rule_table(older)["paper"]["proposer"]["success"] == paper["success"]
    assert metrics.rule_table(older)["paper"]["proposer"]["best"][0] is None


def test_confirmed_examples_lie_past_the_boundary() -> None:
    generator = torch.Generator().manual_seed(0)
    false_confirmations = confirmed = 0
    for seed in range(30):
        distances = tuple((0.08 * SIGMA * (2 * torch.rand(40, generator=generator) - 1)).tolist())
        record, _ = run({"distances": distances}, seed)
        if record.success:
            confirmed += 1
            # the best example's distance from x tells its signed distance past the boundary
            false_confirmations += record.best_radius - 0.3 <= 0
            assert record.first_radius >= record.best_radius and record.first_time_s is not None
    assert confirmed >= 10  # points well past the boundary are confirmed
    assert false_confirmations == 0


def test_an_attack_with_a_loose_view_gets_exactly_the_runs_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, float]] = []
    original = SmoothedView.hard_counts

    def counting(self: SmoothedView, x: torch.Tensor, generator: torch.Generator, num: int | None = None):
        calls.append((self.num_noise, self.num_noise if num is None else num, self.alpha))
        return original(self, x, generator, num)

    monkeypatch.setattr(SmoothedView, "hard_counts", counting)
    record, job = run({"distances": (0.05, 0.2, 0.4)}, 3, judge_n=1200, judge_alpha=0.01, confirm_n=9000)
    assert (job.views["proposer"].num_noise, job.views["proposer"].alpha) == (50, 0.5)  # the attack's own view
    assert (record.judge_n, record.judge_alpha, record.confirm_n) == (1200, 0.01, 9000)
    assert calls and all(n == 1200 and alpha == 0.01 for n, _, alpha in calls)
    assert {num for _, num, _ in calls} == {1200, 9000}
    assert record.success and record.candidates == 3 and record.rejected == 0


def test_a_registered_loose_spec_is_judged_by_the_protocol(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "attacks"
    folder.mkdir()
    spec = {"name": "loose-pgd", "implementation": "rsbench.attacks.pgd:PGD", "goal": "evasion", "norm": "l2",
            "params": {"num_noise": 50, "alpha": 0.5, "iterations": 2}}
    (folder / "loose-pgd.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("RSBENCH_REGISTRY", str(tmp_path))
    defense_spec = registry.get_defense("smoothing-digits-0.5")
    attack = registry.get_attack("loose-pgd")
    config = runner.run_config(defense_spec, "evaluate", num_samples=1, n0=10, n=100, alpha=0.01,
                               attacks=["loose-pgd"], attack_hashes=[attack.spec_hash()])
    job = engine.SampleWorker(defense_spec, [attack], config, torch.device("cpu")).goal
    assert (job.views["loose-pgd"].num_noise, job.views["loose-pgd"].alpha) == (50, 0.5)
    assert (job.judging.num_noise, job.judging.alpha) == (1500, 0.005) == (config.judge_n, config.judge_alpha)
    assert config.confirm_n == 15_000


def test_a_confirmation_weaker_than_the_judge_is_refused() -> None:
    defense_spec = registry.get_defense("smoothing-digits-0.5")
    with pytest.raises(RsbenchError, match=r"--confirm-n \(1000\) must be at least --judge-n \(1500\)"):
        runner.run_config(defense_spec, "evaluate", num_samples=1, confirm_n=1000)
    assert runner.run_config(defense_spec, "evaluate", num_samples=1, judge_n=300).confirm_n == 3000


def test_the_cli_refuses_a_weak_confirmation_in_one_line(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["evaluate", "--defense", "smoothing-digits-0.5", "--attack", "pgd",
                                      "--confirm-n", "100", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--confirm-n (100) must be at least --judge-n (1500)" in result.output
