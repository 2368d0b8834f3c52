"""A smoothing evasion track's entries under the certification-aware-attack paper's success rule, beside rsbench's.

The track ranks by rsbench's rule: an example counts once the in-loop judge's Goodman test accepts it *and* it is
confirmed on fresh noise. The paper counts it at the first step (the judge's test on its own copies). A paper row
is compared with the paper's rule, so the tables say what each entry scores under it, from the same records: a
sample succeeds when the judge accepted any candidate (`candidates > 0`, stored by every record), and its radius is
the smallest accepted one (`judged_best_radius`, stored by records made since it was added; older records give
no r50 by this rule rather than the strict one's).
"""

from __future__ import annotations

from rsbench.leaderboard.track_files import Leaderboard
from rsbench.metrics import paper_rule_table
from rsbench.records import AttackRecord, SampleRecord
from rsbench.stats import clopper_pearson


def note(board: Leaderboard, stored: tuple[list[SampleRecord], dict[str, list[AttackRecord]]]) -> str | None:
    """One line naming each entry's success (95% Clopper-Pearson interval) and r50 under the paper's rule, for a
    smoothing evasion track with entries; None for any other track."""
    if board.protocol.goal != "evasion" or board.defense.kind != "smoothing" or not board.entries:
        return None
    parts = []
    for name, rows in stored[1].items():
        if not rows:
            continue
        accepted = sum(r.candidates > 0 for r in rows)
        low, high = clopper_pearson(accepted, len(rows), 0.05)
        r50 = paper_rule_table(rows)[rows[0].attack]["r50"]  # an entry's r50 rests on its own records alone
        radius = f"r50 {r50:.3g}" if r50 is not None else "r50 not recorded"
        parts.append(f"{name} {100 * accepted / len(rows):.0f}% [{100 * low:.0f}, {100 * high:.0f}], {radius}")
    judge = board.protocol
    return (f"Under the certification-aware-attack paper's rule (an example counts once the in-loop judge's Goodman "
            f"test on {judge.judge_n} copies at alpha {judge.judge_alpha:g} accepts it, confirmed on fresh noise or "
            f"not; the table ranks by rsbench's rule, which also confirms it on {judge.confirm_n} fresh copies): "
            + "; ".join(parts) + ". An r50 by that rule needs each record's smallest accepted radius, which records "
            "made before it was stored lack.")
