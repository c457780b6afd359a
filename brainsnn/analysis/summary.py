"""What ``brainsnn inspect`` shows of a results file: a readable summary and a JSON form.

Every string that comes from a file goes through :func:`printable` before it reaches a
terminal, so a file cannot send escape sequences (colours, titles, cursor moves, hyperlinks).
"""
from __future__ import annotations

import json
import math
import unicodedata

import numpy as np

from brainsnn.io.results import CHECKPOINT, LAYOUTS, RunResults, flatten

__all__ = ["printable", "format_value", "summarize", "describe", "to_json", "confusion_table"]

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# control, format (bidi overrides, zero-width), surrogate, private, unassigned, line/paragraph
_ESCAPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
JSON_VALUE_LIMIT = 1024        # arrays up to this many elements appear whole in --json


def printable(text) -> str:
    """``text`` with every control or invisible formatting character written as an escape
    (``\\x1b``, ``\\u202e``, ``\\n``), safe to print on a terminal."""
    out = []
    for ch in str(text):
        if ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def format_value(v, width: int = 160) -> str:
    """A short text for a stored value: scalars as numbers, short vectors whole, arrays as
    dtype, shape and statistics."""
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode(errors="replace")
    if isinstance(v, str):
        return v if len(v) <= width else v[:width - 20] + f"... ({len(v)} characters)"
    a = np.asarray(v)
    if a.ndim == 0:
        x = a.item()
        if isinstance(x, float):
            return f"{x:.6g}"
        return str(x)
    if a.size <= 8 and a.ndim == 1:
        return "[" + ", ".join(format_value(x) for x in a) + "]"
    if a.dtype.kind in "biuf" and a.size:
        return (f"{a.dtype}{list(a.shape)} mean {a.mean():.4g}, min {a.min():.4g}, "
                f"max {a.max():.4g}")
    return f"{a.dtype}{list(a.shape)}"


def _units(rec, path) -> str:
    u = rec.attrs(path).get("units") if rec.is_dataset(path) else None
    return f" {u}" if u not in (None, "", "1") else ""


def _is_confusion(rec, path) -> bool:
    v = rec[path]
    return (path.rsplit("/", 1)[-1] == "confusion_matrix" and isinstance(v, np.ndarray)
            and v.ndim == 2 and v.dtype.kind in "biuf")


def confusion_table(cm, indent: str = "  ") -> list[str]:
    """Lines of a confusion matrix (rows: true class, columns: predicted class); a column
    beyond the classes is headed ``none`` (no prediction); the last column is each class's
    recall in % (correct / row total)."""
    cm = np.asarray(cm)
    n_rows, n_cols = cm.shape
    heads = [str(j) if j < n_rows else "none" for j in range(n_cols)]
    cells = [[format_value(x) for x in row] for row in cm]
    width = max(len(h) for h in heads + [c for row in cells for c in row])
    label = max(len("true"), len(str(n_rows - 1)))
    lines = [indent + "true".rjust(label) + " " + " ".join(h.rjust(width) for h in heads)
             + "  recall %"]
    for i, row in enumerate(cells):
        total = float(cm[i].sum())
        recall = f"{100 * cm[i, i] / total:8.2f}" if total and i < n_cols else "       -"
        lines.append(indent + str(i).rjust(label) + " " + " ".join(c.rjust(width) for c in row)
                     + "  " + recall)
    return lines


