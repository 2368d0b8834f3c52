"""Soundness checks a certifier must pass before its certified accuracies mean anything.

A certified accuracy is only as good as the certificates behind it, and a defense submitted with its
own certifier (a plugin) or its own model could claim more than holds. On the first K test samples:

- deterministic certifiers (GloRo, KW, plugins): the certificate must not depend on the generator
  (two calls agree exactly), its label must be the network's (`Defense.model`, at any radius, 0
  included), and no point within the certified radius may change that label: every bounded evasion
  attack of the registry that attacks the kind in its norm is run at each sample's own certified
  radius, judged exactly as evasion runs judge: bounded PGD on rsbench's own gradients (`pgd-l2`,
  `pgd-linf`) and the Square attack (`square-l2`, `square-linf`), which only calls the forward pass
  (a network whose gradients mislead cannot hide from it).
  In linf, where the network is a chain of affine layers and ReLUs, the exact MILP of `rsbench.exact`
  then decides each certificate the attacks left standing, within `MILP_TIME_LIMIT` seconds a sample
  (undecided ones are counted, never taken as proved). A point found is a counterexample, named with
  its sample, radius and distance. The same audit is run on the certificate at one point per sample
  at the defense's epsilon (`off_sample`, drawn from `seed`): degradation trusts the certificate the
  defense gives at an attack's point, and a certifier honest on the dataset's own images alone (say,
  inputs on its pixel grid) would otherwise inflate its radii everywhere an attack looks. A certifier
  that told the audit's random point from an attack's (by the shape of the perturbation) could still
  do so: the audit samples, it does not cover.
- smoothing: CERTIFY must agree with a second, independent run within its error. For the class
  each run certifies, its lower bound on that class's probability must not exceed the upper bound
  (one-sided Clopper-Pearson at the certificate's alpha) that the counts of the other run give. A
  sound CERTIFY breaks this on a sample only when one of the two bounds fails (probability at most
  2 alpha), so the check fails only when more samples break it than a binomial at 2 alpha gives
  with probability `SMOOTHING_SIGNIFICANCE`; the violating samples are named.

The certificates tested first are the track's own (its certification seed, `track_seed`); everything
else (the second run, the counts, the attacks' restarts) draws from `seed`, which a caller checking
someone else's defense draws from the operating system: a base classifier that recognised the
track's public noise, and answered well only there, then disagrees with noise it could not know.
`check` runs the one that applies; each returns what it checked and raises one line on a violation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.stats import binom

from rsbench import graphs, registry, runner
from rsbench.attacks.base import Target, Tracker
from rsbench.defenses.base import Defense
from rsbench.defenses.smoothing import Smoothing
from rsbench.errors import RsbenchError
from rsbench.exact.verifier import Verifier
from rsbench.goals import instantiate, within
from rsbench.specs import AttackSpec, DefenseSpec
from rsbench.stats import clopper_pearson

SAMPLES = 20
"""K: the first test samples the checks run on (those of the standard tracks)."""
SMOOTHING_SIGNIFICANCE = 1e-3
"""Chance that a sound smoothing defense fails the agreement check."""
RADIUS_SLACK = 1e-6
"""Attacks run within radius (1 - RADIUS_SLACK), so float rounding at the sphere's edge counts for the certificate."""
MILP_TIME_LIMIT = 30.0
"""Seconds of MILP solving per certificate; a certificate still open then is counted undecided."""


@dataclass(frozen=True)
class Report:
    """What a soundness check did: the samples it looked at and how many certificates it tested."""

    samples: int
    tested: int
    """Certificates tested: attacked (deterministic) or compared with a second run (smoothing)."""
    detail: str


def bounded_attacks(spec: DefenseSpec) -> list[AttackSpec]:
    """The registry's bounded evasion attacks that attack the defense's kind in its norm."""
    chosen = []
    for attack in registry.all_specs("attacks").values():
        cls = registry.resolve(attack.implementation)
        if attack.goal == "evasion" and spec.kind in cls.kinds and attack.norm in (None, spec.norm):
            chosen.append(attack)
    if not chosen:
        raise RsbenchError(f"the registry has no bounded evasion attack of {spec.kind} defenses in {spec.norm}")
    return chosen


def check(spec: DefenseSpec, defense: Defense, samples: Sequence[tuple[torch.Tensor, int]], seed: int = 0,
          track_seed: int = 0) -> Report:
    """The check that applies to the defense's kind, on `samples` (the first K of the test split), testing the
    certificates a track with seed `track_seed` stores, against noise and attacks drawn from `seed`."""
    if isinstance(defense, Smoothing):
        return check_smoothing(spec, defense, samples, seed, track_seed)
    return check_deterministic(spec, defense, samples, seed, track_seed=track_seed)


