"""What `rsbench leaderboard check` costs on a leaderboards folder: point values only, every interval and comparison
block, and, against a git revision, deriving and re-judging the entries new since it.

The full recomputation (1000 bootstrap resamples of every metric and of `best` and the paired comparisons) is
what CI runs on every pull request; the ratio to the point-value check says how much the intervals add. The
test suite checks point values on the committed tracks and exercises the full recomputation on a small one.

    python benchmarks/leaderboard_check.py [--root leaderboards] [--against REV]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rsbench.gate import audit


def timed(**options: object) -> tuple[float, audit.Checked]:
    started = time.perf_counter()
    checked = audit.check(**options)  # type: ignore[arg-type]
    return time.perf_counter() - started, checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("leaderboards"))
    parser.add_argument("--against", default=None, help="also derive and re-judge the entries new since this revision")
    args = parser.parse_args()
    quick, checked = timed(root=args.root, intervals=False)
    full, _ = timed(root=args.root)
    print(f"{len(checked.files)} files: point values {quick:.1f} s, every interval and comparison {full:.1f} s "
          f"(ratio {full / quick:.1f})")
    if args.against:
        derived, checked = timed(root=args.root, against=args.against)
        print(f"against {args.against}: {len(checked.new)} new entries derived and re-judged, {derived:.1f} s in all "
              f"({derived - full:.1f} s beyond the full recomputation)")


if __name__ == "__main__":
    main()
