"""The `rsbench` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from rsbench.cli.catalogue import data_group, models_group, registry_group
from rsbench.cli.leaderboards import leaderboard_group, submission_group
from rsbench.cli.options import DEFENSE, DEVICE, OUT, attack_options, certification_options, sampling_options
from rsbench.errors import RsbenchError

if TYPE_CHECKING:
    from rsbench.exact import run as run_module
    from rsbench.records import RunResult


class UserError(click.ClickException):
    """An RsbenchError shown as one line on stderr, exit status 2."""

    exit_code = 2


class RsbenchGroup(click.Group):
    """Turns user errors into one line and a non-zero exit, and Ctrl-C into a resume hint."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RsbenchError as error:
            raise UserError(str(error)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: re-run the same command to resume", err=True)
            raise click.exceptions.Exit(130) from None


@click.group(cls=RsbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rsbench")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bars (they are drawn on a terminal only, on stderr; never in a pipe or a log).")
def cli(quiet: bool) -> None:
    """rsbench: how well do attacks break certified defenses?

    Defenses and attacks are named in the registry (`rsbench registry list`). Every run
    writes per-sample records as it goes to a run directory and resumes when re-run.
    """
    if quiet:
        from rsbench import progress

        progress.quiet()


@cli.command()
@DEFENSE
@click.option("--num-samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Certify the first K samples of the test split.")
@certification_options
def certify(defense: str, num_samples: int, n0: int | None, n: int | None, alpha: float | None,
            batch_size: int | None, seed: int, device: str, precision: str, channels_last: bool,
            images_per_batch: int | None, out: Path | None) -> None:
    """Certify a defense on test samples: records, a certified-accuracy table and a plot.

    Writes OUT/samples.jsonl (one line per sample, as it finishes), OUT/result.json and
    OUT/certified_accuracy.png.
    Re-running with the same OUT resumes.
    """
    from rsbench import registry, requirements, rundir, runner

    spec = registry.get_defense(defense)
    requirements.require(spec)
    config = runner.run_config(spec, "certify", num_samples=num_samples, n0=n0, n=n, alpha=alpha,
                               batch_size=batch_size, seed=seed, precision=precision, channels_last=channels_last)
    out = out or rundir.default_path(config)
    result = runner.certify(spec, config, out, runner.resolve_device(device), images_per_batch=images_per_batch)
    click.echo(format_certified_table(result))
    click.echo(f"records, result.json and certified_accuracy.png in {out}")


def format_certified_table(result: RunResult) -> str:
    """The certified-accuracy table printed after a certify run."""
    lines = [
        f"{result.defense.name}: {result.num_samples} samples, clean accuracy {result.clean_accuracy:.3f}, "
        f"abstain {result.abstain_rate:.3f}, average certified radius {result.average_certified_radius:.3f}",
        f"{'radius':>8}  {'certified acc':>13}  {'95% interval':>15}",
    ]
    lines += [
        f"{p.radius:>8.3f}  {p.accuracy:>13.3f}  [{p.ci_low:.3f}, {p.ci_high:.3f}]" for p in result.certified_accuracy
    ]
    return "\n".join(lines)


@cli.command()
@DEFENSE
@click.option("--attack", "attacks", required=True, multiple=True,
              help="Attack name; repeat to run several on the same samples (e.g. --attack caa --attack pgd). "
                   "All attacks of a run share one goal (evasion, degradation or spoofing).")
@click.option("--num-samples", type=click.IntRange(min=1), default=10, show_default=True,
              help="Use the first K samples of the test split; only correct, certified ones are attacked "
                   "(CAA costs about 100 N-sample forward-backward passes per sample: about a minute for the "
                   "default on 2 idle CPU cores with a digits model).")
@certification_options
@attack_options
@click.option("--leaderboards", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True,
              help="Folder of the leaderboard tracks; the interval table names the run's track only when the run "
                   "followed its protocol exactly, and otherwise says which protocol fields differ.")
def evaluate(defense: str, attacks: tuple[str, ...], device: str, images_per_batch: int | None, out: Path | None,
             backend: str, address: str | None, save_examples: bool, leaderboards: Path, **settings: object) -> None:
    """Attack a certified defense; the attacks' goal decides the job and its table.

    \b
    evasion      smoothing: minimum-norm attacks, the CAA paper's Table 1; GloRo, KW and
                 CROWN-IBP: epsilon-bounded attacks, VRA against empirical robust accuracy
    degradation  force the defense to reject clean inputs within epsilon: VRA, false positive
                 rate bounds and utility reduction (the degradation paper's tables)
    spoofing     misclassified images that still get a large certificate (Shadow Attack)

    On smoothing every attack is judged by the run's protocol (--judge-n, --judge-alpha),
    whatever its own params, and an example is reported only after a confirmation on
    --confirm-n fresh copies.

    Writes OUT/clean.jsonl (clean certificates), OUT/samples.jsonl (one record per sample
    and attack, as it finishes), OUT/result.json and OUT/attack_proportion.png
    Re-running with the same OUT resumes; a run naming more attacks reuses the records of the others.
    """
    from rsbench import engine, registry, requirements, rundir, runner
    from rsbench.leaderboard import track_table

    spec = registry.get_defense(defense)
    attack_specs = [registry.get_attack(name) for name in attacks]
    torch_device = runner.resolve_device(device)
    settings["workers"] = engine.default_workers(settings["workers"], torch_device, backend)  # type: ignore[arg-type]
    config = engine.evaluate_config(spec, attack_specs, **settings)
    requirements.require(spec)
    out = out or rundir.default_path(config)
    result = engine.evaluate(spec, attack_specs, config, out, torch_device, save_examples=save_examples,
                             images_per_batch=images_per_batch, backend=backend, address=address)
    click.echo(engine.format_headline(result) + "\n")
    click.echo(engine.format_table(result))
    click.echo("\nWith 95% bootstrap intervals over samples, as the leaderboards report them:")
    click.echo(track_table.run_table(out, leaderboards))
    click.echo(f"records, result.json and plots in {out}")


@cli.command()
@click.option("--defense", "defense_pattern", required=True,
              help="Glob of defense names (fnmatch; quote it), e.g. 'gloro-*' or '*-digits-*'.")
@click.option("--attack", "attack_pattern", required=True,
              help="Glob of attack names (fnmatch; quote it), e.g. 'degradation-*' or '*'.")
@click.option("--num-samples", type=click.IntRange(min=1), default=10, show_default=True,
              help="Use the first K samples of the test split in every run.")
@sampling_options
@attack_options
@click.option("--root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Folder of the runs' default directories (ROOT/<defense>/evaluate-<goal>-seed<seed>-<hash>).")
def sweep(defense_pattern: str, attack_pattern: str, device: str, root: Path, **settings: object) -> None:
    """Evaluate every defense matching --defense with every attack matching --attack that fits it.

    One evaluate run per defense and goal, with the matching attacks of that goal that attack the
    defense's kind in its norm, each in its default run directory under ROOT (so a sweep resumes,
    and reuses `rsbench evaluate` runs of the same settings). Prints each run's table, then one
    summary line per run.
    """
    from rsbench import engine, runner
    from rsbench import sweep as sweeps

    finished = []
    torch_device = runner.resolve_device(device)
    backend = settings["backend"]
    settings["workers"] = engine.default_workers(settings["workers"], torch_device, backend)  # type: ignore[arg-type]
    for run in sweeps.run(sweeps.plan(defense_pattern, attack_pattern), torch_device, root=root, **settings):
        click.echo(f"\n{run.planned.defense.name}, {run.planned.goal}:\n{engine.format_table(run.result)}")
        finished.append(run)
    click.echo("\nsweep:")
    for run in finished:
        click.echo(sweeps.summary_line(run))


@cli.command()
@click.option("--defense", required=True, help="Defense name or alias: a deterministic ReLU network certified in "
                                                 "linf (kw, crownibp; see `rsbench registry list`).")
@click.option("--num-samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Verify the first K samples of the defense's test split.")
@click.option("--epsilon", type=float, default=None, help="Radius of the linf ball [the defense's epsilon].")
@click.option("--minimal", is_flag=True,
              help="Also find each adversarial sample's closest example within epsilon (its exact linf distance); "
                   "slower.")
@click.option("--time-limit", type=float, default=120.0, show_default=True,
              help="Seconds of MILP solving per sample; a sample not decided by then is recorded unknown, never "
                   "robust.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: one process; ray: samples spread over Ray actors (a local Ray or the cluster at "
                   "--address), this process alone writing the records.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ray actors verifying samples side by side (--backend ray).")
@click.option("--address", default=None, help="Address of a running Ray cluster for --backend ray [a local Ray].")
@OUT
def exact(defense: str, num_samples: int, epsilon: float | None, minimal: bool, time_limit: float, backend: str,
          workers: int, address: str | None, out: Path | None) -> None:
    """Decide exactly, by a mixed-integer program, whether each sample has an adversarial example.

    The network (Linear, Conv2d, ReLU, Flatten) is encoded as a MILP (Tjeng et al. 2019) with
    per-neuron bounds from KW and IBP, and solved by HiGHS on the CPU. Each sample is robust
    (proved), adversarial (an example in the ball inside [0, 1], confirmed by a forward pass) or
    unknown (time limit). Writes OUT/samples.jsonl (one line per sample, as it finishes, with
    the defense's own certificate at epsilon), OUT/examples/<index>.npy and OUT/result.json.
    Re-running with the same OUT resumes.
    """
    from rsbench import registry, requirements, rundir
    from rsbench.exact import run

    spec = registry.get_defense(defense)
    config = run.exact_config(spec, num_samples=num_samples, epsilon=epsilon, minimal=minimal, time_limit=time_limit,
                              workers=workers)
    requirements.require(spec)
    out = out or rundir.default_path(config)
    click.echo(f"exact {spec.name} at epsilon {config.epsilon} on {num_samples} samples of {spec.dataset.name} "
               f"{config.split}, records in {out}", err=True)
    result = run.verify(spec, config, out, backend=backend, address=address)
    click.echo(format_exact(result))


def format_exact(result: run_module.ExactResult) -> str:
    """The summary printed after an exact run."""
    def line(name: str, rate: run_module.Rate) -> str:
        return f"{name:<22} {rate.count:>6}  {100 * rate.rate:6.2f}%  [{100 * rate.ci_low:.2f}, {100 * rate.ci_high:.2f}]"

    return "\n".join([
        (f"{result.defense.name} at linf epsilon {result.epsilon}: {result.num_samples} samples; "
         f"{100 * result.stable_share:.1f}% of ReLUs stable by the bounds"),
        f"{'':<22} {'count':>6}  {'rate':>7}  95% interval",
        line("exact adversarial", result.exact_adversarial),
        line("unknown", result.unknown),
        line("certified error", result.certified_error),
        line("bounded PGD error", result.pgd_error),
        f"time per sample: median {result.median_time_s:.2f} s, mean {result.mean_time_s:.2f} s",
    ])


@cli.command("degradation-curve")
@DEFENSE
@click.option("--num-samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Certify the first K samples of the test split.")
@certification_options
def degradation_curve(defense: str, num_samples: int, n0: int | None, n: int | None, alpha: float | None,
                      batch_size: int | None, seed: int, device: str, precision: str, channels_last: bool,
                      images_per_batch: int | None, out: Path | None) -> None:
    """VRA and the false positive rate's upper bound against epsilon (the degradation paper's Figures 2-3).

    One certification pass per sample answers every epsilon: a sample certified at epsilon can only be
    degraded when it is not certified at 2 epsilon. Writes OUT/degradation_curve.png and .json next to
    the certify run's records, resuming it.
    """
    from rsbench import registry, requirements, rundir, runner
    from rsbench.goals.degradation import curve_files

    spec = registry.get_defense(defense)
    requirements.require(spec)
    config = runner.run_config(spec, "certify", num_samples=num_samples, n0=n0, n=n, alpha=alpha,
                               batch_size=batch_size, seed=seed, precision=precision, channels_last=channels_last)
    out = out or rundir.default_path(config)
    runner.certify(spec, config, out, runner.resolve_device(device), images_per_batch=images_per_batch)
    records = runner.certify_records(out, config)
    files = curve_files(spec, records, out)
    if not files:
        raise RsbenchError(f"{spec.name} certified no sample of the first {num_samples}: there is no curve to draw")
    click.echo(f"VRA and FPR upper bound against epsilon in {', '.join(str(f) for f in files)}")


@cli.command()
@click.option("--defense", required=True, help="Defense whose training recipe to reproduce.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("trained"), show_default=True,
              help="Folder for the weights and the model card.")
@click.option("--card-samples", type=click.IntRange(min=1), default=500, show_default=True,
              help="Test samples certified for the model card.")
@click.option("--card-n", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Noise samples per certificate for the model card (smoothing only).")
@click.option("--split", type=click.Choice(["train", "test-train"]), default=None,
              help="Split to train on. Default: the real training split when its files are present; for MNIST "
                   "without them, test-train (test images 5000-9999), on which the shipped MNIST weights were "
                   "trained: give --split test-train to reproduce them where the training files are present.")
@DEVICE
def train(defense: str, out: Path, card_samples: int, card_n: int, split: str | None, device: str) -> None:
    """Reproduce a defense's weights from its recipe, write a model card and compare with the shipped weights.

    Bit for bit where the shipped model card's build environment (torch build, CPU capability, CPU) is this
    machine's; elsewhere by what the weights do: clean predictions on the evaluation split agree on at least 97%
    and certified accuracy (--card-samples, --card-n, same noise seeds) lies inside the shipped weights' 95%
    interval at every radius. Says which comparison it made; exits 1 when the weights are not reproduced.
    """
    from rsbench import data, registry, runner, training
    from rsbench.training import reproduction

    spec = registry.get_defense(defense)
    torch_device = runner.resolve_device(device)
    split = split or data.training_split(spec.dataset.name, spec.dataset.root)
    path = training.train(spec, out, torch_device, split)
    card = training.write_model_card(spec, path, out, torch_device, samples=card_samples, n=card_n, split=split)
    click.echo(card.read_text())
    pinned_split = data.TRAIN_FALLBACK.get(spec.dataset.name, "train")
    if split != pinned_split:
        click.echo(f"not compared with the shipped weights: they were trained on {pinned_split!r}, these on {split!r}")
        return
    verdict = reproduction.compare(spec, path, out, torch_device, samples=card_samples, n=card_n)
    click.echo(verdict.summary())
    if not verdict.reproduced:
        raise SystemExit(1)


for group in (registry_group, models_group, data_group, leaderboard_group, submission_group):
    cli.add_command(group)

main = cli
"""Console-script entry point."""
