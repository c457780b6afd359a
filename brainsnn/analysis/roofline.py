"""Memory roofline: the copy bandwidth of this machine and the rate it allows.

A computation that moves ``B`` bytes per item through main memory runs at no more than
``bandwidth / B`` items per second (its roofline). The bandwidth is measured here, on the
machine that runs the computation, by copying a float32 array much larger than the caches
(``torch.Tensor.copy_``, on the current number of torch threads): read and written bytes both
count, and the best of ``repeats`` copies is kept (the least disturbed by other work).

Example::

    from brainsnn.analysis.roofline import copy_bandwidth, roofline_rate
    bandwidth = copy_bandwidth(mbytes=64, repeats=3)       # bytes/s
    print(roofline_rate(120e6, bandwidth))                 # items/s at 120 MB per item
"""
from __future__ import annotations

import time

import torch

from brainsnn.errors import BrainsnnError

__all__ = ["copy_bandwidth", "roofline_rate"]


def copy_bandwidth(mbytes=256, repeats=5):
    """Bytes per second of copying a ``mbytes`` MB float32 array into another (read + write
    bytes per second, best of ``repeats``; torch's current thread count)."""
    if not mbytes > 0 or int(repeats) < 1:
        raise BrainsnnError(f"copy_bandwidth needs mbytes > 0 and repeats >= 1, got "
                            f"mbytes={mbytes!r}, repeats={repeats!r}")
    n = int(mbytes * 2 ** 20) // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)                                   # pages touched before timing
    best = float("inf")
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * 4 * n / best


def roofline_rate(bytes_per_item, bandwidth):
    """Items per second that ``bandwidth`` (bytes/s) allows at ``bytes_per_item``."""
    if not bytes_per_item > 0 or not bandwidth > 0:
        raise BrainsnnError(f"roofline_rate needs positive bytes per item and bandwidth, got "
                            f"{bytes_per_item!r} and {bandwidth!r}")
    return float(bandwidth) / float(bytes_per_item)
