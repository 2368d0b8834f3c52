"""The leaderboards: tracks and their protocol, how runs are admitted, scored, ranked and shown.

- `track_files`: one append-only JSON file per track version, its protocol and entries.
- `admission`: a finished run admitted to its track (what is refused, how entries are written).
- `verdicts`, `rederive`: success as a track's protocol judges it, and what the harness derives again itself.
- `scoring`, `ranking`: metrics with bootstrap intervals, ranks and ties, recomputed from stored records.
- `track_table`, `site`, `profiles`: the tables, the static site and the defense profiles.
- `exact_columns`: what an exact verifier says of a track (recall, tightness), or on l2 the certificate-to-attack gap.

May import the core (specs, records, registry, data, models, defenses, attacks, goals, engine, runner, metrics,
stats); never `rsbench.submissions`, `rsbench.gate` or `rsbench.cli`.
"""
