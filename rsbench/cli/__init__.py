"""The `rsbench` command line: click commands that parse, call the library and print; no logic lives here.

- `commands`: the top-level group (certify, evaluate, sweep, exact, degradation-curve, train).
- `catalogue`: the `registry`, `models` and `data` groups.
- `leaderboards`: the `leaderboard` and `submission` groups.
- `options`: options several commands share.

May import everything else; nothing imports it but `rsbench.__main__` and the console script.
"""

from rsbench.cli.commands import cli, main

__all__ = ["cli", "main"]
