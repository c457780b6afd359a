#!/usr/bin/env python
"""Diehl & Cook (2015)-style unsupervised STDP network on MNIST, as defined in this project.

Trains the winner-take-all STDP layer (brainsnn.brian.wta.DiehlCookNetwork) without labels on
MNIST training images, labels its neurons from its responses to training images (learning
off), and measures accuracy and the confusion matrix on the MNIST test set. Everything goes
into one HDF5 file (brainsnn.io.results); after every chunk of images the training state is
saved there as a checkpoint, and ``--resume`` continues an interrupted run exactly.

Scales (all overridable with the flags below):
  smoke  N=20, 300 training images, labels from 200, 200 test images (tests; < 2 min)
  small  N=100, 15,000 training images, labels from 5,000, full test set (default; ~5 min)
  full   N=100 (--neurons 400 ...), one pass over the 60,000 training images, labels from
         the first 10,000 training images, full test set

Learning rule: by default the triplet rule of Diehl & Cook's published code (at a post spike
dw = nu_post * x_pre * x_post2 before the spike, at a pre spike dw = -nu_pre * x_post1) with
nu_post 0.08, and plasticity (the STDP rates and the threshold growth) falling linearly over
the pass to 0.125 of that, i.e. to Diehl & Cook's nu_post 0.01 at the last image (NU_POST,
ETA_FINAL; chosen on held-out training images, ``--validation``); ``--rule diehl_cook`` selects PAPER.md's
power-law rule (x_tar 0.4, mu 0.2), which memorises single digits and is 3x slower (pow()).

Example:
  python protocols/diehl_cook.py --scale full --neurons 400 --out results/dc400.h5
  brainsnn inspect results/dc400.h5
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


SCALES = {
    "smoke": dict(neurons=20, train_images=300, assign_images=200, test_images=200,
                  chunk_size=100, eval_every=100),
    "small": dict(neurons=100, train_images=15000, assign_images=5000, test_images=10000,
                  chunk_size=1000, eval_every=5000),
    "full": dict(neurons=100, train_images=60000, assign_images=10000, test_images=10000,
                 chunk_size=1000, eval_every=10000),
}
PROTOCOL = "diehl_cook"
from brainsnn.brian.defaults import ETA_FINAL, NU_POST


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="diehl_cook.py", description=__doc__.split("\n\n")[0],
        epilog="Scales: " + "; ".join(f"{k}: {v}" for k, v in SCALES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="small",
                   help="problem size (default: small, the `make run` job)")
    p.add_argument("--device", default="cpp_standalone",
                   choices=["runtime", "cpp_standalone", "cuda_standalone"],
                   help="Brian2 device (default: cpp_standalone)")
    p.add_argument("--out", default=None,
                   help="results file (default: results/diehl_cook_<scale>_seed<seed>.h5, "
                        "or ..._n<N>_seed<seed>.h5 when --neurons differs from the scale's)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random number (default 0)")
    p.add_argument("--data", default=None,
                   help="data directory holding mnist/ (default: $BRAINSNN_DATA or ../shared/data)")
    p.add_argument("--neurons", type=int, default=None, help="N excitatory (and inhibitory) neurons")
    p.add_argument("--train-images", type=int, default=None,
                   help="training images (one pass, in file order)")
    p.add_argument("--assign-images", type=int, default=None,
                   help="training images (the first ones) whose responses label the neurons")
    p.add_argument("--test-images", type=int, default=None, help="test images evaluated")
    p.add_argument("--validation", type=int, default=0,
                   help="evaluate on the last N MNIST training images instead of the test set "
                        "(never trained on; for choosing parameters without the test set)")
    p.add_argument("--chunk-size", type=int, default=None, help="images per long Brian2 run")
    p.add_argument("--eval-every", type=int, default=None,
                   help="training images per block of the running training accuracy")
    p.add_argument("--rule", default="triplet", choices=["diehl_cook", "triplet", "pair"],
                   help="STDP rule (brainsnn.brian.plasticity; default triplet, the rule of Diehl & "
                        "Cook's published code, which learns smooth prototypes; see NU_POST)")
    p.add_argument("--nu-pre", type=float, default=0.0001, help="learning rate at a pre spike")
    p.add_argument("--nu-post", type=float, default=None,
                   help="learning rate at a post spike (default: the rule's entry in NU_POST)")
    p.add_argument("--eta-final", type=float, default=None,
                   help="plasticity (STDP rates and threshold growth) at the end of the pass, "
                        "as a fraction of its value at the start; it falls linearly over the "
                        "pass (1: constant; default: the rule's entry in ETA_FINAL)")
    p.add_argument("--mu", type=float, default=None, help="weight dependence (diehl_cook rule)")
    p.add_argument("--x-tar", type=float, default=None, help="pre trace target (diehl_cook rule)")
    p.add_argument("--min-spikes", type=int, default=5,
                   help="re-present images with fewer excitatory spikes at a higher rate (0: off)")
    p.add_argument("--max-silent-chunks", type=int, default=3,
                   help="stop training (exit status 3, checkpoint kept) after this many training "
                        "chunks in a row without a single excitatory spike, re-presentations "
                        "at raised rates included: the network is dead (0: never stop; "
                        "default 3). Every such chunk prints a warning.")
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads (cpp_standalone)")
    p.add_argument("--build-dir", default=None,
                   help="standalone project folder (default build/standalone/<config hash>; "
                        "a second run of the same network reuses its compiled code)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run whose checkpoint is --out")
    p.add_argument("--plot", action="store_true",
                   help="also draw receptive fields and accuracy curve to <out>.png")
    p.add_argument("--quiet", action="store_true", help="print less")
    args = p.parse_args(argv)
    scale = SCALES[args.scale]
    for key, value in scale.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("neurons", "train_images", "assign_images", "test_images", "chunk_size",
                "eval_every"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.validation < 0 or args.validation >= 60000:
        p.error(f"--validation must be in 0..59999, got {args.validation}")
    if args.validation:
        args.test_images = min(args.test_images, args.validation)
        if max(args.train_images, args.assign_images) > 60000 - args.validation:
            p.error(f"--validation {args.validation} holds out the last {args.validation} "
                    f"training images: --train-images and --assign-images must be <= "
                    f"{60000 - args.validation}")
    if args.eta_final is None:
        args.eta_final = ETA_FINAL[args.rule]
    if not 0 < args.eta_final <= 1:
        p.error(f"--eta-final must be in (0, 1], got {args.eta_final}")
    if args.max_silent_chunks < 0:
        p.error(f"--max-silent-chunks must be >= 0, got {args.max_silent_chunks}")
    if args.out is None:
        name = f"{PROTOCOL}_{args.scale}"
        if args.neurons != scale["neurons"]:
            name += f"_n{args.neurons}"
        if args.validation:
            name += f"_val{args.validation}"
        args.out = str(Path("results") / f"{name}_seed{args.seed}.h5")
    return args


class SilentNetworkError(RuntimeError):
    """Training stopped: --max-silent-chunks chunks in a row without any spike."""


def log(args, *msg):
    if not args.quiet:
        print(time.strftime("%H:%M:%S"), *msg, flush=True)


def build_network(args):
    import brian2 as b2
    from brainsnn import paths
    from brainsnn.brian.plasticity import make_rule
    from brainsnn.brian.wta import DiehlCookNetwork, config_hash

    nu_post = NU_POST[args.rule] if args.nu_post is None else args.nu_post
    rule_params = {"nu_pre": args.nu_pre, "nu_post": nu_post, "traces": "neuron"}
    if args.rule == "diehl_cook":
        if args.mu is not None:
            rule_params["mu"] = args.mu
        if args.x_tar is not None:
            rule_params["x_tar"] = args.x_tar
    elif args.mu is not None or args.x_tar is not None:
        raise SystemExit(f"error: --mu and --x-tar apply to the diehl_cook rule, not {args.rule!r}")
    net = DiehlCookNetwork(args.neurons, rule=make_rule(args.rule, **rule_params),
                           device=args.device, chunk_size=args.chunk_size, seed=args.seed,
                           min_spikes=args.min_spikes, threads=args.threads,
                           eta_final=args.eta_final)
    if args.device != "runtime":
        cfg = net.config()
        cfg.pop("seed")
        directory = args.build_dir or str(paths.standalone_dir(
            f"dc{args.neurons}_{args.device}_{config_hash(cfg)}"))
        net.directory = directory
    del b2
    return net


def save_state(rec, net, block):
    for key, value in net.get_state().items():
        rec.set(f"state/{key}", np.asarray(value))
    rec.set("state/block_counts", np.asarray(block["counts"], dtype=np.int32).reshape(-1, net.n_neurons))
    rec.set("state/block_labels", np.asarray(block["labels"], dtype=np.int64))
    rec.set("state/running_assignments", np.asarray(block["assignments"], dtype=np.int64))
    rec.set("state/phase", block["phase"])


def load_state(rec, net):
    state = {k: rec[f"state/{k}"] for k in ("weights", "theta", "v_exc", "v_inh", "position",
                                               "passes", "train_runs", "pending",
                                               "images_presented")}
    net.set_state(state)
    block = {"counts": list(rec["state/block_counts"]), "labels": list(rec["state/block_labels"]),
             "assignments": rec["state/running_assignments"], "phase": str(rec["state/phase"])}
    return block


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from brainsnn.brian import devices
    from brainsnn.io.datasets import DatasetError, load_mnist
    from brainsnn.stdp.labels import LabelAssignment, assign_labels, predict, accuracy
    from brainsnn.io.results import RunResults

    # fail early and clearly for a device this machine cannot run
    try:
        devices.check_device(args.device)
    except devices.DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.validation:  # the last --validation training images, first --test-images of them
            x_train, y_train = load_mnist("train", data_dir=args.data)
            x_test = x_train[60000 - args.validation:][:args.test_images]
            y_test = y_train[60000 - args.validation:][:args.test_images]
        else:
            x_train, y_train = load_mnist("train", data_dir=args.data,
                                          n=max(args.train_images, args.assign_images))
            x_test, y_test = load_mnist("test", data_dir=args.data, n=args.test_images)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(x_train) < args.train_images:
        print(f"error: only {len(x_train)} MNIST training images, {args.train_images} asked for",
              file=sys.stderr)
        return 2
    x_fit, y_fit = x_train[:args.train_images], y_train[:args.train_images]

    net = build_network(args)
    config = {"scale": args.scale, "neurons": args.neurons, "train_images": args.train_images,
              "assign_images": args.assign_images, "test_images": len(x_test),
              "evaluation_set": (f"validation: MNIST training images {60000 - args.validation}"
                                 f"..{60000 - args.validation + len(x_test) - 1}"
                                 if args.validation else "MNIST test set"),
              "eval_every": args.eval_every, "rule": args.rule, "data": str(args.data),
              "eta_final": args.eta_final,
              "network": net.config(), "build_dir": net.directory,
              "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}
    out = Path(args.out)
    block = {"counts": [], "labels": [], "assignments": -np.ones(args.neurons, dtype=np.int64),
             "phase": "train"}
    if args.resume and out.exists():
        rec = RunResults.load(out)
        if rec.is_complete:
            log(args, f"{out} is already complete; nothing to resume")
            return 0
        old = rec.config
        for key in ("neurons", "rule", "eval_every", "eta_final"):
            if old.get(key) != config[key]:
                print(f"error: cannot resume {out}: it was made with {key}={old.get(key)!r}, "
                      f"this run has {config[key]!r}", file=sys.stderr)
                return 2
        position = int(rec["state/position"])
        if str(rec["state/phase"]) == "train" and config["train_images"] != old["train_images"]:
            # a smaller --train-images ends the pass early (never below the images done)
            if config["train_images"] < position:
                print(f"error: cannot resume {out} with --train-images {config['train_images']}: "
                      f"{position} training images are already done", file=sys.stderr)
                return 2
            log(args, f"resuming with --train-images {config['train_images']} "
                      f"(the run was started with {old['train_images']})")
            rec.set("train_images_changed_on_resume",
                    np.asarray([old["train_images"], config["train_images"]]),
                    description="--train-images at the start and at the resume")
        elif config["train_images"] != old["train_images"]:
            print(f"error: cannot resume {out}: training is finished, with "
                  f"{old['train_images']} images", file=sys.stderr)
            return 2
        if rec.seed != args.seed:
            print(f"error: cannot resume {out}: its seed is {rec.seed}, not {args.seed}",
                  file=sys.stderr)
            return 2
        block = load_state(rec, net)
        log(args, f"resuming {out}: {net.position} training images done, phase {block['phase']}")
    else:
        if args.resume:
            log(args, f"--resume: {out} does not exist, starting a new run")
        rec = RunResults(PROTOCOL, config, seed=args.seed, device=args.device)

    log(args, f"Diehl & Cook STDP: N={args.neurons}, {args.train_images} training images, "
              f"device {args.device}, rule {args.rule}, seed {args.seed}")
    if args.device != "runtime":
        log(args, f"compiling the {args.device} project in {net.directory} ...")
        with rec.timer("compile") as t:
            net.compile()
        log(args, f"compiled in {t.seconds:.1f} s")

    # ---------------------------------------------------------------- training
    t_train = time.perf_counter()
    state = {"images": net.position}

    def on_chunk(info):
        block["counts"].extend(info["counts"])
        block["labels"].extend(y_fit[info["indices"]])
        state["images"] = info["position"] if info["passes"] == 0 else args.train_images
        rate = info["presented"] / info["seconds"]
        rec.add_metric("train_images_per_second", rate, step=state["images"])
        rec.add_metric("train_spikes_per_image", float(np.mean(np.sum(info["counts"], axis=1)))
                       if len(info["counts"]) else 0.0, step=state["images"])
        msg = (f"train {state['images']:6d}/{args.train_images}  {rate:6.1f} img/s  "
               f"{np.mean(np.sum(info['counts'], axis=1)) if len(info['counts']) else 0:5.1f} "
               f"spikes/img, {len(net.pending)} to re-present")
        while len(block["counts"]) >= args.eval_every:
            counts = np.asarray(block["counts"][:args.eval_every])
            labels = np.asarray(block["labels"][:args.eval_every])
            del block["counts"][:args.eval_every], block["labels"][:args.eval_every]
            if (block["assignments"] >= 0).any():
                acc = accuracy(predict(counts, block["assignments"]), labels)
                rec.add_metric("train_accuracy_running", acc, step=state["images"])
                msg += f"  running accuracy {100 * acc:.1f} %"
            block["assignments"], _ = assign_labels(counts, labels)
        log(args, msg)
        if info["chunk_spikes"] == 0:
            theta = 1e3 * net.theta
            print(f"WARNING: no excitatory spike in this whole training chunk "
                  f"({info['presented']} presentations, re-presentations at raised rates "
                  f"included; {info['silent_chunks']} such chunk(s) in a row); theta "
                  f"{theta.min():.1f}..{theta.max():.1f} mV (20 mV at the start). The network "
                  f"has stopped learning.", file=sys.stderr, flush=True)
        rec.set("timings/train", np.float64(rec.get("timings/train", 0.0) + info["seconds"]),
                units="s")
        save_state(rec, net, block)
        rec.save(out, complete=False)
        if args.max_silent_chunks and info["silent_chunks"] >= args.max_silent_chunks:
            raise SilentNetworkError(
                f"error: {info['silent_chunks']} training chunks in a row without any "
                f"excitatory spike: the network is dead (theta up to {1e3 * net.theta.max():.1f} "
                f"mV); training stopped at image {state['images']} (checkpoint: {out}; "
                f"--max-silent-chunks 0 trains on regardless)")

    if block["phase"] == "train":
        import warnings
        from brainsnn.brian.wta import SilentNetworkWarning
        try:
            with warnings.catch_warnings():  # on_chunk prints its own warning
                warnings.simplefilter("ignore", SilentNetworkWarning)
                net.partial_fit(x_fit, callback=on_chunk)
        except SilentNetworkError as exc:
            print(exc, file=sys.stderr, flush=True)
            net.close()
            return 3
        block["phase"] = "evaluate"
        save_state(rec, net, block)
        rec.save(out, complete=False)
    log(args, f"training done: {net.images_presented} presentations "
              f"({net.images_presented - args.train_images} re-presentations) in "
              f"{time.perf_counter() - t_train:.1f} s")

    # ---------------------------------------------------------------- evaluation
    def progress(name):
        def cb(info):
            log(args, f"{name} {info['done']:6d}/{info['total']}  {info['seconds']:.1f} s/chunk")
        return cb

    with rec.timer("assign"):
        counts_assign = net.transform(x_train[:args.assign_images], callback=progress("assign"))
    clf = LabelAssignment().fit(counts_assign, y_train[:args.assign_images])
    with rec.timer("test"):
        counts_test = net.transform(x_test, callback=progress("test"))
    pred = clf.predict(counts_test)
    acc = accuracy(pred, y_test)
    cm = clf.confusion_matrix(counts_test, y_test)
    assign_acc = clf.score(counts_assign, y_train[:args.assign_images])
    evaluated = "held-out training (validation)" if args.validation else "test"
    log(args, f"{evaluated} accuracy {100 * acc:.2f} % on {len(y_test)} MNIST {evaluated} images "
              f"(labels from {args.assign_images} training images; their accuracy "
              f"{100 * assign_acc:.2f} %)")

    t_on = float(net.t_on)
    rec.set("layers/exc/weights", net.weights, layout="pre_post", units="1",
            description="input->excitatory STDP weights (n_inputs, N)")
    rec.set("layers/exc/theta", net.theta, units="V", description="adaptive threshold increase")
    rec.set("layers/exc/assignments", clf.assignments_, description="class label of each neuron (-1: silent)")
    rec.set("layers/exc/spike_rate", counts_test.mean(axis=0) / t_on, units="Hz",
            description="mean rate of each excitatory neuron during test presentations")
    rec.set("layers/exc/spikes_per_image", counts_test.sum(axis=1).astype(np.int32),
            description="excitatory spikes per test image (last presentation)")
    rec.set("layers/input/spike_rate", x_test.reshape(len(x_test), -1).mean(axis=0)
            * float(net.f_max), units="Hz", description="mean Poisson input rate per pixel (test)")
    rec.set("metrics/test_accuracy", acc, units="1",
            description=f"accuracy on the evaluation set ({config['evaluation_set']})")
    rec.set("metrics/assign_accuracy", assign_acc, units="1",
            description="accuracy on the training images used to assign labels")
    rec.set("metrics/confusion_matrix", cm,
            description="rows: true class, columns: predicted class; last column: no prediction")
    rec.set("metrics/test_predictions", pred.astype(np.int8))
    rec.set("metrics/re_presentations", net.images_presented - args.train_images)
    rec.set("metrics/train_images_used", args.train_images,
            description="new training images of the pass (re-presentations not counted)")
    rec.set("metrics/assign_images_used", args.assign_images)
    rec.set("timings/train_images_per_second",
            args.train_images / max(float(rec.get("timings/train", 0)), 1e-9), units="1/s")
    block["phase"] = "done"
    save_state(rec, net, block)
    rec.save(out, complete=True)
    log(args, f"wrote {out}")
    if args.plot:
        try:
            from brainsnn.analysis.plotting import results_figure
            png = out.with_suffix(".png")
            results_figure(RunResults.load(out)).savefig(png)
            log(args, f"wrote {png}")
        except Exception as exc:  # plotting is optional; the results file is written
            print(f"warning: plot failed: {exc}", file=sys.stderr)
    net.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
