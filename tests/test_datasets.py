"""Dataset readers: real files (shared data) and small hand-made files in the official layouts."""
import gzip
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from brainsnn.io import datasets
from brainsnn.io.datasets import (DatasetError, load_cifar10, load_dataset, load_fashion_mnist,
                                  load_image_data, load_mnist)


@pytest.fixture(autouse=True)
def fresh_memory():
    """Each test reads its files again (the module keeps decoded arrays per process)."""
    saved = dict(datasets._MEMORY)
    datasets._MEMORY.clear()
    yield
    datasets._MEMORY.clear()
    datasets._MEMORY.update(saved)


# --------------------------------------------------------------------------- helpers

def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    header = (0x0800 + arr.ndim).to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def write_idx_set(folder, images, labels, split="train", gz=True, dotted=False):
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    for kind, arr, nd in (("images", images, 3), ("labels", labels, 1)):
        name = f"{prefix}-{kind}-idx{nd}-ubyte"
        if dotted:
            name = name.replace("-idx", ".idx")
        data = idx_bytes(arr)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def small_idx(n=5, seed=1):
    r = np.random.default_rng(seed)
    return (r.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            r.integers(0, 10, size=n, dtype=np.uint8))


def cifar_records(images_u8, labels_u8) -> bytes:
    return np.concatenate([labels_u8[:, None], images_u8.reshape(len(labels_u8), 3072)],
                          axis=1).astype(np.uint8).tobytes()


def small_cifar(seed):
    """Five train batches of 2 images and a test batch of 3, as (name -> (images, labels))."""
    r = np.random.default_rng(seed)
    out = {}
    for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
        out[name] = (r.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8),
                     r.integers(0, 10, size=n, dtype=np.uint8))
    return out


def expected_cifar(batches, split):
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return (np.concatenate([batches[n][0] for n in names]).astype(np.float32) / np.float32(255),
            np.concatenate([batches[n][1] for n in names]).astype(np.int64))


# --------------------------------------------------------------------------- real data

def test_mnist_is_genuine(mnist_train, mnist_test):
    x, y = mnist_train
    assert x.shape == (60000, 28, 28) and x.dtype == np.float32
    assert y.shape == (60000,) and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() == 1.0
    # values from ../shared/data/README.md
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert x.mean(dtype=np.float64) * 255 == pytest.approx(33.318, abs=1e-3)
    xt, yt = mnist_test
    assert xt.shape == (10000, 28, 28) and np.bincount(yt).sum() == 10000


def test_fashion_mnist_is_genuine(data_dir):
    x, y = load_fashion_mnist("train", data_dir=data_dir)
    assert x.shape == (60000, 28, 28)
    assert np.bincount(y).tolist() == [6000] * 10
    assert x.mean(dtype=np.float64) * 255 == pytest.approx(72.94, abs=0.01)
    # not MNIST by mistake
    xm, _ = load_mnist("train", data_dir=data_dir, n=10)
    assert not np.array_equal(x[:10], xm)


def test_n_returns_the_first_images(data_dir, mnist_test):
    x, y = load_mnist("test", data_dir=data_dir, n=7)
    np.testing.assert_array_equal(x, mnist_test[0][:7])
    np.testing.assert_array_equal(y, mnist_test[1][:7])


def test_returned_arrays_are_independent_copies(data_dir):
    x1, y1 = load_mnist("test", data_dir=data_dir, n=3)
    x1[:] = 0.5
    y1[:] = 0
    x2, y2 = load_mnist("test", data_dir=data_dir, n=3)
    assert not np.all(x2 == 0.5) and y2[0] == 7  # the first test digit of MNIST is a 7


