"""The ``brainsnn`` command line.

    brainsnn run NAME [options]      run a protocol (brainsnn run NAME --help)
    brainsnn sweep NAME --grid K=V1,V2 --seeds 0,1,2 [-- options]   a grid x seeds on Dask
    brainsnn inspect FILE [FILE...]  readable summary of results files (--json: JSON)
    brainsnn plot FILE [FILE...]     receptive fields, kernels and accuracy curves, from the file
    brainsnn table FILE [FILE...]    one row per results file, to compare runs (--csv, --markdown)
    brainsnn trim FILE OUT [--max-mb 1]   a copy without its large datasets (weights, counts)
    brainsnn data [--data DIR]       which datasets are found, and every folder looked in
    brainsnn data fetch NAME [--data DIR] [--mirror URL]   download a dataset's official files

inspect, plot, table and trim read only the files (:class:`brainsnn.io.results.RunResults`);
nothing is re-run. A file that cannot be read gets one line on stderr naming it, the others
are still shown, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from brainsnn import __version__
from brainsnn.analysis.summary import describe, printable, summarize, to_json
from brainsnn.analysis.table import FORMATS, rec_row, render, table_command, table_reads
from brainsnn.errors import BrainsnnError
from brainsnn.experiments.registry import PROTOCOLS, run_protocol
from brainsnn.io.results import ResultsError, RunResults

__all__ = ["main", "summarize"]


def _for_each_file(command: str, files, show, select=None) -> int:
    """Load each file and call ``show(path, rec)``; a file that cannot be loaded or shown
    gets one line on stderr naming it, and the loop goes on. Returns the exit status."""
    status = 0
    for path in files:
        try:
            show(path, RunResults.load(path, select=select))
        except Exception as exc:  # noqa: BLE001 - one line per bad file, whatever it holds
            message = str(exc) if isinstance(exc, (OSError, BrainsnnError)) else (
                f"cannot be shown ({type(exc).__name__}: {exc})")
            if str(path) not in message:
                message = f"{path}: {message}"
            print(f"brainsnn {command}: error: {printable(message)}", file=sys.stderr)
            status = 1
    return status


def _inspect(args) -> int:
    if args.json:
        described = []
        status = _for_each_file("inspect", args.files,
                                lambda path, rec: described.append(describe(rec, path)))
        print(to_json(described))
        return status
    printed = []

    def show(path, rec):
        text = summarize(rec, path)
        print(("\n" if printed else "") + text)
        printed.append(path)
    return _for_each_file("inspect", args.files, show)


def _plot(args) -> int:
    from brainsnn.analysis.plotting import results_figure

    if args.out and len(args.files) > 1:
        print("brainsnn plot: error: --out names one image; give one FILE with it, or none "
              "(each FILE.png is written)", file=sys.stderr)
        return 2

    def show(path, rec):
        import matplotlib.pyplot as plt

        out = Path(args.out) if args.out else Path(path).with_suffix(".png")
        fig = results_figure(rec, max_fields=args.max_fields)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=args.dpi)
        plt.close(fig)
        print(f"wrote {printable(out)}")
    return _for_each_file("plot", args.files, show)


def _table(args) -> int:
    rows = []
    status = _for_each_file("table", args.files,
                            lambda path, rec: rows.append(rec_row(path, rec)),
                            select=table_reads)
    if rows:
        print(render(rows, args.format, table_command(args.files, args.format)), end="")
    return status


def _trim(args) -> int:
    if not args.max_mb >= 0:
        raise ValueError(f"--max-mb must be >= 0, got {args.max_mb}")
    rec = RunResults.load(args.file)
    removed = rec.trim(int(args.max_mb * 1e6))
    out = rec.save(args.out)
    for path, size in removed.items():
        print(f"removed {path} ({size / 1e6:.1f} MB)")
    kept = "nothing removed, " if not removed else ""
    print(f"wrote {printable(out)} ({kept}{out.stat().st_size / 1e6:.2f} MB)")
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
        prog="brainsnn",
        description="Run brainsnn protocols; inspect, compare, plot and trim their results "
                    "files (HDF5).")
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
    p.add_argument("--json", action="store_true",
                   help="print a JSON array, one object per file (metadata, and per dataset "
                        "shape, dtype, attributes, dimension scales and value)")
    p.set_defaults(func=_inspect)
    p = sub.add_parser("plot", help="draw receptive fields and accuracy curves from a results file",
                       description="Draw receptive fields (layers/<name>/weights with image-sized "
                                   "inputs), kernels (layers/<name>/kernels) and accuracy curves "
                                   "(metrics) into one PNG, from the file alone.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="results file(s) (.h5) written by a protocol")
    p.add_argument("--out", help="output image, for one FILE (default: FILE with the suffix "
                                 ".png)")
    p.add_argument("--max-fields", type=int, default=100,
                   help="most receptive fields / kernels drawn per layer (default 100)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the image (default 100)")
    p.set_defaults(func=_plot)
    p = sub.add_parser("table", help="one row per results file, to compare runs",
                       description="One row per results file: protocol, dataset, scale, seed, "
                                   "main accuracy, the settings that tell the runs apart, the "
                                   "command; grouped by protocol. Reads only the metadata and "
                                   "metrics/ of each file.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="results file(s) (.h5) written by a protocol")
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="text (aligned columns, the default), csv or md (Markdown)")
    p.add_argument("--csv", dest="format", action="store_const", const="csv",
                   help="same as --format csv")
    p.add_argument("--markdown", dest="format", action="store_const", const="md",
                   help="same as --format md (what the docs' results page is made with)")
    p.set_defaults(func=_table)
    p = sub.add_parser("trim", help="copy a finished run without its large datasets (weights)",
                       description="Write a copy of a finished run's results file without the "
                                   "datasets larger than --max-mb (weights, spike counts): a "
                                   "reference file to keep or share. The copy names what was "
                                   "removed in its root attribute 'trimmed'; metadata, seed, "
                                   "times and every smaller dataset are kept.")
    p.add_argument("file", metavar="FILE", help="a finished run's results file (.h5)")
    p.add_argument("out", metavar="OUT", help="the copy to write (may be FILE itself)")
    p.add_argument("--max-mb", type=float, default=1.0,
                   help="largest dataset kept, in MB (10^6 bytes; default 1)")
    p.set_defaults(func=_trim)
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
    sub.add_parser("sweep", add_help=False,
                   help="run a protocol over a grid of settings and seeds on Dask, then "
                        "mean +- sd per setting (brainsnn sweep --help)")
    return parser


def main(argv=None) -> int:
    """Entry point of the ``brainsnn`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"] and len(argv) >= 2 and argv[1] in PROTOCOLS:
        return run_protocol(argv[1], argv[2:])      # the protocol parses its own options
    if argv[:1] == ["sweep"]:
        from brainsnn.experiments.sweep import main as sweep_main
        return sweep_main(argv[1:])                 # options after '--' go to every run
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ResultsError, ValueError, OSError) as exc:
        print(f"brainsnn {args.command}: error: {printable(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
