"""Rate (Poisson) encoding of images for Brian2 networks.

As defined in this project (docs/techniques.md), a pixel of intensity ``p`` in
``[0, 1]`` becomes a Poisson spike train of rate ``p * f_max`` (``f_max = 63.75 Hz`` for STDP,
Diehl & Cook's value: pixel/4 Hz for 8-bit pixels). Many images are presented in one long
Brian2 run: a :class:`brian2.TimedArray` holds one row of rates per image (its ``dt`` is the
presentation period ``t_on + t_off``) and a gate expression silences the input during the
``t_off`` rest of each period::

    stimulus = TimedArray(flatten_images(images) * 63.75 * Hz, dt=500 * ms)
    inputs = PoissonGroup(784, rates="stimulus(t, i) * " + gate_expression(350*ms, 500*ms, dt))
"""
from __future__ import annotations

import numpy as np
from brainsnn.errors import EncodingError  # noqa: F401
from brainsnn.validation import validate_images

__all__ = ["EncodingError", "check_images", "flatten_images", "gate_expression", "steps_per"]




def check_images(images, shape=None, name="images") -> np.ndarray:
    """Validate a batch of images with pixel intensities in ``[0, 1]``; return float64.

    Parameters
    ----------
    images : array_like, shape (n, *shape)
        A batch of images (a single image must be given as a batch of one).
    shape : tuple of int, optional
        Expected shape of one image, e.g. ``(28, 28)``; ``(784,)`` also accepts
        ``(28, 28)`` images (anything with the same number of pixels is flattened later).
    """
    arr = validate_images(images, name=name, error=EncodingError)
    if shape is not None:
        shape = tuple(shape)
        if tuple(arr.shape[1:]) != shape and int(np.prod(arr.shape[1:])) != int(np.prod(shape)):
            raise EncodingError(f"{name} have shape {arr.shape[1:]} per image but "
                                f"{shape} (or {int(np.prod(shape))} pixels) is expected")
    return arr.astype(np.float64, copy=False)


def flatten_images(images, shape=None) -> np.ndarray:
    """Validated images as a float64 array shaped (n, pixels)."""
    arr = check_images(images, shape)
    return arr.reshape(arr.shape[0], -1)


def steps_per(duration, dt) -> int:
    """Number of time steps of length ``dt`` in ``duration``; it must be a whole number."""
    n = float(duration) / float(dt)
    if abs(n - round(n)) > 1e-6 or round(n) <= 0:
        raise EncodingError(f"duration {duration} is not a positive whole number of "
                            f"time steps of {dt}")
    return int(round(n))


def gate_expression(t_on, period, dt) -> str:
    """Brian2 expression that is 1 during the first ``t_on`` of each ``period``, else 0.

    Exact integer arithmetic on ``t_in_timesteps`` (no floating-point boundary effects).
    """
    on, per = steps_per(t_on, dt), steps_per(period, dt)
    if on > per:
        raise EncodingError(f"t_on ({t_on}) is longer than the period ({period})")
    return f"int((t_in_timesteps % {per}) < {on})"
