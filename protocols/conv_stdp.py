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
brainsnn/conv_stdp.py. Extraction speed with torch.compile, one thread of the 2-core CPU
beside another one-thread job: about 20 img/s for one 32-kernel layer (batch 256) and 13 img/s
for 64 kernels (batch 64; larger batches are slower there, their state leaves the cache).

Input preprocessing (--preprocess): none (pixels are the Poisson intensities) or whiten (ZCA
whitening of each pixel's 9x9 neighbourhood as a convolution fitted on the training images,
split into ON and OFF channels: a C-channel image becomes 2C channels in [0, 1]; see
brainsnn/preprocessing.py). The filters and scale are stored under preprocessing/. Default:
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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
#: Feature-extraction settings (the frozen stack on the torch engine, learning off, thresholds
#: frozen at the learned theta), chosen by measurement on training/validation images of
#: MNIST (``--validation``), never on the test set; see the module docstring.
EXTRACTION = dict(t_on=50.0, f_in=1000.0, inhibition="on")


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
                        "OFF channels; brainsnn.preprocessing.OnOffWhitening, fitted on the "
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
        args.out = str(REPO / "results" / f"{PROTOCOL}_{args.scale}{suffix}_seed{args.seed}.h5")
    return args


def log(args, *msg):
    if not args.quiet:
        print(time.strftime("%H:%M:%S"), *msg, flush=True)


def load_data(args):
    """(x_train, y_train, x_test, y_test); with ``--validation N`` the last N of the first
    ``--train-images`` + N training images take the test set's place."""
    from brainsnn.training import load_image_data

    dataset = {"fashion_mnist": "fashion"}.get(args.dataset, args.dataset)
    return load_image_data(dataset, args.train_images, args.test_images, data_dir=args.data,
                           validation=getattr(args, "validation", 0))


def preprocess(args, x_train, x_test):
    """Apply ``--preprocess`` (fitted on the training images only): returns
    ``(x_train, x_test, preprocessor or None)``."""
    from brainsnn.preprocessing import make_preprocessor

    pre = make_preprocessor(getattr(args, "preprocess", "none"), seed=args.seed,
                            eps=getattr(args, "whiten_eps", 1e-2))
    if pre is None:
        return x_train, x_test, None
    t0 = time.perf_counter()
    pre.fit(x_train)
    x_train, x_test = pre.transform(x_train), pre.transform(x_test)
    log(args, f"preprocessing {args.preprocess}: {x_train.shape[1:]} per image "
              f"({time.perf_counter() - t0:.1f} s)")
    return x_train, x_test, pre


def add_mirrored(x_raw, y, x, pre):
    """Training set with each image's left-right mirror appended: ``(x', y')``.

    ``x_raw`` are the images before preprocessing, ``x`` after it; the mirrors go through
    the same fitted ``pre`` (None: no preprocessing), so ``x'[n + i]`` is ``x[i]``'s scene
    seen in a mirror and ``y'[n + i] == y[i]``.
    """
    mirrored = np.ascontiguousarray(x_raw[..., ::-1])
    if pre is not None:
        mirrored = pre.transform(mirrored)
    return (np.concatenate([x, mirrored.astype(x.dtype, copy=False)]),
            np.concatenate([y, y]))


def record_preprocessing(rec, pre):
    """Store a fitted preprocessor's parameters under ``preprocessing/``."""
    if pre is None:
        return
    rec.set("preprocessing/filters", pre.filters_, units="1 / intensity",
            layout="(out_channels, in_channels, p, p)", **pre.config())
    rec.set("preprocessing/bias", pre.bias_, units="1")
    rec.set("preprocessing/scale", pre.scale_, units="1",
            description="whitened values are divided by this, then split into ON (first "
                        "half of the channels) and OFF and clipped to [0, 1]")


