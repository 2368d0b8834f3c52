"""The exact MILP verifier checked against independent references: enumeration of activation patterns, a linear
classifier's closed form, the certificates of the shipped KW and CROWN-IBP models, and its run directory."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import tiny_relu_net
from scipy.optimize import linprog
from torch import nn

from rsbench.cli import cli
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.exact.milp import MARGIN
from rsbench.exact.run import ExactRecord, exact_config, verify
from rsbench.exact.verifier import Verifier
from rsbench.registry import get_defense

NEGLIGIBLE = 1e-6
"""Brute-force optima closer than this to a decision threshold are left out: either answer would be right."""


def _regions(net: nn.Sequential, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Every activation pattern of a ReLU MLP as (A, c, G, h): on the region {x: G x <= h} the logits are A x + c."""
    linears = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in net if isinstance(m, nn.Linear)]
    widths = [bias.size for _, bias in linears[:-1]]
    regions = []
    for pattern in itertools.product([0.0, 1.0], repeat=sum(widths)):
        slope, offset, rows, limits, used = np.eye(n), np.zeros(n), [], [], 0
        for (weight, bias), width in zip(linears[:-1], widths):
            on = np.array(pattern[used:used + width])
            used += width
            pre_slope, pre_offset = weight @ slope, weight @ offset + bias
            sign = np.where(on == 1, -1.0, 1.0)  # active: -z <= 0, inactive: z <= 0
            rows.append(sign[:, None] * pre_slope)
            limits.append(-sign * pre_offset)
            slope, offset = on[:, None] * pre_slope, on * pre_offset
        weight, bias = linears[-1]
        regions.append((weight @ slope, weight @ offset + bias, np.vstack(rows), np.concatenate(limits)))
    return regions


def brute_force(net: nn.Sequential, x: np.ndarray, label: int, eps: float) -> tuple[float, float | None]:
    """(max over the ball in [0, 1] of max_j f_j - f_y, min distance to a point with f_j - f_y >= MARGIN), one LP per
    activation pattern and class."""
    n = x.size
    box = list(zip(np.maximum(x - eps, 0), np.minimum(x + eps, 1)))
    worst, closest = -np.inf, None
    for slope, offset, rows, limits in _regions(net, n):
        for j in range(slope.shape[0]):
            if j == label:
                continue
            gap, constant = slope[j] - slope[label], offset[j] - offset[label]
            found = linprog(-gap, A_ub=rows, b_ub=limits, bounds=box, method="highs")
            if found.status == 0:
                worst = max(worst, -found.fun + constant)
            # variables (x', t): min t, |x' - x| <= t, gap . x' + constant >= MARGIN
            objective = np.append(np.zeros(n), 1.0)
            upper = np.vstack([np.hstack([rows, np.zeros((len(rows), 1))]),
                               np.hstack([np.eye(n), -np.ones((n, 1))]), np.hstack([-np.eye(n), -np.ones((n, 1))]),
                               np.append(-gap, 0.0)[None]])
            limit = np.concatenate([limits, x, -x, [constant - MARGIN]])
            found = linprog(objective, A_ub=upper, b_ub=limit, bounds=[*box, (0, eps)], method="highs")
            if found.status == 0 and (closest is None or found.fun < closest):
                closest = float(found.fun)
    return worst, closest


@pytest.mark.slow
def test_decision_and_closest_distance_agree_with_enumerating_activation_patterns() -> None:
    verdicts = []
    for seed in range(3):
        net = tiny_relu_net(seed, (2, 4, 3, 3))
        with torch.no_grad():  # steeper layers, so that the balls below hold both answers
            for layer in net[::2]:
                layer.weight.mul_(3)
        verifier = Verifier(net, (2,))
        generator = torch.Generator().manual_seed(seed)
        for _ in range(2):
            x = torch.rand(2, generator=generator, dtype=torch.float64)
            label = int(net(x[None]).argmax())
            for eps in (0.05, 0.15, 0.4):
                worst, closest = brute_force(net, x.numpy(), label, eps)
                decided, searched = verifier.decide(x, label, eps), verifier.closest(x, label, eps)
                assert decided.neurons == 7 and searched.neurons == 7
                if worst > NEGLIGIBLE:
                    assert decided.exact == "adversarial"
                    assert int(net(decided.example[None]).argmax()) != label
                    assert float((decided.example - x).abs().max()) <= eps + 1e-12
                elif worst < -NEGLIGIBLE:
                    assert decided.exact == "robust"
                    assert 0 < decided.margin_bound <= -worst + 1e-6
                if closest is None:
                    assert searched.exact == "robust"
                else:
                    assert searched.exact == "adversarial"
                    assert searched.distance == pytest.approx(closest, abs=1e-6)
                    assert searched.distance_bound == pytest.approx(closest, abs=1e-6)
                    # a search's example only lowers the MILPs' ceiling: the same closest distance
                    hinted = verifier.closest(x, label, eps, search=lambda *_, point=decided.example: point)
                    assert hinted.search_found and hinted.distance == pytest.approx(closest, abs=1e-6)
                verdicts.append(decided.exact)
    assert verdicts.count("robust") >= 8 and verdicts.count("adversarial") >= 5  # both answers were checked


