"""Defenses as ONNX graphs: what `rsbench.graphs.load` refuses (each in one line), that the converted module agrees
with PyTorch and onnxruntime, and that the Lipschitz bound rsbench reads from a graph's weights is the product of
its layers' spectral norms and holds on the network."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import rsbench
from rsbench import graphs
from rsbench.defenses.gloro import GloRo
from rsbench.defenses.lipschitz_margin import LipschitzMargin, graph_lipschitz
from rsbench.errors import RsbenchError
from rsbench.layers import Normalize
from rsbench.lipschitz import lipschitz_below, lipschitz_layers, operator_norm

AOL = Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits-graph"


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Normalize((0.3,), (0.4,)), nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10)).eval()


@pytest.fixture
def exported(tmp_path: Path) -> tuple[nn.Module, Path]:
    model = small_net()
    path = tmp_path / "model.onnx"
    graphs.export(model, (1, 8, 8), path)
    return model, path


def aol_plugin() -> tuple[nn.Module, object]:
    """The AOL network of the example as its own code builds it (aol.py, the author's), and that module."""
    spec = importlib.util.spec_from_file_location("aol_example", AOL / "aol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build(10)
    model.load_state_dict(torch.load(AOL / "aol-digits.pt", weights_only=True))
    return model.eval(), module


def test_a_converted_graph_gives_the_logits_of_the_network_it_was_exported_from(exported) -> None:
    model, path = exported
    network = graphs.load(path, (1, 8, 8), 10)
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(network(x), model(x), atol=1e-5)
    x.requires_grad_(True)  # rsbench differentiates the converted module itself
    network(x)[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def graph_file(tmp_path: Path, nodes: list, initializers: list | None = None, shape: tuple = (1, 1, 8, 8),
               outputs: int = 10, opsets: list | None = None) -> Path:
    """A hand-built graph: input x of `shape`, output y of (1, outputs)."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, outputs])],
                              initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 17)])
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def dense(tmp_path: Path, op: str = "Relu", weight: np.ndarray | None = None, **kwargs) -> Path:
    """Flatten, Gemm to 10 logits, then `op`."""
    weight = np.ones((10, 64), np.float32) / 64 if weight is None else weight
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w"], ["z"], name="dense", transB=1),
             helper.make_node(op, ["z"], ["y"], name="last", **kwargs)]
    return graph_file(tmp_path, nodes, [numpy_helper.from_array(weight, "w")])


def if_graph(tmp_path: Path) -> Path:
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "b", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True), "c")),
             helper.make_node("If", ["c"], ["y"], name="branch", then_branch=branch, else_branch=branch)]
    return graph_file(tmp_path, nodes)


@pytest.mark.parametrize(("make", "says"), [
    (lambda p: (p, p.write_bytes(b"\x08\x07garbage"))[0], "not a well-formed ONNX model"),
    (lambda p: dense(p.parent, op="Sigmoid"), "op Sigmoid (node last) is not among the ops certified networks use"),
    (lambda p: dense(p.parent, op="Softmax"), "op Softmax (node last)"),
    (lambda p: if_graph(p.parent), "node branch (If) holds a subgraph (control flow); refused"),
    (lambda p: dense(p.parent, weight=np.full((10, 64), np.nan, np.float32)), "initializer w holds NaN or infinite"),
    (lambda p: dense(p.parent, weight=np.full((10, 64), np.inf, np.float32)), "initializer w holds NaN or infinite"),
    (lambda p: graph_file(p.parent, [helper.make_node("Relu", ["x"], ["y"], name="r")], shape=(1, 1, 28, 28)),
     "expected input of float32 shape (batch, 1, 8, 8), got (1, 1, 28, 28)"),
    (lambda p: graph_file(p.parent, [helper.make_node("Flatten", ["x"], ["f"]),
                                     helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)],
                          [numpy_helper.from_array(np.ones((7, 64), np.float32), "w")], outputs=7),
     "expected output of float32 shape (batch, 10), got (1, 7)"),
    (lambda p: graph_file(p.parent, [helper.make_node("Secret", ["x"], ["y"], name="s", domain="com.evil")],
                          opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)]),
     "custom domains or functions (com.evil) are refused"),
])
def test_a_bad_graph_is_refused_in_one_line(tmp_path: Path, make, says: str) -> None:
    path = make(tmp_path / "bad.onnx")
    with pytest.raises(RsbenchError) as error:
        graphs.load(path, (1, 8, 8), 10)
    assert says in str(error.value) and "\n" not in str(error.value)


def test_a_truncated_or_oversized_graph_is_refused(exported) -> None:
    _, path = exported
    with pytest.raises(RsbenchError, match=rf"has {path.stat().st_size} bytes, over the limit of 1000$"):
        graphs.load(path, (1, 8, 8), 10, max_bytes=1000)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RsbenchError, match="not a well-formed ONNX model"):
        graphs.load(path, (1, 8, 8), 10)


def test_a_converted_module_that_disagrees_with_onnxruntime_is_refused(exported, monkeypatch) -> None:
    _, path = exported
    convert = graphs.convert

    class Shifted(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) + 0.01

    monkeypatch.setattr(graphs, "convert", lambda proto, where: Shifted(convert(proto, where)))
    with pytest.raises(RsbenchError, match=r"logits differ from onnxruntime's by 0\.01 \(allowed 0\.0001\)"):
        graphs.load(path, (1, 8, 8), 10)


def test_the_lipschitz_bound_is_the_product_of_the_layers_spectral_norms(exported) -> None:
    """Independently: GloRo's per-layer bounds (`rsbench.lipschitz`) of the PyTorch network, times the logit layer's
    exact norm; and on random pairs, no logit change exceeds L times the input's."""
    model, path = exported
    network = graphs.load(path, (1, 8, 8), 10)
    bound = graph_lipschitz(network.proto, (1, 8, 8))
    layers = [layer for layer in model if not isinstance(layer, Normalize)]
    shapes = {id(layers[0]): (1, 8, 8)}
    below = lipschitz_below(lipschitz_layers(nn.Sequential(*layers)), lambda l: operator_norm(l, shapes.get(id(l))))
    expected = below / 0.4 * float(torch.linalg.matrix_norm(layers[-1].weight.double(), 2))
    assert bound == pytest.approx(expected, rel=1e-6)
    x, y = torch.rand(2, 256, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ratios = (network(x) - network(y)).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert float(ratios.max()) <= bound


def test_aol_maxmin_is_one_lipschitz_and_its_bound_is_the_exact_norms_product() -> None:
    """The example's graph: MaxMin (Split, Max, Min, Concat) recognised as a permutation of pairs, so the bound is
    the product of the four AOL matrices' exact spectral norms, computed here from the author's own PyTorch model."""
    model, aol = aol_plugin()
    network = graphs.load(AOL / "model.onnx", (1, 8, 8), 10)
    exact = math.prod(float(torch.linalg.matrix_norm(layer.rescaled().double(), 2))
                      for layer in model if isinstance(layer, aol.AOLLinear))
    assert graph_lipschitz(network.proto, (1, 8, 8)) == pytest.approx(exact, rel=1e-9)
    assert 1 - 1e-4 < exact <= 1  # AOL's guarantee, which rsbench now checks rather than takes


def test_max_and_min_that_are_not_a_maxmin_pair_pay_their_due(tmp_path: Path) -> None:
    """Max(z, z) and Min(z, z) joined: each entry of z appears twice, so the bound is sqrt 2, not the pair's 1."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["z"], transB=1),
             helper.make_node("Max", ["z", "z"], ["a"]), helper.make_node("Min", ["z", "z"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["y"], axis=1)]
    weight = np.eye(5, 64, dtype=np.float32)
    path = graph_file(tmp_path, nodes, [numpy_helper.from_array(weight, "w")])
    assert graph_lipschitz(onnx.load(path), (1, 8, 8)) == pytest.approx(math.sqrt(2))


def test_the_example_graph_certifies_as_the_authors_code_did() -> None:
    """rsbench's certificates of the example's graph against its plugin's (margin / sqrt 2, trusting L <= 1): the same
    labels, radii larger by exactly 1 / L, since rsbench's L is the exact product of norms, 2.3e-5 below 1."""
    model, aol = aol_plugin()
    network = graphs.load(AOL / "model.onnx", (1, 8, 8), 10)
    bound = graph_lipschitz(network.proto, (1, 8, 8))
    x = rsbench.load_dataset("digits", "test").tensors[0][:20]
    labels, radii = LipschitzMargin(network, bound, 10, 0.25).certify_batch(x)
    old_labels, old_radii = aol.AOLCertifier(model, 10, 0.25).certify_batch(x)
    assert torch.equal(labels, old_labels)
    assert torch.allclose(radii * bound, old_radii, rtol=0, atol=1e-6)
    assert float((radii - old_radii).abs().max()) < 3e-5


def test_a_graph_spec_of_a_layer_reading_kind_certifies_as_the_registry_defense(tmp_path: Path) -> None:
    """gloro-digits-0.25 exported, then loaded as a graph defense of kind gloro: the same certificates."""
    registry_defense = rsbench.load_defense("gloro-digits-0.25")
    path = tmp_path / "model.onnx"
    graphs.export(registry_defense.model, (1, 8, 8), path)
    chain = graphs.as_sequential(graphs.load(path, (1, 8, 8), 10), "test")
    defense = GloRo(chain, 10, 0.25, input_shape=(1, 8, 8))
    x = rsbench.load_dataset("digits", "test").tensors[0][:20]
    labels, radii = defense.certify_batch(x)
    expected_labels, expected = registry_defense.certify_batch(x)
    assert torch.equal(labels, expected_labels) and torch.allclose(radii, expected, atol=1e-6)
    with pytest.raises(RsbenchError, match="this certifier reads a chain of Gemm, Conv, Relu, Flatten and MaxPool"):
        graphs.as_sequential(graphs.load(AOL / "model.onnx", (1, 8, 8), 10), "aol")
