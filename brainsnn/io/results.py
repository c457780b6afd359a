"""One HDF5 file per run: :class:`RunResults`, an in-memory record written atomically.

A record is a tree of datasets (numpy arrays, numbers, strings) and attributes, addressed by
``/``-separated paths, plus the run's metadata: protocol, configuration, seed, device,
machine, package versions, start and end time, status. ``save`` writes the whole record to
``<path>.tmp-<pid>`` and renames it onto ``path``, so a file under the final name is always
complete; an interrupted write leaves no file under that name.

Example::

    rec = RunResults("diehl_cook", config=vars(args), seed=args.seed, device=args.device)
    with rec.timer("train"):
        ...
    rec.set("layers/exc/weights", W, layout="pre_post", units="1")
    rec.set("layers/exc/spike_rate", rates, units="Hz")
    rec.add_metric("accuracy", 0.91, step=epoch)
    rec.save(args.out)                        # complete run
    rec.save(args.out, complete=False)        # resumable checkpoint
    rec = RunResults.load(args.out)           # everything back, identical

Conventions of this project (what ``brainsnn inspect`` and ``brainsnn plot`` read):

- ``layers/<name>/weights``: weight matrix; ``layout`` attribute ``"pre_post"`` (Brian2,
  ``(n_pre, n_post)``: rows are inputs, columns neurons; the assumption when absent) or
  ``"post_pre"`` (torch Linear, ``(n_post, n_pre)``); :data:`LAYOUTS`;
  ``layers/<name>/kernels``: convolution kernels
  ``(out_channels, in_channels, kh, kw)``; ``layers/<name>/theta``: thresholds.
- ``layers/<name>/spike_rate``: mean spikes per neuron per step, or Hz (attribute ``units``).
- ``metrics/<name>``: one value per :meth:`RunResults.add_metric` call; the steps given
  with them in ``metrics/steps/<name>``. ``metrics/accuracy_vs_T`` with ``metrics/T``.
- ``energy/<layer>`` joules per image, ``energy/total``.
- ``timings/<name>`` seconds (from :meth:`RunResults.timer`).

Format version 2 (the layout, in full, is in the docs' results-format page):

- root attributes ``format="brainsnn-results"``, ``format_version``, ``protocol``, ``seed``,
  ``device``, ``status`` (``complete``/``checkpoint``), ``start_time``, ``end_time`` (ISO 8601,
  UTC), ``saved_time``; ``config``, ``versions``, ``machine`` as JSON strings (the one encoding
  of a configuration; ``None`` is JSON ``null``); the same three, key by key, as attributes of
  ``meta/config``, ``meta/versions`` and ``meta/machine`` (a view, never read back). The
  top-level name ``meta`` is reserved.
- every array dataset is chunked with HDF5's fletcher32 checksum; scalars and strings (which
  HDF5 cannot filter) carry the SHA-256 of their value in the attribute ``_brainsnn_sha256``;
  both are verified by :meth:`RunResults.load`, which also refuses external storage, virtual
  datasets, links and sizes the file cannot hold (:mod:`brainsnn.io.hdf5_checks`).
- arrays with an axis carry HDF5 dimension scales: ``metrics/steps/<name>`` on axis 0 of
  ``metrics/<name>``; ``<group>/<X>`` (or ``metrics/<X>``) on the last axis of
  ``<group>/<name>_vs_<X>``; others from :meth:`RunResults.set_scale`.
- ``checkpoint/``: the state a resumed run continues from; a complete file holds none.
  Version 1 files called this group ``state``; that name is read as ``checkpoint``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import glob
import json
import os
import platform
import re
import time
from collections.abc import Mapping
from importlib import metadata as _metadata
from pathlib import Path

import h5py
import numpy as np
from brainsnn import __version__
from brainsnn.errors import ResultsError  # noqa: F401
from brainsnn.io import hdf5_checks

__all__ = ["RunResults", "ResultsError", "FORMAT", "FORMAT_VERSION", "READABLE_VERSIONS",
           "CHECKPOINT", "LAYOUTS", "results_path", "package_versions",
           "remove_stale_temporaries", "temporary_owner", "flatten"]

FORMAT = "brainsnn-results"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CHECKPOINT = "checkpoint"                 # the group a resumed run continues from
_LEGACY_CHECKPOINT = "state"              # its name in format version 1 (read as CHECKPOINT)
LAYOUTS = {"pre_post": "(n_pre, n_post): row i holds the weights leaving input i",
           "post_pre": "(n_post, n_pre): row j holds the weights reaching neuron j (torch)"}
RESERVED_TOP = ("meta",)
_META_ATTRS = ("format", "format_version", "protocol", "seed", "device", "status", "start_time",
               "end_time", "saved_time", "config", "versions", "machine")
_JSON_ATTRS = "_brainsnn_json_attrs"      # names of attributes stored as JSON
_NUMPY_DTYPE = "_brainsnn_numpy_dtype"    # exact dtype of a unicode string array
_SHA256 = "_brainsnn_sha256"              # digest of a value HDF5 cannot checksum
_META_SHA256 = "_brainsnn_meta_sha256"    # digest of the root metadata
_SCALE_ATTRS = ("CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST", "DIMENSION_LABELS")
_COMPRESS_BYTES = 1 << 18                 # gzip datasets from 256 KiB
_TEMPORARY = re.compile(r"^(?P<final>.+)\.tmp-(?P<pid>\d+)$")




def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def results_path(protocol: str, scale: str, seed: int, directory="results") -> Path:
    """The default output file of a protocol: ``<directory>/<protocol>_<scale>_seed<seed>.h5``."""
    return Path(directory) / f"{protocol}_{scale}_seed{int(seed)}.h5"


@functools.lru_cache(maxsize=1)
def package_versions() -> dict:
    """Versions of Python, brainsnn and its dependencies.

    brainsnn's is ``brainsnn.__version__``, the version of the code that runs: an editable
    install's distribution metadata keeps the version it was installed at. The others are
    those of the installed distributions.
    """
    versions = {"python": platform.python_version(), "brainsnn": __version__}
    for dist in ("brian2", "brian2cuda", "numpy", "scipy", "torch", "h5py", "sympy",
                 "matplotlib"):
        try:
            versions[dist] = _metadata.version(dist)
        except _metadata.PackageNotFoundError:
            if dist != "brian2cuda":
                versions[dist] = "not installed"
    return versions


@functools.lru_cache(maxsize=1)
def _machine() -> dict:
    from brainsnn.brian.devices import describe_machine
    return describe_machine()


# --------------------------------------------------------------------------- values

def _json_safe(obj, where="config"):
    """A copy of ``obj`` made of dict/list/str/int/float/bool/None, or TypeError naming the key."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if type(obj).__module__.startswith("brian2"):      # a Quantity, e.g. 0.5 * ms
        return str(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where} is a {type(obj).__name__}, which a results file cannot store; "
                    "use numbers, strings, booleans, None, lists or dicts")