def test_closest_distance_of_a_linear_classifier_is_its_closed_form() -> None:
    torch.manual_seed(3)
    layer = nn.Linear(6, 4).double()
    with torch.no_grad():
        layer.weight.mul_(4)
    verifier = Verifier(layer, (6,))
    weight, bias = layer.weight.detach(), layer.bias.detach()
    checked = 0
    for _ in range(20):
        x = 0.3 + 0.4 * torch.rand(6, dtype=torch.float64)  # far enough from 0 and 1 that the box stays inactive
        label = int(layer(x[None]).argmax())
        distances = [float((weight[label] - weight[j]) @ x + bias[label] - bias[j] + MARGIN)
                     / float((weight[label] - weight[j]).abs().sum()) for j in range(4) if j != label]
        closed = min(distances)
        if closed > 0.25:
            continue
        searched = verifier.closest(x, label, 0.3)
        assert searched.exact == "adversarial"
        assert searched.distance == pytest.approx(closed, abs=1e-7)
        checked += 1
    assert checked >= 5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kw-digits-0.05", "kw-digits-0.10", "crownibp-digits-0.10"])
def test_every_point_the_shipped_digits_certifiers_certify_is_exactly_robust(name: str) -> None:
    defense = load_defense(name)
    data = load_dataset("digits", "test")
    verifier = Verifier(defense.model, (1, 8, 8))
    certified = 0
    for index in range(8):
        x, label = data[index][0], int(data[index][1])
        if defense.predict(x) != label:  # not certified at epsilon with the true label
            continue
        certified += 1
        verdict = verifier.decide(x, label, defense.epsilon)
        assert verdict.exact == "robust" and verdict.margin_bound > 0
        assert verdict.neurons == 484 and 0 < verdict.stable <= 484
        _, margins = verifier.bounds(x, defense.epsilon, label)
        closest = min((j for j in range(10) if j != label), key=lambda j: margins[j])
        assert verifier.solve(x, label, closest, defense.epsilon).status == "infeasible"  # the MILP itself proves it
    assert certified >= 3


@pytest.mark.slow
def test_the_milp_minimum_lies_between_the_certifiers_bound_and_the_clean_margin() -> None:
    defense = load_defense("kw-digits-0.10")
    x, label = load_dataset("digits", "test")[0]
    verifier = Verifier(defense.model, (1, 8, 8))
    exact_model = copy.deepcopy(defense.model).double()
    eps = 0.06
    _, margins = verifier.bounds(x, eps, int(label))
    with torch.no_grad():
        clean = defense.model(x[None])[0].double()
    for target in (1, 9):
        solved = verifier.solve(x, int(label), target, eps, worst=True)
        assert solved.status == "optimal"
        assert margins[target] - 1e-6 <= solved.bound <= solved.value + 1e-9
        assert solved.value <= float(clean[int(label)] - clean[target]) + 1e-5
        with torch.no_grad():  # the encoding is exact: the network at the solver's point has the solver's margin
            reached = exact_model(torch.from_numpy(solved.point).view(1, 1, 8, 8))[0]
        assert float(reached[int(label)] - reached[target]) == pytest.approx(solved.value, abs=1e-5)


def test_a_time_limit_of_almost_zero_gives_unknown_never_robust() -> None:
    defense = load_defense("kw-digits-0.10")
    x, label = load_dataset("digits", "test")[0]
    verifier = Verifier(defense.model, (1, 8, 8))
    assert not defense.certified_at(x, 0.1)  # the bounds alone do not decide this sample: a MILP must
    assert verifier.decide(x, int(label), 0.1, time_limit=1e-9).exact == "unknown"
    assert verifier.closest(x, int(label), 0.1, time_limit=1e-9).exact == "unknown"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["exact", *args])


