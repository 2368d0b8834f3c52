"""A differentiable view of a smoothed classifier (Algorithm 2 of the certification-aware attack).

The smoothed classifier counts argmax votes of the base classifier under Gaussian
noise, which has no gradient. The view replaces each vote by a Gumbel-softmax sample
over the base logits, averages N of them into class frequencies, puts Goodman
simultaneous confidence intervals around them and turns the two largest into the
certified radius R = sigma/2 * (PhiInv(lower of top) - PhiInv(upper of runner-up)).
Every step is written in torch, so an attack can differentiate any of these numbers
with respect to the input.

Memory does not grow with N: the frequencies are an autograd function that runs the
noise through the model `chunk_size` copies at a time without keeping graphs, and in
the backward pass draws the very same noise again and back-propagates chunk by chunk.
This recomputation gives exactly the gradient of the unchunked computation at the
cost of one extra forward pass for every chunk but the last, whose graph is kept.

Several independent draws of N copies (Expectation over Transformation) can be taken in
one pass: `draws` sets of N copies run as one stream of draws * N copies, so on a GPU
twenty draws cost about what one does.

Several inputs can share those passes too (`grad_many`, for attacks that run samples in
lockstep): each input keeps its own noise streams, drawn in the chunks it would use alone, and
the same chunk of every input runs in one forward pass, so each input's frequencies and gradient
are those of `grad` at that input while the device sees k times larger batches.

Noise comes from two generators seeded from the caller's: one for the Gaussian
perturbations, one for the Gumbel variables. Each stream is therefore drawn in one
sequence whatever the chunk size, so on the CPU the chunk size does not change the
noise (torch draws a tensor's values in order for these shapes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from functools import lru_cache

import torch
from scipy.stats import chi2
from torch import nn

from rsbench.defenses.base import check_logits, nonfinite_rows, refuse_nonfinite
from rsbench.errors import RsbenchError

GUMBEL_TEMPERATURE = 1.0
"""Default Gumbel-softmax temperature: torch's default; soft votes stay close to one-hot for
confident logits while a single noisy copy near a decision boundary still passes a gradient."""


def count_votes(
    base_classifier: nn.Module, x: torch.Tensor, sigma: float, num_classes: int, num: int, batch_size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """How often the base classifier picks each class on `num` copies of x + N(0, sigma^2 I), `batch_size` at a time.

    The smoothed classifier's hard votes, shared by CERTIFY and the view so both count alike.
    """
    return count_votes_many(base_classifier, x.unsqueeze(0), sigma, num_classes, num, batch_size, [generator])[0]


@torch.inference_mode()
def count_votes_many(
    base_classifier: nn.Module, xs: torch.Tensor, sigma: float, num_classes: int, num: int, batch_size: int,
    generators: Sequence[torch.Generator | None],
) -> torch.Tensor:
    """`count_votes` for k inputs `xs` (k, C, H, W) at once, as a (k, num_classes) LongTensor on the CPU.

    Input i's noise comes from `generators[i]` in chunks of `batch_size`, exactly as `count_votes`
    draws it alone, so its counts do not depend on the other inputs; the k chunks go through the
    model as one batch of k * batch_size copies, which keeps a device busy when the model is
    small. Votes are counted on the device without reading anything back inside the loop: every pass's
    logits are checked for their shape there (`check_logits`), which a vote for a class beyond
    num_classes would otherwise add to the next input's counts, and for NaN once the loop is done.
    """
    k, shape = xs.shape[0], xs.shape[1:]
    counts = torch.zeros(k * num_classes, dtype=torch.long, device=xs.device)
    nonfinite, copies = torch.zeros((), dtype=torch.long, device=xs.device), 0
    noisy = torch.empty((k, min(batch_size, num), *shape), device=xs.device, dtype=xs.dtype)
    remaining = num
    while remaining > 0:
        size = min(batch_size, remaining)
        batch = noisy[:, :size]
        for i, generator in enumerate(generators):
            torch.randn((size, *shape), generator=generator, out=batch[i])
        batch.mul_(sigma).add_(xs.unsqueeze(1))  # x + sigma * noise, in place: no allocation per pass
        logits = check_logits(base_classifier(batch.flatten(0, 1)), k * size, num_classes, finite=False)
        nonfinite += nonfinite_rows(logits)
        copies += k * size
        labels = logits.argmax(dim=1)
        owner = torch.arange(k, device=xs.device).repeat_interleave(size) * num_classes
        counts.index_add_(0, owner + labels, torch.ones_like(labels))
        remaining -= size
    refuse_nonfinite(int(nonfinite), copies, "your model returned", "logits")
    return counts.view(k, num_classes).cpu()


@lru_cache(maxsize=64)
def _goodman_quantile(alpha: float, num_classes: int) -> float:
    """The chi-square(1) quantile at 1 - alpha / k; cached, since judges and views ask for it at every step."""
    return float(chi2.ppf(1 - alpha / num_classes, 1))


def goodman_bounds(freq: torch.Tensor, num: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Goodman (1965) simultaneous (1 - alpha) intervals for multinomial proportions `freq` of `num` draws.

    The same formula as statsmodels' `multinomial_proportions_confint(method="goodman")`, in torch
    so that gradients flow from the bounds to the frequencies.
    """
    quantile = _goodman_quantile(alpha, freq.shape[-1])
    centre = 2 * num * freq + quantile
    spread = torch.sqrt(quantile**2 + 4 * num * freq * (1 - freq) * quantile)
    return (centre - spread) / (2 * (quantile + num)), (centre + spread) / (2 * (quantile + num))


