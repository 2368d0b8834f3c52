"""The leaderboards as people read them: leaderboards/README.md and a static site.

`render` writes `leaderboards/README.md` and `leaderboards/site/`: `index.html` (every track with its
protocol in one line, its leader or the entries tied for first, and the metrics' legend) and one page
per track version with a sortable table (numbers with their 95% intervals, each entry's rank interval;
a click on a header reorders the rows, by one plain JavaScript file beside the pages), the protocol,
what an exact verifier says of an evasion track (`rsbench.leaderboard.exact_columns`: each entry's recall and the
certificate's tightness, or on l2 the gap between certificate and attack), the paired comparisons with their sign
tests and the pictures (certified accuracy, attack proportion, FPR curve, spoofing examples) drawn from the stored
records, and one profile per defense (`rsbench.leaderboard.profiles`). Rankings come from `rsbench.leaderboard.ranking`, recomputed from the stored records at
every render. Nothing is fetched: the site works from the file system or any static host.
"""

from __future__ import annotations

import html
import shutil
import tempfile
from pathlib import Path

from rsbench import metrics, plots
from rsbench.data import SPLIT_NOTES
from rsbench.goals.degradation import curve_files
from rsbench.goals.spoofing import Spoofing
from rsbench.leaderboard import exact_columns, profiles
from rsbench.leaderboard.exact_columns import NOTHING, RECALL, Shown
from rsbench.leaderboard.ranking import LEADER_SHARE, TIME_METRICS, Ranking, rank, sign_tests
from rsbench.leaderboard.track_files import Entry, Interval, Leaderboard, files, load, read_stored, stored_records
from rsbench.leaderboard.track_table import (
    NONE,
    RANK_LEGEND,
    SELF_REPORTED_NOTE,
    TIME_LEGEND,
    cell,
    header,
    markdown,
    marked,
    metric_columns,
    protocol_line,
    self_reported,
    sorted_entries,
    source_of,
    superseded,
    time_cell,
    value_of,
    verdict,
)
from rsbench.progress import each

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
         "th[data-order=desc]::after{content:' ▼'}td small{color:#666}img{max-width:100%;display:block;margin:1em 0}"
         "#leader{font-size:1.1em}td.protocol{font-size:.85em;min-width:16em}")

HEAD = '<link rel="stylesheet" href="site.css">'
SCRIPT = '<script src="sort.js"></script>'
"""Every page shares one stylesheet and one sorting script, written once beside them."""
SIGN_LEGEND = ("p: two-sided sign test over the samples both attacked, ties left out; above 0.05, the samples do "
               "not tell the two apart")


def _pictures(board: Leaderboard, records: tuple[list, dict[str, list]], folder: Path, out: Path,
              prefix: str) -> list[str]:
    """Draw the track's pictures into `out`; their file names."""
    clean, by_entry = records
    drawn: list[Path] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        points = metrics.certified_accuracy_curve(clean, 0.05)
        if len(points) > 1:
            drawn.append(plots.certified_accuracy_plot(clean, points, board.defense.name, work / "certified_accuracy.png"))
        every = [r for rows in by_entry.values() for r in rows]
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


def _row(board: Leaderboard, entry: Entry, ranking: Ranking, columns: list[str], exact: Shown) -> str:
    """One entry's row of a track page; each cell carries the value a click sorts by."""
    esc = html.escape
    standing = ranking.of(entry.name)
    cells = [(entry.name, esc(entry.name)),
             (standing.rank if standing else "", esc(standing.interval) if standing else "–"),
             (source_of(entry), esc(source_of(entry))), (entry.attacked, entry.attacked)]
    for k in columns:
        v = value_of(board, entry, k)
        if k in TIME_METRICS:
            ratio, text = time_cell(board, entry, k)
            number, _, rest = text.partition(" ")
            cells.append(("" if ratio is None else ratio, marked(entry, k, f"{esc(number)} <small>{esc(rest)}</small>")))
        else:
            text = "–" if v.value is None else marked(entry, k, f"{v.value:.3g} <small>[{v.ci_low:.3g}, {v.ci_high:.3g}]</small>")
            cells.append(("" if v.value is None else v.value, text))
    if exact.recall:
        share = exact.recall[entry.name]
        count, _, rest = share.text().partition(" = ")
        cells.append(("" if share.interval().value is None else share.interval().value,
                      f"{esc(count)} <small>{esc(rest)}</small>"))
    return (f'<tr data-entry="{esc(entry.name)}">'
            + "".join(f'<td data-value="{esc(str(key))}">{text}</td>' for key, text in cells) + "</tr>")


