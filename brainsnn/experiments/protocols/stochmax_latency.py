"""Stochmax vs softmax: test accuracy against the number of time steps T (claim 3).

Stochmax as defined in this project: Gumbel-perturbed logits p = softmax((z + sigma g)/tau)
at training time only; inference uses argmax of the unperturbed logits. For every training
T in --train-T, every loss (softmax, stochmax) and every seed, the same network is trained with
the same budget (images, epochs, optimiser, learning rate) and evaluated for inference
T = 1..max. The claim tested: with stochmax a network reaches a given accuracy at a smaller T.

Writes one HDF5 file (runs/<loss>/Ttrain<k>/seed<s>/accuracy_vs_T, means under metrics/) and
a figure beside it (accuracy vs T, mean +- std over seeds).

Examples:
    brainsnn run stochmax_latency --scale smoke
    brainsnn run stochmax_latency            # default scale 'small', 3 seeds
"""
from __future__ import annotations

import logging

from brainsnn.experiments.training import (claims_parser, claims_run, claims_setup, finish_claims,
                                           parse_claims)

log = logging.getLogger("brainsnn")
SCALES = {
    "smoke": dict(train_images=600, test_images=300, epochs=1, conv=(4, "P", 8, "P"), fc=(32,),
                  train_T=(2,), n_seeds=3, eval_T=(1, 2, 4), batch_size=50, lr=3e-3),
    "small": dict(train_images=4000, test_images=2000, epochs=1, conv=(8, "P", 16, "P"), fc=(64,),
                  train_T=(2, 4), n_seeds=3, eval_T=(1, 2, 3, 4, 6, 8), batch_size=50,
                  lr=3e-3),
    "full": dict(train_images=None, test_images=None, epochs=3, conv=(16, "P", 32, "P"), fc=(128,),
                 train_T=(1, 2, 4), n_seeds=3, eval_T=(1, 2, 3, 4, 6, 8), batch_size=64,
                 lr=2e-3),
}
LOSSES = ("softmax", "stochmax")


def build_parser():
    p = claims_parser("stochmax_latency", __doc__, SCALES)
    p.add_argument("--train-T", default=None, help="comma-separated training T values")
    p.add_argument("--sigma", type=float, default=1.0, help="stochmax Gumbel noise scale")
    p.add_argument("--tau", type=float, default=1.0, help="stochmax temperature")
    p.add_argument("--form", choices=("gumbel", "noisy_target"), default="gumbel")
    p.add_argument("--encoder", choices=("direct", "poisson"), default="direct")
    return p


def summarize(rec, cfg):
    """Mean/std accuracy vs T per (loss, training T); smallest T reaching a target accuracy."""
    import numpy as np

    Ts = np.asarray(rec.get("metrics/T"))
    lines = []
    for T_train in cfg["train_T"]:
        means = {loss: np.asarray(rec.get(f"metrics/accuracy_vs_T_{loss}_Ttrain{T_train}"))
                 for loss in LOSSES}
        # target: 1 point below the best mean accuracy softmax reaches at any T
        target = float(means["softmax"].max()) - 0.01
        first = {}
        for loss in LOSSES:
            ok = np.nonzero(means[loss] >= target)[0]
            first[loss] = int(Ts[ok[0]]) if len(ok) else -1
            rec.set(f"claims/Ttrain{T_train}/first_T_reaching_target_{loss}", first[loss],
                    target=target)
        lines.append(f"T_train={T_train}: target {target:.4f} (best softmax - 1 point): "
                     f"first T softmax {first['softmax']}, stochmax {first['stochmax']}")
        for loss in LOSSES:
            lines.append(f"  {loss:<9}" + " ".join(f"T={t}:{a:.4f}" for t, a in zip(Ts, means[loss])))
    return "\n".join(lines)


