"""Geometry shared by the gradient attacks: normalized steps and the projections they need, in l2 and linf.

Attacks against smoothed classifiers step along noisy Monte Carlo gradients whose scale
says little, so they move a fixed length along the gradient's direction: its l2 direction,
or its sign in linf (the steepest ascent direction of that norm). Budgeted attacks must
then return to the feasible set {y : ||y - x|| <= eps} ∩ [0, 1]^d. In linf both sets are
boxes, so clipping is the exact projection; in l2, `project_l2_ball_box` computes the exact
Euclidean projection rather than the cheaper "rescale then clip", which can land off the
nearest point.
"""

from __future__ import annotations

import torch

from rsbench.specs import Norm

TINY = 1e-12
"""Norms below this count as zero: a zero gradient gives a zero step, never NaN."""


def l2_normalize(v: torch.Tensor) -> torch.Tensor:
    """v / ||v||_2 over all its entries; zero when v is (numerically) zero."""
    norm = v.norm(p=2)
    return v / norm if float(norm) > TINY else torch.zeros_like(v)


def project_l2_ball_box(z: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The point of {y : ||y - x||_2 <= eps, 0 <= y <= 1} nearest to z, for x inside [0, 1].

    The Lagrangian of min ||y - z||^2 + mu (||y - x||^2 - eps^2) over the box splits by
    coordinate, so the projection is y(t) = clip(x + t (z - x), 0, 1) for the largest
    t in [0, 1] with ||y(t) - x|| <= eps (t = 1 / (1 + mu)). ||y(t) - x||^2 is
    piecewise quadratic in t, with breakpoints where coordinates hit the box; sorting
    them gives t in closed form.
    """
    if eps < 0:
        raise ValueError(f"expected eps >= 0, got {eps}")
    clipped = z.clamp(0.0, 1.0)
    if float((clipped - x).norm(p=2)) <= eps:
        return clipped
    d = (z - x).flatten().double()
    x64 = x.flatten().double()
    room = torch.where(d > 0, 1.0 - x64, -x64)  # signed distance to the face d points at
    breaks = torch.where(d != 0, room / d.where(d != 0, torch.ones_like(d)), torch.full_like(d, torch.inf))
    breaks, order = breaks.sort()
    saturated = torch.cat([d.new_zeros(1), room[order].square().cumsum(0)])  # sum of room^2 of earlier coords
    free = d[order].square().flip(0).cumsum(0).flip(0)  # sum of d^2 of this and later coords
    free = torch.cat([free, d.new_zeros(1)])
    # squared distance at each breakpoint (coordinate k just saturating): saturated[k] + t_k^2 free[k]
    at_breaks = saturated[:-1] + breaks.square() * free[:-1]
    k = int((at_breaks < eps**2).sum())  # breakpoints passed before reaching the sphere
    t = ((eps**2 - saturated[k]) / free[k]).clamp(min=0.0).sqrt()
    y = (x64 + t * d).clamp(0.0, 1.0)
    return y.to(z.dtype).view_as(z)


def project_linf_ball_box(z: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The point of {y : ||y - x||_inf <= eps, 0 <= y <= 1} nearest to z: both constraints are per-coordinate intervals."""
    if eps < 0:
        raise ValueError(f"expected eps >= 0, got {eps}")
    return torch.minimum(torch.maximum(z, x - eps), x + eps).clamp(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The unit step of steepest ascent in `norm`: the l2-normalized gradient, or its sign for linf."""
    return l2_normalize(grad) if norm == "l2" else grad.sign()


def project(z: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """The nearest point to z in the `norm` ball of radius eps around x, inside [0, 1]."""
    return project_l2_ball_box(z, x, eps) if norm == "l2" else project_linf_ball_box(z, x, eps)


def random_start(x: torch.Tensor, eps: float, norm: Norm, generator: torch.Generator) -> torch.Tensor:
    """A random point of the ball around x, inside [0, 1]: uniform in the linf cube, or a Gaussian
    direction at a uniform fraction of eps for l2 (not uniform in volume, which would hug the sphere)."""
    if norm == "l2":
        direction = l2_normalize(torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device))
        delta = eps * float(torch.rand((), generator=generator)) * direction
    else:
        delta = eps * (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) - 1)
    return (x + delta).clamp(0.0, 1.0)
