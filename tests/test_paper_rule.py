"""A smoothing track's entries under the certification-aware-attack paper's rule, from the same stored records."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from rsbench import metrics
from rsbench.errors import RsbenchError
from rsbench.gate import audit
from rsbench.leaderboard import paper_rule, track_files
from rsbench.leaderboard.exact_columns import shown

ROOT = Path(__file__).resolve().parents[1] / "leaderboards"


def test_every_entry_counts_what_the_judge_accepted_confirmed_or_not() -> None:
    path = track_files.latest(ROOT, "evasion-smoothing-digits-0.50")
    board = track_files.load(path)
    clean, entries = track_files.stored_records(path.parent, board)
    name = next(iter(entries))
    rows = entries[name]
    # every sample: a candidate the judge accepted, none confirmed, its smallest accepted radius recorded
    entries = {**entries, name: [r.model_copy(update={"candidates": 1, "rejected": 1, "success": False,
                                                       "best_radius": None, "judged_best_radius": 0.25 + r.index})
                                 for r in rows]}
    line = paper_rule.note(board, (clean, entries))
    r50 = statistics.median(0.25 + r.index for r in rows)
    assert re.search(rf"{name} 100% \[\d+, 100\], r50 {r50:.3g} \[[\d.]+, [\d.]+\][;.]", line)
    # nothing accepted: 0% under the paper's rule, whatever the strict one says
    entries[name] = [r.model_copy(update={"candidates": 0, "judged_best_radius": None}) for r in rows]
    assert f"{name} 0% [0, " in paper_rule.note(board, (clean, entries))


def test_best_by_the_papers_rule_is_counted_from_the_judged_radii_of_every_entry() -> None:
    """Once every entry's records carry the judged radii, each entry's best by the paper's rule is the share of
    samples where its smallest accepted radius is the smallest of all entries', confirmed or not."""
    path = track_files.latest(ROOT, "evasion-smoothing-digits-0.50")
    board = track_files.load(path)
    clean, stored = track_files.stored_records(path.parent, board)
    names = list(stored)

    def judged(k: int, index: int) -> float | None:
        """Entry k's smallest accepted radius on a sample: the last entry wins every third sample, unconfirmed;
        entry 0 the others; entry 1 accepts nothing on even samples."""
        if k == 1 and index % 2 == 0:
            return None
        if k == len(names) - 1:
            return 0.5 if index % 3 == 0 else 5.0
        return 1.0 + k

    entries = {name: [r.model_copy(update={"candidates": int(judged(k, r.index) is not None), "success": False,
                                           "best_radius": None, "judged_best_radius": judged(k, r.index)})
                      for r in stored[name]] for k, name in enumerate(names)}
    line = paper_rule.note(board, (clean, entries))
    indices = [r.index for r in entries[names[0]]]
    for k, name in enumerate(names):
        smallest = {i: min(judged(j, i) for j in range(len(names)) if judged(j, i) is not None) for i in indices}
        wins = sum(judged(k, i) is not None and judged(k, i) == smallest[i] for i in indices)
        assert re.search(rf"{re.escape(name)} \d+% \[\d+, \d+\], r50 [^;]*, best {100 * wins / len(indices):.0f}% "
                         rf"\[\d+, \d+\]", line), name
    assert "predate" not in line


def test_the_shipped_smoothing_tables_carry_the_rule_and_no_other_track_does() -> None:
    for path in track_files.files(ROOT):
        board = track_files.load(path)
        records = track_files.stored_records(path.parent, board)
        notes = " ".join(shown(path, board, records).notes) if board.defense.dataset.name == "digits" else ""
        smoothing = board.protocol.goal == "evasion" and board.defense.kind == "smoothing" and board.entries
        if board.defense.dataset.name == "digits":
            assert ("paper's rule" in notes) == bool(smoothing), board.track
        if smoothing:
            line = paper_rule.note(board, records)
            for name, rows in records[1].items():
                accepted = round(100 * sum(r.candidates > 0 for r in rows) / len(rows))
                assert f"{name} {accepted}% [" in line


