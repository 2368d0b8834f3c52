"""Defenses as data: ONNX graphs loaded into PyTorch by rsbench, checked before anything runs on them.

A submitted defense is a graph (`model.onnx`: pixels in [0, 1] in, logits out, normalization
inside), never code: rsbench converts it with onnx2torch and runs every certificate, attack and
gradient on the converted module in its own process. Before that, `load` refuses, in one line:
a file over `MAX_BYTES`; bytes that are not a well-formed ONNX model (`onnx.checker`); an op
outside `ALLOWED_OPS` (the ops certified networks use), naming the op and its node; control
flow, subgraphs, custom domains and functions; NaN or infinite weights; an input that is not one
image of the dataset's shape, an output that is not one logit per class; and a converted module
whose logits differ from onnxruntime's (an independent runtime) on random inputs in [0, 1]
beyond `TOLERANCE`. `export` writes rsbench's own networks in the same form (`export_defense`: any registry
defense's), and `export_vnnlib` the VNN-COMP properties of a linf defense's track samples.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rsbench.errors import RsbenchError
from rsbench.specs import GRAPH, DefenseSpec

# onnx2torch's Slice indexes with a list, which PyTorch warns about on every forward of a converted graph with the
# same result; the warning would bury every command's output.
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                        category=UserWarning, module="onnx2torch")

MAX_BYTES = 64 * 2**20
"""Largest graph file accepted (64 MiB: every certified network of the seed papers is far smaller)."""
OPSET = 17
"""Opset `export` writes (onnx2torch converts up to it)."""
ALLOWED_OPS = frozenset({
    "Gemm", "MatMul", "Conv", "Relu", "MaxPool", "AveragePool", "Flatten", "Reshape", "Transpose", "Squeeze",
    "Unsqueeze", "Identity", "Add", "Sub", "Mul", "Div", "Max", "Min", "Concat", "Split", "Slice", "Constant",
    "Shape", "Gather", "Mod",
})
"""Affine layers, ReLU, pooling, MaxMin (Split, Max, Min, Concat), normalization (Sub, Div) and the shape arithmetic
exporters emit around reshapes: what the certified networks of the field are made of."""
TOLERANCE = 1e-4
"""Largest difference allowed between the converted module's logits and onnxruntime's, relative to the largest
logit (and at least this much absolute): float32 kernels differ by far less."""
CHECK_INPUTS = 64
"""Random inputs in [0, 1] on which the converted module must agree with onnxruntime."""


class Network(nn.Module):
    """A graph converted to PyTorch: `forward` is onnx2torch's module; `proto` is the checked ONNX model, from which
    rsbench reads the weights (never from the author)."""

    def __init__(self, converted: nn.Module, proto: object, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.converted = converted
        self.proto = proto
        self.input_shape = input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.converted(x)


def load(path: Path, input_shape: tuple[int, ...], num_classes: int, *, max_bytes: int = MAX_BYTES,
         seed: int = 0) -> Network:
    """The graph at `path` converted and checked (see the module's docstring); raises one line on any fault."""
    import onnx

    size = path.stat().st_size
    if size > max_bytes:
        raise RsbenchError(f"{path}: the graph has {size} bytes, over the limit of {max_bytes}")
    data = path.read_bytes()
    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as error:  # noqa: BLE001 - protobuf and the checker raise many types on bad bytes
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RsbenchError(f"{path}: not a well-formed ONNX model ({first})") from None
    check_graph(proto, path.name)
    check_io(proto, input_shape, num_classes, path.name)
    module = convert(proto, path.name)
    network = Network(module, proto, tuple(input_shape))
    agree(network, data, seed, path.name)
    return network


def check_graph(proto: object, where: str) -> None:
    """Refuse custom domains and functions, control flow and subgraphs, ops outside the allow-list, and initializers
    or constants that are not finite."""
    from onnx import AttributeProto, numpy_helper

    domains = {entry.domain for entry in proto.opset_import} - {"", "ai.onnx"}
    if domains or proto.functions:
        raise RsbenchError(f"{where}: custom domains or functions ({', '.join(sorted(domains)) or 'functions'}) are "
                           "refused; a defense graph uses standard ONNX ops only")
    for index, node in enumerate(proto.graph.node):
        name = node.name or f"#{index}"
        if node.domain not in ("", "ai.onnx"):
            raise RsbenchError(f"{where}: node {name} uses op {node.op_type} of custom domain {node.domain!r}; refused")
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
            raise RsbenchError(f"{where}: node {name} ({node.op_type}) holds a subgraph (control flow); refused")
        if node.op_type not in ALLOWED_OPS:
            raise RsbenchError(f"{where}: op {node.op_type} (node {name}) is not among the ops certified networks "
                               f"use: {', '.join(sorted(ALLOWED_OPS))}")
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                _finite(numpy_helper.to_array(attribute.t), f"node {name}'s constant", where)
    for tensor in proto.graph.initializer:
        _finite(numpy_helper.to_array(tensor), f"initializer {tensor.name}", where)


def _finite(array: np.ndarray, what: str, where: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RsbenchError(f"{where}: {what} holds NaN or infinite values; refused")


def check_io(proto: object, input_shape: tuple[int, ...], num_classes: int, where: str) -> None:
    """One input of shape (batch, *input_shape) and one output of (batch, num_classes), float32 both."""
    from onnx import TensorProto

    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise RsbenchError(f"{where}: expected one input (the image) and one output (the logits), got "
                           f"{len(inputs)} and {len(proto.graph.output)}")
    for value, expected, what in ((inputs[0], tuple(input_shape), "input"), (proto.graph.output[0], (num_classes,),
                                                                           "output")):
        kind = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim)
        if kind.elem_type != TensorProto.FLOAT or len(dims) != len(expected) + 1 or dims[1:] != expected \
                or dims[0] not in (None, 1):
            shown = ", ".join("batch" if d is None else str(d) for d in dims)
            raise RsbenchError(f"{where}: expected {what} of float32 shape (batch, "
                               f"{', '.join(map(str, expected))}), got ({shown})")


def convert(proto: object, where: str) -> nn.Module:
    """onnx2torch's module of the graph, in eval mode and frozen (attacks move inputs, not weights)."""
    from onnx2torch import convert as onnx2torch_convert

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = onnx2torch_convert(proto)
    except Exception as error:  # noqa: BLE001 - the converter raises many types on graphs it cannot read
        raise RsbenchError(f"{where}: onnx2torch cannot convert the graph ({type(error).__name__}: {error})") from None
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


def agree(network: Network, data: bytes, seed: int, where: str) -> None:
    """Refuse a converted module whose logits differ from onnxruntime's on random inputs in [0, 1]."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    x = torch.rand(CHECK_INPUTS, *network.input_shape, generator=torch.Generator().manual_seed(seed))
    name = session.get_inputs()[0].name
    try:
        expected = np.concatenate([session.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(len(x))])
        with torch.no_grad():
            got = network(x).double().numpy()
    except Exception as error:  # noqa: BLE001 - a graph may fail to run on its declared input
        raise RsbenchError(f"{where}: the graph does not run on inputs of its declared shape "
                           f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    if got.shape != expected.shape or not np.isfinite(expected).all():
        raise RsbenchError(f"{where}: the graph gives logits of shape {expected.shape} (converted: {got.shape}) or "
                           "non-finite ones on random inputs; refused")
    gap = float(np.abs(got - expected).max())
    allowed = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if not gap <= allowed:
        raise RsbenchError(f"{where}: the converted graph's logits differ from onnxruntime's by {gap:.3g} (allowed "
                           f"{allowed:.3g}) on random inputs; refused")


def export(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """Write `model` (inputs in [0, 1] of `input_shape`, logits out) as an ONNX graph with a free batch axis.

    The model is called once first, so that weights a layer derives from its parameters and caches in eval mode
    (AOL's rescaled matrices) enter the graph as constants rather than as the arithmetic that made them.
    """
    model = model.eval()
    x = torch.zeros(1, *input_shape)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(x)
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=OPSET, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    path.write_bytes(buffer.getvalue())


def as_sequential(network: Network, where: str) -> nn.Sequential:
    """The converted graph as the chain of Linear, Conv2d, ReLU, Flatten and MaxPool2d layers that the layer-reading
    certifiers (GloRo, KW, CROWN-IBP) take; refused, naming the node, when the graph is anything else."""
    layers: list[nn.Module] = []
    previous = None
    modules = dict(network.converted.named_modules())
    for node in network.converted.graph.nodes:
        if node.op == "placeholder":
            previous = node
        elif node.op == "output":
            if node.args[0] is not previous:
                raise RsbenchError(f"{where}: the graph's output is not its last layer's")
        elif node.op != "call_module" or node.args != (previous,) or not isinstance(
                modules[node.target], (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.MaxPool2d)):
            what = type(modules[node.target]).__name__ if node.op == "call_module" else node.op
            raise RsbenchError(f"{where}: this certifier reads a chain of Gemm, Conv, Relu, Flatten and MaxPool nodes; "
                               f"node {node.target} ({what}) is not one of them or not in the chain")
        else:
            layers.append(modules[node.target])
            previous = node
    return nn.Sequential(*layers).eval()


def export_defense(spec: DefenseSpec, out: Path) -> None:
    """Write the network a defense runs (smoothing: its base classifier) as an ONNX graph at `out`, through a
    temporary file, so an interrupted or refused export leaves nothing behind; a graph defense's own verified file
    is copied as it is."""
    from rsbench import hub, models, registry
    from rsbench.data import INPUT_SHAPES

    partial = out.with_name(out.name + ".partial")
    try:
        if spec.architecture == GRAPH:
            partial.write_bytes(hub.resolve_weights(spec.weights, registry.folder_of(spec)).read_bytes())
        else:
            model = models.build_model(spec)
            models.load_weights_into(model, hub.load_checkpoint(spec.weights, registry.folder_of(spec)))
            export(model, INPUT_SHAPES[spec.dataset.name], partial)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def vnnlib(x: torch.Tensor, label: int, num_classes: int, epsilon: float, comment: str) -> str:
    """The VNN-COMP property that the linf ball of radius epsilon around x (clipped to [0, 1]) holds a point where
    another class's logit reaches the label's: unsatisfiable exactly when the label is robust there."""
    flat = x.flatten().double()
    low, high = (flat - epsilon).clamp(0, 1), (flat + epsilon).clamp(0, 1)
    lines = [f"; {comment}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(len(flat))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(num_classes)]
    for i, (a, b) in enumerate(zip(low.tolist(), high.tolist())):
        lines += [f"(assert (>= X_{i} {a:.17g}))", f"(assert (<= X_{i} {b:.17g}))"]
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(num_classes) if j != label)
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"


def check_vnnlib(spec: DefenseSpec) -> None:
    """Refuse a defense whose threat model VNNLIB cannot state: noise (smoothing), a self-certified plugin, l2."""
    if spec.kind in ("smoothing", "plugin") or spec.norm != "linf" or spec.epsilon is None:
        raise RsbenchError(f"{spec.name}: VNNLIB states linf boxes around inputs, for deterministic certifiers; "
                           f"{spec.name} is {spec.kind} in {spec.norm}")


def export_vnnlib(spec: DefenseSpec, folder: Path, samples: int) -> list[Path]:
    """One VNNLIB property per sample of the defense's evaluation split (the first `samples`) at its epsilon, in
    `folder`; deterministic linf defenses only (VNNLIB states boxes, not l2 balls or noise)."""
    from rsbench.data import load_dataset

    check_vnnlib(spec)
    dataset = load_dataset(spec.dataset.name, spec.dataset.split, spec.dataset.root)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(min(samples, len(dataset))):
        x, label = dataset[index]
        path = folder / f"{spec.name}-{index}.vnnlib"
        comment = f"rsbench {spec.name} {spec.dataset.split} sample {index}, label {int(label)}, linf epsilon " \
                  f"{spec.epsilon:g}"
        path.write_text(vnnlib(x, int(label), spec.num_classes, spec.epsilon, comment))
        written.append(path)
    return written
