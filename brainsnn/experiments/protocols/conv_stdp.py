#!/usr/bin/env python
"""Deep convolutional STDP features + hybrid readout, as defined in this project.

Learns the kernels of a stack of convolutional STDP layers without labels (each layer on
patches of its input presented over time to a winner-take-all STDP network in Brian2; layer
l+1 on the spike rates of layer l), optionally followed by a BackRes block (one layer run R
times with shared kernels), extracts spike-count features of the frozen stack over the
training and test images with the torch engine (same equations, batched), trains a readout
by gradient descent on the training features (linear / MLP / spiking / conv, softmax or
stochmax) and reports the test accuracy. One HDF5 file holds the kernels and thresholds per layer,
spike rates per layer, the trained readouts' parameters (``readouts/<kind>/``), accuracy,
energy per image, timings and the extraction speed.

Scales (every value can be overridden with the flags):
  smoke   1 layer of 8 5x5 kernels, 150 patches, 200 train / 100 test images (tests; < 2 min)
  small   2 layers (16 5x5, 32 5x5), 20k/20k patches, 3,000 train / 1,000 test images
          (default)
  full    2 layers (32 5x5, 64 5x5), 40k/40k patches, all training / test images
          (use --torch-device cuda: 785 img/s measured on an H200 with the earlier 200-step
          extraction)

Feature extraction (EXTRACTION below; --extract-t-on, --extract-f-in, --extract-inhibition):
the frozen stack runs on the torch engine for 50 ms (100 steps) per image with inputs at
1 kHz per unit intensity and lateral inhibition on, thresholds frozen at the learned theta.
These were chosen on MNIST training images with a validation split (2,000 / 1,000): one
32-kernel layer + linear readout gave 96.2 % validation accuracy against 95.6 % with the
learning settings (100 ms, 255 Hz) and 90.1 % with inhibition off (50 ms, 1 kHz); see
brainsnn/stdp/conv.py. Extraction speed with torch.compile, one thread of the 2-core CPU
beside another one-thread job: about 20 img/s for one 32-kernel layer (batch 256) and 13 img/s
for 64 kernels (batch 64; larger batches are slower there, their state leaves the cache).

Input preprocessing (--preprocess): none (pixels are the Poisson intensities) or whiten (ZCA
whitening of each pixel's 9x9 neighbourhood as a convolution fitted on the training images,
split into ON and OFF channels: a C-channel image becomes 2C channels in [0, 1]; see
brainsnn/stdp/preprocessing.py). The filters and scale are stored under preprocessing/. Default:
whiten for CIFAR-10, chosen on validation images (one layer of 32 kernels, 3,000 training /
1,000 validation images: 44.2 % whitened against 25.6 % on raw pixels, linear readout) and for
Fashion-MNIST (10,000 training / 5,000 validation images: linear 87.5 / MLP 88.5 / conv 88.7 %
whitened against 83.5 / 85.8 / 86.4 % on raw pixels); none for MNIST.

The readout never sees the test set while it is trained (no early stopping on it). With
--validation N the last N of the training images read take the test set's place: the keys are
then metrics/validation_accuracy* (no test keys), for choosing settings without the test set.
Training and validation images are extracted in one run, in the training set's order, so their
counts are those of a later run with --train-images N_train + N on the same images, except
with --preprocess whiten: the whitening is fitted on each run's training images (N_train in the
validation run, N_train + N in the final one), so the inputs differ and the final run extracts
its training images again.

Readouts (--readout, --hidden, --readout-channels, --readout-augment, --loss, --label-smoothing,
--epochs, --lr, --weight-decay) are cheap next to extraction. linear, mlp and spiking read the flat features;
conv reads the feature maps (C, H, W) of one stage: a 3x3 ReLU convolution (--readout-channels),
2x2 average pooling and a linear output layer, all artificial and trained by gradient descent
(a hybrid network: the spiking STDP layers below, artificial layers above). --features pixels
is the control for any readout: the same readout on the pixels, no STDP stage learned or run
(what do the STDP layers add?). --features-cache DIR keeps the extracted spike counts, keyed by a
hash of the stack's settings, kernels, thresholds, seed, torch device and version, and the
images: a second run with the same stack and images (e.g. another readout, or the same
training images with the test set instead of the validation images) reads them instead of
simulating again. Entries are written whole, then renamed; delete DIR to free the space
(about 4 bytes per feature per image).

--mirror adds every readout training image mirrored left-right (preprocessed like the others;
the whitening is fitted on the unmirrored images) to the readout's training set, so the
training images are extracted twice. STDP still learns on the first --stdp-images unmirrored
images, and the validation or test images are never mirrored.

Example:
  python protocols/conv_stdp.py --scale small --dataset mnist --readout linear
  brainsnn inspect results/conv_stdp_small_seed0.h5
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


PROTOCOL = "conv_stdp"
SCALES = {
    "smoke": dict(w_per_input="0.35", kernels="8", kernel_sizes="5", pools="2", patches="150", stdp_images=50,
                  train_images=200, test_images=100, t_on=40.0, t_off=20.0, epochs=20,
                  device="runtime", chunk_size=150, feature_pool=2, compile=False),
    "small": dict(w_per_input="0.35", kernels="16,32", kernel_sizes="5,5", pools="2,2", patches="20000,20000",
                  stdp_images=500, train_images=3000, test_images=1000, t_on=100.0, t_off=50.0,
                  epochs=40, device="cpp_standalone", chunk_size=2000, feature_pool=1,
                  compile=True),
    "full": dict(w_per_input="0.35", kernels="32,64", kernel_sizes="5,5", pools="2,2", patches="40000,40000",
                 stdp_images=2000, train_images=None, test_images=None, t_on=100.0, t_off=50.0,
                 epochs=60, device="cpp_standalone", chunk_size=4000, feature_pool=1,
                 compile=True),
}
DATASETS = ("mnist", "fashion_mnist", "cifar10")


def _ints(text, name):
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: --{name} must be comma-separated integers, got {text!r}")
    if not vals or min(vals) < 1:
        raise SystemExit(f"error: --{name} must hold positive integers, got {text!r}")
    return vals


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="conv_stdp.py", description=__doc__.split("\n\n")[0],
                                epilog="Scales: " + "; ".join(f"{k}: {v}" for k, v in SCALES.items()),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="small",
                   help="problem size (default: small)")
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument("--device", default=None, choices=["runtime", "cpp_standalone", "cuda_standalone"],
                   help="Brian2 device of STDP learning (default: the scale's; smoke: runtime)")
    p.add_argument("--torch-device", default=None,
                   help="torch device of extraction and readout (default: cuda if available)")
    p.add_argument("--out", default=None,
                   help="results file (default results/conv_stdp_<scale>_seed<seed>.h5; "
                        "with --dataset other than mnist, _<dataset> is added)")
    p.add_argument("--backres-form", choices=["reentry", "additive"], default="reentry",
                   help="form of the BackRes block (with --backres-R): reentry "
                        "y_r = B(y_(r-1)) or additive y_r = B(y_(r-1) + x)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random number (default 0)")
    p.add_argument("--data", default=None, help="datasets folder (default $BRAINSNN_DATA or ../shared/data)")
    p.add_argument("--kernels", default=None, help="kernels per layer, e.g. 16,32")
    p.add_argument("--kernel-sizes", default=None, help="kernel side per layer, e.g. 5,5")
    p.add_argument("--pools", default=None, help="pooling window per layer (1: none), e.g. 2,2")
    p.add_argument("--pool-kind", choices=["avg", "max"], default="avg")
    p.add_argument("--patches", default=None, help="patches presented per layer, e.g. 20000,20000")
    p.add_argument("--w-per-input", default=None,
                   help="mean kernel weight per layer (w_target = value * k*k*C), e.g. "
                        "0.35,0.05; layers fed by sparse spikes need a small one so that "
                        "the normalised weight can gather on the few active inputs")
    p.add_argument("--backres-R", type=int, default=0,
                   help="append a BackRes block (3x3 'same' conv, as many kernels as the last "
                        "layer) run R times with shared kernels (0: none)")
    p.add_argument("--stdp-images", type=int, default=None,
                   help="training images whose patches (and spikes) the STDP layers learn on")
    p.add_argument("--train-images", type=int, default=None, help="readout training images (default all)")
    p.add_argument("--test-images", type=int, default=None, help="test images (default all)")
    p.add_argument("--validation", type=int, default=0,
                   help="evaluate on the last N training images instead of the test set "
                        "(for development: choices are never made on the test set)")
    p.add_argument("--mirror", action="store_true",
                   help="add each readout training image mirrored left-right to the readout's "
                        "training set (twice the training images to extract)")
    p.add_argument("--preprocess", choices=["none", "whiten"], default=None,
                   help="input preprocessing: none (pixels as intensities) or whiten (ZCA "
                        "whitening of 9x9 neighbourhoods as a convolution, split into ON and "
                        "OFF channels; brainsnn.stdp.preprocessing.OnOffWhitening, fitted on the "
                        "training images). Default: whiten for cifar10 (44 %% against 26 %% on "
                        "validation images) and fashion_mnist (MLP 88.5 %% against 85.8 %%), "
                        "none for mnist")
    p.add_argument("--whiten-eps", type=float, default=1e-2,
                   help="eigenvalue regulariser of the whitening (intensity squared)")
    p.add_argument("--t-on", type=float, default=None, help="presentation time per patch/image (ms)")
    p.add_argument("--t-off", type=float, default=None, help="rest after each patch (ms)")
    p.add_argument("--f-in", type=float, default=255.0, help="input rate of intensity 1 (Hz)")
    p.add_argument("--extract-t-on", type=float, default=None,
                   help="presentation time per image in feature extraction (ms; default: the "
                        "scale's, see EXTRACTION)")
    p.add_argument("--extract-f-in", type=float, default=None,
                   help="input rate of intensity 1 in feature extraction (Hz; default: the "
                        "scale's, see EXTRACTION)")
    p.add_argument("--extract-inhibition", choices=["on", "off"], default=None,
                   help="lateral inhibition across feature maps during feature extraction "
                        "(learning always uses it; default: the scale's, see EXTRACTION)")
    p.add_argument("--no-compile", action="store_true",
                   help="run the torch engine eagerly in extraction (default: torch.compile)")
    p.add_argument("--feature-pool", type=int, default=None,
                   help="sum-pool the last stage's spike counts over this window (features)")
    p.add_argument("--features", choices=["last", "all", "pixels"], default="all",
                   help="readout input: the last stage's pooled spike counts, or those of "
                        "every stage concatenated (default all: the second layer's counts "
                        "alone gave 61 %% training accuracy on MNIST, see the docstring), or "
                        "the pixels themselves (a control: no STDP stage is learned or run)")
    p.add_argument("--readout", default="linear",
                   help="readout(s) trained on the same features, comma-separated from linear, "
                        "mlp, spiking, conv; the first is the main one (default linear)")
    p.add_argument("--readout-channels", type=int, default=32,
                   help="channels of the conv readout's 3x3 ReLU layer (default 32)")
    p.add_argument("--readout-augment", choices=["none", "shift"], default="none",
                   help="augmentation of the conv readout's training maps: shift translates "
                        "them by up to 2 map pixels (no flip: learned kernels are not mirror "
                        "symmetric) (default none)")
    p.add_argument("--loss", choices=["softmax", "stochmax"], default="softmax")
    p.add_argument("--readout-T", type=int, default=8, help="time steps of the spiking readout")
    p.add_argument("--hidden", type=int, default=256,
                   help="hidden units of the mlp and spiking readouts (default 256)")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="label smoothing of the softmax readout loss, in [0, 1) (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="readout epochs")
    p.add_argument("--lr", type=float, default=2e-3, help="readout learning rate (Adam)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--chunk-size", type=int, default=None, help="patches per compiled Brian2 run")
    p.add_argument("--batch-size", type=int, default=256, help="images per extraction batch")
    p.add_argument("--features-cache", default=None, metavar="DIR",
                   help="keep extracted spike counts in DIR, keyed by the stack (kernels, "
                        "thresholds, extraction settings, seed) and the images: a later run "
                        "with the same stack and images reads them instead of simulating "
                        "again (e.g. to try readouts); off by default")
    p.add_argument("--build-dir", default=None, help="standalone build folder base")
    p.add_argument("--plot", action="store_true", help="draw the kernels of each layer to <out>.png")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    for key, value in SCALES[args.scale].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.kernels = _ints(args.kernels, "kernels")
    n = len(args.kernels)
    args.kernel_sizes = _ints(args.kernel_sizes, "kernel-sizes")
    args.pools = _ints(args.pools, "pools")
    args.patches = _ints(args.patches, "patches")
    args.w_per_input = [float(v) for v in str(args.w_per_input).split(",")]
    for name in ("kernel_sizes", "pools", "patches", "w_per_input"):
        vals = getattr(args, name)
        if len(vals) == 1 and n > 1:
            setattr(args, name, vals * n)
        elif len(vals) != n:
            p.error(f"--{name.replace('_', '-')} needs {n} values (one per layer), got {vals}")
    for kind in args.readout.split(","):
        if kind not in ("linear", "mlp", "spiking", "conv"):
            p.error(f"--readout: unknown readout {kind!r}; expected linear, mlp, spiking or conv")
    n_stages = n + (1 if args.backres_R else 0)
    if "conv" in args.readout.split(",") and args.features == "all" and n_stages > 1:
        p.error("--readout conv reads one stage's feature maps: give --features last (or "
                "pixels), or one layer")
    if args.readout_channels < 1:
        p.error(f"--readout-channels must be a positive number, got {args.readout_channels}")
    if args.preprocess is None:
        args.preprocess = "whiten" if args.dataset in ("cifar10", "fashion_mnist") else "none"
    if args.backres_R < 0:
        p.error("--backres-R must be >= 0")
    if args.hidden < 1:
        p.error(f"--hidden must be a positive number of units, got {args.hidden}")
    if args.out is None:
        suffix = "" if args.dataset == "mnist" else f"_{args.dataset}"
        args.out = str(Path("results") / f"{PROTOCOL}_{args.scale}{suffix}_seed{args.seed}.h5")
    return args


def main(argv=None):
    from brainsnn.experiments.stdp_pipeline import (add_mirrored, build_stack, load_data, log,
                                                   plot_kernels, preprocess, record_preprocessing,
                                                   run_pipeline)

    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from brainsnn.io.datasets import DatasetError
    from brainsnn.io.results import RunResults
    from brainsnn.learn.agd import evaluation_split, seed_everything

    split = evaluation_split(args)            # checks --label-smoothing and --validation
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.torch_device is None:
        args.torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    seed_everything(args.seed)
    try:
        x_train, y_train, x_test, y_test = load_data(args)
    except DatasetError as exc:
        raise SystemExit(f"error: {exc}")
    log(args, f"{args.dataset}: {len(x_train)} train, {len(x_test)} {split} images "
              f"{x_train.shape[1:]}; scale {args.scale}")
    x_raw = x_train
    x_train, x_test, pre = preprocess(args, x_train, x_test)
    if getattr(args, "mirror", False):
        x_train, y_train = add_mirrored(x_raw, y_train, x_train, pre)
        log(args, f"--mirror: {len(x_train)} readout training images (mirrors appended)")
    del x_raw
    config = {k: v for k, v in vars(args).items()}
    stack = build_stack(args, x_train.shape[1:], args.torch_device)
    config["stack"] = stack.config()
    rec = RunResults(PROTOCOL, config, seed=args.seed, device=args.device)
    record_preprocessing(rec, pre)
    rec.set("config/learning", "patches", description=(
        "kernels learned on patches presented over time to a WTA STDP network (Brian2), "
        "then applied at every position (torch engine, same equations)"))
    try:
        acc = run_pipeline(args, rec, stack, x_train, y_train, x_test, y_test)
    finally:
        stack.close()
    out = rec.save(args.out, complete=True)
    log(args, f"{split} accuracy {acc:.4f}; wrote {out}")
    if args.plot:
        plot_kernels(out)
    return rec


if __name__ == "__main__":
    main()
