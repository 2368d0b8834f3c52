"""Defense profiles on the site: one page per defense and a sortable index of them all.

A defense's page gathers what its tracks say about it: its clean and certified accuracy (with 95%
Clopper-Pearson intervals over the track's samples, from the clean certificates the track stores), and
the headline of each goal, each linked to its track: the strongest evasion (smoothing: the smallest
r50 and %-Cohen; GloRo, KW and plugins: the lowest robust accuracy beside the VRA), the false positive
rate's bounds under degradation (the strongest attack's lower bound, the upper bound from the
certificates) and spoofing (the highest spoof rate and its spoofed radius), each with the date and rsbench
commit of the run behind it; where an evasion track has an exact run, the highest recall of an entry and the
certificate's tightness, and for every evasion track an "Exact verification" list of what an exact verifier says
(on l2, the gap between certificate and attack: `rsbench.leaderboard.exact_columns`). An "About" list leads the
page (`rsbench.leaderboard.about`): authors, paper and venue, licence, architecture and checkpoint size, training
recipe and model card. Only the newest
version of each track counts; superseded versions keep their own pages. `defenses.html` lists every defense with
these numbers, sortable on each. `rsbench.leaderboard.site.render` calls `write`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rsbench import metrics
from rsbench.goals.degradation import certified
from rsbench.leaderboard.about import About, about
from rsbench.leaderboard.exact_columns import Shown, shown
from rsbench.leaderboard.track_files import Interval, Leaderboard, stored_records
from rsbench.records import CertifiedPoint, SampleRecord
from rsbench.specs import SELF_CERTIFIED, DefenseSpec

Cell = Callable[[Interval], str]


@dataclass(frozen=True)
class Track:
    """A newest track version as the site rendered it: its file, its board and the slug of its page."""

    path: Path
    board: Leaderboard
    slug: str


@dataclass
class Profile:
    """What the site says about one defense: its tracks and the headline numbers drawn from them."""

    name: str
    tracks: list[Track] = field(default_factory=list)
    clean: list[SampleRecord] = field(default_factory=list)
    reference: Track | None = None
    """The track whose clean certificates give the accuracies (evasion first, then degradation, then spoofing)."""
    numbers: dict[str, tuple[Interval, Track | None, str]] = field(default_factory=dict)
    """Per column: the number, the track it comes from (None: from the certificates) and the entry behind it."""
    about: About | None = None
    """Who made the defense, its paper, licence, architecture and training."""
    exact: list[tuple[Track, Shown]] = field(default_factory=list)
    """Its evasion tracks' exact columns or, on l2, the gap between certificate and attack."""


COLUMNS = {
    "clean": "clean accuracy (%)",
    "certified": "certified accuracy at the headline radius (%)",
    "r50": "evasion: smallest r50",
    "pct_cohen": "evasion: %-Cohen of that entry",
    "robust_accuracy": "evasion: lowest robust accuracy (%)",
    "vra": "VRA at epsilon (%)",
    "recall": "evasion: highest recall (exact, %)",
    "tightness": "certificate tightness (exact, %)",
    "fpr_lower": "degradation: FPR lower bound (%)",
    "fpr_upper": "degradation: FPR upper bound (%)",
    "spoof_rate": "spoofing: highest spoof rate (%)",
    "spoofed_mean": "spoofing: its mean spoofed radius",
}
"""The index's numeric columns and what each holds."""
GOAL_ORDER = ("evasion", "degradation", "spoofing")
NONE = Interval(value=None, ci_low=None, ci_high=None)


def headline_radius(spec: DefenseSpec) -> float:
    """The radius certified accuracy is quoted at: the defense's epsilon, else (smoothing) its sigma."""
    return spec.epsilon or spec.sigma or 0.0


def percent(point: CertifiedPoint | dict) -> Interval:
    """A share (a certified-accuracy point or `metrics.proportion`'s dict) as a percentage with its interval."""
    value = point if isinstance(point, dict) else {"value": point.accuracy, "ci_low": point.ci_low,
                                                   "ci_high": point.ci_high}
    return Interval(**{k: 100 * value[k] for k in ("value", "ci_low", "ci_high")})


def _strongest(track: Track, metric: str, lowest: bool) -> tuple[Interval, str]:
    """The entry with the lowest (or highest) value of a metric on a track, and that value."""
    rows = [(e.metrics[metric], e.name) for e in track.board.entries
            if metric in e.metrics and e.metrics[metric].value is not None]
    if not rows:
        return NONE, ""
    return min(rows, key=lambda row: row[0].value if lowest else -row[0].value)


