"""Download the official dataset files: checksummed, resumable, placed atomically.

    brainsnn data fetch mnist|fashion_mnist|cifar10 [--data DIR] [--mirror URL]

:func:`fetch` puts the official files where the loaders of :mod:`brainsnn.io.datasets` look
first: MNIST's and Fashion-MNIST's four gzipped IDX files into ``DIR/mnist`` and
``DIR/fashion-mnist``, CIFAR-10's binary tarball ``cifar-10-binary.tar.gz`` into
``DIR/cifar-10`` (read as it is, no extraction). ``DIR`` is the data folder
(:func:`brainsnn.paths.data_dir`). Each file:

- is written to ``<name>.part`` and renamed to ``<name>`` only after its MD5 equals the official
  value (:data:`SOURCES`), so a file under its final name is always complete and verified; a
  wrong checksum removes the partial file and raises :class:`DownloadError`;
- resumes an interrupted transfer: a ``<name>.part`` left by a lost connection is continued
  with an HTTP ``Range`` request (a server that ignores ``Range`` sends the whole file again);
- shows a progress bar (tqdm) on a terminal; every failure names the URL.

Why the standard library and not a download library: torchvision's helpers would add
torchvision (large, pinned to one torch release) for this one job, and neither ``requests`` nor
``pooch`` is a dependency of brainsnn. ``urllib.request`` with the small loop below does all
that is needed (Range resume, streamed MD5 check, atomic rename) and honours the usual
``http_proxy`` / ``https_proxy`` settings.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from brainsnn.errors import DownloadError
from brainsnn.io.datasets import SUBDIRS, data_folder, dataset_name

__all__ = ["DownloadError", "RemoteFile", "Source", "SOURCES", "fetch", "download_file",
           "file_md5", "PART_SUFFIX"]

PART_SUFFIX = ".part"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset's official distribution and its official MD5 (hex)."""
    name: str
    md5: str


@dataclass(frozen=True)
class Source:
    """Where a dataset is published: base URLs tried in order, and its files."""
    mirrors: tuple
    files: tuple


_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

