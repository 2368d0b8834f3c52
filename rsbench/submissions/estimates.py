"""How long a defense's `submission verify` or `measure` will take, told before the long work starts.

A person deciding whether to wait needs a number, not a progress bar that starts at zero. Each goal's work is
timed on its first sample still to do, which the run then keeps (every noise stream is seeded per sample, so
that sample's record is the one the whole run would write), and multiplied by the samples it has left; a goal
whose samples are all done costs nothing more. The total is the sum of the goals' lines as printed, so the
lines always add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    """One goal's time still to come, from its first sample."""

    goal: str
    first_s: float
    """Seconds its first sample took (over all of the goal's attacks, or its certification)."""
    left: int
    """Samples left after the first (the most any of its attacks has left)."""
    seconds: float
    """Seconds still to come: each attack's first sample times its samples left, summed."""
    note: str = ""


def shown(seconds: float) -> float:
    """Seconds as printed (tenths), which the total adds up."""
    return round(seconds, 1)


def lines(estimates: Sequence[Estimate], what: str) -> list[str]:
    """One line per goal, then the total of those lines; `what` names the work they time."""
    out = []
    for e in estimates:
        note = f" ({e.note})" if e.note else ""
        left = f"{e.left} sample{'' if e.left == 1 else 's'} left"
        out.append(f"estimate {e.goal}: first sample {e.first_s:.2f} s{note}, {left}: about {shown(e.seconds):.1f} s")
    total = shown(sum(shown(e.seconds) for e in estimates))
    out.append(f"estimate in all: about {total:.1f} s ({total / 60:.1f} min) of {what}")
    return out