def build_stack(args, input_shape, torch_device, layer_specs=None, backres_R=None):
    """The conv STDP stack the arguments describe (``layer_specs``: list of dicts to override)."""
    import brian2 as b2
    from brainsnn.conv_stdp import BackResSTDPBlock, ConvSTDPLayer, SpikingConvStack

    t_on = args.t_on * b2.ms
    stages, channels = [], input_shape[0]
    specs = layer_specs or [dict(n_kernels=k, kernel_size=ks, pool=pl, n_patches=npch,
                                 w_per_input=wpi)
                            for k, ks, pl, npch, wpi in zip(args.kernels, args.kernel_sizes,
                                                            args.pools, args.patches,
                                                            args.w_per_input)]
    build = Path(args.build_dir) if args.build_dir else REPO / "build" / "standalone"
    for li, spec in enumerate(specs):
        name = spec.pop("name", f"conv{li + 1}")
        layer = ConvSTDPLayer(in_channels=channels, pool_kind=args.pool_kind, t_on=t_on,
                              t_off=args.t_off * b2.ms,
                              f_max=args.f_in * b2.Hz, device=args.device,
                              chunk_size=args.chunk_size, seed=args.seed + 101 * li, name=name,
                              directory=str(build / f"{PROTOCOL}_{name}_{channels}_{spec['n_kernels']}"
                                            f"_{spec['kernel_size']}"), **spec)
        stages.append(layer)
        channels = layer.n_kernels
    R = args.backres_R if backres_R is None else backres_R
    if R:
        k = stages[-1].n_kernels
        blk = ConvSTDPLayer(k, 3, k, padding=1, pool=1, n_patches=args.patches[-1], t_on=t_on,
                            t_off=args.t_off * b2.ms,
                            device=args.device, chunk_size=args.chunk_size,
                            seed=args.seed + 977, name="backres",
                            directory=str(build / f"{PROTOCOL}_backres_{k}"))
        stages.append(BackResSTDPBlock(blk, R, form=getattr(args, "backres_form", "reentry")))
    return SpikingConvStack(stages, input_shape, t_on=extract_t_on(args) * b2.ms,
                            f_in=extract_f_in(args) * b2.Hz, torch_device=torch_device,
                            lateral_inhibition=extract_inhibition(args),
                            compile=extract_compile(args),
                            batch_size=args.batch_size, seed=args.seed + 12345)


def extract_compile(args):
    """torch.compile in extraction: the scale's choice (not for smoke: compiling costs more
    than it saves on a few hundred images), never with --no-compile."""
    return bool(getattr(args, "compile", True)) and not getattr(args, "no_compile", False)


def extract_t_on(args):
    v = getattr(args, "extract_t_on", None)
    return float(EXTRACTION["t_on"] if v is None else v)


def extract_f_in(args):
    v = getattr(args, "extract_f_in", None)
    return float(EXTRACTION["f_in"] if v is None else v)


def extract_inhibition(args):
    v = getattr(args, "extract_inhibition", None)
    return (EXTRACTION["inhibition"] if v is None else v) == "on"


def sum_pool(features, window):
    """Sum-pool (n, K, H, W) counts over ``window`` x ``window`` cells (floor)."""
    if window <= 1:
        return features
    n, k, h, w = features.shape
    h2, w2 = h // window, w // window
    f = features[:, :, :h2 * window, :w2 * window].reshape(n, k, h2, window, w2, window)
    return f.sum(axis=(3, 5))


def features_key(stack, x):
    """Content key of the features of ``x`` under ``stack``: a hash of the stack's settings,
    every layer's kernels and thresholds, the torch device and version, and the images."""
    import hashlib
    import json

    import torch

    from brainsnn.conv_stdp import stage_layers

    h = hashlib.sha256()
    h.update(json.dumps(stack.config(), sort_keys=True, default=str).encode())
    h.update(f"{stack.torch_device.type}|{torch.__version__}|{stack.dtype}".encode())
    for stage in stack.stages:
        for layer in stage_layers(stage):
            h.update(np.ascontiguousarray(layer.kernels, dtype=np.float64).tobytes())
            h.update(np.ascontiguousarray(layer.theta, dtype=np.float64).tobytes())
    xa = np.ascontiguousarray(x, dtype=np.float32)
    h.update(repr(xa.shape).encode())
    h.update(xa.tobytes())
    return h.hexdigest()[:32]


