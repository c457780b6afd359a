"""Figures from results: receptive fields, convolution kernels, accuracy curves.

Every function draws into a matplotlib ``Axes`` (a new figure when ``ax`` is None) and returns
that ``Axes``; ``ax.figure.savefig(path)`` writes it. Only the object-oriented matplotlib API
is used (``matplotlib.figure.Figure``, Agg), so no display is needed and pyplot's global state
is untouched. :func:`results_figure` draws everything a results file holds, from the file
alone (this is what ``brainsnn plot`` calls).
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

__all__ = ["infer_image_shape", "fields_from_weights", "tile_images", "receptive_field_grid",
           "kernel_grid", "accuracy_curve", "results_figure"]

_KNOWN_SHAPES = {784: (28, 28), 3072: (3, 32, 32), 1024: (32, 32)}


def _new_axes(figsize=(5, 5)):
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def infer_image_shape(n_inputs: int) -> tuple:
    """Image shape of ``n_inputs`` input neurons: 784 -> (28, 28), 3072 -> (3, 32, 32)
    (CIFAR, channels first), 1024 -> (32, 32), k*k -> (k, k); ValueError otherwise."""
    n_inputs = int(n_inputs)
    if n_inputs in _KNOWN_SHAPES:
        return _KNOWN_SHAPES[n_inputs]
    k = math.isqrt(n_inputs)
    if k * k == n_inputs and k > 1:
        return (k, k)
    raise ValueError(f"cannot tell the image shape of {n_inputs} inputs; pass image_shape "
                     "(e.g. (28, 28) or (3, 32, 32))")


def fields_from_weights(weights, layout: str = "pre_post", image_shape=None) -> np.ndarray:
    """Receptive fields, shape ``(n_neurons, *image_shape)``, from a weight matrix.

    ``layout="pre_post"``: ``weights[i, j]`` from input ``i`` to neuron ``j`` (Brian2
    ``Synapses`` order, shape ``(n_inputs, n_neurons)``); ``"post_pre"``: shape
    ``(n_neurons, n_inputs)`` (torch ``Linear.weight``).
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2:
        raise ValueError(f"weights must be a matrix (n_inputs, n_neurons), got shape {w.shape}")
    if layout == "pre_post":
        w = w.T
    elif layout != "post_pre":
        raise ValueError(f"layout must be 'pre_post' or 'post_pre', got {layout!r}")
    shape = tuple(image_shape) if image_shape is not None else infer_image_shape(w.shape[1])
    if int(np.prod(shape)) != w.shape[1]:
        raise ValueError(f"image_shape {shape} has {int(np.prod(shape))} pixels but each neuron "
                         f"has {w.shape[1]} inputs")
    return w.reshape((w.shape[0],) + shape)


def _for_display(images: np.ndarray, normalize: bool) -> np.ndarray:
    """(n, h, w) grey or (n, h, w, 3) colour; channels-first colour images are moved last; each
    image is scaled to [0, 1] by its own min and max when ``normalize``."""
    x = np.asarray(images, dtype=float)
    if x.ndim == 4 and x.shape[1] == 3 and x.shape[-1] != 3:
        x = x.transpose(0, 2, 3, 1)
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 3):
        raise ValueError(f"images must be shaped (n, h, w) or (n, 3, h, w) / (n, h, w, 3), got "
                         f"{x.shape}")
    if normalize:
        axes = tuple(range(1, x.ndim))
        lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
        x = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
    return x


def tile_images(images, ncols: int | None = None, pad: int = 1, fill=np.nan) -> np.ndarray:
    """Arrange ``n`` images ``(n, h, w)`` (or ``(n, h, w, 3)``) in a grid of ``ncols`` columns
    (default ``ceil(sqrt(n))``), row by row, ``pad`` pixels of ``fill`` between them.
    Returns the mosaic ``(rows*h + (rows-1)*pad, ncols*w + (ncols-1)*pad[, 3])``."""
    x = np.asarray(images, dtype=float)
    if x.ndim not in (3, 4) or len(x) == 0:
        raise ValueError(f"images must be a non-empty stack (n, h, w[, 3]), got shape {x.shape}")
    n, h, w = x.shape[:3]
    ncols = ncols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncols)
    out = np.full((rows * h + (rows - 1) * pad, ncols * w + (ncols - 1) * pad) + x.shape[3:],
                  fill, dtype=float)
    for k in range(n):
        r, c = divmod(k, ncols)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = x[k]
    return out


_PAD_COLOUR = (0.55, 0.7, 0.9)   # light blue between tiles: not a value of any colour map used