def check_deterministic(spec: DefenseSpec, defense: Defense, samples: Sequence[tuple[torch.Tensor, int]],
                        seed: int = 0, attacks: Sequence[AttackSpec] | None = None, track_seed: int = 0,
                        milp: bool = True) -> Report:
    """Determinism, the network's label, and no counterexample within any certified radius (found by `attacks`, the
    registry's bounded ones by default, then, with `milp`, by the exact MILP where it applies); raises on the first
    violation, naming it."""
    network = getattr(defense, "model", None)
    if not isinstance(network, torch.nn.Module):
        raise RsbenchError(f"{spec.name}: the certifier exposes no `model` whose label its certificate protects")
    attacks = list(attacks) if attacks is not None else bounded_attacks(spec)
    audit = _Audit(spec, defense, network, [(attack, instantiate(attack, spec)) for attack in attacks],
                   milp_verifier(spec, network, tuple(samples[0][0].shape)) if samples and milp else None, seed)
    device = defense.device
    for index, (x, _) in enumerate(samples):
        x = x.to(device)
        audit.certificate(x, index, f"sample {index}", runner.sample_generator(track_seed, index, device), "")
        moved = off_sample(x, spec, runner.stream(seed, index, "", "soundness-off-sample", device))
        audit.certificate(moved, index, f"sample {index}'s point within epsilon",
                          runner.stream(seed, index, "", "soundness-off-sample-certify", device), "-off-sample")
    names = ", ".join(a.name for a in attacks)
    decided = f"; the exact MILP proved {audit.proved} of them ({audit.undecided} undecided in " \
              f"{MILP_TIME_LIMIT:g} s)" if audit.exact is not None else ""
    return Report(len(samples), audit.tested, f"{audit.tested} certificates, of the samples and one point within "
                                              f"epsilon of each, attacked at their own radius by {names}: no label "
                                              f"changed{decided}; every certificate repeats exactly")


def off_sample(x: torch.Tensor, spec: DefenseSpec, generator: torch.Generator) -> torch.Tensor:
    """A point within the defense's epsilon of x inside [0, 1], where a degradation attack asks for a certificate: a
    random corner of the linf box, a random direction in l2, scaled by a uniform draw from (0, 1] as an attack's
    iterates are (all drawn from `generator`, which the defense cannot know)."""
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    scale = 1.0 - float(torch.rand((), generator=generator, device=x.device))
    step = noise.sign() if spec.norm == "linf" else noise / noise.norm()
    return (x + scale * spec.epsilon * step).clamp(0.0, 1.0)


class _Audit:
    """The audit of one certificate after another (`certificate`), counting what it tested and what the MILP decided."""

    def __init__(self, spec: DefenseSpec, defense: Defense, network: torch.nn.Module, jobs: list,
                 exact: Verifier | None, seed: int) -> None:
        self.spec, self.defense, self.network, self.jobs = spec, defense, network, jobs
        self.exact, self.seed = exact, seed
        self.tested = self.proved = self.undecided = 0

    def certificate(self, x: torch.Tensor, index: int, where: str, generator: torch.Generator, key: str) -> None:
        """Determinism, the network's label, no counterexample within the certified radius of the certificate at x;
        raises on a violation, naming `where`; `key` tells this point's streams apart from the sample's others."""
        spec, defense, network, device = self.spec, self.defense, self.network, self.defense.device
        first = defense.certify(x, generator=generator)
        again = defense.certify(x, generator=runner.stream(self.seed, index, "", f"soundness-again{key}", device))
        if not math.isfinite(first.radius):
            raise RsbenchError(f"{spec.name}: {where}: certified radius {first.radius} is not a finite number")
        if (first.prediction, first.radius) != (again.prediction, again.radius):
            raise RsbenchError(f"{spec.name}: {where}: two certificates of the same input differ "
                               f"({first.prediction}, {first.radius:.6g}) and ({again.prediction}, {again.radius:.6g}); "
                               "a deterministic certifier must not depend on the generator")
        if first.prediction is None:
            return
        with torch.no_grad():
            label = int(network(x[None]).argmax(1))
        if label != first.prediction:  # at radius 0 too: a label there counts toward clean accuracy
            raise RsbenchError(f"{spec.name}: {where}: certified label {first.prediction} is not the network's "
                               f"label {label}")
        if first.radius <= 0:
            return
        radius = first.radius * (1 - RADIUS_SLACK)
        for attack, job in self.jobs:
            found = _counterexample(spec, defense, network, job, attack.name, x, label, radius, self.seed, index, key)
            if found is not None:
                raise RsbenchError(f"{spec.name}: unsound certificate at {where}: label {label} certified "
                                   f"within {spec.norm} radius {first.radius:.4f}, but {attack.name} found label "
                                   f"{found[0]} at distance {found[1]:.4f}")
        if self.exact is not None:
            verdict = self.exact.decide(x.cpu(), label, radius, MILP_TIME_LIMIT)
            if verdict.exact == "adversarial":
                with torch.no_grad():
                    other = int(network(verdict.example[None].to(device)).argmax(1))
                raise RsbenchError(f"{spec.name}: unsound certificate at {where}: label {label} certified "
                                   f"within {spec.norm} radius {first.radius:.4f}, but the exact MILP found label "
                                   f"{other} at distance {verdict.distance:.4f}")
            self.proved += verdict.exact == "robust"
            self.undecided += verdict.exact == "unknown"
        self.tested += 1


