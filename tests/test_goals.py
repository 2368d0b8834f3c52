"""`rsbench evaluate` for every goal on the shipped defenses, re-checked from the saved files alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from rsbench import engine, registry, runner
from rsbench.cli import cli
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.errors import RsbenchError
from rsbench.goals.degradation import rejects
from rsbench.specs import CertifyDefaults

QUICK = {
    "degradation-pgd-quick": ("rsbench.attacks.degradation:DegradationPGD", "l2", {"iterations": 10, "num_noise": 20}),
    "degradation-adaptive-quick": ("rsbench.attacks.degradation:DegradationAdaptive", "l2",
                                   {"iterations": 10, "num_noise": 100}),
    "degradation-adaptive-linf": ("rsbench.attacks.degradation:DegradationAdaptive", "linf", {"iterations": 10}),
    "pgd-l2-quick": ("rsbench.attacks.bounded_pgd:BoundedPGD", "l2", {"iterations": 10, "restarts": 2}),
    "pgd-linf-quick": ("rsbench.attacks.bounded_pgd:BoundedPGD", "linf", {"iterations": 10, "restarts": 2}),
    "shadow-quick": ("rsbench.attacks.shadow:Shadow", "l2",
                     {"steps": 30, "num_noise": 64, "select_n": 500, "max_targets": 3, "one_channel": True}),
    "shadow-linf-quick": ("rsbench.attacks.shadow:Shadow", "linf", {"steps": 30, "max_targets": 3,
                                                                   "one_channel": True}),
}


@pytest.fixture(autouse=True)
def quick_registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path_factory.getbasetemp() / "goal-registry"
    (folder / "attacks").mkdir(parents=True, exist_ok=True)
    for name, (implementation, norm, params) in QUICK.items():
        goal = "evasion" if name.startswith("pgd") else "spoofing" if name.startswith("shadow") else "degradation"
        spec = {"name": name, "implementation": implementation, "goal": goal, "norm": norm, "params": params}
        (folder / "attacks" / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("RSBENCH_REGISTRY", str(folder))


def evaluate(defense: str, attacks: list[str], out: Path, num_samples: int, **settings: object):
    spec = registry.get_defense(defense)
    specs = [registry.get_attack(name) for name in attacks]
    goal = specs[0].goal
    config = runner.run_config(
        spec, "evaluate", num_samples=num_samples, goal=goal,
        epsilon=runner.default_epsilon(spec, goal, settings.pop("epsilon", None)),
        attacks=attacks, attack_hashes=[s.spec_hash() for s in specs], **settings,
    )
    return engine.evaluate(spec, specs, config, out, torch.device("cpu"), save_examples=True, progress=False)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("defense", "attack"), [("gloro-digits-0.50", "degradation-adaptive-quick"),
                                                 ("kw-digits-0.10", "degradation-adaptive-linf")])
def test_degradation_of_deterministic_defenses_rechecked_from_the_saved_examples(
    defense: str, attack: str, tmp_path: Path
) -> None:
    result = evaluate(defense, [attack], tmp_path, 12)
    m = result.metrics
    eps = result.config.epsilon
    assert eps == registry.get_defense(defense).epsilon
    clean = [json.loads(line) for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    test_r = [c for c in clean if c["correct"] and c["radius"] >= eps]
    assert m["test_R"] == len(test_r) and {r["index"] for r in rows(tmp_path)} == {c["index"] for c in test_r}
    assert m["attacks"][attack]["fpr_lower"]["value"] <= m["fpr_upper"]["value"]
    successes = {r["index"]: r for r in rows(tmp_path) if r["success"]}
    assert successes, "the adaptive attack degraded no sample"
    saved = torch.load(tmp_path / "adversarial" / f"{attack}.pt", weights_only=True)
    assert sorted(saved["index"].tolist()) == sorted(successes)
    fresh = load_defense(defense)
    norm = 2 if fresh.norm == "l2" else float("inf")
    for index, x, x_adv in zip(saved["index"].tolist(), saved["x"], saved["x_adv"]):
        assert float((x_adv - x).flatten().norm(p=norm)) <= eps * (1 + 1e-6)
        assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
        assert rejects(fresh, x_adv, eps)  # the defense's own API rejects the saved example
        assert not successes[index]["certified_2eps"]  # monotonicity: certified at 2 eps cannot be degraded
    assert (tmp_path / "degradation_curve.png").stat().st_size > 1000


def test_degradation_of_smoothing_counts_only_confident_rejections_that_fresh_certificates_repeat(
    tmp_path: Path
) -> None:
    result = evaluate("smoothing-digits-0.25", ["degradation-pgd-quick", "degradation-adaptive-quick"], tmp_path, 6,
                      n0=50, n=2000, alpha=0.01, epsilon=0.25)
    m = result.metrics
    for name in ("degradation-pgd-quick", "degradation-adaptive-quick"):
        assert m["attacks"][name]["fpr_lower"]["value"] <= m["fpr_upper"]["value"] + 1e-12
    assert engine.format_headline(result).splitlines() == [
        f"{name}: degraded {100 * m['attacks'][name]['fpr_lower']['value']:.1f}% of the {m['test_R']} inputs "
        f"certified at epsilon 0.25 (FPR lower bound; upper bound {100 * m['fpr_upper']['value']:.1f}%)"
        for name in ("degradation-pgd-quick", "degradation-adaptive-quick")]
    records = rows(tmp_path)
    assert all(r["judged"] or not r["success"] for r in records)  # a success was first judged in the loop
    fresh = load_defense(registry.get_defense("smoothing-digits-0.25").model_copy(
        update={"certify": CertifyDefaults(n0=50, n=2000, alpha=0.01, batch_size=2000)}))
    checks = []
    for name in ("degradation-pgd-quick", "degradation-adaptive-quick"):
        saved = torch.load(tmp_path / "adversarial" / f"{name}.pt", weights_only=True)
        for k, (x, x_adv) in enumerate(zip(saved["x"], saved["x_adv"])):
            assert float((x_adv - x).norm()) <= 0.25 * (1 + 1e-6)
            # a confident rejection: every fresh CERTIFY rejects it, up to its failure probability
            checks += [rejects(fresh, x_adv, 0.25, torch.Generator().manual_seed(100 * k + j)) for j in range(3)]
    assert len(checks) >= 6 and all(checks)


@pytest.mark.parametrize(("defense", "attack"), [("gloro-digits-0.25", "pgd-l2-quick"),
                                                 ("kw-digits-0.05", "pgd-linf-quick")])
def test_evasion_of_deterministic_defenses_never_breaks_a_certified_sample(
    defense: str, attack: str, tmp_path: Path
) -> None:
    result = evaluate(defense, [attack], tmp_path, 15)
    robustness = result.metrics["robustness"]
    assert robustness["certified_broken"] == 0
    assert robustness["vra"]["value"] <= robustness["all"]["value"] <= result.clean_accuracy
    clean = {c["index"]: c for c in map(json.loads, (tmp_path / "clean.jsonl").read_text().splitlines())}
    dataset, fresh = load_dataset("digits"), load_defense(defense)
    eps = result.config.epsilon
    for r in rows(tmp_path):
        if r["success"]:
            assert clean[r["index"]]["radius"] < eps
            x_adv = torch.load(tmp_path / "adversarial" / f"{attack}.pt", weights_only=True)
            row = x_adv["index"].tolist().index(r["index"])
            assert int(fresh.model(x_adv["x_adv"][row][None]).argmax()) != dataset[r["index"]][1]
    assert "VRA (certified at epsilon)" in engine.format_table(result)
    under = robustness["attacks"][attack]["value"]
    assert engine.format_headline(result) == (f"{attack}: robust accuracy {100 * under:.1f}% at epsilon {eps:g}, "
                                              f"VRA {100 * robustness['vra']['value']:.1f}%")


def test_a_run_mixing_goals_is_refused_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["evaluate", "--defense", "gloro-digits-0.25", "--attack", "pgd-l2-quick",
                                      "--attack", "degradation-adaptive-quick", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "one run evaluates attacks of one goal" in result.output


def test_an_attack_refuses_a_defense_kind_it_does_not_attack(tmp_path: Path) -> None:
    with pytest.raises(RsbenchError, match="attacks smoothing defenses; 'gloro-digits-0.25' is gloro"):
        evaluate("gloro-digits-0.25", ["caa"], tmp_path / "kind", 2)
    with pytest.raises(RsbenchError, match="'pgd-l2-quick' measures l2; 'kw-digits-0.05' certifies linf"):
        evaluate("kw-digits-0.05", ["pgd-l2-quick"], tmp_path / "norm", 2)
    assert not (tmp_path / "kind").exists() and not (tmp_path / "norm").exists()  # refused before writing


def test_degradation_curve_from_one_certification_pass(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["degradation-curve", "--defense", "gloro-digits-0.25", "--num-samples", "20",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    clean = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    points = json.loads((tmp_path / "degradation_curve.json").read_text())
    assert len(points) == 100 and (tmp_path / "degradation_curve.png").stat().st_size > 1000
    for p in points:  # every point re-derived from the certified radii alone
        certified = [c for c in clean if c["correct"] and c["radius"] >= p["epsilon"]]
        assert p["vra"] == pytest.approx(len(certified) / len(clean))
        expected = sum(c["radius"] < 2 * p["epsilon"] for c in certified) / max(len(certified), 1)
        assert p["fpr_upper"] == pytest.approx(expected)


def test_spoofing_of_smoothing_reports_a_certificate_an_outsider_rederives(tmp_path: Path) -> None:
    result = evaluate("smoothing-digits-0.50", ["shadow-quick"], tmp_path, 4, n0=50, n=1000, alpha=0.01)
    records = rows(tmp_path)
    assert records and result.metrics["attacks"]["shadow-quick"]["attacked"] == len(records)
    saved = torch.load(tmp_path / "adversarial" / "shadow-quick.pt", weights_only=True)  # saved without asking
    fresh = load_defense(registry.get_defense("smoothing-digits-0.50").model_copy(
        update={"certify": CertifyDefaults(n0=50, n=1000, alpha=0.01, batch_size=1000)}))
    for r in records:
        x_adv = saved["x_adv"][saved["index"].tolist().index(r["index"])]
        # the reported certificate is CERTIFY on the harness's own stream, which the attack never drew from
        again = fresh.certify(x_adv, generator=runner.stream(0, r["index"], "shadow-quick", "certify", torch.device("cpu")))
        assert (again.prediction, again.radius) == (r["adv_prediction"], pytest.approx(r["adv_radius"]))
        assert r["success"] == (r["adv_prediction"] is not None and r["adv_prediction"] != r["label"])
        assert r["l2"] == pytest.approx(float((x_adv - saved["x"][saved["index"].tolist().index(r["index"])]).norm()))
    assert "Spoofed R" in engine.format_table(result)
    row = result.metrics["attacks"]["shadow-quick"]
    assert engine.format_headline(result) == (f"shadow-quick: spoofed {row['success']:.0f}% of {len(records)} attacked "
                                              f"(certified with a wrong label), SSIM {row['ssim_mean']:.2f} to the "
                                              "original")


def test_spoofing_of_a_deterministic_certifier_is_checked_through_its_own_certify(tmp_path: Path) -> None:
    result = evaluate("kw-digits-0.05", ["shadow-linf-quick"], tmp_path, 6)
    eps = result.config.epsilon
    row = result.metrics["attacks"]["shadow-linf-quick"]
    assert {"robust_error", "attack_error"} <= set(row)
    saved = torch.load(tmp_path / "adversarial" / "shadow-linf-quick.pt", weights_only=True)
    fresh = load_defense("kw-digits-0.05")
    for r in rows(tmp_path):
        certificate = fresh.certify(saved["x_adv"][saved["index"].tolist().index(r["index"])])
        spoofed = certificate.prediction not in (None, r["label"]) and certificate.radius >= eps
        assert spoofed == r["success"]
