"""``brainsnn table``: one row per results file, to compare runs (text, CSV or Markdown).

A row holds what every file records (protocol, dataset, scale, seed, status, command), the
run's main accuracy and the settings that tell it apart from the other runs of its protocol.
Only the root attributes and ``metrics/`` are read (:meth:`RunResults.load` with ``select``).

The main accuracy is, in this order:

1. ``metrics/test_accuracy`` (a number);
2. ``metrics/accuracy_vs_T`` at the largest T (its first row when it has several, e.g. one per
   conversion method);
3. the largest value of the first ``metrics/accuracy*`` array (not ``*_std``), named by its
   dimension scale, its ``labels`` attribute or ``metrics/configs``.
"""
from __future__ import annotations

import csv
import glob
import io
import os
from dataclasses import dataclass, field

import numpy as np

from brainsnn.analysis.summary import printable
from brainsnn.errors import BrainsnnError
from brainsnn.io.results import RunResults, flatten

__all__ = ["Row", "read_row", "rec_row", "main_accuracy", "distinguishing_settings",
           "render", "table_command", "FORMATS", "NOT_SETTINGS", "table_reads"]

FORMATS = ("text", "csv", "md")
# configuration keys that say where and how fast a run went, not what it computed
NOT_SETTINGS = frozenset({
    "out", "out_dir", "data", "build_dir", "command", "threads", "device", "torch_device",
    "brian_device", "seed", "scale", "dataset", "no_figure", "plot", "quiet", "verbose",
    "resume", "force", "features_cache", "no_compile", "caveat", "evaluation_set",
    "n_train_used", "n_test_used"})
# the only dataset of protocols that record none in their configuration
_DATASET_OF_PROTOCOL = {"diehl_cook": "mnist", "bench_stdp": "mnist"}
SETTING_WIDTH = 40             # longer values (equations, layer lists) are left to inspect
_DATASET_NAMES = {"fashion": "fashion_mnist"}


@dataclass
class Row:
    """One results file in the table."""
    file: str
    protocol: str
    dataset: str
    scale: str
    seed: int
    status: str
    accuracy: float | None
    measured_as: str
    command: str
    config: dict = field(repr=False)
    settings: dict = field(default_factory=dict)


