"""The `registry`, `models` and `data` command groups: what rsbench knows (specs) and what it fetches, checks,
publishes and describes (weights, graphs, model cards, datasets)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rsbench.cli.options import DEVICE


@click.group("registry")
def registry_group() -> None:
    """Browse the defenses and attacks rsbench knows."""


@registry_group.command("list")
@click.option("--kind", type=click.Choice(["defenses", "attacks"]), default=None, help="Only this kind.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def registry_list(kind: str | None, as_json: bool) -> None:
    """List registered defenses (with the goals they can be evaluated under and whether their data and
    weights are on this machine) and attacks; a spec that does not validate is listed as broken."""
    from rsbench import registry, requirements

    kinds = [kind] if kind else ["defenses", "attacks"]
    listing = {
        k: [{**s.model_dump(mode="json"), **(requirements.status(s) if k == "defenses" else {})}
            for s in registry.all_specs(k).values()]
        + [{"name": name, "broken": error} for name, error in registry.broken_specs(k).items()]
        for k in kinds
    }
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    present = {True: "present", False: "missing"}
    for k, entries in listing.items():
        click.echo(f"{k}:")
        for entry in entries:
            if "broken" in entry:
                click.echo(f"  {entry['name']:<28} BROKEN: {entry['broken']}")
            elif k == "defenses":
                click.echo(f"  {entry['name']:<28} {entry['kind']:<10} goals {','.join(entry['goals'])}; "
                           f"data {present[entry['data_present']]}, weights {present[entry['weights_present']]}; "
                           f"{entry['description']}")
            else:
                click.echo(f"  {entry['name']:<28} {entry['goal']:<11} {entry['norm'] or 'any':<5} {entry['description']}")


@registry_group.command("show")
@click.argument("name")
def registry_show(name: str) -> None:
    """Show one spec (a defense or an attack) as YAML-like JSON with its hash."""
    from rsbench import registry

    spec = registry.find(name)
    click.echo(json.dumps({**spec.model_dump(mode="json"), "spec_hash": spec.spec_hash()}, indent=2))


@registry_group.command("schema")
@click.argument("model", default="DefenseSpec",
                type=click.Choice(["DefenseSpec", "AttackSpec", "RunConfig", "SampleRecord", "RunResult"]))
def registry_schema(model: str) -> None:
    """Print the JSON Schema of a spec (default: DefenseSpec)."""
    from rsbench import specs

    click.echo(json.dumps(getattr(specs, model).model_json_schema(), indent=2))


@click.group("models")
def models_group() -> None:
    """Fetch, inspect and publish model weights."""


@models_group.command("pull")
@click.argument("name")
def models_pull(name: str) -> None:
    """Fetch a defense's weights ahead of time and verify their sha256.

    Released checkpoints without a published checksum are downloaded (Google Drive needs
    `pip install 'rsbench[download]'`) and imported as by `rsbench models import`.
    """
    from rsbench import registry, release

    spec = registry.get_defense(name)
    path, sha256 = release.pull_weights(spec)
    click.echo(f"{spec.name}: {path} (sha256 verified: {sha256})")


@models_group.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--replace", is_flag=True, help="Pin a file that differs from the one imported before.")
def models_import(name: str, path: Path, replace: bool) -> None:
    """Check a downloaded checkpoint (or the release archive or folder holding it), store it and pin its sha256.

    The file must be a torch checkpoint that loads into the defense's architecture. It is copied
    to rsbench's weights cache ($RSBENCH_WEIGHTS, default ~/.cache/rsbench/weights) and its
    sha256 recorded there; every later load and every result is checked against it.
    """
    from rsbench import registry, release

    spec = registry.get_defense(name)
    stored, sha256 = release.import_weights(spec, path, replace=replace)
    click.echo(f"{spec.name}: {stored} (sha256 {sha256} pinned)")


@models_group.command("export")
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The ONNX file to write (smoothing: the base classifier's graph).")
@click.option("--vnnlib", "vnnlib_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Also write one VNNLIB property per track sample at the defense's epsilon here (linf only).")
@click.option("--num-samples", type=click.IntRange(min=1), default=20, show_default=True,
              help="Samples given a VNNLIB property (the first of the evaluation split, as the tracks take them).")
def models_export(name: str, out: Path, vnnlib_dir: Path | None, num_samples: int) -> None:
    """Write a defense's network as an ONNX graph (pixels in [0, 1] in, logits out) that external verifiers and
    runtimes read, and, with --vnnlib, the VNN-COMP properties of its track's samples."""
    from rsbench import graphs, registry

    spec = registry.get_defense(name)
    if vnnlib_dir is not None:
        graphs.check_vnnlib(spec)  # before anything is written
    graphs.export_defense(spec, out)
    click.echo(f"{spec.name}: {out}")
    if vnnlib_dir is not None:
        written = graphs.export_vnnlib(spec, vnnlib_dir, num_samples)
        click.echo(f"{spec.name}: {len(written)} VNNLIB properties in {vnnlib_dir}")


