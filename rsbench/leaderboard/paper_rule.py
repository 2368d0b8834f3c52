"""A smoothing evasion track's entries under the certification-aware-attack paper's success rule, beside rsbench's.

The track ranks by rsbench's rule: an example counts once the in-loop judge's Goodman test accepts it *and* it is
confirmed on fresh noise. The paper counts it at the first step (the judge's test on its own copies). A paper row
is compared with the paper's rule, so the tables say what each entry scores under it, from the same records: a
sample succeeds when the judge accepted any candidate (`candidates > 0`, stored by every record), and its radius is
the smallest accepted one (`judged_best_radius`, stored by records made since it was added; older records give
no r50 or best by this rule rather than the strict one's).
"""

from __future__ import annotations

import statistics

from rsbench.leaderboard.scoring import comparison, resampled
from rsbench.leaderboard.track_files import Interval, Leaderboard
from rsbench.metrics import paper_view, recorded
from rsbench.records import AttackRecord, SampleRecord
from rsbench.stats import bootstrap, clopper_pearson


def r50(board: Leaderboard, clean: list[SampleRecord], rows: list[AttackRecord]) -> Interval:
    """The median smallest accepted radius over the paper-rule successes, with the track's bootstrap interval."""
    view = paper_view(rows)

    def statistic(draw: list[int]) -> dict[str, float | None]:
        radii = [r.best_radius for r in resampled(clean, view, draw)[1] if r.success]
        return {"r50": statistics.median(radii) if radii else None}

    value, low, high = bootstrap(statistic, len(clean), seed=board.protocol.bootstrap_seed,
                                 resamples=board.protocol.bootstrap_resamples)["r50"]
    return Interval(value=value, ci_low=None if value is None else low, ci_high=None if value is None else high)


def note(board: Leaderboard, stored: tuple[list[SampleRecord], dict[str, list[AttackRecord]]]) -> str | None:
    """One line naming each entry's success (95% Clopper-Pearson interval), and, where the records carry the judged
    radii, its r50 and its best among the entries (95% bootstrap intervals) under the paper's rule, for a smoothing
    evasion track with entries; None for any other track."""
    if board.protocol.goal != "evasion" or board.defense.kind != "smoothing" or not board.entries:
        return None
    clean, entries = stored
    entries = {name: rows for name, rows in entries.items() if rows}
    best = (comparison(board, clean, {name: paper_view(rows) for name, rows in entries.items()}).best
            if all(recorded(rows) for rows in entries.values()) else {})
    parts = []
    for name, rows in entries.items():
        accepted = sum(r.candidates > 0 for r in rows)
        low, high = clopper_pearson(accepted, len(rows), 0.05)
        part = f"{name} {100 * accepted / len(rows):.0f}% [{100 * low:.0f}, {100 * high:.0f}]"
        if recorded(rows):
            median = r50(board, clean, rows)
            part += ", r50 " + ("-" if median.value is None else
                                f"{median.value:.3g} [{median.ci_low:.3g}, {median.ci_high:.3g}]")
        if name in best and best[name].value is not None:
            part += f", best {best[name].value:.0f}% [{best[name].ci_low:.0f}, {best[name].ci_high:.0f}]"
        parts.append(part)
    judge = board.protocol
    missing = [name for name, rows in entries.items() if not recorded(rows)]
    return (f"Under the certification-aware-attack paper's rule (an example counts once the in-loop judge's Goodman "
            f"test on {judge.judge_n} copies at alpha {judge.judge_alpha:g} accepts it, confirmed on fresh noise or "
            f"not; the table ranks by rsbench's rule, which also confirms it on {judge.confirm_n} fresh copies): "
            + "; ".join(parts) + "."
            + (f" r50 and best by that rule need each record's smallest accepted radius, which the records of "
               f"{', '.join(missing)} predate." if missing else ""))