def test_default_data_dir_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BRAINSNN_DATA", str(tmp_path))
    assert datasets.default_data_dir() == tmp_path
    images, labels = small_idx()
    write_idx_set(tmp_path / "mnist", images, labels, "test")
    x, y = load_mnist("test")                           # found through BRAINSNN_DATA
    np.testing.assert_array_equal(y, labels)
    monkeypatch.delenv("BRAINSNN_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert datasets.default_data_dir() == tmp_path / "xdg" / "brainsnn"   # per user, not the clone
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.default_data_dir() == tmp_path / "home" / ".local" / "share" / "brainsnn"


# --------------------------------------------------------------------------- IDX files

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("where", ["mnist", "."])
def test_idx_exact_values(tmp_path, gz, where):
    images, labels = small_idx()
    write_idx_set(tmp_path / where, images, labels, "train", gz=gz)
    x, y = load_mnist("train", data_dir=tmp_path)
    np.testing.assert_array_equal(x, images.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, labels.astype(np.int64))
    assert x[0, 0, 0] == np.float32(images[0, 0, 0]) / np.float32(255)


def test_dotted_idx_names_and_fashion_folder(tmp_path):
    images, labels = small_idx(seed=3)
    write_idx_set(tmp_path / "fashion-mnist", images, labels, "test", dotted=True)
    x, y = load_fashion_mnist("test", data_dir=tmp_path)
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(DatasetError, match="mnist"):
        load_mnist("test", data_dir=tmp_path / "nothing-here")


def test_missing_mnist_names_file_and_place(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_mnist("train", data_dir=tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "mnist") in msg


def test_missing_data_dir(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_mnist("train", data_dir=tmp_path / "absent")


def test_bad_magic_number(tmp_path):
    images, labels = small_idx()
    write_idx_set(tmp_path, images, labels, "train", gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    data = bytearray(p.read_bytes())
    data[3] = 0x01  # magic 0x00000801 (labels) in an images file
    p.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="magic number") as err:
        load_mnist("train", data_dir=tmp_path)
    assert str(p) in str(err.value)


def test_truncated_idx(tmp_path):
    images, labels = small_idx()
    write_idx_set(tmp_path, images, labels, "train", gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="truncated") as err:
        load_mnist("train", data_dir=tmp_path)
    assert str(p) in str(err.value)


def test_truncated_gzip(tmp_path):
    images, labels = small_idx()
    write_idx_set(tmp_path, images, labels, "train", gz=True)
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:15])
    with pytest.raises(DatasetError) as err:
        load_mnist("train", data_dir=tmp_path)
    assert str(p) in str(err.value)


def test_image_label_count_mismatch(tmp_path):
    images, labels = small_idx(n=5)
    write_idx_set(tmp_path, images, labels[:4], "train")
    with pytest.raises(DatasetError, match="5 images but .* 4 labels"):
        load_mnist("train", data_dir=tmp_path)


def test_wrong_image_size(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 32, 32))))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2)))
    with pytest.raises(DatasetError, match=r"expected \(28, 28\)"):
        load_mnist("train", data_dir=tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation", data_dir=tmp_path)
    with pytest.raises(ValueError, match="n must be"):
        load_mnist("train", data_dir=tmp_path, n=0)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_n_larger_than_split(tmp_path):
    images, labels = small_idx(n=5)
    write_idx_set(tmp_path, images, labels, "train")
    with pytest.raises(ValueError, match="only 5"):
        load_mnist("train", data_dir=tmp_path, n=6)
    x, _ = load_dataset("MNIST", "train", data_dir=tmp_path, n=2)
    assert x.shape == (2, 28, 28)


# --------------------------------------------------------------------------- CIFAR-10

def write_cifar_bin_folder(root, batches):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, (x, y) in batches.items():
        (folder / f"{name}.bin").write_bytes(cifar_records(x, y))
    (folder / "batches.meta.txt").write_text("\n".join(datasets.CIFAR10_CLASSES) + "\n")
    return folder


def test_cifar_binary_folder_exact(tmp_path):
    batches = small_cifar(0)
    write_cifar_bin_folder(tmp_path / "cifar-10", batches)
    for split in ("train", "test"):
        x, y = load_cifar10(split, data_dir=tmp_path)
        ex, ey = expected_cifar(batches, split)
        assert x.shape == ex.shape and x.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)
    # record layout: label byte, then the red plane, row by row
    raw = (tmp_path / "cifar-10/cifar-10-batches-bin/test_batch.bin").read_bytes()
    x, y = load_cifar10("test", data_dir=tmp_path)
    assert y[0] == raw[0]
    assert x[0, 0, 0, 1] == np.float32(raw[2]) / np.float32(255)          # red, row 0, col 1
    assert x[0, 1, 0, 0] == np.float32(raw[1 + 1024]) / np.float32(255)   # green, first pixel
    assert x[0, 2, 1, 0] == np.float32(raw[1 + 2048 + 32]) / np.float32(255)  # blue, row 1