def summarize(rec: RunResults, path=None) -> str:
    """The text ``brainsnn inspect`` prints for ``rec`` (every line escaped)."""
    lines = []

    def add(text):
        lines.append(printable(text))

    add(f"file:      {path}" if path else "record (not saved)")
    add(f"protocol:  {rec.protocol}")
    add(f"status:    {rec.status}")
    add(f"format:    version {rec.format_version}")
    add(f"seed:      {rec.seed}")
    add(f"device:    {rec.device}")
    add("machine:   " + ", ".join(f"{k}={v}" for k, v in rec.machine.items()))
    add(f"started:   {rec.start_time}")
    add("ended:     " + (rec.end_time or f"(not finished: checkpoint, saved {rec.saved_time})"))
    add("versions:  " + ", ".join(f"{k} {v}" for k, v in rec.versions.items()))
    trimmed = rec.attrs("").get("trimmed")
    if isinstance(trimmed, dict) and trimmed:
        add("trimmed:   " + ", ".join(f"{k} ({v / 1e6:.1f} MB)" for k, v in trimmed.items())
            + " removed (brainsnn trim)")
    config = list(flatten(rec.config).items())
    add(f"config ({len(config)}):")
    for k, v in config:
        add(f"  {k} = {v!r}" if isinstance(v, str) else f"  {k} = {v}")
    shown = {p for p in rec.keys() if p.split("/")[0] == CHECKPOINT}

    def section(title, group, row):
        if group not in rec or rec.is_dataset(group):
            return
        paths = [p for p in rec.keys() if p.startswith(group + "/")]
        if not paths:
            return
        add(title)
        for p in paths:
            text = row(p)
            if text is not None:
                add(text)
                shown.add(p)

    section("timings (s):", "timings", lambda p: f"  {p[8:]}: {format_value(rec[p])}")

    def metric_row(p):
        name = p[len("metrics/"):]
        if (name.startswith("steps/") or name == "T" or name.startswith("accuracy_vs_T")
                or _is_confusion(rec, p)):
            return None
        v = np.asarray(rec[p])
        steps = rec.get(f"metrics/steps/{name}")
        if v.ndim >= 1 and len(v):
            at = (f" at step {format_value(np.asarray(steps)[-1])}"
                  if steps is not None and len(steps) else "")
            return f"  {name}: last {format_value(v[-1])}{at} ({len(v)} values){_units(rec, p)}"
        return f"  {name}: {format_value(v)}{_units(rec, p)}"

    section("metrics:", "metrics", metric_row)
    for p in rec.keys():
        if p.startswith("metrics/steps/"):
            shown.add(p)
    _accuracy_section(rec, add, shown)
    for p in [p for p in rec.keys() if p not in shown and _is_confusion(rec, p)]:
        description = rec.attrs(p).get("description")
        add(f"{p}" + (f" ({description}):" if description else ":"))
        for line in confusion_table(rec[p]):
            add(line)
        shown.add(p)
    _layers_section(rec, add, shown)
    if "energy" in rec and not rec.is_dataset("energy"):
        units = rec.attrs("energy").get("units")
        add(f"energy ({units}):" if units else "energy:")
        for p in [p for p in rec.keys() if p.startswith("energy/")]:
            add(f"  {p[7:]}: {format_value(rec[p])}{_units(rec, p)}")
            shown.add(p)
    rest = [p for p in rec.keys() if p not in shown]
    if rest:
        add("other datasets:")
        for p in rest[:60]:
            add(f"  {p}: {format_value(rec[p])}{_units(rec, p)}")
        if len(rest) > 60:
            add(f"  ... and {len(rest) - 60} more")
    checkpoint = [p for p in rec.keys() if p.split("/")[0] == CHECKPOINT]
    if checkpoint:
        nbytes = sum(np.asarray(rec[p]).nbytes for p in checkpoint)
        add(f"checkpoint (the state a --resume continues from, not results; {len(checkpoint)} "
            f"datasets, {nbytes} bytes):")
        for p in checkpoint:
            add(f"  {p[len(CHECKPOINT) + 1:]}: {format_value(rec[p])}")
    return "\n".join(lines)


def _accuracy_section(rec, add, shown):
    """Every dataset named like an accuracy, and accuracy against time steps."""
    acc = [p for p in rec.keys() if "acc" in p.rsplit("/", 1)[-1].lower()
           and not p.startswith(("metrics/steps/", "timings/", CHECKPOINT + "/"))]
    if not acc:
        return
    add("accuracy:")
    for p in acc:
        v = np.asarray(rec[p])
        if p.startswith("metrics/accuracy_vs_T"):
            t = rec.get("metrics/T")
            rows = v if v.ndim == 2 else v[None]
            labels = rec.attrs(p).get("labels")
            for k, row in enumerate(rows):
                label = f" [{labels[k]}]" if labels is not None and k < len(labels) else ""
                if t is not None and np.size(t) == len(row):
                    pairs = ", ".join(f"T={format_value(a)}: {format_value(b)}"
                                      for a, b in zip(np.asarray(t), row))
                    add(f"  {p[8:]}{label}: {pairs}")
                else:
                    add(f"  {p[8:]}{label}: {format_value(row)}")
            shown.update({p, "metrics/T"})
        elif v.ndim >= 1 and len(v):
            best = format_value(v.max()) if v.dtype.kind in "biuf" else "-"
            add(f"  {p}: final {format_value(v[-1])} (best {best})")
            shown.add(p)
        else:
            add(f"  {p}: {format_value(v)}")
            shown.add(p)


