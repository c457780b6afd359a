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
  ``(n_inputs, n_neurons)``, the default assumption) or ``"post_pre"`` (torch Linear,
  ``(n_neurons, n_inputs)``); ``layers/<name>/kernels``: convolution kernels
  ``(out_channels, in_channels, kh, kw)``; ``layers/<name>/theta``: thresholds.
- ``layers/<name>/spike_rate``: mean spikes per neuron per step, or Hz (attribute ``units``).
- ``metrics/<name>``: one value per :meth:`RunResults.add_metric` call; the steps given
  with them in ``metrics/steps/<name>``. ``metrics/accuracy_vs_T`` with ``metrics/T``.
- ``energy/<layer>`` joules per image, ``energy/total``.
- ``timings/<name>`` seconds (from :meth:`RunResults.timer`).

File layout: root attributes ``format="brainsnn-results"``, ``format_version``,
``protocol``, ``seed``, ``device``, ``status`` (``complete``/``checkpoint``), ``start_time``,
``end_time`` (ISO 8601, UTC), ``saved_time``, and ``config``, ``versions``, ``machine`` as JSON
strings; the same three, readable key by key, as attributes of ``meta/config``,
``meta/versions`` and ``meta/machine``. The top-level name ``meta`` is reserved.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import os
import platform
import time
from collections.abc import Mapping
from importlib import metadata as _metadata
from pathlib import Path

import h5py
import numpy as np
from brainsnn.errors import ResultsError  # noqa: F401

__all__ = ["RunResults", "ResultsError", "FORMAT", "FORMAT_VERSION", "results_path",
           "package_versions"]

FORMAT = "brainsnn-results"
FORMAT_VERSION = 1
RESERVED_TOP = ("meta",)
_META_ATTRS = ("format", "format_version", "protocol", "seed", "device", "status", "start_time",
               "end_time", "saved_time", "config", "versions", "machine")
_JSON_ATTRS = "_brainsnn_json_attrs"      # names of attributes stored as JSON
_NUMPY_DTYPE = "_brainsnn_numpy_dtype"    # exact dtype of a unicode string array
_COMPRESS_BYTES = 1 << 18                 # gzip datasets from 256 KiB




def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def results_path(protocol: str, scale: str, seed: int, directory="results") -> Path:
    """The default output file of a protocol: ``<directory>/<protocol>_<scale>_seed<seed>.h5``."""
    return Path(directory) / f"{protocol}_{scale}_seed{int(seed)}.h5"