def _paired(board: Leaderboard, p_values: dict[str, dict[str, float | None]]) -> str:
    """The paired table: row beats column, % with its interval and the sign test's p."""
    esc, names = html.escape, [e.name for e in board.entries]

    def pair(a: str, b: str) -> str:
        if a == b:
            return "<td>–</td>"
        p = p_values.get(a, {}).get(b)
        test = "" if p is None else f' <small class="p">p={p:.2g}</small>'
        return f"<td>{esc(cell(board.comparison.paired.get(a, {}).get(b, NONE)))}{test}</td>"

    rows = "".join(f"<tr><th>{esc(a)}</th>" + "".join(pair(a, b) for b in names) + "</tr>" for a in names)
    return ('<table id="paired"><tr><th></th>' + "".join(f"<th>{esc(n)}</th>" for n in names) + f"</tr>{rows}</table>")


def page(board: Leaderboard, ranking: Ranking, p_values: dict[str, dict[str, float | None]], pictures: list[str],
         newest: int | None = None, exact: Shown = NOTHING) -> str:
    """One track version's HTML page; `exact`: each entry's recall and the exact verifier's notes under the table."""
    columns = metric_columns(board)
    esc = html.escape
    head = "".join(f"<th>{esc(k)}</th>" for k in ["entry", "rank", "source", "attacked",
                                                  *(header(board, k) for k in columns),
                                                  *([RECALL] if exact.recall else [])])
    rows = "".join(_row(board, entry, ranking, columns, exact) for entry in sorted_entries(board, None, ranking))
    protocol = "".join(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}"
                       f"{esc(f' ({SPLIT_NOTES[v]})') if k == 'split' and v in SPLIT_NOTES else ''}</td></tr>"
                       for k, v in board.protocol.model_dump().items() if k != "metrics")
    legend = [RANK_LEGEND, *(f"{k}: {board.protocol.metrics[k]}" for k in columns)]
    legend += [TIME_LEGEND] if any(k in TIME_METRICS for k in columns) else []
    legend += [SELF_REPORTED_NOTE] if any(self_reported(e) & set(columns) for e in board.entries) else []
    images = "".join(f'<img src="{esc(name)}" alt="{esc(name)}">' for name in pictures)
    note = superseded(board, newest)
    note = f'<p id="superseded"><b>{esc(note)}</b></p>' if note else ""
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(board.track)} v{board.version}</title>'
            f"{HEAD}</head><body><p><a href=\"index.html\">all tracks</a></p>"
            f"<h1>{esc(board.track)} v{board.version}</h1>{note}<p id=\"leader\">{esc(verdict(ranking))}</p>"
            f"<p>{esc(protocol_line(board))}. Click a column header to sort. Numbers: value [95% bootstrap interval "
            f"over samples].</p>"
            f'<table class="sortable" id="entries"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
            + "".join(f'<p class="exact">{esc(note)}</p>' for note in exact.notes)
            + "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in legend) + "</ul>"
            f"<h2>Paired comparisons</h2><p>Row beats column: % of samples attacked by both where the row's example "
            f"is better (smaller; spoofing: more similar). {esc(SIGN_LEGEND)}.</p>{_paired(board, p_values)}"
            f"<h2>Pictures</h2>{images}<h2>Protocol <code>{board.protocol_hash[:12]}</code></h2>"
            f"<table>{protocol}</table>{SCRIPT}</body></html>\n")


