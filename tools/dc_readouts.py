"""Readouts of a trained Diehl & Cook network, compared on the same spike counts.

Rebuilds the network of a finished ``brainsnn run diehl_cook`` results file (its command,
final weights and thresholds), simulates it with learning off on

- the assignment images (the first ``--assign-images`` MNIST training images, as the protocol;
  give several numbers to compare how many images label the neurons),
- the hold-out images (the next ``--holdout-images`` training images after the largest
  assignment set), which choose a readout and an assignment set, and
- the MNIST test images,

and scores every readout of :data:`brainsnn.stdp.labels.VOTES` with every assignment set on
them: labels from the assignment images, the readout and assignment set picked on the hold-out
images, its test accuracy reported with the others'. The spike counts are kept in
``--counts`` (an ``.npz``), so a second call only re-scores. Writes one results file
(``--out``).

  python tools/dc_readouts.py results/diehl_cook_full_n6400_seed0.h5 \\
      --assign-images 10000 20000 --counts /tmp/dc6400_counts.npz \\
      --out results/dc_readouts_n6400.h5
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("brainsnn")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("results", help="a complete diehl_cook results file")
    p.add_argument("--assign-images", type=int, nargs="+", default=[10000], metavar="N",
                   help="the first N training images label the neurons; several N are compared "
                        "on the hold-out images (default 10000)")
    p.add_argument("--holdout-images", type=int, default=5000)
    p.add_argument("--test-images", type=int, default=10000)
    p.add_argument("--counts", default=None, help="spike-count cache (.npz), written once")
    p.add_argument("--build-dir", default=None, help="standalone project folder")
    p.add_argument("--data", default=None, help="dataset folder (default BRAINSNN_DATA)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1, help="seed of the inference input spikes")
    p.add_argument("--out", required=True, help="results file to write")
    return p


def spike_counts(net, x, name):
    start = time.perf_counter()

    def progress(info):
        rate = info["done"] / max(time.perf_counter() - start, 1e-9)
        log.info(f"{name} {info['done']}/{info['total']}, {rate:.1f} img/s")
    return net.transform(x, callback=progress).astype(np.int16)


def main(argv=None):
    from brainsnn.experiments.options import command_line
    from brainsnn.experiments.protocols.diehl_cook import network_from_results
    from brainsnn.io.datasets import load_mnist
    from brainsnn.io.results import RunResults
    from brainsnn.stdp.labels import VOTES, LabelAssignment

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    sizes, n_h = sorted(set(args.assign_images)), args.holdout_images
    if sizes[0] < 1 or n_h < 1:
        raise SystemExit("--assign-images and --holdout-images must be positive")
    n_a = sizes[-1]
    x_train, y_train = load_mnist("train", data_dir=args.data, n=n_a + n_h)
    x_test, y_test = load_mnist("test", data_dir=args.data, n=args.test_images)
    cache = Path(args.counts) if args.counts else None
    net, source = network_from_results(args.results, args.build_dir, args.threads, args.seed)
    run_id = f"{source.config['command']} (saved {source.saved_time})"
    if cache is not None and cache.exists():
        saved = np.load(cache)
        c_train, c_test = saved["train"], saved["test"]
        if str(saved["run"]) != run_id or int(saved["seed"]) != args.seed:
            raise SystemExit(f"{cache}: counts of another run or seed ({saved['run']}, seed "
                             f"{int(saved['seed'])}); remove it or change --counts")
        if c_train.shape != (n_a + n_h, net.n_neurons) or len(c_test) != len(x_test):
            raise SystemExit(f"{cache}: counts of other image numbers; remove it or change --counts")
        log.info(f"spike counts read from {cache}")
        seconds = None
    else:
        start = time.perf_counter()
        c_train = spike_counts(net, x_train, "training images")
        c_test = spike_counts(net, x_test, "test images")
        seconds = time.perf_counter() - start
        if cache is not None:
            np.savez_compressed(cache, train=c_train, test=c_test, run=run_id, seed=args.seed)

    scores = {}                                          # (images, vote): (hold-out, test)
    for n in sizes:
        for vote in VOTES:
            clf = LabelAssignment(vote=vote).fit(c_train[:n], y_train[:n])
            scores[n, vote] = (clf.score(c_train[n_a:], y_train[n_a:]),
                               clf.score(c_test, y_test))
            log.info(f"{vote:>10}, labels from {n} images: hold-out "
                     f"{100 * scores[n, vote][0]:.2f} %, test {100 * scores[n, vote][1]:.2f} %")
    chosen = max(scores, key=lambda key: scores[key][0])  # ties: the fewest images, listed first
    log.info(f"chosen on the hold-out images: {chosen[1]} with labels from {chosen[0]} images, "
             f"test accuracy {100 * scores[chosen][1]:.2f} %")

    config = {"source": str(args.results), "source_command": source.config["command"],
              "dataset": "mnist", "scale": source.config["scale"], "neurons": net.n_neurons,
              "assign_images": sizes, "holdout_images": n_h, "test_images": len(x_test),
              "seed": args.seed, "threads": args.threads,
              "command": command_line("tools/dc_readouts.py", argv, ("python",))}
    rec = RunResults("dc_readouts", config, seed=args.seed, device="cpp_standalone")
    rec.set("readouts/assign_images", np.array(sizes), units="1",
            description="numbers of training images (the first ones) that labelled the neurons")
    for vote in VOTES:
        rec.set(f"readouts/{vote}/holdout_accuracy", np.array([scores[n, vote][0] for n in sizes]),
                units="1", description=f"MNIST training images {n_a}..{n_a + n_h - 1}, one "
                                       "value per readouts/assign_images")
        rec.set(f"readouts/{vote}/test_accuracy", np.array([scores[n, vote][1] for n in sizes]),
                units="1", description="MNIST test images, one value per readouts/assign_images")
    rec.set("readouts/chosen", chosen[1], description="the readout with the best hold-out accuracy")
    rec.set("readouts/chosen_assign_images", chosen[0], units="1",
            description="the assignment images of the best hold-out accuracy")
    rec.set("metrics/test_accuracy", scores[chosen][1], units="1",
            description="test accuracy of the readout chosen on the hold-out images")
    rec.set("metrics/spikes_per_test_image", c_test.sum(axis=1).mean())
    if seconds is not None:
        rec.set("timings/inference", seconds, units="s",
                description="simulating the assignment, hold-out and test images")
        rec.set("timings/inference_images_per_second", (len(c_train) + len(c_test)) / seconds,
                units="1/s")
    rec.save(args.out)
    log.info(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