def milp_verifier(spec: DefenseSpec, network: torch.nn.Module, input_shape: tuple[int, ...]) -> Verifier | None:
    """The exact verifier of the network, where one decides its certificates: linf, and a chain of affine layers and
    ReLUs (an ONNX graph's converted chain); None otherwise."""
    if spec.norm != "linf":
        return None
    try:
        chain = graphs.as_sequential(network, spec.name) if isinstance(network, graphs.Network) else network
        return Verifier(chain, input_shape)
    except RsbenchError:
        return None


def _counterexample(spec: DefenseSpec, defense: Defense, network: torch.nn.Module, job: object, name: str,
                    x: torch.Tensor, label: int, radius: float, seed: int, index: int,
                    key: str = "") -> tuple[int, float] | None:
    """(the other label, its distance) of a point the attack finds within `radius` of x, or None."""
    tracker = Tracker(x, lambda _: False, norm=spec.norm)

    def judge(x_adv: torch.Tensor) -> bool:
        inside = 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
        with torch.no_grad():
            return inside and within(tracker.distance(x_adv), radius) and int(network(x_adv[None]).argmax(1)) != label

    tracker.judge = judge
    generator = runner.stream(seed, index, name, f"soundness{key}", defense.device)
    job.run(Target(defense, radius, spec.norm), x, label, tracker, generator)
    if tracker.first is None:
        return None
    x_adv = tracker.first.x_adv.to(x.device)
    with torch.no_grad():
        return int(network(x_adv[None]).argmax(1)), tracker.first.radius


def check_smoothing(spec: DefenseSpec, defense: Smoothing, samples: Sequence[tuple[torch.Tensor, int]],
                    seed: int = 0, track_seed: int = 0) -> Report:
    """The track's CERTIFY against a second, independent run on each sample, both ways; raises when more samples
    disagree than a sound CERTIFY allows (see the module's docstring)."""
    device, n, alpha = defense.device, defense.n, defense.alpha
    violations, tested = [], 0
    for index, (x, _) in enumerate(samples):
        x = x.to(device)
        runs = [runner.sample_generator(track_seed, index, device),
                runner.stream(seed, index, "", "soundness-1", device)]
        certificates = [defense.certify(x, generator=g) for g in runs]
        counts = [defense.sample_counts(x, n, runner.stream(seed, index, "", f"soundness-count-{k}", device))
                  for k in (0, 1)]
        for certificate, other in zip(certificates, reversed(counts)):
            if certificate.prediction is None:
                continue
            tested += 1
            upper = clopper_pearson(int(other[certificate.prediction]), n, 2 * alpha)[1]
            if certificate.p_lower > upper:
                violations.append(f"sample {index} (class {certificate.prediction}: lower bound "
                                  f"{certificate.p_lower:.4f} > {upper:.4f})")
    allowed = int(binom.isf(SMOOTHING_SIGNIFICANCE, max(tested, 1), min(2 * alpha, 1.0)))
    if len(violations) > allowed:
        raise RsbenchError(f"{spec.name}: CERTIFY disagrees with a second independent run beyond its error on "
                           f"{len(violations)} of {tested} certificates (a sound one allows {allowed}): "
                           + "; ".join(violations[:3]))
    return Report(len(samples), tested, f"{tested} certificates agree with a second independent run within their "
                                        f"error ({len(violations)} outside, {allowed} allowed)")
