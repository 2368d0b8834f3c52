"""Batched certification, reduced precision and run directories: speed settings never change a record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rsbench import batching, engine, registry, runner
from rsbench.cli import cli
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.errors import RsbenchError
from rsbench.layers import ReducedPrecision
from rsbench.leaderboard.track_files import Protocol
from rsbench.records import RunConfig, SampleRecord
from rsbench.rundir import RunDir, default_path

DEFENSE = "smoothing-digits-0.50"


def without_times(records: list) -> list[dict]:
    return [{k: v for k, v in r.model_dump().items() if not k.endswith("time_s")} for r in records]


def test_certify_many_equals_certify_one_at_a_time() -> None:
    defense = load_defense(DEFENSE)
    defense.n0, defense.n, defense.batch_size = 50, 1700, 300  # a last chunk shorter than the others
    dataset = load_dataset("digits", "test")
    xs = [dataset[i][0] for i in range(6)]
    alone = [defense.certify(x, generator=runner.sample_generator(3, i, torch.device("cpu"))) for i, x in enumerate(xs)]
    together = defense.certify_many(xs, [runner.sample_generator(3, i, torch.device("cpu")) for i in range(6)])
    assert together == alone
    assert len({c.p_lower for c in alone}) > 1  # the six certificates differ, so a mix-up would show


def test_batched_counts_use_each_inputs_own_stream() -> None:
    defense = load_defense(DEFENSE)
    defense.batch_size = 128
    x = load_dataset("digits", "test")[0][0]
    pair = torch.stack([x, x])
    counts = defense.sample_counts_many(pair, 1000, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    assert torch.equal(counts[0], defense.sample_counts(x, 1000, torch.Generator().manual_seed(1)))
    assert torch.equal(counts[1], defense.sample_counts(x, 1000, torch.Generator().manual_seed(2)))
    assert not torch.equal(counts[0], counts[1])


def config(n: int = 300, **extra: object) -> RunConfig:
    spec = registry.get_defense(DEFENSE)
    return runner.run_config(spec, "certify", num_samples=7, n0=20, n=n, alpha=0.01, batch_size=100, seed=2, **extra)


def test_certify_runs_with_several_images_per_pass_write_the_same_records(tmp_path: Path) -> None:
    spec = registry.get_defense(DEFENSE)
    one = runner.certify(spec, config(), tmp_path / "one", torch.device("cpu"), progress=False, images_per_batch=1)
    four = runner.certify(spec, config(), tmp_path / "four", torch.device("cpu"), progress=False, images_per_batch=4)
    assert one.certified_accuracy == four.certified_accuracy
    records = [runner.certify_records(tmp_path / name, config()) for name in ("one", "four")]
    assert without_times(records[0]) == without_times(records[1])
    assert len(records[0]) == 7


def test_an_evaluate_run_in_batches_writes_the_records_of_one_sample_at_a_time(tmp_path: Path) -> None:
    spec = registry.get_defense("gloro-digits-0.25")
    attacks = [registry.get_attack("degradation-pgd")]
    settings = dict(num_samples=8, seed=1, goal="degradation", epsilon=0.25, attacks=["degradation-pgd"],
                    attack_hashes=[attacks[0].spec_hash()])
    runs = {}
    for per_batch in (1, 3):
        out = tmp_path / str(per_batch)
        engine.evaluate(spec, attacks, runner.run_config(spec, "evaluate", **settings), out, torch.device("cpu"),
                        progress=False, images_per_batch=per_batch)
        runs[per_batch] = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(runs[1]) >= 3
    for record in (*runs[1], *runs[3]):
        record.pop("time_s", None)
        record.pop("total_time_s", None)
    assert sorted(runs[1], key=lambda r: r["index"]) == sorted(runs[3], key=lambda r: r["index"])


def test_the_automatic_choice_is_one_image_on_the_cpu_and_the_users_when_given() -> None:
    model = torch.nn.Linear(4, 2)
    assert batching.images_per_batch(model, (4,), 100, torch.device("cpu")) == 1
    assert batching.images_per_batch(model, (4,), 100, torch.device("cpu"), requested=7) == 7
    assert [len(g) for g in batching.chunked(list(range(10)), 4)] == [4, 4, 2]


def test_reduced_precision_is_recorded_and_refused_where_it_would_break_a_certificate(tmp_path: Path) -> None:
    spec = registry.get_defense(DEFENSE)
    bf16 = config(precision="bf16", channels_last=True)
    defense = runner.load_for_run(spec, bf16, torch.device("cpu"))
    assert isinstance(defense.base_classifier, ReducedPrecision)
    x = load_dataset("digits", "test")[0][0]
    logits = defense.base_classifier(x[None])
    assert logits.dtype == torch.float32
    exact = load_defense(DEFENSE).base_classifier(x[None])
    assert not torch.equal(logits, exact) and torch.allclose(logits, exact, atol=0.2, rtol=0.05)
    result = runner.certify(spec, bf16, tmp_path / "bf16", torch.device("cpu"), progress=False)
    assert result.config.precision == "bf16" and result.config.channels_last
    with pytest.raises(RsbenchError, match="fp32"):
        Protocol.of_run(bf16.model_copy(update={"command": "evaluate"}), "smoothing")
    gloro = registry.get_defense("gloro-digits-0.25")
    with pytest.raises(RsbenchError, match="apply to smoothing"):
        runner.load_for_run(gloro, runner.run_config(gloro, "certify", num_samples=1, precision="fp16"),
                            torch.device("cpu"))


def test_default_run_directories_differ_with_the_settings_that_fix_the_records() -> None:
    assert default_path(config(n=300)) != default_path(config(n=1000))
    assert default_path(config(precision="bf16")) != default_path(config())
    grown = config().model_copy(update={"num_samples": 50, "workers": 2})
    assert default_path(grown) == default_path(config())


def test_the_cli_puts_runs_with_different_n_in_different_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for n in ("100", "200"):
        result = CliRunner().invoke(cli, ["certify", "--defense", DEFENSE, "--num-samples", "2", "--n0", "10",
                                          "--n", n, "--device", "cpu"])
        assert result.exit_code == 0, result.output
    folders = sorted(p.name for p in (tmp_path / "runs" / DEFENSE).iterdir())
    assert len(folders) == 2 and all(f.startswith("certify-seed0-") for f in folders)


def evaluate_config(attacks: list[str]) -> RunConfig:
    spec = registry.get_defense("gloro-digits-0.25")
    specs = [registry.get_attack(a) for a in attacks]
    return runner.run_config(spec, "evaluate", num_samples=4, seed=1, goal="degradation", epsilon=0.25,
                             attacks=attacks, attack_hashes=[s.spec_hash() for s in specs])


def test_a_run_with_one_more_attack_reuses_the_others_records_in_any_order(tmp_path: Path) -> None:
    spec = registry.get_defense("gloro-digits-0.25")
    first, both = ["degradation-pgd"], ["degradation-eps-pgd", "degradation-pgd"]
    assert default_path(evaluate_config(first)) == default_path(evaluate_config(both))
    out = tmp_path / "run"
    engine.evaluate(spec, [registry.get_attack(a) for a in first], evaluate_config(first), out, torch.device("cpu"),
                    progress=False)
    before = (out / "samples.jsonl").read_text().splitlines()
    engine.evaluate(spec, [registry.get_attack(a) for a in both], evaluate_config(both), out, torch.device("cpu"),
                    progress=False)
    after = (out / "samples.jsonl").read_text().splitlines()
    assert after[: len(before)] == before  # nothing re-run, nothing duplicated
    names = [json.loads(line)["attack"] for line in after]
    assert names.count("degradation-pgd") == len(before) and names.count("degradation-eps-pgd") == len(before)
    assert json.loads((out / "config.json").read_text())["attacks"] == ["degradation-pgd", "degradation-eps-pgd"]


def test_a_changed_attack_spec_is_refused_in_the_folder_of_its_old_records(tmp_path: Path) -> None:
    RunDir(tmp_path, evaluate_config(["degradation-pgd"]))
    changed = evaluate_config(["degradation-pgd"]).model_copy(update={"attack_hashes": ["0" * 64]})
    with pytest.raises(RsbenchError, match="another spec of attack degradation-pgd"):
        RunDir(tmp_path, changed)
    assert RunDir(tmp_path, evaluate_config(["degradation-pgd"])).records(SampleRecord) == []


def test_the_choice_on_a_gpu_fills_half_the_free_memory_split_between_its_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    free = 4000 * 2**20
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 2 * free))
    monkeypatch.setattr(batching, "memory_per_image", lambda model, shape, copies, device: 50 * 2**20)
    cuda, model = torch.device("cuda"), torch.nn.Linear(4, 2)
    assert batching.images_per_batch(model, (4,), 100, cuda) == 40  # half of 4000 MiB in 50 MiB images
    assert batching.images_per_batch(model, (4,), 100, cuda, sharing=4) == 10
    free = 10 * 2**30
    assert batching.images_per_batch(model, (4,), 100, cuda) == batching.MAX_IMAGES
    free = 10 * 2**20
    assert batching.images_per_batch(model, (4,), 100, cuda) == 1


def test_the_cli_refuses_reduced_precision_on_gloro_in_one_line_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["evaluate", "--defense", "gloro-digits-0.25", "--attack", "pgd-l2",
                                      "--precision", "bf16", "--num-samples", "1", "--out", str(out)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "apply to smoothing" in result.output
    assert not out.exists()
