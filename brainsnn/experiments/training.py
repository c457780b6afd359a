"""What the gradient-training protocols share (agd, conversion, stochmax_latency,
hybrid_layers, backres_depth): network-shape options, torch set-up, training and evaluating
one network, storing its weights, the training figure."""
from __future__ import annotations

import logging

from brainsnn.errors import ExperimentError

log = logging.getLogger("brainsnn")

AUGMENT_CHOICES = ("none", "crop_flip", "crop_flip_cutout", "shift")
CIFAR_CAVEAT = ("CIFAR-10 caveat: measured on a JPEG-rebuilt copy of CIFAR-10 (quality 75), "
                "reported to score about 2-3 points below the original files")


def family(dataset: str) -> str:
    """The scale-table family of a dataset: ``'cifar'`` for CIFAR-10, ``'gray'`` otherwise."""
    return "cifar" if dataset == "cifar10" else "gray"


def add_vgg_options(parser):
    """--conv, --fc (layer widths), --augment, --label-smoothing; see :func:`apply_vgg_options`."""
    g = parser.add_argument_group("network")
    g.add_argument("--conv", default=None,
                   help="convolution widths and 'P' (2x2 average pooling), comma-separated, "
                        "e.g. 64,64,P,128,128,P (default per scale)")
    g.add_argument("--fc", default=None,
                   help="hidden linear widths, comma-separated (default per scale)")
    g.add_argument("--label-smoothing", type=float, default=None,
                   help="softmax loss: label smoothing epsilon (default per scale, else 0)")
    g.add_argument("--augment", choices=AUGMENT_CHOICES, default=None,
                   help="training-image augmentation: none, crop_flip (translation by up to 4 "
                        "pixels and horizontal flip), crop_flip_cutout (then a 16x16 square "
                        "set to 0) or shift (translation by up to 2 pixels) (default per scale)")
    return parser


def add_seed_options(parser):
    """--n-seeds: how many seeds (seed, seed+1, ...) a multi-seed protocol runs."""
    parser.add_argument("--n-seeds", type=int, default=None,
                        help="seeds run: --seed, --seed+1, ... (default per scale)")
    return parser


