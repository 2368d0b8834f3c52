"""Memory and time of one CAA step, against the limits they should approach.

Memory: the extra peak resident memory of one CAA step (one gradient of the smoothed
view) at N = 1500 against N = 150 with the same chunk size should be about equal (ratio
close to 1), while an unchunked step at N = 1500 needs far more. Each measurement runs
in its own process, as the peak resident set size (ru_maxrss) gained by the step after
the model has been built and warmed up.

Time: one CAA iteration (the view's gradient plus, when the iterate is adversarial, a
success check on fresh noise) cannot be cheaper than N forward-and-backward passes of
the base classifier; the ratio of the two says how close it is to that limit (target <= 1.3).
On a GPU (`--device cuda --model cifar-resnet110`), `--per-sample` also times a whole CAA run
(N = 1500, M = 100) on one sample, which the CAA paper reports as 3.34 s on a P100.

    python benchmarks/caa_memory_time.py [--threads 1] [--device cuda] [--model cifar-resnet110] [--per-sample]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from rsbench.attacks.base import Tracker
from rsbench.attacks.caa import CAA
from rsbench.attacks.success import make_judge
from rsbench.defenses.smoothing import Smoothing
from rsbench.models import create_model

MEMORY_MODEL, MEMORY_SHAPE, MEMORY_CHUNK = "cifar-resnet20", (3, 32, 32), 100
SHAPES = {"digits-cnn": (1, 8, 8), "cifar-resnet20": (3, 32, 32), "cifar-resnet110": (3, 32, 32)}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_step_memory(num_noise: int, chunk_size: int) -> float:
    """Extra peak memory (MiB) of one CAA gradient step, measured in this (fresh) process."""
    torch.manual_seed(0)
    view = Smoothing(create_model(MEMORY_MODEL, 10).eval(), 10, 0.5).surrogate(num_noise=num_noise, chunk_size=chunk_size)
    x = torch.rand(MEMORY_SHAPE)
    with torch.no_grad():
        view.base_classifier(x.unsqueeze(0))  # warm up kernels and allocator outside the measurement
    before = peak_rss_mib()
    view.grad(x, lambda out, _: out.e0_lower - out.e1_upper, torch.Generator().manual_seed(0))
    return peak_rss_mib() - before


def measure_in_subprocess(num_noise: int, chunk_size: int, threads: int) -> float:
    code = (
        f"import torch; torch.set_num_threads({threads}); import benchmarks.caa_memory_time as b; "
        f"print(b.one_step_memory({num_noise}, {chunk_size}))"
    )
    root = Path(__file__).resolve().parents[1]
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    return float(output.strip().splitlines()[-1])


def seconds(function, repeats: int, device: torch.device) -> float:
    function()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_iteration(model_name: str, num_noise: int, chunk_size: int, device: torch.device,
                       iterations: int = 10, per_sample: bool = False) -> dict[str, float]:
    """Seconds per CAA iteration and per N forward-and-backward passes of the base classifier (and, with
    `per_sample`, of a whole 100-iteration CAA run)."""
    torch.manual_seed(0)
    shape = SHAPES[model_name]
    model = create_model(model_name, 10).eval().to(device)
    view = Smoothing(model, 10, 0.5, batch_size=chunk_size).surrogate(num_noise=num_noise)
    x = torch.rand(shape, device=device)

    def base_passes() -> None:
        for start in range(0, num_noise, chunk_size):
            batch = torch.rand((min(chunk_size, num_noise - start), *shape), device=device, requires_grad=True)
            model(batch).sum().backward()

    def caa(steps: int = iterations) -> None:
        tracker = Tracker(x, make_judge(view, 0, torch.Generator(device).manual_seed(1)))
        CAA(num_noise=num_noise, iterations=steps).run(view, x, 0, tracker, torch.Generator(device).manual_seed(2))

    return {"caa_iteration_s": seconds(caa, 1, device) / iterations,
            "n_forward_backward_s": seconds(base_passes, 3, device),
            "caa_sample_s": seconds(lambda: caa(100), 1, device) if per_sample else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 gives steadier timings)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="digits-cnn", choices=sorted(SHAPES), help="model of the time measurement")
    parser.add_argument("--per-sample", action="store_true", help="also time one whole CAA run (N=1500, M=100)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if device.type == "cpu":
        small, large = (measure_in_subprocess(n, MEMORY_CHUNK, args.threads) for n in (150, 1500))
        unchunked = measure_in_subprocess(1500, 1500, args.threads)
        print(f"memory of one CAA step ({MEMORY_MODEL}, chunk {MEMORY_CHUNK}): N=150 {small:.0f} MiB, "
              f"N=1500 {large:.0f} MiB")
        print(f"  ratio N=1500 / N=150 = {large / small:.2f}  (target: <= 1.2)")
        print(f"  unchunked N=1500 for contrast: {unchunked:.0f} MiB ({unchunked / large:.1f}x the chunked step)")
    else:
        peaks = [gpu_step_memory(n, MEMORY_CHUNK, device) for n in (150, 1500)]
        print(f"GPU memory of one CAA step ({MEMORY_MODEL}, chunk {MEMORY_CHUNK}): N=150 {peaks[0]:.0f} MiB, "
              f"N=1500 {peaks[1]:.0f} MiB, ratio {peaks[1] / peaks[0]:.2f}  (target: <= 1.2)")

    for chunk in (1500, 1000, 250):  # 1000: the shipped digits defenses' batch size, the main job's chunk
        timing = time_per_iteration(args.model, 1500, chunk, device, per_sample=args.per_sample)
        ratio = timing["caa_iteration_s"] / timing["n_forward_backward_s"]
        print(
            f"time ({args.model}, {device}, N=1500, chunk {chunk}): CAA iteration "
            f"{timing['caa_iteration_s'] * 1e3:.0f} ms, N forward+backward passes "
            f"{timing['n_forward_backward_s'] * 1e3:.0f} ms, ratio {ratio:.2f}  (target: <= 1.3)"
        )
        if args.per_sample:
            print(f"  one CAA run (M=100) per sample: {timing['caa_sample_s']:.2f} s (the paper: 3.34 s on a P100)")


def gpu_step_memory(num_noise: int, chunk_size: int, device: torch.device) -> float:
    """Peak CUDA memory (MiB) allocated by one CAA gradient step beyond what the model holds."""
    torch.manual_seed(0)
    view = Smoothing(create_model(MEMORY_MODEL, 10).eval().to(device), 10, 0.5).surrogate(
        num_noise=num_noise, chunk_size=chunk_size)
    x = torch.rand(MEMORY_SHAPE, device=device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    view.grad(x, lambda out, _: out.e0_lower - out.e1_upper, torch.Generator(device).manual_seed(0))
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - start) / 2**20


if __name__ == "__main__":
    main()
