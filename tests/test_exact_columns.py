"""Exact columns: recall and tightness counted from verdicts, the contradictions they refuse, and the l2 gap."""

from __future__ import annotations

import pytest

from rsbench.errors import RsbenchError
from rsbench.leaderboard.exact_columns import Share, derive, gap
from rsbench.records import AttackRecord

VERDICTS = {0: "adversarial", 1: "robust", 2: "adversarial", 3: "unknown", 4: "robust", 5: "unknown", 6: "robust",
            7: "adversarial"}
"""Eight samples; 7 is not attacked (misclassified), so it counts nowhere."""


def test_recall_and_tightness_are_the_hand_counts() -> None:
    columns = derive("t", [0, 1, 2, 3, 4, 5, 6], {1, 4}, VERDICTS, {"a": {0, 2}, "b": {0, 3}, "c": set()})
    # exists: 0 and 2 (the MILP), 3 (b's success on an undecided sample); robust: 1, 4, 6; unknown: 5
    assert (columns.attacked, columns.exists, columns.robust, columns.unknown) == (7, 3, 3, 1)
    assert columns.recall == {"a": Share(2, 3), "b": Share(2, 3), "c": Share(0, 3)}
    assert columns.tightness == Share(2, 3)
    assert columns.recall["a"].text() == "2/3 = 67% [9.4, 99]"
    assert Share(0, 0).text() == "n/a" and Share(3, 3).text() == "3/3 = 100% [29, 100]"


@pytest.mark.parametrize(("certified", "successes", "message"), [
    ({1, 2}, {}, r"t: samples \[2\] are certified but not exactly robust"),
    ({1, 5}, {}, r"t: samples \[5\] are certified but not exactly robust"),
    (set(), {"a": {0, 4, 6}}, r"t: a succeeded on samples \[4, 6\], which the MILP proved robust"),
])
def test_contradictions_stop_in_one_line_naming_the_samples(certified: set[int], successes: dict[str, set[int]],
                                                            message: str) -> None:
    with pytest.raises(RsbenchError, match=message):
        derive("t", [0, 1, 2, 3, 4, 5, 6], certified, VERDICTS, successes)


def test_an_attacked_sample_without_a_verdict_is_refused() -> None:
    with pytest.raises(RsbenchError, match=r"no verdict on attacked samples \[8\]"):
        derive("t", [0, 8], set(), VERDICTS, {})


def record(index: int, best: float | None, certificate: float) -> AttackRecord:
    return AttackRecord(index=index, label=0, attack="a", success=best is not None, first_radius=best,
                        first_time_s=None, best_radius=best, best_time_s=None, total_time_s=1.0,
                        cohen_radius=certificate, iterations=1, judge_calls=1, candidates=1, rejected=0, judge_n=None,
                        judge_alpha=None, confirm_n=None)


def test_the_l2_gap_takes_the_best_entry_per_sample_where_a_certificate_and_an_example_exist() -> None:
    entries = {"a": [record(0, 1.0, 0.5), record(1, None, 0.5), record(2, 0.9, 0.0), record(3, 2.0, 1.0)],
               "b": [record(0, 0.7, 0.5), record(1, None, 0.5), record(2, 0.8, 0.0), record(3, None, 1.0)]}
    found = gap(entries)
    assert found.gaps == pytest.approx([0.2, 1.0])  # sample 1: no example; sample 2: no certificate
    assert found.text() == "on the 2 samples with both, median 0.6 (quartiles 0.4, 0.8; 0.2 to 1)"
