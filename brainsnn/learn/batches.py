"""Streams of ``(images, labels)`` batches for :class:`brainsnn.learn.agd.AGDClassifier`: what
counts as a stream, its batches per epoch, the checks of each batch, and the sampler that
must be told the epoch.

A stream is a ``torch.utils.data.DataLoader`` or any other re-iterable object (not an array,
tensor, list or tuple, which are image arrays) whose iteration yields ``(images, labels)``
pairs: images ``(batch, *image_shape)`` of real numbers in [0, 1], labels ``(batch,)``
integer class indices.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from brainsnn.errors import TrainingError
from brainsnn.validation import check_labels, validate_images

__all__ = ["is_batch_stream", "batches_per_epoch", "first_batch", "checked_batch",
           "epoch_sampler", "check_distributed_sampler", "loader_generator"]

_EXPECTED = ("a DataLoader (or re-iterable) of (images, labels) batches: images "
             "(batch, *image_shape) in [0, 1], labels (batch,) class indices")


def is_batch_stream(X) -> bool:
    """True for a DataLoader or another iterable of batches; False for image arrays
    (numpy arrays, tensors, lists and tuples)."""
    if isinstance(X, torch.utils.data.DataLoader):
        return True
    return hasattr(X, "__iter__") and not isinstance(X, (np.ndarray, torch.Tensor, list,
                                                        tuple, str, bytes))


def batches_per_epoch(stream, epochs: int) -> int:
    """``len(stream)``, the optimiser steps of one epoch (the learning-rate schedule is
    planned over them); a one-pass iterator serves one epoch only."""
    if isinstance(stream, Iterator) and epochs > 1:
        raise TrainingError(f"a one-pass iterator of batches cannot serve {epochs} epochs; "
                            "give a DataLoader or another re-iterable, or epochs=1")
    try:
        n = len(stream)
    except TypeError:
        raise TrainingError(f"{type(stream).__name__} has no length: the learning-rate "
                            "schedule needs the number of batches per epoch; give a DataLoader "
                            "over a map-style dataset or an iterable with __len__") from None
    if n < 1:
        raise TrainingError(f"the stream of batches is empty (len {n}); expected {_EXPECTED}")
    return int(n)


def _pair(batch, k):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        what = f"{type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) \
            else type(batch).__name__
        raise TrainingError(f"batch {k} of the stream is a {what}; expected {_EXPECTED}")
    return batch


def first_batch(stream, name="X"):
    """The first ``(images, labels)`` batch of ``stream``, images checked in full (shape,
    finite values in [0, 1]); later batches are checked for shape and labels only."""
    try:
        x, y = _pair(next(iter(stream)), 0)
    except StopIteration:
        raise TrainingError(f"{name} yields no batch; expected {_EXPECTED}") from None
    validate_images(x, name=f"{name} (batch 0 images)", error=TrainingError)
    return _as_tensor(x), _as_tensor(y)


def _as_tensor(a):
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def checked_batch(batch, k, image_shape, n_classes, name="X"):
    """Batch ``k`` as ``(images, labels)`` tensors: images float of shape
    ``(b, *image_shape)`` (``image_shape`` None: any), labels int64 ``(b,)`` in
    ``range(n_classes)``."""
    x, y = _pair(batch, k)
    x = _as_tensor(x)
    if len(x) == 0 or image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        raise TrainingError(f"batch {k} of {name}: images of shape {tuple(x.shape)}, expected "
                            f"(batch >= 1, {', '.join(map(str, image_shape))}) like batch 0")
    if not torch.is_floating_point(x):
        raise TrainingError(f"batch {k} of {name}: images of dtype {x.dtype}, expected a "
                            "floating-point tensor in [0, 1]")
    labels = check_labels(y, len(x), n_classes, name=f"batch {k} of {name}: labels",
                          error=TrainingError)
    return x, torch.from_numpy(labels)


def epoch_sampler(stream):
    """The sampler of a DataLoader that draws its order per epoch (``set_epoch``, as a
    ``DistributedSampler``), or None."""
    for sampler in (getattr(stream, "sampler", None),
                    getattr(getattr(stream, "batch_sampler", None), "sampler", None),
                    getattr(stream, "batch_sampler", None)):
        if hasattr(sampler, "set_epoch"):
            return sampler
    return None


def check_distributed_sampler(stream, world: int):
    """Under ``torchrun`` (``world`` > 1 processes) a DataLoader must give every process its
    own share of the data through a ``DistributedSampler``."""
    if world <= 1 or not isinstance(stream, torch.utils.data.DataLoader):
        return
    from torch.utils.data.distributed import DistributedSampler

    samplers = (stream.sampler, getattr(stream.batch_sampler, "sampler", None))
    if not any(isinstance(s, DistributedSampler) for s in samplers):
        raise TrainingError(f"{world} processes train from one DataLoader whose sampler is "
                            f"{type(stream.sampler).__name__}: every process would see the "
                            "whole data; give the DataLoader "
                            "sampler=DistributedSampler(dataset, shuffle=..., seed=...)")


def loader_generator(stream):
    """The torch Generator that draws a DataLoader's order and worker seeds, or None."""
    gen = getattr(stream, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None
