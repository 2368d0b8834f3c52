"""Options several `rsbench` commands share, so that each is declared, and documented, once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

DEVICE = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where the model runs; auto picks a CUDA GPU when there is one.",
)

DEFENSE = click.option(
    "--defense", required=True,
    help="The defense: a registry name or alias (see `rsbench registry list`), the path of a defense spec's YAML "
         "file (a model of your own: `architecture: python:./model.py:build`), or a defense submission's folder "
         "(submissions/defenses/NAME).",
)


def with_options(options: list[Callable[..., object]]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator adding `options` to a command, in this order in its help."""
    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


SAMPLING_OPTIONS = [
    click.option("--n0", type=int, default=None,
                 help="Selection noise samples of each certificate [spec default, 100]."),
    click.option("--n", "n", type=int, default=None,
                 help="Estimation noise samples of each certificate [spec default, 100,000]."),
    click.option("--alpha", type=float, default=None,
                 help="Failure probability of each certificate [spec default, 0.001]."),
    click.option("--batch-size", type=int, default=None,
                 help="Noisy copies per forward pass; for evaluate also the attacks' chunk size [spec default]."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Master seed; sample i is seeded from (seed, i)."),
    DEVICE,
    click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
                 help="Arithmetic of a smoothed base classifier; bf16/fp16 autocast is faster on GPUs but "
                      "changes the classifier certified (recorded; leaderboards take fp32 only)."),
    click.option("--channels-last", is_flag=True,
                 help="Run a smoothed base classifier on channels-last inputs (faster convolutions on GPUs)."),
    click.option("--images-per-batch", type=click.IntRange(min=1), default=None,
                 help="Test images sharing each pass through the model; records do not depend on it "
                      "[1 on the CPU; on a GPU, as many as fit half its free memory, at most 64]."),
]
"""Clean-certificate sampling, seed and device: the options of every command that certifies."""
sampling_options = with_options(SAMPLING_OPTIONS)
OUT = click.option("--out", type=click.Path(path_type=Path), default=None,
                   help="Run directory; re-running with the same one resumes "
                        "[runs/<defense>/<command>[-<goal>]-seed<seed>-<hash of the settings that fix the records>].")
certification_options = with_options([*SAMPLING_OPTIONS, OUT])
"""The options certify, evaluate and degradation-curve share."""
ATTACK_OPTIONS = [
    click.option("--workers", type=click.IntRange(min=1), default=None,
                 help="Workers attacking batches of samples side by side (processes, or Ray actors with "
                      "--backend ray: CPU cores, or GPUs); records do not change, times include the sharing "
                      "[on the CPU one per core, each with one thread; on a GPU 1]."),
    click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="local: worker processes on this machine; ray: Ray actors, each loading the model once, "
                      "on a local Ray or the cluster at --address; a worker that dies is restarted and its "
                      "batch retried (needs pip install \"rsbench[ray]\")."),
    click.option("--address", default=None,
                 help="Address of a running Ray cluster (e.g. ray://head:10001 or auto) for --backend ray "
                      "[start a local Ray]."),
    click.option("--epsilon", type=float, default=None,
                 help="Radius of the threat model for degradation and for evasion of GloRo, KW and CROWN-IBP "
                      "[the defense's epsilon; for smoothing, its sigma]."),
    click.option("--judge-n", type=int, default=None,
                 help="The judge's N: fresh noisy copies whose hard votes decide each candidate, for every attack "
                      "alike [1500]."),
    click.option("--judge-alpha", type=float, default=None,
                 help="Significance level of the judge and of the confirmation [0.005]."),
    click.option("--confirm-n", type=int, default=None,
                 help="Fresh copies with which each kept candidate is tested again before it is reported; "
                      "at least --judge-n [10 x judge N]."),
    click.option("--save-examples", is_flag=True,
                 help="Save each attack's best examples to <run directory>/adversarial/<attack>.pt."),
]
"""The options of the commands that run attacks (evaluate, sweep): workers, backend and the judge."""
attack_options = with_options(ATTACK_OPTIONS)
