"""Exact columns for the deterministic l_inf evasion tracks: each entry's recall and the certificate's tightness.

For each track, `rsbench exact` decides the samples its protocol evaluates (split, number of samples, epsilon)
into `leaderboards/<track>/exact/`, the folder the tables, the site and the profiles read (resumed when re-run;
nothing is solved for a run already complete); the columns are then derived as the leaderboards show them
(`rsbench.leaderboard.exact_columns`). The tracks' files are read only.
Run: python benchmarks/exact_tracks.py [--track evasion-kw-digits-0.05 ...] [--time-limit 120]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

TRACKS = ("evasion-kw-digits-0.05", "evasion-kw-digits-0.10", "evasion-crownibp-digits-0.10", "evasion-kw-mnist-0.1")
"""The deterministic l_inf tracks whose networks the MILP decides in seconds a sample (the CROWN-IBP MNIST ones,
100 samples at eps 0.2 and 0.4, take longer: name them with --track; their committed runs had --time-limit 60)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", action="append", default=None)
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--leaderboards", type=Path, default=Path(__file__).resolve().parents[1] / "leaderboards")
    args = parser.parse_args()
    os.environ.setdefault("RSBENCH_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

    from rsbench.api import verify_exactly
    from rsbench.leaderboard import exact_columns, track_files

    for track in args.track or TRACKS:
        path = track_files.find(args.leaderboards, track)
        board = track_files.load(path)
        out = path.parent / exact_columns.EXACT
        done = {r.index for r in exact_columns.read_run(out)[1]} if (out / "samples.jsonl").is_file() else set()
        if not set(range(board.protocol.num_samples)) <= done:
            verify_exactly(board.protocol.defense, num_samples=board.protocol.num_samples,
                           epsilon=board.protocol.epsilon, time_limit=args.time_limit, out=out, progress=False)
        shown = exact_columns.shown(path, board, track_files.stored_records(path.parent, board))
        print(f"{track} (eps {board.protocol.epsilon}, {board.protocol.num_samples} samples)")
        for line in shown.notes:
            print(f"  {line}")
        for name, share in shown.recall.items():
            print(f"  recall of {name}: {share.text()}")


if __name__ == "__main__":
    main()
