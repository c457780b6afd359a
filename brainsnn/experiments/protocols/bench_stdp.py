"""Training speed of the Diehl & Cook STDP network: one long run per chunk vs the naive loop.

For each N, in the same run of this script:

* fast: brainsnn.brian.wta.DiehlCookNetwork on --brian-device (default cpp_standalone, 1 thread):
  compiled once, then one long run of K MNIST training images with learning on
  (350 ms + 150 ms per image, dt 0.5 ms); images per second of that run (Python overhead of
  writing the inputs and reading the results back included; compilation excluded and
  reported separately). The network is then built a second time in the same project folder:
  its "recompile" time shows that nothing is compiled again.
* naive: Brian2 driven the naive way on the runtime device (Cython): the same network
  (same equations, STDP rule, lateral inhibition), one ``run()`` for the 350 ms
  presentation and one for the 150 ms rest of every image, input rates set and weights
  normalised from Python between runs (as Diehl & Cook's original code does). Measured on a
  few images after one warm-up image (which pays the Cython compilation).

Prints both rates and their ratio; writes one HDF5 file (benchmark/n<N>/...). The projects
are compiled into a fresh folder under the cache (a cold compilation), removed at the end.

Example:
  brainsnn run bench_stdp --scale smoke
"""
from __future__ import annotations

import logging
import os
import time

from brainsnn.experiments import options, stdp_options

PROTOCOL = "bench_stdp"
SCALES = {
    "smoke": dict(neurons=[20], images=[20], naive_images=1),
    "small": dict(neurons=[100, 400], images=[300, 200], naive_images=2),
    "full": dict(neurons=[100, 400, 1600], images=[1000, 500, 200], naive_images=3),
}
log = logging.getLogger("brainsnn")


def build_parser():
    p = options.protocol_parser(PROTOCOL, __doc__, SCALES, default_scale="full",
                                datasets=("mnist",), brian_device="cpp_standalone",
                                torch_device=False, images=False)
    p.add_argument("--neurons", type=int, nargs="+", default=None, help="the N to measure")
    p.add_argument("--images", type=int, nargs="+", default=None,
                   help="images of the fast run, one number per N (or one for all)")
    p.add_argument("--naive-images", type=int, default=None,
                   help="images of the naive loop (after one warm-up image)")
    p.add_argument("--skip-naive", action="store_true", help="measure the fast path only")
    p.add_argument("--rule", default="triplet", choices=["diehl_cook", "triplet", "pair"],
                   help="STDP rule of both paths (default triplet, the diehl_cook protocol's "
                        "default; diehl_cook is the power-law rule)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = options.parse(p, SCALES, argv)
    stdp_options.refuse_resume(p, args)
    for n in args.neurons:
        options.check_count(p, "--neurons", n)
    if len(args.images) == 1:
        args.images = args.images * len(args.neurons)
    if len(args.images) != len(args.neurons):
        p.error(f"--images needs one number per N ({len(args.neurons)}) or one for all, "
                f"got {len(args.images)}")
    options.check_count(p, "--naive-images", args.naive_images)
    for k in args.images:
        options.check_count(p, "--images", k, 60000 - args.naive_images - 1,
                            "MNIST training images, the naive loop's included")
    return args


def _build_and_run(n, images, args, directory):
    """Build (compile, or reuse the compiled project in ``directory``) and run ``images`` with
    learning on: (build seconds, run seconds, CPU seconds of the standalone program)."""
    from brainsnn.brian.wta import DiehlCookNetwork

    net = DiehlCookNetwork(n, rule=bench_rule(args), device=args.brian_device,
                           chunk_size=len(images), seed=args.seed, min_spikes=0,
                           threads=args.threads, directory=directory)
    t0 = time.perf_counter()
    net.compile()
    build_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), _child_cpu()
    net.partial_fit(images)
    run_s, cpu_s = time.perf_counter() - t0, _child_cpu() - c0
    net.close()
    return build_s, run_s, cpu_s


