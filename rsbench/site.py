"""The leaderboards as people read them: a Markdown table per track and a static site.

`render` writes `leaderboards/README.md` and `leaderboards/site/`: `index.html` and one page
per track version with a sortable table (numbers with their 95% intervals; a click on a header
reorders the rows, by one plain JavaScript file beside the pages), the protocol, the paired comparisons
and the pictures (certified accuracy, attack proportion, FPR curve, spoofing examples) drawn
from the stored records. Nothing is fetched: the site works from the file system or any
static host.
"""

from __future__ import annotations

import html
import math
import shutil
import tempfile
from pathlib import Path

from rsbench import metrics, plots
from rsbench.admission import add_run
from rsbench.data import SPLIT_NOTES
from rsbench.errors import RsbenchError
from rsbench.goals.degradation import curve_files
from rsbench.goals.spoofing import Spoofing
from rsbench.leaderboard import Entry, Interval, Leaderboard, files, load, read_stored, stored_records

LOWER_IS_BETTER = {"r50", "pct_cohen", "time_s", "total_time_s", "first_ratio_r50", "first_ratio_time",
                   "robust_accuracy", "l2_mean", "attack_error"}
"""Metrics where a smaller number means a stronger attack; the others rank larger first."""
SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach((th, column) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const up = th.dataset.order !== 'asc';
  th.closest('tr').querySelectorAll('th').forEach(h => delete h.dataset.order);
  th.dataset.order = up ? 'asc' : 'desc';
  const key = row => row.cells[column].dataset.value;
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
    const c = isNaN(nx) || isNaN(ny) ? String(x).localeCompare(String(y)) : nx - ny;
    return up ? c : -c;
  });
  rows.forEach(row => body.appendChild(row));
}));
"""
STYLE = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}"
         "th{background:#f3f3f3;cursor:pointer}th[data-order=asc]::after{content:' ▲'}"
         "th[data-order=desc]::after{content:' ▼'}td small{color:#666}img{max-width:100%;display:block;margin:1em 0}")

HEAD = '<link rel="stylesheet" href="site.css">'
SCRIPT = '<script src="sort.js"></script>'
"""Every page shares one stylesheet and one sorting script, written once beside them."""


def metric_columns(board: Leaderboard) -> list[str]:
    """The track's metrics that some entry has, comparative first."""
    present = {k for e in board.entries for k in e.metrics} | ({"best"} if board.comparison.best else set())
    return [k for k in board.protocol.metrics if k in present]


def value_of(board: Leaderboard, entry: Entry, metric: str) -> Interval:
    if metric == "best":
        return board.comparison.best.get(entry.name, Interval(value=None, ci_low=None, ci_high=None))
    return entry.metrics.get(metric, Interval(value=None, ci_low=None, ci_high=None))


def cell(interval: Interval) -> str:
    if interval.value is None:
        return "–"
    return f"{interval.value:.3g} [{interval.ci_low:.3g}, {interval.ci_high:.3g}]"


def sorted_entries(board: Leaderboard, metric: str | None) -> list[Entry]:
    """Entries ranked by `metric` (strongest first; undefined last); in order of addition without one."""
    if metric is None:
        return list(board.entries)
    if metric not in board.protocol.metrics:
        raise RsbenchError(f"{board.track} has no metric {metric!r}; metrics: {', '.join(board.protocol.metrics)}")
    sign = 1 if metric in LOWER_IS_BETTER else -1

    def key(entry: Entry) -> float:
        value = value_of(board, entry, metric).value
        return math.inf if value is None else sign * value

    return sorted(board.entries, key=key)


def source_of(entry: Entry) -> str:
    source = entry.source
    return "registry" if source.kind == "registry" else f"submission {source.submission} @ {(source.commit or '?')[:8]}"


def superseded(board: Leaderboard, newest: int | None) -> str:
    """A line saying that a newer protocol version of the track exists; empty for the newest."""
    if newest is None or newest <= board.version:
        return ""
    return (f"Superseded by v{newest}, whose protocol differs; kept as measured under its own "
            f"(leaderboards are append-only), and new entries go to v{newest}.")


