"""The command-line vocabulary every protocol shares, and the scale table -> configuration rule.

Every protocol builds its parser with :func:`protocol_parser`, adds its own options, then calls
:func:`parse` to fill unset options from its scale table and check them. The same thing has
the same name everywhere:

``--scale``, ``--dataset {mnist,fashion_mnist,cifar10}``, ``--data``, ``--train-images``,
``--test-images``, ``--validation``, ``--seed``, ``--threads``, ``--brian-device``,
``--torch-device``, ``--out`` / ``--out-dir``, ``--plot``, ``-q`` / ``-v``, ``--resume``,
``--force``; user neuron models with ``--neuron module:ATTR`` where a protocol has neurons.

Nothing heavy is imported here, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

DATASETS = ("mnist", "fashion_mnist", "cifar10")
BRIAN_DEVICES = ("runtime", "cpp_standalone", "cuda_standalone")
#: Training / test images available per dataset (for checking --train-images and friends).
DATASET_SIZES = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000),
                 "cifar10": (50000, 10000)}


class ProtocolParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (what was wrong, what is expected), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def protocol_parser(name: str, doc: str, scales: dict, *, default_scale: str = "small",
                    datasets=DATASETS, brian_device: str | None = None,
                    torch_device: bool = True, images: bool = True,
                    neuron: bool = False) -> ProtocolParser:
    """The parser of protocol ``name`` with the shared options.

    ``doc``: the protocol module's docstring (first paragraph: description, rest: epilog).
    ``scales``: its scale table (``{scale: {option: value}}``); an option left unset takes the
    scale's value. ``datasets``: the datasets it accepts (None: no ``--dataset``).
    ``brian_device``: the default Brian2 device (None: no ``--brian-device``).
    ``torch_device``: add ``--torch-device``. ``images``: add ``--train-images``,
    ``--test-images`` and ``--validation``. ``neuron``: add ``--neuron module:ATTR``.
    """
    head, _, rest = doc.strip().partition("\n\n")
    table = "\n".join(f"  {k:6s} " + ", ".join(f"{o}={v}" for o, v in cfg.items())
                      for k, cfg in scales.items())
    p = ProtocolParser(prog=f"brainsnn run {name}", description=head,
                       epilog=(rest + "\n\n" if rest else "") + "Scales:\n" + table,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(protocol=name)
    p.brian_default = brian_device
    g = p.add_argument_group("run")
    g.add_argument("--scale", choices=tuple(scales), default=default_scale,
                   help=f"problem size (default {default_scale}); see the table below")
    g.add_argument("--seed", type=int, default=0, help="seed of every random number (default 0)")
    g.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    if brian_device:
        g.add_argument("--brian-device", choices=BRIAN_DEVICES, default=None,
                       help=f"Brian2 device (default: the scale's, else {brian_device})")
    if torch_device:
        g.add_argument("--torch-device", default=None,
                       help="torch device: cpu, cuda or cuda:N (default: the scale's, else cpu)")
    g.add_argument("--out", default=None, help="results file (default: OUT_DIR/<name>.h5)")
    g.add_argument("--out-dir", default="results",
                   help="folder of the results file when --out is not given (default ./results)")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted run whose checkpoint is the results file")
    g.add_argument("--force", action="store_true",
                   help="replace an existing results file")
    g.add_argument("--plot", action="store_true", help="also draw a figure next to the file")
    g.add_argument("-q", "--quiet", action="count", default=0, help="print less (-qq: errors only)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="print more (debug)")
    if datasets:
        d = p.add_argument_group("data")
        d.add_argument("--dataset", choices=tuple(datasets), default=datasets[0],
                       help=f"dataset (default {datasets[0]})")
        d.add_argument("--data", default=None,
                       help="dataset folder (default: $BRAINSNN_DATA, else the user data "
                            "folder; see `brainsnn data`)")
        if images:
            d.add_argument("--train-images", type=int, default=None,
                           help="training images (the first ones; default per scale)")
            d.add_argument("--test-images", type=int, default=None,
                           help="test images evaluated (default per scale)")
            d.add_argument("--validation", type=int, default=0,
                           help="hold out the last N training images and evaluate on them "
                                "instead of the test set (for choosing settings; default 0)")
    if neuron:
        p.add_argument("--neuron", default=None, metavar="MODULE:ATTR",
                       help="a NeuronModel of your own, e.g. my_models:ADAPTIVE_LIF (a module "
                            "on the Python path, or path/to/file.py:ATTR)")
    return p


def parse(parser: argparse.ArgumentParser, scales: dict, argv=None,
          defaults=None) -> argparse.Namespace:
    """Parse ``argv``, fill every option left unset (None) from the chosen scale, check the
    shared options (exit 2 with one line on a bad value) and return the namespace.

    ``defaults(args) -> dict``, where given, chooses the defaults instead of
    ``scales[args.scale]`` (e.g. per dataset and scale)."""
    args = parser.parse_args(argv)
    if getattr(args, "validation", 0) and getattr(args, "test_images", 0) is None:
        args.test_images = args.validation   # all held-out images, not the scale's test count
    table = defaults(args) if defaults is not None else scales[args.scale]
    for key, value in table.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if getattr(args, "brian_device", "absent") is None:
        args.brian_device = parser.brian_default
    if getattr(args, "torch_device", "absent") is None:
        args.torch_device = "cpu"
    check_shared(parser, args)
    return args


def check_shared(parser, args) -> None:
    """Check the shared options of ``args``; ``parser.error`` (exit 2) on a bad value."""
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.resume and args.force:
        parser.error("--resume and --force exclude each other (continue, or start over)")
    torch_device = getattr(args, "torch_device", "cpu")
    if not (torch_device == "cpu" or torch_device == "cuda"
            or (torch_device.startswith("cuda:") and torch_device[5:].isdigit())):
        parser.error(f"--torch-device must be cpu, cuda or cuda:N, got {torch_device!r}")
    dataset = getattr(args, "dataset", None)
    if dataset is None or not hasattr(args, "train_images"):
        return
    n_train, n_test = DATASET_SIZES[dataset]
    validation = args.validation
    if not 0 <= validation < n_train:
        parser.error(f"--validation must be in 0..{n_train - 1} ({dataset} has {n_train} "
                     f"training images), got {validation}")
    if args.train_images is not None:
        check_count(parser, "--train-images", args.train_images, n_train - validation,
                    f"{dataset} has {n_train} training images"
                    + (f", {validation} held out by --validation" if validation else ""))
    if validation:   # the validation images take the test set's place (default: all, parse)
        args.test_images = min(args.test_images, validation)
    if args.test_images is not None:
        check_count(parser, "--test-images", args.test_images, n_test,
                    f"{dataset} has {n_test} test images")


def check_count(parser, option: str, value: int, maximum: int | None = None,
                why: str = "") -> None:
    """``value`` must be an integer in 1..maximum; else ``parser.error``."""
    if value < 1 or (maximum is not None and value > maximum):
        bound = f"in 1..{maximum}" if maximum is not None else ">= 1"
        parser.error(f"{option} must be {bound}{f' ({why})' if why else ''}, got {value}")


def check_positive(parser, option: str, value: float, *, allow_zero: bool = False,
                   maximum: float | None = None) -> None:
    """``value`` must be a finite number > 0 (>= 0 with ``allow_zero``), <= ``maximum``."""
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        low = ">= 0" if allow_zero else "> 0"
        high = f" and <= {maximum}" if maximum is not None else ""
        parser.error(f"{option} must be a finite number {low}{high}, got {value}")


def int_list(parser, option: str, text, *, distinct: bool = False) -> tuple[int, ...]:
    """Comma-separated positive integers (``"16,32"``) as a tuple; else ``parser.error``.
    With ``distinct`` (a sweep: time steps, repeats) a value may appear only once."""
    if isinstance(text, (list, tuple)):
        values = tuple(int(v) for v in text)
    else:
        try:
            values = tuple(int(v) for v in str(text).split(","))
        except ValueError:
            parser.error(f"{option} must be comma-separated integers, got {text!r}")
    if any(v < 1 for v in values):
        parser.error(f"{option} must hold integers >= 1, got {text!r}")
    if distinct:
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            parser.error(f"{option} lists {', '.join(map(str, repeated))} more than once "
                         f"(each value is one point of the sweep), got {text!r}")
    return values


def split_name(args) -> str:
    """Where accuracy is measured: ``'validation'`` with --validation, else ``'test'``."""
    return "validation" if getattr(args, "validation", 0) else "test"


def out_path(args, name: str) -> Path:
    """The results file: ``--out``, else ``--out-dir/<name>.h5`` (relative to the current
    folder)."""
    return Path(args.out) if args.out else Path(args.out_dir) / f"{name}.h5"


#: The named networks a protocol's ``--arch`` offers (the engine's ``ARCHITECTURES``, listed
#: here so that parsing options imports no torch; a test keeps the two equal).
NAMED_ARCHS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet18",
               "resnet34", "vgg11", "vgg16")


def check_backres_arch(p, arch, R):
    """BackRes passes ``R`` (one int or several) apply to the named ResNets only."""
    if max([R] if isinstance(R, int) else list(R)) > 1 and not arch.startswith("resnet"):
        p.error(f"BackRes passes > 1 apply to the residual stages of a named ResNet "
                f"(--arch resnet8 ... resnet56, resnet18, resnet34), not --arch {arch}")


def command_line(name: str, argv, program=("brainsnn", "run")) -> str:
    """The command that ran (for the results file and the resume hint): ``program``, then
    ``name`` (a protocol, or a script's path with ``program=("python",)``), then ``argv``
    (default: this process's arguments)."""
    import shlex
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    return shlex.join([*program, name, *argv])
