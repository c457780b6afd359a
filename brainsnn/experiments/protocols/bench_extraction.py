"""Benchmark feature extraction of a conv STDP layer on the CPU, on 1 to N torch threads.

One frozen layer of K 5x5 kernels (avg pool 2, the Fashion-MNIST / MNIST setting) extracts
the same images as the conv_stdp protocol does (``torch.compile``, 50 ms at 1 kHz per image,
lateral inhibition on), once per thread count from 1 to --threads (default: the CPU count).
The kernels are the layer's initial random ones: the step's operations, hence its speed, do
not depend on the kernel values (spikes are dense tensors). A warm-up batch compiles the step
first (``timings/compile``). The spike counts of every thread count are compared with those
of one thread (``results/identical_counts``): float reductions split over threads could in
principle change a spike.

The layer runs the specialised frozen step (the same spikes as the generic torch-engine
step). ``--compare-generic`` also times the generic step, interleaved with the frozen one
(``--repeats`` timed runs of each per thread count, medians reported) and checks that both
give the same counts (``results/identical_to_generic``). Each thread count's copy bandwidth
is measured first (a 256 MB float32 copy, best of 5): with the bytes one image moves if
every state array went through main memory at every step
(:func:`brainsnn.stdp.frozen.stream_bytes_per_image`) it gives the roofline rate
``results/roofline_images_per_s_<n>t`` and the fraction of it reached,
``results/roofline_fraction_<n>t`` (above 1: the chunked state stays in the caches). The
machine's 1-minute load average before and after every timed run is stored with it: on a
shared machine, read the rates with it.

Writes one HDF5 file (default results/bench_extraction_<scale>_seed<seed>.h5) with
``results/images_per_s_<n>t`` per thread count and ``results/speedup_<n>t`` (over one thread);
with ``--compare-generic`` also ``results/generic_images_per_s_<n>t`` and
``results/frozen_over_generic_<n>t``.

Examples:
  brainsnn run bench_extraction --scale smoke
  brainsnn run bench_extraction --kernels 64 --batch-size 64 --images 1536
  brainsnn run bench_extraction --scale small --threads 2 --images 768 --compare-generic --repeats 3
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
    p.add_argument("--compare-generic", action="store_true",
                   help="also time the generic torch-engine step (interleaved) and compare counts")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed runs per step kind and thread count (median reported)")
    p.set_defaults(threads=None)
    p._option_string_actions["--threads"].help = ("largest thread count timed (1, 2, ..., "
                                                  "this; default: the CPU count)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = options.parse(p, SCALES, argv,
                         defaults=lambda a: {**SCALES[a.scale], "threads": os.cpu_count() or 1})
    stdp_options.refuse_resume(p, args)
    for option in ("kernels", "batch_size", "repeats"):
        options.check_count(p, "--" + option.replace("_", "-"), getattr(args, option))
    options.check_count(p, "--images", args.images, options.DATASET_SIZES[args.dataset][0],
                        f"{args.dataset} training images")
    return args


def main(argv=None):
    args = parse_args(argv)
    import brian2 as b2
    import numpy as np
    import torch

    from brainsnn.analysis.roofline import copy_bandwidth, roofline_rate
    from brainsnn.experiments.run import Run
    from brainsnn.experiments.stdp_pipeline import EXTRACTION, stop_if_asked
    from brainsnn.io.datasets import load_dataset
    from brainsnn.stdp.layer import ConvSTDPLayer
    from brainsnn.stdp.stack import SpikingConvStack
    from brainsnn.stdp.frozen import stream_bytes_per_image

    x, _ = load_dataset(args.dataset, "train", data_dir=args.data, n=args.images)
    x = x[:, None].astype(np.float32)
    config = {"kernels": args.kernels, "images": args.images, "batch_size": args.batch_size,
              "compile": args.compile, "scale": args.scale, "dataset": args.dataset,
              "max_threads": args.threads, "kernel_size": 5, "pool": 2,
              "t_on_ms": EXTRACTION["t_on"], "f_in_Hz": EXTRACTION["f_in"],
              "cpu_count": os.cpu_count(), "data": args.data,
              "compare_generic": args.compare_generic, "repeats": args.repeats}
    with Run(args, config, name=f"{PROTOCOL}_{args.scale}_seed{args.seed}", device="cpu",
             argv=argv) as run:
        rec = run.rec
        layer = ConvSTDPLayer(args.kernels, 5, 1, pool=2, seed=args.seed)
        kinds = ("frozen", "generic") if args.compare_generic else ("frozen",)
        stacks = {kind: SpikingConvStack([layer], x.shape[1:], t_on=EXTRACTION["t_on"] * b2.ms,
                                         f_in=EXTRACTION["f_in"] * b2.Hz,
                                         batch_size=args.batch_size, seed=args.seed,
                                         compile=args.compile, frozen_step=kind == "frozen")
                  for kind in kinds}
        stack = stacks["frozen"]
        stream_bytes = stream_bytes_per_image(layer, x.shape[1:], stack.steps)
        rec.set("results/stream_bytes_per_image", stream_bytes, units="B",
                description="bytes per image if every array went through main memory at "
                            "every step (roofline model)")
        log.info(f"{args.kernels} kernels, {len(x)} {args.dataset} images, batch "
                 f"{args.batch_size}, {stack.steps} steps per image, "
                 f"{stream_bytes / 1e6:.1f} MB streamed per image")
        with rec.timer("compile"):
            for s in stacks.values():
                s.run(x[:args.batch_size])

        def timed(kind, label):
            load = os.getloadavg()[0]
            with run.progress(len(x), label) as bar:
                t0 = time.perf_counter()
                counts = stacks[kind].run(x, callback=lambda done, total, s: (
                    bar.update(done - bar.n), stop_if_asked(run)))["output"]
                seconds = time.perf_counter() - t0
            return counts, seconds, [load, os.getloadavg()[0]]

        reference, identical, identical_generic = None, True, True
        with rec.timer("benchmark"):
            for threads in range(1, args.threads + 1):
                torch.set_num_threads(threads)
                bandwidth = copy_bandwidth()
                roof = roofline_rate(stream_bytes, bandwidth)
                rec.set(f"results/bandwidth_{threads}t", bandwidth, units="B/s",
                        description="float32 copy, read + write bytes, best of 5")
                rec.set(f"results/roofline_images_per_s_{threads}t", roof, units="images/s")
                seconds = {kind: [] for kind in kinds}
                loads = {kind: [] for kind in kinds}
                same_t = True
                for r in range(args.repeats):
                    for kind in kinds:                   # interleaved: the same load
                        counts, sec, load = timed(kind, f"{kind}, {threads} thread(s), "
                                                        f"run {r + 1}")
                        seconds[kind].append(sec)
                        loads[kind].append(load)
                        if kind == "frozen" and reference is None:
                            reference = counts
                        same = bool(np.array_equal(counts, reference))
                        if kind == "frozen":
                            same_t &= same
                            identical &= same
                        else:
                            identical_generic &= same
                ips = {kind: len(x) / float(np.median(seconds[kind])) for kind in kinds}
                rec.set(f"results/images_per_s_{threads}t", ips["frozen"], units="images/s",
                        seconds=seconds["frozen"], load_average=loads["frozen"],
                        same_counts_as_1t=same_t)
                speedup = ips["frozen"] / rec.get("results/images_per_s_1t")
                rec.set(f"results/speedup_{threads}t", speedup, description="over one thread")
                rec.set(f"results/roofline_fraction_{threads}t", ips["frozen"] / roof,
                        description="measured / roofline images per second")
                line = (f"{threads} thread(s): {ips['frozen']:.1f} img/s (median of "
                        f"{args.repeats}), {speedup:.2f}x; {ips['frozen'] / roof:.2f} of the "
                        f"roofline ({roof:.0f} img/s at {bandwidth / 1e9:.1f} GB/s)")
                if args.compare_generic:
                    rec.set(f"results/generic_images_per_s_{threads}t", ips["generic"],
                            units="images/s", seconds=seconds["generic"],
                            load_average=loads["generic"])
                    rec.set(f"results/frozen_over_generic_{threads}t",
                            ips["frozen"] / ips["generic"])
                    line += (f"; generic step {ips['generic']:.1f} img/s "
                             f"({ips['frozen'] / ips['generic']:.2f}x)")
                log.info(line + f"; load {np.mean(loads['frozen']):.1f}; counts "
                         f"{'identical to' if same_t else 'DIFFERENT from'} one thread")
        if args.compare_generic:
            rec.set("results/identical_to_generic", identical_generic)
        rec.set("results/identical_counts", identical)
        run.finish()
    return 0
