"""Image datasets: MNIST, Fashion-MNIST and CIFAR-10 from their official file layouts.

The datasets are named ``mnist``, ``fashion_mnist`` and ``cifar10`` (:data:`DATASETS`, the one
registry of names). Every loader returns ``(images, labels)``: images ``float32`` in [0, 1]
shaped ``(n, 28, 28)`` (MNIST, Fashion-MNIST) or ``(n, 3, 32, 32)`` (CIFAR-10, channels first),
labels ``int64`` shaped ``(n,)``. The files must be in a data directory, given as an argument or
by the environment variable ``BRAINSNN_DATA`` (default: :func:`default_data_dir`); ``brainsnn
data fetch NAME`` downloads them (:mod:`brainsnn.io.download`).

Layouts that are accepted (``DIR`` is the data directory):

- MNIST: the four official IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), gzipped (``.gz``) or not, in
  ``DIR/mnist`` or in ``DIR`` itself.
- Fashion-MNIST: the same file names, in ``DIR/fashion-mnist`` (or ``DIR/fashion_mnist``,
  ``DIR/FashionMNIST``) or in ``DIR`` itself.
- CIFAR-10, looked for in ``DIR/cifar-10``, ``DIR/cifar10`` and ``DIR``, first match wins:
  the *binary version* folder ``cifar-10-batches-bin/`` (``data_batch_1..5.bin``,
  ``test_batch.bin``) or its tarball ``cifar-10-binary.tar.gz``; the *python version* folder
  ``cifar-10-batches-py/`` or its tarball ``cifar-10-python.tar.gz`` (read with an unpickler
  that builds only containers, strings, numbers and uint8 arrays: a batch cannot run code); or
  a JPEG export ``cifar-10-jpeg.tar.gz`` holding ``train/<class>/NNNN.jpg`` and
  ``test/<class>/NNNN.jpg``, decoded with Pillow in the order of the binary layout built from
  it (see :func:`read_cifar_jpeg_tar`). No file from a data directory is ever executed.

Every file is checked (IDX magic numbers and sizes, before anything is allocated; CIFAR record
sizes; label ranges); a missing or corrupt file raises :class:`DatasetError` with a message that
names the file and says where to put it. Decoded arrays are kept in memory for the life of the
process (each call returns a fresh float32 copy), and CIFAR tarballs are decoded once into
``.npy`` files in the cache directory (:func:`cache_dir`).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
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
    "data_folder",
    "dataset_name",
    "load_mnist",
    "load_fashion_mnist",
    "load_cifar10",
    "load_dataset",
    "load_image_data",
    "locate_dataset",
    "data_report",
    "read_cifar_jpeg_tar",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLITS = ("train", "test")

# folders under the data directory searched (before the data directory itself), per dataset;
# the first is where ``brainsnn data fetch`` puts the files
SUBDIRS = {"mnist": ("mnist", "MNIST"),
           "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
           "cifar10": ("cifar-10", "cifar10", "CIFAR-10")}

_MEMORY: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


# --------------------------------------------------------------------------- directories

def default_data_dir() -> Path:
    """The data directory used when none is given (see :func:`brainsnn.paths.data_dir`)."""
    return paths.data_dir()


def cache_dir() -> Path:
    """Where decoded datasets are cached (see :func:`brainsnn.paths.cache_dir`)."""
    return paths.cache_dir()


def data_folder(data_dir=None) -> Path:
    """``data_dir`` as a path (``~`` expanded), or :func:`default_data_dir` when None."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _resolve_data_dir(data_dir) -> Path:
    root = data_folder(data_dir)
    if not root.is_dir():
        how = ("the data_dir argument" if data_dir is not None else
               "$BRAINSNN_DATA" if os.environ.get("BRAINSNN_DATA") else "the default")
        raise DatasetError(
            f"data directory {str(root)!r} (from {how}) does not exist; pass data_dir=... or set "
            "BRAINSNN_DATA to the folder that holds mnist/, fashion-mnist/ and cifar-10/ "
            "(`brainsnn data fetch NAME` downloads them there)")
    return root