@dataclass(frozen=True)
class ViewOutput:
    """The view at one input: frequencies, their bounds and the certified radius (all differentiable)."""

    freq: torch.Tensor
    """Averaged Gumbel-softmax votes per class, shape (num_classes,)."""
    lower: torch.Tensor
    """Goodman lower bound of every class."""
    upper: torch.Tensor
    """Goodman upper bound of every class."""
    top: int
    """Class with the largest frequency."""
    runner_up: int
    """Class with the second largest frequency."""
    e0_lower: torch.Tensor
    """Lower bound of the top class (a scalar)."""
    e1_upper: torch.Tensor
    """Upper bound of the runner-up (a scalar)."""
    radius: torch.Tensor
    """sigma/2 * (PhiInv(e0_lower) - PhiInv(e1_upper)); negative when the two intervals overlap."""

    def detach(self) -> ViewOutput:
        """The same numbers cut from the autograd graph."""
        return replace(
            self,
            **{f.name: getattr(self, f.name).detach() for f in fields(self) if f.type == "torch.Tensor"},
        )


LossFn = Callable[[ViewOutput, torch.Tensor], torch.Tensor]
"""What `SmoothedView.grad` differentiates: a scalar from the view's output and the input (as a leaf)."""


def _seed_pair(generator: torch.Generator) -> tuple[int, int]:
    """Seeds of one input's Gaussian and Gumbel streams, drawn from the caller's generator."""
    seeds = torch.randint(0, 2**62, (2,), generator=generator, device=generator.device).tolist()
    return int(seeds[0]), int(seeds[1])


