"""The evaluate job end to end on the shipped digits model, with small attack budgets from a user registry."""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from rsbench import engine, registry
from rsbench.attacks.success import is_adversarial
from rsbench.cli import cli
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.errors import RsbenchError
from rsbench.goals.evasion import format_table_1
from rsbench.records import AttackRecord, RunConfig

SMALL_ATTACKS = {
    "caa-small": ("rsbench.attacks.caa:CAA", {"num_noise": 400, "iterations": 25}),
    "caa-direct-small": ("rsbench.attacks.caa_direct:CAADirect", {"num_noise": 400, "iterations": 40}),
}


@pytest.fixture(scope="module")
def user_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    folder = tmp_path_factory.mktemp("registry") / "attacks"
    folder.mkdir()
    for name, (implementation, params) in SMALL_ATTACKS.items():
        spec = {"name": name, "implementation": implementation, "goal": "evasion", "norm": "l2", "params": params}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RSBENCH_REGISTRY", str(folder.parent))
        yield


@pytest.fixture(scope="module")
def reference(user_registry: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("reference")
    return out, run(out, 3, save_examples=True)


def run(out: Path, num_samples: int, save_examples: bool = False, workers: int = 1):
    spec = registry.get_defense("smoothing-digits-0.50")
    attacks = [registry.get_attack(name) for name in SMALL_ATTACKS]
    config = RunConfig(
        command="evaluate", defense=spec.name, defense_hash=spec.spec_hash(), attacks=list(SMALL_ATTACKS),
        attack_hashes=[a.spec_hash() for a in attacks], num_samples=num_samples, n0=20, n=500, alpha=0.01,
        batch_size=500, seed=1, workers=workers, judge_n=400, confirm_n=4000,
    )
    return engine.evaluate(spec, attacks, config, out, torch.device("cpu"), save_examples=save_examples,
                               progress=False)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in rows]


def test_records_examples_and_summary(reference: tuple[Path, object]) -> None:
    out, result = reference
    clean = [json.loads(line) for line in (out / "clean.jsonl").read_text().splitlines()]
    attacked = [c["index"] for c in clean if c["correct"]]
    rows = records(out)
    assert attacked and sorted((r["index"], r["attack"]) for r in rows) == sorted(
        (i, a) for i in attacked for a in SMALL_ATTACKS
    )
    assert set(rows[0]) == set(AttackRecord.model_fields)
    assert all((r["best_radius"] is not None) == r["success"] for r in rows)
    assert any(r["success"] for r in rows)
    assert result.metrics["attacked_samples"] == len(attacked)
    assert all((r["judge_n"], r["judge_alpha"], r["confirm_n"]) == (400, 0.005, 4000) for r in rows)
    assert (result.config.judge_n, result.config.confirm_n) == (400, 4000)
    assert all(r["rejected"] <= r["candidates"] and r["total_time_s"] >= (r["best_time_s"] or 0) for r in rows)
    assert set(result.metrics["attacks"]) == set(SMALL_ATTACKS)
    saved = json.loads((out / "result.json").read_text())
    assert saved["config"]["command"] == "evaluate" and [a["name"] for a in saved["attacks"]] == list(SMALL_ATTACKS)
    assert (out / "attack_proportion.png").stat().st_size > 1000

    dataset = load_dataset("digits")
    defense = load_defense("smoothing-digits-0.50")
    for name in SMALL_ATTACKS:
        successes = {r["index"]: r for r in rows if r["attack"] == name and r["success"]}
        assert successes, f"{name} broke no sample"
        examples = torch.load(out / "adversarial" / f"{name}.pt", weights_only=True)
        assert sorted(examples["index"].tolist()) == sorted(successes)
        for index, x, x_adv in zip(examples["index"].tolist(), examples["x"], examples["x_adv"]):
            record = successes[index]
            torch.testing.assert_close(x, dataset[index][0])
            assert float((x_adv - x).norm()) == pytest.approx(record["best_radius"], rel=1e-6)
            assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
            # fresh noise, ten times the attack's N (the same threshold at N would re-test a winner's curse)
            counts = defense.sample_counts(x_adv, 2000, torch.Generator().manual_seed(12345 + index))
            assert is_adversarial(counts, record["label"], 0.005)


def test_resume_after_a_torn_write_repeats_nothing_and_extends(reference: tuple[Path, object], tmp_path: Path) -> None:
    done, _ = reference
    out = tmp_path / "run"
    shutil.copytree(done, out)
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:-1]) + lines[-1][:20])  # killed while writing the last record
    run(out, 4)
    resumed = records(out)
    assert without_times(resumed[: len(lines)]) == without_times(records(done))  # same streams, same records
    keys = [(r["index"], r["attack"]) for r in resumed]
    assert len(keys) == len(set(keys))
    clean = [json.loads(line) for line in (out / "clean.jsonl").read_text().splitlines()]
    assert [c["index"] for c in clean] == [0, 1, 2, 3]
    assert {k for k in keys if k[0] == 3} == ({(3, a) for a in SMALL_ATTACKS} if clean[3]["correct"] else set())


def test_worker_processes_write_the_records_one_process_writes(
    reference: tuple[Path, object], tmp_path: Path
) -> None:
    done, result = reference
    out = tmp_path / "run"
    parallel = run(out, 3, save_examples=True, workers=2)
    key = lambda r: (r["index"], r["attack"])  # noqa: E731 - workers finish in any order
    assert without_times(sorted(records(out), key=key)) == without_times(sorted(records(done), key=key))
    assert parallel.config.workers == 2
    for name in SMALL_ATTACKS:
        assert parallel.metrics["attacks"][name]["r50"] == result.metrics["attacks"][name]["r50"]
        mine, theirs = (torch.load(d / "adversarial" / f"{name}.pt", weights_only=True) for d in (out, done))
        order, their_order = mine["index"].argsort(), theirs["index"].argsort()
        torch.testing.assert_close(mine["x_adv"][order], theirs["x_adv"][their_order])