def _layers_section(rec, add, shown):
    if "layers" not in rec or rec.is_dataset("layers"):
        return
    add("layers:")
    for name in rec.children("layers"):
        base = f"layers/{name}"
        if rec.is_dataset(base):
            add(f"  {name}: {format_value(rec[base])}")
            shown.add(base)
            continue
        add(f"  {name}:")
        for p in [p for p in rec.keys() if p.startswith(base + "/")]:
            v = rec[p]
            label = p[len(base) + 1:]
            layout = rec.attrs(p).get("layout")
            if layout in LAYOUTS:
                add(f"    {label}: {format_value(v)}{_units(rec, p)}, layout {layout} "
                    f"{LAYOUTS[layout].split(':')[0]}")
            elif label.endswith("spike_rate") and np.size(v) > 1:
                a = np.asarray(v, dtype=float)
                silent = float((a == 0).mean()) * 100
                add(f"    {label}: mean {a.mean():.4g}{_units(rec, p)} over {a.size} "
                    f"neurons (min {a.min():.4g}, max {a.max():.4g}, {silent:.0f}% silent)")
            else:
                add(f"    {label}: {format_value(v)}{_units(rec, p)}")
            shown.add(p)


# --------------------------------------------------------------------------- JSON

def _plain(value):
    """A JSON-ready copy: numpy to Python, non-finite floats as "NaN"/"Infinity"/"-Infinity",
    complex as [real, imag], bytes as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, complex):
        return [_plain(value.real), _plain(value.imag)]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _dataset_entry(rec, p) -> dict:
    v = rec[p]
    a = np.asarray(v)
    entry = {"shape": list(a.shape), "dtype": "str" if isinstance(v, str) else str(a.dtype)}
    attrs = rec.attrs(p)
    if attrs:
        entry["attributes"] = _plain(dict(attrs))
    scales = rec.scales(p)
    if scales:
        entry["scales"] = {str(axis): sp for axis, sp in scales.items()}
    if a.size <= JSON_VALUE_LIMIT:
        entry["value"] = _plain(v)
    elif a.dtype.kind in "biuf":
        entry["summary"] = _plain({"mean": float(a.mean()), "min": a.min(), "max": a.max()})
    return entry


def describe(rec: RunResults, path=None) -> dict:
    """The JSON form of ``rec`` that ``brainsnn inspect --json`` prints: metadata, root
    attributes, and per dataset its shape, dtype, attributes, dimension scales and value
    (arrays over :data:`JSON_VALUE_LIMIT` elements: mean, min, max); the checkpoint apart."""
    datasets = {p: _dataset_entry(rec, p) for p in rec.keys() if p.split("/")[0] != CHECKPOINT}
    checkpoint = {p[len(CHECKPOINT) + 1:]: _dataset_entry(rec, p) for p in rec.keys()
                  if p.split("/")[0] == CHECKPOINT}
    return _plain({"file": None if path is None else str(path),
                   "format_version": rec.format_version, "protocol": rec.protocol,
                   "status": rec.status, "seed": rec.seed, "device": rec.device,
                   "start_time": rec.start_time, "end_time": rec.end_time,
                   "saved_time": rec.saved_time, "config": rec.config,
                   "versions": rec.versions, "machine": rec.machine,
                   "attributes": {k: v for k, v in rec.attrs("").items()},
                   "datasets": datasets, "checkpoint": checkpoint})


def to_json(obj) -> str:
    """JSON text that is safe on a terminal (ASCII only: every control character escaped)."""
    return json.dumps(obj, indent=1, ensure_ascii=True, allow_nan=False).replace("\x7f",
                                                                                "\\u007f")
