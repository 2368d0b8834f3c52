"""benchmarks/paper_tables.py's recomputed `best` (among the paper's attacks a track holds) against a count made
straight from the stored, gzipped per-sample records of a committed MNIST track."""
import gzip
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_paper_tables():
    spec = importlib.util.spec_from_file_location("paper_tables", ROOT / "benchmarks" / "paper_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_best_matches_a_count_from_the_stored_records() -> None:
    paper_tables = load_paper_tables()
    folder = ROOT / "leaderboards" / "evasion-smoothing-mnist-1.00"
    _, _, records = paper_tables.track(ROOT / "leaderboards", "evasion-smoothing-mnist-1.00")
    best = paper_tables.paper_best(records)
    radii: dict[int, dict[str, float]] = {}
    for attack in ("caa", "pgd", "deepfool"):
        with gzip.open(folder / "v1" / f"{attack}.records.jsonl.gz", "rt") as lines:
            for line in lines:
                row = json.loads(line)
                radii.setdefault(row["index"], {})[attack] = row["best_radius"] if row["success"] else float("inf")
    assert set(best) == {"caa", "pgd", "deepfool"}
    for attack in best:
        wins = sum(r[attack] == min(r.values()) < float("inf") for r in radii.values())
        value, low, high = best[attack]
        assert abs(value - 100 * wins / len(radii)) < 1e-9
        assert low <= value <= high
