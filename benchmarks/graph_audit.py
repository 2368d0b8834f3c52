"""What a defense given as an ONNX graph costs rsbench, per sample: aol-digits-graph against the PyTorch network it
was exported from.

Loading checks the graph once (the ONNX checker, the op allow-list, onnx2torch, agreement with onnxruntime on 64
inputs) and bounds its Lipschitz constant from the weights. Per sample: a forward and backward of the converted
module against the original (onnx2torch runs the exporter's shape arithmetic as modules), rsbench's certificate,
and the soundness audit that `submission validate` and `verify` run: `pgd-l2` at the sample's own certified
radius, judged by the harness, and the Square attack (forward passes only) likewise, each timed on its own (the
exact MILP joins them for linf graphs; this one is l2).

    python benchmarks/graph_audit.py [--samples 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch

import rsbench
from rsbench import graphs
from rsbench.data import INPUT_SHAPES
from rsbench.defenses.lipschitz_margin import LipschitzMargin, graph_lipschitz
from rsbench.submissions import soundness
from rsbench.submissions.defense_submissions import load

EXAMPLE = Path(__file__).resolve().parents[1] / "submissions" / "defenses" / "aol-digits-graph"


def per_call(function: object, repeats: int) -> float:
    """Mean milliseconds of `function()` over `repeats` calls."""
    started = time.perf_counter()
    for _ in range(repeats):
        function()  # type: ignore[operator]
    return (time.perf_counter() - started) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load(EXAMPLE).defense
    started = time.perf_counter()
    network = graphs.load(EXAMPLE / "model.onnx", INPUT_SHAPES["digits"], 10)
    bound = graph_lipschitz(network.proto, INPUT_SHAPES["digits"])
    print(f"load, check and bound the graph once: {time.perf_counter() - started:.2f} s (L = {bound:.7f})")

    code = importlib.util.spec_from_file_location("aol_example", EXAMPLE / "aol.py")
    aol = importlib.util.module_from_spec(code)
    code.loader.exec_module(aol)
    original = aol.build(10)
    original.load_state_dict(torch.load(EXAMPLE / "aol-digits.pt", weights_only=True))
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    for name, module in (("converted graph", network), ("PyTorch original", original.eval())):
        print(f"forward and backward, {name}: {per_call(lambda m=module: m(x).sum().backward(), 200):.2f} ms")

    defense = LipschitzMargin(network, bound, 10, spec.epsilon)
    dataset = rsbench.load_dataset("digits", "test")
    samples = [dataset[i] for i in range(args.samples)]
    print(f"certificate: {per_call(lambda: defense.certify(samples[0][0]), 200):.2f} ms a sample")
    for attack in soundness.bounded_attacks(spec):
        started = time.perf_counter()
        report = soundness.check_deterministic(spec, defense, samples, seed=0, attacks=[attack])
        elapsed = time.perf_counter() - started
        print(f"soundness audit, {attack.name} at each certified radius: {elapsed / len(samples):.2f} s a sample "
              f"({report.tested} of {len(samples)} certified)")


if __name__ == "__main__":
    main()
