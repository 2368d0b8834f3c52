"""The generated parts of the documentation and of README.md: result tables built from the committed track files
(one track's table, or several tracks side by side: `rsbench.leaderboard.summaries`), the model cards `rsbench train`
wrote and `benchmarks/paper_tables.py`, never typed, and the contributor's guide taken from CONTRIBUTING.md.

A page asks for a block with `<!-- generated: NAME -->`. In docs/, MkDocs (this file is its hook, see mkdocs.yml)
replaces the marker with the block at build time. README.md, read on GitHub as it is, keeps the block's text
between that marker and `<!-- end generated -->`: `python docs/generated.py` writes it there again, and
tests/test_docs.py fails when the committed text differs from what the tracks give.
"""

from __future__ import annotations

import html
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

    from rsbench.leaderboard.track_files import Leaderboard

ROOT = Path(__file__).resolve().parents[1]
LEADERBOARDS = ROOT / "leaderboards"
README = ROOT / "README.md"
WEIGHTS = ROOT / "rsbench" / "weights"
"""The model cards `rsbench train` wrote beside the shipped weights."""
README_TRACK = "evasion-smoothing-digits-0.50"
"""The track README.md shows: the quick start's defense under evasion."""

CLI_PAGE = "reference/cli.md"
"""The page mkdocs-click renders from the click commands, whose help texts write placeholders as <name>."""
HTML_TAGS = frozenset("a p div span code pre table thead tbody tr th td ul ol li em strong b i br hr blockquote "
                      "h1 h2 h3 h4 h5 h6 details summary".split())
ANGLED = re.compile(r"</?([A-Za-z][^<>]*)>")

MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")
BLOCK = re.compile(r"(<!-- generated: ([a-z-]+) -->)\n.*?(<!-- end generated -->)", re.DOTALL)


def track_tables() -> str:
    """Every track version's ranked table, as `rsbench leaderboard render` writes leaderboards/README.md."""
    from rsbench.leaderboard import site

    text = site.readme(LEADERBOARDS)
    return text.split("\n", 1)[1]  # without its "# Leaderboards" title: the page has its own


def load_paper_tables() -> ModuleType:
    """benchmarks/paper_tables.py, loaded as the file it is (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("paper_tables", ROOT / "benchmarks" / "paper_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def paper_tables() -> str:
    """What `python benchmarks/paper_tables.py` prints: the seed papers' MNIST rows beside the tracks."""
    return "```text\n" + load_paper_tables().report(LEADERBOARDS) + "\n```"


def paper_costs() -> str:
    """What each of the certification-aware-attack paper's MNIST rows costs on the CPU, from stored times."""
    return load_paper_tables().paper_sweeps.cost_markdown(LEADERBOARDS)


def readme_track() -> str:
    """The newest version of README_TRACK's table, ranked, with its protocol and legend."""
    from rsbench.leaderboard import ranking, track_files, track_table

    path = track_files.latest(LEADERBOARDS, README_TRACK)
    assert path is not None, f"no track {README_TRACK} under {LEADERBOARDS}"
    board = track_files.load(path)
    ranked = ranking.rank(board, *track_files.stored_records(path.parent, board))
    return track_table.markdown(board, ranked, newest=board.version)


EXACT_ANCHOR = ROOT / "benchmarks" / "results" / "exact-kw-mnist-0.1"
MIPVERIFY = ("MIPVerify's exact error on all 10,000 images (Tjeng, Xiao & Tedrake, ICLR 2019, abstract)", 4.38)
KW_ALL = ("KW's certified error on all 10,000 images (as quoted; `benchmarks/kw_mnist.py` measures it)", 5.82)


