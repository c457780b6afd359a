"""Diehl & Cook inference speed: Brian2 cpp_standalone chunks against batched torch.

One N (default 400) on one thread count (``--threads``; set OMP_NUM_THREADS to the same):

1. phases of a short run (train, assign, test on ``--images`` images each, chunk 1,000), once
   with re-presentation chunks at full length (as before chunks stopped after their
   images) and once as they run now (a chunk stops after its last image); seconds per phase
   and re-presentations;
2. the trained network's inference on the torch engine (float64, ``--batch`` lanes; the
   fused frozen step, and with ``--generic-step`` the generic one) on the first
   ``--torch-images`` test images after a warm-up on 32 images that compiles the step:
   images/s, and the test accuracy with the labels assigned from Brian2's counts, against
   Brian2's accuracy on the same images.

Writes results/bench_wta_inference_n<N>_t<threads>.h5 (RunResults) and prints the figures.

    OMP_NUM_THREADS=1 python tools/bench_wta_inference.py --threads 1
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def phases(net, x_train, y_train, x_test, full_length_chunks):
    """Seconds and presentations of train/assign/test; ``full_length_chunks`` runs every
    chunk to its full length (the behaviour before chunks stopped after their images)."""
    from brainsnn.brian.wta import DiehlCookNetwork

    real = DiehlCookNetwork._run_chunk

    def full_length(self, rates, learn, seed, n_images=None):
        return real(self, rates, learn, seed)

    if full_length_chunks:
        DiehlCookNetwork._run_chunk = full_length
    calls = {"n": 0, "chunks": []}
    counted = DiehlCookNetwork._run_chunk

    def counting(self, rates, learn, seed, n_images=None):
        calls["n"] += 1
        t0 = time.perf_counter()
        result = counted(self, rates, learn, seed, n_images)
        calls["chunks"].append((self.chunk_size if n_images is None else n_images,
                                time.perf_counter() - t0))
        return result

    DiehlCookNetwork._run_chunk = counting
    try:
        out = {}
        t0 = time.perf_counter()
        net.fit(x_train)
        out["train_s"] = time.perf_counter() - t0
        out["train_chunks"] = calls["n"]
        out["train_chunk_images_seconds"] = np.asarray(calls["chunks"])
        calls["chunks"] = []
        out["train_re_presentations"] = net.images_presented - len(x_train)
        for name, x in (("assign", x_train), ("test", x_test)):
            calls["n"] = 0
            t0 = time.perf_counter()
            out[f"{name}_counts"] = net.transform(x)
            out[f"{name}_s"] = time.perf_counter() - t0
            out[f"{name}_chunks"] = calls["n"]
            out[f"{name}_chunk_images_seconds"] = np.asarray(calls["chunks"])
            calls["chunks"] = []
        return out
    finally:
        DiehlCookNetwork._run_chunk = real


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--neurons", type=int, default=400)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--torch-images", type=int, default=256)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only-stopping-chunks", action="store_true",
                   help="skip the phases with full-length re-presentation chunks")
    p.add_argument("--torch-device", default="cpu", help="torch device of the torch engine")
    p.add_argument("--generic-step", action="store_true",
                   help="also time the generic torch step (both neuron groups unfused)")
    p.add_argument("--data", default=os.environ.get("BRAINSNN_DATA"))
    args = p.parse_args(argv)

    import torch

    from brainsnn import paths
    from brainsnn.brian.wta import DiehlCookNetwork
    from brainsnn.io.datasets import load_mnist
    from brainsnn.experiments.options import command_line
    from brainsnn.io.results import RunResults
    from brainsnn.stdp.labels import LabelAssignment, accuracy
    from brainsnn.stdp.wta_inference import TorchWTAInference

    torch.set_num_threads(args.threads)
    x_train, y_train = load_mnist("train", data_dir=args.data, n=args.images)
    x_test, y_test = load_mnist("test", data_dir=args.data, n=args.images)
    net = DiehlCookNetwork(args.neurons, chunk_size=1000, threads=args.threads)
    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    net.compile()
    compile_s = time.perf_counter() - t0
    command = command_line("tools/bench_wta_inference.py", argv, ("python",))
    rec = RunResults("bench_wta_inference", {**vars(args), "command": command}, seed=0,
                     device="cpp_standalone")
    rec.set("benchmark/compile_s", compile_s, units="s")
    print(f"compiled in {compile_s:.1f} s")
    runs = {}
    kinds = (("full_length_chunks", True), ("stopping_chunks", False))
    for label, full in kinds[1:] if args.only_stopping_chunks else kinds:
        runs[label] = phases(net, x_train, y_train, x_test, full)
        load.append(os.getloadavg()[0])
        for key, value in runs[label].items():
            if not key.endswith("_counts"):
                rec.set(f"benchmark/{label}/{key}", value)
        print(label, {k: (np.round(v, 2) if isinstance(v, (float, np.ndarray)) else v)
                      for k, v in runs[label].items() if not k.endswith("_counts")})
    now = runs["stopping_chunks"]
    clf = LabelAssignment().fit(now["assign_counts"], y_train)
    k = args.torch_images
    brian_rate = 2 * args.images / (now["assign_s"] + now["test_s"])
    acc_brian = accuracy(clf.predict(now["test_counts"][:k]), y_test[:k])
    figures = {"brian2_inference_images_per_second": brian_rate,
               "brian2_test_accuracy": acc_brian,
               "brian2_spikes_per_image": float(now["test_counts"][:k].sum(1).mean())}
    for kind in ("frozen", "generic") if args.generic_step else ("frozen",):
        inference = TorchWTAInference(net, batch_size=args.batch, device=args.torch_device,
                                      frozen_step=kind == "frozen")
        t0 = time.perf_counter()
        inference.transform(x_test[:32])            # compiles the fused step
        figures[f"torch_{kind}_warm_up_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        torch_counts = inference.transform(x_test[:k])
        torch_rate = k / (time.perf_counter() - t0)
        load.append(os.getloadavg()[0])
        figures.update({
            f"torch_{kind}_step_kind": inference.step_kind,
            f"torch_{kind}_inference_images_per_second": torch_rate,
            f"torch_{kind}_over_brian2": torch_rate / brian_rate,
            f"torch_{kind}_test_accuracy": accuracy(clf.predict(torch_counts), y_test[:k]),
            f"torch_{kind}_spikes_per_image": float(torch_counts.sum(1).mean())})
    for key, value in figures.items():
        rec.set(f"benchmark/{key}", value)
    rec.set("machine/load_average_1min", np.asarray(load),
            description="1-min load average at the start and after each part (shared machine)")
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()},
          "load", load)
    device = "" if args.torch_device == "cpu" else "_" + args.torch_device.replace(":", "")
    out = paths.results_dir() / f"bench_wta_inference_n{args.neurons}_t{args.threads}{device}.h5"
    rec.save(out)
    print("wrote", out)
    net.close()


if __name__ == "__main__":
    main()
