"""The `leaderboard` and `submission` command groups: tracks listed, shown, added to, checked, verified and
rendered; submitted attacks validated and verified. Thin like the rest of the CLI: parse, call, print."""

from __future__ import annotations

from pathlib import Path

import click

from rsbench.cli_options import DEVICE
from rsbench.errors import RsbenchError

LEADERBOARDS = click.option("--root", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True,
                            help="Folder of the leaderboard files.")


@click.group("leaderboard")
def leaderboard_group() -> None:
    """Versioned tracks (a defense and a goal under a fixed protocol) and their entries, checked and re-judged."""


@leaderboard_group.command("list")
@LEADERBOARDS
def leaderboard_list(root: Path) -> None:
    """Every track version: entries, protocol hash."""
    from rsbench import leaderboard

    for path in leaderboard.files(root):
        board = leaderboard.load(path)
        click.echo(f"{board.track:<40} v{board.version}  {len(board.entries):>2} entries  protocol {board.protocol_hash[:12]}")


@leaderboard_group.command("show")
@click.argument("track")
@click.option("--sort", "sort", default=None,
              help="Order by this metric (strongest attack first) [by rank on best, as the site orders them].")
@click.option("--json", "as_json", is_flag=True, help="The leaderboard file itself.")
@LEADERBOARDS
def leaderboard_show(track: str, sort: str | None, as_json: bool, root: Path) -> None:
    """A track's table (TRACK, or TRACK@vN for an older version) with 95% bootstrap intervals, each entry's rank
    interval, and its leader or the entries tied for first."""
    from rsbench import leaderboard, ranking, track_table

    path = leaderboard.find(root, track)
    board = leaderboard.load(path)
    if as_json:
        click.echo(board.model_dump_json(indent=1))
        return
    newest = int(leaderboard.latest(root, board.track).stem[1:])
    standings = ranking.rank(board, *leaderboard.stored_records(path.parent, board))
    click.echo(track_table.markdown(board, standings, sort, newest))


@leaderboard_group.command("add")
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--new-version", is_flag=True, help="Start the track's next version when the run's protocol differs.")
@LEADERBOARDS
def leaderboard_add(run_dir: Path, new_version: bool, root: Path) -> None:
    """Add every attack of a finished `rsbench evaluate` run to its track, refusing what cannot be re-checked."""
    from rsbench import admission

    path, added = admission.add_run(root, run_dir, new_version=new_version)
    click.echo(f"added {', '.join(added)} to {path}")


@leaderboard_group.command("check")
@click.argument("root", type=click.Path(path_type=Path), default=Path("leaderboards"))
@click.option("--against", default="HEAD", show_default=True,
              help="Git revision whose files and entries must be unchanged (CI: the pull request's base).")
def leaderboard_check(root: Path, against: str) -> None:
    """Validate every file, hash and metric under ROOT, and that no entry changed against git history."""
    from rsbench import audit

    checked = audit.check(root, against)
    click.echo(f"{len(checked)} leaderboard files valid; no entry changed since {against}")


@leaderboard_group.command("verify")
@click.argument("track")
@click.option("--entry", default=None, help="Only this entry.")
@DEVICE
@LEADERBOARDS
def leaderboard_verify(track: str, entry: str | None, device: str, root: Path) -> None:
    """Judge every stored example again, on fresh noise or with the exact certifier; report agreement."""
    from rsbench import audit, leaderboard, runner

    agreement = audit.verify(leaderboard.find(root, track), entry, runner.resolve_device(device))
    for name, (agree, total) in agreement.items():
        click.echo(f"{name:<24} {agree}/{total} stored examples judged as their records say")
    if any(agree != total for agree, total in agreement.values()):
        raise RsbenchError("some stored examples were not judged as their records say")


@leaderboard_group.command("render")
@LEADERBOARDS
def leaderboard_render(root: Path) -> None:
    """Write ROOT/README.md (a table per track) and the static site ROOT/site/."""
    from rsbench import site

    for path in site.render(root):
        click.echo(f"wrote {path}")


@click.group("submission")
def submission_group() -> None:
    """Attacks submitted by pull request: submissions/<name>/submission.yaml and the attack's code."""


@submission_group.command("validate")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--timeout", type=float, default=300, show_default=True, help="Seconds the smoke run may take.")
def submission_validate(folder: Path, timeout: float) -> None:
    """Schema, import, and a smoke run on a tiny embedded track in a subprocess, judged by rsbench."""
    from rsbench import submissions

    click.echo(submissions.validate(folder, timeout))


@submission_group.command("verify")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--timeout", type=float, default=1800, show_default=True, help="Seconds each claimed track may take.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Check the claims on the first K samples of each track only (large tracks in CI); adds no entry.")
@LEADERBOARDS
def submission_verify(folder: Path, timeout: float, samples: int | None, root: Path) -> None:
    """Run each claimed track's protocol, judge the examples here, compare with the claims, add the entries."""
    from rsbench import submissions

    for line in submissions.verify(folder, root, timeout, samples):
        click.echo(line)
