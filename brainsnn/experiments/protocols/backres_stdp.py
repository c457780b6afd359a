#!/usr/bin/env python
"""BackRes for STDP: one shared block run R times against a deeper stack, as defined in this project.

A first convolutional STDP layer (learned once, shared by every configuration) feeds either
a BackRes block -- one 3x3 'same' conv STDP layer whose kernels are shared by R passes, each
pass with its own neurons, the kernels learning from the patches of all passes -- for
R = 1, 2, 3, or a physically deeper block of D = 2, 3 such layers with separate kernels (the
same wiring, one layer per pass, each learned on its own pass's input).

--form additive (default) feeds every pass after the first the block's input as well,
y_r = B(y_(r-1) + x); --form reentry feeds it only the previous pass, y_r = B(y_(r-1)). In
re-entry form the spike rate falls about tenfold per STDP layer on MNIST (0.0029, 0.0003,
3e-7 spikes per neuron per step in layers 1, 2, 3 at the small scale): every configuration
deeper than R = 1 was at chance (13.4 %), shared or separate, so re-entry answers nothing
about BackRes here; the additive form keeps the later passes driven.
Each configuration's frozen stack is run on the torch engine, its last layer's spike counts
(sum-pooled) are read out by the same gradient-trained readout, and the test accuracy and
the parameter count are recorded under runs/<config>/ in one HDF5 file; the summary datasets
metrics/accuracy, metrics/n_parameters and metrics/logical_depth list all configurations in
the order of metrics/configs.

Scales:
  smoke  8 kernels, 100 patches per layer, 150 train / 100 test images, R in (1, 2),
         D = 2 (tests; < 2 min)
  small  16 kernels, 8,000 patches per layer, 1,000 train / 500 test images (default; about
         1 h on the shared 2-core CPU)
  full   32 kernels, 20,000 patches per layer, 20,000 train / 10,000 test images (GPU)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from brainsnn import paths


PROTOCOL = "backres_stdp"
SCALES = {
    "smoke": dict(kernels=8, patches=100, stdp_images=40, train_images=150, test_images=100,
                  t_on=30.0, t_off=20.0, epochs=20, device="runtime", chunk_size=150, Rs="1,2", depths="2"),
    "small": dict(kernels=16, patches=8000, stdp_images=500, train_images=1000,
                  test_images=500, t_on=50.0, t_off=50.0, epochs=40, device="cpp_standalone",
                  chunk_size=2000, Rs="1,2,3", depths="2,3"),
    "full": dict(kernels=32, patches=20000, stdp_images=1000, train_images=20000,
                 test_images=10000, t_on=100.0, t_off=50.0, epochs=40, device="cpp_standalone",
                 chunk_size=4000, Rs="1,2,3", depths="2,3"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="backres_stdp.py", description=__doc__.split("\n\n")[0],
                                epilog="Scales: " + "; ".join(f"{k}: {v}" for k, v in SCALES.items()),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="small")
    p.add_argument("--dataset", choices=["mnist", "fashion_mnist", "cifar10"], default="mnist")
    p.add_argument("--device", default=None, choices=["runtime", "cpp_standalone", "cuda_standalone"],
                   help="Brian2 device of STDP learning")
    p.add_argument("--torch-device", default=None, help="torch device (default cuda if available)")
    p.add_argument("--out", default=None, help="results file (default results/backres_stdp_<scale>_seed<seed>.h5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="datasets folder (default $BRAINSNN_DATA or ../shared/data)")
    p.add_argument("--kernels", type=int, default=None, help="kernels of every layer")
    p.add_argument("--patches", type=int, default=None, help="patches per layer")
    p.add_argument("--form", choices=["reentry", "additive"], default="additive",
                   help="BackRes form: reentry y_r = B(y_(r-1)) or additive y_r = B(y_(r-1) + x) "
                        "(default; the deeper stack gets the same wiring). With re-entry the "
                        "third STDP layer falls silent (see the module docstring)")
    p.add_argument("--Rs", default=None, help="BackRes passes to compare, e.g. 1,2,3")
    p.add_argument("--depths", default=None, help="depths of the separate-kernel stacks, e.g. 2,3")
    p.add_argument("--stdp-images", type=int, default=None)
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--t-on", type=float, default=None, help="presentation time (ms)")
    p.add_argument("--t-off", type=float, default=None, help="rest after each patch (ms)")
    p.add_argument("--f-in", type=float, default=255.0, help="input rate of intensity 1 (Hz)")
    p.add_argument("--extract-t-on", type=float, default=None,
                   help="presentation time per image in feature extraction (ms; default: "
                        "conv_stdp.py's EXTRACTION)")
    p.add_argument("--extract-f-in", type=float, default=None,
                   help="input rate of intensity 1 in feature extraction (Hz)")
    p.add_argument("--extract-inhibition", choices=["on", "off"], default=None,
                   help="lateral inhibition during feature extraction")
    p.add_argument("--no-compile", action="store_true",
                   help="run the torch engine eagerly in extraction (default: torch.compile)")
    p.add_argument("--readout", default="linear", help="readout(s), comma-separated: linear, mlp, spiking")
    p.add_argument("--loss", choices=["softmax", "stochmax"], default="softmax")
    p.add_argument("--readout-T", type=int, default=8)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--feature-pool", type=int, default=2)
    p.add_argument("--build-dir", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    for key, value in SCALES[args.scale].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.Rs = [int(v) for v in str(args.Rs).split(",") if v.strip()]
    args.depths = [int(v) for v in str(args.depths).split(",") if v.strip()] if args.depths else []
    if not args.Rs or min(args.Rs) < 1 or (args.depths and min(args.depths) < 1):
        p.error("--Rs and --depths must be positive integers")
    # what the conv_stdp pipeline reads
    args.pool_kind = "avg"
    args.kernel_sizes, args.pools = [5], [2]
    args.features = "last"
    args.backres_R = 0
    if args.out is None:
        suffix = "" if args.dataset == "mnist" else f"_{args.dataset}"
        args.out = str(Path("results") / f"{PROTOCOL}_{args.scale}{suffix}_seed{args.seed}.h5")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import brian2 as b2
    import torch

    from brainsnn.stdp.conv import BackResSTDPBlock, ConvSTDPLayer, SpikingConvStack
    from brainsnn.io.datasets import DatasetError
    from brainsnn.io.results import RunResults
    from brainsnn.learn.agd import evaluation_split, seed_everything

    from brainsnn.experiments import stdp_pipeline as cp
    split = evaluation_split(args)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.torch_device is None:
        args.torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    seed_everything(args.seed)
    try:
        x_train, y_train, x_test, y_test = cp.load_data(args)
    except DatasetError as exc:
        raise SystemExit(f"error: {exc}")
    cp.log(args, f"{args.dataset}: {len(x_train)} train, {len(x_test)} {split}; scale {args.scale}")
    t_on = args.t_on * b2.ms
    build = Path(args.build_dir) if args.build_dir else paths.cache_dir() / "standalone"
    K = args.kernels

    def layer(name, channels, k, pool, padding, seed):
        return ConvSTDPLayer(K, k, channels, padding=padding, pool=pool, n_patches=args.patches,
                             t_on=t_on, t_off=args.t_off * b2.ms, f_max=args.f_in * b2.Hz, device=args.device,
                             chunk_size=args.chunk_size, seed=seed, name=name,
                             directory=str(build / f"{PROTOCOL}_{name}_{channels}_{K}_{k}"))

    shape = x_train.shape[1:]
    first = layer("conv1", shape[0], 5, 2, 0, args.seed)
    configs = [(f"backres_R{R}", "shared", R) for R in args.Rs] + \
              [(f"separate_D{D}", "separate", D) for D in args.depths if D > 1]
    rec = RunResults(PROTOCOL, {**vars(args), "configs": [c[0] for c in configs]},
                     seed=args.seed, device=args.device)
    # feature extraction settings: those of protocols/conv_stdp.py (cp.EXTRACTION) unless given
    extraction = dict(t_on=cp.extract_t_on(args) * b2.ms, f_in=cp.extract_f_in(args) * b2.Hz,
                      lateral_inhibition=cp.extract_inhibition(args),
                      compile=not args.no_compile and args.scale != "smoke")
    stdp_x = x_train[:args.stdp_images]
    with rec.timer("stdp_conv1"):
        SpikingConvStack([first], shape, torch_device=args.torch_device, **extraction).fit(
            stdp_x, verbose=not args.quiet)
    names, accs, params, depths = [], [], [], []
    try:
        for name, kind, n in configs:
            cp.log(args, f"== {name}")
            if kind == "shared":
                block = BackResSTDPBlock(layer("backres", K, 3, 1, 1, args.seed + 977), n,
                                         form=args.form)
                stages = [first, block]
            else:       # the same wiring with separate kernels: one layer per pass
                stages = [first, BackResSTDPBlock(
                    [layer(f"deep{d + 1}", K, 3, 1, 1, args.seed + 977 + d) for d in range(n)],
                    form=args.form)]
            stack = SpikingConvStack(stages, shape, torch_device=args.torch_device, **extraction,
                                     batch_size=args.batch_size, seed=args.seed + 12345)
            # conv1 is learned once; run_pipeline re-learns only the stages after it
            orig_fit = stack.fit
            stack.fit = lambda x, verbose=False, _f=orig_fit: _f(x, verbose=verbose, start=1)
            acc = cp.run_pipeline(args, rec, stack, x_train, y_train, x_test, y_test,
                                  prefix=f"runs/{name}/", log_name=f"[{name}] ")
            n_par = stack.n_parameters
            rec.set(f"runs/{name}/metrics/logical_depth", 1 + n)
            names.append(name)
            accs.append(acc)
            params.append(n_par)
            depths.append(1 + n)
            stages[1].close()
    finally:
        first.close()
    rec.set("metrics/configs", np.array(names, dtype="S"))
    rec.set("metrics/accuracy", np.array(accs), units="1", images=len(x_test), split=split)
    rec.set("metrics/n_parameters", np.array(params, dtype=np.int64),
            description="STDP parameters (kernels + thresholds) of the conv stack")
    rec.set("metrics/logical_depth", np.array(depths, dtype=np.int64))
    out = rec.save(args.out, complete=True)
    for n_, a, p_, d in zip(names, accs, params, depths):
        cp.log(args, f"{n_:>14}: logical depth {d}, {p_} STDP parameters, {split} accuracy {a:.4f}")
    cp.log(args, f"wrote {out}")
    return rec


if __name__ == "__main__":
    main()
