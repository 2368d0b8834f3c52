"""Fetch weights from the package, a local file, the Hugging Face Hub or the weights cache, checksum first.

The sha256 of the file is compared with the spec before anything is unpickled, and
checkpoints are read with `torch.load(weights_only=True)`, so a tampered or
truncated download is refused rather than executed or half-loaded. Hub files are
pinned to a commit; with `HF_HUB_OFFLINE=1` they are served from the local cache.
Releases without a published checksum (`source: import`) are pinned on this machine:
`rsbench models import` records their sha256 in the weights cache's `pins.json`. The other way,
`push` publishes a defense's weights and model card in one Hub commit and returns the reference that
pulls them back pinned to it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from rsbench.data import data_home
from rsbench.errors import RsbenchError
from rsbench.specs import WeightsRef

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"
PINS = "pins.json"
"""File in the weights cache mapping each imported file name to its sha256 and origin."""


def weights_home() -> Path:
    """rsbench's weights cache: `$RSBENCH_WEIGHTS`, or `~/.cache/rsbench/weights` when unset."""
    base = os.environ.get("RSBENCH_WEIGHTS")
    return Path(base) if base else Path.home() / ".cache" / "rsbench" / "weights"


def read_pins() -> dict[str, dict[str, str]]:
    """The pins recorded on this machine, by file name (empty before the first import)."""
    path = weights_home() / PINS
    return json.loads(path.read_text()) if path.is_file() else {}


def write_pin(ref: WeightsRef, sha256: str, origin: str) -> None:
    """Record the sha256 every later load of an imported file is checked against."""
    pins = {**read_pins(), ref.filename: {"sha256": sha256, "imported_from": origin}}
    path = weights_home() / PINS
    temporary = path.with_name(PINS + ".tmp")
    temporary.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def pinned_sha256(ref: WeightsRef) -> str | None:
    """The sha256 the weights must have: the registry's, else this machine's pin (None before import)."""
    return ref.sha256 or read_pins().get(ref.filename, {}).get("sha256")


def local_path(ref: WeightsRef, folder: Path | None = None) -> Path:
    """Where a `package`, `file`, `import` or `folder` source's file lives on this machine; `folder` is the spec's
    (`registry.folder_of`; the working directory when None)."""
    if ref.source == "package":
        return PACKAGE_WEIGHTS / ref.filename
    if ref.source == "import":
        return weights_home() / ref.filename
    if ref.source == "folder":
        return (folder or Path.cwd()) / ref.filename
    path = Path(ref.filename).expanduser()
    return path if path.is_absolute() else data_home() / path  # a file that comes with the data, e.g. a released model


def missing_weights(name: str, ref: WeightsRef, folder: Path | None = None) -> str | None:
    """What is missing to load a defense's weights and the command that provides it; None when present (a model
    held in memory by `rsbench.evaluate` is checked when it is loaded)."""
    if ref.source == "memory":
        return None
    if ref.source == "hf":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref.repo_id, ref.filename, revision=ref.revision)
        return None if isinstance(cached, str) else f"weights from the Hub (run `rsbench models pull {name}`)"
    path = local_path(ref, folder)
    if path.is_file() and pinned_sha256(ref):
        return None
    if ref.url:
        return (f"weights {path} (run `rsbench models pull {name}`, or download {ref.url} "
                f"and run `rsbench models import {name} FILE`)")
    return f"weights {path} (put the file there)"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(ref: WeightsRef) -> Path:
    """The Hub file at the spec's commit, from the Hugging Face cache or downloaded into it (`HF_ENDPOINT`,
    `HF_HUB_CACHE` and `HF_HUB_OFFLINE` apply as in the Hub client); its sha256 is checked by the caller."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{ref.repo_id}/{ref.filename}@{ref.revision[:8]}"
    try:
        path = Path(hf_hub_download(repo_id=ref.repo_id, filename=ref.filename, revision=ref.revision))
    except LocalEntryNotFoundError:
        raise RsbenchError(
            f"weights {where} are not in the Hugging Face cache "
            "and the Hub cannot be reached; run `rsbench models pull` where there is network, "
            "or copy the cache (HF_HOME) to this machine"
        ) from None
    except EntryNotFoundError:
        raise RsbenchError(f"the Hub has no file {ref.filename} in {ref.repo_id} at commit {ref.revision}") from None
    except RevisionNotFoundError:
        raise RsbenchError(f"the Hub repository {ref.repo_id} has no commit {ref.revision}") from None
    except RepositoryNotFoundError:
        raise RsbenchError(f"the Hub has no repository {ref.repo_id} (or it is private or gated)") from None
    except Exception as error:  # the hub client raises many types for a bad repo, file, revision or network
        raise RsbenchError(f"cannot fetch {where}: {_first_line(error)}") from None
    served = path.parents[len(PurePosixPath(ref.filename).parts) - 1].name  # snapshots/<commit served>/<filename>
    if served != ref.revision:
        raise RsbenchError(f"the Hub served {ref.filename} of {ref.repo_id} from commit {served[:12]}, not "
                           f"the pinned {ref.revision[:12]}: a revision must be a commit, not a branch or tag")
    return path


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def resolve_weights(ref: WeightsRef, folder: Path | None = None) -> Path:
    """Local path of the weights a spec names, after verifying their sha256 (`folder`: see `local_path`)."""
    if ref.source == "memory":
        raise RsbenchError("a model built in Python has no weights file: it is evaluated through rsbench.evaluate")
    path = _download(ref) if ref.source == "hf" else local_path(ref, folder)
    if not path.is_file():
        hints = {"file": " (relative file paths resolve against $RSBENCH_DATA)",
                 "import": " (run `rsbench models pull` or `rsbench models import`)"}
        raise RsbenchError(f"weights file {path} does not exist{hints.get(ref.source, '')}")
    expected = pinned_sha256(ref)
    if expected is None:
        raise RsbenchError(
            f"weights file {path} has no pin in {weights_home() / PINS}; import it with `rsbench models import`"
        )
    actual = sha256_of(path)
    if actual != expected:
        raise RsbenchError(f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}")
    return path


def load_checkpoint(ref: WeightsRef, folder: Path | None = None) -> Any:
    """The verified checkpoint, unpickled with `weights_only=True` (tensors and plain containers only)."""
    path = resolve_weights(ref, folder)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RsbenchError(f"cannot read weights {path}: {error}") from None


def push(ref: WeightsRef, folder: Path | None, repo_id: str, card: Path | None) -> WeightsRef:
    """Publish a defense's verified weights file (and its model card as README.md) in one commit to the Hub
    repository `repo_id` (created when absent; `HF_ENDPOINT` and `HF_TOKEN` apply as in the Hub client), and return
    the reference that pulls them back pinned: the commit they landed in and their sha256."""
    from huggingface_hub import CommitOperationAdd, HfApi

    path = resolve_weights(ref, folder)
    if card is not None and not card.is_file():
        raise RsbenchError(f"no model card at {card}: write one with `rsbench models card` (or pass --card)")
    filename = PurePosixPath(ref.filename).name
    operations = [CommitOperationAdd(path_in_repo=filename, path_or_fileobj=str(path))]
    if card is not None:
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card)))
    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        commit = api.create_commit(repo_id, operations, commit_message=f"rsbench: {filename}"
                                   + (" and its model card" if card is not None else ""))
    except Exception as error:  # the hub client raises many types for a bad token, repository or network
        raise RsbenchError(f"cannot push {filename} to {repo_id}: {_first_line(error)}") from None
    return WeightsRef(source="hf", repo_id=repo_id, filename=filename, revision=commit.oid, sha256=sha256_of(path))
