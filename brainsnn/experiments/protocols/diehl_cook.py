"""Diehl & Cook (2015)-style unsupervised STDP network on MNIST, as defined in this project.

Trains the winner-take-all STDP layer (brainsnn.brian.wta.DiehlCookNetwork) without labels on
MNIST training images, labels its neurons from their responses to training images (learning
off), and measures accuracy and the confusion matrix on the MNIST test set. After every chunk
of images the training state is saved in the results file as a checkpoint; ``--resume``
continues an interrupted run exactly.

Learning rule: by default the triplet rule of Diehl & Cook's published code with nu_post
0.08, plasticity falling linearly over the pass to 0.125 of that (Diehl & Cook's 0.01 at the
last image; chosen on held-out training images with --validation). ``--rule diehl_cook``
selects the power-law rule (x_tar 0.4, mu 0.2), ``--rule pair`` nearest-neighbour pair STDP,
which potentiates at every spike of the neuron: at N = 6400 it trains every neuron, where the
triplet rule leaves neurons that answer with single spikes untrained (docs/stdp.md).

Examples:
  brainsnn run diehl_cook --scale smoke
  brainsnn run diehl_cook --scale full --neurons 400 --out dc400.h5
  # the best one pass at N = 6400 (95.02 % with seed 0, 94.72 % with --seed 1; with
  # --assign-images 20000, 95.02 / 94.84 / 95.09 % over seeds 0-2, 94.98 % on average):
  brainsnn run diehl_cook --scale full --neurons 6400 --theta-plus 0.6 --rule pair \\
      --nu-post 0.04 --eta-final 0.125 --vote poisson --assign-images 20000
  brainsnn run diehl_cook --neuron my_models.py:MY_EXCITATORY --scale smoke
"""
from __future__ import annotations

import logging
import os

from brainsnn.brian.defaults import ETA_FINAL, NU_POST
from brainsnn.experiments import options

PROTOCOL = "diehl_cook"
SCALES = {
    "smoke": dict(neurons=20, train_images=300, assign_images=200, test_images=200,
                  chunk_size=100, eval_every=100),
    "small": dict(neurons=100, train_images=15000, assign_images=5000, test_images=10000,
                  chunk_size=1000, eval_every=5000),
    "full": dict(neurons=100, train_images=60000, assign_images=10000, test_images=10000,
                 chunk_size=1000, eval_every=10000),
}
log = logging.getLogger("brainsnn")


