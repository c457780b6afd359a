"""The options the convolutional STDP protocols share (conv_stdp, backres_stdp): learning,
extraction and readout, and their checks. Nothing heavy is imported here (``--help``)."""
from __future__ import annotations

import math

from brainsnn.experiments import options

READOUTS = ("linear", "mlp", "spiking", "conv")


def add_options(p):
    """The learning, extraction and readout options (below) of a conv STDP protocol."""
    add_learning_options(p)
    add_extraction_options(p)
    add_readout_options(p)


def add_learning_options(p):
    """--stdp-images, --t-on, --t-off, --f-in, --chunk-size, --build-dir, --inhibitory-neuron
    (``--neuron`` comes from :func:`options.protocol_parser`)."""
    g = p.add_argument_group("STDP learning")
    g.add_argument("--stdp-images", type=int, default=None,
                   help="training images whose patches (and spikes) the STDP layers learn on")
    g.add_argument("--t-on", type=float, default=None, help="presentation time per patch (ms)")
    g.add_argument("--t-off", type=float, default=None, help="rest after each patch (ms)")
    g.add_argument("--f-in", type=float, default=255.0,
                   help="input rate of intensity 1 in learning (Hz; default 255)")
    g.add_argument("--chunk-size", type=int, default=None, help="patches per compiled Brian2 run")
    g.add_argument("--build-dir", default=None,
                   help="folder of the standalone projects (default: the cache, one folder "
                        "per layer keyed by what is compiled into it)")
    g.add_argument("--inhibitory-neuron", default=None, metavar="MODULE:ATTR",
                   help="a NeuronModel of your own for the inhibitory population of every "
                        "STDP layer (--neuron: the excitatory one)")


def add_extraction_options(p):
    """--extract-t-on, --extract-f-in, --extract-inhibition, --no-compile, --batch-size,
    --feature-pool, --features-cache."""
    g = p.add_argument_group("feature extraction (torch engine)")
    g.add_argument("--extract-t-on", type=float, default=None,
                   help="presentation time per image (ms; default 50, see EXTRACTION)")
    g.add_argument("--extract-f-in", type=float, default=None,
                   help="input rate of intensity 1 (Hz; default 1000, see EXTRACTION)")
    g.add_argument("--extract-inhibition", choices=["on", "off"], default=None,
                   help="lateral inhibition across feature maps (learning always uses it; "
                        "default on, see EXTRACTION)")
    g.add_argument("--no-compile", action="store_true",
                   help="run the torch engine eagerly (default: the scale's torch.compile)")
    g.add_argument("--batch-size", type=int, default=256, help="images per extraction batch")
    g.add_argument("--feature-pool", type=int, default=None,
                   help="sum-pool the spike counts over this window (features)")
    g.add_argument("--features-cache", default=None, metavar="DIR",
                   help="keep extracted spike counts in DIR, keyed by the stack (kernels, "
                        "thresholds, extraction settings, seed) and the images: a later run "
                        "with the same stack and images reads them instead of simulating "
                        "again (e.g. to try readouts); off by default")


def add_readout_options(p):
    """--readout, --loss, --label-smoothing, --readout-T, --hidden, --epochs, --lr,
    --weight-decay."""
    g = p.add_argument_group("readout (gradient-trained on the features)")
    g.add_argument("--readout", default="linear",
                   help="readout(s) trained on the same features, comma-separated from "
                        f"{', '.join(READOUTS)}; the first is the main one (default linear)")
    g.add_argument("--loss", choices=["softmax", "stochmax"], default="softmax")
    g.add_argument("--label-smoothing", type=float, default=0.0,
                   help="label smoothing of the softmax readout loss, in [0, 1) (default 0)")
    g.add_argument("--readout-T", type=int, default=8, help="time steps of the spiking readout")
    g.add_argument("--hidden", type=int, default=256,
                   help="hidden units of the mlp and spiking readouts (default 256)")
    g.add_argument("--epochs", type=int, default=None, help="readout epochs")
    g.add_argument("--lr", type=float, default=2e-3, help="readout learning rate (Adam)")
    g.add_argument("--weight-decay", type=float, default=1e-4)


def check(p, args):
    """Check the shared STDP options of ``args`` (filled from the scale table);
    ``p.error`` (one line, exit 2) on a bad value."""
    n_train = options.DATASET_SIZES[args.dataset][0] - args.validation
    if args.train_images is not None:
        n_train = args.train_images
    options.check_count(p, "--stdp-images", args.stdp_images, n_train,
                        "the training images read")
    for option in ("chunk_size", "batch_size", "feature_pool", "epochs", "readout_T", "hidden"):
        options.check_count(p, "--" + option.replace("_", "-"), getattr(args, option))
    options.check_positive(p, "--t-on", args.t_on)
    options.check_positive(p, "--t-off", args.t_off, allow_zero=True)
    options.check_positive(p, "--f-in", args.f_in)
    options.check_positive(p, "--lr", args.lr)
    options.check_positive(p, "--weight-decay", args.weight_decay, allow_zero=True)
    for option in ("extract_t_on", "extract_f_in"):
        if getattr(args, option) is not None:
            options.check_positive(p, "--" + option.replace("_", "-"), getattr(args, option))
    if not (math.isfinite(args.label_smoothing) and 0.0 <= args.label_smoothing < 1.0):
        p.error(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    if args.label_smoothing and args.loss != "softmax":
        p.error("--label-smoothing applies to the softmax loss only")
    for kind in args.readout.split(","):
        if kind not in READOUTS:
            p.error(f"--readout: unknown readout {kind!r}; expected {', '.join(READOUTS)}")


def refuse_resume(p, args):
    """``p.error`` on ``--resume`` for a protocol that saves no checkpoint."""
    if args.resume:
        p.error(f"--resume: {args.protocol} keeps no checkpoint; run it again (--force "
                "replaces the file)")


def run_name(args) -> str:
    """The default file name: ``<protocol>_<scale>[_<dataset>][_val<V>]_seed<seed>``."""
    name = f"{args.protocol}_{args.scale}"
    if args.dataset != "mnist":
        name += f"_{args.dataset}"
    if args.validation:
        name += f"_val{args.validation}"
    return f"{name}_seed{args.seed}"