def exact_anchor() -> str:
    """The exact verifier's run on kw-mnist-0.1 at eps 0.1, from its committed result.json, beside MIPVerify's."""
    import json

    result = json.loads((EXACT_ANCHOR / "result.json").read_text())
    n = result["num_samples"]
    images = "all 10,000" if n == 10_000 else f"the first {n:,}"
    rows = [f"| on {images} MNIST test images | % (count) | 95% interval |", "|---|---|---|"]
    for key, label in (("exact_adversarial", "exact adversarial error (`rsbench exact`)"),
                       ("unknown", "undecided within the time limit"), ("certified_error", "KW certified error"),
                       ("pgd_error", "bounded PGD (`pgd-linf`) error")):
        value = result[key]
        rows.append(f"| {label} | {100 * value['rate']:.2f} ({value['count']}) | "
                    f"[{100 * value['ci_low']:.2f}, {100 * value['ci_high']:.2f}] |")
    rows += [f"| {label} | {value:.2f} | |" for label, value in (MIPVERIFY, KW_ALL)]
    return "\n".join(rows)


def exact_anchor_detail() -> str:
    """What the anchor's records say beyond its rates: the ratio to KW's certified error beside MIPVerify's, PGD's
    misses, the stable ReLUs and the time per image, from its committed result.json and samples.jsonl."""
    import json
    import statistics

    result = json.loads((EXACT_ANCHOR / "result.json").read_text())
    records = [json.loads(line) for line in (EXACT_ANCHOR / "samples.jsonl").read_text().splitlines()]
    exact, certified, unknown = (result[key]["count"] for key in ("exact_adversarial", "certified_error", "unknown"))
    attacked = [r for r in records if r["prediction"] == r["label"] and r["exact"] == "adversarial"]
    missed = sum(r["found_by"] == "milp" for r in attacked)
    solved = [r["time_s"] for r in records if r["solves"]]
    n = result["num_samples"]
    return "\n".join([
        f"On these {n:,} images {exact} of the {certified} that KW does not certify have an adversarial example: a "
        f"ratio of {exact / certified:.2f} to the certified error, against {MIPVERIFY[1] / KW_ALL[1]:.2f} for "
        f"MIPVerify ({MIPVERIFY[1]} / {KW_ALL[1]}). Bounded PGD missed {missed} of the {len(attacked)} examples that "
        f"exist on correctly classified images (the MILP found them). {unknown} images stay undecided within the "
        f"{result['config']['time_limit']:g} s limit, so the exact error on them lies between "
        f"{100 * exact / n:.2f}% and {100 * (exact + unknown) / n:.2f}%. The bounds leave "
        f"{100 * result['stable_share']:.1f}% of the {records[0]['neurons']:,} ReLUs stable. Time per image: median "
        f"{result['median_time_s']:.2f} s, mean {result['mean_time_s']:.2f} s; the {len(solved):,} images that "
        f"needed a MILP took {statistics.median(solved):.0f} s in the median (mean {statistics.mean(solved):.0f} s).",
    ])


DIGITS = ("digits", "rgbdigits")
ALSO_ON_DIGITS_PAGE = "kw-mnist-0.1"
"""The released KW MNIST model, whose evasion and degradation tracks the digits page sets beside KW's digits models."""


def digits_page_covers(board: Leaderboard, *, smoothing: bool | None = None, also: str = "") -> bool:
    """Whether the digits page's table covers the track: a digits defense (of smoothing, or not, when asked), or
    `also`. (Not named on_…: MkDocs takes every on_ function of this hook for an event.)"""
    kind = smoothing is None or (board.defense.kind == "smoothing") == smoothing
    return board.defense.dataset.name in DIGITS and kind or board.defense.name == also


def digits_smoothing_evasion() -> str:
    """Table 1 on the digits: evasion of every digits smoothing and MACER defense."""
    from rsbench.leaderboard import summaries

    return summaries.smoothing_evasion(summaries.newest(LEADERBOARDS, "evasion",
                                                        lambda b: digits_page_covers(b, smoothing=True)))


def digits_evasion() -> str:
    """Evasion of the deterministic digits certifiers (GloRo, KW, CROWN-IBP, AOL) and of the released KW model."""
    from rsbench.leaderboard import summaries

    return summaries.certified_evasion(summaries.newest(
        LEADERBOARDS, "evasion", lambda b: digits_page_covers(b, smoothing=False, also=ALSO_ON_DIGITS_PAGE)))


