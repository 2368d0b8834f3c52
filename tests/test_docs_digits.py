"""The result pages' generated tables (docs/results/digits.md, and papers.md's models and attack costs): each row
holds what its track file or model card stores, in the column that names it, and each block covers every track it
should; the pages themselves type no table."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest

from rsbench import registry
from rsbench.leaderboard import track_files
from rsbench.leaderboard.track_files import Interval
from rsbench.model_card import read_results

ROOT = Path(__file__).resolve().parents[1]
LEADERBOARDS = ROOT / "leaderboards"


def rows(text: str) -> list[dict[str, str]]:
    """The block's first Markdown table, one dict per row keyed by its header."""
    lines = [line for line in text.split("\n\n", 1)[0].splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def shown(interval: Interval) -> str:
    """An interval as the tables write it (written out here, so a change of format is noticed)."""
    if interval.value is None:
        return "–"
    return f"{interval.value:.3g} [{interval.ci_low:.3g}, {interval.ci_high:.3g}]"


def tracks(pattern: str) -> list[str]:
    """The committed tracks whose folder name matches `pattern` in full."""
    return sorted({p.parent.name for p in track_files.files(LEADERBOARDS) if re.fullmatch(pattern, p.parent.name)})


def percent_of(hits: int, total: int) -> str:
    return f"{100 * hits / total:.3g} ["


BLOCKS = {  # block: (tracks it covers, the entry metrics it shows)
    "digits-smoothing-evasion": (r"evasion-(smoothing|macer)-digits-.*",
                                 ("success", "best", "r50", "pct_cohen", "time_s", "total_time_s", "confirmed")),
    "digits-evasion": (r"evasion-(gloro|kw|crownibp|aol)-digits.*|evasion-kw-mnist-0\.1", ("robust_accuracy", "success")),
    "digits-degradation": (r"degradation-.*-digits.*|degradation-kw-mnist-0\.1",
                           ("fpr_lower", "best", "utility_reduction")),
    "digits-spoofing": (r"spoofing-.*-(rgb)?digits.*", ("success", "best", "spoof_rate", "spoofed_mean", "ssim_mean",
                                                        "l2_mean", "robust_error", "attack_error")),
    "mnist-attack-costs": (r"evasion-.*-mnist-.*", ("total_time_s",)),
}


@pytest.mark.parametrize("block", BLOCKS)
def test_each_row_holds_the_newest_track_version_s_stored_metrics(generated: ModuleType, block: str) -> None:
    pattern, metrics = BLOCKS[block]
    expected = tracks(pattern)
    assert len(expected) >= 5, expected
    table = rows(generated.BLOCKS[block]())
    assert sorted({row["track"].rsplit(" v", 1)[0] for row in table}) == expected
    for name in expected:
        path = track_files.latest(LEADERBOARDS, name)
        board = track_files.load(path)
        mine = {row["entry"]: row for row in table if row["track"] == f"{name} v{board.version}"}
        assert sorted(mine) == sorted(e.name for e in board.entries), name
        for entry in board.entries:
            row = mine[entry.name]
            assert row["attacked"] == str(entry.attacked)
            for metric in metrics:
                value = board.comparison.best[entry.name] if metric == "best" else entry.metrics.get(
                    metric, Interval(value=None, ci_low=None, ci_high=None))
                assert row[metric].rstrip("*") == shown(value), (name, entry.name, metric)


def test_the_certified_columns_are_counted_from_the_clean_certificates(generated: ModuleType) -> None:
    """Clean accuracy, VRA, test_R, the FPR upper bound and certified-and-broken, counted here from the records."""
    evasion, degradation = rows(generated.digits_evasion()), rows(generated.digits_degradation())
    for table, goal in ((evasion, "evasion"), (degradation, "degradation")):
        for name in tracks(BLOCKS[f"digits-{goal}"][0]):
            path = track_files.latest(LEADERBOARDS, name)
            board = track_files.load(path)
            clean, records = track_files.stored_records(path.parent, board)
            eps, n = board.protocol.epsilon, len(clean)
            robust = [c for c in clean if c.correct and c.radius >= eps]
            for row in (r for r in table if r["track"] == f"{name} v{board.version}"):
                assert row["epsilon"] == f"{board.defense.norm} {eps:g}"
                assert row["VRA"].startswith(percent_of(len(robust), n)), (name, row["VRA"])
                if goal == "evasion":
                    assert row["clean"].startswith(percent_of(sum(c.correct for c in clean), n))
                    broken = {r.index for r in records[row["entry"]] if r.success} & {c.index for c in robust}
                    assert row["certified and broken"] == str(len(broken))
                else:
                    assert row["test_R"] == str(len(robust))
                    assert row["FPR upper bound"].startswith(percent_of(sum(c.radius < 2 * eps for c in robust),
                                                                        len(robust)))


def test_the_models_table_is_each_card_s_and_spec_s(generated: ModuleType) -> None:
    table = {row["defense"]: row for row in rows(generated.mnist_models())}
    trained = sorted(name for name, spec in registry.all_specs("defenses").items()
                     if spec.dataset.name == "mnist" and spec.training is not None)
    assert sorted(table) == trained and len(trained) >= 9
    for name in trained:
        spec, row = registry.get_defense(name), table[name]
        card = (ROOT / "rsbench" / "weights" / f"{name}.md").read_text()
        clean = re.search(r"^\| 0\.000 \| ([0-9.]+) \| \[([0-9.]+), ([0-9.]+)\] \|$", card, re.MULTILINE)
        assert clean is not None
        assert row["clean (%)"] == shown(Interval(value=100 * float(clean[1]), ci_low=100 * float(clean[2]),
                                                  ci_high=100 * float(clean[3])))
        assert row["epochs"] == str(spec.training.epochs) and row["recipe"].startswith(spec.training.recipe)
        assert row["ACR"] == re.search(r"average certified radius: ([0-9.]+)", card)[1]
        radius = spec.epsilon or spec.sigma
        point = next(p for p in read_results(card).certified_accuracy if abs(p.radius - radius) < 5e-4)
        assert row["certified at the headline radius (%)"].startswith(f"{100 * point.accuracy:.3g} [")


@pytest.mark.parametrize("page,markers", [
    ("digits.md", ("digits-smoothing-evasion", "digits-evasion", "digits-degradation", "digits-spoofing")),
    ("papers.md", ("mnist-models", "mnist-attack-costs", "paper-tables")),
])
def test_the_result_pages_type_no_table(page: str, markers: tuple[str, ...]) -> None:
    text = (ROOT / "docs" / "results" / page).read_text()
    assert [m for m in markers if f"<!-- generated: {m} -->" not in text] == []
    assert [line for line in text.splitlines() if line.lstrip().startswith("|")] == []


# The only result numbers papers.md's prose may type: the papers' own, each with the place it is quoted from (the page
# names the paper and the table, row or abstract beside it). rsbench's measurements are printed by
# `benchmarks/paper_tables.py` into the page's paper-tables block, so the prose points at those rows instead.
PAPER_VALUES = {
    "75%": "the certification-aware-attack paper, Table 1, row M-0.5: CAA's success",
    "65%": "the certification-aware-attack paper, Table 1, row M-0.5: PGD's success",
    "5%": "the certification-aware-attack paper, Table 1, row M-0.5: DeepFool's success",
    "70%": "the certification-aware-attack paper's abstract: 'more than 70% of tested samples'",
}
# Settings, not results: the confidence level of the intervals.
SETTINGS = re.compile(r"95% (?:Clopper-Pearson|bootstrap)")


def papers_prose() -> str:
    """papers.md without its generated blocks (each a marker line that the site build fills)."""
    text = (ROOT / "docs" / "results" / "papers.md").read_text()
    return "\n".join(line for line in text.splitlines() if not line.startswith("<!-- generated:"))


def test_papers_prose_types_no_result_number_of_rsbench_s() -> None:
    prose = SETTINGS.sub("", papers_prose())
    percentages = re.findall(r"\d+(?:\.\d+)?%", prose)
    assert [p for p in percentages if p not in PAPER_VALUES] == []
    # Decimals outside model names (gloro-mnist-0.30, M-0.5) and other than the ε the models are trained at: the
    # distances, SSIMs and rates of the rows, which the block prints.
    decimals = re.findall(r"(?<![\w.-])\d+\.\d+(?![\w.])", prose)
    assert [d for d in decimals if d not in {"0.2", "0.3", "0.4", "0.6", "1.58"}] == []
    # Counts of spoofed or attacked images ("3 of the 86"): the rows' n and rates say them.
    assert re.findall(r"\b\d+\s+of\s+(?:the\s+\d+|them)", prose) == []
