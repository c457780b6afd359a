"""BackRes vs physically deeper networks: accuracy and parameter count (claim 2).

BackRes as defined in this project: a block of conv layers runs R times with the same weights
(each pass with its own neuron state), re-entry y_r = B(y_{r-1}) by default. For R = 1, 2, 3
the BackRes network (parameters of one pass) is trained and compared with a network made
physically deeper with separate weights (the block repeated R times). Same data, budget and
seed for every network. Also records operations/energy (a BackRes pass costs like a layer).

Writes one HDF5 file (runs/<backres|deep>_R<k>/..., summary under metrics/) and a figure.

Examples:
    brainsnn run backres_depth --scale smoke
    brainsnn run backres_depth                  # default scale 'small'
"""
from __future__ import annotations

import logging

from brainsnn.experiments.training import (claims_parser, claims_run, claims_setup, finish_claims,
                                           parse_claims)

log = logging.getLogger("brainsnn")
SCALES = {
    "smoke": dict(train_images=600, test_images=300, epochs=1, width=4, block_layers=1, Rs=(1, 2),
                  T=3, batch_size=50, lr=3e-3, n_seeds=1),
    "small": dict(train_images=4000, test_images=2000, epochs=1, width=8, block_layers=1, Rs=(1, 2, 3),
                  T=4, batch_size=50, lr=3e-3, n_seeds=1),
    "full": dict(train_images=None, test_images=None, epochs=3, width=16, block_layers=2, Rs=(1, 2, 3),
                 T=4, batch_size=64, lr=2e-3, n_seeds=3),
}


def build_parser():
    p = claims_parser("backres_depth", __doc__, SCALES)
    p.add_argument("--form", choices=("reentry", "additive"), default="reentry")
    p.add_argument("--R", default=None, help="comma-separated R values (default per scale)")
    p.add_argument("--width", type=int, default=None, help="channels of the stem and block")
    p.add_argument("--block-layers", type=int, default=None, help="conv layers in the block")
    return p


def figure(path_or_rec):
    """Accuracy and parameter count against logical depth R (from the file alone)."""
    import numpy as np
    from matplotlib.figure import Figure

    from brainsnn.io.results import RunResults

    rec = RunResults.load(path_or_rec) if not hasattr(path_or_rec, "get") else path_or_rec
    R = np.asarray(rec.get("metrics/R"))
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for name, label in (("backres", "BackRes (shared weights)"), ("deep", "physically deeper")):
        m = np.asarray(rec.get(f"metrics/accuracy_{name}"))
        s = np.asarray(rec.get(f"metrics/accuracy_{name}_std"))
        ax1.errorbar(R, m, yerr=s, marker="o", capsize=3, label=label)
        ax2.plot(R, np.asarray(rec.get(f"metrics/n_parameters_{name}")), "o-", label=label)
    ax1.set(xlabel="passes / repeats R of the block", ylabel="test accuracy")
    ax2.set(xlabel="passes / repeats R of the block", ylabel="parameters")
    ax1.legend()
    ax2.legend()
    return fig


def main(argv=None):
    args = parse_claims(build_parser(), SCALES, argv, int_lists=("R",))
    import numpy as np

    from brainsnn.experiments.training import load_data, train_and_evaluate
    from brainsnn.analysis.energy import write_energy
    from brainsnn.engine.network import backres_specs

    cfg = claims_setup(args, SCALES)
    if args.R:
        cfg["Rs"] = args.R
    with claims_run("backres_depth", args, cfg, argv) as run:
        rec = run.rec
        x_tr, y_tr, x_te, y_te = load_data(args)
        log.info(f"{args.dataset}: {len(x_tr)} train / {len(x_te)} test; R {cfg['Rs']}, "
              f"seeds {cfg['seeds']}, form {args.form}")
        summary = {}
        with rec.timer("total"):
            for R in cfg["Rs"]:
                variants = [("backres", True)] + ([("deep", False)] if R > 1 else [])
                for name, shared in variants:
                    specs = backres_specs(cfg["width"], cfg["block_layers"], R=R, shared=shared,
                                          form=args.form)
                    accs = []
                    for seed in cfg["seeds"]:
                        clf, res = train_and_evaluate(
                            specs, x_tr, y_tr, x_te, y_te, energy_images=500, T=cfg["T"],
                            epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                            device=args.torch_device, seed=seed)
                        base = f"runs/{name}_R{R}/seed{seed}"
                        rec.set(f"{base}/test_accuracy", res["test_accuracy"], T=cfg["T"])
                        rec.set(f"{base}/train_seconds", res["train_seconds"], units="s")
                        write_energy(rec, res["energy"], prefix=f"{base}/energy")
                        accs.append(res["test_accuracy"])
                        log.info(f"{name:<8} R={R} seed={seed}: accuracy "
                              f"{res['test_accuracy']:.4f}, {res['n_parameters']} parameters, "
                              f"energy {res['energy']['total'] * 1e9:.1f} nJ/image "
                              f"({res['train_seconds']:.0f} s)")
                    summary[(name, R)] = (float(np.mean(accs)), float(np.std(accs)),
                                          res["n_parameters"], res["energy"]["total"])
                    if R == 1:  # R = 1: the BackRes network is the plain (physically shallow) one
                        summary[("deep", 1)] = summary[(name, 1)]
                run.checkpoint()
        Rs = np.array(cfg["Rs"])
        rec.set("metrics/R", Rs)
        for name in ("backres", "deep"):
            rec.set(f"metrics/accuracy_{name}", np.array([summary[(name, R)][0] for R in Rs]),
                    split="test", T=cfg["T"])
            rec.set(f"metrics/accuracy_{name}_std", np.array([summary[(name, R)][1] for R in Rs]))
            rec.set(f"metrics/n_parameters_{name}", np.array([summary[(name, R)][2] for R in Rs]))
            rec.set(f"metrics/energy_{name}", np.array([summary[(name, R)][3] for R in Rs]),
                    units="J/image")
        write_energy(rec, res["energy"])
        lines = [f"{'R':>2} {'BackRes acc':>12} {'params':>8} {'deeper acc':>11} {'params':>8}"]
        for R in Rs:
            b, d = summary[("backres", R)], summary[("deep", R)]
            lines.append(f"{R:>2} {b[0]:>12.4f} {b[2]:>8d} {d[0]:>11.4f} {d[2]:>8d}")
        return finish_claims(run, "\n".join(lines), figure, args.plot)

