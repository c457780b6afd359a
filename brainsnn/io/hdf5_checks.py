"""Checks that make an HDF5 file safe to read when it may be damaged or hostile.

A results file can come from anywhere. Before any data is read, every object is checked:

- links: only hard links (a soft or external link could reach another file);
- storage: no external raw storage and no virtual dataset (both read other files);
- filters: only gzip, shuffle and fletcher32 (nothing that loads a plugin);
- size: the bytes a dataset or attribute declares must fit what the file can hold, so a tiny
  file cannot make the reader allocate terabytes.

Values that HDF5 cannot checksum itself (scalars, strings, variable-length data) carry a SHA-256
digest (:func:`digest`) that the reader recomputes.
"""
from __future__ import annotations

import hashlib

import h5py
import numpy as np
from brainsnn.errors import ResultsError

__all__ = ["ALLOWED_FILTERS", "MAX_EXPANSION", "check_links", "check_dataset",
           "check_attribute", "declared_bytes", "digest", "has_fletcher32"]

# HDF5 filter ids: deflate (gzip), shuffle, fletcher32
ALLOWED_FILTERS = {h5py.h5z.FILTER_DEFLATE: "gzip", h5py.h5z.FILTER_SHUFFLE: "shuffle",
                   h5py.h5z.FILTER_FLETCHER32: "fletcher32"}
MAX_EXPANSION = 1100        # gzip expands at most about 1032 times: stored bytes x this bound
SLACK_BYTES = 1 << 16       # headers, heap ids and small values beyond the plain bound
MAX_DATASET_BYTES = 1 << 36  # 64 GiB: no results dataset is larger, whatever the file says


def declared_bytes(shape, dtype) -> int:
    """Bytes that reading an object of ``shape`` and ``dtype`` allocates (Python ints: exact)."""
    n = 1
    for d in shape or ():
        n *= int(d)
    return n * int(np.dtype(dtype).itemsize)


def _refuse(file, name, why):
    raise ResultsError(f"{file!r}: {name!r} {why}; refusing to read it")


def check_links(f: h5py.File, file: str) -> None:
    """Refuse soft and external links anywhere in the file."""
    links = []
    f.visititems_links(lambda name, link: links.append((name, link)))  # (raising inside
    for name, link in links:                                            # h5py's visit fails)
        if not isinstance(link, h5py.HardLink):
            kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
            _refuse(file, name, f"is {kind}, which a results file never holds")


def has_fletcher32(ds: h5py.Dataset) -> bool:
    dcpl = ds.id.get_create_plist()
    return any(dcpl.get_filter(i)[0] == h5py.h5z.FILTER_FLETCHER32
               for i in range(dcpl.get_nfilters()))


def check_dataset(ds: h5py.Dataset, file: str, file_size: int) -> None:
    """Refuse a dataset whose storage reads another file, whose filters are not gzip, shuffle
    or fletcher32, or whose declared size does not fit the bytes the file holds."""
    name = ds.name.lstrip("/")
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        _refuse(file, name, "is a virtual dataset (its data would come from other files)")
    if dcpl.get_external_count():
        _refuse(file, name, "has external raw storage (its data would come from another file)")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in ALLOWED_FILTERS:
            _refuse(file, name, f"uses HDF5 filter {code}; results files use only "
                                f"{', '.join(ALLOWED_FILTERS.values())}")
    if ds.dtype.kind not in "biufcSUO" or (ds.dtype.kind == "O"
                                            and h5py.check_string_dtype(ds.dtype) is None):
        _refuse(file, name, f"has type {ds.dtype}, which results files do not use")
    nbytes = declared_bytes(ds.shape, ds.dtype)
    stored = ds.id.get_storage_size()
    limit = min(MAX_EXPANSION * min(stored, file_size) + SLACK_BYTES, MAX_DATASET_BYTES)
    if nbytes > limit:
        _refuse(file, name, f"declares {nbytes} bytes {tuple(ds.shape)} of {ds.dtype} but the "
                            f"file stores {stored} bytes for it ({file_size} bytes in all)")


def check_attribute(obj, attr: str, file: str, file_size: int) -> None:
    """Refuse an attribute that declares more bytes than the file holds (attributes are not
    compressed) or has a type results files do not use."""
    aid = obj.attrs.get_id(attr)
    nbytes = declared_bytes(aid.shape, aid.dtype)
    where = f"{obj.name.lstrip('/') or '/'}@{attr}"
    if nbytes > file_size + SLACK_BYTES:
        _refuse(file, where, f"declares {nbytes} bytes but the file has {file_size}")


def digest(value) -> str:
    """SHA-256 of a stored value: its type, shape and bytes (strings as UTF-8)."""
    h = hashlib.sha256()
    if isinstance(value, str):
        h.update(b"str\0" + value.encode("utf-8", "surrogatepass"))
        return h.hexdigest()
    a = np.asarray(value)
    h.update(f"{a.dtype.str}{a.shape}\0".encode())
    if a.dtype.kind == "O":
        for item in a.flat:
            s = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else bytes(item)
            h.update(len(s).to_bytes(8, "little") + s)
    else:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