def fast_rate(n, images, args, build_root):
    """Compile, time one long run of ``images`` with learning on; then build again."""
    directory = os.path.join(build_root, f"dc{n}_{len(images)}")
    compile_s, run_s, cpu_s = _build_and_run(n, images, args, directory)
    recompile_s, run2_s, cpu2_s = _build_and_run(n, images, args, directory)
    out = {"compile_s": compile_s, "recompile_s": recompile_s, "run_s": run_s,
           "run2_s": run2_s, "images": len(images),
           "images_per_second": len(images) / min(run_s, run2_s)}
    if args.brian_device != "runtime":  # the simulation runs in a child process (./main)
        out["cpu_s"] = min(cpu_s, cpu2_s)
        out["images_per_cpu_second"] = len(images) / out["cpu_s"]
    return out


def bench_rule(args):
    """The STDP rule of both paths: ``--rule`` with the protocol's learning rates."""
    from brainsnn.brian.defaults import NU_POST  # the diehl_cook protocol's learning rates
    from brainsnn.brian.plasticity import make_rule

    return make_rule(args.rule, nu_post=NU_POST[args.rule], traces="neuron")


def _child_cpu():
    """CPU seconds (user + system) of finished child processes (the standalone program)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def naive_rate(n, images, args):
    """Diehl & Cook's original way: one run() per presentation and rest, on runtime."""
    import brian2 as b2
    import numpy as np

    from brainsnn.brian import devices
    from brainsnn.models import DIEHL_COOK_EXCITATORY, DIEHL_COOK_INHIBITORY
    from brainsnn.brian.wta import stable_neuron_model

    devices.select_device("runtime")
    b2.defaultclock.dt = 0.5 * b2.ms
    b2.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n_in = 784
    rule = bench_rule(args)  # the same rule and traces as the fast path
    inputs = b2.NeuronGroup(n_in, "rates : Hz\n" + rule.pre_equations,
                            threshold="rates > 0*Hz and rand() < rates * dt",
                            reset=rule.pre_reset, method="exact",
                            namespace=dict(rule.trace_parameters), name="inputs")
    # the membranes integrated as the fast path integrates them (DiehlCookNetwork's default)
    exc = rule.post_neuron(stable_neuron_model(DIEHL_COOK_EXCITATORY)).neuron_group(n, name="exc")
    inh = stable_neuron_model(DIEHL_COOK_INHIBITORY).neuron_group(n, name="inh")
    syn = rule.synapses(inputs, exc, name="input_exc")
    syn.connect(i=np.repeat(np.arange(n_in), n), j=np.tile(np.arange(n), n_in))
    syn.w = (0.003 + 0.3 * rng.random(n_in * n))
    ei = b2.Synapses(exc, inh, on_pre="ge_post += 10.4", name="exc_inh")
    ei.connect(i=np.arange(n), j=np.arange(n))
    src, tgt = np.nonzero(~np.eye(n, dtype=bool))
    ie = b2.Synapses(inh, exc, on_pre="gi_post += 17.0", name="inh_exc")
    ie.connect(i=src, j=tgt)
    mon = b2.SpikeMonitor(exc, name="exc_spikes")
    net = b2.Network(inputs, exc, inh, syn, ei, ie, mon)
    pixels = images.reshape(len(images), -1)
    times = []
    cpu = []
    for k, image in enumerate(pixels):
        t0, c0 = time.perf_counter(), time.process_time()
        w = np.array(syn.w[:]).reshape(n_in, n)
        syn.w = (w * (78.0 / w.sum(axis=0))).ravel()
        exc.plastic = 1
        inputs.rates = image * 63.75 * b2.Hz
        net.run(350 * b2.ms, namespace={})
        inputs.rates = 0 * b2.Hz
        net.run(150 * b2.ms, namespace={})
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        log.info(f"    naive N={n} image {k}: {times[-1]:.2f} s"
                 f"{' (warm-up, compiles)' if k == 0 else ''}")
    devices._reset_brian2()
    measured = times[1:] if len(times) > 1 else times
    measured_cpu = cpu[1:] if len(cpu) > 1 else cpu
    return {"images": len(measured), "warmup_s": times[0], "seconds": float(np.sum(measured)),
            "images_per_second": len(measured) / float(np.sum(measured)),
            "cpu_s": float(np.sum(measured_cpu)),
            "images_per_cpu_second": len(measured) / float(np.sum(measured_cpu))}


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import tempfile

    import numpy as np

    from brainsnn import paths
    from brainsnn.brian import devices
    from brainsnn.experiments.run import Run
    from brainsnn.io.datasets import load_mnist

    devices.check_device(args.brian_device)
    x, _ = load_mnist("train", data_dir=args.data, n=max(args.images) + args.naive_images + 1)
    config = {k: v for k, v in vars(args).items() if k != "protocol"}
    with Run(args, config, name=f"{PROTOCOL}_{args.scale}_seed{args.seed}",
             device=args.brian_device, argv=argv) as run:
        rec = run.rec
        build_base = paths.cache_dir() / "standalone"
        build_base.mkdir(parents=True, exist_ok=True)
        rows = []
        with tempfile.TemporaryDirectory(prefix="bench_stdp_", dir=build_base) as build_root:
            for n, k in zip(args.neurons, args.images):
                cold = "" if args.brian_device == "runtime" else \
                    " (compiled first, from scratch: a minute or two)"
                log.info(f"N={n}: fast path on {args.brian_device}, {k} images in one run{cold} ...")
                with run.shielded():
                    fast = fast_rate(n, x[:k], args, build_root)
                log.info(f"    compile {fast['compile_s']:.1f} s, second build "
                         f"{fast['recompile_s']:.1f} s, {fast['images_per_second']:.1f} images/s")
                for key, value in fast.items():
                    rec.set(f"benchmark/n{n}/fast/{key}", value)
                naive = None
                if not args.skip_naive:
                    log.info(f"N={n}: naive loop on runtime, {args.naive_images} images ...")
                    with run.shielded():
                        naive = naive_rate(n, x[:args.naive_images + 1], args)
                    for key, value in naive.items():
                        rec.set(f"benchmark/n{n}/naive/{key}", value)
                    rec.set(f"benchmark/n{n}/speedup",
                            fast["images_per_second"] / naive["images_per_second"])
                rows.append((n, fast, naive))
                if run.poll_interrupt():
                    log.warning(f"stopped after N={n}: the benchmark keeps no checkpoint")
                    raise KeyboardInterrupt
        report(rec, rows)
        rec.set("benchmark/neurons", np.asarray(args.neurons))
        rec.set("benchmark/fast_images_per_second",
                np.asarray([f["images_per_second"] for _, f, _ in rows]), units="1/s")
        if not args.skip_naive:
            rec.set("benchmark/naive_images_per_second",
                    np.asarray([nv["images_per_second"] for _, _, nv in rows]), units="1/s")
        rec.set("machine/load_average_1min", os.getloadavg()[0],
                description="1-min load average at the end (the machine is shared)")
        run.finish()
    return 0