def test_cifar_binary_tarball_cached(tmp_path, tmp_cache):
    batches = small_cifar(1)
    tar_path = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for name, (x, y) in batches.items():
            data = cifar_records(x, y)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    x, y = load_cifar10("train", data_dir=tmp_path)
    ex, ey = expected_cifar(batches, "train")
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    assert len(list((tmp_cache / "cifar-10").glob("*_train_x.npy"))) == 1
    datasets._MEMORY.clear()
    x2, _ = load_cifar10("train", data_dir=tmp_path)        # from the .npy cache
    np.testing.assert_array_equal(x2, ex)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_python_version(tmp_path, tmp_cache, protocol):
    batches = small_cifar(2)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, (x, y) in batches.items():
        batch = {b"data": x.reshape(len(x), 3072), b"labels": [int(v) for v in y],
                 b"batch_label": b"batch " + name.encode(), b"filenames": [b"a.png"] * len(y)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = load_cifar10("test", data_dir=tmp_path)
    ex, ey = expected_cifar(batches, "test")
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)


def test_cifar_corrupt_batch(tmp_path):
    batches = small_cifar(0)
    folder = write_cifar_bin_folder(tmp_path, batches)
    bad = folder / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DatasetError, match="whole number") as err:
        load_cifar10("train", data_dir=tmp_path)
    assert str(bad) in str(err.value)


def test_cifar_bad_label(tmp_path):
    batches = small_cifar(0)
    batches["test_batch"][1][0] = 42
    folder = write_cifar_bin_folder(tmp_path, batches)
    with pytest.raises(DatasetError, match="label 42") as err:
        load_cifar10("test", data_dir=tmp_path)
    assert str(folder / "test_batch.bin") in str(err.value)


def test_cifar_missing_batch(tmp_path):
    folder = write_cifar_bin_folder(tmp_path, small_cifar(0))
    (folder / "data_batch_5.bin").unlink()
    with pytest.raises(DatasetError, match="data_batch_5.bin"):
        load_cifar10("train", data_dir=tmp_path)


def test_cifar_missing(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_cifar10("train", data_dir=tmp_path)
    msg = str(err.value)
    assert "cifar-10-binary.tar.gz" in msg and str(tmp_path / "cifar-10") in msg


# --------------------------------------------------------------------------- untrusted files

class _OpensAFile:
    """Unpickling it would create ``path`` (as a crafted batch that runs code would)."""
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsAShellCommand:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", [_OpensAFile, _RunsAShellCommand])
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_crafted_cifar_batch_runs_nothing(tmp_path, payload, protocol):
    marker = tmp_path / "created-by-the-batch"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {b"data": payload(marker), b"labels": [0]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    with pytest.raises(DatasetError, match="not part of a CIFAR-10 batch") as err:
        load_cifar10("test", data_dir=tmp_path)
    assert str(folder / "test_batch") in str(err.value)
    assert not marker.exists()


def test_cifar_python_batch_of_wrong_type(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {b"data": np.zeros((2, 3072), dtype=np.float64), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DatasetError, match="expected a uint8 array"):
        load_cifar10("test", data_dir=tmp_path)


def jpeg_bytes(pixels_hwc):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels_hwc).save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def write_jpeg_tar(path, counts, seed=0, size=32):
    """A CIFAR-10 JPEG export: ``counts[split][class] = n`` images of random pixels, added to
    the archive in a shuffled order (the reader must sort them by name)."""
    r = np.random.default_rng(seed)
    members = []
    for split, per_class in counts.items():
        for cls, n in per_class.items():
            for k in range(n):
                img = r.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                members.append((f"{split}/{cls}/{k:04d}.jpg", jpeg_bytes(img)))
    with tarfile.open(path, "w:gz") as tar:
        for i in r.permutation(len(members)):
            name, data = members[i]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


SMALL_JPEG_COUNTS = {"train": {"bird": 4, "airplane": 3, "truck": 5, "cat": 2},
                     "test": {"truck": 2, "frog": 3, "airplane": 1}}


def test_jpeg_export_equals_the_reference_converter(tmp_path, data_dir):
    """The in-package decoder gives the records, in the order, that the converter script
    shipped beside the shared JPEG export writes (run here on a copy, on synthetic data)."""
    script = data_dir / "cifar-10" / "to_binary.py"
    if not script.is_file():
        pytest.skip(f"no reference converter at {script}")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(script, work / "to_binary.py")
    tar_path = write_jpeg_tar(work / "cifar-10-jpeg.tar.gz", SMALL_JPEG_COUNTS, seed=5)
    subprocess.run([sys.executable, str(work / "to_binary.py"), str(tmp_path / "out")],
                   check=True, capture_output=True)
    folder = tmp_path / "out" / "cifar-10-batches-bin"
    for split, names in (("train", [f"data_batch_{i}.bin" for i in range(1, 6)]),
                         ("test", ["test_batch.bin"])):
        raw = b"".join((folder / n).read_bytes() for n in names)
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
        x, y = datasets.read_cifar_jpeg_tar(tar_path, split)
        assert x.dtype == np.uint8 and x.shape == (len(records), 3, 32, 32)
        np.testing.assert_array_equal(y, records[:, 0])
        np.testing.assert_array_equal(x.reshape(len(x), 3072), records[:, 1:])


def test_jpeg_export_order_and_labels(tmp_path):
    """Hand-checkable: records sorted by member name, then shuffled by the fixed-seed
    permutations (training split drawn first); pixels are the decoded JPEGs."""
    from PIL import Image
    tar_path = write_jpeg_tar(tmp_path / "cifar-10-jpeg.tar.gz", SMALL_JPEG_COUNTS, seed=6)
    with tarfile.open(tar_path) as tar:
        names = {s: sorted(m.name for m in tar if m.name.startswith(s + "/"))
                 for s in ("train", "test")}
        decoded = {m.name: np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read()))
                                      .convert("RGB")) for m in tar.getmembers()}
    rng = np.random.default_rng(20261126)
    order = {"train": rng.permutation(len(names["train"]))}
    order["test"] = rng.permutation(len(names["test"]))
    for split in ("train", "test"):
        x, y = datasets.read_cifar_jpeg_tar(tar_path, split)
        expected_names = [names[split][i] for i in order[split]]
        assert y.tolist() == [datasets.CIFAR10_CLASSES.index(n.split("/")[1])
                              for n in expected_names]
        for k, name in enumerate(expected_names):
            np.testing.assert_array_equal(x[k], decoded[name].transpose(2, 0, 1))
    assert sorted(np.bincount(datasets.read_cifar_jpeg_tar(tar_path, "test")[1], minlength=10)) \
        == [0] * 7 + [1, 2, 3]


