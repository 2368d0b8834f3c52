"""Exact verification: whether an adversarial example exists in the l_inf ball, proved by a mixed-integer program.

`milp` is the program a ReLU network becomes; `verifier` turns its solves into verdicts on one input at a time
(robust, adversarial with a confirmed example, or unknown); `run` is the resumable run-directory job behind
`rsbench exact` and `rsbench.verify_exactly`. The ground truth it gives is what attacks' recall and certificates'
tightness are measured against. Imports the core (defenses, attacks, data, run directories) only.
"""
