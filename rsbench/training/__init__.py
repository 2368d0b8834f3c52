"""Reproduce a defense's shipped weights from its spec's training recipe.

Each recipe is a module with `fit(model, train_set, spec, device)` that trains in place,
seeded by `spec.training.seed`; `train` builds the model, fits it, saves the state dict
and reports its sha256 so the result can be compared with the registry's pin.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rsbench.errors import RsbenchError
from rsbench.specs import DefenseSpec

RECIPES = {
    "gaussian": "rsbench.training.gaussian:fit",
    "macer": "rsbench.training.macer:fit",
    "gloro": "rsbench.training.gloro:fit",
    "kw": "rsbench.training.kw:fit",
}
"""Recipe name -> `module:fit`, imported on use."""


def train(spec: DefenseSpec, out_dir: Path, device: torch.device | str = "cpu") -> Path:
    """Train the spec's architecture with its recipe; returns the path of the saved state dict."""
    from rsbench import data, models, registry

    if spec.training is None:
        raise RsbenchError(f"defense {spec.name!r} has no training recipe")
    torch.manual_seed(spec.training.seed)
    model = models.build_model(spec).to(device)
    train_set = data.load_dataset(spec.dataset.name, "train", spec.dataset.root)
    registry.resolve(RECIPES[spec.training.recipe])(model, train_set, spec, torch.device(device))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{spec.name}.pt"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


def seeded_loader(train_set: torch.utils.data.Dataset, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    """A shuffling loader whose order depends only on the seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator)


def write_model_card(
    spec: DefenseSpec, weights: Path, out_dir: Path, device: torch.device, *, samples: int, n: int
) -> Path:
    """Certify freshly trained weights on the test split and describe them in `<name>.md`."""
    from rsbench import hub, runner
    from rsbench.specs import RunConfig, WeightsRef

    sha = hub.sha256_of(weights)
    trained = spec.model_copy(update={"weights": WeightsRef(source="file", filename=str(weights.resolve()), sha256=sha)})
    n = min(n, spec.certify.n)
    config = RunConfig(
        command="certify", defense=spec.name, defense_hash=trained.spec_hash(), num_samples=samples,
        n0=spec.certify.n0, n=n, alpha=spec.certify.alpha, batch_size=spec.certify.batch_size, seed=0,
    )
    result = runner.certify(trained, config, out_dir / f"{spec.name}-card-run", device)
    pinned = "matches" if sha == spec.weights.sha256 else "differs from"
    table = "\n".join(f"| {p.radius:.3f} | {p.accuracy:.3f} | [{p.ci_low:.3f}, {p.ci_high:.3f}] |" for p in result.certified_accuracy)
    certification = f"n0={config.n0}, n={n}, alpha={config.alpha}" if spec.kind == "smoothing" else "deterministic"
    card = out_dir / f"{spec.name}.md"
    card.write_text(
        f"# {spec.name}\n\n{spec.description}\n\n"
        f"- weights: `{weights.name}`, sha256 `{sha}` ({pinned} the registry pin)\n"
        f"- data: {spec.dataset.name}, train split for training, first {result.num_samples} test samples for evaluation\n"
        f"- architecture: {spec.architecture}, {spec.kind}"
        + (f", sigma={spec.sigma}" if spec.sigma else "") + (f", epsilon={spec.epsilon} ({spec.norm})" if spec.epsilon else "")
        + f"\n- recipe: `{spec.training.model_dump_json()}`\n"
        f"- environment: torch {result.environment.torch_version}, {result.environment.hardware}\n\n"
        f"## Results ({certification})\n\n"
        f"- clean accuracy: {result.clean_accuracy:.3f}\n- abstain rate: {result.abstain_rate:.3f}\n"
        f"- average certified radius: {result.average_certified_radius:.3f}\n\n"
        f"| radius | certified accuracy | 95% interval |\n|---|---|---|\n{table}\n\n{result.statistics}\n"
    )
    return card
