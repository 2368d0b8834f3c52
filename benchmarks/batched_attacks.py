"""Seconds per sample of CAA run on k samples in lockstep (`CAA.run_many`) against one sample at a time.

Each sample keeps its own noise streams, so both ways give the same records; batching only
changes how many noisy copies one forward pass carries (k * chunk). On a GPU a small model
leaves the device idle between chunks of one sample, which k samples fill; on a CPU the work
per copy stays the same. The attack runs on the shipped digits model (sigma 0.5) at the
paper's N, judged as a run judges it (hard votes of judge_n fresh copies per candidate).

    python benchmarks/batched_attacks.py [--device cuda] [--iterations 20] [--num-noise 1500]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from rsbench.attacks.base import Tracker
from rsbench.attacks.caa import CAA
from rsbench.attacks.success import make_judge
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.defenses.smoothed_view import SmoothedView

SIZES = (1, 4, 8)


def seconds(function: Callable[[], None], device: torch.device) -> float:
    """Wall time of one call, with the device's queued work finished."""
    started = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def attack_together(attack: CAA, view: SmoothedView, judging: SmoothedView, xs: list[torch.Tensor],
                    labels: list[int]) -> None:
    """CAA on all samples at once, each with its own judge and attack streams."""
    trackers = [Tracker(x, make_judge(judging, label, torch.Generator(x.device).manual_seed(i)))
                for i, (x, label) in enumerate(zip(xs, labels))]
    generators = [torch.Generator(x.device).manual_seed(100 + i) for i, x in enumerate(xs)]
    attack.run_many(view, xs, labels, trackers, generators)


def attack_alone(attack: CAA, view: SmoothedView, judging: SmoothedView, xs: list[torch.Tensor],
                 labels: list[int]) -> None:
    """CAA on each sample in turn, with the streams `attack_together` gives it."""
    for i, (x, label) in enumerate(zip(xs, labels)):
        tracker = Tracker(x, make_judge(judging, label, torch.Generator(x.device).manual_seed(i)))
        attack.run(view, x, label, tracker, torch.Generator(x.device).manual_seed(100 + i))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--iterations", type=int, default=20, help="CAA iterations M")
    parser.add_argument("--num-noise", type=int, default=1500, help="N noisy copies per view evaluation")
    parser.add_argument("--chunk", type=int, default=1500, help="noisy copies per sample in one forward pass")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 gives steadier timings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    defense = load_defense("smoothing-digits-0.50", device)
    view = defense.surrogate(num_noise=args.num_noise, temperature=0.1, chunk_size=args.chunk)
    judging = defense.surrogate(num_noise=1500, alpha=0.005, chunk_size=args.chunk)
    dataset = load_dataset("digits")
    samples = [dataset[i] for i in range(max(SIZES))]
    xs, labels = [x.to(device) for x, _ in samples], [label for _, label in samples]
    attack = CAA(num_noise=args.num_noise, iterations=args.iterations)

    CAA(num_noise=args.num_noise, iterations=1).run_many(view, xs, labels,  # warm up kernels and allocator
                                                         [Tracker(x, lambda _: False) for x in xs],
                                                         [torch.Generator(device) for _ in xs])
    alone = seconds(lambda: attack_alone(attack, view, judging, xs, labels), device) / len(xs)
    print(f"CAA on digits-cnn ({device}, N={args.num_noise}, chunk {args.chunk}, M={args.iterations}, "
          f"{args.threads} thread(s)): one at a time {alone:.3f} s/sample")
    for k in SIZES:
        together = seconds(lambda: attack_together(attack, view, judging, xs[:k], labels[:k]), device) / k
        print(f"  batched k={k}: {together:.3f} s/sample, {alone / together:.2f}x the one-at-a-time speed")


if __name__ == "__main__":
    main()