@models_group.command("push")
@click.argument("name")
@click.option("--repo", "repo_id", required=True, help="Hub repository OWNER/NAME to publish to (created when absent).")
@click.option("--card", type=click.Path(path_type=Path), default=None,
              help="The model card to publish as README.md [model-cards/NAME/README.md, as `rsbench models card` "
                   "writes it].")
@click.option("--no-card", is_flag=True, help="Publish the weights alone.")
def models_push(name: str, repo_id: str, card: Path | None, no_card: bool) -> None:
    """Publish a defense's weights and its model card to the Hugging Face Hub in one commit, then print the spec's
    `weights:` lines that pull them back pinned (the commit and the sha256).

    Uses the Hub client's settings: a write token (`HF_TOKEN` or `huggingface-cli login`) and `HF_ENDPOINT`.
    """
    import yaml

    from rsbench import hub, registry

    spec = registry.get_defense(name)
    card = None if no_card else card or Path("model-cards") / spec.name / "README.md"
    ref = hub.push(spec.weights, registry.folder_of(spec), repo_id, card)
    click.echo(f"{spec.name}: pushed to {repo_id} at commit {ref.revision}; in its spec:")
    click.echo(yaml.safe_dump({"weights": ref.model_dump(mode="json", exclude_none=True)}, sort_keys=False).rstrip())


@models_group.command("card")
@click.argument("name")
@click.option("--run", "run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="A finished certify run of this defense to report (default: certify now, resuming its run folder).")
@click.option("--num-samples", type=click.IntRange(min=1), default=500, show_default=True,
              help="Test samples certified when no --run is given.")
@click.option("--n", type=click.IntRange(min=1), default=None, help="Noise samples per certificate (smoothing; "
              "default the spec's).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="The card's file (default model-cards/NAME/README.md: upload the folder with the weights).")
@DEVICE
def models_card(name: str, run_dir: Path | None, num_samples: int, n: int | None, out: Path | None,
                device: str) -> None:
    """Write a Hugging Face Hub model card: YAML front matter with the dataset, the clean and certified accuracies
    with their 95% intervals and the rsbench spec, then a table and how to evaluate the weights with rsbench."""
    from rsbench import model_card, registry, runner

    spec = registry.get_defense(name)
    result = model_card.certified_result(spec, run_dir, num_samples, n, runner.resolve_device(device))
    out = out or Path("model-cards") / spec.name / "README.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(model_card.render(spec, result))
    click.echo(f"{spec.name}: model card in {out} (clean accuracy {result.clean_accuracy:.3f} on "
               f"{result.num_samples} samples)")


@click.group("data")
def data_group() -> None:
    """Fetch datasets."""


@data_group.command("pull")
@click.argument("name", type=click.Choice(["digits", "mnist", "cifar10", "imagenet", "tiny-imagenet"]))
def data_pull(name: str) -> None:
    """Download a dataset into $RSBENCH_DATA/NAME (default ~/.cache/rsbench/data/NAME), checksums checked.

    MNIST and CIFAR-10 come through torchvision; ImageNet must be placed by hand (the error says where).
    """
    from rsbench import data

    click.echo(f"{name}: {data.pull_dataset(name)}")