@functools.lru_cache(maxsize=1)
def package_versions() -> dict:
    """Versions of Python, brainsnn and its dependencies (installed distributions)."""
    versions = {"python": platform.python_version()}
    for dist in ("brainsnn", "brian2", "brian2cuda", "numpy", "scipy", "torch", "h5py", "sympy",
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
    if not isinstance(name, str) or not name or name.startswith("_brainsnn_"):
        raise ResultsError(f"invalid attribute name {name!r}: use a non-empty string that does "
                           "not start with '_brainsnn_'")


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


def _read_attrs(obj, skip=()) -> dict:
    json_names = set(json.loads(obj.attrs[_JSON_ATTRS])) if _JSON_ATTRS in obj.attrs else set()
    out = {}
    for name, value in obj.attrs.items():
        if name in skip or name.startswith("_brainsnn_"):
            continue
        if isinstance(value, bytes):
            value = value.decode()
        out[name] = json.loads(value) if name in json_names else value
    return out


def _write_dataset(f, path, value, attrs):
    if isinstance(value, str):
        ds = f.create_dataset(path, data=value, dtype=h5py.string_dtype())
    elif isinstance(value, np.ndarray) and value.dtype.kind == "U":
        ds = f.create_dataset(path, data=value.astype(object), dtype=h5py.string_dtype())
        ds.attrs[_NUMPY_DTYPE] = value.dtype.str
    elif isinstance(value, np.ndarray) and value.nbytes >= _COMPRESS_BYTES and value.ndim:
        ds = f.create_dataset(path, data=value, compression="gzip", compression_opts=1,
                              shuffle=True)
    else:
        ds = f.create_dataset(path, data=value)
    _write_attrs(ds, attrs)


def _read_dataset(ds):
    if h5py.check_string_dtype(ds.dtype) is not None and ds.dtype.kind == "O":
        if ds.shape == ():
            return ds.asstr()[()]
        arr = ds.asstr()[()]
        dtype = ds.attrs.get(_NUMPY_DTYPE, None)
        return np.array(arr.tolist(), dtype=dtype if dtype is not None else str).reshape(ds.shape)
    return ds[()]


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
        self._data: dict[str, object] = {}
        self._attrs: dict[str, dict] = {"": _RootAttrs(self)}
        self._groups: set[str] = set()

    # ------------------------------------------------------------------ metadata
    @property
    def config(self) -> dict:
        """The configuration as stored (a deep copy, JSON-normalised)."""
        return json.loads(json.dumps(self._config))

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
        self._groups = {g for g in self._groups if g != path and not g.startswith(path + "/")}

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

        ``complete=True`` marks a finished run (status ``complete``, ``end_time`` now);
        ``complete=False`` a resumable checkpoint (status ``checkpoint``). The file is first
        written as ``<path>.tmp-<pid>`` and renamed onto ``path``; on any error the temporary
        file is removed and ``path`` keeps its previous content (or stays absent).
        """
        path = Path(path)
        if path.is_dir():
            raise ResultsError(f"{str(path)!r} is a directory; give a file name like run.h5")
        clash = set(self._attrs[""].keys()) & set(_META_ATTRS)
        if clash:
            raise ResultsError(f"root attributes {sorted(clash)} are reserved for the run's "
                               "metadata; use other names")
        path.parent.mkdir(parents=True, exist_ok=True)
        status = "complete" if complete else "checkpoint"
        saved, end = _now(), (_now() if complete else None)
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
        for name, tree in (("config", self._config), ("versions", self.versions),
                           ("machine", self.machine)):
            _write_attrs(f.require_group(f"meta/{name}"), _flatten(tree))
        for p, value in self._data.items():
            _write_dataset(f, p, value, self._attrs.get(p, {}))
        for g in sorted(self._groups):
            _write_attrs(f.require_group(g), self._attrs.get(g, {}))

    @classmethod
    def load(cls, path) -> "RunResults":
        """Read a results file written by :meth:`save` (complete or checkpoint).

        Raises FileNotFoundError for a missing file and :class:`ResultsError` for a file that
        is not HDF5 or not a brainsnn results file.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"results file {str(path)!r} does not exist")
        if not h5py.is_hdf5(path):
            raise ResultsError(f"{str(path)!r} is not an HDF5 file; expected a brainsnn results "
                               "file (.h5) written by a protocol")
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise ResultsError(f"{str(path)!r} is an HDF5 file but not a brainsnn results file "
                                   f"(root attribute format={FORMAT!r} is missing)")
            version = int(f.attrs.get("format_version", 0))
            if version > FORMAT_VERSION:
                raise ResultsError(f"{str(path)!r} has format version {version}; this brainsnn "
                                   f"reads versions up to {FORMAT_VERSION}: upgrade brainsnn")
            rec = cls.__new__(cls)
            a = f.attrs
            rec.protocol = str(a["protocol"])
            rec._config = json.loads(a["config"])
            rec.seed = int(a["seed"])
            rec.device = str(a["device"])
            rec.versions = json.loads(a["versions"])
            rec.machine = json.loads(a["machine"])
            rec.start_time = str(a["start_time"])
            rec.end_time = str(a["end_time"]) if "end_time" in a else None
            rec.saved_time = str(a["saved_time"]) if "saved_time" in a else None
            rec.status = str(a["status"])
            rec._data, rec._groups = {}, set()
            rec._attrs = {"": _RootAttrs(rec, _read_attrs(f, skip=_META_ATTRS))}

            def visit(name, obj):
                if name.split("/")[0] in RESERVED_TOP:
                    return
                if isinstance(obj, h5py.Dataset):
                    rec._data[name] = _read_dataset(obj)
                    rec._attrs[name] = _read_attrs(obj)
                else:
                    attrs = _read_attrs(obj)
                    if attrs or len(obj) == 0:
                        rec._groups.add(name)
                        rec._attrs[name] = attrs

            f.visititems(visit)
        return rec


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
