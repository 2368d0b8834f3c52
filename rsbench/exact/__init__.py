"""Exact verification: whether an adversarial example exists in the l_inf ball, proved by a mixed-integer program.

`milp` reads a small ReLU network as a MILP and decides one input at a time (`Verifier`); `run` is the
resumable run-directory job behind `rsbench exact` and `rsbench.exact.verify`. The ground truth it gives is what
attacks' recall and certificates' tightness are measured against. Imports the core (defenses, data, run
directories) only.
"""
