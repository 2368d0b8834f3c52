"""Lipschitz-margin certificates of a graph (Tsuzuku, Sato, Sugiyama, NeurIPS 2018), the Lipschitz constant bounded
by rsbench from the graph's weights.

If every logit map is L-Lipschitz in l2 as a vector map, a logit difference z_j - z_i moves by at most
sqrt(2) L ||delta||, so the top class is certified within (z_top - z_second) / (sqrt(2) L). 1-Lipschitz
networks by construction (AOL, orthogonal and SOC layers) have L <= 1 and the certificate margin / sqrt 2;
here L is never the author's word: `graph_lipschitz` composes a bound node by node over the ONNX graph.

- Gemm and MatMul with a constant matrix: its exact spectral norm (float64 SVD); Conv: `lipschitz.operator_norm`
  (exact where the explicit matrix is small, the circulant bound otherwise); Mul and Div by a constant: its
  largest factor; Add and Sub: the sum of their inputs' bounds; MaxPool: `lipschitz.fixed_bound`.
- Relu, Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Identity, Slice and each output of Split: the input's
  bound (they drop or move entries, never stretch them).
- Max and Min of two inputs: sqrt(L_a^2 + L_b^2), since |max(a, b) - max(a', b')| <= max(|da|, |db|); Concat:
  sqrt of the sum of its inputs' squared bounds. MaxMin (the two halves of one Split, of equal shape, sorted pair
  by pair by Max and Min and concatenated) permutes each pair: the input's bound, exactly.
- Shape and everything computed from constants alone do not depend on the input (bound 0); any other node on the
  input's path is refused, naming it, rather than assumed 1-Lipschitz.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn

from rsbench.defenses.base import Certificate, Defense, check_input
from rsbench.errors import RsbenchError
from rsbench.lipschitz import fixed_bound, operator_norm
from rsbench.specs import DefenseSpec

SQRT2 = math.sqrt(2.0)
PASS_THROUGH = frozenset({"Relu", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Slice",
                          "Split"})
"""Ops whose outputs are entries of their (first) input, moved or dropped, or a 1-Lipschitz map of each entry."""
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min"})
"""Ops whose bound assumes that inputs depending on the image are not broadcast (which would repeat entries)."""
RESHAPES = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def _attributes(node: object) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def graph_lipschitz(proto: object, input_shape: tuple[int, ...]) -> float:
    """An upper bound on the l2 Lipschitz constant of the graph's logits in its input (see the module's docstring)."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = proto.graph
    image = next(i.name for i in graph.input if i.name not in {t.name for t in graph.initializer})
    names = [name for node in graph.node for name in node.output if name]
    zeros = np.zeros((1, *input_shape), np.float32)
    values = dict(zip(names, ReferenceEvaluator(proto).run(names, {image: zeros})), **{image: zeros})
    values.update({t.name: numpy_helper.to_array(t) for t in graph.initializer})
    bound: dict[str, float] = {image: 1.0}
    made_by = {name: node for node in graph.node for name in node.output}
    for index, node in enumerate(graph.node):
        moving = [name for name in node.input if name in bound]
        if not moving or node.op_type == "Shape":
            continue
        where = f"node {node.name or '#' + str(index)} ({node.op_type})"
        value = _node_bound(node, moving, bound, values, made_by, where)
        for name in node.output:
            bound[name] = value
    output = graph.output[0].name
    if output not in bound:
        raise RsbenchError("the graph's logits do not depend on its input")
    return bound[output]


def _node_bound(node: object, moving: list[str], bound: dict[str, float], values: dict, made_by: dict,
                where: str) -> float:
    """The Lipschitz bound of one node's outputs, given those of its inputs that depend on the image."""
    op, inputs, attributes = node.op_type, list(node.input), _attributes(node)
    first = bound[moving[0]]
    if op in ELEMENTWISE and any(values[name].shape != values[node.output[0]].shape for name in moving):
        raise RsbenchError(f"{where} broadcasts an input that depends on the image, repeating its entries; refused")
    if op in PASS_THROUGH and moving == inputs[:1]:
        return first
    if op in ("Add", "Sub"):
        return sum(bound[name] for name in moving)
    if op == "Mul" and len(moving) == 1:
        return first * float(np.abs(values[inputs[1 - inputs.index(moving[0])]]).max())
    if op == "Div" and moving == inputs[:1]:
        smallest = float(np.abs(values[inputs[1]]).min())
        if smallest == 0:
            raise RsbenchError(f"{where} divides by zero")
        return first / smallest
    if op in ("Gemm", "MatMul") and moving == inputs[:1] and not attributes.get("transA", 0):
        matrix = np.asarray(values[inputs[1]], dtype=np.float64)
        if matrix.ndim == 2:
            return first * abs(attributes.get("alpha", 1.0)) * float(np.linalg.norm(matrix, 2))
    if op == "Conv" and moving == inputs[:1] and attributes.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"):
        return first * _conv_norm(values[inputs[1]], attributes, values[inputs[0]].shape[1:], where)
    if op == "MaxPool" and moving == inputs[:1]:
        pool = nn.MaxPool2d(tuple(attributes["kernel_shape"]), tuple(attributes.get("strides", (1, 1))),
                            dilation=tuple(attributes.get("dilations", (1, 1))))
        return first * fixed_bound(pool)
    if op in ("Max", "Min"):  # an input named twice is one input: max(a, a) = a
        return math.sqrt(sum(bound[name] ** 2 for name in set(moving)))
    if op == "Concat":
        pair = _max_min_pair(moving, made_by, values)
        if pair in bound:
            return bound[pair]
        return math.sqrt(sum(bound[name] ** 2 for name in moving))
    raise RsbenchError(f"{where}: rsbench has no Lipschitz bound for this node on the input's path; a "
                       "Lipschitz-margin graph is built of Gemm, MatMul, Conv, Relu, MaxPool, MaxMin and reshapes")


