"""Reproduce a defense's shipped weights from its spec's training recipe.

Each recipe is a module with `fit(model, train_set, spec, device)` that trains in place,
seeded by `spec.training.seed`; `train` builds the model, fits it, saves the state dict
and reports its sha256; `reproduction.compare` says whether it reproduces the shipped weights.

Training runs on one CPU thread, since the order of a kernel's float sums follows the
thread count. The bits still depend on the PyTorch build and on the CPU kernels it picks
by instruction set, so the same bits come back only in the same environment (see
`reproduction`).
Training uses the dataset's real training split when its files are present; MNIST without
them falls back to `test-train` (test images 5000-9999), the split the shipped MNIST
weights were trained on, which `split="test-train"` also asks for explicitly.
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
    "crownibp": "rsbench.training.crown_ibp:fit",
}
"""Recipe name -> `module:fit`, imported on use."""


def train(spec: DefenseSpec, out_dir: Path, device: torch.device | str = "cpu", split: str | None = None) -> Path:
    """Train the spec's architecture with its recipe on `split` (default `data.training_split`); returns the path
    of the saved state dict."""
    from rsbench import data, models, registry

    if spec.training is None:
        raise RsbenchError(f"defense {spec.name!r} has no training recipe")
    split = split or data.training_split(spec.dataset.name, spec.dataset.root)
    if split in ("test", spec.dataset.split):
        raise RsbenchError(f"{spec.name} is evaluated on its {spec.dataset.split!r} split; training on {split!r} "
                           "would train on the images it is evaluated on")
    torch.manual_seed(spec.training.seed)
    model = models.build_model(spec).to(device)
    train_set = data.load_dataset(spec.dataset.name, split, spec.dataset.root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU kernels split their sums by thread: one thread gives the same weights anywhere
    try:
        registry.resolve(RECIPES[spec.training.recipe])(model, train_set, spec, torch.device(device))
    finally:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{spec.name}.pt"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


def seeded_loader(train_set: torch.utils.data.Dataset, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    """A shuffling loader whose order depends only on the seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator)


def describe_split(name: str, split: str) -> str:
    """A split in words: its name, and for one cut from a test set which images it holds."""
    from rsbench.data import SPLIT_NOTES

    return f"`{split}` ({SPLIT_NOTES[split]})" if split in SPLIT_NOTES else f"the {split} split of {name}"


def write_model_card(
    spec: DefenseSpec, weights: Path, out_dir: Path, device: torch.device, *, samples: int, n: int, split: str
) -> Path:
    """Certify freshly trained weights (trained on `split`) on the evaluation split and describe them in `<name>.md`."""
    from rsbench import data, runner
    from rsbench.model_card import results_section
    from rsbench.records import RunConfig
    from rsbench.training.reproduction import HOW_COMPARED, current_environment, with_weights

    trained = with_weights(spec, weights)
    sha = trained.weights.sha256
    n = min(n, spec.certify.n)
    samples = min(samples, len(data.load_dataset(spec.dataset.name, spec.dataset.split, spec.dataset.root)))
    config = RunConfig(
        command="certify", defense=spec.name, defense_hash=trained.spec_hash(), split=spec.dataset.split,
        num_samples=samples, n0=spec.certify.n0, n=n, alpha=spec.certify.alpha, batch_size=spec.certify.batch_size,
        seed=0,
    )
    result = runner.certify(trained, config, out_dir / f"{spec.name}-card-run", device)
    pinned = "matches" if sha == spec.weights.sha256 else "differs from"
    note = ""
    if split == "train" and spec.dataset.name in data.TRAIN_FALLBACK:
        fallback = data.TRAIN_FALLBACK[spec.dataset.name]
        note = (f"- note: trained on the real training set; the pinned weights were trained on `{fallback}`, "
                f"which `rsbench train --split {fallback}` reproduces\n")
    certification = f"n0={config.n0}, n={n}, alpha={config.alpha}" if spec.kind == "smoothing" else "deterministic"
    card = out_dir / f"{spec.name}.md"
    card.write_text(
        f"# {spec.name}\n\n{spec.description}\n\n"
        f"- weights: `{weights.name}`, sha256 `{sha}` ({pinned} the registry pin)\n"
        f"{current_environment(device).line()}\n{HOW_COMPARED}\n"
        f"- data: {spec.dataset.name}; trained on {describe_split(spec.dataset.name, split)}; evaluated on the first "
        f"{result.num_samples} samples of {describe_split(spec.dataset.name, spec.dataset.split)}\n{note}"
        f"- architecture: {spec.architecture}, {spec.kind}"
        + (f", sigma={spec.sigma}" if spec.sigma else "") + (f", epsilon={spec.epsilon} ({spec.norm})" if spec.epsilon else "")
        + f"\n- recipe: `{spec.training.model_dump_json()}`\n"
        f"- environment: torch {result.environment.torch_version}, {result.environment.hardware}\n\n"
        + results_section(result, certification)
    )
    return card
