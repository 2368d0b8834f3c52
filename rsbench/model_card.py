"""A Hugging Face Hub model card of a defense: YAML front matter the Hub reads, then the card people read.

The front matter gives the Hub's `model-index`: the dataset, the clean accuracy and the certified
accuracy at each radius, each with its 95% Clopper-Pearson interval over the certified samples and the
settings that produced it, and an `rsbench` block with the defense's full spec, its hash and the
weights' sha256, so that whoever downloads the weights can register them (`source: hf` at the commit
they land in) and reproduce the numbers with `rsbench certify`. Certified accuracies of randomized
smoothing are statistical; the card says so.

The card `rsbench train` writes beside the weights (`rsbench/weights/<name>.md`) ends with a results section,
written by `results_section` and read back by `read_results`, so that the documentation's tables of rsbench's models
quote the card's numbers instead of copies of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from pydantic import ValidationError

from rsbench.errors import RsbenchError
from rsbench.records import CertifiedPoint, RunResult
from rsbench.specs import DefenseSpec

TASK = {"type": "image-classification", "name": "Certified robust image classification"}


def certified_result(spec: DefenseSpec, run_dir: Path | None, num_samples: int, n: int | None,
                     device: torch.device) -> RunResult:
    """The certify result the card reports: that of `run_dir` (a finished run of this very spec), or of a certify
    run of the first `num_samples` test samples made now in its default folder (resumed when it exists)."""
    from rsbench import requirements, rundir, runner

    if run_dir is not None:
        try:
            result = RunResult.model_validate_json((run_dir / "result.json").read_text())
        except (OSError, ValidationError) as error:
            raise RsbenchError(f"{run_dir} holds no finished run ({type(error).__name__})") from None
        if result.config.defense_hash != spec.spec_hash():
            raise RsbenchError(f"{run_dir} is a run of another spec of {result.config.defense} (hash "
                               f"{result.config.defense_hash[:12]}, {spec.name}'s is {spec.spec_hash()[:12]})")
        return result
    requirements.require(spec)
    config = runner.run_config(spec, "certify", num_samples=num_samples, n=n)
    return runner.certify(spec, config, rundir.default_path(config), device)


def front_matter(spec: DefenseSpec, result: RunResult) -> dict:
    """The card's YAML header: tags, dataset, model-index with every certified accuracy, and the rsbench spec."""
    config = result.config
    settings = {"samples": result.num_samples, "split": config.split, "seed": config.seed}
    if spec.kind == "smoothing":
        settings |= {"n0": config.n0, "n": config.n, "alpha": config.alpha, "sigma": spec.sigma}
    metrics = [{"type": "accuracy", "name": "clean accuracy", "value": round(100 * result.clean_accuracy, 2),
                "args": settings, "verified": False}]
    for point in result.certified_accuracy:
        if point.radius == 0:
            continue
        metrics.append({
            "type": "certified_accuracy", "name": f"certified accuracy ({spec.norm} radius {point.radius:g})",
            "value": round(100 * point.accuracy, 2), "verified": False,
            "args": {"radius": point.radius, "norm": spec.norm, "ci_low": round(100 * point.ci_low, 2),
                     "ci_high": round(100 * point.ci_high, 2), "level": 0.95, **settings},
        })
    return {
        "library_name": "rsbench",
        "tags": ["rsbench", "certified-robustness", spec.kind, spec.norm],
        "datasets": [spec.dataset.name],
        "metrics": ["accuracy", "certified_accuracy"],
        "model-index": [{"name": spec.name, "results": [{
            "task": TASK, "dataset": {"type": spec.dataset.name, "name": spec.dataset.name, "split": config.split},
            "metrics": metrics}]}],
        "rsbench": {"spec": json.loads(spec.model_dump_json()), "spec_hash": spec.spec_hash(),
                    "weights_sha256": result.weights_sha256, "rsbench_version": result.environment.rsbench_version,
                    "git_commit": result.environment.git_commit},
    }


