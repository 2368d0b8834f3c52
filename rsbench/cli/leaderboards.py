"""The `leaderboard` and `submission` command groups: tracks listed, shown, added to, checked, verified and
rendered; submitted attacks and defenses validated and verified. Thin like the rest of the CLI: parse, call, print."""

from __future__ import annotations

from pathlib import Path

import click

from rsbench.cli.options import DEVICE
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
    from rsbench.leaderboard import track_files

    for path in track_files.files(root):
        board = track_files.load(path)
        click.echo(f"{board.track:<40} v{board.version}  {len(board.entries):>2} entries  protocol {board.protocol_hash[:12]}")


@leaderboard_group.command("show")
@click.argument("track")
@click.option("--sort", "sort", default=None,
              help="Order by this metric (strongest attack first) [by rank on best, as the site orders them].")
@click.option("--json", "as_json", is_flag=True, help="The leaderboard file itself.")
@LEADERBOARDS
def leaderboard_show(track: str, sort: str | None, as_json: bool, root: Path) -> None:
    """A track's table (TRACK, or TRACK@vN for an older version) with 95% bootstrap intervals, each entry's rank
    interval, its leader or the entries tied for first, and what an exact verifier says of it (evasion)."""
    from rsbench.leaderboard import exact_columns, ranking, track_files, track_table

    path = track_files.find(root, track)
    board = track_files.load(path)
    if as_json:
        click.echo(board.model_dump_json(indent=1))
        return
    newest = int(track_files.latest(root, board.track).stem[1:])
    records = track_files.stored_records(path.parent, board)
    exact = exact_columns.shown(path, board, records)
    click.echo(track_table.markdown(board, ranking.rank(board, *records), sort, newest, exact=exact))


@leaderboard_group.command("add")
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--new-version", is_flag=True, help="Start the track's next version when the run's protocol differs.")
@LEADERBOARDS
def leaderboard_add(run_dir: Path, new_version: bool, root: Path) -> None:
    """Add every attack of a finished `rsbench evaluate` run to its track, refusing what cannot be re-checked."""
    from rsbench.leaderboard import admission

    path, added = admission.add_run(root, run_dir, new_version=new_version)
    click.echo(f"added {', '.join(added)} to {path}")


@leaderboard_group.command("check")
@click.argument("root", type=click.Path(path_type=Path), default=Path("leaderboards"))
@click.option("--against", default=None,
              help="Git revision (it must resolve) whose files and entries must be unchanged, and since which every "
                   "new entry is derived and judged again (CI: the pull request's base). Default: HEAD in a git "
                   "checkout, else no history.")
@click.option("--quick", is_flag=True, help="Recompute point values only, not every bootstrap interval and the "
                                            "comparison blocks (seconds instead of about a minute).")
@click.option("--seed", type=int, default=None, help="Replay a re-judging of new entries with this verification seed "
                                                     "(default: drawn from the operating system now).")
@click.option("--pull-request", is_flag=True,
              help="CI on pull requests: refuse new submission entries (the trusted job adds those after merge) and "
                   "new track versions off their goal's standard protocol, run every new registry entry again, and "
                   "refuse rendered tables that differ from rendering the track files.")
@click.option("--submissions", type=click.Path(path_type=Path), default=None,
              help="Folder of the submission folders (default: submissions/ beside ROOT).")
def leaderboard_check(root: Path, against: str | None, quick: bool, seed: int | None, pull_request: bool,
                      submissions: Path | None) -> None:
    """Validate and re-derive every file under ROOT; against git history, derive and re-judge every new entry."""
    from rsbench.gate import audit

    against = against or ("HEAD" if audit.in_git(root) else None)
    checked = audit.check(root, against, intervals=not quick, seed=seed, pull_request=pull_request,
                          submissions=submissions)
    what = "point values" if quick else "metrics, intervals and comparisons"
    click.echo(f"{len(checked.files)} leaderboard files valid, {what} recomputed from their records")
    if checked.exact_unchecked:
        click.echo(f"exact runs not re-checked on this machine: {', '.join(checked.exact_unchecked)}")
    if against is None:
        click.echo("not a git checkout: history and new entries not checked")
        return
    click.echo(f"no file or entry changed since {against}; {len(checked.new)} new entries derived again")
    if checked.new and checked.verification is not None:
        for line in checked.verification.lines():
            click.echo(line)


@leaderboard_group.command("verify")
@click.argument("track")
@click.option("--entry", default=None, help="Only this entry.")
@click.option("--seed", type=int, default=None, help="Replay a verification with this seed (default: drawn from the "
                                                     "operating system now, and printed).")
@click.option("--as-admitted", is_flag=True, help="Replay a submission entry's judging: with --entry and --seed its "
                                                  "judging's seed, every verdict must come out as recorded.")
