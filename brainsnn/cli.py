"""The ``brainsnn`` command line.

    brainsnn run NAME [options]      run a protocol (brainsnn run NAME --help)
    brainsnn inspect FILE [FILE...]  readable summary of results files
    brainsnn plot FILE [--out PNG]   receptive fields, kernels and accuracy curves, from the file
    brainsnn data [--data DIR]       which datasets are found, and every folder looked in
    brainsnn data fetch NAME [--data DIR] [--mirror URL]   download a dataset's official files

Both read only the file (:class:`brainsnn.io.results.RunResults`); nothing is re-run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from brainsnn import __version__
from brainsnn.experiments.registry import PROTOCOLS, run_protocol
from brainsnn.io.results import ResultsError, RunResults

__all__ = ["main", "summarize"]


def _fmt(v, width: int = 160) -> str:
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
        return "[" + ", ".join(_fmt(x) for x in a) + "]"
    if a.dtype.kind in "biuf" and a.size:
        return (f"{a.dtype}{list(a.shape)} mean {a.mean():.4g}, min {a.min():.4g}, "
                f"max {a.max():.4g}")
    return f"{a.dtype}{list(a.shape)}"


def _units(rec, path) -> str:
    u = rec.attrs(path).get("units") if rec.is_dataset(path) else None
    return f" {u}" if u not in (None, "", "1") else ""


def _flat_items(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            yield from _flat_items(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def summarize(rec: RunResults, path=None) -> str:
    """The text ``brainsnn inspect`` prints for ``rec``."""
    lines = []
    add = lines.append
    add(f"file:      {path}" if path else "record (not saved)")
    add(f"protocol:  {rec.protocol}")
    add(f"status:    {rec.status}")
    add(f"seed:      {rec.seed}")
    add(f"device:    {rec.device}")
    add("machine:   " + ", ".join(f"{k}={v}" for k, v in rec.machine.items()))
    add(f"started:   {rec.start_time}")
    add(f"ended:     {rec.end_time or '(not finished: checkpoint, saved ' + str(rec.saved_time) + ')'}")
    add("versions:  " + ", ".join(f"{k} {v}" for k, v in rec.versions.items()))
    config = list(_flat_items(rec.config))
    add(f"config ({len(config)}):")
    for k, v in config:
        add(f"  {k} = {v!r}" if isinstance(v, str) else f"  {k} = {v}")
    shown = set()

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

    section("timings (s):", "timings", lambda p: f"  {p[8:]}: {_fmt(rec[p])}")

    def metric_row(p):
        name = p[len("metrics/"):]
        if name.startswith("steps/") or name == "T" or name.startswith("accuracy_vs_T"):
            return None
        v = np.asarray(rec[p])
        steps = rec.get(f"metrics/steps/{name}")
        if v.ndim >= 1 and len(v):
            at = f" at step {_fmt(np.asarray(steps)[-1])}" if steps is not None and len(steps) else ""
            return f"  {name}: last {_fmt(v[-1])}{at} ({len(v)} values){_units(rec, p)}"
        return f"  {name}: {_fmt(v)}{_units(rec, p)}"

    section("metrics:", "metrics", metric_row)
    for p in rec.keys():
        if p.startswith("metrics/steps/"):
            shown.add(p)
    # accuracy: every dataset named like an accuracy, and accuracy against time steps
    acc = [p for p in rec.keys() if "acc" in p.rsplit("/", 1)[-1].lower()
           and not p.startswith(("metrics/steps/", "timings/"))]
    if acc:
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
                        pairs = ", ".join(f"T={_fmt(a)}: {_fmt(b)}" for a, b in zip(np.asarray(t), row))
                        add(f"  {p[8:]}{label}: {pairs}")
                    else:
                        add(f"  {p[8:]}{label}: {_fmt(row)}")
                shown.update({p, "metrics/T"})
            elif v.ndim >= 1 and len(v):
                add(f"  {p}: final {_fmt(v[-1])} (best {_fmt(v.max()) if v.dtype.kind in 'biuf' else '-'})")
                shown.add(p)
            else:
                add(f"  {p}: {_fmt(v)}")
                shown.add(p)
    if "layers" in rec and not rec.is_dataset("layers"):
        add("layers:")
        for name in rec.children("layers"):
            base = f"layers/{name}"
            if rec.is_dataset(base):
                add(f"  {name}: {_fmt(rec[base])}")
                shown.add(base)
                continue
            add(f"  {name}:")
            for p in [p for p in rec.keys() if p.startswith(base + "/")]:
                v = rec[p]
                label = p[len(base) + 1:]
                if label == "spike_rate" or label.endswith("spike_rate"):
                    a = np.asarray(v, dtype=float)
                    if a.size > 1:
                        silent = float((a == 0).mean()) * 100
                        add(f"    {label}: mean {a.mean():.4g}{_units(rec, p)} over {a.size} "
                            f"neurons (min {a.min():.4g}, max {a.max():.4g}, {silent:.0f}% silent)")
                    else:
                        add(f"    {label}: {_fmt(v)}{_units(rec, p)}")
                else:
                    add(f"    {label}: {_fmt(v)}{_units(rec, p)}")
                shown.add(p)
    if "energy" in rec and not rec.is_dataset("energy"):
        units = rec.attrs("energy").get("units")
        add(f"energy ({units}):" if units else "energy:")
        for p in [p for p in rec.keys() if p.startswith("energy/")]:
            add(f"  {p[7:]}: {_fmt(rec[p])}{_units(rec, p)}")
            shown.add(p)
    rest = [p for p in rec.keys() if p not in shown]
    if rest:
        add("other datasets:")
        for p in rest[:60]:
            add(f"  {p}: {_fmt(rec[p])}{_units(rec, p)}")
        if len(rest) > 60:
            add(f"  ... and {len(rest) - 60} more")
    return "\n".join(lines)


def _inspect(args) -> int:
    status, printed = 0, False
    for path in args.files:
        try:
            rec = RunResults.load(path)
        except (FileNotFoundError, ResultsError, OSError) as exc:
            print(f"brainsnn inspect: error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(("\n" if printed else "") + summarize(rec, path))
        printed = True
    return status


def _plot(args) -> int:
    from brainsnn.analysis.plotting import results_figure

    rec = RunResults.load(args.file)
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".png")
    fig = results_figure(rec, max_fields=args.max_fields)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    print(f"wrote {out}")
    return 0


def _data(args) -> int:
    from brainsnn.io.datasets import data_report
    from brainsnn.io.download import fetch

    if args.action == "list":
        if args.names or args.mirror:
            raise ValueError("NAME and --mirror go with 'brainsnn data fetch NAME'")
        print(data_report(args.data))
        return 0
    if not args.names:
        raise ValueError("name the dataset(s) to fetch: mnist, fashion_mnist or cifar10")
    for name in args.names:
        fetch(name, data_dir=args.data, mirror=args.mirror,
              report=lambda line: print(line, file=sys.stderr, flush=True))
    return 0


def _run(args) -> int:
    return run_protocol(args.protocol, args.options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainsnn", description="Inspect and plot brainsnn results files (HDF5).")
    parser.add_argument("--version", action="version", version=f"brainsnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("run", help="run a protocol: brainsnn run NAME [options] (NAME --help)",
                       description="Run one of the installed protocols; the options after NAME "
                                   "are the protocol's own (brainsnn run NAME --help).",
                       add_help=True)
    p.add_argument("protocol", metavar="NAME", choices=sorted(PROTOCOLS),
                   help="one of: " + ", ".join(sorted(PROTOCOLS)))
    p.add_argument("options", nargs=argparse.REMAINDER, help="the protocol's options")
    p.set_defaults(func=_run)
    p = sub.add_parser("inspect", help="print a readable summary of a results file",
                       description="Print protocol, configuration, seed, versions, device, "
                                   "timings, metrics, accuracy, per-layer spike statistics and "
                                   "energy of a results file.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="results file(s) (.h5) written by a protocol")
    p.set_defaults(func=_inspect)
    p = sub.add_parser("plot", help="draw receptive fields and accuracy curves from a results file",
                       description="Draw receptive fields (layers/<name>/weights with image-sized "
                                   "inputs), kernels (layers/<name>/kernels) and accuracy curves "
                                   "(metrics) into one PNG, from the file alone.")
    p.add_argument("file", help="results file (.h5) written by a protocol")
    p.add_argument("--out", help="output image (default: FILE with the suffix .png)")
    p.add_argument("--max-fields", type=int, default=100,
                   help="most receptive fields / kernels drawn per layer (default 100)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the image (default 100)")
    p.set_defaults(func=_plot)
    p = sub.add_parser("data", help="list the datasets found, or download one (data fetch NAME)",
                       description="Without an action (or with 'list'): for each dataset, "
                                   "whether it was found, in which layout, and every folder "
                                   "looked in. 'fetch NAME...': download the official files "
                                   "(mnist, fashion_mnist, cifar10), MD5-verified, resumable.")
    p.add_argument("action", nargs="?", choices=("list", "fetch"), default="list")
    p.add_argument("names", nargs="*", metavar="NAME", help="mnist, fashion_mnist or cifar10")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="data folder (default $BRAINSNN_DATA, else the per-user data folder)")
    p.add_argument("--mirror", metavar="URL", default=None,
                   help="base URL holding the files under their official names, used instead "
                        "of the official addresses")
    p.set_defaults(func=_data)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``brainsnn`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"] and len(argv) >= 2 and argv[1] in PROTOCOLS:
        return run_protocol(argv[1], argv[2:])      # the protocol parses its own options
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ResultsError, ValueError, OSError) as exc:
        print(f"brainsnn {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
