#!/usr/bin/env python
"""Benchmark feature extraction of a conv STDP layer on the CPU, on 1 to N torch threads.

One frozen layer of K 5x5 kernels (avg pool 2, the Fashion-MNIST / MNIST setting of issue 4)
extracts the same images as ``protocols/conv_stdp.py`` does (``torch.compile``, 50 ms at 1 kHz
per image, lateral inhibition on), once per thread count. The kernels are the layer's initial
random ones: the step's operations, hence its speed, do not depend on the kernel values
(spikes are dense tensors). A warm-up batch compiles the step first (``timings/compile``).
The spike counts of every thread count are compared with those of one thread
(``results/identical_counts``): float reductions split over threads could in principle change
a spike.

Examples::

    python protocols/bench_extraction.py --scale smoke
    python protocols/bench_extraction.py --kernels 64 --batch-size 64 --images 1536

Writes one HDF5 file (default results/bench_extraction_<scale>_seed<seed>.h5) with
``results/images_per_s_<n>t`` per thread count and ``results/speedup_<n>t`` (over one thread).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

SCALES = {"smoke": dict(kernels=4, images=96, batch_size=32, compile=False),
          "small": dict(kernels=32, images=3072, batch_size=256, compile=True)}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="small")
    p.add_argument("--dataset", choices=["mnist", "fashion_mnist"], default="fashion_mnist")
    p.add_argument("--kernels", type=int, default=None, help="kernels of the layer")
    p.add_argument("--images", type=int, default=None, help="images per timed run")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="largest thread count timed (default: the CPU count)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="datasets folder (default $BRAINSNN_DATA or ../shared/data)")
    p.add_argument("--out", default=None)
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    max_threads = args.threads if args.threads is not None else (os.cpu_count() or 1)
    if max_threads < 1:
        p.error(f"--threads must be a positive number, got {max_threads}")
    import brian2 as b2
    import numpy as np
    import torch

    from brainsnn.stdp.conv import ConvSTDPLayer, SpikingConvStack
    from brainsnn.io.datasets import load_dataset
    from brainsnn.io.results import RunResults, results_path
    from brainsnn.learn.agd import seed_everything

    cfg = dict(SCALES[args.scale])
    for key in ("kernels", "images", "batch_size"):
        if getattr(args, key) is not None:
            cfg[key] = int(getattr(args, key))
    out = Path(args.out) if args.out else results_path("bench_extraction", args.scale, args.seed)
    config = {**cfg, "scale": args.scale, "dataset": args.dataset, "max_threads": max_threads,
              "kernel_size": 5, "pool": 2, "t_on_ms": 50.0, "f_in_Hz": 1000.0,
              "cpu_count": os.cpu_count()}
    rec = RunResults("bench_extraction", config=config, seed=args.seed, device="cpu")
    seed_everything(args.seed)
    x, _ = load_dataset(args.dataset, "train", data_dir=args.data, n=cfg["images"])
    x = x[:, None].astype(np.float32)
    layer = ConvSTDPLayer(cfg["kernels"], 5, 1, pool=2, seed=args.seed)
    stack = SpikingConvStack([layer], x.shape[1:], t_on=50 * b2.ms, f_in=1000 * b2.Hz,
                             batch_size=cfg["batch_size"], seed=args.seed,
                             compile=cfg["compile"])
    print(f"{cfg['kernels']} kernels, {len(x)} {args.dataset} images, batch {cfg['batch_size']}, "
          f"{stack.steps} steps per image", flush=True)
    with rec.timer("compile"):
        stack.run(x[:cfg["batch_size"]])
    reference, identical = None, True
    with rec.timer("benchmark"):
        for threads in range(1, max_threads + 1):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            counts = stack.run(x)["output"]
            seconds = time.perf_counter() - t0
            ips = len(x) / seconds
            reference = counts if reference is None else reference
            same = bool(np.array_equal(counts, reference))
            identical &= same
            rec.set(f"results/images_per_s_{threads}t", ips, units="images/s", seconds=seconds,
                    same_counts_as_1t=same)
            speedup = ips / rec.get("results/images_per_s_1t")
            rec.set(f"results/speedup_{threads}t", speedup, description="over one thread")
            print(f"{threads} thread(s): {ips:.1f} img/s ({seconds:.1f} s), {speedup:.2f}x; "
                  f"counts {'identical to' if same else 'DIFFERENT from'} one thread", flush=True)
    rec.set("results/identical_counts", identical)
    path = rec.save(out)
    print(f"wrote {path}", flush=True)
    return rec


if __name__ == "__main__":
    main()