class _AveragedSoftVotes(torch.autograd.Function):
    """Mean Gumbel-softmax vote of each draw of N copies of each input, with a backward pass that recomputes
    chunk by chunk.

    Input i's copies are numbered 0 .. draws * N - 1 in its own noise stream; copy c belongs to
    row i * draws + c // N of the output. Every forward pass runs the same chunk of every input's
    stream side by side, so each input sees the noise it would see alone. The last chunk's graph is
    kept from the forward pass (so draws * N <= chunk_size costs no recomputation, and a partial chunk
    comes first, so that the copies computed twice are as few as the chunk size allows); the others are
    drawn again and recomputed one at a time. At most two chunks' activations are alive at once,
    whatever N and the number of draws.
    """

    @staticmethod
    def forward(ctx, xs: torch.Tensor, view: SmoothedView, seeds: tuple[tuple[int, int], ...], draws: int) -> torch.Tensor:  # type: ignore[override]
        chunks = view.chunk_sizes(draws)
        total = torch.zeros(len(seeds) * draws, view.num_classes, dtype=xs.dtype, device=xs.device)
        ctx.leaf = ctx.votes = ctx.owner = None
        for k, (owner, noise, gumbel) in enumerate(view.joint_noise(xs, seeds, draws)):
            if k == len(chunks) - 1 and ctx.needs_input_grad[0]:
                with torch.enable_grad():
                    ctx.leaf = xs.detach().requires_grad_(True)
                    ctx.votes, ctx.owner = view.soft_votes(ctx.leaf, noise, gumbel), owner
                total.index_add_(0, owner, ctx.votes.detach())
            else:
                with torch.no_grad():
                    total.index_add_(0, owner, view.soft_votes(xs, noise, gumbel))
        ctx.save_for_backward(xs)
        ctx.view, ctx.seeds, ctx.draws, ctx.chunks = view, seeds, draws, len(chunks)
        return total / view.num_noise

    @staticmethod
    def backward(ctx, grad_freq: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        (xs,) = ctx.saved_tensors
        view: SmoothedView = ctx.view
        weight = grad_freq / view.num_noise  # d loss / d vote of one copy, per input, draw and class
        (grad_xs,) = torch.autograd.grad(ctx.votes, ctx.leaf, weight[ctx.owner])
        ctx.leaf = ctx.votes = ctx.owner = None
        for _, (owner, noise, gumbel) in zip(range(ctx.chunks - 1), view.joint_noise(xs, ctx.seeds, ctx.draws)):
            with torch.enable_grad():
                leaf = xs.detach().requires_grad_(True)
                grad_xs += torch.autograd.grad(view.soft_votes(leaf, noise, gumbel), leaf, weight[owner])[0]
        return grad_xs, None, None, None


class SmoothedView:
    """Differentiable frequencies, Goodman bounds and certified radius of a smoothed classifier.

    Attacks get every gradient through `grad`, so chunking is handled in one place.
    `num_noise` and `alpha` are the attack's N and alpha (paper defaults 1500 and 0.005).
    """

    def __init__(
        self,
        base_classifier: nn.Module,
        num_classes: int,
        sigma: float,
        *,
        num_noise: int = 1500,
        alpha: float = 0.005,
        temperature: float = GUMBEL_TEMPERATURE,
        chunk_size: int = 250,
    ) -> None:
        if temperature <= 0:
            raise RsbenchError(f"temperature must be positive, got {temperature!r}")
        if chunk_size < 1:
            raise RsbenchError(f"chunk_size must be positive, got {chunk_size!r}")
        self.base_classifier = base_classifier.eval()
        self.num_classes, self.sigma = num_classes, sigma
        self.num_noise, self.alpha = num_noise, alpha
        self.temperature, self.chunk_size = temperature, chunk_size

    @property
    def device(self) -> torch.device:
        """Device the base classifier runs on."""
        parameter = next(self.base_classifier.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def noise(
        self, x: torch.Tensor, seeds: tuple[int, int], draws: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Chunk by chunk, fixed by `seeds`: each copy's draw, its Gaussian perturbation (scaled by sigma)
        and its Gumbel variables, for `draws` * N copies in one stream."""
        gaussian = torch.Generator(device=x.device).manual_seed(seeds[0])
        uniform = torch.Generator(device=x.device).manual_seed(seeds[1])
        start = 0
        for size in self.chunk_sizes(draws):
            owner = torch.arange(start, start + size, device=x.device) // self.num_noise
            noise = torch.randn((size, *x.shape), generator=gaussian, device=x.device, dtype=x.dtype)
            u = torch.rand((size, self.num_classes), generator=uniform, device=x.device, dtype=x.dtype)
            gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(x.dtype).tiny)))
            yield owner, self.sigma * noise, gumbel
            start += size

    def joint_noise(
        self, xs: torch.Tensor, seeds: Sequence[tuple[int, int]], draws: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """`noise` of every input xs[i] (seeded by seeds[i]), one chunk of each at a time, concatenated:
        input i's rows come i-th and its copies' draws are numbered from i * draws."""
        streams = [self.noise(x, pair, draws) for x, pair in zip(xs, seeds, strict=True)]
        for parts in zip(*streams):
            owners, noises, gumbels = zip(*parts)
            yield torch.cat([owner + i * draws for i, owner in enumerate(owners)]), torch.cat(noises), torch.cat(gumbels)

    def chunk_sizes(self, draws: int = 1) -> list[int]:
        """Noisy copies per forward pass for `draws` * N copies: the remainder, then full chunks. The last one's graph
        is kept from the forward pass and the others are computed again in the backward pass, so the remainder
        goes first (N = 1500 in chunks of 1000 recomputes 500 copies, not 1000)."""
        full, rest = divmod(draws * self.num_noise, self.chunk_size)
        return ([rest] if rest else []) + [self.chunk_size] * full

    def soft_votes(self, xs: torch.Tensor, noise: torch.Tensor, gumbel: torch.Tensor) -> torch.Tensor:
        """Gumbel-softmax of the base logits on xs[i] + noise: one soft one-hot vote per noisy copy.

        xs holds k inputs; the rows of `noise` and `gumbel` are k equal groups, the i-th for xs[i].
        """
        inputs = (xs.unsqueeze(1) + noise.unflatten(0, (len(xs), -1))).flatten(0, 1)
        log_probs = torch.log_softmax(self.base_classifier(inputs), dim=1)
        return torch.softmax((log_probs + gumbel) / self.temperature, dim=1)

    def frequencies(self, x: torch.Tensor, generator: torch.Generator, draws: int = 1) -> torch.Tensor:
        """Mean soft vote of `draws` independent sets of `num_noise` noisy copies of x, shape (draws, num_classes).

        Differentiable; memory depends on the chunk size only.
        """
        return self.joint_frequencies(x.unsqueeze(0), [generator], draws)[0]

    def joint_frequencies(self, xs: torch.Tensor, generators: Sequence[torch.Generator], draws: int = 1) -> torch.Tensor:
        """`frequencies` of every input xs[i] with its own generator, in shared forward passes of k chunks;
        shape (k, draws, num_classes). Each input's noise, and so its frequencies, are those it gets alone."""
        if draws < 1:
            raise RsbenchError(f"draws must be positive, got {draws!r}")
        seeds = tuple(_seed_pair(generator) for generator in generators)
        freq = _AveragedSoftVotes.apply(xs.to(self.device), self, seeds, draws)
        return freq.unflatten(0, (len(seeds), draws))

    def output(self, freq: torch.Tensor) -> ViewOutput:
        """Algorithm 2 from one draw's frequencies: Goodman bounds, top two classes and the certified radius."""
        lower, upper = goodman_bounds(freq, self.num_noise, self.alpha)
        top, runner_up = (int(i) for i in freq.detach().topk(2).indices)
        e0_lower, e1_upper = lower[top], upper[runner_up]
        radius = self.sigma / 2 * (torch.special.ndtri(e0_lower) - torch.special.ndtri(e1_upper))
        return ViewOutput(freq, lower, upper, top, runner_up, e0_lower, e1_upper, radius)

    def bounds(self, x: torch.Tensor, generator: torch.Generator) -> ViewOutput:
        """Algorithm 2 at x on one draw of N noisy copies."""
        return self.output(self.frequencies(x, generator)[0])

    def grad(self, x: torch.Tensor, loss_fn: LossFn, generator: torch.Generator, *,
             draws: int = 1) -> tuple[float, ViewOutput, torch.Tensor]:
        """Value of `loss_fn(view_output, x)` at x, the view output, and the loss's gradient with respect to x.

        `loss_fn` receives the input as a leaf tensor so that it may add terms of its own
        (a distance to the clean image, for instance). With `draws` > 1 the loss is averaged
        over that many independent draws of N copies (EOT), computed in one pass, and the
        output returned is the first draw's. The returned output is detached.
        """
        return self.grad_many([x], [loss_fn], [generator], draws=draws)[0]

    def grad_many(self, xs: Sequence[torch.Tensor], loss_fns: Sequence[LossFn], generators: Sequence[torch.Generator],
                  *, draws: int = 1) -> list[tuple[float, ViewOutput, torch.Tensor]]:
        """`grad` at every xs[i] with its loss_fns[i] and generators[i], sharing forward and backward passes.

        Each input draws its noise from its own generator in the chunks it would use alone, so on the
        CPU every result equals `grad` at that input (the model's rows do not mix); one forward pass
        runs k * chunk_size copies, so a caller sizes k to fit memory.
        """
        leaves = [x.detach().to(self.device).requires_grad_(True) for x in xs]
        freqs = self.joint_frequencies(torch.stack(leaves), generators, draws)
        outputs = [[self.output(freq) for freq in draw_freqs] for draw_freqs in freqs]
        losses = [sum(loss_fn(out, leaf) for out in outs) / draws for loss_fn, outs, leaf in
                  zip(loss_fns, outputs, leaves, strict=True)]
        grads = torch.autograd.grad(losses, leaves)
        return [(float(loss.detach()), outs[0].detach(), g) for loss, outs, g in zip(losses, outputs, grads)]

    @torch.no_grad()
    def hard_counts(self, x: torch.Tensor, generator: torch.Generator, num: int | None = None) -> torch.Tensor:
        """Argmax votes of the base classifier on `num` (default N) noisy copies of x, as a LongTensor."""
        num = self.num_noise if num is None else num
        return count_votes(self.base_classifier, x.detach().to(self.device), self.sigma, self.num_classes, num,
                           self.chunk_size, generator)

    def hard_radius(self, x: torch.Tensor, generator: torch.Generator) -> float:
        """Equation 3's radius at x from hard votes on N fresh copies and Goodman bounds at the view's alpha.

        The same formula as the view's radius, but counting argmax votes as certification does;
        negative when the two top intervals overlap.
        """
        return float(self.output(self.hard_counts(x, generator).double() / self.num_noise).radius)