def markdown(board: Leaderboard, sort: str | None = None, newest: int | None = None) -> str:
    """The track's table in Markdown, with the protocol in one line and what the columns mean."""
    p, columns = board.protocol, metric_columns(board)
    eps = f", epsilon {p.epsilon:g}" if p.epsilon is not None else ""
    note = superseded(board, newest)
    lines = [
        f"### {board.track} v{board.version}",
        "",
        *([note, ""] if note else []),
        f"First {p.num_samples} {p.split} samples" + (f" ({SPLIT_NOTES[p.split]})" if p.split in SPLIT_NOTES else "")
        + f"{eps}; certification n0={p.n0}, n={p.n}, alpha={p.alpha:g}"
        + (f"; judge N={p.judge_n}, alpha={p.judge_alpha:g}, confirmation on {p.confirm_n} copies"
           if board.defense.kind == "smoothing" and p.goal != "spoofing" else "")
        + f"; seed {p.seed}; protocol `{board.protocol_hash[:12]}`. "
        f"95% bootstrap intervals over samples ({p.bootstrap_resamples} resamples, seed {p.bootstrap_seed}).",
        "",
        "| entry | source | attacked | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for entry in sorted_entries(board, sort):
        values = " | ".join(cell(value_of(board, entry, k)) for k in columns)
        lines.append(f"| {entry.name} | {source_of(entry)} | {entry.attacked} | {values} |")
    lines += ["", *(f"- `{k}`: {p.metrics[k]}" for k in columns)]
    return "\n".join(lines)


def run_table(run_dir: Path) -> str:
    """A finished run's attacks as a leaderboard table, with the leaderboard's bootstrap intervals (for `evaluate`)."""
    with tempfile.TemporaryDirectory() as scratch:
        path, _ = add_run(Path(scratch), run_dir, preview=True)
        board = load(path)
    return markdown(board, "best" if "best" in board.protocol.metrics else None)


def _pictures(board: Leaderboard, folder: Path, out: Path, prefix: str) -> list[str]:
    """Draw the track's pictures into `out`; their file names."""
    clean, records = stored_records(folder, board)
    drawn: list[Path] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        points = metrics.certified_accuracy_curve(clean, 0.05)
        if len(points) > 1:
            drawn.append(plots.certified_accuracy_plot(clean, points, board.defense.name, work / "certified_accuracy.png"))
        every = [r for rows in records.values() for r in rows]
        if board.protocol.goal == "evasion" and every:
            drawn.append(plots.attack_proportion_plot(every, board.track, work / "attack_proportion.png"))
        if board.protocol.goal == "degradation":
            drawn += [p for p in curve_files(board.defense, clean, work) if p.suffix == ".png"]
        if board.protocol.goal == "spoofing":
            (work / "adversarial").mkdir()
            for entry in board.entries:
                if entry.examples is not None:
                    (work / "adversarial" / f"{entry.name}.pt").write_bytes(read_stored(folder, entry.examples))
            drawn += Spoofing.plots(board.defense, clean, every, work)
        names = []
        for path in drawn:
            name = f"{prefix}-{path.name}"
            shutil.copyfile(path, out / name)
            names.append(name)
    return names


def page(board: Leaderboard, pictures: list[str], newest: int | None = None) -> str:
    """One track version's HTML page."""
    columns = metric_columns(board)
    esc = html.escape
    head = "".join(f"<th>{esc(k)}</th>" for k in ["entry", "source", "attacked", *columns])
    rows = []
    for entry in sorted_entries(board, "best" if "best" in columns else None):
        cells = [f'<td data-value="{esc(entry.name)}">{esc(entry.name)}</td>',
                 f'<td data-value="{esc(source_of(entry))}">{esc(source_of(entry))}</td>',
                 f'<td data-value="{entry.attacked}">{entry.attacked}</td>']
        for k in columns:
            v = value_of(board, entry, k)
            text = "–" if v.value is None else f"{v.value:.3g} <small>[{v.ci_low:.3g}, {v.ci_high:.3g}]</small>"
            cells.append(f'<td data-value="{"" if v.value is None else v.value}">{text}</td>')
        rows.append(f'<tr data-entry="{esc(entry.name)}">{"".join(cells)}</tr>')
    names = [e.name for e in board.entries]
    paired = "".join(
        f"<tr><th>{esc(a)}</th>" + "".join(
            "<td>–</td>" if a == b else f"<td>{esc(cell(board.comparison.paired.get(a, {}).get(b, Interval(value=None, ci_low=None, ci_high=None))))}</td>"
            for b in names) + "</tr>" for a in names)
    protocol = "".join(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}"
                       f"{esc(f' ({SPLIT_NOTES[v]})') if k == 'split' and v in SPLIT_NOTES else ''}</td></tr>"
                       for k, v in board.protocol.model_dump().items() if k != "metrics")
    legend = "".join(f"<li><b>{esc(k)}</b>: {esc(board.protocol.metrics[k])}</li>" for k in columns)
    images = "".join(f'<img src="{esc(name)}" alt="{esc(name)}">' for name in pictures)
    note = superseded(board, newest)
    note = f'<p id="superseded"><b>{esc(note)}</b></p>' if note else ""
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(board.track)} v{board.version}</title>'
            f"{HEAD}</head><body><p><a href=\"index.html\">all tracks</a></p>"
            f"<h1>{esc(board.track)} v{board.version}</h1>{note}"
            f"<p>Click a column header to sort. Numbers: value [95% bootstrap interval over samples].</p>"
            f'<table class="sortable" id="entries"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f"<ul>{legend}</ul><h2>Paired comparisons</h2><p>Row beats column: % of samples attacked by both where the "
            f"row's example is better (smaller; spoofing: more similar).</p><table id=\"paired\"><tr><th></th>"
            + "".join(f"<th>{esc(n)}</th>" for n in names) + f"</tr>{paired}</table>"
            f"<h2>Pictures</h2>{images}<h2>Protocol <code>{board.protocol_hash[:12]}</code></h2>"
            f"<table>{protocol}</table>{SCRIPT}</body></html>\n")


