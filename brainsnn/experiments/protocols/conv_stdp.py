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

Scales (every value can be overridden with the options; table below): smoke (1 layer of 8
5x5 kernels, 200 train / 100 test images; tests, under a minute), small (2 layers of 16 and
32 kernels, 3,000 / 1,000 images; the default) and full (32 and 64 kernels, every image; use
--torch-device cuda: 785 img/s measured on an H200 with the earlier 200-step extraction).

Feature extraction (brainsnn.experiments.stdp_pipeline.EXTRACTION; --extract-t-on,
--extract-f-in, --extract-inhibition): the frozen stack runs on the torch engine for 50 ms
(100 steps) per image with inputs at 1 kHz per unit intensity and lateral inhibition on,
thresholds frozen at the learned theta.
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

Neuron models: --neuron FILE.py:ATTR (or MODULE:ATTR) replaces the excitatory model of every
STDP layer, --inhibitory-neuron the inhibitory one (in learning and extraction alike).
A checkpoint is saved once the kernels are learned: --resume after an interruption (Ctrl-C
during extraction, say) extracts and reads out again without learning again.

Examples:
  brainsnn run conv_stdp --scale small --dataset mnist --readout linear
  brainsnn inspect results/conv_stdp_small_seed0.h5
  brainsnn run conv_stdp --scale smoke --neuron my_models.py:MY_EXCITATORY
