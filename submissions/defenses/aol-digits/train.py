"""Reproduce aol-digits.pt: python submissions/defenses/aol-digits/train.py (about a minute on one CPU thread).

The margin the certificate needs is trained directly: cross-entropy of the logits with the true
class's logit lowered by OFFSET before a temperature, so the loss keeps pushing the margin beyond
sqrt(2) times the radius aimed at. Seeded: the same torch version and thread count give the same file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import torch

import rsbench

HERE = Path(__file__).resolve().parent
EPOCHS, BATCH, LR, SEED = 300, 128, 3e-3, 0
TARGET_RADIUS, TEMPERATURE = 0.5, 0.25
OFFSET = math.sqrt(2) * TARGET_RADIUS


def main() -> None:
    spec = importlib.util.spec_from_file_location("aol", HERE / "aol.py")
    aol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aol)
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


if __name__ == "__main__":
    main()