def _conv_norm(weight: np.ndarray, attributes: dict, shape: tuple[int, ...], where: str) -> float:
    """`lipschitz.operator_norm` of a Conv node, rebuilt as the Conv2d it is (symmetric zero padding only)."""
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    if weight.ndim != 4 or pads[:2] != pads[2:]:
        raise RsbenchError(f"{where}: rsbench bounds 2-D convolutions with symmetric padding only")
    out_channels, group_in, *kernel = weight.shape
    groups = int(attributes.get("group", 1))
    conv = nn.Conv2d(group_in * groups, out_channels, tuple(kernel), stride=tuple(attributes.get("strides", (1, 1))),
                     padding=tuple(pads[:2]), dilation=tuple(attributes.get("dilations", (1, 1))), groups=groups,
                     bias=False)
    conv.weight.data = torch.from_numpy(np.asarray(weight, dtype=np.float32).copy())
    return operator_norm(conv, tuple(shape))


def _max_min_pair(moving: list[str], made_by: dict, values: dict) -> str | None:
    """The Split's input when a Concat joins Max(a, b) and Min(a, b), reshaped only, of the two halves a, b of one
    Split, of equal shape (no broadcasting): the pairs sorted, a permutation of that input's entries; else None."""
    if len(moving) != 2:
        return None
    ends = [made_by.get(_strip(name, made_by)) for name in moving]
    if None in ends or sorted(n.op_type for n in ends) != ["Max", "Min"] or \
            list(ends[0].input) != list(ends[1].input) or len(ends[0].input) != 2:
        return None
    a, b = ends[0].input
    halves = [_strip(name, made_by) for name in (a, b)]
    split = made_by.get(halves[0])
    if split is None or split.op_type != "Split" or sorted(halves) != sorted(split.output) or \
            values[a].shape != values[b].shape:
        return None
    return split.input[0]


def _strip(name: str, made_by: dict) -> str:
    """The tensor a chain of reshapes starts from."""
    node = made_by.get(name)
    while node is not None and node.op_type in RESHAPES:
        name = node.input[0]
        node = made_by.get(name)
    return name


class LipschitzMargin(Defense):
    """A graph's top class certified within margin / (sqrt 2 L), L bounded by rsbench (`graph_lipschitz`).

    `predict` answers only where the label is certified at the spec's epsilon, like a GloRo net.
    """

    norm = "l2"

    def __init__(self, model: nn.Module, lipschitz: float, num_classes: int, epsilon: float) -> None:
        if not lipschitz > 0:
            raise RsbenchError("the graph's logits do not depend on its input (Lipschitz bound 0)")
        self.model, self.lipschitz, self.num_classes, self.epsilon = model.eval(), lipschitz, num_classes, epsilon

    @property
    def device(self) -> torch.device:
        tensor = next(itertools.chain(self.model.parameters(), self.model.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> LipschitzMargin:
        self.model.to(device)
        return self

    @torch.no_grad()
    def certify_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top class and radius (margin over the runner-up, in float64, over sqrt(2) L) of a batch (B, C, H, W)."""
        top2 = self.model(x.to(self.device)).double().topk(2, dim=1)
        return top2.indices[:, 0], (top2.values[:, 0] - top2.values[:, 1]) / (SQRT2 * self.lipschitz)

    def certify(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        return self.certify_many([x], [generator])[0]

    def certify_many(self, xs, generators) -> list[Certificate]:
        for x in xs:
            check_input(x)
        labels, radii = self.certify_batch(torch.stack(list(xs)))
        return [Certificate(prediction=int(label), radius=float(radius)) if radius > 0 else
                Certificate(prediction=None, radius=0.0) for label, radius in zip(labels, radii)]

    def predict(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> int | None:
        certificate = self.certify(x)
        return certificate.prediction if certificate.radius >= self.epsilon else None

    def worst_case_margins(self, x: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
        """z_j - z_label + sqrt(2) L epsilon for every other class j (0 at the label)."""
        logits = self.model(x)
        own = logits.gather(1, labels[:, None])
        others = nn.functional.one_hot(labels, logits.shape[1]).logical_not()
        return (logits - own + SQRT2 * self.lipschitz * epsilon) * others


def from_spec(spec: DefenseSpec, model: nn.Module) -> LipschitzMargin:
    """The Lipschitz-margin defense of a graph spec (`architecture: onnx`), its bound computed from the graph."""
    from rsbench.graphs import Network

    if spec.norm != "l2":
        raise RsbenchError(f"Lipschitz-margin certificates are l2, got norm {spec.norm!r}")
    if not isinstance(model, Network):
        raise RsbenchError(f"{spec.name}: kind lipschitz bounds an ONNX graph's weights; set architecture: onnx")
    return LipschitzMargin(model, graph_lipschitz(model.proto, model.input_shape), spec.num_classes, spec.epsilon)