def profile(name: str, tracks: Sequence[Track], submissions: Path | None = None) -> Profile:
    """One defense's profile from its newest tracks (and, for a submitted defense, its folder under `submissions`)."""
    result = Profile(name, sorted(tracks, key=lambda t: GOAL_ORDER.index(t.board.protocol.goal)))
    result.reference = result.tracks[0]
    result.about = about(result.reference.board.defense, submissions)
    result.clean = stored_records(result.reference.path.parent, result.reference.board)[0]
    board = result.reference.board
    numbers = result.numbers
    numbers["clean"] = (percent(metrics.certified_accuracy(result.clean, 0.0)), None, "")
    numbers["certified"] = (percent(metrics.certified_accuracy(result.clean, headline_radius(board.defense))), None, "")
    for track in result.tracks:
        goal, eps = track.board.protocol.goal, track.board.protocol.epsilon
        if goal == "evasion" and board.defense.kind == "smoothing":
            value, entry = _strongest(track, "r50", lowest=True)
            numbers["r50"] = (value, track, entry)
            cohen = next((e.metrics.get("pct_cohen", NONE) for e in track.board.entries if e.name == entry), NONE)
            numbers["pct_cohen"] = (cohen, track, entry)
        elif goal == "evasion":
            value, entry = _strongest(track, "robust_accuracy", lowest=True)
            numbers["robust_accuracy"] = (value, track, entry)
            numbers["vra"] = (percent(metrics.certified_accuracy(result.clean, eps)), None, "")
        if goal == "evasion":
            exact = shown(track.path, track.board, stored_records(track.path.parent, track.board))
            result.exact += [(track, exact)] if exact.notes else []
            if exact.recall:
                entry, share = max(exact.recall.items(), key=lambda item: item[1].count)
                numbers["recall"] = (share.interval(), track, entry)
            if exact.tightness is not None:
                numbers["tightness"] = (exact.tightness.interval(), track, "")
        elif goal == "degradation":
            value, entry = _strongest(track, "fpr_lower", lowest=False)
            numbers["fpr_lower"] = (value, track, entry)
            robust = certified(stored_records(track.path.parent, track.board)[0], eps)
            upper = metrics.proportion(sum(r.radius < 2 * eps for r in robust), len(robust))
            numbers["fpr_upper"] = (percent(upper), track, "")
        else:
            value, entry = _strongest(track, "spoof_rate", lowest=False)
            numbers["spoof_rate"] = (value, track, entry)
            spoofed = next((e.metrics.get("spoofed_mean", NONE) for e in track.board.entries if e.name == entry), NONE)
            numbers["spoofed_mean"] = (spoofed, track, entry)
    return result


def page(item: Profile, cell: Cell, head: str, script: str) -> str:
    """A defense's page: what it is, its certified accuracy curve, and each goal's headline linked to its track."""
    esc = html.escape
    spec, ref = item.reference.board.defense, item.reference.board
    step = (spec.epsilon or 0.5) / 2
    curve = "".join(f"<tr><td>{p.radius:g}</td><td>{esc(cell(percent(p)))}</td></tr>"
                    for p in metrics.certified_accuracy_curve(item.clean, step))
    rows = []
    for key, label in COLUMNS.items():
        value, track, entry = item.numbers.get(key, (NONE, None, ""))
        if value.value is None and key not in ("clean", "certified"):
            continue
        where = (f'<a href="{esc(track.slug)}.html">{esc(track.board.track)} v{track.board.version}</a>'
                 if track else "clean certificates")
        date, commit = _when(track or item.reference, entry)
        rows.append(f'<tr data-headline="{key}"><td>{esc(label)}</td><td>{esc(cell(value))}</td>'
                    f"<td>{esc(entry) or '–'}</td><td>{where}</td><td>{esc(date)}</td><td><code>{esc(commit)}</code>"
                    "</td></tr>")
    settings = (f"sigma {spec.sigma:g}" if spec.sigma else "") + (f"epsilon {spec.epsilon:g}" if spec.epsilon else "")
    tracks = "".join(f'<li><a href="{esc(t.slug)}.html">{esc(t.board.track)} v{t.board.version}</a> '
                     f"({len(t.board.entries)} entries)</li>" for t in item.tracks)
    exact = "".join(f'<li><a href="{esc(t.slug)}.html">{esc(t.board.track)} v{t.board.version}</a>: '
                    + " ".join(esc(note) for note in found.notes)
                    + "".join(f" Recall of {esc(name)}: {esc(share.text())}." for name, share in found.recall.items())
                    + "</li>" for t, found in item.exact)
    exact = f'<h2>Exact verification</h2><ul id="exact">{exact}</ul>' if exact else ""
    p = ref.protocol
    label = f'<p class="self-certified"><strong>{esc(SELF_CERTIFIED)}</strong></p>' if spec.self_certified else ""
    heading = "certified accuracy (%, self-certified)" if spec.self_certified else "certified accuracy (%)"
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(item.name)}</title>{head}</head><body>'
            f'<p><a href="defenses.html">all defenses</a> · <a href="index.html">all tracks</a></p>'
            f"<h1>{esc(item.name)}</h1><p>{esc(spec.description)}</p>"
            f"<p>{esc(spec.kind)}, {esc(spec.norm)}, {esc(settings)}; data {esc(spec.dataset.name)}; spec hash "
            f"<code>{spec.spec_hash()[:12]}</code></p>{label}{_about(item.about)}"
            f"<h2>Clean and certified accuracy</h2><p>First {p.num_samples} {p.split} samples of "
            f'<a href="{esc(item.reference.slug)}.html">{esc(ref.track)}</a> (n0={p.n0}, n={p.n}, alpha={p.alpha:g}); '
            f"% with a 95% Clopper-Pearson interval.</p>"
            f'<table id="certified"><tr><th>radius</th><th>{heading}</th></tr>{curve}</table>'
            f"<h2>Under attack</h2><p>Each goal's strongest entry, value [95% interval], on the newest version of its "
            "track, with the date and rsbench commit of the run that gave it (for the accuracies, the track's first "
            "entry, which stored its certificates).</p>"
            f'<table id="headlines"><tr><th>headline</th><th>value</th><th>entry</th><th>track</th><th>date</th>'
            f"<th>commit</th></tr>"
            f"{''.join(rows)}</table>{exact}<h2>Tracks</h2><ul>{tracks}</ul>{script}</body></html>\n")