def _show_mosaic(ax, mosaic, cmap, title):
    if mosaic.ndim == 3:
        rgb = mosaic.copy()
        gaps = np.isnan(rgb).any(axis=-1)
        rgb[gaps] = _PAD_COLOUR
        ax.imshow(rgb, interpolation="nearest")
    else:
        import matplotlib
        cm = matplotlib.colormaps[cmap].with_extremes(bad=_PAD_COLOUR)
        im = ax.imshow(mosaic, cmap=cm, interpolation="nearest")
        ax.figure.colorbar(im, ax=ax, shrink=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def receptive_field_grid(weights, image_shape=None, layout: str = "pre_post", n_max: int = 100,
                         ncols: int | None = None, normalize: bool = True, ax=None,
                         title: str | None = None, cmap: str = "hot_r"):
    """Grid of the receptive fields (incoming weights as images) of the first ``n_max``
    neurons of a layer. See :func:`fields_from_weights` for ``layout`` and ``image_shape``.
    With ``normalize`` each field is scaled by its own min and max (the colour bar then reads
    as a fraction of that range)."""
    fields = fields_from_weights(weights, layout, image_shape)[:n_max]
    mosaic = tile_images(_for_display(fields, normalize), ncols)
    ax = ax if ax is not None else _new_axes()
    n_total = np.asarray(weights).shape[1 if layout == "pre_post" else 0]
    _show_mosaic(ax, mosaic, cmap, title or f"receptive fields ({len(fields)} of {n_total} neurons)")
    return ax


def kernel_grid(kernels, n_max: int = 64, ncols: int | None = None, normalize: bool = True,
                ax=None, title: str | None = None, cmap: str = "gray"):
    """Grid of convolution kernels ``(out_channels, in_channels, kh, kw)``: one tile per output
    channel, grey for 1 input channel, colour for 3, the mean over input channels otherwise."""
    k = np.asarray(kernels, dtype=float)
    if k.ndim != 4:
        raise ValueError(f"kernels must be shaped (out_channels, in_channels, kh, kw), got {k.shape}")
    k = k[:n_max]
    note = ""
    if k.shape[1] == 1:
        tiles = k[:, 0]
    elif k.shape[1] == 3:
        tiles = k
    else:
        tiles, note = k.mean(axis=1), f", mean over {k.shape[1]} input channels"
    mosaic = tile_images(_for_display(tiles, normalize), ncols)
    ax = ax if ax is not None else _new_axes()
    _show_mosaic(ax, mosaic, cmap, title or f"kernels ({len(k)} of {len(np.asarray(kernels))}{note})")
    return ax


def accuracy_curve(y, x=None, label: str | None = None, ax=None, xlabel: str = "epoch",
                   ylabel: str = "accuracy", title: str | None = None):
    """Plot one accuracy curve (call again with the same ``ax`` to add more). ``y``: 1-D values;
    ``x``: same length (default 1..n)."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y must be a non-empty 1-D array of accuracies, got shape {y.shape}")
    x = np.arange(1, len(y) + 1) if x is None else np.asarray(x, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"x has shape {x.shape} but y has shape {y.shape}; they must match")
    ax = ax if ax is not None else _new_axes((6, 4))
    ax.plot(x, y, marker="o", markersize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if label:
        ax.legend()
    return ax


# --------------------------------------------------------------------------- from a results file

def _field_layers(rec):
    """[(layer name, kind, array, attrs)] of layers whose weights are images in input space.

    Weights ``layers/<name>/weights`` (2-D) are drawn when they carry an ``image_shape``
    attribute, or when they have 784, 1024 or 3072 inputs and the file holds no convolution
    kernels (in a convolutional network a linear layer sees feature maps, not the image).
    Kernels ``layers/<name>/kernels`` are drawn when they have 1 or 3 input channels (a first
    layer). Layout: the ``layout`` attribute, else ``pre_post`` unless only the second axis has
    an image size.
    """
    out = []
    if "layers" not in rec:
        return out
    names = [n for n in rec.children("layers") if not rec.is_dataset(f"layers/{n}")]
    has_kernels = any(isinstance(rec.get(f"layers/{n}/kernels"), np.ndarray) for n in names)
    for name in names:
        base = f"layers/{name}"
        k = rec.get(f"{base}/kernels")
        if isinstance(k, np.ndarray) and k.ndim == 4 and k.shape[1] in (1, 3):
            out.append((name, "kernels", k, {}))
        w = rec.get(f"{base}/weights")
        if not (isinstance(w, np.ndarray) and w.ndim == 2 and rec.is_dataset(f"{base}/weights")):
            continue
        attrs = rec.attrs(f"{base}/weights")
        layout = str(attrs.get("layout", "")) or (
            "post_pre" if w.shape[1] in _KNOWN_SHAPES and w.shape[0] not in _KNOWN_SHAPES
            else "pre_post")
        n_in = w.shape[0] if layout == "pre_post" else w.shape[1]
        shape = attrs.get("image_shape")
        if shape is not None and int(np.prod(shape)) == n_in:
            out.append((name, "weights", w, {"layout": layout, "image_shape": tuple(shape)}))
        elif shape is None and n_in in _KNOWN_SHAPES and not has_kernels:
            out.append((name, "weights", w, {"layout": layout, "image_shape": None}))
    return out


def _accuracy_metrics(rec):
    """[(name, x, y, xlabel)] of 1-D accuracy metrics, and accuracy_vs_T curves."""
    curves, vs_t = [], []
    if "metrics" not in rec:
        return curves, vs_t
    for name in rec.children("metrics"):
        path = f"metrics/{name}"
        if name in ("steps", "T") or not rec.is_dataset(path) or "acc" not in name.lower():
            continue
        y = np.asarray(rec[path])
        if name == "accuracy_vs_T" or name.startswith("accuracy_vs_T"):
            t = rec.get("metrics/T")
            labels = rec.attrs(path).get("labels")
            rows = y if y.ndim == 2 else y[None] if y.ndim == 1 else []
            for k, row in enumerate(rows):
                x = np.asarray(t) if t is not None and np.size(t) == len(row) else None
                label = str(labels[k]) if labels is not None and k < len(labels) else (
                    name if len(rows) == 1 else f"{name}[{k}]")
                vs_t.append((label, x, row))
            continue
        if y.ndim != 1 or len(y) == 0:
            continue
        steps = rec.metric_steps(name)
        curves.append((name, None if steps is None else np.asarray(steps), y))
    return curves, vs_t


def results_figure(rec, max_fields: int = 100) -> Figure:
    """One figure from a :class:`~brainsnn.io.results.RunResults`: receptive fields of the layers
    that see the image (see :func:`_field_layers`: ``layers/<name>/weights`` with an
    ``image_shape`` attribute or 784, 1024 or 3072 inputs; ``layers/<name>/kernels`` with 1 or 3
    input channels), accuracy metrics against their steps, and accuracy against time steps
    (``metrics/accuracy_vs_T`` vs ``metrics/T``). At most 4 layers are drawn.
    Raises ValueError when the record holds none of these."""
    fields = _field_layers(rec)[:4]
    curves, vs_t = _accuracy_metrics(rec)
    n_panels = len(fields) + bool(curves) + bool(vs_t)
    if n_panels == 0:
        raise ValueError("nothing to plot: the file has no input-layer weights "
                         "(layers/<name>/weights with 784, 1024 or 3072 inputs or an image_shape "
                         "attribute), no first-layer kernels (layers/<name>/kernels with 1 or 3 "
                         "input channels) and no accuracy metrics (metrics/<name with 'acc'>, "
                         "metrics/accuracy_vs_T)")
    fig = Figure(figsize=(5.5 * n_panels, 5), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    k = 0
    for name, kind, arr, attrs in fields:
        if kind == "weights":
            receptive_field_grid(arr, image_shape=attrs["image_shape"], layout=attrs["layout"],
                                 n_max=max_fields, ax=axes[k],
                                 title=f"{name}: receptive fields "
                                       f"({min(max_fields, arr.shape[1 if attrs['layout'] == 'pre_post' else 0])} "
                                       f"of {arr.shape[1 if attrs['layout'] == 'pre_post' else 0]})")
        else:
            kernel_grid(arr, n_max=max_fields, ax=axes[k], title=f"{name}: kernels")
        k += 1
    if curves:
        for name, x, y in curves:
            accuracy_curve(y, x, label=name, ax=axes[k], xlabel="step" if x is not None else "epoch",
                           title="accuracy")
        k += 1
    if vs_t:
        for label, x, y in vs_t:
            accuracy_curve(y, x, label=label, ax=axes[k],
                           xlabel="time steps T" if x is not None else "index",
                           title="accuracy vs time steps")
    fig.suptitle(f"{rec.protocol}, seed {rec.seed}, {rec.device} ({rec.status})")
    return fig


def save_results_figure(path, out=None, max_fields: int = 100, dpi: int = 100):
    """Draw :func:`results_figure` of the results file ``path`` into ``out`` (default: the
    file's name with ``.png``); returns the image's path."""
    from pathlib import Path

    from brainsnn.io.results import RunResults

    out = Path(out) if out else Path(path).with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    results_figure(RunResults.load(path), max_fields=max_fields).savefig(out, dpi=dpi)
    return out