INDEX_COLUMNS = ("track", "version", "goal", "defense", "protocol", "entries", "leader", "top entry's best")
PROTOCOL = ' class="protocol"'
"""The index's protocol cells, set smaller (site.css): each is a sentence."""
INDEX_LEGEND = (
    "leader: the entry first alone in at least 95% of the bootstrap resamples; \"tied: A, B\" names the entries "
    "whose rank interval reaches 1 when none is; \"–\" on a track with a single entry or where no entry is best on "
    "any sample. top entry's best: the `best` of the leader, or of the first entry by rank, with its 95% interval."
)


def top_best(board: Leaderboard, ranking: Ranking) -> Interval:
    """`best` of the leader, or of the first entry by rank."""
    name = ranking.leader or (ranking.contenders[0] if ranking.contenders else None)
    if name is None and ranking.standings:
        name = ranking.standings[0].name
    return board.comparison.best.get(name, NONE) if name else NONE


def index_row(board: Leaderboard, ranking: Ranking, slug: str, version: str) -> str:
    """The track's row on the index: what it is, its protocol, and who leads it on `best` (or who is tied)."""
    best = top_best(board, ranking)
    cells = [  # (the value a click sorts by, what the cell shows)
        (board.track, f'<a href="{slug}.html">{html.escape(board.track)}</a>'),
        (board.version, version),
        (board.protocol.goal, board.protocol.goal),
        (board.defense.name, board.defense.name),
        (protocol_line(board), html.escape(protocol_line(board))),
        (len(board.entries), len(board.entries)),
        (ranking.headline, html.escape(ranking.headline)),
        ("" if best.value is None else best.value, html.escape(cell(best))),
    ]
    return "<tr>" + "".join(f'<td data-value="{html.escape(str(key))}"{PROTOCOL if column == "protocol" else ""}>'
                            f"{text}</td>" for column, (key, text) in zip(INDEX_COLUMNS, cells)) + "</tr>"


def metric_legend(boards: list[Leaderboard]) -> str:
    """Every metric the tracks define, per goal, each distinct definition once (HTML list)."""
    definitions: dict[str, dict[str, list[str]]] = {}
    for board in boards:
        for metric, text in board.protocol.metrics.items():
            known = definitions.setdefault(board.protocol.goal, {}).setdefault(metric, [])
            if text not in known:
                known.append(text)
    return "".join(f"<h3>{html.escape(goal)}</h3><ul>" + "".join(
        f"<li><b>{html.escape(metric)}</b>: {html.escape(' | '.join(texts))}</li>" for metric, texts in found.items())
                   + "</ul>" for goal, found in definitions.items())


def render(root: Path, submissions: Path | None = None) -> list[Path]:
    """Write root/README.md and root/site/ from every leaderboard file; the written paths. Submitted defenses'
    profiles read their folders under `submissions` (default: beside `root`)."""
    paths = files(root)
    site = root / "site"
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    (site / "site.css").write_text(STYLE + "\n")
    (site / "sort.js").write_text(SORT_SCRIPT)
    links, boards = [], []
    newest = {path.parent.name: int(path.stem[1:]) for path in paths}  # files() sorts versions last
    current = []
    for path in each(paths, "render leaderboards", "track"):
        board = load(path)
        records = stored_records(path.parent, board)
        ranking, p_values = rank(board, *records), sign_tests(board, *records)
        slug, latest_version = f"{board.track}-v{board.version}", newest[path.parent.name]
        pictures = _pictures(board, records, path.parent, site, slug)
        exact = exact_columns.shown(path, board, records)
        (site / f"{slug}.html").write_text(page(board, ranking, p_values, pictures, latest_version, exact))
        version = f"{board.version}" + (" (superseded)" if latest_version > board.version else "")
        links.append(index_row(board, ranking, slug, version))
        boards.append(board)
        if latest_version == board.version:
            current.append(profiles.Track(path, board, slug))
    profiles.write(site, current, cell=cell, head=HEAD, script=SCRIPT, submissions=submissions or root.parent /
                   "submissions")
    (site / "index.html").write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><title>rsbench leaderboards</title>{HEAD}'
        "</head><body><h1>rsbench leaderboards</h1><p>Attacks on certified defenses, one table per track (a defense "
        "and a goal under a fixed protocol). Every entry can be re-checked with <code>rsbench leaderboard verify"
        '</code>. Click a column header to sort. <a href="defenses.html">Defenses</a>: one profile per defense.</p>'
        f"<p>{html.escape(TRUST)}</p>"
        '<table class="sortable" id="tracks"><thead><tr>'
        + "".join(f"<th>{name}</th>" for name in INDEX_COLUMNS) + f"</tr></thead><tbody>{''.join(links)}</tbody></table>"
        f'<p id="legend">{html.escape(INDEX_LEGEND)}</p><h2>Metrics</h2>{metric_legend(boards)}'
        f"{SCRIPT}</body></html>\n")
    summary = root / "README.md"
    summary.write_text(readme(root))
    return [summary, site / "index.html"]


