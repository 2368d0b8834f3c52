"""Leaderboards: protocol hashes, append-only tracks, refusals, bootstrap intervals, `best` across entries."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rsbench import registry, runner
from rsbench.errors import RsbenchError
from rsbench.gate import audit
from rsbench.leaderboard import admission, track_files, track_table
from rsbench.stats import bootstrap

DEFENSE = "smoothing-digits-0.50"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "leaderboards"


def protocol(**changes: object) -> track_files.Protocol:
    base = track_files.Protocol(
        defense=DEFENSE, defense_hash="a" * 64, goal="evasion", epsilon=None, split="test", num_samples=20, n0=100,
        n=10_000, alpha=0.001, judge_n=1500, judge_alpha=0.005, confirm_n=15_000, seed=0,
        metrics=track_files.METRICS["evasion"])
    return base.model_copy(update=changes)


def test_protocol_hash_is_the_sha256_of_canonical_json_and_changes_with_every_field() -> None:
    p = protocol(confirm_bounds="judge_n")
    canonical = json.dumps(p.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert p.spec_hash() == hashlib.sha256(canonical.encode()).hexdigest() == protocol(confirm_bounds="judge_n").spec_hash()
    p = protocol()
    changed = {"defense": "other", "defense_hash": "b" * 64, "goal": "degradation", "epsilon": 0.5, "split": "train",
               "num_samples": 21, "n0": 101, "n": 10_001, "alpha": 0.002, "judge_n": 1501, "judge_alpha": 0.01,
               "confirm_n": 15_001, "confirm_bounds": "judge_n", "seed": 1, "metrics": {"success": "changed"},
               "bootstrap_resamples": 999, "bootstrap_seed": 1}
    assert set(changed) == set(track_files.Protocol.model_fields)
    hashes = {protocol(**{field: value}).spec_hash() for field, value in changed.items()}
    assert len(hashes) == len(changed) and p.spec_hash() not in hashes


def test_protocols_written_before_strict_confirmation_keep_their_hash() -> None:
    """A null `confirm_bounds` is left out of the hash: the canonical form is the one from before the field."""
    p = protocol(goal="evasion")
    earlier = {k: v for k, v in p.model_dump(mode="json").items() if k != "confirm_bounds"}
    canonical = json.dumps(earlier, sort_keys=True, separators=(",", ":"))
    assert p.confirm_bounds is None and p.spec_hash() == hashlib.sha256(canonical.encode()).hexdigest()


def test_smoothing_protocols_define_the_confirmation_they_judge_by() -> None:
    def new(defense: str, goal: str) -> track_files.Protocol:
        spec = registry.get_defense(defense)
        config = runner.run_config(spec, "evaluate", num_samples=5, goal=goal, epsilon=0.25)
        return track_files.Protocol.of_run(config, spec.kind)

    degradation, gloro = new("smoothing-digits-0.25", "degradation"), new("gloro-digits-0.25", "degradation")
    assert "judge's bounds" in degradation.metrics["fpr_lower"] and "Goodman" not in gloro.metrics["fpr_lower"]
    assert degradation.confirm_bounds == "judge_n" and gloro.confirm_bounds is None
    evasion, spoofing = new("smoothing-digits-0.25", "evasion"), new("smoothing-digits-0.25", "spoofing")
    assert "judge's own test" in evasion.metrics["success"] and evasion.confirm_bounds == "judge_n"
    assert spoofing.confirm_bounds is None and spoofing.metrics == track_files.METRICS["spoofing"]
    assert track_files.goal_metrics("evasion", "smoothing") == track_files.METRICS["evasion"]  # the earlier rule


def test_bootstrap_contains_the_point_and_shrinks_with_more_samples() -> None:
    def widths(units: int) -> float:
        hits = [k % 3 == 0 for k in range(units)]
        (value, low, high), = bootstrap(lambda draw: {"mean": sum(hits[i] for i in draw) / len(draw)}, units).values()
        assert low <= value <= high and value == pytest.approx(sum(hits) / units)
        return high - low

    assert widths(300) < widths(30) / 2  # sqrt(10) narrower in theory
    median = bootstrap(lambda draw: {"m": sorted(draw)[len(draw) // 2]}, 7, seed=3)["m"]
    assert median[1] <= median[0] <= median[2]


def test_add_stores_hashed_records_and_intervals(root: Path, tmp_path: Path, make_evasion_run: Callable[..., Path]) -> None:
    run = make_evasion_run(tmp_path / "run", {"caa": [0.5, 0.6, None, 0.8]})
    path, added = admission.add_run(root, run)
    assert added == ["caa"] and path == root / f"evasion-{DEFENSE}" / "v1.json"
    board = track_files.load(path)
    entry = board.entries[0]
    assert entry.metrics["success"].value == 75 and entry.metrics["r50"].value == pytest.approx(0.6)
    assert entry.metrics["success"].ci_low <= 75 <= entry.metrics["success"].ci_high
    records = gzip.decompress((path.parent / entry.records.path).read_bytes())
    assert hashlib.sha256(records).hexdigest() == entry.records.sha256
    assert audit.check(root).files == [path]


def test_best_is_recomputed_when_an_attack_that_wins_on_some_samples_is_added(root: Path, tmp_path: Path, make_evasion_run: Callable[..., Path]) -> None:
    path, _ = admission.add_run(root, make_evasion_run(tmp_path / "a", {"caa": [0.5, 0.6, 0.7, 0.8]}))
    assert track_files.load(path).comparison.best["caa"].value == 100
    first = track_files.load(path).entries[0]
    admission.add_run(root, make_evasion_run(tmp_path / "b", {"pgd": [0.4, 0.9, 0.3, None]}))
    board = track_files.load(path)
    assert board.comparison.best["caa"].value == 50 and board.comparison.best["pgd"].value == 50
    assert board.comparison.paired["pgd"]["caa"].value == 50 and board.comparison.paired["caa"]["pgd"].value == 50
    assert board.entries[0] == first  # old entries are never rewritten


def refusal(root: Path, run: Path, **options: object) -> str:
    with pytest.raises(RsbenchError) as caught:
        admission.add_run(root, run, **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_duplicate_and_protocol_mismatch_are_refused(root: Path, tmp_path: Path, make_evasion_run: Callable[..., Path]) -> None:
    admission.add_run(root, make_evasion_run(tmp_path / "a", {"caa": [0.5, 0.6]}))
    assert "already has an entry for 'caa'" in refusal(root, make_evasion_run(tmp_path / "b", {"caa": [0.5, 0.6]}))
    other = make_evasion_run(tmp_path / "c", {"pgd": [0.5, 0.6]}, judge_n=1000)
    assert "protocol hash" in refusal(root, other) and "judge_n" in refusal(root, other)
    path, _ = admission.add_run(root, other, new_version=True)
    assert path.name == "v2.json" and (path.parent / "v1.json").exists()
    superseded = make_evasion_run(tmp_path / "d", {"pgd": [0.5, 0.6]})  # v1's protocol
    assert "is that of evasion-smoothing-digits-0.50 v1, which v2 supersedes" in refusal(root, superseded, new_version=True)


def test_unconfirmed_example_is_refused(root: Path, tmp_path: Path, make_evasion_run: Callable[..., Path]) -> None:
    run = make_evasion_run(tmp_path / "a", {"caa": [0.5, 0.6]})
    lines = (run / "samples.jsonl").read_text().splitlines()
    record = json.loads(lines[1]) | {"rejected": 1}  # its only kept candidate failed confirmation
    (run / "samples.jsonl").write_text("\n".join([lines[0], json.dumps(record)]) + "\n")
    assert "not confirmed" in refusal(root, run)
    assert not root.exists()  # nothing written


def test_a_run_that_attacked_no_sample_is_refused_yet_previewed(root: Path, tmp_path: Path,
                                                                  make_evasion_run: Callable[..., Path]) -> None:
    run = make_evasion_run(tmp_path / "a", {"caa": [0.5, 0.6]})
    (run / "samples.jsonl").write_text("")  # as when no sample is correct and certified
    assert "none of its 2 samples was attacked" in refusal(root, run)
    assert not root.exists()
    assert "| caa | 1 | registry | 0 |" in track_table.run_table(run, root)


def test_tampered_records_are_refused(root: Path, tmp_path: Path, make_evasion_run: Callable[..., Path]) -> None:
    path, _ = admission.add_run(root, make_evasion_run(tmp_path / "a", {"caa": [0.5, 0.6]}))
    stored = path.parent / track_files.load(path).entries[0].records.path
    lines = gzip.decompress(stored.read_bytes()).decode().splitlines()
    lines[0] = lines[0].replace('"best_radius":0.5', '"best_radius":0.1')
    stored.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    assert "do not match their sha256" in refusal(root, make_evasion_run(tmp_path / "b", {"pgd": [0.5, 0.6]}))
    with pytest.raises(RsbenchError, match="do not match their sha256"):
        audit.check(root)


def test_a_changed_old_entry_is_refused_against_git_history(root: Path, tmp_path: Path, make_evasion_run: Callable[..., Path]) -> None:
    path, _ = admission.add_run(root, make_evasion_run(tmp_path / "a", {"caa": [0.5, 0.6]}))
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "seed"], check=True)
    assert audit.check(root, "HEAD").files == [path]
    data = json.loads(path.read_text())
    data["entries"][0]["date"] = "2020-01-01T00:00:00+00:00"
    path.write_text(json.dumps(data))
    with pytest.raises(RsbenchError, match="an entry changed or was removed since HEAD"):
        audit.check(root, "HEAD")


def test_evaluate_prints_the_leaderboard_intervals_and_legend(tmp_path: Path,
                                                              make_evasion_run: Callable[..., Path]) -> None:
    run = make_evasion_run(tmp_path / "a", {"caa": [0.5, 0.6, None, 0.8]})
    text = track_table.run_table(run, tmp_path / "leaderboards")
    path, _ = admission.add_run(tmp_path / "leaderboards", run)
    success = track_files.load(path).entries[0].metrics["success"]
    assert success.value == 75 and f"| 75 [{success.ci_low:.3g}, {success.ci_high:.3g}] |" in text
    assert "- `r50`: median radius" in text


def test_evaluate_names_a_track_only_when_the_run_follows_its_protocol(root: Path, tmp_path: Path,
                                                                      make_evasion_run: Callable[..., Path]) -> None:
    run = make_evasion_run(tmp_path / "a", {"caa": [0.5, 0.6]})
    heading = track_table.run_table(run, root).splitlines()[0]
    assert heading.startswith("### This run (protocol `") and f"no evasion-{DEFENSE} track under {root}" in heading
    path, _ = admission.add_run(root, run)
    same = track_table.run_table(make_evasion_run(tmp_path / "b", {"pgd": [0.7, 0.6]}), root)
    assert same.splitlines()[0] == (f"### evasion-{DEFENSE} v1: this run follows its protocol "
                                    f"(`{track_files.load(path).protocol_hash[:12]}`)")
    other = track_table.run_table(make_evasion_run(tmp_path / "c", {"pgd": [0.7, 0.6, 0.5]}, judge_n=1000), root)
    heading = other.splitlines()[0]
    assert heading.startswith("### This run (protocol `") and heading.endswith(
        f"not evasion-{DEFENSE} v1's: num_samples 3 ≠ 2, judge_n 1,000 ≠ 1,500, confirm_n 10,000 ≠ 15,000")


def test_the_committed_leaderboards_are_valid() -> None:
    """Every shipped track file validates: schema, hashes of protocol, specs and stored records, point values (the
    intervals and comparisons take a minute to recompute: `rsbench leaderboard check` does, and test_audit.py
    shows on a small track that it refuses what they would catch)."""
    shipped = Path(__file__).resolve().parents[1] / "leaderboards"
    checked = audit.check(shipped, intervals=False)
    assert len(checked.files) >= 7