@pytest.mark.slow
def test_the_job_resumes_without_duplicates_and_its_examples_check_out(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = invoke("--defense", "kw-digits-0.10", "--num-samples", "3", "--out", str(out))
    assert first.exit_code == 0, first.output
    assert "exact adversarial" in first.output and "certified error" in first.output
    records = (out / "samples.jsonl").read_text().splitlines()
    with (out / "samples.jsonl").open("a") as handle:  # a crash mid-write leaves a torn line
        handle.write('{"index":3,"lab')
    for _ in range(2):  # extended, then re-run as it is
        again = invoke("--defense", "kw-digits-0.10", "--num-samples", "5", "--out", str(out))
        assert again.exit_code == 0, again.output
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert lines[:3] == records and [json.loads(line)["index"] for line in lines] == [0, 1, 2, 3, 4]
    assert json.loads((out / "result.json").read_text())["num_samples"] == 5
    defense, data = load_defense("kw-digits-0.10"), load_dataset("digits", "test")
    for record in map(ExactRecord.model_validate_json, lines):
        assert record.exact in ("robust", "adversarial")  # the default time limit decides these five
        if record.certified and record.prediction == record.label:
            assert record.exact == "robust"
        if record.exact == "adversarial":
            path = out / record.example
            assert hashlib.sha256(path.read_bytes()).hexdigest() == record.example_sha256
            example, x = torch.from_numpy(np.load(path)), data[record.index][0]
            assert float((example.double() - x.double()).abs().max()) == record.distance <= 0.1
            assert int(defense.model(example[None]).argmax()) != record.label


@pytest.mark.parametrize(("args", "message"), [
    (("--defense", "no-such-defense"), "no-such-defense"),
    (("--defense", "smoothing-digits-0.50"), "smoothing defense"),
    (("--defense", "gloro-digits-0.25"), "linf norm"),
    (("--defense", "kw-digits-0.10", "--epsilon", "0"), "--epsilon must be positive"),
    (("--defense", "kw-digits-0.10", "--time-limit", "-1"), "--time-limit must be positive"),
])
def test_bad_input_is_one_line(args: tuple[str, ...], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


SHARED_DATA = Path(os.environ.get("RSBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ANCHOR = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "exact-kw-mnist-0.1"


@pytest.mark.skipif(not (SHARED_DATA / "models" / "kw-mnist-eps0.1.pth").is_file() or not ANCHOR.is_dir(),
                    reason="shared data or the committed run absent")
def test_the_committed_mnist_run_checks_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stored example of the committed kw-mnist-0.1 run is MNIST's x moved by at most 0.1 inside [0, 1], with
    its recorded sha256 and distance, and misclassified by the model; every certified sample is exactly robust; and
    result.json counts the records."""
    monkeypatch.setenv("RSBENCH_DATA", str(SHARED_DATA))
    defense, data = load_defense("kw-mnist-0.1"), load_dataset("mnist", "test")
    records = [ExactRecord.model_validate_json(line) for line in (ANCHOR / "samples.jsonl").read_text().splitlines()]
    assert [r.index for r in records] == list(range(len(records)))
    for record in records:
        assert record.label == int(data[record.index][1])
        if record.certified and record.prediction == record.label:
            assert record.exact == "robust"
        if record.exact != "adversarial":
            assert record.example is None
            continue
        path = ANCHOR / record.example
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record.example_sha256
        example, x = torch.from_numpy(np.load(path)), data[record.index][0]
        assert float((example.double() - x.double()).abs().max()) == record.distance <= 0.1
        assert 0 <= float(example.min()) and float(example.max()) <= 1
        with torch.no_grad():
            assert int(defense.model(example[None]).argmax()) != record.label
    result = json.loads((ANCHOR / "result.json").read_text())
    assert result["num_samples"] == len(records)
    assert result["exact_adversarial"]["count"] == sum(r.exact == "adversarial" for r in records)


@pytest.mark.slow
def test_a_ray_run_records_what_one_process_records(ray_cluster: ModuleType, tmp_path: Path) -> None:
    spec = get_defense("kw-digits-0.10")
    records = {}
    for backend, workers in (("local", 1), ("ray", 2)):
        config = exact_config(spec, num_samples=4, workers=workers)
        verify(spec, config, tmp_path / backend, progress=False, backend=backend)
        lines = [json.loads(line) for line in (tmp_path / backend / "samples.jsonl").read_text().splitlines()]
        records[backend] = sorted(({k: v for k, v in r.items() if k != "time_s"} for r in lines),
                                  key=lambda r: r["index"])
    assert records["ray"] == records["local"]
    assert [r["exact"] for r in records["local"]] == ["adversarial", "adversarial", "robust", "adversarial"]


def test_an_example_is_clipped_into_the_ball_exactly_even_where_x_minus_eps_rounds_to_zero() -> None:
    net = nn.Linear(2, 2)
    with torch.no_grad():  # label 0 while 10 x_0 > 2
        net.weight.copy_(torch.tensor([[10.0, 0.0], [0.0, 0.0]]))
        net.bias.copy_(torch.tensor([-2.0, 0.0]))
    x = torch.tensor([0.4, 0.5])  # x_0 is float32's 0.4, a little above 0.4: 0 is just outside the ball
    verdict = Verifier(net, (2,)).decide(x, 0, 0.4, search=lambda *_: torch.tensor([0.0, 0.5]))
    assert verdict.exact == "adversarial" and verdict.found_by == "search"
    assert 0 < float(verdict.example[0]) < 1e-7 and verdict.distance <= 0.4
