"""Reproduce aol-digits.pt and its graph model.onnx: python submissions/defenses/aol-digits-graph/train.py (about a
minute on one CPU thread); `python train.py --export` writes model.onnx from the existing aol-digits.pt.

The graph is what rsbench certifies and attacks (`architecture: onnx`); this file and aol.py never run there.

The margin the certificate needs is trained directly: cross-entropy of the logits with the true
class's logit lowered by OFFSET before a temperature, so the loss keeps pushing the margin beyond
sqrt(2) times the radius aimed at. Seeded: the same torch version and thread count give the same file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
from pathlib import Path

import torch

import rsbench
import rsbench.graphs

HERE = Path(__file__).resolve().parent
EPOCHS, BATCH, LR, SEED = 300, 128, 3e-3, 0
TARGET_RADIUS, TEMPERATURE = 0.5, 0.25
OFFSET = math.sqrt(2) * TARGET_RADIUS


def load_aol() -> object:
    """aol.py, the network's code, as a module."""
    spec = importlib.util.spec_from_file_location("aol", HERE / "aol.py")
    aol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aol)
    return aol


def export() -> None:
    """model.onnx: the network of aol-digits.pt as the ONNX graph rsbench runs."""
    model = load_aol().build(10)
    model.load_state_dict(torch.load(HERE / "aol-digits.pt", weights_only=True))
    path = HERE / "model.onnx"
    rsbench.graphs.export(model, (1, 8, 8), path)
    print(f"{path}: sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")


def main() -> None:
    aol = load_aol()
    torch.manual_seed(SEED)
    model = aol.build(10)
    train = rsbench.load_dataset("digits", "train")
    loader = torch.utils.data.DataLoader(train, batch_size=BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(SEED))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, LR, total_steps=EPOCHS * len(loader))
    for _ in range(EPOCHS):
        for x, y in loader:
            logits = model(x) - OFFSET * torch.nn.functional.one_hot(y, 10)
            loss = torch.nn.functional.cross_entropy(logits / TEMPERATURE, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    path = HERE / "aol-digits.pt"
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    test = rsbench.load_dataset("digits", "test")
    x, y = test.tensors
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1)
    radius = (top2.values[:, 0] - top2.values[:, 1]) / math.sqrt(2)
    correct = top2.indices[:, 0] == y
    print(f"clean {correct.float().mean():.3f}; certified at 0.25 {(correct & (radius >= 0.25)).float().mean():.3f}, "
          f"at 0.5 {(correct & (radius >= 0.5)).float().mean():.3f}")
    print(f"{path}: sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
    export()


if __name__ == "__main__":
    export() if sys.argv[1:] == ["--export"] else main()
