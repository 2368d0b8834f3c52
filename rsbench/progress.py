"""One progress display for every long step: a tqdm bar on stderr, drawn only where someone watches.

Library code asks for a bar with `bar(...)`; whether it is drawn is decided here, once: never when
`RSBENCH_QUIET=1` (the CLI's `--quiet` sets it, and worker processes inherit it), never when stderr is
not a terminal (a pipe, a log file, CI), so logs carry results, not carriage returns.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

QUIET = "RSBENCH_QUIET"
"""Environment variable that turns every progress display off when set to 1."""
T = TypeVar("T")


def quiet() -> None:
    """Turn progress off for this process and every process it starts."""
    os.environ[QUIET] = "1"


def shown() -> bool:
    """Whether progress is drawn: stderr is a terminal and nobody asked for quiet."""
    return os.environ.get(QUIET) != "1" and sys.stderr.isatty()


def bar(total: int | None = None, desc: str = "", unit: str = "it", *, enabled: bool = True) -> tqdm:
    """A progress bar on stderr; `enabled=False` (a caller's own progress switch) hides it too."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=not (enabled and shown()))


def each(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterator[T]:
    """`items`, advancing a bar as each is taken."""
    size = total if total is not None else len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    with bar(size, desc, unit) as progress:
        for item in items:
            yield item
            progress.update(1)