def test_script_beside_jpeg_export_is_never_run(tmp_path, tmp_cache):
    folder = tmp_path / "cifar-10"
    folder.mkdir()
    tar_path = write_jpeg_tar(folder / "cifar-10-jpeg.tar.gz", SMALL_JPEG_COUNTS, seed=7)
    marker = tmp_path / "script-ran"
    (folder / "to_binary.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    x, y = load_cifar10("test", data_dir=tmp_path)
    ex, ey = datasets.read_cifar_jpeg_tar(tar_path, "test")
    np.testing.assert_array_equal(x, ex.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, ey)
    assert not marker.exists()
    assert len(list((tmp_cache / "cifar-10").glob("*_test_x.npy"))) == 1     # decoded once


@pytest.mark.parametrize("bad,pattern", [
    ({"train": {"airplane": 1}, "test": {"not_a_class": 1}}, "not in a class folder"),
    ({"train": {"airplane": 1}, "test": {}}, "no test/<class>/"),
])
def test_jpeg_export_bad_layout(tmp_path, bad, pattern):
    tar_path = write_jpeg_tar(tmp_path / "cifar-10-jpeg.tar.gz", bad)
    with pytest.raises(DatasetError, match=pattern) as err:
        datasets.read_cifar_jpeg_tar(tar_path, "test")
    assert str(tar_path) in str(err.value)


def test_jpeg_export_wrong_image_size(tmp_path):
    tar_path = write_jpeg_tar(tmp_path / "cifar-10-jpeg.tar.gz", {"test": {"cat": 1}}, size=33)
    with pytest.raises(DatasetError, match="33 x 33 pixels, expected 32 x 32"):
        datasets.read_cifar_jpeg_tar(tar_path, "test")


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dims", [(2 ** 22, 2 ** 22, 2 ** 20), (2 ** 32 - 1, 28, 28)])
def test_idx_header_with_huge_dimensions(tmp_path, gz, dims):
    """A header declaring more data than the file can hold is refused before any allocation,
    with a DatasetError naming the file (the product of the dimensions overflows int64)."""
    header = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (tmp_path / name).write_bytes(gzip.compress(header + bytes(100)) if gz else header + bytes(100))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2)))
    with pytest.raises(DatasetError) as err:
        load_mnist("train", data_dir=tmp_path)
    assert str(tmp_path / name) in str(err.value)


