"""Benchmark the torch engine against the same spiking network written by hand in PyTorch.

A fixed spiking network (MNIST images, direct coding, a fully connected LIF layer of N neurons
(reset to zero), then a membrane readout of 10 classes; T time steps) is trained by
surrogate-gradient descent (triangle surrogate, Adam) twice from the same initial weights:

* **engine**: the LIF layer is :class:`brainsnn.engine.neuron.TorchNeuron` built from the
  package's Brian2 equations (generated torch step, no ``torch.compile``);
* **hand**: a plain PyTorch LIF loop (``v = lambda v + I; s = H(v - theta); v = v (1 - s)``)
  with its own surrogate autograd function.

It prints training images per second of both and their ratio (target: the engine is no more
than 1.5 times slower), checks that both give the same loss on the first batch, and measures
inference images per second as well. Runs of the two are interleaved (engine, hand, engine,
hand, ...) and the medians compared, so that load from other processes affects both alike.

Examples:
  brainsnn run bench_torch_engine --scale smoke
  brainsnn run bench_torch_engine --scale full --torch-device cuda

Writes one HDF5 file (default results/bench_torch_engine_<scale>_seed<seed>.h5) with
``metrics/train_images_per_s_engine``, ``..._hand`` (one value per repeat),
``metrics/infer_images_per_s_*``, ``results/ratio_train`` (hand / engine speed, i.e. how many
times slower the engine is), ``results/ratio_infer`` and ``timings/``.
"""
from __future__ import annotations

import logging
import math
import statistics
import time

from brainsnn.experiments import options

PROTOCOL = "bench_torch_engine"
SCALES = {
    "smoke": dict(n_hidden=200, T=8, batch_size=32, batches=3, repeats=3, n_images=256),
    "small": dict(n_hidden=500, T=16, batch_size=64, batches=8, repeats=5, n_images=2048),
    "full": dict(n_hidden=1000, T=25, batch_size=128, batches=20, repeats=7, n_images=10000),
}
log = logging.getLogger("brainsnn")


