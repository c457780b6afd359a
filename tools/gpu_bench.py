"""The torch-engine speed figures a GPU machine is lent for, in one short run.

Each part is timed after a warm-up (which compiles what ``torch.compile`` fuses) and
synchronised on the device; a part that fails is recorded with its error and the next one
runs, so that one short loan of a machine gives every figure it can:

1. ``extraction``: frozen conv STDP feature extraction, one 32-kernel 5x5 layer on 28x28
   MNIST images (the layer of ``brainsnn run bench_extraction --scale small``), images/s;
2. ``wta_n<N>``: batched inference of a Diehl & Cook network (``TorchWTAInference``,
   float64, the fused frozen step) at N = 400 and 6400, images/s and spikes per image
   (an untrained network, weights drawn as at the start of training: the cost per image
   does not depend on what the weights learned, the spike counts a little);
3. ``agd_<model>_T<T>``: one AGD training step (forward, backward, SGD) of a spiking
   ResNet-20 on 32x32 inputs (T = 4 and 8) and ResNet-18 on 224x224 inputs (T = 4),
   images/s.

Writes one results file (``--out``, default ``results/gpu_bench.h5``) with the figures
under ``benchmark/`` and the device's name, and prints them. ``--tiny`` runs every part at
a few images on any device (a check of the script, not a measurement).

    python tools/gpu_bench.py                      # on a machine with a GPU
    python tools/gpu_bench.py --device cpu --tiny  # a check of the script
"""
from __future__ import annotations

import argparse
import importlib
import time
import traceback

import numpy as np

#: (N, lanes, images per lane) of the Diehl & Cook inference part.
WTA = ((400, 8192, 2), (6400, 2048, 2))
#: (model, input size, classes, batch, T) of the AGD training-step part.
AGD = (("resnet20", 32, 10, 256, 4), ("resnet20", 32, 10, 256, 8), ("resnet18", 224, 1000, 64, 4))


def synchronize(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def extraction(device, tiny, data):
    """Images/s of frozen extraction through one 32-kernel layer."""
    import brian2 as b2

    from brainsnn.experiments.stdp_pipeline import EXTRACTION
    from brainsnn.io.datasets import load_mnist
    from brainsnn.stdp.layer import ConvSTDPLayer
    from brainsnn.stdp.stack import SpikingConvStack

    n, batch = (64, 32) if tiny else (20480, 4096)
    x, _ = load_mnist("train", data_dir=data, n=n)
    x = x[:, None].astype(np.float32)
    stack = SpikingConvStack([ConvSTDPLayer(4 if tiny else 32, 5, 1, pool=2, seed=0)],
                             x.shape[1:], t_on=EXTRACTION["t_on"] * b2.ms,
                             f_in=EXTRACTION["f_in"] * b2.Hz, batch_size=batch, seed=0,
                             torch_device=device, compile=not tiny)
    stack.run(x[:batch])
    synchronize(device)
    t0 = time.perf_counter()
    stack.run(x)
    synchronize(device)
    return {"images_per_second": n / (time.perf_counter() - t0), "images": n, "batch": batch}


def wta(device, tiny, data, n_neurons, lanes, per_lane):
    """Images/s of batched Diehl & Cook inference on the torch engine."""
    import torch

    from brainsnn.brian.wta import DiehlCookNetwork
    from brainsnn.io.datasets import load_mnist
    from brainsnn.stdp.wta_inference import TorchWTAInference

    if tiny:
        n_neurons, lanes, per_lane = 20, 8, 1
    net = DiehlCookNetwork(n_neurons, device="runtime", codegen_target="numpy")
    engine = TorchWTAInference(net, batch_size=lanes, device=device, compile=not tiny)
    x, _ = load_mnist("test", data_dir=data, n=lanes * per_lane)
    rates = net._pixels(x).reshape(lanes, per_lane, -1) * float(net.f_max)
    generator = torch.Generator(device=device).manual_seed(0)
    engine.simulate(rates[:, :1], generator=generator)
    synchronize(device)
    t0 = time.perf_counter()
    counts = engine.simulate(rates, generator=generator)
    seconds = time.perf_counter() - t0
    return {"images_per_second": lanes * per_lane / seconds, "lanes": lanes,
            "neurons": n_neurons, "spikes_per_image": float(counts.sum(-1).mean()),
            "step_kind": engine.step_kind}


def agd_step(device, tiny, model, size, n_classes, batch, T):
    """Images/s of AGD training steps (forward, backward, SGD) on random images."""
    import torch

    from brainsnn.engine.architectures import arch_specs
    from brainsnn.engine.network import Network

    if tiny:
        model, size, n_classes, batch, T = "resnet20", 32, 10, 2, 2
    net = Network(arch_specs(model, n_classes, size), (3, size, size), T=T).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 3, size, size), generator=g).to(device)
    y = torch.randint(0, n_classes, (batch,), generator=g).to(device)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    warm, timed = (1, 1) if tiny else (3, 10)
    for _ in range(warm):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(timed):
        step()
    synchronize(device)
    return {"images_per_second": timed * batch / (time.perf_counter() - t0), "batch": batch,
            "T": T, "input_size": size, "parameters": net.n_parameters()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument("--tiny", action="store_true", help="a few images per part: a check")
    p.add_argument("--parts", default="extraction,wta,agd", help="parts to run, comma-separated")
    p.add_argument("--data", default=None, help="dataset folder (default: $BRAINSNN_DATA)")
    p.add_argument("--out", default=None, help="results file (default results/gpu_bench.h5)")
    args = p.parse_args(argv)
    try:        # setuptools provides distutils to a brian2 installed with pip --target
        importlib.import_module("setuptools")
    except ImportError:
        pass
    import torch

    from brainsnn import paths
    from brainsnn.experiments.options import command_line
    from brainsnn.io.results import RunResults

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch finds no CUDA device here "
                "(use --device cpu --tiny to check the script)")
    name = (torch.cuda.get_device_name(torch.device(args.device))
            if args.device.startswith("cuda") else "cpu")
    parts = set(args.parts.split(","))
    jobs = []
    if "extraction" in parts:
        jobs.append(("extraction", lambda: extraction(args.device, args.tiny, args.data)))
    if "wta" in parts:
        jobs += [(f"wta_n{n}", lambda w=(n, lanes, k): wta(args.device, args.tiny, args.data, *w))
                 for n, lanes, k in WTA]
    if "agd" in parts:
        jobs += [(f"agd_{m}_T{T}", lambda a=(m, s, c, b, T): agd_step(args.device, args.tiny, *a))
                 for m, s, c, b, T in AGD]
    command = command_line("tools/gpu_bench.py", argv, ("python",))
    rec = RunResults("gpu_bench", {**vars(args), "command": command}, seed=0,
                     device=args.device)
    rec.set("machine/device_name", name)
    failed = 0
    for label, job in jobs:
        t0 = time.perf_counter()
        try:
            figures = job()
        except Exception as error:            # record it and go on to the next part
            failed += 1
            rec.set(f"benchmark/{label}/error", "".join(traceback.format_exception_only(error)))
            print(f"{label}: FAILED ({error.__class__.__name__}: {error})", flush=True)
            continue
        for key, value in figures.items():
            rec.set(f"benchmark/{label}/{key}", value)
        rec.set(f"benchmark/{label}/wall_s", time.perf_counter() - t0, units="s")
        print(f"{label}: {figures['images_per_second']:.1f} img/s  {figures}", flush=True)
    out = args.out or str(paths.results_dir() / "gpu_bench.h5")
    rec.save(out)
    print("wrote", out)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
