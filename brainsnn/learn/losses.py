"""Classifier losses on output logits: softmax cross-entropy and stochmax.

Stochmax (stochastic softmax), as defined in this project (docs/techniques.md): at training
time only, the logits z are perturbed before the softmax cross-entropy,

    p = softmax((z + sigma * g) / tau),   g ~ Gumbel(0, 1) i.i.d.      (form='gumbel', default)

or, in the "noisy target" form, only the true class's logit is pushed down,

    z_y <- z_y - alpha * |z_y| * |xi|,    xi ~ N(0, 1)                 (form='noisy_target').

In evaluation mode (``module.eval()``) no noise is drawn: the loss is the plain softmax
cross-entropy of z and predictions are argmax z. With sigma = 0 and tau = 1 the Gumbel form
equals softmax cross-entropy exactly.

Logits are ``(batch, n_classes)`` tensors (dimensionless: accumulated membrane potential / T
or spike rates); targets are int64 class indices ``(batch,)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from brainsnn.errors import LossError  # noqa: F401

__all__ = ["LossError", "SoftmaxCrossEntropy", "StochMax", "make_loss", "gumbel_noise", "LOSSES"]

LOSSES = ("softmax", "stochmax")




def _check(z, y):
    if z.dim() != 2:
        raise LossError(f"logits must be (batch, n_classes), got shape {tuple(z.shape)}")
    if y.dim() != 1 or y.shape[0] != z.shape[0]:
        raise LossError(f"targets must be (batch,) class indices matching logits {tuple(z.shape)}, "
                        f"got shape {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.long):
        raise LossError(f"targets must be integer class indices, got dtype {y.dtype}")


def gumbel_noise(shape, generator=None, device=None, dtype=torch.float32, eps=1e-10):
    """Gumbel(0, 1) samples g = -log(-log(u)), u ~ U(0, 1)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return -torch.log(-torch.log(u.clamp(eps, 1 - eps)))


class SoftmaxCrossEntropy(nn.Module):
    """Softmax cross-entropy (mean over the batch).

    ``label_smoothing`` (epsilon, in [0, 1)): the target puts 1 - epsilon on the true class
    and epsilon spread evenly over all n classes, so that
    loss = (1 - epsilon) * CE(z, y) + epsilon * mean_k(-log p_k). Zero (default) is the plain
    loss.
    """

    name = "softmax"

    def __init__(self, label_smoothing=0.0):
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise LossError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, z, y):
        _check(z, y)
        return F.cross_entropy(z, y, label_smoothing=self.label_smoothing)

    def config(self):
        return {"loss": self.name, "label_smoothing": self.label_smoothing}


class StochMax(nn.Module):
    """Stochastic softmax loss, as defined in this project (see module docstring).

    Parameters
    ----------
    sigma : float
        Scale of the Gumbel noise added to the logits (form 'gumbel'); >= 0.
    tau : float
        Softmax temperature (> 0).
    form : {'gumbel', 'noisy_target'}
    alpha : float
        Strength of the noisy-target perturbation (form 'noisy_target'); >= 0.
    generator : torch.Generator, optional
        Source of the noise (default: torch's global generator, seeded by the caller).
    """

    name = "stochmax"

    def __init__(self, sigma=1.0, tau=1.0, form="gumbel", alpha=0.5, generator=None):
        super().__init__()
        if form not in ("gumbel", "noisy_target"):
            raise LossError(f"stochmax form {form!r} unknown; expected 'gumbel' or 'noisy_target'")
        if sigma < 0 or alpha < 0:
            raise LossError(f"stochmax needs sigma >= 0 and alpha >= 0, got sigma={sigma}, "
                            f"alpha={alpha}")
        if not tau > 0:
            raise LossError(f"stochmax temperature tau must be > 0, got {tau}")
        self.sigma, self.tau, self.form, self.alpha = float(sigma), float(tau), form, float(alpha)
        self.generator = generator

    def perturb(self, z, y):
        """The perturbed logits used by the training loss (z itself in eval mode)."""
        if not self.training:
            return z
        if self.form == "gumbel":
            if self.sigma == 0:
                return z / self.tau
            g = gumbel_noise(z.shape, self.generator, z.device, z.dtype)
            return (z + self.sigma * g) / self.tau
        xi = torch.randn(z.shape[0], generator=self.generator, device=z.device, dtype=z.dtype)
        zy = z.gather(1, y[:, None]).squeeze(1)
        new = zy - self.alpha * zy.abs() * xi.abs()
        return z.scatter(1, y[:, None], new[:, None]) / self.tau

    def forward(self, z, y):
        _check(z, y)
        return F.cross_entropy(self.perturb(z, y), y)

    def config(self):
        return {"loss": self.name, "sigma": self.sigma, "tau": self.tau, "form": self.form,
                "alpha": self.alpha}


def make_loss(name="softmax", **kwargs):
    """``'softmax'`` -> :class:`SoftmaxCrossEntropy`; ``'stochmax'`` -> :class:`StochMax` (kwargs)."""
    if isinstance(name, nn.Module):
        return name
    if name == "softmax":
        unknown = sorted(set(kwargs) - {"label_smoothing"})
        if unknown:
            raise LossError(f"softmax loss takes only label_smoothing, got {unknown}")
        return SoftmaxCrossEntropy(**kwargs)
    if name == "stochmax":
        return StochMax(**kwargs)
    raise LossError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
