"""ZCA whitening as a convolution with ON/OFF channels (brainsnn.stdp.preprocessing)."""
import numpy as np
import pytest
from scipy.ndimage import correlate

from brainsnn.stdp.preprocessing import (OnOffWhitening, PreprocessingError, make_preprocessor,
                                    on_minus_off)


def _correlated_images(n=400, size=24, seed=0):
    """White noise smoothed by an asymmetric kernel: neighbouring pixels strongly correlated,
    and differently to the left than to the right (a flipped filter would not whiten)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((n, 1, size, size))
    k = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.8], [0.0, 0.5, 0.3]])
    smooth = np.stack([correlate(im[0], k, mode="wrap") for im in noise])[:, None]
    smooth -= smooth.min()
    return (smooth / smooth.max()).astype(np.float32)


def _corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_whitening_decorrelates_neighbours_and_gives_unit_variance():
    x = _correlated_images()
    white = OnOffWhitening(patch_size=5, eps=1e-8, n_patches=40_000).fit(x)
    z = white._whiten(x)[:, 0, 4:-4, 4:-4]          # interior: no padding effects
    raw = x[:, 0, 4:-4, 4:-4]
    assert _corr(raw[:, :, :-1], raw[:, :, 1:]) > 0.4            # strongly correlated input
    assert abs(_corr(z[:, :, :-1], z[:, :, 1:])) < 0.05          # right neighbour
    assert abs(_corr(z[:, :-1, :], z[:, 1:, :])) < 0.05          # neighbour below
    assert abs(_corr(z[:, :-1, :-1], z[:, 1:, 1:])) < 0.05       # diagonal
    assert z.var() == pytest.approx(1.0, rel=0.05)
    assert abs(z.mean()) < 0.02


def test_conv_equals_zca_row_times_centred_patch():
    x = _correlated_images(n=50, size=12)
    white = OnOffWhitening(patch_size=3, eps=1e-3, n_patches=5_000).fit(x)
    z = white._whiten(x)
    # hand computation at pixel (5, 7) of image 3: the filter's dot product with the 3x3
    # neighbourhood plus the bias
    patch = x[3, 0, 4:7, 6:9]
    expected = float((white.filters_[0, 0] * patch).sum() + white.bias_[0])
    assert z[3, 0, 5, 7] == pytest.approx(expected, abs=1e-5)


def test_on_off_channels():
    x = _correlated_images(n=60, size=16)
    white = OnOffWhitening(patch_size=3, n_patches=5_000).fit(x)
    out = white.transform(x)
    assert out.shape == (60, 2, 16, 16) == (60, *white.output_shape((1, 16, 16)))
    assert out.min() >= 0 and out.max() <= 1
    assert np.all(out[:, 0] * out[:, 1] == 0)                   # never ON and OFF at once
    z = np.clip(white._whiten(x) / white.scale_, -1, 1)
    np.testing.assert_allclose(out[:, :1] - out[:, 1:], z, atol=1e-6)
    # the scale is the 99th percentile of |z| on the training images: about 1 % saturate
    assert 0.002 < (np.abs(z) >= 1).mean() < 0.03


def test_colour_images_give_on_and_off_per_channel():
    rng = np.random.default_rng(1)
    x = rng.random((30, 3, 12, 12)).astype(np.float32)
    white = OnOffWhitening(patch_size=3, n_patches=3_000).fit(x)
    assert white.filters_.shape == (3, 3, 3, 3)
    assert white.transform(x).shape == (30, 6, 12, 12)
    kernels = rng.random((4, 6, 5, 5))
    np.testing.assert_allclose(on_minus_off(kernels), kernels[:, :3] - kernels[:, 3:])


def test_bad_input_gives_clear_errors():
    x = _correlated_images(n=20, size=10)
    with pytest.raises(PreprocessingError, match="odd"):
        OnOffWhitening(patch_size=4).fit(x)
    with pytest.raises(PreprocessingError, match="eps"):
        OnOffWhitening(eps=0).fit(x)
    with pytest.raises(PreprocessingError, match="larger than"):
        OnOffWhitening(patch_size=11).fit(x)
    with pytest.raises(PreprocessingError, match="not fitted"):
        OnOffWhitening().transform(x)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(PreprocessingError, match="NaN"):
        OnOffWhitening(patch_size=3).fit(bad)
    white = OnOffWhitening(patch_size=3, n_patches=1_000).fit(x)
    with pytest.raises(PreprocessingError, match="fitted on"):
        white.transform(np.zeros((2, 1, 12, 12), np.float32))
    with pytest.raises(PreprocessingError, match="unknown preprocessing"):
        make_preprocessor("pca")
    with pytest.raises(PreprocessingError, match=r"\(K, 2C, k, k\)"):
        on_minus_off(np.zeros((2, 3, 5, 5)))
    assert make_preprocessor("none") is None
