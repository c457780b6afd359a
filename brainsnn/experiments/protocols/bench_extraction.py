"""Benchmark feature extraction of a conv STDP layer on the CPU, on 1 to N torch threads.

One frozen layer of K 5x5 kernels (avg pool 2, the Fashion-MNIST / MNIST setting) extracts
the same images as the conv_stdp protocol does (``torch.compile``, 50 ms at 1 kHz per image,
lateral inhibition on), once per thread count from 1 to --threads (default: the CPU count).
The kernels are the layer's initial random ones: the step's operations, hence its speed, do
not depend on the kernel values (spikes are dense tensors). A warm-up batch compiles the step
first (``timings/compile``). The spike counts of every thread count are compared with those
of one thread (``results/identical_counts``): float reductions split over threads could in
principle change a spike.

Writes one HDF5 file (default results/bench_extraction_<scale>_seed<seed>.h5) with
``results/images_per_s_<n>t`` per thread count and ``results/speedup_<n>t`` (over one thread).

Examples:
  brainsnn run bench_extraction --scale smoke
  brainsnn run bench_extraction --kernels 64 --batch-size 64 --images 1536
"""
from __future__ import annotations

import logging
import os
import time

from brainsnn.experiments import options, stdp_options

PROTOCOL = "bench_extraction"
SCALES = {"smoke": dict(kernels=4, images=96, batch_size=32, compile=False),
          "small": dict(kernels=32, images=3072, batch_size=256, compile=True)}
log = logging.getLogger("brainsnn")


def build_parser():
    p = options.protocol_parser(PROTOCOL, __doc__, SCALES, datasets=("fashion_mnist", "mnist"),
                                torch_device=False, images=False)
    p.add_argument("--kernels", type=int, default=None, help="kernels of the layer")
    p.add_argument("--images", type=int, default=None,
                   help="training images (the first ones) extracted per timed run")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch")
    p.set_defaults(threads=None)
    p._option_string_actions["--threads"].help = ("largest thread count timed (1, 2, ..., "
                                                  "this; default: the CPU count)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = options.parse(p, SCALES, argv,
                         defaults=lambda a: {**SCALES[a.scale], "threads": os.cpu_count() or 1})
    stdp_options.refuse_resume(p, args)
    for option in ("kernels", "batch_size"):
        options.check_count(p, "--" + option.replace("_", "-"), getattr(args, option))
    options.check_count(p, "--images", args.images, options.DATASET_SIZES[args.dataset][0],
                        f"{args.dataset} training images")
    return args


def main(argv=None):
    args = parse_args(argv)
    import brian2 as b2
    import numpy as np
    import torch

    from brainsnn.experiments.run import Run
    from brainsnn.experiments.stdp_pipeline import EXTRACTION, stop_if_asked
    from brainsnn.io.datasets import load_dataset
    from brainsnn.stdp.conv import ConvSTDPLayer, SpikingConvStack

    x, _ = load_dataset(args.dataset, "train", data_dir=args.data, n=args.images)
    x = x[:, None].astype(np.float32)
    config = {"kernels": args.kernels, "images": args.images, "batch_size": args.batch_size,
              "compile": args.compile, "scale": args.scale, "dataset": args.dataset,
              "max_threads": args.threads, "kernel_size": 5, "pool": 2,
              "t_on_ms": EXTRACTION["t_on"], "f_in_Hz": EXTRACTION["f_in"],
              "cpu_count": os.cpu_count(), "data": args.data}
    with Run(args, config, name=f"{PROTOCOL}_{args.scale}_seed{args.seed}", device="cpu",
             argv=argv) as run:
        rec = run.rec
        layer = ConvSTDPLayer(args.kernels, 5, 1, pool=2, seed=args.seed)
        stack = SpikingConvStack([layer], x.shape[1:], t_on=EXTRACTION["t_on"] * b2.ms,
                                 f_in=EXTRACTION["f_in"] * b2.Hz, batch_size=args.batch_size,
                                 seed=args.seed, compile=args.compile)
        log.info(f"{args.kernels} kernels, {len(x)} {args.dataset} images, batch "
                 f"{args.batch_size}, {stack.steps} steps per image")
        with rec.timer("compile"):
            stack.run(x[:args.batch_size])
        reference, identical = None, True
        with rec.timer("benchmark"):
            for threads in range(1, args.threads + 1):
                torch.set_num_threads(threads)
                with run.progress(len(x), f"{threads} thread(s)") as bar:
                    t0 = time.perf_counter()
                    counts = stack.run(x, callback=lambda done, total, s: (
                        bar.update(done - bar.n), stop_if_asked(run)))["output"]
                    seconds = time.perf_counter() - t0
                ips = len(x) / seconds
                reference = counts if reference is None else reference
                same = bool(np.array_equal(counts, reference))
                identical &= same
                rec.set(f"results/images_per_s_{threads}t", ips, units="images/s",
                        seconds=seconds, same_counts_as_1t=same)
                speedup = ips / rec.get("results/images_per_s_1t")
                rec.set(f"results/speedup_{threads}t", speedup, description="over one thread")
                log.info(f"{threads} thread(s): {ips:.1f} img/s ({seconds:.1f} s), "
                         f"{speedup:.2f}x; counts "
                         f"{'identical to' if same else 'DIFFERENT from'} one thread")
        rec.set("results/identical_counts", identical)
        run.finish()
    return 0