def _when(track: Track, entry: str) -> tuple[str, str]:
    """The date and rsbench commit of the run behind a number: its entry's, or for the clean certificates (no entry)
    the track's first entry's, which stored them."""
    entries = track.board.entries
    run = next((e for e in entries if e.name == entry), entries[0] if entries else None)
    if run is None:
        return "–", "–"
    return run.date[:10], (run.environment.git_commit or "not recorded")[:12]


def _about(item: About | None) -> str:
    """The profile's "About" list: authors, paper (and venue), licence, architecture and size, training, card."""
    if item is None:
        return ""
    esc = html.escape

    def link(target: str | None) -> str:
        if target is None:
            return "not given"
        return f'<a href="{esc(target)}">{esc(target)}</a>' if target.startswith("https://") else f"<code>{esc(target)}</code>"

    size = f"{item.values:,} numbers in {item.tensors} tensors" if item.values is not None else "checkpoint not on " \
        "this machine"
    rows = {"authors": esc(item.authors), "paper": link(item.paper) + (f" ({esc(item.venue)})" if item.venue else ""),
            "licence": esc(item.licence or "not given"), "architecture": f"<code>{esc(item.architecture)}</code>, {size}",
            "training": link(item.recipe) if item.recipe and not item.recipe.startswith("{") else
            f"<code>{esc(item.recipe)}</code>" if item.recipe else "not given", "model card": link(item.card)}
    return '<h2>About</h2><dl id="about">' + "".join(
        f'<dt>{key}</dt><dd data-about="{key}">{value}</dd>' for key, value in rows.items()) + "</dl>"


def index(profiles: Sequence[Profile], cell: Cell, head: str, script: str) -> str:
    """`defenses.html`: one row per defense, sortable on each number; self-certified defenses in a table of their
    own, never ranked with those rsbench certifies."""
    esc = html.escape
    own = [p for p in profiles if p.reference.board.defense.self_certified]
    tables = _table([p for p in profiles if p not in own], cell, "defenses")
    if own:
        tables += (f"<h2>Self-certified defenses</h2><p>{esc(SELF_CERTIFIED.capitalize())}; ranked apart from the "
                   "defenses rsbench certifies.</p>" + _table(own, cell, "self-certified"))
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>rsbench defenses</title>{head}</head><body>'
            f'<p><a href="index.html">all tracks</a></p><h1>Defenses</h1><p>Every defense with a track: its clean and '
            "certified accuracy, and the headline of each goal from the strongest entry of its newest track. Click a "
            f"column header to sort; a defense's name opens its profile.</p>{tables}{script}</body></html>\n")


def _table(profiles: Sequence[Profile], cell: Cell, table_id: str) -> str:
    """One sortable table of defenses, a row each."""
    esc = html.escape
    header = "".join(f"<th>{esc(h)}</th>" for h in ["defense", "kind", *COLUMNS.values()])
    rows = []
    for item in profiles:
        spec = item.reference.board.defense
        cells = [f'<td data-value="{esc(item.name)}"><a href="defense-{esc(item.name)}.html">{esc(item.name)}</a></td>',
                 f'<td data-value="{esc(spec.kind)}">{esc(spec.kind)}</td>']
        for key in COLUMNS:
            value = item.numbers.get(key, (NONE,))[0]
            cells.append(f'<td data-value="{"" if value.value is None else value.value}">{esc(cell(value))}</td>')
        rows.append(f'<tr data-defense="{esc(item.name)}">{"".join(cells)}</tr>')
    return (f'<table class="sortable" id="{table_id}"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody>'
            "</table>")


def write(site: Path, tracks: Sequence[Track], *, cell: Cell, head: str, script: str,
          submissions: Path | None = None) -> list[Path]:
    """Write `defense-<name>.html` for every defense with a track, and `defenses.html`; the written paths. Submitted
    defenses' folders are read from `submissions` (`submissions/defenses/<name>/submission.yaml`)."""
    by_defense: dict[str, list[Track]] = {}
    for track in tracks:
        by_defense.setdefault(track.board.defense.name, []).append(track)
    profiles = [profile(name, items, submissions) for name, items in sorted(by_defense.items())]
    written = []
    for item in profiles:
        path = site / f"defense-{item.name}.html"
        path.write_text(page(item, cell, head, script))
        written.append(path)
    (site / "defenses.html").write_text(index(profiles, cell, head, script))
    return [site / "defenses.html", *written]
