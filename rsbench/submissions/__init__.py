"""Submissions by pull request: attacks and defenses that rsbench runs in a sandbox and judges itself.

- `submission_spec`, `attack_submissions`, `submission_run`, `claims`: an attack's folder, its validation,
  its sandboxed runs and what it claims.
- `defense_submissions`, `defense_tracks`, `soundness`: a defense's folder, its standard tracks and the
  soundness checks of its certifier.
- `sandbox`, `tensor_pipe`, `defense_server`, `defense_child`: the bubblewrap sandbox, the wire format and the
  process that serves a submitted defense by tensors only.

May import the core and `rsbench.leaderboard` (a verified submission becomes track entries); never
`rsbench.gate` or `rsbench.cli`.
"""
