"""Image datasets: MNIST, Fashion-MNIST and CIFAR-10 from their official file layouts.

Every loader returns ``(images, labels)``: images ``float32`` in [0, 1] shaped ``(n, 28, 28)``
(MNIST, Fashion-MNIST) or ``(n, 3, 32, 32)`` (CIFAR-10, channels first), labels ``int64``
shaped ``(n,)``. Nothing is downloaded: the files must be in a data directory, given as an
argument or by the environment variable ``BRAINSNN_DATA`` (default: :func:`default_data_dir`).

Layouts that are accepted (``DIR`` is the data directory):

- MNIST: the four official IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), gzipped (``.gz``) or not, in
  ``DIR/mnist`` or in ``DIR`` itself.
- Fashion-MNIST: the same file names, in ``DIR/fashion-mnist`` (or ``DIR/fashion_mnist``,
  ``DIR/FashionMNIST``) or in ``DIR`` itself.
- CIFAR-10, looked for in ``DIR/cifar-10``, ``DIR/cifar10`` and ``DIR``, first match wins:
  the *binary version* folder ``cifar-10-batches-bin/`` (``data_batch_1..5.bin``,
  ``test_batch.bin``) or its tarball ``cifar-10-binary.tar.gz``; the *python version* folder
  ``cifar-10-batches-py/`` or its tarball ``cifar-10-python.tar.gz``; or, as the project's
  shared data holds it, ``cifar-10-jpeg.tar.gz`` next to ``to_binary.py``, which is converted
  once into the binary layout in the cache directory (:func:`cache_dir`; needs Pillow, which
  matplotlib already depends on).

Every file is checked (IDX magic numbers and sizes, CIFAR record sizes, label ranges); a
missing or corrupt file raises :class:`DatasetError` with a message that names the file and
says where to put it. Decoded arrays are kept in memory for the life of the process (each
call returns a fresh float32 copy), and CIFAR tarballs are decoded once into ``.npy`` files in
the cache directory.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from brainsnn import paths
from brainsnn.errors import DatasetError  # noqa: F401

__all__ = [
    "DatasetError",
    "DATASETS",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "default_data_dir",
    "cache_dir",
    "load_mnist",
    "load_fashion_mnist",
    "load_cifar10",
    "load_dataset",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLITS = ("train", "test")

_MEMORY: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}




# --------------------------------------------------------------------------- directories

def default_data_dir() -> Path:
    """The data directory used when none is given (see :func:`brainsnn.paths.data_dir`)."""
    return paths.data_dir()


def cache_dir() -> Path:
    """Where decoded datasets are cached (see :func:`brainsnn.paths.cache_dir`)."""
    return paths.cache_dir()


def _resolve_data_dir(data_dir) -> Path:
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if not root.is_dir():
        how = ("the data_dir argument" if data_dir is not None else
               "$BRAINSNN_DATA" if os.environ.get("BRAINSNN_DATA") else "the default")
        raise DatasetError(
            f"data directory {str(root)!r} (from {how}) does not exist; pass data_dir=... or set "
            "BRAINSNN_DATA to the folder that holds mnist/, fashion-mnist/ and cifar-10/")
    return root


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _check_n(n):
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive integer or None (all images), got {n!r}")


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _to_float(images_u8: np.ndarray, labels: np.ndarray, n) -> tuple[np.ndarray, np.ndarray]:
    if n is not None:
        if n > len(labels):
            raise ValueError(f"n={n} images asked for, but the split has only {len(labels)}")
        images_u8, labels = images_u8[:n], labels[:n]
    images = images_u8.astype(np.float32)
    images /= np.float32(255.0)        # correctly rounded grey level / 255
    return images, labels.astype(np.int64, copy=True)


# --------------------------------------------------------------------------- IDX (MNIST)

_IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _read_bytes(path: Path) -> bytes:
    """File content, gunzipped when the name ends in .gz; corrupt archives -> DatasetError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"cannot read {str(path)!r}: {exc}; the file is corrupt or truncated, "
                           "replace it with the official file") from exc


