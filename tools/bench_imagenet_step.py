"""What a full ImageNet run would cost: one AGD training step per model, and the loader.

1. For ResNet-18, ResNet-34, VGG-11 and VGG-16 at 224 px with 1,000 classes (batch 2) and
   ResNet-20 at 32 px with 10 classes (batch 16): spiking networks (LIF, triangle surrogate,
   direct coding, T = 4), trained by ``AGDClassifier.fit`` with SGD (Nesterov momentum) on a
   stream of ``--steps + 1`` batches of random images; the stream notes the time at every
   batch it hands out, so each step (forward, backward, SGD step, as ``fit`` runs it) is timed
   between two batches; the first step is a warm-up. Parameters and multiply-accumulates
   (MACs) per image and time step are counted from the network's layers.
2. The image-folder loader (training transform at 224 px, batch 32) with 0 and 1 worker, on
   ``--images`` JPEG files of 500 x 375 px written to a temporary folder.

Prints a table with the projected cost of one epoch at the measured speed (ImageNet-1k,
1,281,167 images, for the 224 px models; CIFAR-10, 50,000, for ResNet-20), and writes results/bench_imagenet_step.h5 (RunResults): ``models/<name>/``
(``parameters``, ``macs_per_image_step``, ``train_gflop_per_image``, ``step_seconds``,
``images_per_second``, ``projected_epoch_hours``), ``loader/workers<w>/images_per_second``,
``machine/load_average_1min``.

    OMP_NUM_THREADS=1 python tools/bench_imagenet_step.py
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

#: training images of one epoch: ImageNet-1k (ILSVRC 2012) and CIFAR-10
EPOCH_IMAGES = {"imagenet": 1_281_167, "cifar10": 50_000}
#: (name, image side in px, classes, batch, data set of the projected epoch)
MODELS = (("resnet18", 224, 1000, 2, "imagenet"), ("resnet34", 224, 1000, 2, "imagenet"),
          ("vgg11", 224, 1000, 2, "imagenet"), ("vgg16", 224, 1000, 2, "imagenet"),
          ("resnet20", 32, 10, 16, "cifar10"))


class TimedBatches:
    """``n`` copies of one random batch; ``times`` holds the clock at each batch handed out
    and at the end of the pass (so consecutive differences are the consumer's steps)."""

    def __init__(self, n, batch, shape, n_classes, seed=0):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand((batch, *shape), generator=g)
        self.y = torch.randint(0, n_classes, (batch,), generator=g)
        self.n, self.times = n, []

    def __len__(self):
        return self.n

    def __iter__(self):
        self.times = []
        for _ in range(self.n):
            self.times.append(time.perf_counter())
            yield self.x, self.y
        self.times.append(time.perf_counter())


def time_training_step(name, size, n_classes, batch, steps, T):
    """Parameters, MACs per image and time step, and the seconds of each timed step."""
    from brainsnn.engine.architectures import arch_specs
    from brainsnn.engine.network import Network
    from brainsnn.learn.agd import AGDClassifier

    net = Network(arch_specs(name, n_classes, size), (3, size, size), T=T)
    parameters = net.n_parameters()
    macs = sum(layer.macs for layer in net.layers)
    stream = TimedBatches(steps + 1, batch, (3, size, size), n_classes)
    AGDClassifier(network=net, epochs=1, optimizer="sgd", lr=0.01, seed=0).fit(stream)
    return parameters, macs, np.diff(stream.times)[1:]


def write_jpegs(folder, n, seed=0):
    """``n`` JPEG files of 500 x 375 px (smooth colour fields plus grain, like photographs
    in size) in two class folders; their mean size in bytes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = []
    for k in range(n):
        path = Path(folder, "train", f"n0000000{k % 2}", f"img_{k}.JPEG")
        path.parent.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((500, 375), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, field.shape)
        Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
        sizes.append(path.stat().st_size)
    return float(np.mean(sizes))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--images", type=int, default=256, help="JPEG files for the loader")
    p.add_argument("--models", default=",".join(m[0] for m in MODELS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.images < 64 or args.steps < 1:
        p.error("--images must be >= 64 (two batches of 32: one warm-up, one timed) and "
                "--steps >= 1")
    import torch

    from brainsnn import paths
    from brainsnn.io.imagefolder import image_folder_loader, loader_throughput
    from brainsnn.experiments.options import command_line
    from brainsnn.io.results import RunResults

    torch.set_num_threads(1)
    command = command_line("tools/bench_imagenet_step.py", argv, ("python",))
    rec = RunResults("bench_imagenet_step", {**vars(args), "threads": 1, "command": command},
                     seed=0, device="cpu")
    load = [os.getloadavg()[0]]
    rows = []
    for name, size, n_classes, batch, data in MODELS:
        if name not in args.models.split(","):
            continue
        parameters, macs, seconds = time_training_step(name, size, n_classes, batch,
                                                       args.steps, args.T)
        rate = batch / float(np.median(seconds))
        gflop = 3 * args.T * 2 * macs / 1e9      # forward + backward (x 2), T steps
        hours = EPOCH_IMAGES[data] / rate / 3600
        for key, value, attrs in (
                ("parameters", parameters, {}),
                ("macs_per_image_step", macs, {"units": "MAC"}),
                ("train_gflop_per_image", gflop, {"units": "GFLOP", "description":
                                                  "3 x T x 2 x MACs (forward, backward)"}),
                ("step_seconds", seconds, {"units": "s"}),
                ("images_per_second", rate, {"units": "images/s", "stat": "batch / median"}),
                ("projected_epoch_hours", hours, {"units": "h", "description":
                                                  f"projected: {data} images / measured rate"})):
            rec.set(f"models/{name}/{key}", value, **attrs)
        rec.set(f"models/{name}/setting", f"{size} px, {n_classes} classes, batch {batch}, T {args.T}")
        load.append(os.getloadavg()[0])
        rows.append((name, size, batch, parameters, macs, seconds, rate, hours, data))
        print(f"{name}: {', '.join(f'{s:.2f}' for s in seconds)} s a step", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        jpeg_bytes = write_jpegs(folder, args.images)
        rec.set("loader/jpeg_mean_bytes", jpeg_bytes, units="bytes")
        loader_rates = {}
        for workers in (0, 1):
            loader = image_folder_loader(folder, "train", 224, 32, workers=workers)
            loader_rates[workers] = loader_throughput(loader)["images_per_second"]
            rec.set(f"loader/workers{workers}/images_per_second", loader_rates[workers],
                    units="images/s")
            del loader
    load.append(os.getloadavg()[0])
    rec.set("machine/load_average_1min", np.asarray(load),
            description="1-min load average at the start and after each part (shared machine)")
    print(f"\n{'model':<9} {'px':>4} {'batch':>5} {'params':>9} {'GMAC/img/step':>14} "
          f"{'s/step':>7} {'img/s':>7}  projected epoch")
    for name, size, batch, parameters, macs, seconds, rate, hours, data in rows:
        print(f"{name:<9} {size:>4} {batch:>5} {parameters / 1e6:>8.1f}M {macs / 1e9:>14.3f} "
              f"{np.median(seconds):>7.2f} {rate:>7.3f}  {hours:.1f} h ({data})")
    print(f"loader (224 px, batch 32, JPEGs of {jpeg_bytes / 1e3:.0f} kB): "
          + ", ".join(f"{w} worker(s) {r:.0f} img/s" for w, r in loader_rates.items())
          + f"; load average {', '.join(f'{v:.2f}' for v in load)}")
    out = Path(args.out) if args.out else paths.results_dir() / "bench_imagenet_step.h5"
    rec.save(out)
    print("wrote", out)


if __name__ == "__main__":
    main()
