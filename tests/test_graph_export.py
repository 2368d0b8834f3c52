"""`rsbench models export`: every registry defense's network as an ONNX graph that onnxruntime, a second runtime, runs
to rsbench's logits, and the VNNLIB properties of a linf defense's track samples."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from click.testing import CliRunner

import rsbench
from rsbench import graphs, hub, registry, runner
from rsbench.cli import cli
from rsbench.data import INPUT_SHAPES

LOCAL = sorted(name for name, spec in registry.all_specs("defenses").items()
               if spec.weights.source == "package" and hub.missing_weights(name, spec.weights) is None)
"""Registry defenses whose weights ship with rsbench (the others need a download)."""


@pytest.mark.parametrize("name", LOCAL)
def test_every_registry_defense_exports_a_graph_onnxruntime_runs_to_rsbenchs_logits(name: str, tmp_path: Path) -> None:
    spec = registry.get_defense(name)
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(cli, ["models", "export", name, "--out", str(out)])
    assert result.exit_code == 0, result.output
    network = runner.defense_model(rsbench.load_defense(name)).eval()
    x = torch.rand(4, *INPUT_SHAPES[spec.dataset.name], generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(out.read_bytes(), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = network(x).numpy()
    assert logits.shape == (4, spec.num_classes)
    assert np.allclose(logits, expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    assert not list(tmp_path.glob("*.partial"))


def test_vnnlib_states_each_track_samples_box_and_the_violation(tmp_path: Path) -> None:
    """kw-digits-0.05: one property per sample, its box the linf ball clipped to [0, 1], its violation any other
    logit at least the label's; the box holds the sample, and rsbench's exported graph is robust where KW certifies."""
    result = CliRunner().invoke(cli, ["models", "export", "kw-digits-0.05", "--out", str(tmp_path / "kw.onnx"),
                                      "--vnnlib", str(tmp_path / "props"), "--num-samples", "3"])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "props").iterdir())
    assert [f.name for f in files] == [f"kw-digits-0.05-{i}.vnnlib" for i in range(3)]
    x, label = rsbench.load_dataset("digits", "test")[0]
    text = files[0].read_text()
    bounds = {(m[0], int(m[1])): float(m[2]) for m in re.findall(r"\(assert \(([<>]=) X_(\d+) ([-\d.e]+)\)\)", text)}
    flat = x.flatten().double()
    assert len(bounds) == 2 * 64
    for i, value in enumerate(flat.tolist()):
        assert bounds[(">=", i)] == max(0.0, value - 0.05) and bounds[("<=", i)] == min(1.0, value + 0.05)
    others = [j for j in range(10) if j != int(label)]
    assert text.rstrip().endswith("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{int(label)}))" for j in others) + "))")


@pytest.mark.parametrize(("name", "says"), [("smoothing-digits-0.50", "VNNLIB states linf boxes"),
                                            ("gloro-digits-0.25", "gloro in l2")])
def test_vnnlib_of_a_defense_it_cannot_state_is_refused_and_nothing_is_written(name: str, says: str,
                                                                                tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "export", name, "--out", str(tmp_path / "m.onnx"), "--vnnlib",
                                      str(tmp_path / "props")])
    assert result.exit_code != 0 and says in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_graph_defense_exports_its_verified_file_unchanged(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits-graph"
    spec = registry.get_defense(str(example))
    graphs.export_defense(spec, tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == (example / "model.onnx").read_bytes()


@pytest.mark.parametrize("name", ["kw-digits-0.05", "crownibp-digits-0.10", "gloro-digits-0.25"])
def test_a_registry_defense_given_as_its_graph_certifies_alike(name: str, tmp_path: Path) -> None:
    """The export loaded back as a graph spec (`architecture: onnx`) of the same kind: rsbench's certifier on the
    converted chain gives the registry defense's certificates."""
    spec = registry.get_defense(name)
    out = tmp_path / "model.onnx"
    graphs.export_defense(spec, out)
    graph_spec = spec.model_copy(update={"architecture": "onnx", "training": None, "weights": spec.weights.model_copy(
        update={"source": "file", "filename": str(out), "sha256": hub.sha256_of(out)})})
    ours, theirs = rsbench.load_defense(graph_spec), rsbench.load_defense(name)
    x = rsbench.load_dataset("digits", "test").tensors[0][:10]
    for image in x:
        a, b = ours.certify(image), theirs.certify(image)
        assert a.prediction == b.prediction and a.radius == pytest.approx(b.radius, abs=1e-5)