def build_parser():
    p = options.protocol_parser(PROTOCOL, __doc__, SCALES, datasets=("mnist",),
                                brian_device="cpp_standalone", torch_device=False,
                                neuron=True)
    p.add_argument("--inhibitory-neuron", default=None, metavar="MODULE:ATTR",
                   help="a NeuronModel of your own for the inhibitory population")
    p.add_argument("--neurons", type=int, default=None, help="N excitatory (and inhibitory) neurons")
    p.add_argument("--assign-images", type=int, default=None,
                   help="training images (the first ones) whose responses label the neurons")
    p.add_argument("--chunk-size", type=int, default=None, help="images per long Brian2 run")
    p.add_argument("--eval-every", type=int, default=None,
                   help="training images per block of the running training accuracy")
    p.add_argument("--rule", default="triplet", choices=["diehl_cook", "triplet", "pair"],
                   help="STDP rule (default triplet, the rule of Diehl & Cook's published code)")
    p.add_argument("--nu-pre", type=float, default=0.0001, help="learning rate at a pre spike")
    p.add_argument("--nu-post", type=float, default=None,
                   help="learning rate at a post spike (default per rule: "
                        + ", ".join(f"{k} {v}" for k, v in NU_POST.items()) + ")")
    p.add_argument("--eta-final", type=float, default=None,
                   help="plasticity at the end of the pass as a fraction of the start, falling "
                        "linearly (1: constant; default per rule: "
                        + ", ".join(f"{k} {v}" for k, v in ETA_FINAL.items()) + ")")
    p.add_argument("--mu", type=float, default=None, help="weight dependence (diehl_cook rule)")
    p.add_argument("--x-tar", type=float, default=None, help="pre trace target (diehl_cook rule)")
    p.add_argument("--theta-plus", type=float, default=None, metavar="MV",
                   help="rise of the excitatory neurons' adaptive threshold theta at each spike, "
                        "in mV (default the neuron model's; Diehl & Cook's 0.05). Each of N "
                        "neurons wins about 1/N of the images, so the thresholds build up less "
                        "at large N: at N = 6400 one pass gave 76.73 / 93.03 / 93.37 %% with "
                        "0.05 / 0.2 / 0.4 (94.32 %% with 0.4 and --vote poisson); with "
                        "--rule pair --nu-post 0.04, 0.6 gave 95.02 %% with --vote poisson "
                        "(94.72 %% with --seed 1; 94.98 %% over three seeds with --assign-images "
                        "20000), chosen over 0.3 and 0.4 on training images "
                        "(docs/performance.md)")
    p.add_argument("--vote", default="mean", choices=["mean", "proportion", "poisson"],
                   help="readout of metrics/test_accuracy: mean (Diehl & Cook: the mean count "
                        "of each class's neurons), proportion (each neuron weighted by its "
                        "share of its class) or poisson (naive Bayes over all neurons); every "
                        "readout's accuracy is recorded under metrics/votes/ (choose one with "
                        "--validation, not on the test set)")
    p.add_argument("--min-spikes", type=int, default=5,
                   help="re-present images with fewer excitatory spikes at a higher rate (0: off)")
    p.add_argument("--max-silent-chunks", type=int, default=3,
                   help="stop (exit status 3, checkpoint kept) after this many training chunks "
                        "in a row without an excitatory spike (0: never)")
    p.add_argument("--inference", default="auto", choices=["auto", "brian2", "torch"],
                   help="engine of label assignment and test (learning off): brian2 (the "
                        "training network's chunks; faster on a CPU), torch (batched, the same "
                        "equations and spikes; for a GPU) or auto (default: torch where a CUDA "
                        "device is used, else brian2)")
    p.add_argument("--inference-batch", type=int, default=1024,
                   help="--inference torch: images simulated at once")
    p.add_argument("--inference-device", default=None,
                   help="--inference torch: torch device (default cuda when available, else cpu)")
    p.add_argument("--build-dir", default=None,
                   help="standalone project folder (default: the cache, keyed by the network)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = options.parse(p, SCALES, argv)
    for option in ("neurons", "chunk_size", "eval_every", "inference_batch"):
        options.check_count(p, "--" + option.replace("_", "-"), getattr(args, option))
    options.check_count(p, "--assign-images", args.assign_images, 60000 - args.validation)
    if args.eta_final is None:
        args.eta_final = ETA_FINAL[args.rule]
    if args.nu_post is None:
        args.nu_post = NU_POST[args.rule]
    options.check_positive(p, "--eta-final", args.eta_final, maximum=1.0)
    options.check_positive(p, "--nu-post", args.nu_post)
    options.check_positive(p, "--nu-pre", args.nu_pre, allow_zero=True)
    if args.theta_plus is not None:
        options.check_positive(p, "--theta-plus", args.theta_plus, allow_zero=True)
    for option in ("mu", "x_tar"):
        value = getattr(args, option)
        if value is not None:
            if args.rule != "diehl_cook":
                p.error(f"--{option.replace('_', '-')} applies to the diehl_cook rule, not {args.rule!r}")
            options.check_positive(p, "--" + option.replace("_", "-"), value, allow_zero=True)
    if args.inference == "brian2" and args.inference_device is not None:
        p.error(f"--inference-device {args.inference_device} is the torch engine's device, but "
                "--inference brian2 runs Brian2; use --inference torch (or auto)")
    if args.min_spikes < 0 or args.max_silent_chunks < 0:
        p.error("--min-spikes and --max-silent-chunks must be >= 0")
    return args


def run_name(args) -> str:
    """The default file name: ``diehl_cook_<scale>[_n<N>][_val<V>]_seed<seed>``."""
    name = f"{PROTOCOL}_{args.scale}"
    if args.neurons != SCALES[args.scale]["neurons"]:
        name += f"_n{args.neurons}"
    if args.validation:
        name += f"_val{args.validation}"
    return f"{name}_seed{args.seed}"


def build_network(args):
    """The :class:`~brainsnn.brian.wta.DiehlCookNetwork` the options describe."""
    from brainsnn.brian.plasticity import make_rule
    from brainsnn.brian.wta import DiehlCookNetwork
    from brainsnn.experiments.user_models import load_neuron_model
    from brainsnn.errors import ExperimentError
    from brainsnn.models import DIEHL_COOK_EXCITATORY

    rule_params = {"nu_pre": args.nu_pre, "nu_post": args.nu_post, "traces": "neuron"}
    for option in ("mu", "x_tar"):
        if getattr(args, option) is not None:
            rule_params[option] = getattr(args, option)
    models = {}
    if args.neuron:
        models["exc_model"] = load_neuron_model(args.neuron)
    if args.inhibitory_neuron:
        models["inh_model"] = load_neuron_model(args.inhibitory_neuron)
    if args.theta_plus is not None:
        import brian2 as b2

        exc_model = models.get("exc_model", DIEHL_COOK_EXCITATORY)
        if "theta_plus" not in exc_model.parameters:
            raise ExperimentError(
                f"--theta-plus: the excitatory model {exc_model.name!r} has no parameter "
                f"theta_plus (its parameters: {', '.join(sorted(exc_model.parameters))})")
        models["exc_model"] = exc_model.with_parameters(theta_plus=args.theta_plus * b2.mV)
    net = DiehlCookNetwork(args.neurons, rule=make_rule(args.rule, **rule_params),
                           device=args.brian_device, chunk_size=args.chunk_size, seed=args.seed,
                           min_spikes=args.min_spikes, threads=args.threads,
                           eta_final=args.eta_final, directory=args.build_dir, **models)
    return net


#: The network settings that shape inference; the rebuilt network must have the run's.
INFERENCE_SETTINGS = ("n_neurons", "n_inputs", "exc_model", "inh_model", "w_exc_inh", "w_inh_exc",
                      "dt_ms", "t_on_ms", "t_off_ms", "f_max_Hz", "f_boost_Hz", "integration",
                      "min_spikes", "max_repeats")


def network_from_results(path, build_dir=None, threads=1, seed=1):
    """``(network, results)``: the network of a complete diehl_cook results file, built from
    its command with its final weights and theta. Its seed is ``seed``, that of the inference
    input spikes, not the run's (``results.seed``; give that to
    ``initial_weight_correlation``). A run whose network this version would build differently
    is refused."""
    import json
    import shlex
    from pathlib import Path

    import numpy as np

    from brainsnn.errors import ExperimentError
    from brainsnn.experiments.run import config_differences
    from brainsnn.io.results import RunResults

    rec = RunResults.load(path)
    if rec.protocol != "diehl_cook" or "layers/exc/weights" not in rec:
        raise ExperimentError(f"{path}: not a complete diehl_cook results file with weights")
    words = shlex.split(rec.config["command"])
    # "brainsnn run diehl_cook ..." (before 0.2: "protocols/diehl_cook.py ...")
    first = next(i for i, w in enumerate(words) if Path(w).name in ("diehl_cook", "diehl_cook.py"))
    argv = [w for w in words[first + 1:] if w != "--plot"]
    args = parse_args(argv + ["--threads", str(threads), "--seed", str(seed)]
                                 + (["--build-dir", build_dir] if build_dir else []))
    net = build_network(args)
    stored = {k: v for k, v in rec.config["network"].items() if k in INFERENCE_SETTINGS}
    now = {k: v for k, v in net.config().items() if k in INFERENCE_SETTINGS}
    differences = config_differences(stored, json.loads(json.dumps(now, default=str)))
    if differences:
        raise ExperimentError(f"{path}: this version builds another network than the run's:\n  "
                              + "\n  ".join(differences))
    net.weights = np.asarray(rec["layers/exc/weights"], dtype=np.float64)
    net.theta = np.asarray(rec["layers/exc/theta"], dtype=np.float64)
    return net, rec


def load_data(args):
    """(x_train, y_train, x_test, y_test): the training images used, and the evaluation images
    (the MNIST test set, or with --validation the last N training images)."""
    from brainsnn.io.datasets import load_mnist

    if args.validation:
        x, y = load_mnist("train", data_dir=args.data)
        x_test = x[60000 - args.validation:][:args.test_images]
        y_test = y[60000 - args.validation:][:args.test_images]
        x_train, y_train = x[:max(args.train_images, args.assign_images)], \
            y[:max(args.train_images, args.assign_images)]
    else:
        x_train, y_train = load_mnist("train", data_dir=args.data,
                                      n=max(args.train_images, args.assign_images))
        x_test, y_test = load_mnist("test", data_dir=args.data, n=args.test_images)
    return x_train, y_train, x_test, y_test


def save_state(rec, net, block):
    """The training checkpoint: the network's state and the running-accuracy block."""
    import numpy as np

    for key, value in net.get_state().items():
        rec.set(f"checkpoint/{key}", np.asarray(value))
    rec.set("checkpoint/block_counts", np.asarray(block["counts"], dtype=np.int32).reshape(-1, net.n_neurons))
    rec.set("checkpoint/block_labels", np.asarray(block["labels"], dtype=np.int64))
    rec.set("checkpoint/running_assignments", np.asarray(block["assignments"], dtype=np.int64))
    if block["train_spikes"] is not None:
        rec.set("checkpoint/train_spikes", np.asarray(block["train_spikes"], dtype=np.int64))
    rec.set("checkpoint/phase", block["phase"])


def load_state(rec, net):
    import numpy as np

    state = {k: rec[f"checkpoint/{k}"] for k in ("weights", "theta", "v_exc", "v_inh", "position",
                                               "passes", "train_runs", "pending",
                                               "images_presented")}
    net.set_state(state)
    # checkpoints written before 0.2.3 have no training spike counts
    train_spikes = (np.asarray(rec["checkpoint/train_spikes"], dtype=np.int64)
                    if "checkpoint/train_spikes" in rec else None)
    return {"counts": list(rec["checkpoint/block_counts"]), "labels": list(rec["checkpoint/block_labels"]),
            "assignments": rec["checkpoint/running_assignments"], "phase": str(rec["checkpoint/phase"]),
            "train_spikes": train_spikes}


def new_block(n_neurons):
    """The protocol's training bookkeeping at the start of a run: the running-accuracy block
    and each neuron's training spikes."""
    import numpy as np

    return {"counts": [], "labels": [], "assignments": -np.ones(n_neurons, dtype=np.int64),
            "phase": "train", "train_spikes": np.zeros(n_neurons, dtype=np.int64)}


UNTRAINED_WARNING_FRACTION = 0.1


def record_learning(rec, correlation, train_spikes=None):
    """Write how much each excitatory neuron learned: its correlation with its initial
    weights and (where counted) its spikes in the training pass; warn where at least
    :data:`UNTRAINED_WARNING_FRACTION` of the layer is still untrained. Returns the number
    of untrained neurons."""
    import numpy as np

    from brainsnn.brian.wta import UNTRAINED_CORRELATION

    correlation = np.asarray(correlation, dtype=np.float64)
    untrained = int(np.sum(correlation > UNTRAINED_CORRELATION))
    rec.set("layers/exc/initial_weight_correlation", correlation, units="1",
            description="Pearson correlation of each neuron's input weights with its random "
                        f"initial ones (above {UNTRAINED_CORRELATION}: not learned)")
    rec.set("metrics/neurons_untrained", untrained,
            description=f"excitatory neurons whose weights correlate above "
                        f"{UNTRAINED_CORRELATION} with their random initial ones")
    if train_spikes is not None:
        rec.set("layers/exc/train_spikes", np.asarray(train_spikes, dtype=np.int64), units="1",
                description="spikes of each excitatory neuron during the training pass "
                            "(re-presentations included)")
    n = len(correlation)
    message = (f"{untrained:,} of {n:,} excitatory neurons ({100 * untrained / n:.0f} %) are "
               "still near their random initial weights")
    if untrained >= UNTRAINED_WARNING_FRACTION * n:
        log.warning(f"{message}: they have not learned a receptive field and at test they "
                    "only add noise. A larger --theta-plus spreads the wins over more neurons; "
                    "under the triplet rule a neuron that answers with single spikes learns "
                    "nothing, and --rule pair, whose every post spike potentiates, trained all "
                    "6,400 neurons of a one-pass run (docs/stdp.md)")
    else:
        log.info(message)
    return untrained


def spikes_per_answer(counts):
    """Each neuron's mean spike count over the images it answers (fires at least once in);
    0 for a neuron that never fires. ``counts``: (n_images, N)."""
    import numpy as np

    counts = np.asarray(counts)
    answered = np.count_nonzero(counts, axis=0)
    return counts.sum(axis=0) / np.maximum(answered, 1)


def record_answers(rec, counts_test):
    """Write ``layers/exc/spikes_per_answer`` of the test counts and, where the run counted
    untrained neurons, log how they answer against the learned ones."""
    import numpy as np

    from brainsnn.brian.wta import UNTRAINED_CORRELATION

    per_answer = spikes_per_answer(counts_test)
    rec.set("layers/exc/spikes_per_answer", per_answer, units="1",
            description="mean spikes of each excitatory neuron over the test images it fires "
                        "in (0: never fires); near 1: single spikes, from which the triplet "
                        "rule learns nothing")
    if "layers/exc/initial_weight_correlation" not in rec:
        return
    untrained = np.asarray(rec["layers/exc/initial_weight_correlation"]) > UNTRAINED_CORRELATION
    firing = per_answer > 0
    if np.any(untrained & firing) and np.any(~untrained & firing):
        log.info(f"spikes per answered test image: untrained neurons "
                 f"{np.mean(per_answer[untrained & firing]):.2f}, learned neurons "
                 f"{np.mean(per_answer[~untrained & firing]):.2f}")


class SilentNetwork(Exception):
    """Training stopped: --max-silent-chunks chunks in a row without any spike."""


def inference_device(args) -> str:
    """The torch device of --inference torch: --inference-device, else cuda where there is
    one, else cpu."""
    import torch

    return args.inference_device or ("cuda" if torch.cuda.is_available() else "cpu")


def inference_engine(args) -> str:
    """``brian2`` or ``torch``: --inference, with ``auto`` the torch engine only where it
    runs on a CUDA device (on a CPU Brian2's compiled chunks are faster; docs/performance.md)."""
    if args.inference != "auto":
        return args.inference
    return "torch" if inference_device(args).startswith("cuda") else "brian2"


def config_of(args, net, n_test):
    return {"scale": args.scale, "neurons": args.neurons, "train_images": args.train_images,
            "assign_images": args.assign_images, "test_images": n_test,
            "validation": args.validation,
            "evaluation_set": (f"validation: MNIST training images {60000 - args.validation}"
                               f"..{60000 - args.validation + n_test - 1}"
                               if args.validation else "MNIST test set"),
            "eval_every": args.eval_every, "rule": args.rule, "nu_pre": args.nu_pre,
            "nu_post": args.nu_post, "eta_final": args.eta_final, "mu": args.mu,
            "x_tar": args.x_tar, "vote": args.vote,
            "min_spikes": args.min_spikes,
            "chunk_size": args.chunk_size,
            "brian_device": args.brian_device, "neuron": args.neuron,
            "inhibitory_neuron": args.inhibitory_neuron, "network": net.config(),
            "threads": args.threads, "data": args.data}


def train(run, args, net, x_fit, y_fit, block):
    """Train on ``x_fit`` in chunks; a checkpoint after every chunk."""
    import warnings

    import numpy as np

    from brainsnn.brian.wta import SilentNetworkWarning
    from brainsnn.stdp.labels import accuracy, assign_labels, predict

    rec = run.rec
    bar = run.progress(args.train_images, "train", initial=min(net.position, args.train_images))

    def on_chunk(info):
        block["counts"].extend(info["counts"])
        if block["train_spikes"] is not None:
            block["train_spikes"] += info["neuron_spikes"]
        block["labels"].extend(y_fit[info["indices"]])
        done = info["position"] if info["passes"] == 0 else args.train_images
        rate = info["presented"] / info["seconds"]
        spikes = float(np.mean(np.sum(info["counts"], axis=1))) if len(info["counts"]) else 0.0
        rec.add_metric("train_images_per_second", rate, step=done)
        rec.add_metric("train_spikes_per_image", spikes, step=done)
        postfix = {"spikes/img": f"{spikes:.1f}", "re-present": len(net.pending)}
        while len(block["counts"]) >= args.eval_every:
            counts = np.asarray(block["counts"][:args.eval_every])
            labels = np.asarray(block["labels"][:args.eval_every])
            del block["counts"][:args.eval_every], block["labels"][:args.eval_every]
            if (block["assignments"] >= 0).any():
                acc = accuracy(predict(counts, block["assignments"]), labels)
                rec.add_metric("train_accuracy_running", acc, step=done)
                postfix["running accuracy"] = f"{100 * acc:.1f} %"
            block["assignments"], _ = assign_labels(counts, labels)
        bar.update(done - bar.n, **postfix)
        if info["chunk_spikes"] == 0:
            theta = 1e3 * net.theta
            log.warning(f"no excitatory spike in this whole training chunk ({info['presented']} "
                        f"presentations, {info['silent_chunks']} such chunk(s) in a row); theta "
                        f"{theta.min():.1f}..{theta.max():.1f} mV: the network has stopped learning")
        rec.set("timings/train", np.float64(rec.get("timings/train", 0.0) + info["seconds"]),
                units="s")
        save_state(rec, net, block)
        if args.max_silent_chunks and info["silent_chunks"] >= args.max_silent_chunks:
            run.rec.save(run.path, complete=False)
            raise SilentNetwork(
                f"{info['silent_chunks']} training chunks in a row without any excitatory spike: "
                f"the network is dead (theta up to {1e3 * net.theta.max():.1f} mV); training "
                f"stopped at image {done} (checkpoint: {run.path}; --max-silent-chunks 0 trains "
                "on regardless)")
        run.checkpoint()

    with bar, run.shielded(), warnings.catch_warnings():
        warnings.simplefilter("ignore", SilentNetworkWarning)   # on_chunk says it once
        net.partial_fit(x_fit, callback=on_chunk)


def evaluate(run, args, net, x_assign, y_assign, x_test, y_test):
    """Label the neurons on ``x_assign``, classify ``x_test``; write metrics and layers."""
    import numpy as np

    from brainsnn.experiments.run import percent
    from brainsnn.stdp.labels import VOTES, LabelAssignment, accuracy

    rec = run.rec
    engine, name = net, inference_engine(args)
    if name == "torch":
        from brainsnn.stdp.wta_inference import TorchWTAInference

        device = inference_device(args)
        engine = TorchWTAInference(net, batch_size=args.inference_batch, device=device)
        log.info(f"inference on the torch engine ({device}, {args.inference_batch} images at "
                 f"once, {engine.step_kind} step)")
    rec.set("inference/engine", name,
            description="engine of label assignment and test: brian2 or torch")

    def phase(name, x):
        bar = run.progress(len(x), name)

        def cb(info):
            bar.update(info["done"] - bar.n)
        with bar, rec.timer(name), run.shielded():
            return engine.transform(x, callback=cb)

    counts_assign = phase("assign", x_assign)
    clf = LabelAssignment(vote=args.vote).fit(counts_assign, y_assign)
    counts_test = phase("test", x_test)
    pred = clf.predict(counts_test)
    acc = accuracy(pred, y_test)
    assign_acc = clf.score(counts_assign, y_assign)
    what = "validation" if args.validation else "test"
    log.info(f"{what} accuracy {percent(acc)} on {len(y_test)} images (labels from "
             f"{len(y_assign)} training images, whose accuracy is {percent(assign_acc)}; "
             f"readout {args.vote})")
    for vote in VOTES:
        other = LabelAssignment(vote=vote).fit(counts_assign, y_assign)
        rec.set(f"metrics/votes/{vote}/test_accuracy", other.score(counts_test, y_test),
                units="1", description=f"accuracy on the evaluation set with the {vote} readout")
        rec.set(f"metrics/votes/{vote}/assign_accuracy", other.score(counts_assign, y_assign),
                units="1", description=f"accuracy on the labelling images, {vote} readout")
        if vote != args.vote:
            log.info(f"  {vote} readout: {what} accuracy "
                     f"{percent(float(rec[f'metrics/votes/{vote}/test_accuracy']))}")
    t_on = float(net.t_on)
    rec.set("layers/exc/weights", net.weights, layout="pre_post", units="1",
            description="input->excitatory STDP weights (n_inputs, N)")
    rec.set("layers/exc/theta", net.theta, units="V", description="adaptive threshold increase")
    rec.set("layers/exc/assignments", clf.assignments_, description="class label of each neuron (-1: silent)")
    rec.set("layers/exc/spike_rate", counts_test.mean(axis=0) / t_on, units="Hz",
            description="mean rate of each excitatory neuron during test presentations")
    rec.set("layers/exc/spikes_per_image", counts_test.sum(axis=1).astype(np.int32),
            description="excitatory spikes per test image (last presentation)")
    record_answers(rec, counts_test)
    rec.set("layers/input/spike_rate", x_test.reshape(len(x_test), -1).mean(axis=0)
            * float(net.f_max), units="Hz", description="mean Poisson input rate per pixel (test)")
    rec.set("metrics/test_accuracy", acc, units="1",
            description=f"accuracy on the evaluation set ({rec.config['evaluation_set']})")
    rec.set("metrics/assign_accuracy", assign_acc, units="1",
            description="accuracy on the training images used to assign labels")
    rec.set("metrics/confusion_matrix", clf.confusion_matrix(counts_test, y_test),
            description="rows: true class, columns: predicted class; last column: no prediction")
    rec.set("metrics/test_predictions", pred.astype(np.int8))
    rec.set("metrics/re_presentations", net.images_presented - args.train_images)
    rec.set("metrics/train_images_used", args.train_images,
            description="new training images of the pass (re-presentations not counted)")
    rec.set("metrics/assign_images_used", len(y_assign))
    rec.set("timings/train_images_per_second",
            args.train_images / max(float(rec.get("timings/train", 0)), 1e-9), units="1/s")
    return acc


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from brainsnn.brian import devices
    from brainsnn.experiments.run import Run

    devices.check_device(args.brian_device)
    if inference_engine(args) == "torch":   # before training, not after it
        from brainsnn.engine.devices import torch_device

        torch_device(inference_device(args), "--inference-device")
    net = build_network(args)
    with Run(args, config_of(args, net, args.test_images), name=run_name(args),
             device=args.brian_device, argv=argv, may_change=("train_images", "vote")) as run:
        x_train, y_train, x_test, y_test = load_data(args)
        block = new_block(args.neurons)
        if run.resumed:
            block = resume(run, args, net)
        log.info(f"Diehl & Cook STDP: N={args.neurons}, {args.train_images} training images, "
                 f"device {args.brian_device}, rule {args.rule}, seed {args.seed}")
        try:
            if args.brian_device != "runtime":
                log.info(f"compiling the {args.brian_device} project in {net.project_directory()} "
                         "(the first time takes a minute or two; reused afterwards) ...")
                with run.timer("compile") as t:
                    net.compile()
                log.info(f"compiled in {t.seconds:.1f} s")
            if block["phase"] == "train":
                try:
                    train(run, args, net, x_train[:args.train_images], y_train, block)
                except SilentNetwork as exc:
                    log.error(str(exc))
                    return 3
                block["phase"] = "evaluate"
                save_state(run.rec, net, block)
                run.checkpoint()
            log.info(f"training done: {net.images_presented} presentations "
                     f"({net.images_presented - args.train_images} re-presentations)")
            record_learning(run.rec, net.initial_weight_correlation(), block["train_spikes"])
            evaluate(run, args, net, x_train[:args.assign_images], y_train[:args.assign_images],
                     x_test, y_test)
            block["phase"] = "done"
            save_state(run.rec, net, block)
            out = run.finish()
        finally:
            net.close()
    if args.plot:
        from brainsnn.analysis.plotting import save_results_figure
        save_results_figure(out)
    return 0


def resume(run, args, net):
    """Continue from the checkpoint in ``run.rec``; a smaller or larger --train-images is
    accepted while training is not finished (never below the images done)."""
    import numpy as np

    from brainsnn.errors import ExperimentError

    rec = run.rec
    old_cfg = rec.config
    position = int(rec["checkpoint/position"])
    phase = str(rec["checkpoint/phase"])
    if args.train_images != old_cfg["train_images"]:
        if phase != "train":
            raise ExperimentError(f"cannot resume {run.path}: training is finished, with "
                                  f"{old_cfg['train_images']} images")
        if args.train_images < position:
            raise ExperimentError(f"cannot resume {run.path} with --train-images "
                                  f"{args.train_images}: {position} training images are done")
        log.info(f"resuming with --train-images {args.train_images} (the run was started "
                 f"with {old_cfg['train_images']})")
        rec.set("train_images_changed_on_resume",
                np.asarray([old_cfg["train_images"], args.train_images]),
                description="--train-images at the start and at the resume")
    if old_cfg.get("vote", "mean") != args.vote:
        log.info(f"resuming with --vote {args.vote} (the run was started with "
                 f"{old_cfg.get('vote', 'mean')})")
        rec.update_config(vote=args.vote)
    block = load_state(rec, net)
    log.info(f"resuming {run.path}: {net.position} training images done, phase {block['phase']}")
    return block