def _tampered(root: Path, track: str) -> tuple[Path, str]:
    """The track's first entry's records given a smallest accepted radius of 0.01 wherever the judge accepted one
    (the paper's rule then shows an r50 of 0.01 where the records give none; no metric of rsbench's rule moves),
    rewritten in its gzip file: (the track file, the entry's name)."""
    path = track_files.latest(root, track)
    board = track_files.load(path)
    entry = board.entries[0]
    stored = path.parent / entry.records.path
    rows = [json.loads(line) for line in gzip.decompress(stored.read_bytes()).splitlines()]
    for row in rows:
        row.update(judged_best_radius=0.01 if row["candidates"] > 0 else None)
    stored.write_bytes(gzip.compress(b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows)))
    return path, entry.name


def test_a_record_edited_to_move_the_paper_rule_is_refused_with_or_without_its_new_sha256(tmp_path: Path) -> None:
    track = "evasion-smoothing-digits-0.50"
    root = tmp_path / "leaderboards"
    shutil.copytree(ROOT / track, root / track, ignore=shutil.ignore_patterns("site"))
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "base"]):
        subprocess.run([*git, *args], capture_output=True, check=True)
    path, name = _tampered(root, track)
    with pytest.raises(RsbenchError, match=rf"{name}\.records\.jsonl\.gz: records do not match their sha256 in the "
                                           "leaderboard file"):
        audit.check_file(path, intervals=False)
    stored = path.parent / track_files.load(path).entries[0].records.path
    fresh = hashlib.sha256(gzip.decompress(stored.read_bytes())).hexdigest()
    text = path.read_text()
    old = track_files.load(path).entries[0].records.sha256
    path.write_text(text.replace(old, fresh))
    board = track_files.load(path)
    line = paper_rule.note(board, track_files.stored_records(path.parent, board))
    assert re.search(rf"{name} \d+% \[\d+, \d+\], r50 0\.01 \[0\.01, 0\.01\];", line)  # what the edit would show
    with pytest.raises(RsbenchError, match=rf"{track}/v\d+\.json: an entry changed or was removed since HEAD"):
        audit.check(root, "HEAD", intervals=False, pull_request=True)


def test_evaluates_table_of_both_rules_matches_table_1_and_a_hand_count() -> None:
    """`metrics.rule_table` (evaluate's table of both rules): its strict points are Table 1's (`attack_table`), its
    paper-rule best and r50 a count by hand from judged radii, and every interval holds its point."""
    path = track_files.latest(ROOT, "evasion-smoothing-mnist-0.50")
    board = track_files.load(path)
    _, entries = track_files.stored_records(path.parent, board)
    rows = [r.model_copy(update={"judged_best_radius": 1.0 + (r.index % 3 == k) if r.candidates else None})
            for k, records in enumerate(entries.values()) for r in records]
    rules = metrics.rule_table(rows)
    for name, row in metrics.attack_table(rows).items():
        strict = rules["strict"][name]
        assert (strict["success"][0], strict["best"][0], strict["r50"][0]) == pytest.approx(
            (row.success, row.best, row.r50))
        mine = [r for r in rows if r.attack == name]
        smallest = {r.index: min(o.judged_best_radius for o in rows if o.index == r.index and o.candidates)
                    for r in mine if r.candidates}
        wins = sum(r.judged_best_radius == smallest[r.index] for r in mine if r.candidates)
        paper = rules["paper"][name]
        assert paper["best"][0] == pytest.approx(100 * wins / len(mine))
        assert paper["r50"][0] == statistics.median(r.judged_best_radius for r in mine if r.candidates)
        for estimate in (*strict.values(), *paper.values()):
            assert estimate[0] is None or estimate[1] <= estimate[0] <= estimate[2]


def test_evaluates_table_of_both_rules_refuses_a_sample_recorded_twice_for_one_attack() -> None:
    """Two records of one attack on one sample: Table 1 (`attack_table`) would count both, the bootstrap one; rather
    than two different numbers for one run, refused."""
    path = track_files.latest(ROOT, "evasion-smoothing-mnist-0.50")
    board = track_files.load(path)
    _, entries = track_files.stored_records(path.parent, board)
    rows = [r for records in entries.values() for r in records]
    hit = next(r for r in rows if r.success)
    with pytest.raises(ValueError, match=rf"{hit.attack} has 2 records of sample {hit.index}"):
        metrics.rule_table([*rows, hit.model_copy(update={"success": False, "best_radius": None})])