def _parse_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions (magic 0x0000080<ndim>)."""
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{str(path)!r} is too short ({len(data)} bytes) to be an IDX file; "
                           "replace it with the official file")
    magic = int.from_bytes(data[:4], "big")
    expected = 0x0800 + ndim
    if magic != expected:
        raise DatasetError(f"{str(path)!r} has magic number 0x{magic:08x}, expected 0x{expected:08x} "
                           f"(IDX, unsigned bytes, {ndim} dimensions); it is not the official "
                           "file or it is corrupt")
    dims = tuple(int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
    header = 4 + 4 * ndim
    size = int(np.prod(dims))
    if len(data) != header + size:
        raise DatasetError(f"{str(path)!r} declares shape {dims} ({header + size} bytes) but has "
                           f"{len(data)} bytes; the file is truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(dims)


def _find_idx(root: Path, subdirs: tuple[str, ...], base: str, what: str) -> Path:
    folders = [root / s for s in subdirs] + [root]
    for folder in folders:
        for name in (base + ".gz", base, base.replace("-idx", ".idx") + ".gz",
                     base.replace("-idx", ".idx")):
            p = folder / name
            if p.is_file():
                return p
    looked = ", ".join(repr(str(f)) for f in folders)
    raise DatasetError(
        f"{what} file {base + '.gz'!r} (or {base!r}) not found; looked in {looked}. Put the official "
        f"file, gzipped or not, in {str(folders[0])!r}, or point data_dir / BRAINSNN_DATA at the "
        "folder that holds it")


def _load_idx_pair(root: Path, subdirs, split: str, what: str):
    img_path = _find_idx(root, subdirs, _IDX_NAMES[(split, "images")], what)
    lab_path = _find_idx(root, subdirs, _IDX_NAMES[(split, "labels")], what)
    key = ("idx", _file_key(img_path), _file_key(lab_path))
    if key not in _MEMORY:
        images = _parse_idx(_read_bytes(img_path), img_path, 3)
        labels = _parse_idx(_read_bytes(lab_path), lab_path, 1)
        if images.shape[1:] != (28, 28):
            raise DatasetError(f"{str(img_path)!r} holds images of shape {images.shape[1:]}, "
                               f"expected (28, 28) for {what}")
        if len(images) != len(labels):
            raise DatasetError(f"{str(img_path)!r} holds {len(images)} images but "
                               f"{str(lab_path)!r} holds {len(labels)} labels; one of them is "
                               "from another split or corrupt")
        if labels.size and labels.max() > 9:
            raise DatasetError(f"{str(lab_path)!r} holds label {labels.max()}, expected 0..9")
        _MEMORY[key] = (images, labels)
    return _MEMORY[key]


def load_mnist(split: str = "train", data_dir=None, n: int | None = None):
    """MNIST digits.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    data_dir : str or Path, optional
        Folder holding ``mnist/`` (or the IDX files themselves); default
        :func:`default_data_dir`.
    n : int, optional
        Return only the first ``n`` images of the split (in file order).

    Returns
    -------
    images : float32 array (n, 28, 28), pixel intensity in [0, 1] (grey level / 255)
    labels : int64 array (n,), digit 0..9
    """
    _check_split(split)
    _check_n(n)
    images, labels = _load_idx_pair(_resolve_data_dir(data_dir), ("mnist", "MNIST"), split,
                                    "MNIST")
    return _to_float(images, labels, n)


def load_fashion_mnist(split: str = "train", data_dir=None, n: int | None = None):
    """Fashion-MNIST (Zalando) clothing images, as :func:`load_mnist` (same shapes, 10 classes
    named in :data:`FASHION_MNIST_CLASSES`), from ``DIR/fashion-mnist``."""
    _check_split(split)
    _check_n(n)
    images, labels = _load_idx_pair(_resolve_data_dir(data_dir),
                                    ("fashion-mnist", "fashion_mnist", "FashionMNIST"), split,
                                    "Fashion-MNIST")
    return _to_float(images, labels, n)


# --------------------------------------------------------------------------- CIFAR-10

_CIFAR_SUBDIRS = ("cifar-10", "cifar10", "CIFAR-10")
_CIFAR_BIN_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                    "test": ["test_batch.bin"]}
_CIFAR_PY_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_RECORD = 1 + 3 * 32 * 32


def _parse_cifar_bin(data: bytes, name: str):
    if len(data) == 0 or len(data) % _RECORD:
        raise DatasetError(f"{name!r} has {len(data)} bytes, not a whole number of {_RECORD}-byte "
                           "CIFAR-10 records (1 label byte + 3072 pixel bytes); the file is "
                           "truncated or corrupt")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD)
    labels = rec[:, 0]
    if labels.max() > 9:
        raise DatasetError(f"{name!r} holds label {labels.max()}, expected 0..9 (is it the "
                           "CIFAR-100 binary file?)")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def _parse_cifar_py(data: bytes, name: str):
    try:
        batch = pickle.loads(data, encoding="bytes")
        raw, labels = batch[b"data"], batch[b"labels"]
        images = np.asarray(raw, dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(labels, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001  (any unpickling failure means a corrupt file)
        raise DatasetError(f"{name!r} is not a CIFAR-10 python-version batch ({exc}); the file "
                           "is corrupt, replace it with the official file") from exc
    if len(images) != len(labels) or (labels.size and labels.max() > 9):
        raise DatasetError(f"{name!r}: {len(images)} images, {len(labels)} labels "
                           f"(max {labels.max() if labels.size else None}); expected equal "
                           "counts and labels 0..9")
    return images, labels


def _concat(parts):
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _cifar_from_folder(folder: Path, split: str, names, parser):
    parts = []
    for name in names[split]:
        p = folder / name
        if not p.is_file():
            raise DatasetError(f"CIFAR-10 file {name!r} is missing from {str(folder)!r}; that "
                               "folder must hold all files of the official download")
        parts.append(parser(_read_bytes(p), str(p)))
    return _concat(parts)


def _cifar_from_tar(tar_path: Path, split: str, names, parser):
    wanted = {n: None for n in names[split]}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for m in tar:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in wanted:
                    wanted[base] = tar.extractfile(m).read()
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise DatasetError(f"cannot read {str(tar_path)!r}: {exc}; the archive is corrupt or "
                           "truncated, replace it with the official file") from exc
    missing = [n for n, d in wanted.items() if d is None]
    if missing:
        raise DatasetError(f"{str(tar_path)!r} lacks {', '.join(missing)}; it is not the official "
                           "CIFAR-10 archive or it is incomplete")
    return _concat([parser(d, f"{tar_path}:{n}") for n, d in wanted.items()])


def _cached_npy(source: Path, split: str, decode):
    """Decode ``source`` once into ``cache_dir()/cifar-10/<key>_<split>_{x,y}.npy``."""
    size, mtime = source.stat().st_size, source.stat().st_mtime_ns
    key = hashlib.sha1(f"{source.resolve()}|{size}|{mtime}".encode()).hexdigest()[:16]
    folder = cache_dir() / "cifar-10"
    fx, fy = folder / f"{key}_{split}_x.npy", folder / f"{key}_{split}_y.npy"
    if fx.is_file() and fy.is_file():
        try:
            return np.load(fx), np.load(fy)
        except (OSError, ValueError):
            pass  # a damaged cache entry: decode again
    images, labels = decode()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, arr in ((fx, images), (fy, labels)):
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, path)
    except OSError:
        pass  # no writable cache: still return the decoded arrays
    return images, labels


def _convert_jpeg(tar_path: Path) -> Path:
    """Build the binary layout from ``cifar-10-jpeg.tar.gz`` with the ``to_binary.py`` beside it,
    once, in the cache directory; returns the ``cifar-10-batches-bin`` folder."""
    script = tar_path.parent / "to_binary.py"
    size, mtime = tar_path.stat().st_size, tar_path.stat().st_mtime_ns
    key = hashlib.sha1(f"{tar_path.resolve()}|{size}|{mtime}".encode()).hexdigest()[:16]
    target = cache_dir() / "cifar-10" / f"from-jpeg-{key}"
    folder = target / "cifar-10-batches-bin"
    if all((folder / f).is_file() for f in _CIFAR_BIN_FILES["train"] + _CIFAR_BIN_FILES["test"]):
        return folder
    howto = (f"build the official binary layout once with `python3 {script} DIR` (numpy + "
             "Pillow), then pass data_dir=DIR or set BRAINSNN_DATA=DIR")
    if not script.is_file():
        raise DatasetError(f"found {str(tar_path)!r} (JPEG export) but no to_binary.py beside it "
                           "to convert it; put the official cifar-10-binary.tar.gz or the "
                           "cifar-10-batches-bin folder in the data directory")
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise DatasetError(f"CIFAR-10 is only available as {str(tar_path)!r} (JPEG), and "
                           f"converting it needs Pillow, which is not installed: {howto}") from exc
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"from-jpeg-{key}.tmp-", dir=target.parent))
        tmp.chmod(0o755)
    except OSError as exc:
        raise DatasetError(f"cannot write the CIFAR-10 cache in {str(target.parent)!r} ({exc}); "
                           f"set BRAINSNN_CACHE to a writable folder, or {howto}") from exc
    print(f"brainsnn: converting {tar_path} into the CIFAR-10 binary layout in {target} "
          "(once; about 10-30 s)", file=sys.stderr, flush=True)
    try:
        out = subprocess.run([sys.executable, str(script), str(tmp)], capture_output=True,
                             text=True)
        if out.returncode != 0:
            raise DatasetError(f"converting {str(tar_path)!r} with {str(script)!r} failed: "
                               f"{out.stderr.strip()[-2000:]}; or {howto}")
        try:
            os.replace(tmp, target)
        except OSError:
            # another process finished first: use its result
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _find_cifar(root: Path, split: str):
    """(images uint8 (n,3,32,32), labels uint8 (n,)) from the first CIFAR-10 layout found."""
    folders = [root / s for s in _CIFAR_SUBDIRS] + [root]
    for folder in folders:
        bin_dir = folder / "cifar-10-batches-bin"
        if bin_dir.is_dir():
            return _cifar_from_folder(bin_dir, split, _CIFAR_BIN_FILES, _parse_cifar_bin)
        bin_tar = folder / "cifar-10-binary.tar.gz"
        if bin_tar.is_file():
            return _cached_npy(bin_tar, split, lambda: _cifar_from_tar(
                bin_tar, split, _CIFAR_BIN_FILES, _parse_cifar_bin))
        py_dir = folder / "cifar-10-batches-py"
        if py_dir.is_dir():
            return _cifar_from_folder(py_dir, split, _CIFAR_PY_FILES, _parse_cifar_py)
        py_tar = folder / "cifar-10-python.tar.gz"
        if py_tar.is_file():
            return _cached_npy(py_tar, split, lambda: _cifar_from_tar(
                py_tar, split, _CIFAR_PY_FILES, _parse_cifar_py))
        jpeg_tar = folder / "cifar-10-jpeg.tar.gz"
        if jpeg_tar.is_file():
            return _cifar_from_folder(_convert_jpeg(jpeg_tar), split, _CIFAR_BIN_FILES,
                                      _parse_cifar_bin)
    looked = ", ".join(repr(str(f)) for f in folders)
    raise DatasetError(
        f"CIFAR-10 not found; looked in {looked} for cifar-10-batches-bin/, "
        "cifar-10-binary.tar.gz, cifar-10-batches-py/ or cifar-10-python.tar.gz. Put the official "
        f"binary version (cifar-10-binary.tar.gz or its extracted folder) in {str(folders[0])!r}, "
        "or point data_dir / BRAINSNN_DATA at the folder that holds it")


def load_cifar10(split: str = "train", data_dir=None, n: int | None = None):
    """CIFAR-10 colour images.

    Parameters
    ----------
    split : {"train", "test"}
        50,000 training or 10,000 test images (file order).
    data_dir : str or Path, optional
        Folder holding ``cifar-10/`` (or the CIFAR-10 files themselves); default
        :func:`default_data_dir`. See the module docstring for the accepted layouts.
    n : int, optional
        Return only the first ``n`` images of the split.

    Returns
    -------
    images : float32 array (n, 3, 32, 32), channels R, G, B, intensity in [0, 1]
    labels : int64 array (n,), class 0..9 named in :data:`CIFAR10_CLASSES`
    """
    _check_split(split)
    _check_n(n)
    root = _resolve_data_dir(data_dir)
    key = ("cifar10", str(root.resolve()), split)
    if key not in _MEMORY:
        _MEMORY[key] = _find_cifar(root, split)
    images, labels = _MEMORY[key]
    return _to_float(images, labels, n)


DATASETS = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10}


def load_dataset(name: str, split: str = "train", data_dir=None, n: int | None = None):
    """``load_<name>(split, data_dir, n)`` for ``name`` in :data:`DATASETS`
    (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``; ``-`` and ``_`` are interchangeable)."""
    key = str(name).lower().replace("-", "_")
    key = {"cifar_10": "cifar10", "fashion": "fashion_mnist", "fmnist": "fashion_mnist"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[key](split, data_dir=data_dir, n=n)