SOURCES = {
    "mnist": Source(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        tuple(RemoteFile(n, md5) for n, md5 in zip(_IDX, (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")))),
    "fashion_mnist": Source(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        tuple(RemoteFile(n, md5) for n, md5 in zip(_IDX, (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")))),
    "cifar10": Source(
        ("https://www.cs.toronto.edu/~kriz/",),
        (RemoteFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),)),
}


def file_md5(path) -> str:
    """Hex MD5 of a file's content, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _lock(f, dest: Path):
    """Hold an exclusive lock on the open partial file (POSIX; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:
        return
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise DownloadError(f"another process is downloading {str(dest)!r} (it holds "
                            f"{str(dest) + PART_SUFFIX!r}); wait for it to finish") from exc


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "brainsnn"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _start(response, offset: int, url: str) -> tuple[int, int | None]:
    """(offset the body starts at, total size or None) of a response to a (Range) request."""
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if offset and getattr(response, "status", None) == 206:
        m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            raise DownloadError(f"{url} answered the request for bytes {offset}- with "
                                f"Content-Range {response.headers.get('Content-Range')!r}")
        return offset, int(m.group(2)) if m.group(2) != "*" else None
    return 0, length                   # the whole file: start again from its first byte


def _verify_and_place(part: Path, dest: Path, md5: str, url: str) -> Path:
    got = file_md5(part)
    if got != md5:
        part.unlink()
        raise DownloadError(f"the file downloaded from {url} has MD5 {got}, expected {md5} "
                            "(the official value): the transfer was corrupted or the server "
                            "holds another file; nothing was kept, run again to retry")
    os.replace(part, dest)
    return dest


def download_file(url: str, dest, md5: str, progress: bool = False,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``; returns ``dest``.

    Parameters
    ----------
    url : str
        http(s) or file URL.
    dest : str or Path
        Final path; its folder is created. Written only after the MD5 matched.
    md5 : str
        Expected MD5 of the whole file (hex).
    progress : bool
        Show a tqdm progress bar (bytes, rate, ETA) on stderr.
    timeout : float
        Seconds a connection may stay silent before the transfer counts as lost.

    A ``dest.part`` left by an earlier, interrupted call is continued with an HTTP Range
    request. Raises :class:`DownloadError` (naming ``url``) when the server cannot be reached
    or answers with an error, when the connection is lost (the partial file is kept: call
    again to resume) and when the MD5 differs (the partial file is removed).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + PART_SUFFIX)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        f = open(part, "ab")
    except OSError as exc:
        raise DownloadError(f"cannot write {str(part)!r} ({exc}); choose a writable data "
                            "folder with --data DIR or BRAINSNN_DATA") from exc
    with f:
        _lock(f, dest)
        offset = os.fstat(f.fileno()).st_size
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:      # the partial file already holds every byte
                return _verify_and_place(part, dest, md5, url)
            raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"cannot download {url}: {reason}") from exc
        with response:
            offset, total = _start(response, offset, url)
            if offset == 0:
                f.truncate(0)
            received = _copy(response, f, url, offset, total, progress, dest.name)
        if total is not None and offset + received < total:
            raise DownloadError(f"the connection to {url} closed after {offset + received} of "
                                f"{total} bytes; {str(part)!r} is kept: run again to resume")
        f.flush()
        return _verify_and_place(part, dest, md5, url)


def _copy(response, f, url, offset, total, progress, label) -> int:
    """Stream the body into ``f``; returns the bytes received."""
    from tqdm import tqdm

    received = 0
    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
               desc=label, disable=not progress, file=sys.stderr)
    with bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"the connection to {url} was lost after "
                                    f"{offset + received} bytes ({exc!r}); the partial file is "
                                    "kept: run again to resume") from exc
            if not chunk:
                return received
            try:
                f.write(chunk)
            except OSError as exc:
                raise DownloadError(f"cannot write {f.name!r} ({exc}) while downloading "
                                    f"{url}") from exc
            received += len(chunk)
            bar.update(len(chunk))


def fetch(name: str, data_dir=None, mirror: str | None = None, progress: bool | None = None,
          report=None) -> list[Path]:
    """Download dataset ``name`` (``mnist``, ``fashion_mnist``, ``cifar10``) into the data folder.

    Parameters
    ----------
    name : str
        A name of :data:`brainsnn.io.datasets.DATASETS`.
    data_dir : str or Path, optional
        Data folder (default :func:`brainsnn.paths.data_dir`); the files go into its
        ``mnist/``, ``fashion-mnist/`` or ``cifar-10/`` subfolder, created if needed.
    mirror : str, optional
        Base URL that holds the files under their official names, used instead of the
        official addresses (e.g. a local copy). Default: the official mirrors, in order.
    progress : bool, optional
        Progress bars; default: when stderr is a terminal.
    report : callable, optional
        Called with one line of text per file (what is done, from where).

    Returns the paths of the dataset's files. A file already present with the official MD5 is
    kept; one with another MD5 raises :class:`DownloadError` (it is not replaced).
    """
    name = dataset_name(name)
    source = SOURCES[name]
    folder = data_folder(data_dir) / SUBDIRS[name][0]
    mirrors = (mirror,) if mirror else source.mirrors
    for base in mirrors:
        if not re.match(r"(https?|file)://", base):
            raise DownloadError(f"mirror {base!r} is not an http(s):// or file:// URL")
    show = sys.stderr.isatty() if progress is None else progress
    say = report or (lambda line: None)
    placed = []
    for remote in source.files:
        dest = folder / remote.name
        if dest.is_file():
            got = file_md5(dest)
            if got != remote.md5:
                raise DownloadError(f"{str(dest)!r} exists but its MD5 is {got}, not the "
                                    f"official {remote.md5}; move it away to download the "
                                    "official file")
            say(f"{dest}: present, MD5 verified")
            placed.append(dest)
            continue
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + remote.name
            partial = dest.with_name(dest.name + PART_SUFFIX)
            resume = f" (resuming at {partial.stat().st_size} bytes)" if partial.is_file() else ""
            say(f"{dest}: downloading {url}{resume}")
            try:
                placed.append(download_file(url, dest, remote.md5, progress=show))
                say(f"{dest}: MD5 verified")
                break
            except DownloadError as exc:
                errors.append(str(exc))
        else:
            raise DownloadError("; ".join(errors))
    return placed
