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

Scales (table below): smoke (8 kernels, 150 train / 100 test images, R in 1, 2 and D = 2;
tests, under two minutes), small (16 kernels, 1,000 / 500 images; the default, about 1 h on a
shared 2-core CPU), full (32 kernels, 20,000 / 10,000 images; GPU).

Neuron models: --neuron FILE.py:ATTR (or MODULE:ATTR) and --inhibitory-neuron replace the
excitatory and inhibitory models of every STDP layer.

Example:
  brainsnn run backres_stdp --scale smoke
"""
from __future__ import annotations

import logging
import os

from brainsnn.experiments import options, stdp_options

PROTOCOL = "backres_stdp"
SCALES = {
    "smoke": dict(kernels=8, patches=100, stdp_images=40, train_images=150, test_images=100,
                  t_on=30.0, t_off=20.0, epochs=20, brian_device="runtime", chunk_size=150,
                  Rs="1,2", depths="2", feature_pool=2, compile=False),
    "small": dict(kernels=16, patches=8000, stdp_images=500, train_images=1000,
                  test_images=500, t_on=50.0, t_off=50.0, epochs=40, brian_device="cpp_standalone",
                  chunk_size=2000, Rs="1,2,3", depths="2,3", feature_pool=2, compile=True),
    "full": dict(kernels=32, patches=20000, stdp_images=1000, train_images=20000,
                 test_images=10000, t_on=100.0, t_off=50.0, epochs=40, brian_device="cpp_standalone",
                 chunk_size=4000, Rs="1,2,3", depths="2,3", feature_pool=2, compile=True),
}
log = logging.getLogger("brainsnn")


def build_parser():
    p = options.protocol_parser(PROTOCOL, __doc__, SCALES, brian_device="cpp_standalone",
                                neuron=True)
    g = p.add_argument_group("configurations")
    g.add_argument("--kernels", type=int, default=None, help="kernels of every layer")
    g.add_argument("--patches", type=int, default=None, help="patches per layer")
    g.add_argument("--form", choices=["reentry", "additive"], default="additive",
                   help="BackRes form: reentry y_r = B(y_(r-1)) or additive y_r = B(y_(r-1) + x) "
                        "(default; the deeper stack gets the same wiring). With re-entry the "
                        "third STDP layer falls silent (see above)")
    g.add_argument("--Rs", default=None, help="BackRes passes to compare, e.g. 1,2,3")
    g.add_argument("--depths", default=None,
                   help="depths of the separate-kernel stacks, e.g. 2,3 (0: none)")
    stdp_options.add_options(p)
    return p


def parse_args(argv=None):
    p = build_parser()
    args = options.parse(p, SCALES, argv)
    stdp_options.refuse_resume(p, args)
    args.Rs = options.int_list(p, "--Rs", args.Rs, distinct=True)
    args.depths = () if str(args.depths) == "0" else options.int_list(p, "--depths", args.depths,
                                                                           distinct=True)
    options.check_count(p, "--kernels", args.kernels)
    options.check_count(p, "--patches", args.patches)
    # the one-layer-then-block stack that the pipeline reads
    args.pool_kind, args.kernel_sizes, args.pools = "avg", (5,), (2,)
    args.features, args.backres_R = "last", 0
    stdp_options.check(p, args)
    return args


def configurations(args):
    """(name, kind, passes): a shared block for each R, separate layers for each depth D > 1."""
    return [(f"backres_R{R}", "shared", R) for R in args.Rs] + \
           [(f"separate_D{D}", "separate", D) for D in args.depths if D > 1]


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import brian2 as b2
    import numpy as np

    from brainsnn.experiments import stdp_pipeline as sp
    from brainsnn.experiments.run import Run, percent
    from brainsnn.stdp.backres import BackResSTDPBlock
    from brainsnn.stdp.layer import ConvSTDPLayer
    from brainsnn.stdp.stack import SpikingConvStack

    models, (x_train, y_train, x_test, y_test) = sp.set_up(args)
    split, shape, K = sp.split_name(args), x_train.shape[1:], args.kernels

    def layer(name, channels, k, pool, padding, seed):
        return ConvSTDPLayer(K, k, channels, padding=padding, pool=pool, n_patches=args.patches,
                             t_on=args.t_on * b2.ms, t_off=args.t_off * b2.ms,
                             f_max=args.f_in * b2.Hz, device=args.brian_device,
                             chunk_size=args.chunk_size, seed=seed, name=name,
                             threads=args.threads, **models)

    extraction = dict(t_on=sp.extract_t_on(args) * b2.ms, f_in=sp.extract_f_in(args) * b2.Hz,
                      lateral_inhibition=sp.extract_inhibition(args),
                      compile=sp.extract_compile(args), torch_device=args.torch_device)
    first = layer("conv1", shape[0], 5, 2, 0, args.seed)
    first_stack = SpikingConvStack([first], shape, **extraction)
    sp.set_build_dirs(args, first_stack)
    configs = configurations(args)
    config = {k: v for k, v in vars(args).items() if k != "protocol"}
    config.update(configs=[c[0] for c in configs], conv1=first.config())
    with Run(args, config, name=stdp_options.run_name(args), device=args.brian_device,
             argv=argv) as run:
        log.info(f"{args.dataset}: {len(x_train)} train, {len(x_test)} {split}; scale {args.scale}")
        rec = run.rec
        names, accs, params, depths = [], [], [], []
        try:
            with rec.timer("stdp_conv1"):       # conv1 is learned once, shared by every stack
                sp.learn(run, first_stack, x_train[:args.stdp_images])
            for name, kind, n in configs:
                log.info(f"== {name}")
                if kind == "shared":
                    block = BackResSTDPBlock(layer("backres", K, 3, 1, 1, args.seed + 977), n,
                                             form=args.form)
                else:       # the same wiring with separate kernels: one layer per pass
                    block = BackResSTDPBlock(
                        [layer(f"deep{d + 1}", K, 3, 1, 1, args.seed + 977 + d) for d in range(n)],
                        form=args.form)
                stack = SpikingConvStack([first, block], shape, **extraction,
                                         batch_size=args.batch_size, seed=args.seed + 12345)
                sp.set_build_dirs(args, stack)
                acc = sp.run_pipeline(args, run, stack, x_train, y_train, x_test, y_test,
                                      prefix=f"runs/{name}/", log_name=f"[{name}] ", start=1)
                rec.set(f"runs/{name}/metrics/logical_depth", 1 + n)
                names.append(name)
                accs.append(acc)
                params.append(stack.n_parameters)
                depths.append(1 + n)
                block.close()
        finally:
            first.close()
        rec.set("metrics/configs", np.array(names, dtype="S"))
        rec.set("metrics/accuracy", np.array(accs), units="1", images=len(x_test), split=split)
        rec.set("metrics/n_parameters", np.array(params, dtype=np.int64),
                description="STDP parameters (kernels + thresholds) of the conv stack")
        rec.set("metrics/logical_depth", np.array(depths, dtype=np.int64))
        run.finish()
    for n_, a, p_, d in zip(names, accs, params, depths):
        log.info(f"{n_:>14}: logical depth {d}, {p_} STDP parameters, {split} accuracy {percent(a)}")
    return 0