def _labels_of(rec, path, n):
    """Names of the n entries along axis 0 of ``path``: its dimension scale, its ``labels``
    attribute, or ``metrics/configs``."""
    scale = rec.scales(path).get(0)
    for candidate in (rec.get(scale) if scale else None, rec.attrs(path).get("labels"),
                      rec.get("metrics/configs")):
        if candidate is not None and np.ndim(candidate) == 1 and len(candidate) == n:
            prefix = f"{scale.rsplit('/', 1)[-1]}=" if scale and candidate is rec.get(scale) else ""
            return [prefix + (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
                    for v in np.asarray(candidate).tolist()]
    return [f"index {i}" for i in range(n)]


def main_accuracy(rec: RunResults) -> tuple[float | None, str]:
    """(accuracy as a fraction, what it is) by the rules of the module docstring; (None, "-")
    for a file without any (a benchmark)."""
    test = rec.get("metrics/test_accuracy")
    if test is not None and np.ndim(test) == 0:
        return float(test), "test_accuracy"
    vs_t, t = rec.get("metrics/accuracy_vs_T"), rec.get("metrics/T")
    if vs_t is not None and t is not None and np.ndim(t) == 1 and len(t):
        rows = np.atleast_2d(vs_t)
        if rows.shape[1] == len(t):
            k = int(np.argmax(t))
            labels = rec.attrs("metrics/accuracy_vs_T").get("labels")
            which = f" [{labels[0]}]" if labels and np.ndim(vs_t) == 2 else ""
            return float(rows[0, k]), f"accuracy_vs_T{which} at T={np.asarray(t)[k]}"
    for p in rec.keys():
        name = p[len("metrics/"):]
        if (p.startswith("metrics/accuracy") and "/" not in name and not name.endswith("_std")
                and np.ndim(rec[p]) == 1 and len(rec[p]) and rec[p].dtype.kind == "f"):
            v = np.asarray(rec[p])
            k = int(np.nanargmax(v))
            return float(v[k]), f"best {name} of {len(v)}: {_labels_of(rec, p, len(v))[k]}"
    return None, "-"


def table_reads(path: str) -> bool:
    """The datasets a table row reads (a ``select`` for :meth:`RunResults.load`)."""
    return path.startswith("metrics/")


def read_row(path) -> Row:
    """The table row of one results file (reads the root attributes and ``metrics/``)."""
    return rec_row(path, RunResults.load(path, select=table_reads))


def rec_row(path, rec: RunResults) -> Row:
    """The table row of a loaded record ``rec`` read from ``path``."""
    config = rec.config
    dataset = config.get("dataset") or _DATASET_OF_PROTOCOL.get(rec.protocol, "-")
    accuracy, measured_as = main_accuracy(rec)
    return Row(file=str(path), protocol=rec.protocol,
               dataset=_DATASET_NAMES.get(dataset, dataset), scale=str(config.get("scale", "-")),
               seed=rec.seed, status=rec.status, accuracy=accuracy, measured_as=measured_as,
               command=str(config.get("command") or "-"), config=config)


def distinguishing_settings(rows: list[Row]) -> None:
    """Set each row's ``settings``: the configuration values that tell apart the runs of
    one protocol on one dataset at one scale. A key (nested keys joined by ".") is shown
    when its value differs between those runs (absent, None, False and "none" count as one
    value, "-"), it is no :data:`NOT_SETTINGS` name and its values are short
    (:data:`SETTING_WIDTH`); of keys with the same values in every row (``neurons`` and
    ``network.n_neurons``) only the shortest is shown."""
    for kind in {(r.protocol, r.dataset, r.scale) for r in rows}:
        group = [r for r in rows if (r.protocol, r.dataset, r.scale) == kind]
        flat = [{k: _setting_text(v) for k, v in flatten(r.config).items()
                 if not NOT_SETTINGS.intersection(k.split("."))} for r in group]
        keys = sorted({k for f in flat for k in f}, key=lambda k: (k.count("."), len(k), k))
        shown, columns = [], set()
        for k in keys:
            values = tuple(f.get(k, "-") for f in flat)
            if (len(set(values)) > 1 and values not in columns
                    and all(len(v) <= SETTING_WIDTH and "\n" not in v for v in values)):
                shown.append(k)
                columns.add(values)
        for r, f in zip(group, flat):
            r.settings = {k: f.get(k, "-") for k in sorted(shown)}


def _setting_text(value) -> str:
    if value is None or value is False or value in ("", "none", "None"):
        return "-"
    if isinstance(value, list):
        return ",".join(_setting_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cells(row: Row, md: bool) -> list[str]:
    accuracy = "-" if row.accuracy is None else f"{100 * row.accuracy:.2f}"
    name = os.path.basename(row.file) if md else row.file
    if row.status != "complete":
        name += f" ({row.status})"
    settings = ", ".join(f"{k}={v}" for k, v in row.settings.items()) or "-"
    command = f"`{row.command}`" if md and row.command != "-" else row.command
    return [printable(c) for c in (name, row.dataset, row.scale, str(row.seed), accuracy,
                                   row.measured_as, settings, command)]


HEADER = ["file", "dataset", "scale", "seed", "accuracy %", "measured as", "settings", "command"]


def _sorted(rows):
    return sorted(rows, key=lambda r: (r.protocol, r.dataset, r.scale, os.path.basename(r.file)))


def _markdown(rows, command) -> str:
    lines = ["# Results", "",
             f"Generated by `{command}` from the results files; do not edit by hand. Every "
             "number is read from the file named in its row (`brainsnn inspect FILE` shows "
             "the rest).", "",
             "accuracy %: `metrics/test_accuracy`; else `metrics/accuracy_vs_T` at the "
             "largest T; else the best entry of the first `metrics/accuracy*` array (the "
             "\"measured as\" column says which). settings: the configuration values that "
             "differ between the runs of a protocol on one dataset at one scale (- : not "
             "set)."]
    for protocol in sorted({r.protocol for r in rows}):
        lines += ["", f"## {printable(protocol)}", "",
                  "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        for r in [r for r in rows if r.protocol == protocol]:
            cells = [c.replace("|", "\\|") for c in _cells(r, md=True)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _text(rows) -> str:
    lines = []
    for protocol in sorted({r.protocol for r in rows}):
        group = [_cells(r, md=False) for r in rows if r.protocol == protocol]
        widths = [max(len(h), *(len(c[i]) for c in group)) for i, h in enumerate(HEADER)]
        lines += ([""] if lines else []) + [f"{printable(protocol)}:"]
        for cells in [HEADER] + group:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    return "\n".join(lines) + "\n"


def _csv(rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "protocol", "dataset", "scale", "seed", "status", "accuracy",
                     "measured_as", "settings", "command"])
    for r in rows:
        settings = "; ".join(f"{k}={v}" for k, v in r.settings.items())
        writer.writerow([printable(c) for c in (
            r.file, r.protocol, r.dataset, r.scale, r.seed, r.status,
            "" if r.accuracy is None else repr(r.accuracy), r.measured_as, settings, r.command)])
    return buf.getvalue()


def table_command(files, fmt: str) -> str:
    """The ``brainsnn table`` command that makes this table: a glob when ``files`` are all
    the ``*.h5`` of one folder."""
    folders = {os.path.dirname(str(f)) for f in files}
    flag = {"text": "", "csv": " --csv", "md": " --markdown"}[fmt]
    if len(folders) == 1:
        folder = folders.pop()
        pattern = os.path.join(folder, "*.h5")
        if sorted(map(str, files)) == sorted(glob.glob(os.path.join(glob.escape(folder),
                                                                      "*.h5"))):
            return f"brainsnn table {pattern}{flag}"
    return "brainsnn table " + " ".join(str(f) for f in files) + flag


def render(rows: list[Row], fmt: str = "text", command: str = "brainsnn table") -> str:
    """The table of ``rows`` as ``text`` (aligned, grouped by protocol), ``csv`` (one row per
    file, accuracy as a fraction) or ``md`` (Markdown, one section per protocol)."""
    if fmt not in FORMATS:
        raise BrainsnnError(f"table format {fmt!r}: expected one of {', '.join(FORMATS)}")
    rows = _sorted(rows)
    distinguishing_settings(rows)
    if fmt == "md":
        return _markdown(rows, command)
    return _csv(rows) if fmt == "csv" else _text(rows)