def cached_run(stack, x, cache_dir, callback=None):
    """``stack.run(x)``, read from / written to ``cache_dir`` (None: no cache).

    Returns ``(result, seconds, cached)``: ``seconds`` is the simulation time of the run
    that produced the counts (the stored one when ``cached``). Files are written whole
    (to a temporary name, then renamed), so an interrupted run leaves no partial entry.
    """
    import json

    path = None
    if cache_dir:
        path = Path(cache_dir) / f"features_{features_key(stack, x)}.npz"
        if path.exists():
            with np.load(path) as z:
                outs = [z[f"stage_output_{i}"] for i in range(int(z["n_stages"]))]
                meta = json.loads(str(z["meta"]))
            return ({"output": outs[-1], "stage_outputs": outs, "rates": meta["rates"]},
                    float(meta["seconds"]), True)
    t0 = time.perf_counter()
    res = stack.run(x, callback=callback)
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
        arrays = {f"stage_output_{i}": o for i, o in enumerate(res["stage_outputs"])}
        np.savez(tmp, n_stages=len(res["stage_outputs"]), **arrays,
                 meta=json.dumps({"rates": res["rates"], "seconds": seconds}))
        os.replace(tmp, path)
    return res, seconds, False


def extract(args, stack, x, what):
    def cb(done, total, seconds):
        if done == total or (done // stack.batch_size) % 10 == 0:
            log(args, f"  extract {what}: {done}/{total} images ({done / max(seconds, 1e-9):.1f} img/s)")

    res, seconds, cached = cached_run(stack, x, getattr(args, "features_cache", None), cb)
    res["from_cache"] = cached
    if cached:
        log(args, f"  extract {what}: {len(x)} images read from the features cache "
                  f"(simulated in {seconds:.0f} s when stored)")
    if args.features == "all":
        feats = np.concatenate([sum_pool(o, args.feature_pool).reshape(len(x), -1)
                                for o in res["stage_outputs"]], axis=1)
    else:
        feats = sum_pool(res["output"], args.feature_pool).reshape(len(x), -1)
    return feats, res, seconds


def extract_with_validation(args, stack, x_train, x_val):
    """Extract training and validation images in one run, in the training set's order, then
    split: the counts are those a run with ``--train-images`` n_train + n_val extracts (same
    Poisson draws, same features-cache entry), so settings chosen on the validation images
    carry over to the final run on all those training images. A preprocessor fitted on the
    training images (whitening) breaks this: it sees n_train images here, n_train + n_val
    there, so the inputs differ and the final run extracts again.

    Returns ``(f_train, f_val, res_train, res_val, s_train, s_val)``; the rates and the
    simulation time are those of the joint run (the times split in proportion to images)."""
    n = len(x_train)
    feats, res, seconds = extract(args, stack, np.concatenate([x_train, x_val]), "train+validation")
    res_val = dict(res, stage_outputs=[o[n:] for o in res["stage_outputs"]], output=res["output"][n:])
    res_train = dict(res, stage_outputs=[o[:n] for o in res["stage_outputs"]], output=res["output"][:n])
    share = n / max(len(feats), 1)
    return feats[:n], feats[n:], res_train, res_val, seconds * share, seconds * (1 - share)


def feature_map_shape(args, res):
    """(C, H, W) of the readout's features as maps (what the ``conv`` readout reads), or None
    where they are the counts of several stages of different sizes (only flat then)."""
    outs = res["stage_outputs"] if args.features == "all" else [res["output"]]
    if len(outs) != 1:
        return None
    return tuple(sum_pool(outs[0][:1], args.feature_pool).shape[1:])


def learn_and_extract(args, rec, stack, x_train, x_test, split, prefix="", log_name=""):
    """Learn the STDP stack on the first ``--stdp-images`` training images, then extract the
    features of ``x_train`` and ``x_test`` (the ``split``: 'test' or 'validation'); records
    kernels, thresholds, timings and spike rates under ``prefix``. Returns
    ``(f_train, f_test, map_shape, res_test)``."""
    from brainsnn.conv_stdp import stage_layers

    torch_device = str(stack.torch_device)
    x_stdp = x_train[:args.stdp_images]
    with rec.timer(f"{prefix}stdp"):
        stack.fit(x_stdp, verbose=not args.quiet)
    for stage in stack.stages:
        for layer in stage_layers(stage):
            rec.set(f"{prefix}layers/{layer.name}/kernels", layer.kernels, units="1",
                    layout="(n_kernels, in_channels, k, k)",
                    R=int(getattr(stage, "R", 1)) if getattr(stage, "shared", False) else 1)
            rec.set(f"{prefix}layers/{layer.name}/theta", layer.theta, units="V",
                    description="adaptive threshold offset per kernel (frozen in extraction)")
            rec.set(f"{prefix}timings/stdp_{layer.name}", float(layer.timings["train"]),
                    units="s", patches=int(layer.patches_presented),
                    compile_s=float(layer.timings["compile"]))
    log(args, f"{log_name}STDP done; extracting features ({stack.steps} steps per image, "
              f"device {torch_device})")
    if split == "validation":
        f_train, f_test, res_train, res_test, s_train, s_test = extract_with_validation(
            args, stack, x_train, x_test)
    else:
        f_train, res_train, s_train = extract(args, stack, x_train, "train")
        f_test, res_test, s_test = extract(args, stack, x_test, split)
    ips = (len(x_train) + len(x_test)) / max(s_train + s_test, 1e-9)
    rec.set(f"{prefix}timings/extract", s_train + s_test, units="s")
    rec.set(f"{prefix}timings/extract_images_per_second", ips, units="1/s",
            torch_device=torch_device, steps=int(stack.steps),
            from_features_cache=bool(res_train["from_cache"] or res_test["from_cache"]),
            description="simulation time of the extraction; read from --features-cache when "
                        "from_features_cache (then the time of the run that stored them)")
    log(args, f"{log_name}features {f_train.shape[1]} per image; extraction {ips:.1f} img/s")
    for si, stage in enumerate(stack.stages):
        for p, rate in enumerate(res_test["rates"][si]):
            name = stage.name if len(res_test["rates"][si]) == 1 else stage.pass_name(p)
            rec.set(f"{prefix}layers/{name}/spike_rate", float(rate),
                    units="spikes per neuron per step", dt_ms=float(stack.dt) * 1e3,
                    steps=int(stack.steps),
                    images="train+validation" if split == "validation" else split)
    rec.set(f"{prefix}features/mean_count", float(f_test.mean()), units="spikes per feature per image")
    rec.set(f"{prefix}features/silent_fraction", float((f_test == 0).mean()), units="1")
    return f_train, f_test, feature_map_shape(args, res_test), res_test


def readout_augment(args, kind):
    """The AGDClassifier ``augment`` of readout ``kind``: --readout-augment for conv, else None."""
    value = getattr(args, "readout_augment", "none")
    return None if kind != "conv" or value == "none" else value


def pixel_features(args, x_train, x_test, log_name=""):
    """``--features pixels``: the intensities themselves (the control with no STDP stage)."""
    log(args, f"{log_name}features: the pixels, {int(np.prod(x_train.shape[1:]))} per image "
              f"(control: no STDP stage)")
    return (x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1),
            tuple(x_train.shape[1:]))


