"""Train and evaluate an AGD (surrogate-gradient) spiking network on MNIST, Fashion-MNIST or
CIFAR-10, as defined in this project.

The results file holds the configuration and seed, per-epoch training loss and accuracy,
the test accuracy (metrics/test_accuracy, or metrics/validation_accuracy with --validation),
accuracy against the number of inference steps (metrics/accuracy_vs_T against metrics/T),
per-layer spike rates and energy (energy/<layer>, energy/total), the trained weights
(layers/<name>/kernels or weights, layout post_pre) and timings. A checkpoint is written after
every epoch; --resume continues from the last one.

Examples:
  brainsnn run agd --scale smoke
  brainsnn run agd --dataset mnist --scale full                  # ~12 min, 1 CPU thread
  brainsnn run agd --dataset cifar10 --scale full --torch-device cuda --max-minutes 8.28 \\
      --optimizer sgd --lr 0.1 --weight-decay 5e-4
  torchrun --standalone --nproc_per_node 4 -m brainsnn run agd --dataset cifar10 \\
      --arch resnet20 --scale full --torch-device cuda       # one training on 4 GPUs
"""
from __future__ import annotations

import logging

from brainsnn.experiments import options
from brainsnn.experiments.training import (CIFAR_CAVEAT, add_vgg_options, apply_vgg_options,
                                           family)

PROTOCOL = "agd"
#: --arch: the table-driven VGG, then brainsnn.engine.architectures.ARCHITECTURES
ARCHS = ("vgg", *options.NAMED_ARCHS)
# Per dataset family and scale (chosen on training data / validation images, never on the
# test set). train_images / test_images None: all of them.
CONFIGS = {
    ("gray", "smoke"): dict(train_images=1000, test_images=500, epochs=1, conv=(8, "P", 16, "P"),
                            fc=(64,), T=4, batch_size=50, lr=3e-3),
    ("gray", "small"): dict(train_images=10000, test_images=10000, epochs=2,
                            conv=(16, "P", 32, "P"), fc=(128,), T=4, batch_size=64, lr=2e-3),
    # full: batch-norm during training (folded into weights and bias currents afterwards);
    # about 12 min on one CPU thread. No time budget by default: --max-minutes adapts the
    # learning-rate schedule to the measured speed, so the result then depends on the machine
    ("gray", "full"): dict(train_images=None, test_images=None, epochs=4, conv=(16, "P", 32, "P"),
                           fc=(128,), T=4, batch_size=64, lr=2e-3, batchnorm=1),
    ("cifar", "smoke"): dict(train_images=1000, test_images=500, epochs=1,
                             conv=(16, "P", 32, "P"), fc=(64,), T=4, batch_size=50, lr=2e-3,
                             augment="none"),
    ("cifar", "small"): dict(train_images=10000, test_images=10000, epochs=3,
                             conv=(32, "P", 64, "P"), fc=(128,), T=4, batch_size=64, lr=2e-3,
                             augment="crop_flip", init_rate=0.1),
    ("cifar", "full"): dict(train_images=None, test_images=None, epochs=60,
                            conv=(64, 64, "P", 128, 128, "P", 256, 256, "P"), fc=(512,), T=4,
                            batch_size=128, lr=1e-3, augment="crop_flip", batchnorm=1),
}
#: what an option left unset takes when the scale table does not name it
FALLBACK = dict(optimizer="adam", weight_decay=0.0, batchnorm=0, max_minutes=None,
                init_rate=None, augment="none", label_smoothing=0.0)
SCALES = {scale: CONFIGS[("gray", scale)] for scale in ("smoke", "small", "full")}
log = logging.getLogger("brainsnn")


def defaults(args) -> dict:
    return {**FALLBACK, **CONFIGS[(family(args.dataset), args.scale)]}