def _norm_path(path) -> str:
    if not isinstance(path, str):
        raise TypeError(f"a results path must be a string like 'layers/exc/weights', "
                        f"got {type(path).__name__}")
    parts = [p for p in path.strip("/").split("/")]
    if path.strip("/") == "":
        return ""
    if any(p in ("", ".", "..") for p in parts):
        raise ResultsError(f"invalid results path {path!r}: expected names separated by single "
                           "'/', like 'layers/exc/weights'")
    if parts[0] == _LEGACY_CHECKPOINT:
        parts[0] = CHECKPOINT
    return "/".join(parts)


def _to_value(value, path):
    """(stored value, extra attrs) for a dataset value."""
    extra = {}
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()                      # torch tensor
    elif type(value).__module__.startswith("brian2") and hasattr(value, "dim"):
        extra["units"] = str(value.dim) if str(value.dim) else "1"  # SI base units
        value = np.asarray(value)
    if value is None:
        raise TypeError(f"cannot store None at {path!r}; store a number, string or array")
    if isinstance(value, str):
        return value, extra
    if isinstance(value, bytes):
        return np.bytes_(value), extra
    if isinstance(value, np.generic):
        return value, extra
    if isinstance(value, (bool, int, float, complex)):
        return np.asarray(value)[()], extra
    arr = np.array(value, copy=True)
    if arr.dtype == object:
        if all(isinstance(v, str) for v in arr.flat):
            arr = arr.astype(str)
        else:
            raise TypeError(f"cannot store {type(value).__name__} at {path!r}: it converts to an "
                            "array of Python objects; store numbers or strings of one type")
    if arr.dtype.kind not in "biufcUS":
        raise TypeError(f"cannot store an array of dtype {arr.dtype} at {path!r}; "
                        "use numbers, booleans or strings")
    return arr, extra


def _check_attr_name(name):
    if (not isinstance(name, str) or not name or name.startswith("_brainsnn_")
            or name in _SCALE_ATTRS):
        raise ResultsError(f"invalid attribute name {name!r}: use a non-empty string that does "
                           f"not start with '_brainsnn_' and is none of {', '.join(_SCALE_ATTRS)} "
                           "(HDF5 dimension scales use those)")


def _write_attrs(obj, attrs: Mapping):
    json_names = []
    for name, value in attrs.items():
        _check_attr_name(name)
        if hasattr(value, "detach") and hasattr(value, "numpy"):
            value = value.detach().cpu().numpy()
        if isinstance(value, (str, bool, int, float, np.generic)) and not (
                isinstance(value, int) and not isinstance(value, bool)
                and not -2**63 <= value < 2**63):
            obj.attrs[name] = value
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            obj.attrs[name] = value
        else:
            obj.attrs[name] = json.dumps(_json_safe(value, f"attribute {name!r}"))
            json_names.append(name)
    if json_names:
        obj.attrs[_JSON_ATTRS] = json.dumps(json_names)