INDEX_COLUMNS = ("track", "version", "goal", "defense", "entries", "leader", "leader's best")


def leader_of(board: Leaderboard) -> tuple[str, Interval]:
    """The entries ranked first on `best` (ties all named, in order of addition) and their share; "" on a
    track without entries or `best`."""
    if "best" not in metric_columns(board):
        return "", Interval(value=None, ci_low=None, ci_high=None)
    first = value_of(board, sorted_entries(board, "best")[0], "best")
    return ", ".join(e.name for e in board.entries if value_of(board, e, "best").value == first.value), first


def index_row(board: Leaderboard, slug: str, version: str) -> str:
    """The track's row on the index: what it is and which entry leads it on `best`."""
    leader, best = leader_of(board)
    cells = [  # (the value a click sorts by, what the cell shows)
        (board.track, f'<a href="{slug}.html">{html.escape(board.track)}</a>'),
        (board.version, version),
        (board.protocol.goal, board.protocol.goal),
        (board.defense.name, board.defense.name),
        (len(board.entries), len(board.entries)),
        (leader, html.escape(leader) or "–"),
        ("" if best.value is None else best.value, html.escape(cell(best))),
    ]
    return "<tr>" + "".join(f'<td data-value="{html.escape(str(key))}">{text}</td>' for key, text in cells) + "</tr>"


def render(root: Path) -> list[Path]:
    """Write root/README.md and root/site/ from every leaderboard file; the written paths."""
    paths = files(root)
    site = root / "site"
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    (site / "site.css").write_text(STYLE + "\n")
    (site / "sort.js").write_text(SORT_SCRIPT)
    sections, links, summary = [], [], ["| track | entries | leader | leader's best |", "|---|---|---|---|"]
    newest = {path.parent.name: int(path.stem[1:]) for path in paths}  # files() sorts versions last
    for path in paths:
        board = load(path)
        slug, latest_version = f"{board.track}-v{board.version}", newest[path.parent.name]
        pictures = _pictures(board, path.parent, site, slug)
        (site / f"{slug}.html").write_text(page(board, pictures, latest_version))
        sections.append(markdown(board, "best" if "best" in board.protocol.metrics else None, latest_version))
        version = f"{board.version}" + (" (superseded)" if latest_version > board.version else "")
        links.append(index_row(board, slug, version))
        leader, best = leader_of(board)
        summary.append(f"| {board.track} v{version} | {len(board.entries)} | {leader or '–'} | {cell(best)} |")
    (site / "index.html").write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><title>rsbench leaderboards</title>{HEAD}'
        "</head><body><h1>rsbench leaderboards</h1><p>Attacks on certified defenses, one table per track (a defense "
        "and a goal under a fixed protocol). Every entry can be re-checked with <code>rsbench leaderboard verify"
        '</code>. Click a column header to sort.</p><table class="sortable" id="tracks"><thead><tr>'
        + "".join(f"<th>{name}</th>" for name in INDEX_COLUMNS) + f"</tr></thead><tbody>{''.join(links)}</tbody></table>"
        f"{SCRIPT}</body></html>\n")
    readme = root / "README.md"
    readme.write_text(README_HEAD + "\n".join(summary) + "\n\n" + "\n\n".join(sections) + "\n")
    return [readme, site / "index.html"]


README_HEAD = """# Leaderboards

One JSON file per track version (`<goal>-<defense>/v<N>.json`, a `rsbench.leaderboard.Leaderboard`),
with each entry's per-sample records and saved examples stored gzip-compressed beside it and pinned
by sha256. `rsbench leaderboard check` validates them all (CI runs it on every pull request),
`rsbench leaderboard verify TRACK` judges the stored examples again, and `rsbench leaderboard render`
writes this file and the static site in `site/` (open `site/index.html`). The seeded tracks come from
`benchmarks/seed_leaderboards.sh`: small protocols that fit a 2-core CPU (first 20 test samples,
n = 10,000; on smoothing a judge of N = 1500 confirmed on 15,000 fresh copies). Generated; do not edit.
The leader of a track is its entry with the largest `best` (the share of samples on which its example is
the track's strongest); tied entries are all named.

"""