def figure(path_or_rec):
    """Accuracy vs inference T, mean +- std over seeds, one panel per training T (file only)."""
    import numpy as np
    from matplotlib.figure import Figure

    from brainsnn.io.results import RunResults

    rec = RunResults.load(path_or_rec) if not hasattr(path_or_rec, "get") else path_or_rec
    cfg = rec.config
    Ts = np.asarray(rec.get("metrics/T"))
    train_T = cfg["train_T"]
    fig = Figure(figsize=(4.5 * len(train_T), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(train_T)))
    for ax, T_train in zip(axes, train_T):
        for loss in LOSSES:
            m = np.asarray(rec.get(f"metrics/accuracy_vs_T_{loss}_Ttrain{T_train}"))
            s = np.asarray(rec.get(f"metrics/accuracy_vs_T_{loss}_Ttrain{T_train}_std"))
            ax.errorbar(Ts, m, yerr=s, marker="o", capsize=3, label=loss)
        ax.set(xlabel="inference time steps T", ylabel="test accuracy",
               title=f"trained with T={T_train}")
        ax.legend()
    return fig


def main(argv=None):
    args = parse_claims(build_parser(), SCALES, argv, int_lists=("train_T",))
    import numpy as np

    from brainsnn.experiments.training import load_data, train_and_evaluate
    from brainsnn.analysis.energy import write_energy
    from brainsnn.engine.network import vgg_specs

    cfg = claims_setup(args, SCALES)
    cfg["eval_T"] = tuple(sorted(set(cfg["eval_T"]) | set(cfg["train_T"])))
    with claims_run("stochmax_latency", args, cfg, argv) as run:
        rec = run.rec
        x_tr, y_tr, x_te, y_te = load_data(args)
        log.info(f"{args.dataset}: {len(x_tr)} train / {len(x_te)} test; training T "
              f"{cfg['train_T']}, seeds {cfg['seeds']}")
        rec.set("metrics/T", np.array(cfg["eval_T"]))
        specs = vgg_specs(cfg["conv"], fc=cfg["fc"])
        with rec.timer("total"):
            for T_train in cfg["train_T"]:
                for loss in LOSSES:
                    accs = []
                    for seed in cfg["seeds"]:
                        opts = ({"sigma": args.sigma, "tau": args.tau, "form": args.form}
                                if loss == "stochmax" else {})
                        clf, res = train_and_evaluate(
                            specs, x_tr, y_tr, x_te, y_te, eval_T=cfg["eval_T"], energy_images=500,
                            T=T_train, loss=loss, loss_options=opts, epochs=cfg["epochs"],
                            batch_size=cfg["batch_size"], lr=cfg["lr"], encoder=args.encoder,
                            device=args.torch_device, seed=seed)
                        base = f"runs/{loss}/Ttrain{T_train}/seed{seed}"
                        rec.set(f"{base}/accuracy_vs_T", res["accuracy_vs_T"], split="test")
                        rec.set(f"{base}/test_accuracy", res["test_accuracy"], T=T_train)
                        rec.set(f"{base}/train_seconds", res["train_seconds"], units="s")
                        rec.set(f"{base}/final_train_loss", res["history"][-1]["train_loss"])
                        write_energy(rec, res["energy"], prefix=f"{base}/energy")
                        accs.append(res["accuracy_vs_T"])
                        log.info(f"{loss:<9} T_train={T_train} seed={seed}: acc at T="
                              f"{T_train} {res['test_accuracy']:.4f}; vs T "
                              + " ".join(f"{a:.3f}" for a in res["accuracy_vs_T"])
                              + f" ({res['train_seconds']:.0f} s)")
                    accs = np.array(accs)
                    rec.set(f"metrics/accuracy_vs_T_{loss}_Ttrain{T_train}", accs.mean(0),
                            n_seeds=len(accs), split="test")
                    rec.set(f"metrics/accuracy_vs_T_{loss}_Ttrain{T_train}_std", accs.std(0))
                run.checkpoint()
        # the last configuration's energy, as the file's headline energy
        write_energy(rec, res["energy"])
        return finish_claims(run, summarize(rec, cfg), figure, args.plot)