def build_parser():
    p = options.protocol_parser(PROTOCOL, __doc__, SCALES, datasets=("mnist",), images=False)
    p.add_argument("--n-hidden", type=int, default=None)
    p.add_argument("--T", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--batches", type=int, default=None, help="batches per timed repeat")
    p.add_argument("--repeats", type=int, default=None)
    return p


def parse_args(argv=None):
    p = build_parser()
    args = options.parse(p, SCALES, argv)
    for option in ("n_hidden", "T", "batch_size", "batches", "repeats"):
        options.check_count(p, "--" + option.replace("_", "-"), getattr(args, option))
    return args


def main(argv=None):
    args = parse_args(argv)
    from brainsnn.experiments.run import Run
    from brainsnn.experiments.training import setup_torch

    torch = setup_torch(args)
    cfg = {k: getattr(args, k) for k in SCALES[args.scale]}
    config = {**cfg, "scale": args.scale, "threads": args.threads, "data": args.data,
              "neuron": "lif", "tau_m_ms": 20.0, "theta": 1.0, "dt_ms": 1.0,
              "surrogate": "triangle", "alpha": 1.0, "optimizer": "adam", "lr": 1e-3,
              "torch_compile": False, "torch_device": args.torch_device}
    with Run(args, config, name=f"{PROTOCOL}_{args.scale}_seed{args.seed}",
             device=args.torch_device, argv=argv, resumable=False) as run:
        benchmark(run, args, cfg, torch)
    return 0


def benchmark(run, args, cfg, torch):
    """Time training and inference of both implementations; record the medians."""
    import brian2 as b2
    import numpy as np
    from torch import nn

    from brainsnn.engine.neuron import TorchNeuron
    from brainsnn.models import LIF

    rec = run.rec
    device = torch.device(args.torch_device)

    # -- data ---------------------------------------------------------------------------
    try:
        from brainsnn.io.datasets import load_mnist
        images, labels = load_mnist("train", data_dir=args.data, n=cfg["n_images"])
        source = "mnist"
    except Exception as exc:  # DatasetError or a missing module: timings do not need MNIST
        log.warning(f"MNIST not available ({exc}); using random images")
        rng = np.random.default_rng(args.seed)
        images = rng.random((cfg["n_images"], 28, 28), dtype=np.float32)
        labels = rng.integers(0, 10, cfg["n_images"])
        source = "random"
    rec.set("data/source", source)
    x_all = torch.as_tensor(images, dtype=torch.float32).reshape(len(images), -1).to(device)
    y_all = torch.as_tensor(labels, dtype=torch.int64).to(device)
    B, T, H = cfg["batch_size"], cfg["T"], cfg["n_hidden"]

    # -- the two implementations --------------------------------------------------------
    lam = math.exp(-1.0 / 20.0)

    class HandSpike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * torch.clamp(1.0 - x.abs(), min=0.0)

    class Net(nn.Module):
        def __init__(self, engine):
            super().__init__()
            self.fc1 = nn.Linear(784, H, bias=False)
            self.fc2 = nn.Linear(H, 10, bias=False)
            self.engine = engine
            self.lif = TorchNeuron(LIF, dt=1 * b2.ms) if engine else None

        def forward(self, x):
            current = self.fc1(x)                      # direct coding: same current each step
            acc = 0.0
            if self.engine:
                state = self.lif.initial_state(current.shape, device=current.device,
                                               dtype=current.dtype)
                for _ in range(T):
                    s, state = self.lif(state, current)
                    acc = acc + self.fc2(s)
            else:
                v = torch.zeros_like(current)
                for _ in range(T):
                    v = lam * v + current
                    s = HandSpike.apply(v - 1.0)
                    v = v * (1.0 - s.detach())
                    acc = acc + self.fc2(s)
            return acc / T

    torch.manual_seed(args.seed)
    engine = Net(True).to(device)
    hand = Net(False).to(device)
    hand.load_state_dict({k: v for k, v in engine.state_dict().items()}, strict=False)
    log.info(f"network: 784 -> {H} LIF -> 10 readout, T={T}, batch {B}, data {source}, "
             f"device {device}, {args.threads} thread(s)")

    # same loss on the first batch (the two implement the same network)
    with torch.no_grad():
        le = nn.functional.cross_entropy(engine(x_all[:B]), y_all[:B]).item()
        lh = nn.functional.cross_entropy(hand(x_all[:B]), y_all[:B]).item()
    rec.set("results/first_batch_loss_engine", le)
    rec.set("results/first_batch_loss_hand", lh)
    if not math.isclose(le, lh, rel_tol=1e-5, abs_tol=1e-6):
        log.warning(f"first-batch losses differ: engine {le}, hand {lh}")
    log.info(f"first-batch loss: engine {le:.6f}, hand {lh:.6f}")

    opts = {"engine": torch.optim.Adam(engine.parameters(), lr=1e-3),
            "hand": torch.optim.Adam(hand.parameters(), lr=1e-3)}
    nets = {"engine": engine, "hand": hand}
    n_batches = max(1, len(x_all) // B)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(name, train):
        net, opt = nets[name], opts[name]
        sync()
        t0 = time.perf_counter()
        for k in range(cfg["batches"]):
            j = k % n_batches
            xb, yb = x_all[j * B:(j + 1) * B], y_all[j * B:(j + 1) * B]
            if train:
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(net(xb), yb)
                loss.backward()
                opt.step()
            else:
                with torch.no_grad():
                    net(xb)
        sync()
        return cfg["batches"] * B / (time.perf_counter() - t0)

    for name in nets:                                   # warm-up (allocator, kernels)
        timed(name, True)
    speeds = {}
    with rec.timer("benchmark"):
        for mode in ("train", "infer"):
            for r in range(cfg["repeats"]):
                for name in ("engine", "hand"):
                    ips = timed(name, mode == "train")
                    speeds.setdefault((mode, name), []).append(ips)
                    rec.add_metric(f"{mode}_images_per_s_{name}", ips, step=r)
                log.info(f"{mode} repeat {r + 1}/{cfg['repeats']}: engine "
                         f"{speeds[(mode, 'engine')][-1]:.1f} img/s, hand "
                         f"{speeds[(mode, 'hand')][-1]:.1f} img/s")
    for mode in ("train", "infer"):
        e = statistics.median(speeds[(mode, "engine")])
        h = statistics.median(speeds[(mode, "hand")])
        ratio = h / e
        rec.set(f"results/{mode}_images_per_s_engine", e, units="images/s", stat="median")
        rec.set(f"results/{mode}_images_per_s_hand", h, units="images/s", stat="median")
        rec.set(f"results/ratio_{mode}", ratio,
                description="hand-written speed / engine speed (times slower); target <= 1.5")
        log.info(f"{mode}: engine {e:.1f} img/s, hand-written {h:.1f} img/s -> the engine "
                 f"takes {ratio:.2f} times the time of the hand-written loop "
                 f"({'within' if ratio <= 1.5 else 'OUTSIDE'} the 1.5x target)")
    rec.set("results/generated_step_source", engine.lif.source)
    run.finish()