def run_pipeline(args, rec, stack, x_train, y_train, x_test, y_test, prefix="", log_name=""):
    """Learn, extract, read out; write results under ``prefix``. Returns the accuracy on the
    held-out images: the test set, or with ``--validation`` the validation images (keys
    ``metrics/validation_accuracy*`` then, and no test keys)."""
    from brainsnn.conv_stdp import FeatureScaler, make_readout, stack_energy
    from brainsnn.training import evaluation_split
    from brainsnn.energy import E_MAC

    torch_device = str(stack.torch_device)
    split = evaluation_split(args)
    if args.features == "pixels":
        f_train, f_test, map_shape = pixel_features(args, x_train, x_test, log_name)
        res_test = None
    else:
        f_train, f_test, map_shape, res_test = learn_and_extract(args, rec, stack, x_train,
                                                                 x_test, split, prefix, log_name)
    scaler = FeatureScaler().fit(f_train)
    z_train, z_test = scaler.transform(f_train), scaler.transform(f_test)
    rec.set(f"{prefix}features/scale", float(scaler.scale_), units="spikes",
            description="features (spike counts, or intensities with --features pixels) are "
                        "divided by this (99.5th percentile of the positive training values) "
                        "and clipped to 1 before the readout")

    acc, clf = None, None
    smoothing = getattr(args, "label_smoothing", 0.0)
    loss_options = {"label_smoothing": smoothing} if smoothing else None
    for kind in args.readout.split(","):
        if kind == "conv" and map_shape is None:
            raise SystemExit("error: --readout conv reads one stage's feature maps; the stages "
                             "here differ in size: give --features last")
        as_input = (lambda z: z.reshape(len(z), *map_shape)) if kind == "conv" else (lambda z: z)
        model = make_readout(kind, loss=args.loss, T=args.readout_T, epochs=args.epochs,
                             hidden=getattr(args, "hidden", 256), loss_options=loss_options,
                             channels=getattr(args, "readout_channels", 32),
                             augment=readout_augment(args, kind),
                             lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                             torch_device=torch_device, verbose=False)
        with rec.timer(f"{prefix}readout_{kind}"):
            model.fit(as_input(z_train), y_train)
        train_acc = model.score(as_input(z_train), y_train)
        test_acc = model.score(as_input(z_test), y_test)
        log(args, f"{log_name}readout {kind}/{args.loss}: train {train_acc:.4f}, "
                  f"{split} {test_acc:.4f}")
        rec.set(f"{prefix}metrics/{split}_accuracy_{kind}", test_acc, units="1", images=len(x_test),
                loss=args.loss)
        rec.set(f"{prefix}metrics/train_accuracy_{kind}", train_acc, units="1",
                images=len(x_train), loss=args.loss)
        for name, value in model.network.state_dict().items():
            rec.set(f"{prefix}readouts/{kind}/{name}", value.detach().cpu().numpy(),
                    description="trained readout parameter (state_dict of its "
                                "brainsnn.networks.Network; input: features / features/scale, "
                                "clipped to 1)")
        for h in model.history:
            rec.add_metric(f"{prefix}readout_{kind}_train_loss".replace("/", "_"), h["train_loss"],
                           step=h["epoch"])
        if acc is None:                       # the first readout named is the main one
            acc, clf, clf_input = test_acc, model, as_input
            rec.set(f"{prefix}metrics/{split}_accuracy", test_acc, units="1", images=len(x_test),
                    readout=kind, loss=args.loss)
            rec.set(f"{prefix}metrics/train_accuracy", train_acc, units="1", images=len(x_train),
                    readout=kind)
    rec.set(f"{prefix}metrics/n_parameters_stdp", 0 if res_test is None else int(stack.n_parameters))
    n_readout = sum(int(p.numel()) for p in clf.network.parameters())
    rec.set(f"{prefix}metrics/n_parameters_readout", n_readout)
    # energy per image: STDP conv layers (AC per input spike) + readout
    energy = {} if res_test is None else stack_energy(stack, x_test, res_test)
    rep = clf.energy(clf_input(z_test[:min(len(z_test), 1000)]))
    total = 0.0
    for name, e in energy.items():
        rec.set(f"{prefix}energy/{name}", float(e["energy"]), units="J/image", kind="spiking",
                macs=int(e["macs"]), op_type="AC", operations=float(e["operations"]),
                input_spikes_per_neuron=float(e["input_spikes_per_neuron"]))
        total += e["energy"]
    ann = sum(e["macs"] * E_MAC for e in energy.values())
    for name, e in rep["layers"].items():
        rec.set(f"{prefix}energy/readout_{name}", float(e["energy"]), units="J/image",
                kind=e["kind"], macs=int(e["macs"]), op_type=e["op_type"],
                operations=float(e["operations"]))
        total += e["energy"]
    ann += rep["ann_total"]
    rec.set(f"{prefix}energy/total", float(total), units="J/image", ann_total=float(ann),
            ratio_to_ann=float(total / ann) if ann else float("nan"))
    log(args, f"{log_name}energy {total * 1e9:.2f} nJ/image (equivalent ANN {ann * 1e9:.2f} nJ)")
    return acc


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from brainsnn.datasets import DatasetError
    from brainsnn.results import RunResults
    from brainsnn.training import evaluation_split, seed_everything

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


def plot_kernels(path):
    """Figure of the learned kernels of each layer (from the results file alone)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainsnn.plotting import kernel_grid
    from brainsnn.preprocessing import on_minus_off
    from brainsnn.results import RunResults

    rec = RunResults.load(path)
    names = [n for n in rec.children("layers") if rec.get(f"layers/{n}/kernels") is not None]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], names)):
        kernels, title = rec.get(f"layers/{name}/kernels"), f"{name} kernels"
        if i == 0 and rec.get("preprocessing/filters") is not None:
            kernels, title = on_minus_off(kernels), f"{name} kernels (ON - OFF)"
        kernel_grid(kernels, ax=ax, title=title)
    png = str(path)[:-3] + ".png" if str(path).endswith(".h5") else str(path) + ".png"
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {png}")
    return png


if __name__ == "__main__":
    main()
