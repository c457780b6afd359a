"""Hybrid artificial/spiking networks: accuracy and energy per layer pattern (claim 4).

Hybrid networks as defined in this project: each weighted layer is artificial (ReLU on rates,
computed once) or spiking (LIF, every step); spiking -> artificial hands over the rate,
artificial -> spiking drives a constant current. The same VGG-style network is trained (same
data, budget, seed) for the all-spiking, the all-artificial and several mixed patterns (one
letter per weighted layer, readout last: S spiking, A artificial), and its energy per image is
measured (E_MAC = 4.6 pJ, E_AC = 0.9 pJ; see brainsnn.analysis.energy for the conventions). The claim
tested: which pattern keeps accuracy within 1 point of the all-artificial network at the
lowest energy.

Writes one HDF5 file (runs/<pattern>/..., summary under metrics/) and a figure.

Examples:
    brainsnn run hybrid_layers --scale smoke
    brainsnn run hybrid_layers                   # default scale 'small'
"""
from __future__ import annotations

import logging

PATTERNS = ("SSSS", "AAAA", "ASSS", "AASS", "SSAA", "SAAA", "SASA")
from brainsnn.experiments.training import (claims_parser, claims_run, claims_setup, finish_claims,
                                           parse_claims)

log = logging.getLogger("brainsnn")
SCALES = {
    "smoke": dict(train_images=600, test_images=300, epochs=1, conv=(4, "P", 8, "P"), fc=(32,),
                  patterns=("SSSS", "AAAA", "ASSS"), T=4, batch_size=50, lr=3e-3, n_seeds=1),
    "small": dict(train_images=4000, test_images=2000, epochs=1, conv=(8, "P", 16, "P"), fc=(64,),
                  patterns=PATTERNS, T=4, batch_size=50, lr=3e-3, n_seeds=1),
    "full": dict(train_images=None, test_images=None, epochs=3, conv=(16, "P", 32, "P"), fc=(128,),
                 patterns=PATTERNS, T=4, batch_size=64, lr=2e-3, n_seeds=3),
}


def build_parser():
    p = claims_parser("hybrid_layers", __doc__, SCALES)
    p.add_argument("--patterns", default=None, help="comma-separated patterns, e.g. SSSS,AASS")
    p.add_argument("--analog-input", choices=("once", "per_step"), default="once",
                   help="energy convention for spiking layers fed by analog input")
    return p


def choose(patterns, acc, energy, tolerance=0.01):
    """The lowest-energy pattern whose accuracy is within ``tolerance`` of all-artificial."""
    ref = acc[patterns.index("AAAA")] if "AAAA" in patterns else max(acc)
    ok = [k for k in range(len(patterns)) if acc[k] >= ref - tolerance]
    best = min(ok, key=lambda k: energy[k])
    return patterns[best], ref


def figure(path_or_rec):
    """Accuracy against energy per image, one point per pattern (from the file alone)."""
    import numpy as np
    from matplotlib.figure import Figure

    from brainsnn.io.results import RunResults

    rec = RunResults.load(path_or_rec) if not hasattr(path_or_rec, "get") else path_or_rec
    patterns = [p for p in str(rec.get("metrics/patterns")).split(",")]
    acc = np.asarray(rec.get("metrics/accuracy"))
    energy = np.asarray(rec.get("metrics/energy")) * 1e9
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(energy, acc)
    for p, e, a in zip(patterns, energy, acc):
        ax.annotate(p, (e, a), textcoords="offset points", xytext=(4, 4))
    ax.set(xlabel="energy per image (nJ)", ylabel="test accuracy",
           title="layer patterns (S spiking, A artificial; readout last)")
    return fig


def main(argv=None):
    args = parse_claims(build_parser(), SCALES, argv)
    import numpy as np

    from brainsnn.experiments.training import load_data, train_and_evaluate
    from brainsnn.analysis.energy import write_energy
    from brainsnn.engine.network import vgg_specs

    cfg = claims_setup(args, SCALES)
    if isinstance(args.patterns, str):
        cfg["patterns"] = tuple(p.strip().upper() for p in args.patterns.split(","))
    with claims_run("hybrid_layers", args, cfg, argv) as run:
        rec = run.rec
        x_tr, y_tr, x_te, y_te = load_data(args)
        log.info(f"{args.dataset}: {len(x_tr)} train / {len(x_te)} test; patterns "
              f"{', '.join(cfg['patterns'])}; seeds {cfg['seeds']}")
        acc_mean, energy_mean = [], []
        with rec.timer("total"):
            for pattern in cfg["patterns"]:
                specs = vgg_specs(cfg["conv"], fc=cfg["fc"], kinds=pattern)
                accs, energies = [], []
                for seed in cfg["seeds"]:
                    clf, res = train_and_evaluate(
                        specs, x_tr, y_tr, x_te, y_te, energy_images=0, T=cfg["T"],
                        epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                        device=args.torch_device, seed=seed)
                    report = clf.energy(x_te[:1000], analog_input=args.analog_input)
                    base = f"runs/{pattern}/seed{seed}"
                    rec.set(f"{base}/test_accuracy", res["test_accuracy"], T=cfg["T"])
                    rec.set(f"{base}/train_seconds", res["train_seconds"], units="s")
                    write_energy(rec, report, prefix=f"{base}/energy")
                    accs.append(res["test_accuracy"])
                    energies.append(report["total"])
                    log.info(f"{pattern} seed={seed}: accuracy {res['test_accuracy']:.4f}, "
                          f"energy {report['total'] * 1e9:.1f} nJ/image (ANN "
                          f"{report['ann_total'] * 1e9:.1f}, ratio {report['ratio_to_ann']:.3f}) "
                          f"({res['train_seconds']:.0f} s)")
                    if pattern == "SSSS" and seed == cfg["seeds"][0]:
                        write_energy(rec, report)   # the all-spiking network's energy as headline
                acc_mean.append(float(np.mean(accs)))
                energy_mean.append(float(np.mean(energies)))
                run.checkpoint()
        rec.set("metrics/patterns", ",".join(cfg["patterns"]))
        rec.set("metrics/accuracy", np.array(acc_mean), split="test", T=cfg["T"])
        rec.set("metrics/energy", np.array(energy_mean), units="J/image")
        best, ref = choose(list(cfg["patterns"]), acc_mean, energy_mean)
        lines = [f"{'pattern':<8}{'accuracy':>10}{'energy nJ':>12}"]
        lines += [f"{p:<8}{a:>10.4f}{e * 1e9:>12.1f}" for p, a, e in
                  zip(cfg["patterns"], acc_mean, energy_mean)]
        lines.append(f"lowest-energy pattern within 1 point of all-artificial ({ref:.4f}): {best}")
        rec.set("claims/best_pattern", best, reference_accuracy=ref)
        return finish_claims(run, "\n".join(lines), figure, args.plot)

