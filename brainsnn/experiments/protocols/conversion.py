"""ANN-to-SNN conversion, as defined in this project: train (or load) a ReLU ANN, convert it
to integrate-and-fire neurons with reset by subtraction (threshold balancing and/or activation
percentiles), evaluate accuracy against T, spike rates and energy; write one HDF5 file and a
figure.

Examples:
    brainsnn run conversion --scale smoke
    brainsnn run conversion --dataset mnist --scale small
    brainsnn run conversion --dataset fashion_mnist --scale small
    brainsnn run conversion --dataset mnist --arch backres --R 1,2,3
    brainsnn run conversion --dataset cifar10 --scale full --torch-device cuda --max-minutes 7

Architectures (``--arch``): ``vgg`` (3x3 convolutions, average pooling, fully connected
layers; batch-norm during training for CIFAR-10, folded into weights and biases before
conversion), ``residual`` (identity-shortcut blocks) and ``backres`` (a block of shared
convolutions run R times, one ANN per R in ``--R``, equal parameter counts), and the named
``resnet20``, ``resnet18``, ``resnet34``, ``vgg11``, ``vgg16`` (projection shortcuts; each
residual junction weighs its shortcut by the ratio of the two branches' scales). ``--kinds``
gives a hybrid target pattern (S spiking, A artificial per weighted layer, readout last).

``--validation N`` holds out the last N training images and evaluates on them instead of the
test set (keys and summaries then say ``validation``): choose settings that way, then run
once on the test set.

The file holds: the configuration and seed; per model (``models/<label>/``) the ANN test
accuracy (``ann_test_accuracy``), weights, the thresholds of each method and its spike rates and energy;
``metrics/accuracy_vs_T`` (one row per model and method, then one constant row per model with
its ANN's accuracy as a reference; attribute ``labels``) against ``metrics/T``; for the first model and method ``layers/<name>/spike_rate``,
``energy/<layer>`` and ``energy/total`` (attribute ``ratio_to_ann``); timings.

"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from brainsnn.errors import ExperimentError
from brainsnn.experiments import options
from brainsnn.experiments.run import EpochProgress
from brainsnn.experiments.training import (CIFAR_CAVEAT, add_vgg_options, apply_vgg_options,
                                           family)

PROTOCOL = "conversion"
#: named architectures (brainsnn.engine.architectures.ARCHITECTURES) after the table-driven ones
ARCHS = ("vgg", "residual", "backres", *options.NAMED_ARCHS)
METHOD_CHOICES = ("balance", "percentile", "qcfs", "balance+calibration",
                  "percentile+calibration", "qcfs+calibration")
log = logging.getLogger("brainsnn")

# Per dataset family and scale. Chosen on training data only (never tuned on the test set).
CONFIGS = {
    ("gray", "smoke"): dict(train_images=2000, test_images=300, conv=(), fc=(64,), width=8, epochs=1,
                            batch_size=64, lr=2e-3, batchnorm=False, augment=None,
                            Ts=(8, 16, 32, 64), n_fit=200, balance_T=32, eval_batch=250),
    # small: a fully connected ReLU network (784-256-256-10), cheap enough to evaluate the
    # converted SNN on the full test set for T up to 256 on one CPU thread
    ("gray", "small"): dict(train_images=None, test_images=None, conv=(), fc=(256, 256), width=16,
                            epochs=4, batch_size=64, lr=1e-3, batchnorm=False, augment=None,
                            Ts=(16, 32, 64, 128, 256), n_fit=500, balance_T=128,
                            eval_batch=500),
    ("gray", "full"): dict(train_images=None, test_images=None, conv=(32, "P", 64, "P"), fc=(256,),
                           width=32, epochs=8, batch_size=64, lr=2e-3, batchnorm=False,
                           augment="none", Ts=(16, 32, 64, 128, 256, 512, 1024), n_fit=1000,
                           balance_T=256, eval_batch=100),
    ("cifar", "smoke"): dict(train_images=1000, test_images=200, conv=(8, "P", 16, "P"), fc=(64,),
                             width=8, epochs=1, batch_size=50, lr=2e-3, batchnorm=True,
                             augment="none", Ts=(8, 16, 32, 64), n_fit=100, balance_T=32,
                             eval_batch=100),
    ("cifar", "small"): dict(train_images=10000, test_images=2000, conv=(32, 32, "P", 64, 64, "P"),
                             fc=(128,), width=32, epochs=4, batch_size=64, lr=2e-3,
                             batchnorm=True, augment="crop_flip", Ts=(32, 64, 128, 256),
                             n_fit=300, balance_T=128, eval_batch=50),
    # full CIFAR-10: cutout + label smoothing 0.1 at batch 128, chosen on the last 5,000
    # training images (30 epochs each: ANN 91.36 %, against 91.06 % with cutout alone and
    # 90.64 % with crop_flip alone)
    ("cifar", "full"): dict(train_images=None, test_images=None,
                            conv=(96, 96, "P", 192, 192, "P", 384, 384, "P", 512, "P"),
                            fc=(512,), width=64, epochs=100, batch_size=128, lr=0.1,
                            optimizer="sgd", weight_decay=5e-4, batchnorm=True,
                            augment="crop_flip_cutout", label_smoothing=0.1,
                            Ts=(32, 64, 128, 256), n_fit=512, balance_T=128, eval_batch=128),
}


FALLBACK = dict(optimizer="adam", weight_decay=0.0, max_minutes=None, reserve_minutes=0.5,
                label_smoothing=0.0)
SCALES = {scale: CONFIGS[("gray", scale)] for scale in ("smoke", "small", "full")}


def defaults(args) -> dict:
    table = {**FALLBACK, **CONFIGS[(family(args.dataset), args.scale)]}
    table["eval_T"] = table.pop("Ts")
    if args.arch in options.NAMED_ARCHS:
        del table["width"]          # a named network's own width unless --width is given
    return table


def build_parser():
    p = options.protocol_parser(PROTOCOL, __doc__, SCALES)
    g = p.add_argument_group("conversion")
    g.add_argument("--arch", choices=ARCHS, default="vgg")
    g.add_argument("--R", default=None, help="BackRes passes, comma-separated, one ANN each: "
                   "--arch backres (default 1,2,3) or a named ResNet, whose residual stages "
                   "run their shape-keeping blocks R times (default 1)")
    g.add_argument("--width", type=int, default=None,
                   help="channels of the residual / BackRes networks (default per scale) or of "
                        "a named ResNet's first stage (default its own)")
    g.add_argument("--block-layers", type=int, default=1,
                   help="convolutions per BackRes / residual block (default 1 / 2)")
    g.add_argument("--method", default="balance,percentile",
                   help="threshold methods, comma-separated: balance (Sengupta et al. 2019), "
                        "percentile (Rueckauer et al. 2017); default both; qcfs (an ANN "
                        "trained with the quantised clip-floor-shift activation, Bu et al. "
                        "2022); '+calibration' after any of them: layer-wise bias "
                        "calibration for each T (Li et al. 2021)")
    g.add_argument("--qcfs-L", type=int, default=4,
                   help="quantisation steps L of the QCFS activation (default 4)")
    g.add_argument("--qcfs-init", choices=("scratch", "ann"), default="scratch",
                   help="where QCFS training starts: 'scratch' (default: fresh weights, the "
                        "ReLU ANN's seed) or 'ann' (the trained ReLU ANN's weights, its "
                        "batch norm folded, fine-tuned without batch norm)")
    g.add_argument("--qcfs-epochs", type=int, default=None,
                   help="epochs of QCFS training (default: the ANN's --epochs)")
    g.add_argument("--qcfs-lr", type=float, default=None,
                   help="peak learning rate of QCFS training (default: the ANN's --lr)")
    g.add_argument("--calibration-images", type=int, default=None,
                   help="training images for '+calibration' (default: the --n-fit images)")
    g.add_argument("--percentile", type=float, default=99.9,
                   help="activation percentile for --method percentile (default 99.9)")
    g.add_argument("--balance-percentile", type=float, default=100.0,
                   help="threshold balancing: 100 (default) = the maximum input current "
                        "(Sengupta et al.); lower = that percentile of the positive currents")
    g.add_argument("--kinds", default="spiking",
                   help="target layer kinds: 'spiking' (default) or a pattern of S/A letters, "
                        "one per weighted layer incl. the readout (hybrid network)")
    g.add_argument("--encoder", choices=("direct", "poisson"), default="direct",
                   help="input coding of the SNN (default direct: analog image as current)")
    g.add_argument("--ann", default=None, help="load the ANN weights from an earlier results "
                   "file of this protocol (same --dataset/--arch/--scale) instead of training")
    g.add_argument("--n-fit", type=int, default=None,
                   help="training images used to set thresholds (default per scale)")
    g.add_argument("--balance-T", type=int, default=None, help="steps per balancing image")
    g.add_argument("--eval-T", default=None, help="comma-separated T for accuracy_vs_T "
                   "(one run of the largest T gives all)")
    g.add_argument("--eval-batch", type=int, default=None,
                   help="images per SNN forward pass (memory grows with T x batch)")
    t_ = p.add_argument_group("ANN training")
    t_.add_argument("--epochs", type=int, default=None)
    t_.add_argument("--batch-size", type=int, default=None)
    t_.add_argument("--lr", type=float, default=None)
    t_.add_argument("--weight-decay", type=float, default=None, help="L2 weight decay of the ANN")
    t_.add_argument("--optimizer", choices=("adam", "sgd"), default=None,
                    help="ANN optimizer (default per scale: sgd for CIFAR-10 full, else adam)")
    t_.add_argument("--max-minutes", type=float, default=None,
                    help="time budget of the whole run in minutes: ANN training stops early so "
                         "that about --reserve-minutes remain for conversion and evaluation")
    t_.add_argument("--reserve-minutes", type=float, default=None,
                    help="minutes kept for conversion + evaluation within --max-minutes")
    add_vgg_options(p)
    return p


def parse_args(argv=None):
    p = build_parser()
    args = options.parse(p, SCALES, argv, defaults=defaults)
    for option in ("width", "epochs", "batch_size", "n_fit", "balance_T", "eval_batch",
                   "block_layers"):
        if getattr(args, option) is None:       # a named network's own width
            continue
        options.check_count(p, "--" + option.replace("_", "-"), getattr(args, option),
                            args.train_images or 60000 if option == "n_fit" else None)
    options.check_positive(p, "--lr", args.lr)
    options.check_positive(p, "--weight-decay", args.weight_decay, allow_zero=True)
    options.check_positive(p, "--percentile", args.percentile, maximum=100.0)
    options.check_positive(p, "--balance-percentile", args.balance_percentile, maximum=100.0)
    for option in ("max_minutes", "reserve_minutes"):
        if getattr(args, option) is not None:
            options.check_positive(p, "--" + option.replace("_", "-"), getattr(args, option))
    args.eval_T = options.int_list(p, "--eval-T", args.eval_T, distinct=True)
    args.R = options.int_list(p, "--R", args.R or ("1,2,3" if args.arch == "backres" else "1"),
                              distinct=True)
    if args.arch != "backres":
        options.check_backres_arch(p, args.arch, args.R)
    args.method = tuple(m.strip() for m in args.method.split(",") if m.strip())
    if not args.method or any(m not in METHOD_CHOICES for m in args.method):
        p.error(f"--method must list some of {', '.join(METHOD_CHOICES)}, got "
                f"{','.join(args.method)!r}")
    options.check_count(p, "--qcfs-L", args.qcfs_L)
    given = [flag for flag, on in (("--qcfs-init ann", args.qcfs_init == "ann"),
                                   ("--qcfs-epochs", args.qcfs_epochs is not None),
                                   ("--qcfs-lr", args.qcfs_lr is not None)) if on]
    if given and not any(m.startswith("qcfs") for m in args.method):
        p.error(f"{', '.join(given)} set(s) QCFS training, but --method lists no qcfs method "
                f"(got {','.join(args.method)!r}); add qcfs or qcfs+calibration")
    if args.qcfs_epochs is not None:
        options.check_count(p, "--qcfs-epochs", args.qcfs_epochs)
    if args.qcfs_lr is not None:
        options.check_positive(p, "--qcfs-lr", args.qcfs_lr)
    if args.calibration_images is not None:
        options.check_count(p, "--calibration-images", args.calibration_images)
    if args.ann is not None and not Path(args.ann).is_file():
        p.error(f"--ann {args.ann}: no such file; expected the results file of an earlier "
                "conversion run")
    apply_vgg_options(p, args)
    if args.arch != "vgg" or args.conv:
        args.eval_batch = min(args.eval_batch, 100)   # conv layers: (T, batch, C, H, W) memory
    return args


def run_name(args) -> str:
    arch = "" if args.arch == "vgg" else f"_{args.arch}"
    return f"{PROTOCOL}_{args.dataset}{arch}_{args.scale}_seed{args.seed}"


def make_specs(arch, cfg, R=1, block_layers=1, input_size=32):
    from brainsnn.engine.architectures import ARCHITECTURES, arch_specs
    from brainsnn.engine.network import backres_specs, residual_specs, vgg_specs

    if arch in ARCHITECTURES:
        return arch_specs(arch, n_classes=10, input_size=input_size, kinds="artificial",
                          width=cfg["width"], backres=R if R > 1 else None)

    if arch == "vgg":
        return vgg_specs(cfg["conv"], fc=cfg["fc"], kinds="artificial")
    if arch == "residual":
        return residual_specs(width=cfg["width"], n_blocks=2, layers_per_block=max(2, block_layers),
                              kinds="artificial")
    return backres_specs(width=cfg["width"], block_layers=block_layers, R=R, shared=True,
                         kinds="artificial")


def store_model(rec, prefix, network):
    """Weights (and biases) of a network under ``prefix`` (state-dict keys as paths)."""
    for key, value in network.ops.state_dict().items():
        rec.set(f"{prefix}/{key.replace('.', '/')}", value.detach().cpu().numpy(), units="1")


def ann_provenance(path) -> tuple[str, int]:
    """``(dataset, n)``: the ANN stored in results file ``path`` was trained on the first ``n``
    training images of ``dataset`` (``ann_training/images`` where the file has it; in older
    files from its configuration, following ``--ann`` to the file it was loaded from)."""
    from brainsnn.io.results import RunResults

    src = RunResults.load(path, select=lambda p: p.startswith("ann_training/"))
    if src.get("ann_training/images") is not None:
        return (src.attrs("ann_training/images")["dataset"],
                int(src.get("ann_training/images")))
    config = src.config
    if config.get("ann"):
        if not Path(config["ann"]).is_file():
            raise ExperimentError(
                f"--ann {path}: its ANN was loaded from {config['ann']}, which is not there, so "
                "the images it was trained on cannot be checked; train the ANN again")
        return ann_provenance(config["ann"])
    dataset, n = config["dataset"], config.get("train_images")
    if n is None:
        n = options.DATASET_SIZES[dataset][0] - int(config.get("validation") or 0)
    return dataset, int(n)


def check_ann_source(args) -> tuple[str, int]:
    """The provenance of ``--ann`` (:func:`ann_provenance`), refused with an
    :class:`~brainsnn.errors.ExperimentError` where it was trained on another dataset, or on
    the validation images that this run holds out."""
    dataset, n = ann_provenance(args.ann)
    if dataset != args.dataset:
        raise ExperimentError(f"--ann {args.ann}: its ANN was trained on {dataset}, this run "
                              f"is on {args.dataset}")
    if args.validation:
        start = (args.train_images if args.train_images is not None
                 else options.DATASET_SIZES[dataset][0] - args.validation)
        if n > start:
            raise ExperimentError(
                f"--ann {args.ann}: its ANN was trained on the first {n} {dataset} training "
                f"images, which include the validation images this run holds out (training "
                f"images {start}..{start + args.validation - 1}); train it on at most the "
                f"first {start} (e.g. with the same --train-images and --validation)")
    return dataset, n


def load_model(path, label, network):
    from brainsnn.io.results import RunResults

    src = RunResults.load(path)
    stored = src.get(f"models/{label}/network_config_json")
    if stored is not None:
        stored = json.loads(stored.decode() if isinstance(stored, bytes) else str(stored))
        here = json.loads(json.dumps(network.config()))
        if stored != here:
            differ = sorted(k for k in set(stored) | set(here) if stored.get(k) != here.get(k))
            raise ExperimentError(f"--ann {path}: its network {label!r} differs from this "
                                  f"run's in {', '.join(differ)} (was it written with the same "
                                  "--dataset/--arch/--scale and layer options?)")
    prefix = f"models/{label}/ann/"
    expected = {prefix + key.replace(".", "/") for key in network.ops.state_dict()}
    unused = sorted(p for p in src.keys() if p.startswith(prefix) and p not in expected)
    if unused:
        raise ExperimentError(f"--ann {path}: this network has no place for {', '.join(unused)} "
                              "(was it written with the same --dataset/--arch/--scale and "
                              "layer options?)")
    state = {}
    for key, value in network.ops.state_dict().items():
        p = prefix + key.replace(".", "/")
        arr = src.get(p)
        if arr is None or tuple(arr.shape) != tuple(value.shape):
            raise ExperimentError(f"--ann {path}: no weights {p!r} of shape "
                                  f"{tuple(value.shape)} (was it written with the same "
                                  "--dataset/--arch/--scale?)")
        state[key] = __import__("torch").as_tensor(arr)
    network.ops.load_state_dict(state)


def fit_epochs(make_ann, x_train, y_train, cfg, minutes, args):
    """Epochs that fit in ``minutes``: times 24 batches (after 8 untimed) of a throw-away ANN.

    The cosine learning-rate schedule then runs to its end instead of being cut by the budget.
    """
    from brainsnn.learn.conversion import train_ann

    t_cal = time.perf_counter()
    n = min(len(x_train), 24 * cfg["batch_size"])
    probe = make_ann()
    kwargs = dict(batch_size=cfg["batch_size"], lr=cfg["lr"], augment=cfg["augment"],
                  optimizer=cfg.get("optimizer", "adam"), device=args.torch_device, seed=args.seed)
    # warm-up (CUDA context, cuDNN autotuning) is not timed
    train_ann(probe, x_train[:n // 3], y_train[:n // 3], epochs=1, **kwargs)
    t0 = time.perf_counter()
    train_ann(probe, x_train[:n], y_train[:n], epochs=1, **kwargs)
    per_image = (time.perf_counter() - t0) / n
    del probe
    minutes = max(0.05, minutes - (time.perf_counter() - t_cal) / 60)
    epochs = int(60 * minutes / (1.1 * per_image * len(x_train)))
    epochs = max(1, min(cfg["epochs"], epochs))
    log.info(f"timing: {per_image * 1e6:.0f} us per training image -> {epochs} epochs fit in "
             f"the {minutes:.2f} min left for training")
    return epochs, minutes


def train_qcfs_model(rec, label, make_ann, ann, x_train, y_train, x_test, y_test, cfg, args,
                     split):
    """The ANN with QCFS activations: the ReLU ANN's specs, training settings and seed; its
    weights from scratch (``--qcfs-init scratch``) or from the trained ReLU ``ann`` (batch
    norm already folded into it)."""
    import torch

    from brainsnn.experiments.run import percent
    from brainsnn.learn.conversion import ANNToSNN, attach_batchnorm, fold_batchnorm
    from brainsnn.learn.qcfs import QCFSNetwork, train_qcfs

    epochs = args.qcfs_epochs or cfg["epochs"]
    lr = args.qcfs_lr or cfg["lr"]
    torch.manual_seed(args.seed)
    if args.qcfs_init == "ann":
        net = QCFSNetwork.from_network(ann, L=args.qcfs_L)
    else:
        net = QCFSNetwork.from_network(fold_batchnorm(make_ann()), L=args.qcfs_L)
        if cfg["batchnorm"]:
            attach_batchnorm(net)
    log.info(f"{label}: training the QCFS ANN (L = {args.qcfs_L}, from "
             f"{'the ReLU ANN' if args.qcfs_init == 'ann' else 'scratch'}, {epochs} epochs, "
             f"lr {lr:g})")
    for key, value in (("init", args.qcfs_init), ("epochs", int(epochs)), ("lr", float(lr))):
        rec.set(f"models/{label}/qcfs_training/{key}", value)
    with rec.timer(f"train_{label}_qcfs"), EpochProgress(epochs, f"{label}: QCFS ANN training") as bar:
        train_qcfs(net, x_train, y_train, epochs=epochs, batch_size=cfg["batch_size"],
                   lr=lr, weight_decay=cfg.get("weight_decay", 0.0),
                   augment=cfg["augment"], device=args.torch_device, seed=args.seed,
                   optimizer=cfg.get("optimizer", "adam"), verbose=args.verbose > 0,
                   loss_options={"label_smoothing": args.label_smoothing},
                   callback=bar.on_epoch)
    lambdas = net.lambda_values()
    net = QCFSNetwork.from_network(fold_batchnorm(net), L=args.qcfs_L, lambdas=lambdas).eval()
    store_model(rec, f"models/{label}/qcfs_ann", net)
    for name, lam in lambdas.items():
        rec.set(f"models/{label}/qcfs_ann/lambda/{name}", lam, units="1")
    acc = ANNToSNN(net, batch_size=cfg["eval_batch"],
                   device=args.torch_device).ann_accuracy(x_test, y_test)
    rec.set(f"models/{label}/qcfs_ann_{split}_accuracy", acc, L=args.qcfs_L,
            n_images=len(x_test))
    log.info(f"{label}: QCFS ANN {split} accuracy {percent(acc)}")
    return net


def make_converter(method, ann, cfg, args):
    """The converter of ``method`` ('<base>' or '<base>+calibration') for ``ann``."""
    from brainsnn.learn.calibration import CalibratedConverter
    from brainsnn.learn.conversion import ANNToSNN
    from brainsnn.learn.qcfs import QCFSConverter

    base, _, calibration = method.partition("+")
    common = dict(kinds=args.kinds, encoder=args.encoder, batch_size=cfg["eval_batch"],
                  device=args.torch_device, seed=args.seed, verbose=args.verbose > 0)
    if base == "qcfs":
        conv = QCFSConverter(ann, **common)
    else:
        conv = ANNToSNN(ann, method=base, percentile=args.percentile,
                        balance_T=cfg["balance_T"], balance_percentile=args.balance_percentile,
                        **common)
    if calibration:
        conv = CalibratedConverter(conv, n_images=args.calibration_images or cfg["n_fit"])
    return conv


def record_latency(rec, base, conv, x_test, acc, Ts, ann_acc, label, method, n_energy=1000):
    """Energy per T (on the first ``n_energy`` evaluation images) and the first T within one
    point of the ANN, with its energy."""
    from brainsnn.learn.latency import energy_vs_T, first_T_within

    energy = energy_vs_T(conv, x_test[:n_energy], Ts)
    rec.set(f"{base}/energy_vs_T", energy, T=Ts, units="J/image",
            n_images=min(n_energy, len(x_test)))
    T1 = first_T_within(acc, Ts, ann_acc, tolerance=0.01)
    rec.set(f"{base}/T_within_1_point", -1 if T1 is None else T1,
            energy=float("nan") if T1 is None else float(energy[Ts.index(T1)]),
            units="time steps (-1: none of the T evaluated)")
    within = (f"within 1 point of the ANN from T = {T1}" if T1 is not None
              else f"not within 1 point of the ANN at any T evaluated (largest {max(Ts)})")
    log.info(f"{label}/{method}: {within}; energy per T "
             + ", ".join(f"{T}: {e:.3g} J" for T, e in zip(Ts, energy)))


def main(argv=None):
    args = parse_args(argv)
    import numpy as np

    from brainsnn.experiments.run import Run
    from brainsnn.experiments.training import setup_torch

    t_start = time.perf_counter()
    torch = setup_torch(args)
    split = options.split_name(args)
    cfg = {k: getattr(args, k) for k in ("width", "epochs", "batch_size", "lr", "optimizer",
                                         "n_fit", "balance_T", "eval_batch", "max_minutes",
                                         "reserve_minutes", "weight_decay", "conv", "fc",
                                         "augment", "batchnorm")}
    cfg["Ts"] = args.eval_T
    config = {**cfg, **{k: getattr(args, k) for k in (
        "dataset", "scale", "train_images", "test_images", "validation", "arch", "R",
        "block_layers", "method", "percentile", "balance_percentile", "kinds", "encoder", "ann",
        "qcfs_L", "qcfs_init", "qcfs_epochs", "qcfs_lr", "calibration_images",
        "label_smoothing", "torch_device", "threads", "data")}}
    if args.dataset == "cifar10":
        config["caveat"] = CIFAR_CAVEAT
    ann_images = check_ann_source(args)[1] if args.ann else None
    with Run(args, config, name=run_name(args), device=args.torch_device, argv=argv,
             resumable=False) as run:
        return convert(run, args, cfg, split, t_start, np, torch, ann_images=ann_images)


def convert(run, args, cfg, split, t_start, np, torch, ann_images=None):
    """Train (or load) each ANN, convert it by every method, evaluate against T.
    ``ann_images``: the training images a loaded (``--ann``) ANN was trained on."""
    from brainsnn.analysis.energy import format_report, write_energy
    from brainsnn.engine.network import Network
    from brainsnn.experiments.run import percent
    from brainsnn.experiments.training import load_data
    from brainsnn.learn.conversion import ANNToSNN, attach_batchnorm, fold_batchnorm, train_ann

    rec = run.rec
    methods, Rs, fam = list(args.method), list(args.R), family(args.dataset)
    log.info(f"loading {args.dataset} ...")
    x_train, y_train, x_test, y_test = load_data(args)
    # threshold-setting images: a fixed random subset of the training set
    fit_idx = np.random.default_rng(args.seed).permutation(len(x_train))[:cfg["n_fit"]]
    x_fit = x_train[fit_idx]
    rec.set("ann_training/images", len(x_train) if ann_images is None else ann_images,
            dataset=args.dataset, description="the ReLU ANN was trained on this many training "
            "images of the dataset, its first")
    log.info(f"{args.dataset} {args.arch} {args.scale}: {len(x_train)} train / {len(x_test)} "
             f"{split} images, methods {methods}, T {list(cfg['Ts'])}, device {args.torch_device}")

    Ts = list(cfg["Ts"])
    rows, labels, first = [], [], True
    summary = []
    budget = cfg.get("max_minutes")
    for model_idx, R in enumerate(Rs):
        label = f"R{R}" if args.arch == "backres" else (
            "mlp" if args.arch == "vgg" and not cfg["conv"] else args.arch)
        if args.arch.startswith("resnet") and len(Rs) > 1:
            label += f"_R{R}"
        def make_ann():
            net = Network(make_specs(args.arch, cfg, R, args.block_layers,
                                     input_size=x_train.shape[-1]), x_train.shape[1:],
                          T=1).to(args.torch_device)
            return attach_batchnorm(net) if cfg["batchnorm"] else net

        torch.manual_seed(args.seed)
        ann = make_ann()
        if args.ann:
            ann = fold_batchnorm(ann)   # stored folded: layers that had batch norm have biases
            load_model(args.ann, label, ann)
            log.info(f"{label}: ANN loaded from {args.ann}")
        else:
            train_minutes = None
            if budget:
                left = budget - (time.perf_counter() - t_start) / 60 - cfg.get("reserve_minutes", 0.5)
                train_minutes = max(0.05, left / (len(Rs) - model_idx))
            epochs = cfg["epochs"]
            if train_minutes:
                epochs, train_minutes = fit_epochs(make_ann, x_train, y_train, cfg,
                                                   train_minutes, args)
                rec.set(f"models/{label}/training/epochs_planned", int(epochs))
            log.info(f"{label}: training the ANN ({ann.n_parameters()} parameters, {epochs} "
                     "epochs" + (f", budget {train_minutes:.2f} min" if train_minutes else "") + ")")
            with rec.timer(f"train_{label}"), EpochProgress(epochs, f"{label}: ANN training") as bar:
                clf = train_ann(ann, x_train, y_train, epochs=epochs,
                                batch_size=cfg["batch_size"], lr=cfg["lr"],
                                weight_decay=cfg.get("weight_decay", 0.0), augment=cfg["augment"],
                                max_minutes=train_minutes, device=args.torch_device, seed=args.seed,
                                optimizer=cfg.get("optimizer", "adam"), verbose=args.verbose > 0,
                                loss_options={"label_smoothing": args.label_smoothing},
                                callback=bar.on_epoch)
            for h in clf.history_:
                rec.add_metric(f"train_acc_{label}", float(h["train_acc"]), step=h["epoch"])
            rec.set(f"models/{label}/training/stopped_early", int(clf.stopped_early_))
            rec.set(f"models/{label}/training/epochs_done", len(clf.history_))
            ann = fold_batchnorm(ann)
        ann.eval()
        store_model(rec, f"models/{label}/ann", ann)
        rec.set(f"models/{label}/n_parameters", int(ann.n_parameters()))
        rec.set(f"models/{label}/network_config_json", json.dumps(ann.config()))
        qcfs_ann = None
        for method in methods:
            if method.startswith("qcfs") and qcfs_ann is None:
                qcfs_ann = train_qcfs_model(rec, label, make_ann, ann, x_train, y_train,
                                            x_test, y_test, cfg, args, split)
            conv = make_converter(method, qcfs_ann if method.startswith("qcfs") else ann,
                                  cfg, args)
            if method == methods[0]:
                with rec.timer(f"ann_{split}_{label}"):
                    ann_acc = ANNToSNN(ann, batch_size=cfg["eval_batch"],
                                       device=args.torch_device).ann_accuracy(x_test, y_test)
                rec.set(f"models/{label}/ann_{split}_accuracy", ann_acc, n_images=len(x_test),
                        **({"caveat": CIFAR_CAVEAT} if fam == "cifar" else {}))
                log.info(f"{label}: ANN {split} accuracy {percent(ann_acc)}")
            log.info(f"{label}/{method}: setting thresholds on {len(x_fit)} training images")
            with rec.timer(f"fit_{label}_{method}"):
                conv.fit(x_fit)
            t0 = time.perf_counter()
            with rec.timer(f"evaluate_{label}_{method}"):
                acc = conv.accuracy_vs_T(x_test, y_test, Ts)
            report = conv.energy()
            base = f"models/{label}/{method}"
            for name, theta in conv.thresholds_.items():
                rec.set(f"{base}/theta/{name}", float(theta), units="1")
            for name, lam in conv.scales_.items():
                rec.set(f"{base}/scale/{name}", float(lam), units="1")
            rec.set(f"{base}/accuracy_vs_T", np.asarray(acc), T=Ts, ann_accuracy=ann_acc)
            for name, e in report["layers"].items():
                rec.set(f"{base}/energy/{name}", float(e["energy"]), units="J/image",
                        kind=e["kind"], op_type=e["op_type"], operations=float(e["operations"]))
                if "spike_rate" in e:
                    rec.set(f"{base}/spike_rate/{name}", float(e["spike_rate"]),
                            units="spikes per neuron per step", T=int(report["T"]))
            rec.set(f"{base}/energy/total", float(report["total"]), units="J/image",
                    ann_total=float(report["ann_total"]), ratio_to_ann=float(report["ratio_to_ann"]),
                    T=int(report["T"]))
            if first:  # the package-wide conventions: layers/<name>/spike_rate, energy/<layer>
                write_energy(rec, report)
                first = False
            rows.append(np.asarray(acc))
            labels.append(f"{label} {method}")
            gap = {T: float(ann_acc - a) for T, a in zip(Ts, acc)}
            summary.append((label, method, ann_acc, acc, report["ratio_to_ann"]))
            log.info(format_report(report))
            log.info(f"{label}/{method}: ANN {percent(ann_acc)}; SNN " + ", ".join(
                f"T={T}: {percent(a)}" for T, a in zip(Ts, acc)) + f" (eval "
                f"{time.perf_counter() - t0:.0f} s); energy ratio SNN/ANN "
                f"{report['ratio_to_ann']:.3f} at T={Ts[-1]}")
            rec.set(f"{base}/gap_to_ann", np.array([gap[T] for T in Ts]), T=Ts,
                    units="accuracy points (fraction)")
            record_latency(rec, base, conv, x_test, acc, Ts, ann_acc, label, method)
            run.checkpoint()  # a checkpoint survives a time-out of later steps
    rec.set("metrics/T", np.array(Ts))
    # one row per model and method; then one constant row per model: its ANN (reference line,
    # the ANN has no time steps), labelled "<model> ANN"
    for label in dict.fromkeys(s[0] for s in summary):
        ann_acc = next(s[2] for s in summary if s[0] == label)
        rows.append(np.full(len(Ts), ann_acc))
        labels.append(f"{label} ANN")
    rec.set("metrics/accuracy_vs_T", np.vstack(rows), labels=labels, split=split,
            ann_rows=[k for k, lab in enumerate(labels) if lab.endswith(" ANN")],
            ann_accuracy=[float(s[2]) for s in summary],
            **({"caveat": CIFAR_CAVEAT} if fam == "cifar" else {}))
    rec.set("timings/total_wall", time.perf_counter() - t_start, units="s")
    out = run.finish()
    for label, method, ann_acc, acc, ratio in summary:
        log.info(f"SUMMARY {args.dataset} {label} {method} ({split}): ANN {percent(ann_acc)} | "
                 + " ".join(f"T{T} {percent(a)}" for T, a in zip(Ts, acc))
                 + f" | energy ratio {ratio:.3f}" + (f"  [{CIFAR_CAVEAT}]" if fam == "cifar" else ""))
    if args.plot:
        from brainsnn.analysis.plotting import save_results_figure
        log.info(f"wrote {save_results_figure(out)}")
    return 0