def _read_attr(obj, name, file, file_size):
    """One attribute's value, its size checked first; bytes decoded to str."""
    hdf5_checks.check_attribute(obj, name, file, file_size)
    value = obj.attrs[name]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, h5py.Empty) or (isinstance(value, np.ndarray) and value.dtype.kind
                                          not in "biufcSU" and h5py.check_string_dtype(
                                              value.dtype) is None):
        raise ResultsError(f"{file!r}: attribute {name!r} of {obj.name!r} has a type that "
                           "results files do not use")
    return value


def _read_attrs(obj, file, file_size, skip=()) -> dict:
    names = [n for n in obj.attrs.keys() if n not in skip and n not in _SCALE_ATTRS]
    json_names = set()
    if _JSON_ATTRS in names:
        json_names = set(json.loads(_read_attr(obj, _JSON_ATTRS, file, file_size)))
    out = {}
    for name in names:
        if name.startswith("_brainsnn_"):
            continue
        value = _read_attr(obj, name, file, file_size)
        out[name] = json.loads(value) if name in json_names else value
    return out


def _write_dataset(f, path, value, attrs):
    """Arrays: chunked, with the fletcher32 checksum (and gzip from 256 KiB); scalars and
    strings, which HDF5 cannot filter: contiguous, with a SHA-256 of the value."""
    if isinstance(value, str):
        ds = f.create_dataset(path, data=value, dtype=h5py.string_dtype())
    elif isinstance(value, np.ndarray) and value.dtype.kind == "U":
        ds = f.create_dataset(path, data=value.astype(object), dtype=h5py.string_dtype())
        ds.attrs[_NUMPY_DTYPE] = value.dtype.str
    elif isinstance(value, np.ndarray) and value.ndim:
        big = value.nbytes >= _COMPRESS_BYTES
        ds = f.create_dataset(path, data=value, fletcher32=True, shuffle=big,
                              compression="gzip" if big else None,
                              compression_opts=1 if big else None)
    else:
        ds = f.create_dataset(path, data=value)
    if not ds.chunks:
        ds.attrs[_SHA256] = hdf5_checks.digest(value)
    _write_attrs(ds, attrs)


def _unicode_dtype(ds, file, file_size):
    """The numpy dtype a string array was saved from (``<U7``), checked to be a unicode dtype
    of a size the file can hold."""
    if _NUMPY_DTYPE not in ds.attrs:
        return str
    text = _read_attr(ds, _NUMPY_DTYPE, file, file_size)
    try:
        dtype = np.dtype(text)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind != "U" or hdf5_checks.declared_bytes(ds.shape, dtype) > (
            hdf5_checks.MAX_EXPANSION * file_size):
        raise ResultsError(f"{file!r}: dataset {ds.name.lstrip('/')!r} declares the string type "
                           f"{text!r}, which is not a unicode type of a size the file can hold")
    return dtype


def _read_dataset(ds, file, file_size, version):
    """The value of ``ds``, its checksum verified (format version 2 and later)."""
    name = ds.name.lstrip("/")
    hdf5_checks.check_dataset(ds, file, file_size)
    try:
        if h5py.check_string_dtype(ds.dtype) is not None and ds.dtype.kind == "O":
            arr = ds.asstr()[()]
            if ds.shape != ():
                dtype = _unicode_dtype(ds, file, file_size)
                arr = np.array(arr.tolist(), dtype=dtype).reshape(ds.shape)
        else:
            arr = ds[()]
    except OSError as exc:
        check = "its fletcher32 checksum failed or " if hdf5_checks.has_fletcher32(ds) else ""
        raise ResultsError(f"{file!r}: dataset {name!r} is corrupt ({check}its data cannot be "
                           f"read: {exc})") from None
    if version >= 2 and not hdf5_checks.has_fletcher32(ds):
        if _SHA256 not in ds.attrs:
            raise ResultsError(f"{file!r}: dataset {name!r} has no checksum (neither fletcher32 "
                               "nor a SHA-256 attribute); the file was altered")
        if hdf5_checks.digest(arr) != _read_attr(ds, _SHA256, file, file_size):
            raise ResultsError(f"{file!r}: dataset {name!r} is corrupt (its SHA-256 does not "
                               "match the value)")
    return arr