def build_parser():
    p = options.protocol_parser(PROTOCOL, __doc__, SCALES, neuron=True)
    g = p.add_argument_group("training")
    g.add_argument("--T", type=int, default=None, help="time steps in training")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=None, help="learning rate")
    g.add_argument("--optimizer", choices=("adam", "sgd"), default=None, help="default adam")
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--batchnorm", type=int, choices=(0, 1), default=None,
                   help="1: train with batch-norm, folded into weights and bias currents after "
                        "training (default per scale)")
    g.add_argument("--encoder", choices=("direct", "poisson"), default="direct")
    g.add_argument("--loss", choices=("softmax", "stochmax"), default="softmax")
    g.add_argument("--sigma", type=float, default=1.0, help="stochmax Gumbel noise scale")
    g.add_argument("--kinds", default=None,
                   help="layer kinds, one letter per weighted layer incl. the readout "
                        "(S spiking, A artificial), e.g. SSAA; default all spiking")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="training time budget: the learning-rate schedule adapts to the "
                        "measured speed, so the result depends on the machine (default: none)")
    g.add_argument("--init-rate", type=float, default=None,
                   help="calibrate initial weights to this spike rate per step (default: 0.1 "
                        "for CIFAR-10 small, off otherwise; 0 turns it off)")
    g.add_argument("--eval-T", default="1,2,3,4,6,8", help="comma-separated T for accuracy_vs_T")
    g.add_argument("--arch", choices=ARCHS, default="vgg",
                   help="vgg: the --conv/--fc layers (default); or a named network: resnet8 ... "
                        "resnet56 (CIFAR, 6n+2), resnet18, resnet34 (projection shortcuts, no "
                        "max-pooling), vgg11, vgg16")
    g.add_argument("--backres", type=int, default=1,
                   help="named ResNets: run each stage's shape-keeping blocks this many times "
                        "with shared weights (BackRes on the residual stages; default 1: off)")
    g.add_argument("--width", type=int, default=None,
                   help="named ResNets: channels of the first stage (default 16 for the CIFAR "
                        "depths, 64 for resnet18/34)")
    add_vgg_options(p)
    return p


def parse_args(argv=None):
    p = build_parser()
    args = options.parse(p, SCALES, argv, defaults=defaults)
    for option in ("T", "epochs", "batch_size"):
        options.check_count(p, "--" + option.replace("_", "-"), getattr(args, option))
    options.check_positive(p, "--lr", args.lr)
    options.check_positive(p, "--weight-decay", args.weight_decay, allow_zero=True)
    options.check_positive(p, "--sigma", args.sigma)
    if args.max_minutes is not None:
        options.check_positive(p, "--max-minutes", args.max_minutes)
    if args.init_rate is not None:
        options.check_positive(p, "--init-rate", args.init_rate, allow_zero=True, maximum=1.0)
    args.eval_T = options.int_list(p, "--eval-T", args.eval_T, distinct=True)
    options.check_count(p, "--backres", args.backres)
    options.check_backres_arch(p, args.arch, args.backres)
    if args.width is not None:
        options.check_count(p, "--width", args.width)
        if not args.arch.startswith("resnet"):
            p.error(f"--width applies to the named ResNets, not --arch {args.arch}")
    apply_vgg_options(p, args)
    return args


def run_name(args) -> str:
    arch = "" if args.arch == "vgg" else f"_{args.arch}"
    arch += f"_w{args.width}" if args.width else ""
    arch += f"_R{args.backres}" if args.backres > 1 else ""
    return f"{PROTOCOL}_{args.dataset}{arch}_{args.scale}_seed{args.seed}"


def config_of(args) -> dict:
    keys = ("dataset", "scale", "train_images", "test_images", "validation", "T", "epochs",
            "batch_size", "lr", "optimizer", "weight_decay", "batchnorm", "encoder", "loss",
            "sigma", "kinds", "max_minutes", "init_rate", "eval_T", "conv", "fc",
            "label_smoothing", "augment", "torch_device", "neuron", "threads", "data", "arch",
            "backres", "width")
    config = {k: getattr(args, k) for k in keys}
    if args.dataset == "cifar10":
        config["caveat"] = CIFAR_CAVEAT
    return config