def report(rec, rows):
    """Log the table of rates (wall clock, and per CPU second where the fast path ran in a
    child process); store the CPU-time speed-ups."""
    log.info(f"wall clock (1-min load average now {os.getloadavg()[0]:.1f} on "
             f"{os.cpu_count()} cores; the machine may be shared):")
    log.info("   N   fast img/s   naive img/s   speed-up   compile s   second build s")
    for n, fast, naive in rows:
        nr = f"{naive['images_per_second']:11.2f}" if naive else "          -"
        sp = f"{fast['images_per_second'] / naive['images_per_second']:9.1f}x" if naive else "         -"
        log.info(f"{n:5d} {fast['images_per_second']:11.1f}  {nr}  {sp}  {fast['compile_s']:10.1f}"
                 f"  {fast['recompile_s']:14.1f}")
    if not all("images_per_cpu_second" in f for _, f, _ in rows):
        return
    log.info("per CPU second of the simulating process (independent of other load):")
    log.info("   N   fast img/cpu-s   naive img/cpu-s   speed-up")
    for n, fast, naive in rows:
        nr = f"{naive['images_per_cpu_second']:15.2f}" if naive else "              -"
        sp = (f"{fast['images_per_cpu_second'] / naive['images_per_cpu_second']:9.1f}x"
              if naive else "        -")
        log.info(f"{n:5d} {fast['images_per_cpu_second']:15.1f}  {nr}  {sp}")
        if naive:
            rec.set(f"benchmark/n{n}/speedup_cpu",
                    fast["images_per_cpu_second"] / naive["images_per_cpu_second"])
