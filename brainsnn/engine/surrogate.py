"""Surrogate derivatives of the spike (Heaviside step) for approximate gradient descent.

The forward pass of a spike is the exact step ``s = H(x)`` with ``x`` the signed distance to
the threshold (``x = v - theta`` for ``v >= theta``): ``s = 1`` where ``x >= 0`` (or ``x > 0``
for a strict ``>`` condition), else 0. The backward pass replaces ``dH/dx`` (a Dirac delta)
by a surrogate ``g(x; alpha)``, as defined in this project (docs/techniques.md):

===============  =================================================  ============================
name             ``g(x; alpha)``                                     note
===============  =================================================  ============================
``triangle``     ``max(0, alpha - alpha**2 |x|)``                    default (Bellec et al. 2018)
``fast_sigmoid`` ``1 / (1 + alpha |x|)**2``                            SuperSpike (Zenke & Ganguli)
``sigmoid``      ``alpha sigma(alpha x) (1 - sigma(alpha x))``       derivative of sigma(alpha x)
``arctan``       ``alpha / (2 (1 + (pi alpha x / 2)**2))``           Fang et al. 2021
``rectangle``    ``alpha * (|x| < 1 / (2 alpha))``                   boxcar of area 1
``gaussian``     ``alpha / sqrt(2 pi) * exp(-(alpha x)**2 / 2)``     area 1
===============  =================================================  ============================

``fast_sigmoid`` has its peak 1 at ``x = 0`` (SuperSpike); all the others have an area of 1
under ``g`` (``triangle``: height alpha, half-width 1/alpha).
``x`` carries the units of the threshold comparison in SI (dimensionless for the package's IF
and LIF models, volt for voltage-based models: choose ``alpha`` accordingly, in 1/volt).
"""
from __future__ import annotations

import math

import torch

__all__ = ["SURROGATES", "surrogate_derivative", "spike", "SpikeFunction", "check_surrogate"]


def _triangle(x, alpha):
    return torch.clamp(alpha - alpha * alpha * x.abs(), min=0.0)


def _fast_sigmoid(x, alpha):
    return 1.0 / (1.0 + alpha * x.abs()) ** 2


def _sigmoid(x, alpha):
    sig = torch.sigmoid(alpha * x)
    return alpha * sig * (1.0 - sig)


def _arctan(x, alpha):
    return alpha / (2.0 * (1.0 + (math.pi / 2.0 * alpha * x) ** 2))


def _rectangle(x, alpha):
    return alpha * (x.abs() < 0.5 / alpha).to(x.dtype)


def _gaussian(x, alpha):
    return alpha / math.sqrt(2.0 * math.pi) * torch.exp(-0.5 * (alpha * x) ** 2)


#: Surrogate derivative functions ``g(x, alpha)`` by name.
SURROGATES = {
    "triangle": _triangle,
    "fast_sigmoid": _fast_sigmoid,
    "sigmoid": _sigmoid,
    "arctan": _arctan,
    "rectangle": _rectangle,
    "gaussian": _gaussian,
}


def check_surrogate(name: str) -> str:
    """Return ``name`` if it is a known surrogate, else raise ``ValueError`` listing them."""
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; expected one of "
                         f"{', '.join(sorted(SURROGATES))}")
    return name


def surrogate_derivative(x: torch.Tensor, name: str = "triangle", alpha: float = 1.0):
    """The surrogate ``g(x; alpha)`` that replaces dH/dx in the backward pass."""
    return SURROGATES[check_surrogate(name)](x, alpha)


class SpikeFunction(torch.autograd.Function):
    """``H(x)`` forward, ``g(x; alpha)`` backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, alpha, name, strict):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        ctx.name = name
        out = (x > 0) if strict else (x >= 0)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * SURROGATES[ctx.name](x, ctx.alpha), None, None, None


def spike(x: torch.Tensor, name: str = "triangle", alpha: float = 1.0,
          strict: bool = False) -> torch.Tensor:
    """Spikes (float 0/1 of the dtype of ``x``) with a surrogate derivative.

    Parameters
    ----------
    x : Tensor
        Signed distance to the threshold (positive above it), in SI units of the comparison.
    name : str
        Surrogate name (key of :data:`SURROGATES`).
    alpha : float
        Surrogate sharpness, in 1/(units of x).
    strict : bool
        True for a strict condition (``v > theta``: no spike at ``x == 0``).
    """
    if not (x.requires_grad and torch.is_grad_enabled()):     # no graph: the step alone
        return ((x > 0) if strict else (x >= 0)).to(x.dtype)
    return SpikeFunction.apply(x, float(alpha), check_surrogate(name), bool(strict))