def _folders(root: Path, name: str) -> list[Path]:
    return [root / s for s in SUBDIRS[name]] + [root]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _check_n(n):
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise DatasetError(f"n must be a positive integer or None (all images), got {n!r}")


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _to_float(images_u8: np.ndarray, labels: np.ndarray, n) -> tuple[np.ndarray, np.ndarray]:
    if n is not None:
        if n > len(labels):
            raise DatasetError(f"n={n} images asked for, but the split has only {len(labels)}")
        images_u8, labels = images_u8[:n], labels[:n]
    images = images_u8.astype(np.float32)
    images /= np.float32(255.0)        # correctly rounded grey level / 255
    return images, labels.astype(np.int64, copy=True)


def _check_labels(labels: np.ndarray, name) -> np.ndarray:
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{str(name)!r} holds label {labels.max()}, expected 0..9")
    return labels


# --------------------------------------------------------------------------- IDX (MNIST)

_IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
# deflate expands data at most about 1032-fold: a bound on what a .gz file can hold
_DEFLATE_MAX_RATIO = 1032


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


def _read_idx(path: Path, ndim: int, item_shape: tuple = ()) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions (magic 0x0000080<ndim>), gzipped
    or not. The header is checked (magic, ``item_shape`` = dimensions after the first, size
    against what the file can hold) before the data are read."""
    header_len = 4 + 4 * ndim
    stored = path.stat().st_size
    gz = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            header = f.read(header_len)
            if len(header) < header_len:
                raise DatasetError(f"{str(path)!r} is too short ({len(header)} bytes) to be an "
                                   "IDX file; replace it with the official file")
            magic = int.from_bytes(header[:4], "big")
            if magic != 0x0800 + ndim:
                raise DatasetError(
                    f"{str(path)!r} has magic number 0x{magic:08x}, expected "
                    f"0x{0x0800 + ndim:08x} (IDX, unsigned bytes, {ndim} dimensions); it is not "
                    "the official file or it is corrupt")
            dims = tuple(int.from_bytes(header[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
            if item_shape and dims[1:] != item_shape:
                raise DatasetError(f"{str(path)!r} holds items of shape {dims[1:]}, expected "
                                   f"{item_shape}")
            size = math.prod(dims)          # Python integers: no overflow
            capacity = stored * _DEFLATE_MAX_RATIO if gz else stored - header_len
            if size > capacity:
                raise DatasetError(
                    f"{str(path)!r} declares shape {dims} ({header_len + size} bytes) but the "
                    f"file has {stored} bytes{' gzipped' if gz else ''}; the file is truncated "
                    "or its header is corrupt")
            data = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"cannot read {str(path)!r}: {exc}; the file is corrupt or truncated, "
                           "replace it with the official file") from exc
    if len(data) != size:
        raise DatasetError(f"{str(path)!r} declares shape {dims} ({size} data bytes) but holds "
                           f"{'more' if len(data) > size else len(data)} data bytes; the file is "
                           "truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, count=size).reshape(dims)


def _idx_file(folders, base: str) -> Path | None:
    for folder in folders:
        for name in (base + ".gz", base, base.replace("-idx", ".idx") + ".gz",
                     base.replace("-idx", ".idx")):
            p = folder / name
            if p.is_file():
                return p
    return None


def _find_idx(root: Path, name: str, base: str, what: str) -> Path:
    folders = _folders(root, name)
    path = _idx_file(folders, base)
    if path is None:
        looked = ", ".join(repr(str(f)) for f in folders)
        raise DatasetError(
            f"{what} file {base + '.gz'!r} (or {base!r}) not found; looked in {looked}. Put the "
            f"official file, gzipped or not, in {str(folders[0])!r} (`brainsnn data fetch "
            f"{name}`), or point data_dir / BRAINSNN_DATA at the folder that holds it")
    return path


def _load_idx_pair(root: Path, name: str, split: str, what: str):
    img_path = _find_idx(root, name, _IDX_NAMES[(split, "images")], what)
    lab_path = _find_idx(root, name, _IDX_NAMES[(split, "labels")], what)
    key = ("idx", _file_key(img_path), _file_key(lab_path))
    if key not in _MEMORY:
        images = _read_idx(img_path, 3, item_shape=(28, 28))
        labels = _check_labels(_read_idx(lab_path, 1), lab_path)
        if len(images) != len(labels):
            raise DatasetError(f"{str(img_path)!r} holds {len(images)} images but "
                               f"{str(lab_path)!r} holds {len(labels)} labels; one of them is "
                               "from another split or corrupt")
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
    images, labels = _load_idx_pair(_resolve_data_dir(data_dir), "mnist", split, "MNIST")
    return _to_float(images, labels, n)


def load_fashion_mnist(split: str = "train", data_dir=None, n: int | None = None):
    """Fashion-MNIST (Zalando) clothing images, as :func:`load_mnist` (same shapes, 10 classes
    named in :data:`FASHION_MNIST_CLASSES`), from ``DIR/fashion-mnist``."""
    _check_split(split)
    _check_n(n)
    images, labels = _load_idx_pair(_resolve_data_dir(data_dir), "fashion_mnist", split,
                                    "Fashion-MNIST")
    return _to_float(images, labels, n)


# --------------------------------------------------------------------------- CIFAR-10

_CIFAR_BIN_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                    "test": ["test_batch.bin"]}
_CIFAR_PY_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_RECORD = 1 + 3 * 32 * 32
_MAX_MEMBER_BYTES = 1 << 28     # no member of a CIFAR-10 archive is near 256 MiB


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


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 pickles bytes with protocol 2, for latin-1 only."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError("only latin-1 text may be encoded in a CIFAR-10 batch")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR-10 python-version batch holds: dicts, lists, tuples, bytes,
    str, int and numpy arrays. Any other global (a function, a class) is refused, so a
    crafted batch cannot run code."""

    _NUMPY = {(f"numpy.{core}.{module}", name) for core in ("core", "_core")
              for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}
    _NUMPY |= {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self._NUMPY:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not part of a CIFAR-10 batch")


def _parse_cifar_py(data: bytes, name: str):
    try:
        batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
        raw, labels = batch[b"data"], batch[b"labels"]
        if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 2 \
                or raw.shape[1] != 3072:
            raise ValueError(f"b'data' is {type(raw).__name__} "
                             f"{getattr(raw, 'dtype', '')}{list(getattr(raw, 'shape', []))}, "
                             "expected a uint8 array (n, 3072)")
        images = raw.reshape(-1, 3, 32, 32)
        labels = np.asarray(labels, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001  (any unpickling failure means a bad file)
        raise DatasetError(f"{name!r} is not a CIFAR-10 python-version batch ({exc}); the file "
                           "is corrupt or crafted, replace it with the official file") from exc
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


def _read_member(tar, member, tar_path: Path) -> bytes:
    if member.size > _MAX_MEMBER_BYTES:
        raise DatasetError(f"{str(tar_path)!r}: member {member.name!r} declares {member.size} "
                           "bytes, more than any CIFAR-10 file; the archive is corrupt")
    return tar.extractfile(member).read()


def _open_tar_error(tar_path: Path, exc) -> DatasetError:
    return DatasetError(f"cannot read {str(tar_path)!r}: {exc}; the archive is corrupt or "
                        "truncated, replace it with the official file")


def _cifar_from_tar(tar_path: Path, split: str, names, parser):
    wanted = {n: None for n in names[split]}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for m in tar:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in wanted:
                    wanted[base] = _read_member(tar, m, tar_path)
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise _open_tar_error(tar_path, exc) from exc
    missing = [n for n, d in wanted.items() if d is None]
    if missing:
        raise DatasetError(f"{str(tar_path)!r} lacks {', '.join(missing)}; it is not the official "
                           "CIFAR-10 archive or it is incomplete")
    return _concat([parser(d, f"{tar_path}:{n}") for n, d in wanted.items()])


# The binary layout built from a JPEG export shuffles the class-sorted records with this seed
# (training split first, then the test split), so that batches mix classes as the official
# ones do; the same seed keeps the record order of data converted before.
_JPEG_EXPORT_SEED = 20261126
_CIFAR_TRAIN_MAX = 50000         # five batches of 10,000 records


def read_cifar_jpeg_tar(tar_path, split: str):
    """CIFAR-10 from a JPEG export tarball (``train/<class>/NNNN.jpg``, ``test/<class>/NNNN.jpg``).

    The members of ``split`` are decoded with Pillow in the order of their names; the records
    are then shuffled with a fixed seed: a permutation of the training split, then one of the
    test split, drawn in that order from ``numpy.random.default_rng(20261126)``. The result
    equals the official *binary version* layout built from the same export (batches 1-5
    concatenated, or the test batch). Every JPEG must be 32 x 32 (checked before decoding).

    Returns ``(images uint8 (n, 3, 32, 32) R, G, B planes, labels uint8 (n,))``.
    """
    tar_path = Path(tar_path)
    _check_split(split)
    files = {"train": [], "test": []}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for m in tar:
                top = m.name.split("/", 1)[0]
                if m.isfile() and top in files:
                    files[top].append((m.name, _read_member(tar, m, tar_path)
                                       if top == split else None))
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise _open_tar_error(tar_path, exc) from exc
    n_train, n_test = len(files["train"]), len(files["test"])
    if n_train > _CIFAR_TRAIN_MAX:
        raise DatasetError(f"{str(tar_path)!r} holds {n_train} training images, more than the "
                           f"{_CIFAR_TRAIN_MAX} of CIFAR-10; it is not a CIFAR-10 export")
    members = sorted(files[split])
    if not members:
        raise DatasetError(f"{str(tar_path)!r} holds no {split}/<class>/*.jpg image; it is not "
                           "a CIFAR-10 JPEG export")
    images = np.empty((len(members), 3, 32, 32), dtype=np.uint8)
    labels = np.empty(len(members), dtype=np.uint8)
    for k, (name, data) in enumerate(members):
        images[k], labels[k] = _decode_jpeg(data, name, tar_path)
    rng = np.random.default_rng(_JPEG_EXPORT_SEED)
    order = rng.permutation(n_train)
    if split == "test":
        order = rng.permutation(n_test)
    return images[order], labels[order]


def _decode_jpeg(data: bytes, name: str, tar_path: Path):
    """(pixels uint8 (3, 32, 32), label) of the member ``name`` = ``<split>/<class>/NNNN.jpg``."""
    from PIL import Image

    cls = name.split("/")[1] if name.count("/") >= 2 else ""
    if cls not in CIFAR10_CLASSES:
        raise DatasetError(f"{str(tar_path)!r}: member {name!r} is not in a class folder "
                           f"(expected <split>/<class>/NNNN.jpg with a class in "
                           f"{', '.join(CIFAR10_CLASSES)})")
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size                  # from the header: nothing decoded yet
            pixels = np.asarray(im.convert("RGB"), dtype=np.uint8) if size == (32, 32) else None
    except (OSError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{str(tar_path)!r}: {name!r} is not a readable JPEG ({exc})") from exc
    if pixels is None:
        raise DatasetError(f"{str(tar_path)!r}: {name!r} is {size[0]} x {size[1]} pixels, "
                           "expected 32 x 32")
    return pixels.transpose(2, 0, 1), CIFAR10_CLASSES.index(cls)


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


def _batches_in_folder(names, parser):
    return lambda path, split: _cifar_from_folder(path, split, names, parser)


def _batches_in_tar(names, parser):
    return lambda path, split: _cached_npy(
        path, split, lambda: _cifar_from_tar(path, split, names, parser))


# (entry in a CIFAR-10 folder, is a folder, how to read one split of it, description);
# the first entry found wins
_CIFAR_LAYOUTS = (
    ("cifar-10-batches-bin", True, _batches_in_folder(_CIFAR_BIN_FILES, _parse_cifar_bin),
     "binary version, extracted"),
    ("cifar-10-binary.tar.gz", False, _batches_in_tar(_CIFAR_BIN_FILES, _parse_cifar_bin),
     "binary version tarball"),
    ("cifar-10-batches-py", True, _batches_in_folder(_CIFAR_PY_FILES, _parse_cifar_py),
     "python version, extracted"),
    ("cifar-10-python.tar.gz", False, _batches_in_tar(_CIFAR_PY_FILES, _parse_cifar_py),
     "python version tarball"),
    ("cifar-10-jpeg.tar.gz", False,
     lambda path, split: _cached_npy(path, split, lambda: read_cifar_jpeg_tar(path, split)),
     "JPEG export, decoded once into the cache"),
)


def _cifar_source(root: Path):
    """(path, reader, description) of the first CIFAR-10 layout under ``root``, or None."""
    for folder in _folders(root, "cifar10"):
        for entry, is_folder, reader, description in _CIFAR_LAYOUTS:
            path = folder / entry
            if path.is_dir() if is_folder else path.is_file():
                return path, reader, description
    return None


def _find_cifar(root: Path, split: str):
    """(images uint8 (n,3,32,32), labels uint8 (n,)) from the first CIFAR-10 layout found."""
    source = _cifar_source(root)
    if source is None:
        folders = _folders(root, "cifar10")
        looked = ", ".join(repr(str(f)) for f in folders)
        raise DatasetError(
            f"CIFAR-10 not found; looked in {looked} for "
            f"{', '.join(entry for entry, *_ in _CIFAR_LAYOUTS)}. Put the official binary "
            f"version (cifar-10-binary.tar.gz or its extracted folder) in {str(folders[0])!r} "
            "(`brainsnn data fetch cifar10`), or point data_dir / BRAINSNN_DATA at the folder "
            "that holds it")
    path, reader, _ = source
    return reader(path, split)


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


# --------------------------------------------------------------------------- the registry

DATASETS = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10}


def dataset_name(name) -> str:
    """The registry name of a dataset: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``
    (upper case and ``-`` for ``_`` are accepted); anything else raises :class:`DatasetError`."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        hint = (" (Fashion-MNIST is named 'fashion_mnist')" if key in ("fashion", "fmnist")
                else " (CIFAR-10 is named 'cifar10')" if key == "cifar_10" else "")
        raise DatasetError(f"unknown dataset {name!r}{hint}; expected one of "
                           f"{', '.join(DATASETS)}")
    return key


def load_dataset(name: str, split: str = "train", data_dir=None, n: int | None = None):
    """``load_<name>(split, data_dir, n)`` for ``name`` in :data:`DATASETS`
    (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``)."""
    return DATASETS[dataset_name(name)](split, data_dir=data_dir, n=n)


def load_image_data(dataset, n_train=None, n_test=None, data_dir=None, validation=0):
    """``(x_train, y_train, x_test, y_test)`` of a dataset in :data:`DATASETS`, images
    ``(n, C, H, W)`` float32 in [0, 1] (a channel axis is added to grey images).

    ``n_train`` / ``n_test``: the first images of each split (default all). With
    ``validation`` = N > 0 the test set is not read: the first ``n_train`` + N training
    images (default: all) are read, and the last N of them are held out and returned in the
    test set's place (for choosing settings without the test set); ``n_test`` (<= N) then
    keeps the first ``n_test`` of the held-out images.
    """
    load = DATASETS[dataset_name(dataset)]
    if validation:
        if n_test is not None and not 0 < n_test <= validation:
            raise DatasetError(f"n_test must be between 1 and the {validation} held-out "
                               f"validation images, got {n_test}")
        x, y = load("train", data_dir=data_dir,
                    n=None if n_train is None else n_train + validation)
        if not 0 < validation < len(x):
            raise DatasetError(f"validation must hold between 1 and {len(x) - 1} of the "
                               f"{len(x)} training images read, got {validation}")
        x_train, y_train = x[:len(x) - validation], y[:len(x) - validation]
        held_out = slice(len(x) - validation, None if n_test is None
                         else len(x) - validation + n_test)
        x_test, y_test = x[held_out], y[held_out]
    else:
        x_train, y_train = load("train", data_dir=data_dir, n=n_train)
        x_test, y_test = load("test", data_dir=data_dir, n=n_test)
    if x_train.ndim == 3:
        x_train, x_test = x_train[:, None], x_test[:, None]
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------- where data are

@dataclass(frozen=True)
class DatasetLocation:
    """Where :func:`locate_dataset` found a dataset (``path`` None: not found)."""
    name: str
    path: Path | None           # the folder of the IDX files, or the CIFAR-10 folder / tarball
    layout: str                 # how the files are stored ("" when not found)
    looked_in: tuple            # every folder searched, in order
    missing: tuple = ()         # IDX files not found (a partial set)


def locate_dataset(name, data_dir=None) -> DatasetLocation:
    """Where the loaders would read dataset ``name`` from, without reading it.

    ``data_dir``: as for the loaders (default :func:`default_data_dir`); a folder that does
    not exist is reported as looked in, with nothing found.
    """
    name = dataset_name(name)
    root = data_folder(data_dir)
    looked = tuple(_folders(root, name))
    if name == "cifar10":
        source = _cifar_source(root) if root.is_dir() else None
        if source is None:
            return DatasetLocation(name, None, "", looked)
        return DatasetLocation(name, source[0], source[2], looked)
    found = {base: _idx_file(looked, base) for base in _IDX_NAMES.values()}
    missing = tuple(base for base, p in found.items() if p is None)
    if missing:
        return DatasetLocation(name, None, "", looked, missing)
    gz = all(p.suffix == ".gz" for p in found.values())
    return DatasetLocation(name, found[_IDX_NAMES[("train", "images")]].parent,
                           "IDX files, gzipped" if gz else "IDX files", looked)


def data_report(data_dir=None) -> str:
    """What ``brainsnn data`` prints: the data folder and where it came from, then for each
    dataset whether it was found, in which layout, and every folder looked in."""
    root = data_folder(data_dir)
    origin = ("given" if data_dir is not None else
              "from $BRAINSNN_DATA" if os.environ.get("BRAINSNN_DATA") else
              "the per-user default; set BRAINSNN_DATA or pass --data DIR for another")
    lines = [f"data folder: {root} ({origin})" + ("" if root.is_dir() else " -- does not exist")]
    width = max(len(n) for n in DATASETS)
    indent = " " * (width + 2)
    for name in DATASETS:
        loc = locate_dataset(name, root)
        if loc.path is not None:
            lines.append(f"{name:<{width}}  found: {loc.path} ({loc.layout})")
        else:
            what = (f"missing {', '.join(loc.missing)} (.gz or not)" if loc.missing
                    else "none of " + ", ".join(entry for entry, *_ in _CIFAR_LAYOUTS))
            lines.append(f"{name:<{width}}  not found: {what}")
        lines.append(f"{indent}looked in: {', '.join(str(p) for p in loc.looked_in)}")
        if loc.path is None:
            lines.append(f"{indent}get it with: brainsnn data fetch {name}"
                         + (f" --data {root}" if data_dir is not None else ""))
    lines.append(f"decoded CIFAR-10 arrays are cached in {cache_dir() / 'cifar-10'}")
    return "\n".join(lines)
