"""Input preprocessing for STDP layers: ZCA whitening as a convolution, split into ON/OFF channels.

STDP learns the directions of largest input variance; on natural images (CIFAR-10) those are
smooth brightness and colour blobs, and a first layer learned on raw pixels codes little
else. Whitening equalises the variance of all directions, so that edges and colour
contrasts dominate, as in the retina's centre-surround cells. Ferré, Mamalet & Thorpe (2018,
"Unsupervised feature learning with winner-takes-all based STDP") whiten CIFAR-10 patches
before STDP for this reason, and split the signed result into ON and OFF channels because
Poisson rates cannot be negative.

:class:`OnOffWhitening` (a scikit-learn style estimator, ``fit`` / ``transform``):

* ``fit`` samples ``p x p`` patches (all channels) of the training images, computes their
  mean ``mu`` and covariance ``S = U diag(lam) U^T`` and the ZCA matrix
  ``W = U diag(1 / sqrt(lam + eps)) U^T``. The row of ``W`` that belongs to the centre pixel
  of channel ``c`` is a ``(C, p, p)`` filter: convolving an image with it whitens every pixel
  with its neighbourhood (ZCA as a convolution), and ``-W_row . mu`` is its bias.
* ``transform`` convolves (reflect padding: the output keeps the image size), then writes
  ``ON = max(z, 0)`` and ``OFF = max(-z, 0)`` as ``2 C`` channels (ON of every channel first),
  divided by ``scale`` (the ``percentile`` of the positive values of ``|z|`` on the training
  images) and clipped to ``[0, 1]``: intensities, the input that STDP layers expect.

Example::

    from brainsnn.stdp.preprocessing import OnOffWhitening
    white = OnOffWhitening(patch_size=9).fit(x_train)      # (n, 3, 32, 32) in [0, 1]
    z_train = white.transform(x_train)                       # (n, 6, 32, 32) in [0, 1]
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from brainsnn.errors import PreprocessingError  # noqa: F401
from brainsnn.params import Params
from brainsnn.validation import positive_int, validate_images

__all__ = ["PreprocessingError", "OnOffWhitening", "PREPROCESSORS", "make_preprocessor",
           "on_minus_off", "positive_percentile"]




def positive_percentile(values, percentile):
    """The ``percentile`` of the positive entries of ``values`` (1.0 when none is positive):
    the value that a scaler maps to intensity 1."""
    v = np.asarray(values)
    positive = v[v > 0]
    return float(np.percentile(positive, percentile)) if positive.size else 1.0


class OnOffWhitening(Params):
    """ZCA whitening of ``patch_size`` neighbourhoods as a convolution, ON/OFF split.

    Parameters
    ----------
    patch_size : int
        Odd side ``p`` of the neighbourhood that whitens a pixel (pixels).
    eps : float
        Added to every eigenvalue of the patch covariance (units: intensity squared, pixels
        in [0, 1]); keeps the noise directions from being amplified without bound.
    n_patches : int
        Patches drawn from the training images in :meth:`fit`.
    percentile : float
        Percentile of the positive whitened values that maps to intensity 1.
    seed : int
        Fixes the patch draw.
    batch_size : int
        Images convolved at once in :meth:`transform`.

    Attributes after :meth:`fit`: ``filters_`` (C, C, p, p), ``bias_`` (C,), ``scale_``
    (whitened units per intensity 1), ``input_shape_`` (C, H, W).
    """

    def __init__(self, patch_size=9, eps=1e-2, n_patches=100_000, percentile=99.0, seed=0,
                 batch_size=1024):
        self.patch_size = patch_size
        self.eps = eps
        self.n_patches = n_patches
        self.percentile = percentile
        self.seed = seed
        self.batch_size = batch_size

    # -- helpers --------------------------------------------------------------------------
    def _check_params(self):
        p = positive_int(self.patch_size, "patch_size", PreprocessingError)
        if p % 2 == 0:
            raise PreprocessingError(f"patch_size must be an odd integer >= 1, got {p!r}")
        if not float(self.eps) > 0:
            raise PreprocessingError(f"eps must be > 0, got {self.eps!r}")
        if not 0 < float(self.percentile) <= 100:
            raise PreprocessingError(f"percentile must be in (0, 100], got {self.percentile!r}")
        positive_int(self.n_patches, "n_patches", PreprocessingError, minimum=2)
        positive_int(self.batch_size, "batch_size", PreprocessingError)

    def _images(self, x, name="x"):
        arr = validate_images(x, name=name, error=PreprocessingError)
        if arr.ndim == 3:
            arr = arr[:, None]
        if arr.ndim != 4:
            raise PreprocessingError(f"{name} must be shaped (n, channels, height, width) or "
                                     f"(n, height, width), got {arr.shape}")
        if min(arr.shape[2:]) < self.patch_size:
            raise PreprocessingError(f"patch_size {self.patch_size} is larger than the "
                                     f"{arr.shape[2]}x{arr.shape[3]} images")
        fitted = getattr(self, "input_shape_", None)
        if fitted is not None and arr.shape[1:] != fitted:
            raise PreprocessingError(f"{name} has images of shape {arr.shape[1:]}, but this "
                                     f"whitening was fitted on {fitted}")
        return arr.astype(np.float32, copy=False)

    def _whiten(self, x):
        """Signed whitened images (n, C, H, W), float32, before the ON/OFF split."""
        w = torch.as_tensor(self.filters_)
        b = torch.as_tensor(self.bias_)
        r = self.filters_.shape[-1] // 2
        out = []
        bs = int(self.batch_size)
        for i in range(0, len(x), bs):
            t = torch.as_tensor(x[i:i + bs])
            if r:
                t = F.pad(t, (r, r, r, r), mode="reflect")
            out.append(F.conv2d(t, w, b).numpy())
        return np.concatenate(out)

    # -- estimator interface --------------------------------------------------------------
    def fit(self, x, y=None):
        """Learn the whitening filters and the ON/OFF scale from training images ``x``
        (labels ignored); returns self."""
        self._check_params()
        self.__dict__.pop("input_shape_", None)
        x = self._images(x)
        n, C, H, W = x.shape
        p, n_patches = int(self.patch_size), int(self.n_patches)
        rng = np.random.default_rng(self.seed)
        idx = rng.integers(0, n, n_patches)
        rows = rng.integers(0, H - p + 1, n_patches)
        cols = rng.integers(0, W - p + 1, n_patches)
        win = np.lib.stride_tricks.sliding_window_view(x, (p, p), axis=(2, 3))  # n,C,H',W',p,p
        patches = win[idx, :, rows, cols].reshape(n_patches, C * p * p).astype(np.float64)
        mu = patches.mean(axis=0)
        cov = np.cov(patches, rowvar=False)
        lam, U = np.linalg.eigh(cov)
        lam = np.clip(lam, 0.0, None)
        zca = (U * (1.0 / np.sqrt(lam + float(self.eps)))) @ U.T
        centre = np.array([c * p * p + (p // 2) * p + p // 2 for c in range(C)])
        rows_w = zca[centre]                                         # (C, C*p*p)
        self.filters_ = rows_w.reshape(C, C, p, p).astype(np.float32)
        self.bias_ = (-(rows_w @ mu)).astype(np.float32)
        self.input_shape_ = tuple(x.shape[1:])
        self.scale_ = positive_percentile(np.abs(self._whiten(x[:min(n, 2000)])),
                                          self.percentile)
        return self

    def transform(self, x):
        """ON/OFF intensities ``(n, 2C, H, W)`` in [0, 1] of images ``x`` (n, C, H, W)."""
        if not hasattr(self, "filters_"):
            raise PreprocessingError("OnOffWhitening is not fitted: call fit(x_train) first")
        z = self._whiten(self._images(x)) / self.scale_
        return np.clip(np.concatenate([z, -z], axis=1), 0.0, 1.0).astype(np.float32)

    def fit_transform(self, x, y=None):
        return self.fit(x).transform(x)

    def output_shape(self, input_shape):
        C, H, W = (int(s) for s in input_shape)
        return (2 * C, H, W)

    def config(self):
        return {"kind": "whiten_onoff", "patch_size": int(self.patch_size),
                "eps": float(self.eps), "n_patches": int(self.n_patches),
                "percentile": float(self.percentile), "seed": int(self.seed)}


#: Preprocessing choices of the STDP protocols (``none``: pixels as they are).
PREPROCESSORS = ("none", "whiten")


def make_preprocessor(kind, seed=0, **options):
    """``None`` for ``'none'``, else a fresh :class:`OnOffWhitening`."""
    if kind == "none":
        return None
    if kind == "whiten":
        return OnOffWhitening(seed=seed, **options)
    raise PreprocessingError(f"unknown preprocessing {kind!r}; expected one of {PREPROCESSORS}")


def on_minus_off(kernels):
    """Signed view ``(K, C, k, k)`` of kernels ``(K, 2C, k, k)`` learned on ON/OFF input:
    ON weights minus OFF weights of each channel (for figures)."""
    k = np.asarray(kernels)
    if k.ndim != 4 or k.shape[1] % 2:
        raise PreprocessingError(f"kernels on ON/OFF input must be (K, 2C, k, k), got {k.shape}")
    c = k.shape[1] // 2
    return k[:, :c] - k[:, c:]