@DEVICE
@LEADERBOARDS
def leaderboard_verify(track: str, entry: str | None, seed: int | None, as_admitted: bool, device: str,
                       root: Path) -> None:
    """Judge every stored success again on fresh noise (or exactly, for GloRo and KW); report agreement."""
    from rsbench import runner
    from rsbench.gate import audit
    from rsbench.leaderboard import track_files

    verification = audit.verify(track_files.find(root, track), entry, runner.resolve_device(device), seed, as_admitted,
                                root.parent / "submissions")
    for line in verification.lines():
        click.echo(line)
    if verification.refuted():
        raise RsbenchError(f"fresh noise refutes stored successes of {', '.join(verification.refuted())}")


@leaderboard_group.command("render")
@LEADERBOARDS
def leaderboard_render(root: Path) -> None:
    """Write ROOT/README.md (a table per track) and the static site ROOT/site/."""
    from rsbench.leaderboard import site

    for path in site.render(root):
        click.echo(f"wrote {path}")


@click.group("submission")
def submission_group() -> None:
    """Attacks and defenses submitted by pull request: submissions/<name>/ (an attack) or submissions/defenses/<name>/
    (a defense), each a submission.yaml and its code."""


UNSANDBOXED = click.option("--unsandboxed", is_flag=True,
                           help="Run the code without the bubblewrap sandbox: only to try your own code where bwrap is "
                                "missing; refused on CI, and never adds an entry.")


@submission_group.command("validate")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--timeout", type=float, default=300, show_default=True, help="Seconds the smoke run may take.")
@UNSANDBOXED
@LEADERBOARDS
def submission_validate(folder: Path, timeout: float, unsandboxed: bool, root: Path) -> None:
    """Schema and claims in seconds, then a smoke run in the sandbox, judged by rsbench.

    An attack: every claimed track exists under ROOT, every claimed metric is one its entries report, every value
    lies in its metric's domain, and no entry of a claimed track has the submission's name; then the attack runs
    on a tiny embedded track of each defense kind it claims, on one attacked sample of every label.

    A defense (submissions/defenses/NAME): schema, names, files and weights, then, with its code served from the
    sandbox, its claimed accuracies certified again on the track's samples and the soundness checks."""
    from rsbench.submissions import attack_submissions

    click.echo(attack_submissions.validate(folder, timeout, isolated=not unsandboxed, root=root))


@submission_group.command("measure")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--track", "tracks", multiple=True,
              help="A track to measure (its newest version); repeat for several. Default: the tracks the submission "
                   "already claims.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Run the first K samples of each track only: quicker, but not the track's protocol (the output "
                   "says so).")
@click.option("--timeout", type=float, default=1800, show_default=True, help="Seconds each track may take.")
@UNSANDBOXED
@LEADERBOARDS
def submission_measure(folder: Path, tracks: tuple[str, ...], samples: int | None, timeout: float, unsandboxed: bool,
                       root: Path) -> None:
    """Run each track's protocol on an attack submission, in the sandbox and judged by rsbench exactly as verify
    does, and print the claims block (with 95% intervals as comments) to paste into its submission.yaml.

    A defense (submissions/defenses/NAME): certify each of its tracks' samples as the track will, its code served
    from the sandbox, and print its claims block (clean and certified accuracy, in %, at the radii it already
    claims, else epsilon and 2 epsilon; smoothing: sigma / 2 and sigma), after an estimate (as comments) of the time
    each goal's certification takes, timed on its first sample.

    Adds nothing to any leaderboard."""
    from rsbench.submissions import attack_submissions

    click.echo(attack_submissions.measure(folder, root, tracks, timeout, samples, isolated=not unsandboxed,
                                          report=click.echo))


@submission_group.command("verify")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--timeout", type=float, default=1800, show_default=True,
              help="Seconds each claimed track (a defense: each of its tracks) may take.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Check the claims on the first K samples of each track only (large tracks in CI); adds no entry.")
@click.option("--dry-run", is_flag=True, help="Run and judge every claimed track and check the claims; add no entry.")
@UNSANDBOXED
@LEADERBOARDS
def submission_verify(folder: Path, timeout: float, samples: int | None, dry_run: bool, unsandboxed: bool,
                      root: Path) -> None:
    """Run each claimed track's protocol in the sandbox, judge the examples here, compare with the claims, add the
    entries.

    A defense (submissions/defenses/NAME): validate it, then run the standard attack suite of each goal its kind
    supports on the standard protocol against its sandboxed code, judge here, and add the tracks
    evasion-NAME, degradation-NAME and spoofing-NAME. First an estimate of the time each goal's attacks take,
    timed on their first sample; then each attack's headline as it finishes, and each track's line as it ends
    (its entries added then, so a re-run after Ctrl-C skips it); a trial that adds nothing (--dry-run, --samples,
    --unsandboxed) keeps its runs in runs/verify-NAME-... and resumes them when run again."""
    from rsbench.submissions import attack_submissions

    for line in attack_submissions.verify(folder, root, timeout, samples, dry_run=dry_run, isolated=not unsandboxed,
                                          report=click.echo):
        click.echo(line)
