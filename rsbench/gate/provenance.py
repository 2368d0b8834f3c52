"""Whether rsbench produced a new entry, or someone assembled it.

Re-judging stored examples shows that they are adversarial, not that the entry's attack found them: an
entry assembled from other entries' examples (per sample the smallest one) passes every verdict. So in a
pull request a registry entry is run again with its seed under the track's protocol and its records
compared (`rerun`), as `check` does with a submitted defense's entries; the times are the running
machine's and are shown as self-reported (`track_table.self_reported`). A submitted attack cannot be run
again outside its sandbox, and its folder could carry other entries' examples (the leaderboards are
public): its stored example may neither equal another entry's stored example of the same sample nor lie on
the segment between the clean x and one (`borrowed`). Registry attacks can do that honestly (on 15 of the
328 pairs of entries on the committed tracks a degradation attack's example equals, or lies on the
segment to, another's: eps-pgd searches along pgd's direction), which is why they are run again instead.
A new track version takes its goal's standard protocol (`standard`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from rsbench import engine
from rsbench.errors import RsbenchError
from rsbench.leaderboard import rederive
from rsbench.leaderboard.track_files import (
    Entry,
    Leaderboard,
    jsonl,
    parse_jsonl,
    record_type,
)
from rsbench.records import SampleRecord
from rsbench.submissions.defense_submissions import TRACK_PROTOCOL, track_protocols

SEGMENT_TOLERANCE = 1e-4
"""How far (relative to the other example's perturbation) an example may lie from the segment between x and
another entry's example and still count as on it: float32 rounding of a rescaled copy, nothing an attack of its
own comes near."""


def borrowed(where: str, entry: dict, others: dict[str, dict]) -> None:
    """Refuse, with one line, an entry's examples (`index`, `x`, `x_adv`) of which one equals, or lies on the segment
    from x to, the stored example of the same sample of another entry (by name)."""
    for name, other in others.items():
        theirs = {i: row for row, i in enumerate(other["index"].tolist())}
        for row, index in enumerate(entry["index"].tolist()):
            if index not in theirs:
                continue
            x = entry["x"][row].double()
            mine, their = entry["x_adv"][row].double() - x, other["x_adv"][theirs[index]].double() - x
            scale = float(their.norm())
            if scale == 0:
                continue
            t = float((mine * their).sum()) / scale ** 2
            if -SEGMENT_TOLERANCE <= t <= 1 + SEGMENT_TOLERANCE and \
                    float((mine - t * their).norm()) <= SEGMENT_TOLERANCE * scale:
                how = "equals" if abs(t - 1) <= SEGMENT_TOLERANCE else f"lies {t:.3f} of the way from x to"
                raise RsbenchError(f"{where}: its example of sample {index} {how} {name}'s stored example; an entry "
                                   "is an attack's own run, not assembled from other entries")


def rerun(where: str, board: Leaderboard, entry: Entry, clean: list[SampleRecord], records: list) -> None:
    """Refuse, with one line, a registry entry whose records are not what running its attack again here, with its
    seed under the track's protocol, gives (times aside)."""
    with tempfile.TemporaryDirectory(prefix="rsbench-rerun-") as scratch:
        out = Path(scratch)
        (out / "clean.jsonl").write_bytes(jsonl(clean))  # the engine attacks the track's samples; it certifies nothing
        config = board.protocol.run_config([entry.attack]).model_copy(update={"seed": entry.seed})
        engine.evaluate(board.defense, [entry.attack], config, out, torch.device("cpu"), save_examples=True,
                        progress=False)
        again = parse_jsonl((out / "samples.jsonl").read_bytes(), record_type(board.protocol.goal))
    rederive.same_records(where, records, again)


STANDARD_SAMPLES = (TRACK_PROTOCOL["num_samples"], 100)
"""A track's samples: the first 20 of the defense's evaluation split (what fits a 2-core CPU), or the first 100
(the tracks set beside a paper's table)."""


def standard(where: str, board: Leaderboard) -> None:
    """Refuse, with one line, a track version whose protocol is not its goal's standard one: the certification and
    judge settings, seed, split, radius and bootstrap `rsbench evaluate` records by default for its defense and goal
    (`defense_submissions.track_protocols`), on STANDARD_SAMPLES samples."""
    expected = track_protocols(board.defense, board.protocol.num_samples).get(board.track)
    differing = [k for k in type(board.protocol).model_fields
                 if expected is None or getattr(expected, k) != getattr(board.protocol, k)]
    if board.protocol.num_samples not in STANDARD_SAMPLES:
        differing.append("num_samples")
    if differing:
        raise RsbenchError(f"{where}: a new track version takes its goal's standard protocol (rsbench evaluate's "
                           f"defaults on the first {' or '.join(map(str, STANDARD_SAMPLES))} samples); its "
                           f"{', '.join(dict.fromkeys(differing))} differ; refused")
