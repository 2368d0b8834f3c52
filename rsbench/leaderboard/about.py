"""What a defense's profile says about where the defense comes from: who made it, its paper, licence,
architecture and size, and how its weights were trained.

A submitted defense says so itself, in its folder's `submission.yaml` (`authors`, `paper`, `venue`,
`licence`) beside its training script; a registry defense is rsbench's training (or import) of a
published method, so its profile names the method's paper, the recipe of its spec and its model
card (`rsbench/weights/NAME.md`). The size is counted from the checkpoint itself (verified against its
pin, read with `weights_only=True`), so no code of a submission runs to render its page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rsbench import hub, registry
from rsbench.errors import RsbenchError
from rsbench.specs import DefenseSpec


@dataclass(frozen=True)
class Paper:
    """A paper: its authors, link and venue."""

    authors: str
    link: str
    venue: str


METHODS = {
    "smoothing": Paper("Cohen, Rosenfeld, Kolter", "https://arxiv.org/abs/1902.02918", "ICML 2019"),
    "macer": Paper("Zhai, Dan, He, Zhang, Gong, Hu, Wang, Wang", "https://arxiv.org/abs/2001.02378", "ICLR 2020"),
    "gloro": Paper("Leino, Wang, Fredrikson", "https://arxiv.org/abs/2102.08452", "ICML 2021"),
    "kw": Paper("Wong, Kolter", "https://arxiv.org/abs/1711.00851", "ICML 2018"),
    "crownibp": Paper("Zhang, Chen, Xiao, Gowal, Stanforth, Li, Boning, Hsieh", "https://arxiv.org/abs/1906.06316",
                      "ICLR 2020"),
}
"""The paper defining each registry defense's method (MACER by its training recipe, the rest by their kind)."""
CARDS = Path(__file__).resolve().parents[1] / "weights"
"""Where the model cards of the weights rsbench ships lie, one `NAME.md` per registry defense."""


@dataclass(frozen=True)
class About:
    """A defense's provenance, as its profile shows it; None where nothing says."""

    authors: str
    paper: str | None
    venue: str | None
    licence: str | None
    architecture: str
    tensors: int | None
    """Tensors in the checkpoint."""
    values: int | None
    """Numbers in the checkpoint: the parameters (and buffers such as batch-norm statistics)."""
    recipe: str | None
    """How the weights were trained: a spec's recipe, or the path of a submission's training script."""
    card: str | None
    """The weights' model card: a path in rsbench, or the Hub page at the pinned revision."""


def about(spec: DefenseSpec, submissions: Path | None) -> About:
    """The provenance of a defense: from `submissions/defenses/NAME/submission.yaml` when that folder holds it (under
    `submissions`), else from its registry spec, the method's paper and the model card rsbench ships."""
    folder = submissions / "defenses" / spec.name if submissions else None
    tensors, values = _size(spec, folder if folder and folder.is_dir() else None)
    architecture = spec.architecture + (" (" + ", ".join(f"{k} {v}" for k, v in spec.architecture_options.items())
                                        + ")" if spec.architecture_options else "")
    card = f"https://huggingface.co/{spec.weights.repo_id}/tree/{spec.weights.revision}" \
        if spec.weights.source == "hf" else None
    if folder is not None and (folder / "submission.yaml").is_file():
        data = registry.read_yaml(folder / "submission.yaml")
        data = data if isinstance(data, dict) else {}
        scripts = sorted(p.name for p in folder.glob("train*.py"))
        return About(", ".join(map(str, data.get("authors") or [])) or "not given", data.get("paper"),
                     data.get("venue"), data.get("licence"), architecture, tensors, values,
                     ", ".join(f"submissions/defenses/{spec.name}/{s}" for s in scripts) or None, card)
    method = METHODS.get(spec.training.recipe if spec.training and spec.training.recipe == "macer" else spec.kind)
    shipped = CARDS / f"{spec.name}.md"
    method_authors = f"method: {method.authors}; " if method else ""
    if spec.training is not None:
        authors = f"{method_authors}weights: trained by rsbench"
        recipe = json.dumps(spec.training.model_dump(mode="json"), sort_keys=True)
        licence = "MIT (rsbench)"
    else:
        origin = spec.weights.url or spec.weights.repo_id
        authors = f"{method_authors}weights: {origin}" if origin else method_authors.removesuffix("; ") or "not given"
        recipe, licence = None, None
    return About(authors, method.link if method else None, method.venue if method else None, licence, architecture,
                 tensors, values, recipe, card or (f"rsbench/weights/{shipped.name}" if shipped.is_file() else None))


def _size(spec: DefenseSpec, folder: Path | None) -> tuple[int | None, int | None]:
    """How many tensors and numbers the defense's checkpoint holds; (None, None) when it is not on this machine."""
    try:
        checkpoint = hub.load_checkpoint(spec.weights, folder)
    except RsbenchError:
        return None, None
    tensors = list(_tensors(checkpoint))
    return len(tensors), sum(t.numel() for t in tensors)


def _tensors(value: object) -> list[torch.Tensor]:
    """Every tensor in a checkpoint's nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return [t for item in items for t in _tensors(item)]
