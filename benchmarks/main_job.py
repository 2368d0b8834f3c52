"""Where the main job's time goes: `rsbench evaluate --defense smoothing-digits-0.5 --attack caa`.

Two measurements. First the README's command as a user runs it, in a fresh process with its defaults and
a fresh run directory: wall seconds (what the user waits) and CPU seconds of it and its worker processes,
against the README's target of about a minute. Then the same job in this process, one worker with one
thread, with timers around each part: CPU seconds per part are the work itself, which other programs on
a shared machine slow down less than the wall time (say how loaded it was: the load averages are printed).

    python benchmarks/main_job.py [--skip-command] [--skip-breakdown] [-- EXTRA EVALUATE OPTIONS]

Parts: the clean certificates (CERTIFY, n0 + n copies per sample), the Cohen bound at the clean sample
(hard votes on judge N copies), the attack itself without its judge, the in-loop judge (hard votes on
judge N fresh copies per candidate), the confirmation (confirm_n copies per kept candidate), and the
tables printed at the end (the bootstrap intervals over samples); "other" is the rest (loading, plots,
records).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TARGET_S = 60.0
"""The README's stated time for the main job on 2 CPU cores."""


class Clock:
    """Wall and CPU seconds spent in named parts; a part entered inside another is taken out of the outer one."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.stack: list[str] = []

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        outer = self.stack[-1] if self.stack else None
        self.stack.append(name)
        try:
            yield
        finally:
            self.stack.pop()
            spent_wall, spent_cpu = time.perf_counter() - wall, time.process_time() - cpu
            self.wall[name] = self.wall.get(name, 0.0) + spent_wall
            self.cpu[name] = self.cpu.get(name, 0.0) + spent_cpu
            if outer is not None:
                self.wall[outer] = self.wall.get(outer, 0.0) - spent_wall
                self.cpu[outer] = self.cpu.get(outer, 0.0) - spent_cpu

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        """Time every call of `owner.attribute` as part `name`."""
        original: Callable = getattr(owner, attribute)

        def timed(*args: object, **kwargs: object) -> object:
            with self.part(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


def instrument(clock: Clock) -> None:
    """Wrap the parts of the evasion job on smoothing in timers; records are not changed."""
    from rsbench import engine, runner
    from rsbench.attacks.caa import CAA
    from rsbench.cli import commands
    from rsbench.defenses.smoothed_view import SmoothedView
    from rsbench.goals import evasion
    from rsbench.leaderboard import track_table

    clock.wrap(runner, "certify_samples", "clean certificates")
    clock.wrap(SmoothedView, "hard_radius", "Cohen bound (judge N)")
    clock.wrap(CAA, "run_many", "attack (without its judge)")
    clock.wrap(evasion, "confirm", "confirmation (confirm_n)")
    clock.wrap(engine, "format_table", "tables and intervals")
    clock.wrap(track_table, "run_table", "tables and intervals")
    original_judge = evasion.make_judge

    def make_judge(*args: object, **kwargs: object) -> Callable:
        judge = original_judge(*args, **kwargs)

        def timed(x_adv: object) -> bool:
            with clock.part("in-loop judge (judge N)"):
                return judge(x_adv)

        return timed

    evasion.make_judge = make_judge
    del commands  # imported so that the CLI's own imports happen before the clock starts


COMMAND = ["evaluate", "--defense", "smoothing-digits-0.5", "--attack", "caa"]


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def as_a_user_runs_it(extra: list[str]) -> float:
    """The README's command in a fresh process; prints and returns its wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as scratch:
        started, loaded = time.perf_counter(), load()
        subprocess.run([sys.executable, "-m", "rsbench", "--quiet", *COMMAND, "--out", str(Path(scratch) / "run"),
                        *extra], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"rsbench {' '.join(COMMAND + extra)}: {wall:.1f} s wall, {cpu:.1f} s CPU (all processes); "
          f"{os.cpu_count()} CPUs, load average {loaded} before, {load()} after")
    print(f"wall time over the README's target of {TARGET_S:.0f} s: {wall / TARGET_S:.2f}")
    return wall


def breakdown(extra: list[str]) -> None:
    """The job in this process, one worker with one thread, timed part by part."""
    import torch

    torch.set_num_threads(1)
    clock = Clock()
    instrument(clock)
    from rsbench.cli import cli

    loaded = load()
    with tempfile.TemporaryDirectory() as scratch:
        command = ["--quiet", *COMMAND, "--workers", "1", "--out", str(Path(scratch) / "run"), *extra]
        wall, cpu = time.perf_counter(), time.process_time()
        with clock.part("other"), contextlib.redirect_stdout(io.StringIO()):
            cli.main(command, standalone_mode=False)
        total_wall, total_cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"\nthe same job in one process with one thread (load average {loaded} before, {load()} after):")
    print(f"{'part':<30}{'CPU (s)':>10}{'share':>8}{'wall (s)':>10}")
    for name in sorted(clock.cpu, key=lambda k: -clock.cpu[k]):
        print(f"{name:<30}{clock.cpu[name]:>10.1f}{clock.cpu[name] / total_cpu:>8.0%}{clock.wall[name]:>10.1f}")
    print(f"{'total':<30}{total_cpu:>10.1f}{'':>8}{total_wall:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-command", action="store_true", help="only the breakdown")
    parser.add_argument("--skip-breakdown", action="store_true", help="only the command as a user runs it")
    parser.add_argument("extra", nargs="*", help="more `rsbench evaluate` options, after --")
    args = parser.parse_args()
    if not args.skip_command:
        as_a_user_runs_it(args.extra)
    if not args.skip_breakdown:
        breakdown(args.extra)


if __name__ == "__main__":
    main()
