"""Randomized smoothing (Cohen, Rosenfeld, Kolter, ICML 2019): PREDICT and CERTIFY.

The smoothed classifier g(x) returns the class the base classifier f most often
assigns to x + N(0, sigma^2 I). CERTIFY guesses the top class from n0 noisy copies,
counts it again on n fresh copies, and certifies radius sigma * PhiInv(pA_lower)
where pA_lower is a one-sided Clopper-Pearson bound; both are Monte Carlo
procedures that are wrong with probability at most alpha.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.stats import norm
from torch import nn

from rsbench.defenses.base import Certificate, Defense, check_input
from rsbench.defenses.smoothed_view import SmoothedView, count_votes_many
from rsbench.errors import RsbenchError
from rsbench.specs import DefenseSpec
from rsbench.stats import binomial_p_value, lower_confidence_bound


def check_sampling(n: int, alpha: float, name: str = "n") -> None:
    """Refuse sample counts and confidence levels for which the tests are meaningless."""
    if not isinstance(n, int) or n < 1:
        raise RsbenchError(f"{name} must be a positive integer, got {n!r}")
    if not 0.0 < alpha < 1.0:
        raise RsbenchError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")


class Smoothing(Defense):
    """The smoothed version of any base classifier mapping [0, 1] pixels to logits.

    Noise is drawn `batch_size` copies at a time, so memory does not grow with n.
    """

    norm = "l2"

    def __init__(
        self,
        base_classifier: nn.Module,
        num_classes: int,
        sigma: float,
        *,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int = 1000,
    ) -> None:
        if sigma <= 0:
            raise RsbenchError(f"sigma must be positive, got {sigma!r}")
        check_sampling(n0, alpha, "n0")
        check_sampling(n, alpha)
        if batch_size < 1:
            raise RsbenchError(f"batch_size must be positive, got {batch_size!r}")
        self.base_classifier = base_classifier.eval()
        self.num_classes = num_classes
        self.sigma = sigma
        self.n0, self.n, self.alpha, self.batch_size = n0, n, alpha, batch_size

    @property
    def device(self) -> torch.device:
        parameter = next(self.base_classifier.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> Smoothing:
        self.base_classifier.to(device)
        return self

    def sample_counts(self, x: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """How often f picks each class on `num` noisy copies of x (a LongTensor of num_classes)."""
        return self.sample_counts_many(x.unsqueeze(0), num, [generator])[0]

    def sample_counts_many(self, xs: torch.Tensor, num: int,
                           generators: Sequence[torch.Generator | None]) -> torch.Tensor:
        """`sample_counts` of k inputs (k, C, H, W), each on its own generator, in shared batches: (k, num_classes)."""
        return count_votes_many(self.base_classifier, xs.to(self.device), self.sigma, self.num_classes, num,
                                self.batch_size, generators)

    def predict(
        self,
        x: torch.Tensor,
        *,
        n: int | None = None,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> int | None:
        """PREDICT: the top class if a two-sided binomial test separates it from the runner-up at level alpha."""
        n = self.n if n is None else n
        alpha = self.alpha if alpha is None else alpha
        check_sampling(n, alpha)
        check_input(x)
        counts = self.sample_counts(x, n, generator)
        top2 = counts.topk(2)
        n_a, n_b = int(top2.values[0]), int(top2.values[1])
        if binomial_p_value(n_a, n_a + n_b) > alpha:
            return None
        return int(top2.indices[0])

    def certify(
        self,
        x: torch.Tensor,
        *,
        n0: int | None = None,
        n: int | None = None,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Certificate:
        """CERTIFY: select with n0 samples, estimate with n fresh ones, radius sigma * PhiInv(pA_lower)."""
        return self.certify_many([x], [generator], n0=n0, n=n, alpha=alpha)[0]

    def certify_many(
        self,
        xs: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator | None],
        *,
        n0: int | None = None,
        n: int | None = None,
        alpha: float | None = None,
    ) -> list[Certificate]:
        """CERTIFY of several inputs in shared batches; input i draws all its noise from `generators[i]`, in the
        order `certify` would, so each certificate equals the one `certify` gives alone."""
        n0 = self.n0 if n0 is None else n0
        n = self.n if n is None else n
        alpha = self.alpha if alpha is None else alpha
        check_sampling(n0, alpha, "n0")
        check_sampling(n, alpha)
        for x in xs:
            check_input(x)
        batch = torch.stack([x.to(self.device) for x in xs])
        guesses = self.sample_counts_many(batch, n0, generators).argmax(dim=1)
        counts = self.sample_counts_many(batch, n, generators).gather(1, guesses.unsqueeze(1)).squeeze(1)
        return [self._certificate(int(guess), int(count), n, alpha) for guess, count in zip(guesses, counts)]

    def _certificate(self, guess: int, count: int, n: int, alpha: float) -> Certificate:
        """The certificate of `guess` counted `count` times out of n: radius sigma * PhiInv(pA_lower), or abstain."""
        p_lower = lower_confidence_bound(count, n, alpha)
        if p_lower <= 0.5:
            return Certificate(prediction=None, radius=0.0, p_lower=p_lower)
        return Certificate(prediction=guess, radius=float(self.sigma * norm.ppf(p_lower)), p_lower=p_lower)

    def surrogate(self, **options: object) -> SmoothedView:
        """The differentiable view attacks optimise (Gumbel-softmax votes, Goodman bounds, radius).

        `options` are SmoothedView's keywords: num_noise, alpha, temperature, chunk_size
        (which defaults to this defense's batch_size).
        """
        options = {"chunk_size": self.batch_size, **options}
        return SmoothedView(self.base_classifier, self.num_classes, self.sigma, **options)  # type: ignore[arg-type]


def from_spec(spec: DefenseSpec, model: nn.Module) -> Smoothing:
    """Build the smoothing defense a registry spec describes around its loaded base model."""
    c = spec.certify
    return Smoothing(model, spec.num_classes, spec.sigma, n0=c.n0, n=c.n, alpha=c.alpha, batch_size=c.batch_size)