def readme(root: Path) -> str:
    """The text of root/README.md: a summary row and a ranked table per track version, from the stored records
    (the documentation's results page is built from it too)."""
    paths = files(root)
    newest = {path.parent.name: int(path.stem[1:]) for path in paths}  # files() sorts versions last
    summary = ["| track | entries | leader | top entry's best |", "|---|---|---|---|"]
    sections = []
    for path in paths:
        board = load(path)
        records = stored_records(path.parent, board)
        ranking, latest_version = rank(board, *records), newest[path.parent.name]
        sections.append(markdown(board, ranking, newest=latest_version,
                                 exact=exact_columns.shown(path, board, records)))
        version = f"{board.version}" + (" (superseded)" if latest_version > board.version else "")
        summary.append(f"| {board.track} v{version} | {len(board.entries)} | {ranking.headline} | "
                       f"{cell(top_best(board, ranking))} |")
    return README_HEAD + TRUST + "\n\n" + "\n".join(summary) + "\n\n" + "\n\n".join(sections) + "\n"


TRUST = ("What you can trust: every success rests on a stored example that rsbench judged itself under the track's "
         "protocol, and any success can be judged again on fresh noise (rsbench leaderboard verify). A submitted "
         "attack ran in a sandbox; rsbench rebuilt its records from the dataset and the examples it returned, judged "
         "on noise from a seed drawn after it finished (recorded in the entry, so anyone can replay it). Numbers "
         "marked * are self-reported: times measured by the machine that ran the attack, unless rsbench's trusted "
         "job did, and what a submitted attack reports about itself (iterations, first examples). Smoothing verdicts "
         "are statistical, with the protocol's alpha; every number carries a 95% bootstrap interval over samples.")
"""What a visitor can trust, and why; on the site's index and in the leaderboards README."""

README_HEAD = f"""# Leaderboards

One JSON file per track version (`<goal>-<defense>/v<N>.json`, a `rsbench.leaderboard.track_files.Leaderboard`),
with each entry's per-sample records and saved examples stored gzip-compressed beside it and pinned
by sha256. `rsbench leaderboard check` validates them all (CI runs it on every pull request),
`rsbench leaderboard verify TRACK` judges the stored examples again, and `rsbench leaderboard render`
writes this file and the static site in `site/` (open `site/index.html`). The seeded tracks come from
`benchmarks/seed_leaderboards.sh`: small protocols that fit a 2-core CPU (first 20 test samples,
n = 10,000; on smoothing a judge of N = 1500 confirmed on 15,000 fresh copies). Generated; do not edit.
Entries are ranked by `best` (the share of samples on which an entry's example is the track's strongest),
each with the 95% bootstrap interval of its rank. A track's leader is the entry first alone in at least
{100 * LEADER_SHARE:.0f}% of the bootstrap resamples; otherwise the entries whose rank interval reaches 1
are named as tied, and a track with a single entry, or where no entry is best on any sample, has none.
A deterministic l_inf evasion track's `exact/` folder holds the `rsbench exact` run behind its `recall (exact)`
column and certificate tightness (written by maintainers, re-checked by `rsbench leaderboard check`); the l2 evasion
tracks, which no exact verifier here decides, show the gap between certificate and best attack instead.

"""