class _RootAttrs(dict):
    """Root attributes: the user's own, plus the run's metadata (protocol, seed, device, status,
    times, format) readable by name as in the file, e.g. ``rec.attrs("")["protocol"]``. The
    metadata names cannot be set here (use the record's properties)."""

    def __init__(self, rec, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rec = rec

    def _meta(self) -> dict:
        r = self._rec
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "protocol": r.protocol,
                "seed": r.seed, "device": r.device, "status": r.status,
                "start_time": r.start_time, "end_time": r.end_time, "saved_time": r.saved_time}
        return {k: v for k, v in meta.items() if v is not None}

    def __getitem__(self, name):
        if not dict.__contains__(self, name) and name in _META_ATTRS:
            meta = self._meta()
            if name in meta:
                return meta[name]
            if name in ("config", "versions", "machine"):
                return getattr(self._rec, name)
        return super().__getitem__(name)

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name):
        return dict.__contains__(self, name) or name in self._meta() or name in (
            "config", "versions", "machine")

    def __setitem__(self, name, value):
        if name in _META_ATTRS:
            raise ResultsError(f"root attribute {name!r} is the run's metadata; it is set from the "
                               "record (protocol, seed, device, config, ...), not by hand")
        super().__setitem__(name, value)

    def update(self, *args, **kwargs):
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, name, default=None):
        if name not in self:
            self[name] = default
        return self[name]


class _Timer:
    def __init__(self):
        self.seconds = None


# --------------------------------------------------------------------------- the record