def apply_vgg_options(parser, args) -> None:
    """Resolve --conv/--fc/--augment/--label-smoothing in ``args`` (layer lists parsed, 'none'
    -> None); ``parser.error`` on a bad value."""
    from brainsnn.engine.network import parse_layer_list

    try:
        if isinstance(args.conv, str):
            args.conv = parse_layer_list(args.conv)
        if isinstance(args.fc, str):
            args.fc = parse_layer_list(args.fc, pooling=False)
    except ExperimentError as exc:
        parser.error(f"--conv/--fc: {exc}")
    except ValueError as exc:
        parser.error(f"--conv/--fc: {exc}")
    if args.augment == "none":
        args.augment = None
    if args.label_smoothing is None:
        args.label_smoothing = 0.0
    if not 0.0 <= args.label_smoothing < 1.0:
        parser.error(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.label_smoothing and getattr(args, "loss", "softmax") != "softmax":
        parser.error("--label-smoothing applies to the softmax loss only")


def seeds_of(args) -> tuple[int, ...]:
    """The seeds a multi-seed protocol runs: ``--seed`` and the next ``--n-seeds - 1``."""
    return tuple(args.seed + k for k in range(args.n_seeds))


def setup_torch(args):
    """Threads and device checks for torch; returns the torch module."""
    import torch

    from brainsnn.engine.devices import torch_device

    torch.set_num_threads(args.threads)
    if torch_device(args.torch_device, "--torch-device").type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch


def load_data(args):
    """(x_train, y_train, x_test, y_test) for ``args.dataset`` / ``--train-images`` /
    ``--test-images`` / ``--validation``, images (n, C, H, W) in [0, 1]."""
    from brainsnn.io.datasets import load_image_data

    return load_image_data(args.dataset, args.train_images, args.test_images,
                           data_dir=args.data, validation=args.validation)


def store_network(rec, network):
    """Write a network's weights and thresholds into a RunResults record.

    ``layers/<op>/kernels`` (conv, (out, in, kh, kw)) or ``layers/<op>/weights`` (linear,
    layout post_pre), ``layers/<op>/bias`` when present, ``layers/<logical layer>/theta``.
    """
    for name, op in network.ops.items():
        w = getattr(op, "weight", None)
        if w is None:
            continue
        w = w.detach().cpu().numpy()
        if w.ndim == 4:
            rec.set(f"layers/{name}/kernels", w, units="1")
        else:
            rec.set(f"layers/{name}/weights", w, layout="post_pre", units="1")
        if getattr(op, "bias", None) is not None:
            rec.set(f"layers/{name}/bias", op.bias.detach().cpu().numpy(), units="1")
    for name, theta in network.thresholds().items():
        rec.set(f"layers/{name}/theta", float(theta), units="1")


def train_and_evaluate(specs, x_train, y_train, x_test, y_test, eval_T=(), energy_images=1000,
                       **clf_kwargs):
    """Fit an :class:`~brainsnn.learn.agd.AGDClassifier` and measure it; returns
    ``(clf, result)``: test accuracy (at the training T), accuracy for each T in ``eval_T``,
    parameter count, training seconds, the energy report (on the first ``energy_images`` test
    images) and the per-epoch history."""
    import numpy as np

    from brainsnn.learn.agd import AGDClassifier

    clf = AGDClassifier(specs, **clf_kwargs)
    clf.fit(x_train, y_train)
    result = {"test_accuracy": clf.score(x_test, y_test),
              "accuracy_vs_T": clf.accuracy_vs_T(x_test, y_test, list(eval_T)) if eval_T
              else np.zeros(0),
              "n_parameters": clf.network_.n_parameters(),
              "train_seconds": clf.train_seconds_, "history": clf.history_,
              "energy": clf.energy(x_test[:energy_images]) if energy_images else None}
    return clf, result


def training_figure(path_or_rec):
    """Figure from a results file alone: training accuracy per epoch, test accuracy vs T."""
    import numpy as np
    from matplotlib.figure import Figure

    from brainsnn.io.results import RunResults

    rec = RunResults.load(path_or_rec) if not hasattr(path_or_rec, "get") else path_or_rec
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    acc = rec.get("metrics/train_acc")
    if acc is not None:
        acc = np.atleast_1d(acc)
        ax1.plot(np.arange(1, len(acc) + 1), acc, "o-")
    ax1.set(xlabel="epoch", ylabel="training accuracy", title=rec.attrs("").get("protocol", ""))
    Ts, accT = rec.get("metrics/T"), rec.get("metrics/accuracy_vs_T")
    if Ts is not None and accT is not None:
        ax2.plot(np.atleast_1d(Ts), np.atleast_1d(accT), "o-")
    ax2.set(xlabel="inference time steps T", ylabel="test accuracy")
    return fig


def save_figure(fig, results_path) -> str:
    """Save ``fig`` next to the results file (same name, ``.png``); returns its path."""
    import os

    png = os.path.splitext(str(results_path))[0] + ".png"
    fig.savefig(png)
    log.info(f"wrote {png}")
    return png


def claims_parser(name: str, doc: str, scales: dict):
    """The parser of a multi-seed claims protocol (stochmax_latency, hybrid_layers,
    backres_depth): the shared options, --epochs and --n-seeds."""
    from brainsnn.experiments import options

    p = options.protocol_parser(name, doc, scales)
    p.add_argument("--epochs", type=int, default=None, help="epochs (default per scale)")
    add_seed_options(p)
    return p


def parse_claims(parser, scales: dict, argv=None, int_lists=()):
    """Parse a claims protocol's options (see :func:`claims_parser`) and check them; the
    options named in ``int_lists`` (destinations, e.g. ``"train_T"``) become integer tuples."""
    from brainsnn.experiments import options

    args = options.parse(parser, scales, argv)
    options.check_count(parser, "--epochs", args.epochs)
    options.check_count(parser, "--n-seeds", args.n_seeds)
    for dest in int_lists:
        if getattr(args, dest) is not None:
            setattr(args, dest, options.int_list(parser, "--" + dest.replace("_", "-"),
                                                 getattr(args, dest), distinct=True))
    return args


def claims_setup(args, scales: dict) -> dict:
    """Torch set up for a claims protocol; its settings: the scale's table with the values the
    options gave, and the seeds it runs."""
    setup_torch(args)
    cfg = {k: getattr(args, k, v) for k, v in scales[args.scale].items()}
    cfg["seeds"] = seeds_of(args)
    return cfg


def claims_run(name: str, args, cfg: dict, argv):
    """The :class:`~brainsnn.experiments.run.Run` of claims protocol ``name``: its
    configuration is ``cfg`` with the shared data options; it keeps no checkpoint."""
    from brainsnn.experiments.run import Run

    config = {k: v for k, v in cfg.items() if k != "n_seeds"}
    config.update(dataset=args.dataset, scale=args.scale, train_images=args.train_images,
                  test_images=args.test_images, epochs=args.epochs,
                  torch_device=args.torch_device, threads=args.threads, data=args.data)
    return Run(args, config, name=f"{name}_{args.scale}_seed{args.seed}",
               device=args.torch_device, argv=argv, resumable=False)


def finish_claims(run, summary: str, figure, plot: bool) -> int:
    """End a claims run: store and print its summary table, save the complete results file,
    and with ``plot`` draw ``figure(path)`` next to it; returns the exit status 0."""
    run.rec.set("claims/summary", summary)
    log.info(summary)
    out = run.finish()
    if plot:
        save_figure(figure(out), out)
    return 0