def test_a_worker_that_cannot_start_reports_why(user_registry: None, tmp_path: Path) -> None:
    spec = registry.get_defense("smoothing-digits-0.50")
    missing = spec.weights.model_copy(update={"source": "file", "filename": str(tmp_path / "gone.pt")})
    broken = spec.model_copy(update={"weights": missing})
    attacks = [registry.get_attack("caa-small")]
    config = RunConfig(
        command="evaluate", defense=spec.name, defense_hash=broken.spec_hash(), attacks=["caa-small"],
        attack_hashes=[attacks[0].spec_hash()], num_samples=2, n0=20, n=500, alpha=0.01, batch_size=500, seed=1,
        workers=2,
    )
    with pytest.raises(RsbenchError, match="gone.pt does not exist"):
        engine.evaluate(broken, attacks, config, tmp_path / "run", torch.device("cpu"), progress=False)


def test_a_run_naming_fewer_attacks_reuses_their_records_and_reports_only_them(
    reference: tuple[Path, object], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    spec = registry.get_defense("smoothing-digits-0.50")
    only = registry.get_attack("caa-small")
    config = RunConfig(
        command="evaluate", defense=spec.name, defense_hash=spec.spec_hash(), attacks=["caa-small"],
        attack_hashes=[only.spec_hash()], num_samples=1, n0=20, n=500, alpha=0.01, batch_size=500, seed=1,
        judge_n=400, confirm_n=4000,
    )
    before = (out / "samples.jsonl").read_bytes()
    result = engine.evaluate(spec, [only], config, out, torch.device("cpu"), progress=False)
    assert (out / "samples.jsonl").read_bytes() == before
    assert list(result.metrics["attacks"]) == ["caa-small"] and result.num_samples == 1
    assert json.loads((out / "config.json").read_text())["attacks"] == list(SMALL_ATTACKS)


def test_cli_prints_table_1(user_registry: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["evaluate", "--defense", "smoothing-digits-0.5", "--attack", "caa-direct-small", "--num-samples", "1", "--n0", "20", "--n", "500", "--alpha", "0.01", "--device", "cpu", "--judge-n", "400",
         "--out", str(tmp_path / "cli")],
    )
    assert result.exit_code == 0, result.output
    assert "Success" in result.output and "%-Cohen" in result.output and "caa-direct-small" in result.output
    assert "judge N=400, alpha=0.005, confirmation on 4000 fresh copies" in result.output
    assert "Confirmed" in result.output and "the paper's ratios" in result.output
    assert (tmp_path / "cli" / "result.json").exists()
    opening = result.output.index("caa-direct-small: success ")
    assert "beside the median certified radius" in result.output and opening < result.output.index("Smallest attack")


def test_evaluate_opens_with_success_and_r50_beside_the_median_certified_radius(reference: tuple[Path, object]) -> None:
    out, result = reference
    median = statistics.median({r["index"]: r["cohen_radius"] for r in records(out)}.values())
    assert result.metrics["median_certified_radius"] == pytest.approx(median)
    lines = engine.format_headline(result).splitlines()
    assert len(lines) == len(SMALL_ATTACKS)
    for name, line in zip(SMALL_ATTACKS, lines):
        row = result.metrics["attacks"][name]
        assert line.startswith(f"{name}: success {row['success']:.0f}% of {row['attacked']} attacked, r50 "
                               f"{row['r50']:.2f} beside the median certified radius {median:.2f} (the smallest "
                               f"examples lie a median {row['pct_cohen']:.0f}% beyond their certificates)")


def test_cli_rejects_an_unknown_attack_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["evaluate", "--defense", "smoothing-digits-0.5", "--attack", "caaa",
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown attack 'caaa'" in result.output and "did you mean" in result.output
    assert "Traceback" not in result.output


def test_evaluates_table_gives_both_rules_with_intervals(reference: tuple[Path, object]) -> None:
    """Under Table 1, every attack's success, best and r50 under the strict rule (the table's own numbers) and the
    paper's (the judge's test alone: the samples where it accepted a candidate), each with its interval; result.json
    keeps them."""
    out, result = reference
    rules = result.metrics["attacks_by_rule"]
    table = format_table_1(result)
    assert "Both rules, 95% bootstrap intervals over the attacked samples" in table
    for name in SMALL_ATTACKS:
        strict, paper = rules["strict"][name], rules["paper"][name]
        assert strict["success"][0] == pytest.approx(result.metrics["attacks"][name]["success"])
        accepted = [r for r in records(out) if r["attack"] == name]
        assert paper["success"][0] == pytest.approx(100 * sum(r["candidates"] > 0 for r in accepted) / len(accepted))
        for rule, row in (("strict", strict), ("paper", paper)):
            line = next(line for line in table.splitlines() if line.split()[:2] == [name, rule])
            value, low, high = row["success"]
            assert line.split()[2:5] == [f"{value:.0f}", f"[{low:.0f},", f"{high:.0f}]"]
    saved = json.loads((out / "result.json").read_text())["metrics"]["attacks_by_rule"]
    first = next(iter(SMALL_ATTACKS))
    assert saved["paper"][first]["success"] == pytest.approx(list(rules["paper"][first]["success"]))