class RunResults:
    """In-memory record of one run, saved as one HDF5 file.

    Parameters
    ----------
    protocol : str
        Name of the protocol (script) that made the run, e.g. ``"diehl_cook"``.
    config : dict
        The full configuration (e.g. ``vars(args)`` plus derived values). Stored as JSON:
        tuples become lists, numpy scalars Python numbers, Brian2 quantities strings
        (``"0.5 * msecond"``); :attr:`config` returns that normalised form.
    seed : int
        The seed that fixed every random number of the run.
    device : str
        Brian2 device or torch device the run used (``"cpp_standalone"``, ``"cuda"``, ...).

    Package versions, the machine (:func:`brainsnn.brian.devices.describe_machine`) and the start
    time are added automatically.
    """

    def __init__(self, protocol: str, config: Mapping, seed: int, device: str):
        if not isinstance(protocol, str) or not protocol:
            raise ResultsError(f"protocol must be a non-empty string, got {protocol!r}")
        if not isinstance(config, Mapping):
            raise ResultsError(f"config must be a dict, got {type(config).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ResultsError(f"seed must be an integer, got {seed!r}")
        if not isinstance(device, str) or not device:
            raise ResultsError(f"device must be a non-empty string, got {device!r}")
        self.protocol = protocol
        self._config = _json_safe(dict(config))
        self.seed = int(seed)
        self.device = device
        self.versions = dict(package_versions())
        self.machine = dict(_machine())
        self.start_time = _now()
        self.end_time = None
        self.saved_time = None
        self.status = "checkpoint"
        self.format_version = FORMAT_VERSION
        self._data: dict[str, object] = {}
        self._attrs: dict[str, dict] = {"": _RootAttrs(self)}
        self._groups: set[str] = set()
        self._scales: dict[str, dict[int, str]] = {}

    # ------------------------------------------------------------------ metadata
    @property
    def config(self) -> dict:
        """The configuration as stored (a deep copy, JSON-normalised)."""
        return json.loads(json.dumps(self._config))

    def update_config(self, **settings):
        """Set some configuration entries (settings a resumed run may change)."""
        self._config.update(_json_safe(settings))

    @property
    def is_complete(self) -> bool:
        return self.status == "complete"

    def __repr__(self):
        return (f"RunResults(protocol={self.protocol!r}, seed={self.seed}, device={self.device!r}, "
                f"status={self.status!r}, {len(self._data)} datasets)")

    # ------------------------------------------------------------------ tree
    def _check_free(self, path):
        parts = path.split("/")
        if parts[0] in RESERVED_TOP:
            raise ResultsError(f"the top-level name {parts[0]!r} is reserved for the run's "
                               f"metadata; store {path!r} under another name")
        for k in range(1, len(parts)):
            prefix = "/".join(parts[:k])
            if prefix in self._data:
                raise ResultsError(f"cannot store {path!r}: {prefix!r} is a dataset, not a group")
        below = path + "/"
        if any(p.startswith(below) for p in self._data) or any(
                g.startswith(below) for g in self._groups):
            raise ResultsError(f"cannot store a dataset at {path!r}: it is a group that holds "
                               "other entries")

    def __setitem__(self, path, value):
        self.set(path, value)

    def set(self, path: str, value, **attrs):
        """Store ``value`` at ``path`` (replacing what was there), with attributes ``attrs``.

        ``value``: numpy array (copied), number, bool, string, list, torch tensor, Brian2
        quantity (stored in SI units, attribute ``units``), or a dict of those, which stores
        each item below ``path``. Attribute values: strings, numbers, booleans, numeric
        arrays; lists, dicts and None are stored as JSON and read back as lists and dicts.
        """
        path = _norm_path(path)
        if isinstance(value, Mapping):
            if attrs:
                self.attrs(path).update(attrs)
            for key, item in value.items():
                self.set(f"{path}/{key}" if path else str(key), item)
            return
        if not path:
            raise ResultsError("a dataset needs a name: the root is a group")
        self._check_free(path)
        stored, extra = _to_value(value, path)
        for name in attrs:
            _check_attr_name(name)
        if "layout" in attrs and (attrs["layout"] not in LAYOUTS or np.ndim(stored) != 2):
            raise ResultsError(f"layout of {path!r} must be one of {', '.join(LAYOUTS)} for a "
                               f"2-D weight matrix; got {attrs['layout']!r} for shape "
                               f"{np.shape(stored)}")
        self._data[path] = stored
        self._groups.discard(path)
        merged = self._attrs.setdefault(path, {})
        merged.update(extra)
        merged.update(attrs)

    def __getitem__(self, path):
        path = _norm_path(path)
        if path in self._data:
            return self._data[path]
        if path == "" or path in self._groups or any(p.startswith(path + "/") for p in self._data):
            return self._subtree(path)
        raise KeyError(f"no dataset or group {path!r} in this record; it holds: "
                       f"{', '.join(list(self._data)[:20]) or 'nothing'}")

    def _subtree(self, path):
        out = {}
        prefix = path + "/" if path else ""
        for p, v in self._data.items():
            if p.startswith(prefix):
                node = out
                *parents, leaf = p[len(prefix):].split("/")
                for name in parents:
                    node = node.setdefault(name, {})
                node[leaf] = v
        return out

    def get(self, path: str, default=None):
        """The dataset (or, for a group, a nested dict of its datasets) at ``path``, or
        ``default`` when there is none."""
        try:
            return self[path]
        except KeyError:
            return default

    def __contains__(self, path):
        try:
            path = _norm_path(path)
        except (TypeError, ResultsError):
            return False
        return path in self._data or path in self._groups or any(
            p.startswith(path + "/") for p in self._data)

    def __delitem__(self, path):
        path = _norm_path(path)
        if path not in self:
            raise KeyError(path)
        for p in [p for p in self._data if p == path or p.startswith(path + "/")]:
            del self._data[p]
        for p in [p for p in self._attrs if p and (p == path or p.startswith(path + "/"))]:
            del self._attrs[p]
        gone = [p for p in self._scales if p == path or p.startswith(path + "/")]
        for p in gone:
            del self._scales[p]
        for axes in self._scales.values():
            for axis in [a for a, sp in axes.items() if sp == path or sp.startswith(path + "/")]:
                del axes[axis]
        self._groups = {g for g in self._groups if g != path and not g.startswith(path + "/")}

    def trim(self, max_bytes: int = 1_000_000) -> dict[str, int]:
        """Remove every dataset whose values take more than ``max_bytes`` bytes (weights,
        spike counts), so that a finished run can be kept or shared as a small reference file.

        Returns ``{path: bytes}`` of the removed datasets. They are recorded in the root
        attribute ``trimmed`` (added to an earlier trim's), so a reader of the file knows what
        it held. Only a finished run can be trimmed: a checkpoint needs its weights to resume.
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) \
                or max_bytes < 0:
            raise ResultsError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
        if not self.is_complete:
            raise ResultsError(f"this {self.protocol} record is a checkpoint (status "
                               f"{self.status!r}), not a finished run; a checkpoint keeps its "
                               "weights to resume, so it is not trimmed")
        sizes = {p: int(np.asarray(v).nbytes) for p, v in self._data.items()}
        removed = {p: size for p, size in sizes.items() if size > max_bytes}
        for path in removed:
            del self[path]
        if removed:
            root = self._attrs[""]
            root["trimmed"] = {**dict(root.get("trimmed") or {}), **removed}
        return removed

    def keys(self):
        """Paths of all datasets, in the order they were first stored."""
        return list(self._data)

    def children(self, path: str = "") -> list[str]:
        """Names directly below the group ``path`` (datasets and groups)."""
        path = _norm_path(path)
        prefix = path + "/" if path else ""
        names = []
        for p in list(self._data) + sorted(self._groups):
            if p.startswith(prefix) and p != path:
                name = p[len(prefix):].split("/")[0]
                if name not in names:
                    names.append(name)
        return names

    def is_dataset(self, path: str) -> bool:
        return _norm_path(path) in self._data

    def attrs(self, path: str = "") -> dict:
        """The (mutable) attributes of the dataset or group at ``path``; ``""`` is the root.
        Asking for the attributes of a path that does not exist yet makes it a group."""
        path = _norm_path(path)
        if path and path not in self._data:
            if path not in self:
                self._check_free(path)
            self._groups.add(path)
        return self._attrs.setdefault(path, {})

    # ------------------------------------------------------------------ dimension scales
    def set_scale(self, path: str, scale: str, axis: int = 0):
        """Make the 1-D dataset ``scale`` the HDF5 dimension scale of axis ``axis`` of the
        dataset ``path`` (e.g. the T values of an accuracy-against-T array). Checked when the
        record is saved: ``scale`` must hold one value per element along that axis."""
        path, scale = _norm_path(path), _norm_path(scale)
        for p in (path, scale):
            if p not in self._data:
                raise ResultsError(f"set_scale: {p!r} is not a dataset of this record")
        ndim = np.ndim(self._data[path])
        if not -ndim <= axis < ndim:
            raise ResultsError(f"set_scale: {path!r} has {ndim} axes, no axis {axis}")
        self._scales.setdefault(path, {})[axis % ndim] = scale

    def scales(self, path: str) -> dict:
        """``{axis: scale path}`` of the dataset ``path``: those set with :meth:`set_scale`
        and those of the conventions (metric steps, ``<name>_vs_<X>``)."""
        path = _norm_path(path)
        return dict(sorted(self._all_scales().get(path, {}).items()))

    def _all_scales(self) -> dict:
        out = {p: dict(axes) for p, axes in self._scales.items()}
        for path, value in self._data.items():
            ndim = np.ndim(value)
            if not ndim:
                continue
            group, _, name = path.rpartition("/")
            if group == "metrics" and f"metrics/steps/{name}" in self._data:
                out.setdefault(path, {}).setdefault(0, f"metrics/steps/{name}")
            if "_vs_" in name:
                x = name.rsplit("_vs_", 1)[1]
                for candidate in (f"{group}/{x}" if group else x, f"metrics/{x}"):
                    if candidate in self._data and candidate != path:
                        out.setdefault(path, {}).setdefault(ndim - 1, candidate)
                        break
        return {p: {a: sp for a, sp in axes.items() if self._scale_fits(p, a, sp)}
                for p, axes in out.items()}

    def _scale_fits(self, path, axis, scale) -> bool:
        value, x = self._data.get(path), self._data.get(scale)
        return (value is not None and x is not None and np.ndim(x) == 1
                and axis < np.ndim(value) and np.shape(value)[axis] == len(x)
                and np.asarray(x).dtype.kind in "biufSU")

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self) -> dict:
        """The checkpoint a resumed run continues from (``checkpoint/``, a nested dict);
        empty for a complete run, whose file holds results only."""
        return self._subtree(CHECKPOINT)

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def timer(self, name: str):
        """Time the ``with`` block; seconds are added to ``timings/<name>`` (units ``s``), so a
        block timed several times (e.g. chunks of a training) accumulates. The yielded object's
        ``seconds`` is this block's time once it ends."""
        path = "timings/" + _norm_path(name)
        t = _Timer()
        start = time.perf_counter()
        try:
            yield t
        finally:
            t.seconds = time.perf_counter() - start
            previous = float(self._data[path]) if path in self._data else 0.0
            self.set(path, np.float64(previous + t.seconds), units="s")

    def add_metric(self, name: str, value, step=None):
        """Append ``value`` (a number, or an array of a fixed shape) to ``metrics/<name>``;
        ``step`` (epoch, images seen, ...) goes to ``metrics/steps/<name>``. Give a step with
        every value of a metric, or with none."""
        name = _norm_path(name)
        if not name or name.split("/")[0] == "steps":
            raise ResultsError(f"invalid metric name {name!r} ('steps' is reserved)")
        path, spath = f"metrics/{name}", f"metrics/steps/{name}"
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        v = np.asarray(value)
        if v.dtype.kind not in "biuf":
            raise ResultsError(f"metric {name!r} must be numeric, got {value!r}")
        if path in self._data:
            old = self._data[path]
            if old.shape[1:] != v.shape:
                raise ResultsError(f"metric {name!r} holds values of shape {old.shape[1:]}, got "
                                   f"one of shape {v.shape}")
            if (step is None) != (spath not in self._data):
                raise ResultsError(f"metric {name!r}: give a step with every value or with none")
            self._data[path] = np.concatenate([old, v[None]])
            if step is not None:
                self._data[spath] = np.concatenate([self._data[spath], np.asarray([step])])
        else:
            self.set(path, v[None])
            if step is not None:
                self.set(spath, np.asarray([step]))

    def metric(self, name: str):
        """Values of ``metrics/<name>`` (first axis: calls of :meth:`add_metric`)."""
        return self[f"metrics/{_norm_path(name)}"]

    def metric_steps(self, name: str):
        """Steps of ``metrics/<name>``, or None when none were given."""
        return self.get(f"metrics/steps/{_norm_path(name)}")

    # ------------------------------------------------------------------ files
    def save(self, path, complete: bool = True) -> Path:
        """Write the whole record to ``path`` atomically and return the path.

        ``complete=True`` marks a finished run (status ``complete``, ``end_time`` now, or
        kept where the record was already complete, e.g. loaded from a finished run; the
        ``checkpoint/`` group is not written: a complete file holds results only);
        ``complete=False`` a resumable checkpoint (status ``checkpoint``). The file is first
        written as ``<path>.tmp-<pid>`` and renamed onto ``path``; on any error the temporary
        file is removed and ``path`` keeps its previous content (or stays absent). Temporary
        files that processes no longer running left beside ``path`` are removed first.
        """
        path = Path(path)
        if path.is_dir():
            raise ResultsError(f"{str(path)!r} is a directory; give a file name like run.h5")
        clash = set(self._attrs[""].keys()) & set(_META_ATTRS)
        if clash:
            raise ResultsError(f"root attributes {sorted(clash)} are reserved for the run's "
                               "metadata; use other names")
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        status = "complete" if complete else "checkpoint"
        saved, end = _now(), (_now() if complete else None)
        if complete and self.status == "complete" and self.end_time:
            end = self.end_time          # a finished run saved again (e.g. trimmed) ended then
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            with h5py.File(tmp, "w", track_order=True) as f:
                self._write(f, status, saved, end)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self.status, self.saved_time, self.end_time = status, saved, end
        self.format_version = FORMAT_VERSION
        return path

    def _write(self, f, status, saved, end):
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "protocol": self.protocol,
                "seed": np.int64(self.seed), "device": self.device, "status": status,
                "start_time": self.start_time, "saved_time": saved,
                "config": json.dumps(self._config, sort_keys=True),
                "versions": json.dumps(self.versions, sort_keys=True),
                "machine": json.dumps(_json_safe(self.machine, "machine"), sort_keys=True)}
        if end is not None:
            meta["end_time"] = end
        _write_attrs(f, self._attrs[""])
        for name, value in meta.items():
            f.attrs[name] = value
        f.attrs[_META_SHA256] = _meta_digest(meta)
        for name, tree in (("config", self._config), ("versions", self.versions),
                           ("machine", self.machine)):
            _write_attrs(f.require_group(f"meta/{name}"), flatten(tree))

        def kept(p):
            return status != "complete" or p.split("/")[0] != CHECKPOINT
        for p, value in self._data.items():
            if kept(p):
                _write_dataset(f, p, value, self._attrs.get(p, {}))
        for g in sorted(self._groups):
            if kept(g):
                _write_attrs(f.require_group(g), self._attrs.get(g, {}))
        scales = {p: axes for p, axes in self._all_scales().items() if kept(p)}
        scale_paths = {sp for axes in scales.values() for sp in axes.values()}
        for sp in sorted(scale_paths):
            f[sp].make_scale(sp.rsplit("/", 1)[-1])
        for p, axes in scales.items():
            if p in scale_paths:
                continue                      # HDF5: a dimension scale has no scales itself
            for axis, sp in axes.items():
                f[p].dims[axis].attach_scale(f[sp])

    @classmethod
    def load(cls, path, select=None) -> "RunResults":
        """Read a results file written by :meth:`save` (complete or checkpoint; format
        versions 1 and 2).

        Every object is checked before its data is read (:mod:`brainsnn.io.hdf5_checks`:
        no links, external storage or virtual datasets; sizes the file can hold) and every
        checksum is verified. ``select``: a function of a dataset path; only the datasets
        for which it is true are read (the others are checked, not read, and absent from the
        record). Raises FileNotFoundError for a missing file and :class:`ResultsError`,
        naming the file and what is wrong, for anything else.
        """
        path = Path(path)
        file = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"results file {file!r} does not exist")
        pid = temporary_owner(path)
        if pid is not None:
            final = _TEMPORARY.match(path.name)["final"]
            state = ("is still running" if _process_alive(pid) else "no longer runs: a "
                     "leftover of an interrupted save, removed by the next save of " + final)
            raise ResultsError(f"{file!r} is the temporary file of a save by process {pid}, "
                               f"which {state}; the results are in {final!r}")
        if not h5py.is_hdf5(path):
            raise ResultsError(f"{file!r} is not an HDF5 file; expected a brainsnn results "
                               "file (.h5) written by a protocol")
        try:
            with h5py.File(path, "r") as f:
                return cls._from_file(f, file, path.stat().st_size, select)
        except ResultsError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise ResultsError(f"{file!r} cannot be read as a results file "
                               f"({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_file(cls, f, file, size, select):
        hdf5_checks.check_links(f, file)
        meta = {n: _read_attr(f, n, file, size) for n in _META_ATTRS if n in f.attrs}
        if meta.get("format") != FORMAT:
            raise ResultsError(f"{file!r} is an HDF5 file but not a brainsnn results file "
                               f"(root attribute format={FORMAT!r} is missing)")
        version = meta.get("format_version")
        number = isinstance(version, (int, np.integer)) and not isinstance(version, np.bool_)
        if not number or version not in READABLE_VERSIONS:
            shown = int(version) if number else repr(version)
            raise ResultsError(f"{file!r} has format version {shown}; this brainsnn reads versions "
                               f"{', '.join(map(str, READABLE_VERSIONS))}"
                               + (": upgrade brainsnn" if number and version > FORMAT_VERSION
                                  else ""))
        version = int(version)
        missing = [n for n in ("protocol", "seed", "device", "status", "start_time", "config",
                               "versions", "machine") if n not in meta]
        if missing:
            raise ResultsError(f"{file!r} lacks the root attribute(s) {', '.join(missing)} that "
                               "every results file has")
        if version >= 2 and (_META_SHA256 not in f.attrs or _meta_digest(meta) != _read_attr(
                f, _META_SHA256, file, size)):
            raise ResultsError(f"{file!r}: the run's metadata (root attributes) do not match "
                               "their SHA-256; the file is corrupt or was altered")
        rec = cls.__new__(cls)
        rec.format_version = version
        rec.protocol, rec.device, rec.status = (
            _meta_text(meta, n, file) for n in ("protocol", "device", "status"))
        if rec.status not in ("complete", "checkpoint"):
            raise ResultsError(f"{file!r}: status {rec.status!r} is neither 'complete' nor "
                               "'checkpoint'")
        seed = meta["seed"]
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise ResultsError(f"{file!r}: seed {seed!r} is not an integer")
        rec.seed = int(seed)
        rec._config, rec.versions, rec.machine = (
            _meta_json_object(meta, n, file) for n in ("config", "versions", "machine"))
        rec.start_time = _meta_text(meta, "start_time", file)
        rec.end_time = _meta_text(meta, "end_time", file) if "end_time" in meta else None
        rec.saved_time = _meta_text(meta, "saved_time", file) if "saved_time" in meta else None
        rec._data, rec._groups, rec._scales = {}, set(), {}
        rec._attrs = {"": _RootAttrs(rec, _read_attrs(f, file, size, skip=_META_ATTRS))}

        objects = []
        f.visititems(lambda name, obj: objects.append((name, obj)))  # raise outside h5py's visit
        for name, obj in objects:
            if name.split("/")[0] in RESERVED_TOP:
                continue
            key = _norm_path(name)
            if isinstance(obj, h5py.Dataset):
                hdf5_checks.check_dataset(obj, file, size)
                if select is not None and not select(key):
                    continue
                rec._data[key] = _read_dataset(obj, file, size, version)
                rec._attrs[key] = _read_attrs(obj, file, size)
                if "DIMENSION_LIST" in obj.attrs:
                    rec._scales[key] = _attached_scales(obj)
            else:
                attrs = _read_attrs(obj, file, size)
                if attrs or len(obj) == 0:
                    rec._groups.add(key)
                    rec._attrs[key] = attrs
        return rec


def _attached_scales(ds) -> dict:
    """``{axis: scale path}`` of the dimension scales attached to ``ds`` (the first per axis)."""
    out = {}
    for axis, dim in enumerate(ds.dims):
        if len(dim):
            out[axis] = _norm_path(dim[0].name)
    return out


def _meta_digest(meta: Mapping) -> str:
    """SHA-256 of the run's metadata as stored in the root attributes."""
    fields = {k: (int(v) if isinstance(v, (int, np.integer)) else str(v))
              for k, v in meta.items() if k in _META_ATTRS}
    return hdf5_checks.digest(json.dumps(fields, sort_keys=True))


def _meta_text(meta, name, file) -> str:
    value = meta[name]
    if not isinstance(value, str):
        raise ResultsError(f"{file!r}: root attribute {name!r} is {type(value).__name__}, "
                           "expected a string")
    return value


def _meta_json_object(meta, name, file) -> dict:
    try:
        value = json.loads(_meta_text(meta, name, file))
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ResultsError(f"{file!r}: root attribute {name!r} is not a JSON object "
                           f"(got {type(value).__name__ if value is not None else 'bad JSON'}); "
                           "expected the run's " + name + " as {key: value}")
    return value


def temporary_owner(path) -> int | None:
    """The process id in a temporary file name ``<name>.tmp-<pid>``, else None."""
    m = _TEMPORARY.match(Path(path).name)
    return int(m["pid"]) if m else None


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (True when that cannot be told: such files are kept)."""
    if pid == os.getpid() or pid <= 0 or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return True


def remove_stale_temporaries(path) -> list[Path]:
    """Remove the ``<path>.tmp-<pid>`` files that saves of processes no longer running left
    behind (interrupted saves); return the paths removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(glob.escape(path.name) + ".tmp-*"):
        pid = temporary_owner(tmp)
        if pid is None or _TEMPORARY.match(tmp.name)["final"] != path.name:
            continue
        if not _process_alive(pid):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def flatten(tree, prefix="") -> dict:
    """A nested configuration as one level, keys joined by "." (``{"a.b": 1}``)."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