def digits_degradation() -> str:
    """Degradation of every digits defense and of the released KW model."""
    from rsbench.leaderboard import summaries

    return summaries.degradation(summaries.newest(LEADERBOARDS, "degradation",
                                                  lambda b: digits_page_covers(b, also=ALSO_ON_DIGITS_PAGE)))


def digits_spoofing() -> str:
    """Certificate spoofing of every digits defense."""
    from rsbench.leaderboard import summaries

    return summaries.spoofing(summaries.newest(LEADERBOARDS, "spoofing", digits_page_covers))


def mnist_attack_costs() -> str:
    """Each attack's median seconds per attacked sample on rsbench's MNIST evasion tracks."""
    from rsbench.leaderboard import summaries

    return summaries.costs(summaries.newest(LEADERBOARDS, "evasion", lambda b: b.defense.dataset.name == "mnist"))


def mnist_models() -> str:
    """rsbench's MNIST models: each registry spec's training recipe beside the numbers of the card `rsbench train`
    wrote (`rsbench/weights/<name>.md`), with the card's 95% Clopper-Pearson intervals; certified accuracy at the
    defense's epsilon, else (smoothing) its sigma."""
    from rsbench import registry
    from rsbench.leaderboard.profiles import headline_radius, percent
    from rsbench.leaderboard.track_table import cell
    from rsbench.model_card import read_results

    rows = [("| defense | recipe | epochs | batch, lr | clean (%) | certified at the headline radius (%) | ACR | "
             "card's samples and certification |"), "|---|---|---|---|---|---|---|---|"]
    for name, spec in sorted(registry.all_specs("defenses").items()):
        if spec.dataset.name != "mnist" or spec.training is None:
            continue
        recipe = spec.training
        card = read_results((WEIGHTS / f"{name}.md").read_text())
        radius = headline_radius(spec)
        point = card.at(radius)
        options = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in recipe.options.items())
        rows.append(f"| {name} | {recipe.recipe} ({options}) | {recipe.epochs} | {recipe.batch_size}, "
                    f"{recipe.lr:g} | {cell(percent(card.at(0.0)))} | "
                    f"{cell(percent(point)) if point else '–'} at {spec.norm} {radius:g} | "
                    f"{card.average_certified_radius:.3f} | first {card.samples} {spec.dataset.split}, "
                    f"{card.certification} |")
    return "\n".join(rows)


BLOCKS: dict[str, Callable[[], str]] = {"tracks": track_tables, "paper-tables": paper_tables,
                                        "readme-track": readme_track, "exact-anchor": exact_anchor,
                                        "exact-anchor-detail": exact_anchor_detail,
                                        "digits-smoothing-evasion": digits_smoothing_evasion,
                                        "digits-evasion": digits_evasion, "digits-degradation": digits_degradation,
                                        "digits-spoofing": digits_spoofing, "mnist-models": mnist_models,
                                        "mnist-attack-costs": mnist_attack_costs, "paper-costs": paper_costs}


def fill(text: str) -> str:
    """`text` with every block between its markers written anew."""
    return BLOCK.sub(lambda m: f"{m.group(1)}\n{BLOCKS[m.group(2)]()}\n{m.group(3)}", text)


def contributing() -> str:
    """CONTRIBUTING.md as a page of the site: its links into docs/ made relative to the site's root."""
    return (ROOT / "CONTRIBUTING.md").read_text().replace("](docs/", "](")


def on_page_markdown(markdown: str, **_: object) -> str:
    """MkDocs hook: each marker replaced by its block (an unknown name fails the build)."""
    return MARKER.sub(lambda m: BLOCKS[m.group(1)](), markdown)


def on_page_content(content: str, page: Page, **_: object) -> str:
    """MkDocs hook: on the CLI page, a placeholder such as <name> or <run directory> shown as text, not dropped
    as an unknown HTML tag."""
    if page.file.src_uri != CLI_PAGE:
        return content
    return ANGLED.sub(lambda m: m.group(0) if m.group(1).split()[0].lower() in HTML_TAGS else html.escape(m.group(0)),
                      content)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """MkDocs hook: contributing.md, generated from CONTRIBUTING.md."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "contributing.md", content=contributing()))
    return files


if __name__ == "__main__":
    README.write_text(fill(README.read_text()))
