"""The validators every public entry point uses (brainsnn.validation)."""
import numpy as np
import pytest

from brainsnn.errors import BrainsnnError, TrainingError
from brainsnn.validation import check_finite, check_labels, check_T, positive_int, validate_images


@pytest.mark.parametrize("good", [1, 4, np.int64(3), 2.0])
def test_check_T_accepts_whole_numbers(good):
    assert check_T(good) == int(good) and isinstance(check_T(good), int)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4", None, True, float("nan")])
def test_check_T_rejects(bad):
    with pytest.raises(TrainingError, match=r"balance_T \(number of time steps\) must be an "
                                            r"integer >= 1"):
        check_T(bad, "balance_T", error=TrainingError)


def test_positive_int():
    assert positive_int(3, "n") == 3
    assert positive_int(0, "padding", minimum=0) == 0
    for bad in (0, -2, 2.5, "3", False):
        with pytest.raises(BrainsnnError, match="n must be an integer >= 1"):
            positive_int(bad, "n")


def test_check_labels():
    out = check_labels([0, 9, 3.0], n=3, n_classes=10)
    assert out.dtype == np.int64 and out.tolist() == [0, 9, 3]
    with pytest.raises(BrainsnnError, match=r"values in \[0, 10\], expected class indices 0..9"):
        check_labels([0, 10], n_classes=10)
    with pytest.raises(BrainsnnError, match=r"values in \[-1, 2\]"):
        check_labels([-1, 2])
    with pytest.raises(BrainsnnError, match=r"shaped \(3,\) for 3 images, got shape \(2,\)"):
        check_labels([0, 1], n=3)
    with pytest.raises(BrainsnnError, match="fractional"):
        check_labels([0.5, 1.0])
    with pytest.raises(BrainsnnError, match="NaN or infinite"):
        check_labels([np.nan, 1.0])
    with pytest.raises(BrainsnnError, match="integer class indices, got dtype"):
        check_labels(["a", "b"])


def test_check_finite():
    out = check_finite(np.ones((2, 3), np.float32), "weights", shape=(2, 3))
    assert out.dtype == np.float64
    w = np.ones((2, 3))
    w[1, 2] = np.nan
    with pytest.raises(BrainsnnError, match=r"weights holds 1 NaN or infinite values \(first at "
                                            r"index \(1, 2\)"):
        check_finite(w, "weights")
    with pytest.raises(BrainsnnError, match=r"shape \(3,\), expected \(2,\)"):
        check_finite(np.zeros(3), "theta", shape=(2,))


# --------------------------------------------------------------------------- validate_images

def test_validate_images_accepts_and_returns_array(rng):
    x = rng.random((4, 28, 28)).astype(np.float32)
    out = validate_images(x, shape=(28, 28))
    assert out is x or np.shares_memory(out, x)
    validate_images(x.reshape(4, 784), shape=(784,))
    validate_images(x, shape=(None, 28))
    validate_images(np.zeros((2, 3), dtype=np.uint8))
    validate_images([[0.0, 1.0]])


@pytest.mark.parametrize("bad,pattern", [
    (np.array([[0.5, np.nan]]), "NaN or infinite"),
    (np.array([[0.5, np.inf]]), "NaN or infinite"),
    (np.array([[0.5, 1.5]]), r"expected values in \[0, 1\]"),
    (np.array([[0.0, 255.0]]), "divide by 255"),
    (np.array([[-0.1, 0.5]]), r"\[-0.1, 0.5\]"),
    (np.array([0.1, 0.5]), "expected a batch"),
    (np.zeros((0, 28, 28)), "no images"),
    (np.array([["a", "b"]]), "real numbers"),
])
def test_validate_images_rejects(bad, pattern):
    with pytest.raises(BrainsnnError, match=pattern):
        validate_images(bad)


def test_validate_images_shape_message():
    with pytest.raises(BrainsnnError) as err:
        validate_images(np.zeros((2, 32, 32)), shape=(28, 28))
    assert "(2, 32, 32)" in str(err.value) and "(n, 28, 28)" in str(err.value)
    with pytest.raises(BrainsnnError, match=r"expected \(n, 28, 28\)"):
        validate_images(np.zeros((28, 28)), shape=(28, 28))


def test_validate_images_torch():
    torch = pytest.importorskip("torch")
    out = validate_images(torch.full((2, 3), 0.5), shape=(3,))
    assert isinstance(out, np.ndarray) and out.shape == (2, 3)
    with pytest.raises(BrainsnnError, match="NaN"):
        validate_images(torch.tensor([[float("nan")]]))


def test_validate_images_raises_the_callers_error():
    with pytest.raises(TrainingError, match="X has values"):
        validate_images(np.full((1, 4), 2.0), name="X", error=TrainingError)