def test_idx_with_trailing_bytes(tmp_path):
    images, labels = small_idx()
    write_idx_set(tmp_path, images, labels, "train", gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes(images) + b"extra"))
    with pytest.raises(DatasetError, match="holds more data bytes") as err:
        load_mnist("train", data_dir=tmp_path)
    assert str(p) in str(err.value)


# --------------------------------------------------------------------------- registry

def test_registry_names():
    assert list(datasets.DATASETS) == ["mnist", "fashion_mnist", "cifar10"]
    assert datasets.dataset_name("Fashion-MNIST") == "fashion_mnist"
    for old in ("fashion", "fmnist"):
        with pytest.raises(DatasetError, match="Fashion-MNIST is named 'fashion_mnist'"):
            datasets.dataset_name(old)
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'; expected one of "
                                           "mnist, fashion_mnist, cifar10"):
        load_dataset("imagenet")


def test_load_image_data_adds_a_channel_axis_and_holds_out_validation(tmp_path):
    images, labels = small_idx(n=6, seed=4)
    write_idx_set(tmp_path / "fashion-mnist", images, labels, "train")
    test_images, test_labels = small_idx(n=3, seed=5)
    write_idx_set(tmp_path / "fashion-mnist", test_images, test_labels, "test")
    x_tr, y_tr, x_te, y_te = load_image_data("fashion_mnist", n_train=4, data_dir=tmp_path)
    assert x_tr.shape == (4, 1, 28, 28) and x_te.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(y_te, test_labels)
    x_tr, y_tr, x_val, y_val = load_image_data("fashion_mnist", n_train=4, data_dir=tmp_path,
                                               validation=2)
    np.testing.assert_array_equal(y_tr, labels[:4])
    np.testing.assert_array_equal(y_val, labels[4:6])
    np.testing.assert_array_equal(x_val[:, 0], images[4:6].astype(np.float32) / np.float32(255))
    x_tr, y_tr, x_val, y_val = load_image_data("fashion_mnist", n_train=3, n_test=2,
                                               data_dir=tmp_path, validation=3)
    np.testing.assert_array_equal(y_tr, labels[:3])
    np.testing.assert_array_equal(y_val, labels[3:5])     # the first 2 of the 3 held out
    with pytest.raises(DatasetError, match="n_test must be between 1 and the 2 held-out"):
        load_image_data("fashion_mnist", n_test=3, data_dir=tmp_path, validation=2)
    with pytest.raises(DatasetError, match="validation must hold between 1 and 5"):
        load_image_data("fashion_mnist", data_dir=tmp_path, validation=6)
    with pytest.raises(DatasetError, match="fashion_mnist"):
        load_image_data("fashion", data_dir=tmp_path)


def test_locate_dataset(tmp_path):
    images, labels = small_idx()
    write_idx_set(tmp_path / "mnist", images, labels, "train")
    write_idx_set(tmp_path / "mnist", images, labels, "test")
    write_idx_set(tmp_path / "fashion-mnist", images, labels, "train", gz=False)
    write_cifar_bin_folder(tmp_path / "cifar10", small_cifar(0))
    loc = datasets.locate_dataset("mnist", tmp_path)
    assert loc.path == tmp_path / "mnist" and loc.layout == "IDX files, gzipped"
    assert loc.looked_in == (tmp_path / "mnist", tmp_path / "MNIST", tmp_path)
    loc = datasets.locate_dataset("fashion_mnist", tmp_path)
    assert loc.path is None and loc.missing == ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    loc = datasets.locate_dataset("cifar10", tmp_path)
    assert loc.path == tmp_path / "cifar10" / "cifar-10-batches-bin"
    assert loc.layout == "binary version, extracted"
    loc = datasets.locate_dataset("cifar10", tmp_path / "absent")
    assert loc.path is None and loc.looked_in[-1] == tmp_path / "absent"


@pytest.mark.slow
def test_cifar_from_shared_jpeg(data_dir):
    """Converts the shared JPEG export once into the user cache (~20 s the first time)."""
    x, y = load_cifar10("train", data_dir=data_dir)
    assert x.shape == (50000, 3, 32, 32) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [5000] * 10
    # per-channel means from ../shared/data/README.md
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3), dtype=np.float64),
                               [0.4913, 0.4821, 0.4465], atol=2e-4)
    xt, yt = load_cifar10("test", data_dir=data_dir)
    assert xt.shape == (10000, 3, 32, 32) and np.bincount(yt).tolist() == [1000] * 10

