"""The exact runs behind the leaderboards' exact columns: re-checked on every check, never changed by a pull request.

A track's `exact/` folder (`rsbench.leaderboard.exact_columns`) moves its columns: turning an 'adversarial'
verdict into 'robust', or deleting an example, would raise a certificate's tightness or an entry's recall. So
`check` re-checks it as `rsbench exact` wrote it: each 'adversarial' record's example exists as
`examples/<index>.npy` with its sha256, lies within epsilon of the dataset's sample inside [0, 1] at the recorded
distance, and a forward pass of the defense's network gives another label (an array of numbers: np.load never
unpickles); no other file lies among the examples, and no link anywhere in the run (nor is the run one);
the run follows the newest version's protocol; and the columns derive without contradiction (certified samples are
exactly robust, no entry succeeds where the MILP proved robustness). A 'robust' verdict cannot be re-checked short
of solving again: that is why `unchanged` refuses any pull request that touches these folders (`maintained`);
maintainers write them by running `rsbench exact`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from rsbench import runner
from rsbench.data import load_dataset
from rsbench.defenses import load_defense
from rsbench.errors import RsbenchError
from rsbench.exact.run import EXAMPLES
from rsbench.gate import maintained
from rsbench.leaderboard import exact_columns
from rsbench.leaderboard.track_files import Leaderboard, latest, load, stored_records
from rsbench.requirements import missing_requirements


def check(root: Path) -> list[str]:
    """Every track's exact run under root, checked against the track's newest version (`check_folder`); returns the
    tracks whose run this machine cannot re-check (the defense's data or weights absent), each with what is missing."""
    skipped = []
    for folder in sorted(root.glob(f"*/{exact_columns.EXACT}")):
        path = latest(root, folder.parent.name)
        if path is None:
            raise RsbenchError(f"{folder}: an exact run beside no track file")
        board = load(path)
        missing = missing_requirements(board.defense)
        if missing:
            skipped.append(f"{board.track} ({'; '.join(missing)})")
            continue
        check_folder(path, board)
    return skipped


def check_folder(path: Path, board: Leaderboard) -> None:
    """Refuse, in one line, the exact run beside the newest track version at `path` where it is not what
    `rsbench exact` writes for the version's samples."""
    where = folder = path.parent / exact_columns.EXACT
    if path.parent.is_symlink():
        raise RsbenchError(f"{where}: the track folder {path.parent.name} is a link; an exact run holds the files "
                           "rsbench exact wrote")
    links = [p.relative_to(path.parent).as_posix() for p in [folder, *folder.rglob("*")] if p.is_symlink()]
    if links:
        raise RsbenchError(f"{where}: {links[0]} is a link; an exact run holds the files rsbench exact wrote")
    config, records = exact_columns.read_run(folder)
    if not exact_columns.follows(config, board):
        raise RsbenchError(f"{where}: not an exact run of {board.track} v{board.version}'s defense, split, epsilon and "
                           "samples")
    dataset = load_dataset(board.defense.dataset.name, board.protocol.split, board.defense.dataset.root)
    model = load_defense(runner.spec_for_run(board.defense, board.protocol.run_config([]))).model
    eps = float(config.epsilon)
    expected = set()
    for record in records:
        x, label = dataset[record.index]
        if record.label != int(label):
            raise RsbenchError(f"{where}: sample {record.index}'s label is not the dataset's")
        if record.exact != "adversarial":
            if record.example is not None:
                raise RsbenchError(f"{where}: sample {record.index} is {record.exact} but names an example")
            continue
        name = f"{EXAMPLES}/{record.index:05d}.npy"
        expected.add(name)
        file = folder / name
        if record.example != name or not file.is_file():
            raise RsbenchError(f"{where}: sample {record.index} is adversarial but its example {name} is missing")
        data = file.read_bytes()
        if hashlib.sha256(data).hexdigest() != record.example_sha256:
            raise RsbenchError(f"{where}: {name} does not match its sha256 in samples.jsonl")
        try:
            example = torch.from_numpy(np.load(file, allow_pickle=False))
        except (ValueError, TypeError, OSError):
            raise RsbenchError(f"{where}: {name} is not an array of numbers as rsbench exact saves it") from None
        distance = float((example.double() - x.double()).abs().max()) if example.shape == x.shape else np.inf
        if not distance == record.distance <= eps or float(example.min()) < 0 or float(example.max()) > 1:
            raise RsbenchError(f"{where}: {name} is not within epsilon {eps:g} of sample {record.index} in [0, 1] at "
                               "its recorded distance")
        with torch.no_grad():
            if int(model(example[None].to(torch.float32)).argmax()) == record.label:
                raise RsbenchError(f"{where}: {name} is not adversarial: the network gives it label {record.label}")
    stray = sorted(p.relative_to(folder).as_posix() for p in (folder / EXAMPLES).glob("*")) if \
        (folder / EXAMPLES).is_dir() else []
    stray = [name for name in stray if name not in expected]
    if stray:
        raise RsbenchError(f"{where}: {', '.join(stray)} is no adversarial record's example")
    exact_columns.columns(path, board, stored_records(path.parent, board))


def unchanged(root: Path, base: Path, against: str, listed: str) -> None:
    """Refuse, in one line, a pull request that adds, changes or removes a file of a track's exact run since
    `against`; `listed` is `git ls-tree -r <against> -- <root>` run at the top of the checkout, `base`."""
    prefix = checkout_path(root, base) + "/"
    maintained.unchanged(base, against, listed, [root],
                         lambda name: name.startswith(prefix) and (_in_exact(name[len(prefix):]) or (
                             "/" not in name[len(prefix):] and (base / name).is_symlink())),
                         f"under the tracks' {exact_columns.EXACT}/ folders); exact runs are written by maintainers "
                         "running rsbench exact, never in a pull request")


def checkout_path(root: Path, base: Path) -> str:
    """Root's path in the checkout at `base` as git names it: the folders above it resolved, never root itself, so a
    leaderboards folder that is a link is compared as the link it is (not as the folder it points to)."""
    top = root.parent.resolve() / root.name
    if not top.is_relative_to(base):
        raise RsbenchError(f"{root}: lies outside the checkout {base}")
    return top.relative_to(base).as_posix()


def _in_exact(relative: str) -> bool:
    """Whether a path relative to the leaderboards folder lies in a track's exact run."""
    parts = relative.split("/")
    return len(parts) >= 2 and parts[1] == exact_columns.EXACT
