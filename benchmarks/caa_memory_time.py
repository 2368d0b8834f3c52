"""Memory and time of one CAA step, against the limits they should approach.

Memory: the extra peak resident memory of one CAA step (one gradient of the smoothed
view) at N = 1500 against N = 150 with the same chunk size should be about equal (ratio
close to 1), while an unchunked step at N = 1500 needs far more. Each measurement runs
in its own process, as the peak resident set size (ru_maxrss) gained by the step after
the model has been built and warmed up.

Time: one CAA iteration (the view's gradient plus, when the iterate is adversarial, a
success check on fresh noise) cannot be cheaper than N forward-and-backward passes of
the base classifier; the ratio of the two says how close it is to that limit.

    python benchmarks/caa_memory_time.py [--threads 1]
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
TIME_MODEL, TIME_SHAPE = "digits-cnn", (1, 8, 8)


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


def seconds(function, repeats: int) -> float:
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def time_per_iteration(num_noise: int, chunk_size: int, iterations: int = 10) -> dict[str, float]:
    """Seconds per CAA iteration and per N forward-and-backward passes of the base classifier."""
    torch.manual_seed(0)
    model = create_model(TIME_MODEL, 10).eval()
    defense = Smoothing(model, 10, 0.5, batch_size=chunk_size)
    view = defense.surrogate(num_noise=num_noise)
    x = torch.rand(TIME_SHAPE)

    def base_passes() -> None:
        for start in range(0, num_noise, chunk_size):
            batch = torch.rand((min(chunk_size, num_noise - start), *TIME_SHAPE), requires_grad=True)
            model(batch).sum().backward()

    def caa() -> None:
        tracker = Tracker(x, make_judge(view, 0, torch.Generator().manual_seed(1)))
        CAA(num_noise=num_noise, iterations=iterations).run(view, x, 0, tracker, torch.Generator().manual_seed(2))

    return {"caa_iteration_s": seconds(caa, 1) / iterations, "n_forward_backward_s": seconds(base_passes, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 gives steadier timings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    small, large = (measure_in_subprocess(n, MEMORY_CHUNK, args.threads) for n in (150, 1500))
    unchunked = measure_in_subprocess(1500, 1500, args.threads)
    print(f"memory of one CAA step ({MEMORY_MODEL}, chunk {MEMORY_CHUNK}): N=150 {small:.0f} MiB, N=1500 {large:.0f} MiB")
    print(f"  ratio N=1500 / N=150 = {large / small:.2f}  (target: close to 1)")
    print(f"  unchunked N=1500 for contrast: {unchunked:.0f} MiB ({unchunked / large:.1f}x the chunked step)")

    for chunk in (1500, 250):
        timing = time_per_iteration(1500, chunk)
        ratio = timing["caa_iteration_s"] / timing["n_forward_backward_s"]
        print(
            f"time ({TIME_MODEL}, N=1500, chunk {chunk}): CAA iteration {timing['caa_iteration_s'] * 1e3:.0f} ms, "
            f"N forward+backward passes {timing['n_forward_backward_s'] * 1e3:.0f} ms, ratio {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