"""
from __future__ import annotations

import logging
import os

from brainsnn.experiments import options, stdp_options

PROTOCOL = "conv_stdp"
SCALES = {
    "smoke": dict(kernels="8", kernel_sizes="5", pools="2", patches="150", w_per_input="0.35",
                  stdp_images=50, train_images=200, test_images=100, t_on=40.0, t_off=20.0,
                  epochs=20, brian_device="runtime", chunk_size=150, feature_pool=2,
                  compile=False),
    "small": dict(kernels="16,32", kernel_sizes="5,5", pools="2,2", patches="20000,20000",
                  w_per_input="0.35", stdp_images=500, train_images=3000, test_images=1000,
                  t_on=100.0, t_off=50.0, epochs=40, brian_device="cpp_standalone",
                  chunk_size=2000, feature_pool=1, compile=True),
    "full": dict(kernels="32,64", kernel_sizes="5,5", pools="2,2", patches="40000,40000",
                 w_per_input="0.35", stdp_images=2000, train_images=None, test_images=None,
                 t_on=100.0, t_off=50.0, epochs=60, brian_device="cpp_standalone",
                 chunk_size=4000, feature_pool=1, compile=True),
}
log = logging.getLogger("brainsnn")


def build_parser():
    p = options.protocol_parser(PROTOCOL, __doc__, SCALES, brian_device="cpp_standalone",
                                neuron=True)
    g = p.add_argument_group("STDP stack")
    g.add_argument("--kernels", default=None, help="kernels per layer, e.g. 16,32")
    g.add_argument("--kernel-sizes", default=None, help="kernel side per layer, e.g. 5,5")
    g.add_argument("--pools", default=None, help="pooling window per layer (1: none), e.g. 2,2")
    g.add_argument("--pool-kind", choices=["avg", "max"], default="avg")
    g.add_argument("--patches", default=None, help="patches presented per layer, e.g. 20000,20000")
    g.add_argument("--w-per-input", default=None,
                   help="mean kernel weight per layer (w_target = value * k*k*C), e.g. "
                        "0.35,0.05; layers fed by sparse spikes need a small one so that "
                        "the normalised weight can gather on the few active inputs")
    g.add_argument("--backres-R", type=int, default=0,
                   help="append a BackRes block (3x3 'same' conv, as many kernels as the last "
                        "layer) run R times with shared kernels (0: none)")
    g.add_argument("--backres-form", choices=["reentry", "additive"], default="reentry",
                   help="form of the BackRes block: reentry y_r = B(y_(r-1)) or additive "
                        "y_r = B(y_(r-1) + x)")
    g.add_argument("--preprocess", choices=["none", "whiten"], default=None,
                   help="input preprocessing: none (pixels as intensities) or whiten (ZCA "
                        "whitening of 9x9 neighbourhoods as a convolution, split into ON and "
                        "OFF channels, fitted on the training images). Default: whiten for "
                        "cifar10 and fashion_mnist, none for mnist (see above)")
    g.add_argument("--whiten-eps", type=float, default=1e-2,
                   help="eigenvalue regulariser of the whitening (intensity squared)")
    g.add_argument("--mirror", action="store_true",
                   help="add each readout training image mirrored left-right to the readout's "
                        "training set (twice the training images to extract)")
    g.add_argument("--features", choices=["last", "all", "pixels"], default="all",
                   help="readout input: the last stage's pooled spike counts, those of every "
                        "stage concatenated (default), or the pixels themselves (a control: "
                        "no STDP stage is learned or run)")
    g.add_argument("--readout-channels", type=int, default=32,
                   help="channels of the conv readout's 3x3 ReLU layer (default 32)")
    g.add_argument("--readout-augment", choices=["none", "shift"], default="none",
                   help="augmentation of the conv readout's training maps: shift translates "
                        "them by up to 2 map pixels (default none)")
    stdp_options.add_options(p)
    return p


def parse_args(argv=None):
    p = build_parser()
    args = options.parse(p, SCALES, argv)
    args.kernels = options.int_list(p, "--kernels", args.kernels)
    n = len(args.kernels)
    for option in ("kernel_sizes", "pools", "patches", "w_per_input"):
        flag = "--" + option.replace("_", "-")
        text = getattr(args, option)
        values = (per_input(p, text) if option == "w_per_input"
                  else options.int_list(p, flag, text))
        if len(values) == 1:
            values = values * n
        if len(values) != n:
            p.error(f"{flag} needs {n} values (one per layer), got {text!r}")
        setattr(args, option, values)
    stdp_options.check(p, args)
    if args.backres_R < 0:
        p.error(f"--backres-R must be >= 0, got {args.backres_R}")
    options.check_count(p, "--readout-channels", args.readout_channels)
    options.check_positive(p, "--whiten-eps", args.whiten_eps)
    n_stages = n + (1 if args.backres_R else 0)
    if "conv" in args.readout.split(",") and args.features == "all" and n_stages > 1:
        p.error("--readout conv reads one stage's feature maps: give --features last (or "
                "pixels), or one layer")
    if args.preprocess is None:
        args.preprocess = "whiten" if args.dataset in ("cifar10", "fashion_mnist") else "none"
    return args


def per_input(p, text) -> tuple[float, ...]:
    """--w-per-input: comma-separated finite numbers > 0."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        p.error(f"--w-per-input must be comma-separated numbers, got {text!r}")
    for v in values:
        options.check_positive(p, "--w-per-input", v)
    return values


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from brainsnn.experiments import stdp_pipeline as sp
    from brainsnn.experiments.run import Run, percent

    models, (x_train, y_train, x_test, y_test) = sp.set_up(args)
    pre = sp.preprocessor(args)
    stack = sp.build_stack(args, sp.input_shape(pre, x_train), models)
    config = {k: v for k, v in vars(args).items() if k != "protocol"}
    config["stack"] = stack.config()
    with Run(args, config, name=stdp_options.run_name(args), device=args.brian_device,
             argv=argv, may_change=("features_cache", "build_dir")) as run:
        split = sp.split_name(args)
        log.info(f"{args.dataset}: {len(x_train)} train, {len(x_test)} {split} images "
                 f"{x_train.shape[1:]}; scale {args.scale}")
        x_raw = x_train
        x_train, x_test = sp.preprocess(args, pre, x_train, x_test)
        if args.mirror:
            x_train, y_train = sp.add_mirrored(x_raw, y_train, x_train, pre)
            log.info(f"--mirror: {len(x_train)} readout training images (mirrors appended)")
        del x_raw
        sp.record_preprocessing(run.rec, pre)
        run.rec.set("config/learning", "patches", description=(
            "kernels learned on patches presented over time to a WTA STDP network (Brian2), "
            "then applied at every position (torch engine, same equations)"))
        try:
            acc = sp.run_pipeline(args, run, stack, x_train, y_train, x_test, y_test,
                                  checkpoint=True)
        finally:
            stack.close()
        out = run.finish()
    log.info(f"{split} accuracy {percent(acc)}")
    if args.plot:
        sp.plot_kernels(out)
    return 0
