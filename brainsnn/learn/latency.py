"""Latency of a converted network: the first T within a tolerance of the ANN, energy per T.

Both work with any fitted converter that has ``run(X, Ts, record)`` and ``energy()``
(:class:`~brainsnn.learn.conversion.ANNToSNN`, :class:`~brainsnn.learn.qcfs.QCFSConverter`,
:class:`~brainsnn.learn.calibration.CalibratedConverter`).
"""
from __future__ import annotations

import numpy as np

from brainsnn.errors import ConversionError

__all__ = ["energy_vs_T", "first_T_within"]


def energy_vs_T(converter, X, Ts):
    """Energy (J per image, :func:`brainsnn.analysis.energy.energy_report` ``'total'``) of a
    run of T steps on images ``X``, for each T in ``Ts`` (one recorded run per T)."""
    out = []
    for T in Ts:
        converter.run(X, [T], record=True)
        out.append(converter.energy()["total"])
    return np.asarray(out)


def first_T_within(accuracies, Ts, reference, tolerance=0.01):
    """The smallest T whose accuracy is at least ``reference - tolerance`` (fractions), or
    None if none is; ``accuracies`` and ``Ts`` of the same length."""
    accuracies, Ts = np.asarray(accuracies, dtype=float), list(Ts)
    if len(accuracies) != len(Ts):
        raise ConversionError(f"got {len(accuracies)} accuracies for {len(Ts)} values of T")
    for T, a in sorted(zip(Ts, accuracies)):
        if a >= reference - tolerance:
            return int(T)
    return None
