"""Fetch weights from the package, a local file or the Hugging Face Hub, checksum first.

The sha256 of the file is compared with the spec before anything is unpickled, and
checkpoints are read with `torch.load(weights_only=True)`, so a tampered or
truncated download is refused rather than executed or half-loaded. Hub files are
pinned to a commit; with `HF_HUB_OFFLINE=1` they are served from the local cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from rsbench.data import data_home
from rsbench.errors import RsbenchError
from rsbench.specs import WeightsRef

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(ref: WeightsRef) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=ref.repo_id, filename=ref.filename, revision=ref.revision))
    except LocalEntryNotFoundError:
        raise RsbenchError(
            f"weights {ref.repo_id}/{ref.filename}@{ref.revision[:8]} are not in the Hugging Face cache "
            "and the Hub cannot be reached; run `rsbench models pull` where there is network, "
            "or copy the cache (HF_HOME) to this machine"
        ) from None
    except Exception as error:  # the hub client raises many types for a bad repo, file or revision
        raise RsbenchError(f"cannot fetch {ref.repo_id}/{ref.filename}@{ref.revision[:8]}: {error}") from None


def resolve_weights(ref: WeightsRef) -> Path:
    """Local path of the weights a spec names, after verifying their sha256."""
    if ref.source == "package":
        path = PACKAGE_WEIGHTS / ref.filename
    elif ref.source == "file":
        path = Path(ref.filename).expanduser()
        if not path.is_absolute():  # a file that comes with the data, e.g. a released model next to its test set
            path = data_home() / path
    else:
        path = _download(ref)
    if not path.is_file():
        hint = " (relative file paths resolve against $RSBENCH_DATA)" if ref.source == "file" else ""
        raise RsbenchError(f"weights file {path} does not exist{hint}")
    actual = sha256_of(path)
    if actual != ref.sha256:
        raise RsbenchError(f"checksum mismatch for {path}: expected sha256 {ref.sha256[:12]}…, got {actual[:12]}…")
    return path


def load_checkpoint(ref: WeightsRef) -> Any:
    """The verified checkpoint, unpickled with `weights_only=True` (tensors and plain containers only)."""
    path = resolve_weights(ref)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RsbenchError(f"cannot read weights {path}: {error}") from None
