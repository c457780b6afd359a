"""Input encoders for the torch engine (batched, on any torch device).

As defined in this project (docs/techniques.md):

* direct coding: the analog image (intensities in [0, 1]) is the input current of the first
  layer at every step. A :class:`brainsnn.engine.network.Network` does this when its ``encoder`` is
  None (:class:`DirectEncoder` exists for symmetry and returns the repeated image);
* rate coding for AGD and conversion: at each of the T steps, pixel i spikes with
  probability p_i (a Bernoulli draw per step; the discrete form of a Poisson train with rate
  p_i / dt).

The Brian2-side encoders (PoissonGroup/TimedArray for STDP) live in :mod:`brainsnn.brian.encoding`.
"""
from __future__ import annotations

import torch

from brainsnn.errors import EncodingError

__all__ = ["EncodingError", "PoissonEncoder", "DirectEncoder", "make_encoder"]


def _check(x, T):
    if int(T) != T or T < 1:
        raise EncodingError(f"T (number of time steps) must be an integer >= 1, got {T!r}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise EncodingError(f"intensities must lie in [0, 1] (got min {float(x.min()):.3g}, "
                            f"max {float(x.max()):.3g}); scale images to [0, 1] first")


class PoissonEncoder:
    """Rate coding: ``(batch, ...)`` intensities -> ``(T, batch, ...)`` 0/1 spikes.

    Parameters
    ----------
    generator : torch.Generator, optional
        Source of randomness (default: torch's global generator, seeded by the caller).
    """

    name = "poisson"

    def __init__(self, generator=None):
        self.generator = generator

    def __call__(self, x, T):
        _check(x, T)
        u = torch.rand((int(T), *x.shape), generator=self.generator, device=x.device,
                       dtype=x.dtype)
        return (u < x.unsqueeze(0)).to(x.dtype)


class DirectEncoder:
    """Direct coding: the image repeated at every step, ``(T, batch, ...)`` (analog)."""

    name = "direct"

    def __call__(self, x, T):
        _check(x, T)
        return x.unsqueeze(0).expand(int(T), *x.shape)


def make_encoder(name):
    """``'direct'`` -> None (the network's static analog input), ``'poisson'`` -> PoissonEncoder."""
    if name in (None, "direct"):
        return None
    if name == "poisson":
        return PoissonEncoder()
    raise EncodingError(f"unknown encoder {name!r}; expected 'direct' or 'poisson'")
