"""Checks of what users hand to brainsnn: time steps, counts, images, labels, weights.

Every public entry point validates its input with these functions, so that a bad value gets
the same clear message everywhere (what was wrong, what is expected). Each takes ``error``,
the :class:`~brainsnn.errors.BrainsnnError` subclass of the calling area.
"""
from __future__ import annotations

import numpy as np

from brainsnn.errors import BrainsnnError

__all__ = ["check_T", "positive_int", "validate_images", "check_labels", "check_finite"]


def _is_integral(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        return int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


def positive_int(value, name: str, error=BrainsnnError, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (default 1); ``error`` names ``name`` otherwise."""
    if not _is_integral(value) or int(value) < minimum:
        raise error(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_T(T, name: str = "T", error=BrainsnnError) -> int:
    """A number of time steps: an int >= 1."""
    if not _is_integral(T) or int(T) < 1:
        raise error(f"{name} (number of time steps) must be an integer >= 1, got {T!r}")
    return int(T)


def _as_array(x, name, error):
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, on any device
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001  (ragged lists and the like)
        raise error(f"{name} must be an array of numbers, got {type(x).__name__} that numpy "
                    f"cannot convert ({exc})") from exc


def _first_nonfinite(arr, name, expected, error):
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise error(f"{name} holds {int(bad.sum())} NaN or infinite values (first at index "
                    f"{idx}: {arr[idx]}); expected {expected}")


def validate_images(x, shape=None, name: str = "images", error=BrainsnnError) -> np.ndarray:
    """Check a batch of images and return it as a numpy array (no copy when possible).

    Parameters
    ----------
    x : array-like (numpy array, torch tensor on any device, nested lists)
        A batch of images, shape ``(n, *shape)``, values in [0, 1] (intensities, e.g. Poisson
        rates as a fraction of f_max).
    shape : tuple of int, optional
        Expected shape of one image, e.g. ``(28, 28)``, ``(784,)`` or ``(3, 32, 32)``; ``None``
        entries match any size. ``None`` (default): any shape with at least one image axis.
    name : str
        How the message calls ``x``.
    error : BrainsnnError subclass raised on bad input.

    Raises ``error`` for: not numeric; no images; a shape other than ``(n, *shape)``; NaN or
    infinite values; values outside [0, 1]. The message says what was found and what is
    expected.
    """
    arr = _as_array(x, name, error)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise error(f"{name} must hold real numbers in [0, 1], got dtype {arr.dtype}")
    if shape is not None:
        shape = tuple(shape)
        expected = "(n, " + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        if (arr.ndim != len(shape) + 1
                or any(s is not None and a != s for a, s in zip(arr.shape[1:], shape))):
            raise error(f"{name} has shape {arr.shape}, expected {expected} (a batch of n "
                        "images); for a single image add a batch axis, e.g. x[None]")
    elif arr.ndim < 2:
        raise error(f"{name} has shape {arr.shape}, expected a batch (n, ...) of images with "
                    "at least one image axis; for a single image use x[None]")
    if arr.shape[0] == 0:
        raise error(f"{name} holds no images (shape {arr.shape}); expected n >= 1")
    if np.issubdtype(arr.dtype, np.floating):
        _first_nonfinite(arr, name, "finite values in [0, 1]", error)
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > 1:
        hint = " (grey levels 0..255? divide by 255)" if hi > 1 and hi <= 255 else ""
        raise error(f"{name} has values in [{lo}, {hi}], expected values in [0, 1]{hint}")
    return arr


def check_labels(y, n=None, n_classes=None, name: str = "labels",
                 error=BrainsnnError) -> np.ndarray:
    """Class labels as an int64 array ``(n,)`` with values in ``range(n_classes)``.

    ``n``: the number of images the labels belong to (None: any); ``n_classes``: the number
    of classes (None: any label >= 0). Float labels are accepted when they are whole numbers.
    """
    arr = _as_array(y, name, error)
    if arr.ndim != 1 or (n is not None and len(arr) != n):
        expected = f"({n},) for {n} images" if n is not None else "(n,)"
        raise error(f"{name} must be a 1-D array of class indices shaped {expected}, got "
                    f"shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise error(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        _first_nonfinite(arr, name, "integer class indices", error)
        if not np.all(np.mod(arr, 1) == 0):
            raise error(f"{name} must hold integer class indices, got fractional values")
    arr = arr.astype(np.int64, copy=False)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        top = n_classes - 1 if n_classes is not None else None
        if lo < 0 or (top is not None and hi > top):
            span = f"0..{top}" if top is not None else ">= 0"
            raise error(f"{name} hold values in [{lo}, {hi}], expected class indices {span}"
                        + (f" ({n_classes} classes)" if n_classes is not None else ""))
    return arr


def check_finite(x, name: str, shape=None, error=BrainsnnError) -> np.ndarray:
    """``x`` as a float64 array of finite numbers (e.g. weights), of ``shape`` when given."""
    arr = _as_array(x, name, error)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise error(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if shape is not None and arr.shape != tuple(shape):
        raise error(f"{name} has shape {arr.shape}, expected {tuple(shape)}")
    _first_nonfinite(arr, name, "finite numbers", error)
    return arr
