"""Released checkpoints: check a downloaded file, store it where its spec looks, pin its sha256.

Authors often publish weights without a checksum (Cohen et al.'s models are one Google Drive
archive). `import_weights` accepts the checkpoint itself, the release archive or its extracted
folder; it refuses what is not a torch checkpoint of the spec's architecture (an HTML page saved
under a checkpoint's name is what a failed Google Drive download leaves), stores the file and
pins its sha256, so every later load and every result can be checked against it.
`pull_weights` downloads the release first when the machine is online.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

import torch

from rsbench import hub, models, registry
from rsbench.errors import RsbenchError
from rsbench.specs import DefenseSpec

HTML_MARKERS = (b"<!doctype html", b"<html")


def import_weights(spec: DefenseSpec, source: Path, *, replace: bool = False) -> tuple[Path, str]:
    """Check `source` (a checkpoint, or the release archive or folder holding it), store and pin it; returns
    the stored path and its sha256. A file different from one already pinned needs `replace`."""
    ref = spec.weights
    if ref.source not in ("import", "file"):
        raise RsbenchError(f"{spec.name}'s weights come with rsbench or the Hub; `rsbench models pull {spec.name}` "
                           "fetches and verifies them")
    if not source.exists():
        raise RsbenchError(f"{source} does not exist")
    destination = hub.local_path(ref)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staged = destination.with_name(destination.name + ".partial")
    try:
        _stage(source, ref.member, staged)
        _check_checkpoint(spec, staged, source)
        digest = hub.sha256_of(staged)
        expected = hub.pinned_sha256(ref)
        if expected not in (None, digest) and (ref.sha256 or not replace):
            why = "the registry pins" if ref.sha256 else "this machine pinned"
            rerun = "" if ref.sha256 else "; pass --replace to pin the new file (earlier results will not compare)"
            raise RsbenchError(f"{source} has sha256 {digest[:12]}… but {why} {expected[:12]}… for {spec.name}{rerun}")
        staged.replace(destination)
    finally:
        staged.unlink(missing_ok=True)
    if ref.source == "import":
        hub.write_pin(ref, digest, str(source.resolve()))
    return destination, digest


def _stage(source: Path, member: str | None, staged: Path) -> None:
    """Copy the checkpoint to `staged`: `source` itself, or `member` of the archive or folder `source`."""
    if source.is_dir():
        if not member:
            raise RsbenchError(f"{source} is a folder; give the checkpoint file")
        # the release's own folder, or one inside it (e.g. the extracted `models/`)
        parts = PurePosixPath(member).parts
        for start in range(len(parts)):
            if (candidate := source.joinpath(*parts[start:])).is_file():
                shutil.copyfile(candidate, staged)
                return
        raise RsbenchError(f"{source} holds no {member}")
    if member and tarfile.is_tarfile(source):
        with tarfile.open(source) as archive:
            found = next((m for m in archive if m.isfile() and _matches(m.name, member)), None)
            if found is None:
                raise RsbenchError(f"archive {source} holds no {member}")
            with archive.extractfile(found) as reader, staged.open("wb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
        return
    if member and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            names = [n for n in archive.namelist() if _matches(n, member)]
            if names:  # a zip without the member may be a checkpoint itself (torch saves zip files)
                with archive.open(names[0]) as reader, staged.open("wb") as writer:
                    shutil.copyfileobj(reader, writer, 1 << 20)
                return
    shutil.copyfile(source, staged)


def _matches(name: str, member: str) -> bool:
    """Whether an archive entry is the member, also under another top folder or without the member's own."""
    name, inner = name.removeprefix("./"), member.partition("/")[2]
    return name == member or name.endswith("/" + member) or bool(inner) and name == inner


def _check_checkpoint(spec: DefenseSpec, path: Path, shown: Path) -> None:
    """Refuse HTML pages, files torch cannot read and checkpoints of another architecture, in one line each."""
    with path.open("rb") as handle:
        head = handle.read(1024).lstrip().lower()
    if head.startswith(HTML_MARKERS) or b"<html" in head:
        raise RsbenchError(
            f"{shown} is an HTML page, not a checkpoint (Google Drive answers large downloads with a confirmation "
            f"page); download it with `rsbench models pull {spec.name}` or through a browser"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not one of its checkpoints
        raise RsbenchError(f"{shown} is not a torch checkpoint ({_first_line(error)})") from None
    try:
        models.load_weights_into(models.build_model(spec), checkpoint)
    except RsbenchError as error:
        arch = checkpoint.get("arch") if isinstance(checkpoint, dict) else None
        says = f" (it says arch {arch!r})" if arch else ""
        raise RsbenchError(f"{shown} is not a {spec.architecture} checkpoint as {spec.name} needs{says}: {error}") from None


def pull_weights(spec: DefenseSpec) -> tuple[Path, str]:
    """Make a defense's weights present and verified: download the release and import it where needed."""
    ref = spec.weights
    folder = registry.folder_of(spec)
    if ref.source in ("package", "hf", "folder", "memory") or hub.missing_weights(spec.name, ref, folder) is None:
        path = hub.resolve_weights(ref, folder)
        return path, hub.pinned_sha256(ref)
    if not ref.url:
        raise RsbenchError(f"{spec.name} names no url to download its weights from; put them at {hub.local_path(ref)}")
    download = _download(ref.url, spec.name)
    try:
        return import_weights(spec, download)
    except RsbenchError:
        download.unlink(missing_ok=True)  # a bad download must not be reused by the next pull
        raise


def _download(url: str, name: str) -> Path:
    """The file at `url` in the weights cache's downloads (kept, so one release archive serves every entry)."""
    folder = hub.weights_home() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / hashlib.sha256(url.encode()).hexdigest()[:16]
    if path.is_file():
        return path
    partial = path.with_name(path.name + ".partial")
    manual = f"download {url} by hand and run `rsbench models import {name} FILE`"
    try:
        if "drive.google.com" in url:
            try:
                import gdown
            except ImportError:
                raise RsbenchError(
                    f"downloading from Google Drive needs gdown: pip install 'rsbench[download]', or {manual}"
                ) from None
            if gdown.download(url, str(partial), quiet=False, fuzzy=True) is None:
                raise OSError("Google Drive refused the download")
        else:
            urllib.request.urlretrieve(url, partial)
    except RsbenchError:
        raise
    except Exception as error:  # offline, refused or interrupted: urllib and gdown raise many types
        partial.unlink(missing_ok=True)
        raise RsbenchError(f"cannot download {url} ({_first_line(error)}); {manual}") from None
    partial.replace(path)
    return path


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:120] if text else type(error).__name__