def render(spec: DefenseSpec, result: RunResult) -> str:
    """The whole card: front matter, description, certified accuracy table, and how to evaluate the weights."""
    header = yaml.safe_dump(front_matter(spec, result), sort_keys=False, allow_unicode=True)
    rows = "\n".join(f"| {p.radius:g} | {100 * p.accuracy:.1f}% | [{100 * p.ci_low:.1f}, {100 * p.ci_high:.1f}] |"
                     for p in result.certified_accuracy)
    certified = (f"n0={result.config.n0}, n={result.config.n}, alpha={result.config.alpha}" if spec.kind == "smoothing"
                 else "deterministic certificates")
    return (
        f"---\n{header}---\n\n# {spec.name}\n\n{spec.description}\n\n"
        f"- kind: {spec.kind} ({spec.norm})" + (f", sigma {spec.sigma:g}" if spec.sigma else "")
        + (f", epsilon {spec.epsilon:g}" if spec.epsilon else "") + "\n"
        f"- data: {spec.dataset.name}, first {result.num_samples} {result.config.split} samples ({certified})\n"
        f"- weights sha256: `{result.weights_sha256}`; rsbench spec hash `{spec.spec_hash()[:12]}`\n\n"
        f"| radius | certified accuracy | 95% interval |\n|---|---|---|\n{rows}\n\n{result.statistics}\n\n"
        "## Evaluating these weights with rsbench\n\n"
        "Register them with the spec in this card's front matter (`rsbench:` `spec:`), its weights as "
        "`source: hf` with this repository's id, the commit they were uploaded in (40 hex digits) and the "
        "sha256 above, then run `rsbench certify --defense NAME` and `rsbench evaluate --defense NAME --attack …`.\n"
    )


RESULTS_HEADING = re.compile(r"^## Results \((?P<certification>[^)\n]+)\)$", re.MULTILINE)
SUMMARY_LINE = re.compile(r"^- (?P<name>clean accuracy|abstain rate|average certified radius): (?P<value>[0-9.]+)$",
                          re.MULTILINE)
EVALUATED = re.compile(r"evaluated on the first (?P<samples>[0-9]+) samples")
POINT_ROW = re.compile(r"^\| (?P<radius>[0-9.]+) \| (?P<accuracy>[0-9.]+) \| \[(?P<low>[0-9.]+), (?P<high>[0-9.]+)\] \|$",
                       re.MULTILINE)


@dataclass(frozen=True)
class CardResults:
    """The numbers of a training card's results section, as the card prints them (three decimals)."""

    certification: str
    """"deterministic", or the smoothing settings ("n0=100, n=10000, alpha=0.001")."""
    clean_accuracy: float
    abstain_rate: float
    average_certified_radius: float
    certified_accuracy: list[CertifiedPoint]
    samples: int | None
    """How many samples of the evaluation split the card certified (its data line), None where it does not say."""

    def at(self, radius: float) -> CertifiedPoint | None:
        """The certified accuracy the card gives at `radius` (None when its table has no such row)."""
        return next((p for p in self.certified_accuracy if abs(p.radius - radius) < 5e-4), None)


def results_section(result: RunResult, certification: str) -> str:
    """A training card's results: clean accuracy, abstain rate, average certified radius and the certified accuracy
    table with its intervals (`read_results` reads it back)."""
    table = "\n".join(f"| {p.radius:.3f} | {p.accuracy:.3f} | [{p.ci_low:.3f}, {p.ci_high:.3f}] |"
                      for p in result.certified_accuracy)
    return (f"## Results ({certification})\n\n"
            f"- clean accuracy: {result.clean_accuracy:.3f}\n- abstain rate: {result.abstain_rate:.3f}\n"
            f"- average certified radius: {result.average_certified_radius:.3f}\n\n"
            f"| radius | certified accuracy | 95% interval |\n|---|---|---|\n{table}\n\n{result.statistics}\n")


def read_results(text: str) -> CardResults:
    """The results section of a card `results_section` wrote, and the sample count its data line gives; refused with one line when the card has none (a
    card of weights rsbench did not train, whose results are the authors')."""
    heading = RESULTS_HEADING.search(text)
    if heading is None:
        raise RsbenchError("the card has no '## Results (...)' section written by rsbench train")
    section = text[heading.end():]
    summary = {m["name"]: float(m["value"]) for m in SUMMARY_LINE.finditer(section)}
    points = [CertifiedPoint(radius=float(m["radius"]), accuracy=float(m["accuracy"]), ci_low=float(m["low"]),
                             ci_high=float(m["high"])) for m in POINT_ROW.finditer(section)]
    if len(summary) != 3 or not points:
        raise RsbenchError(f"the card's results section lacks {'its table' if len(summary) == 3 else 'a summary line'}")
    evaluated = EVALUATED.search(text[:heading.start()])
    return CardResults(heading["certification"], summary["clean accuracy"], summary["abstain rate"],
                       summary["average certified radius"], points, int(evaluated["samples"]) if evaluated else None)
