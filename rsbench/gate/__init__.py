"""The pull-request gate: `rsbench leaderboard check`, which re-derives every track file and re-judges new
entries (`audit`), with the rendered tables (`rendered`), where entries come from (`provenance`) and the tracks'
exact runs (`exact_runs`).

May import the core, `rsbench.leaderboard` and `rsbench.submissions` (a submitted defense's tracks are served
again to be checked); never `rsbench.cli`.
"""
