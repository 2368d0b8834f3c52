"""Exact columns for the deterministic l_inf evasion tracks: each attack's recall and the certificate's tightness.

For each track, `rsbench exact` decides its samples (the protocol's split, number of samples and epsilon) into
runs/exact-tracks/<track> (resumed when re-run; `--runs benchmarks/results/exact-tracks` reads the committed runs). Over the track's attacked samples (correctly classified):

- exists: samples where an adversarial example exists (exact), with the undecided ones counted apart;
- recall of each entry: its confirmed successes / the samples where an example exists, with a 95% Clopper-Pearson
  interval (a success on a sample the MILP proved robust would be a contradiction, and stops the script);
- tightness: samples the certifier certifies at epsilon / samples exactly robust (certified ones are robust, so
  at most 1), with its interval.

The tracks' files are read only (they are append-only; these columns are derived, not stored).
Run: python benchmarks/exact_tracks.py [--track evasion-kw-digits-0.05 ...] [--time-limit 120] [--runs DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

TRACKS = ("evasion-kw-digits-0.05", "evasion-kw-digits-0.10", "evasion-crownibp-digits-0.10", "evasion-kw-mnist-0.1")
"""The deterministic l_inf tracks whose networks the MILP decides in seconds a sample (the CROWN-IBP MNIST ones,
100 samples at eps 0.2 and 0.4, take longer: name them with --track)."""


def interval(successes: int, trials: int) -> str:
    from rsbench.stats import clopper_pearson

    if not trials:
        return "n/a"
    low, high = clopper_pearson(successes, trials, 0.05)
    return f"{successes}/{trials} = {successes / trials:.0%} [{low:.0%}, {high:.0%}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", action="append", default=None)
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--leaderboards", type=Path, default=Path(__file__).resolve().parents[1] / "leaderboards")
    parser.add_argument("--runs", type=Path, default=Path("runs") / "exact-tracks",
                        help="Folder of the exact runs, one per track (benchmarks/results/exact-tracks holds the "
                             "committed ones: pointing there re-derives the columns without solving anything)")
    args = parser.parse_args()
    os.environ.setdefault("RSBENCH_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

    from rsbench import leaderboard
    from rsbench.api import verify_exactly
    from rsbench.exact.run import ExactRecord
    from rsbench.rundir import RunDir

    for track in args.track or TRACKS:
        path = leaderboard.find(args.leaderboards, track)
        board = leaderboard.load(path)
        protocol = board.protocol
        clean, entries = leaderboard.stored_records(path.parent, board)
        out = args.runs / track
        result = verify_exactly(protocol.defense, num_samples=protocol.num_samples, epsilon=protocol.epsilon,
                                time_limit=args.time_limit, out=out, progress=False)
        exact = {r.index: r for r in RunDir(out, result.config).records(ExactRecord)}
        attacked = [record.index for record in clean if record.correct]
        exists = [i for i in attacked if exact[i].exact == "adversarial"]
        robust = [i for i in attacked if exact[i].exact == "robust"]
        unknown = len(attacked) - len(exists) - len(robust)
        certified = [i for i in attacked if exact[i].certified and exact[i].prediction == exact[i].label]
        if not set(certified) <= set(robust):
            raise SystemExit(f"{track}: a certified sample is not exactly robust: {sorted(set(certified) - set(robust))}")
        print(f"{track} (eps {protocol.epsilon}, {len(attacked)} attacked of {protocol.num_samples}): "
              f"an example exists on {len(exists)}, none on {len(robust)}, undecided {unknown}")
        for name, records in entries.items():
            found = {r.index for r in records if r.success}
            if found - set(exists):
                raise SystemExit(f"{track}: {name} succeeded where the MILP proved robustness: {sorted(found - set(exists))}")
            print(f"  recall of {name}: {interval(len(found), len(exists))}")
        print(f"  certificate tightness (certified / exactly robust): {interval(len(certified), len(robust))}")


if __name__ == "__main__":
    main()