def build_classifier(args, input_size=32):
    from brainsnn.engine.architectures import arch_specs
    from brainsnn.engine.network import vgg_specs
    from brainsnn.experiments.user_models import load_neuron_model
    from brainsnn.learn.agd import AGDClassifier

    neuron = {"neuron": load_neuron_model(args.neuron)} if args.neuron else {}
    specs = (vgg_specs(args.conv, fc=args.fc, kinds=args.kinds) if args.arch == "vgg" else
             arch_specs(args.arch, n_classes=10, input_size=input_size, kinds=args.kinds,
                        width=args.width, backres=args.backres if args.backres > 1 else None))
    loss_options = ({"sigma": args.sigma} if args.loss == "stochmax"
                    else {"label_smoothing": args.label_smoothing})
    return AGDClassifier(specs, T=args.T, encoder=args.encoder, loss=args.loss,
                         loss_options=loss_options, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, augment=args.augment,
                         max_minutes=args.max_minutes, init_rate=args.init_rate,
                         optimizer=args.optimizer, batchnorm=bool(args.batchnorm),
                         weight_decay=args.weight_decay, device=args.torch_device,
                         seed=args.seed, verbose=args.verbose > 0, **neuron)


def main(argv=None):
    args = parse_args(argv)
    import json

    import numpy as np

    from brainsnn.analysis.energy import format_report, write_energy
    from brainsnn.experiments.run import EpochProgress, Run, percent
    from brainsnn.experiments.training import (load_data, save_figure, setup_torch,
                                               store_network, training_figure)

    setup_torch(args)
    from brainsnn.learn import distributed as ddp

    if ddp.init_from_env(args.torch_device) > 1 and not ddp.is_main():
        # under torchrun: the other ranks train their shares; rank 0 writes the results file
        x_train, y_train, _, _ = load_data(args)
        build_classifier(args, input_size=x_train.shape[-1]).fit(x_train, y_train)
        return 0
    split = options.split_name(args)
    with Run(args, config_of(args), name=run_name(args), device=args.torch_device,
             argv=argv, resumable=False) as run:
        rec = run.rec
        log.info(f"loading {args.dataset} ...")
        x_train, y_train, x_test, y_test = load_data(args)
        clf = build_classifier(args, input_size=x_train.shape[-1])
        log.info(f"AGD {args.dataset} {args.scale}: {len(x_train)} train / {len(x_test)} {split} "
                 f"images, T={args.T}, {args.epochs} epochs, device {args.torch_device}")
        bar = EpochProgress(args.epochs, "train")

        def on_epoch(clf_, epoch):
            for k in ("train_loss", "train_acc", "seconds"):
                rec.add_metric(k, float(epoch[k]), step=epoch["epoch"])
            store_network(rec, clf_.network_)
            bar.on_epoch(clf_, epoch)
            run.checkpoint()

        with bar, run.timer("train"):
            clf.fit(x_train, y_train, callback=on_epoch)
        log.debug(clf.network_.describe())
        rec.set("network/config_json", json.dumps(clf.network_.config()))
        rec.set("network/n_parameters", clf.network_.n_parameters())
        with run.timer(split):
            acc = clf.score(x_test, y_test)
        rec.set(f"metrics/{split}_accuracy", acc, T=args.T, n_images=len(x_test),
                **({"caveat": CIFAR_CAVEAT} if args.dataset == "cifar10" else {}))
        with run.timer("accuracy_vs_T"):
            acc_T = clf.accuracy_vs_T(x_test, y_test, list(args.eval_T))
        rec.set("metrics/T", np.array(args.eval_T))
        rec.set("metrics/accuracy_vs_T", acc_T, split=split)
        report = clf.energy(x_test[:2000])
        write_energy(rec, report)
        rec.set("training/stopped_early", int(clf.stopped_early_))
        rec.set("training/images_per_second",
                float(sum(h["images"] for h in clf.history_) / max(clf.train_seconds_, 1e-9)))
        store_network(rec, clf.network_)
        log.info(format_report(report))
        log.info(f"{split} accuracy {percent(acc)} (T={args.T}), trained in "
                 f"{clf.train_seconds_:.0f} s" + (f" [{CIFAR_CAVEAT}]" if args.dataset == "cifar10" else ""))
        log.info("accuracy vs T: " + ", ".join(f"T={t}: {percent(a)}" for t, a in zip(args.eval_T, acc_T)))
        out = run.finish()
    if args.plot:
        save_figure(training_figure(out), out)
    return 0
