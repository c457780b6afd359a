"""The convolutional STDP pipeline shared by the STDP protocols (conv_stdp, backres_stdp):
load and preprocess the images, build the stack, learn its kernels, extract spike-count
features (with a content-keyed cache), train readouts, record accuracy and energy.

Functions take the protocol's parsed options (``args``) and, where they write results or
may be interrupted, its :class:`~brainsnn.experiments.run.Run` (``run.rec`` is the record).
Progress goes to the ``brainsnn`` logger and to progress bars.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from brainsnn import paths
from brainsnn.errors import ExperimentError
from brainsnn.experiments.options import split_name
from brainsnn.experiments.run import Progress, RunInterrupted, percent

log = logging.getLogger("brainsnn")

#: Feature-extraction settings (the frozen stack on the torch engine, learning off, thresholds
#: frozen at the learned theta), chosen by measurement on training/validation images of
#: MNIST (``--validation``), never on the test set; see the conv_stdp protocol.
EXTRACTION = dict(t_on=50.0, f_in=1000.0, inhibition="on")


def load_data(args):
    """(x_train, y_train, x_test, y_test), images (n, C, H, W) in [0, 1]; with
    ``--validation N`` the last N of the first ``--train-images`` + N training images take
    the test set's place."""
    from brainsnn.io.datasets import load_image_data

    return load_image_data(args.dataset, args.train_images, args.test_images, data_dir=args.data,
                           validation=getattr(args, "validation", 0))


def setup_torch(args):
    """One-thread-per ``--threads`` torch, and the check that ``--torch-device`` exists here
    (a CUDA device needs a GPU: :class:`~brainsnn.errors.DeviceError` otherwise)."""
    import torch

    from brainsnn.engine.devices import torch_device

    torch.set_num_threads(args.threads)
    torch_device(args.torch_device, "--torch-device")
    return torch


def set_up(args):
    """Check the devices (``--torch-device``, ``--brian-device``) and the user neuron models,
    then load the images: ``(models, (x_train, y_train, x_test, y_test))``."""
    from brainsnn.brian import devices

    setup_torch(args)
    devices.check_device(args.brian_device)
    models = neuron_models(args)
    return models, load_data(args)


def neuron_models(args) -> dict:
    """The STDP layers' neuron models given with ``--neuron`` / ``--inhibitory-neuron``, as
    keyword arguments of :class:`~brainsnn.stdp.layer.ConvSTDPLayer` (none given: {})."""
    from brainsnn.experiments.user_models import load_neuron_model

    models = {}
    if getattr(args, "neuron", None):
        models["exc_model"] = load_neuron_model(args.neuron)
    if getattr(args, "inhibitory_neuron", None):
        models["inh_model"] = load_neuron_model(args.inhibitory_neuron)
    return models


def preprocessor(args):
    """The unfitted preprocessor ``--preprocess`` names (None: ``none``); its
    ``output_shape`` gives the stack's input shape before any image is transformed."""
    from brainsnn.stdp.preprocessing import make_preprocessor

    return make_preprocessor(getattr(args, "preprocess", "none"), seed=args.seed,
                             eps=getattr(args, "whiten_eps", 1e-2))


def input_shape(pre, x):
    """(C, H, W) of images ``x`` after the preprocessor ``pre`` (None: as they are)."""
    return tuple(x.shape[1:]) if pre is None else tuple(pre.output_shape(x.shape[1:]))


def preprocess(args, pre, x_train, x_test):
    """Fit ``pre`` (:func:`preprocessor`; None: nothing to do) on the training images only
    and apply it to both sets: returns ``(x_train, x_test)``."""
    if pre is None:
        return x_train, x_test
    t0 = time.perf_counter()
    pre.fit(x_train)
    x_train, x_test = pre.transform(x_train), pre.transform(x_test)
    log.info(f"preprocessing {args.preprocess}: {x_train.shape[1:]} per image "
             f"({time.perf_counter() - t0:.1f} s)")
    return x_train, x_test


def add_mirrored(x_raw, y, x, pre):
    """Training set with each image's left-right mirror appended: ``(x', y')``.

    ``x_raw`` are the images before preprocessing, ``x`` after it; the mirrors go through
    the same fitted ``pre`` (None: no preprocessing), so ``x'[n + i]`` is ``x[i]``'s scene
    seen in a mirror and ``y'[n + i] == y[i]``.
    """
    mirrored = np.ascontiguousarray(x_raw[..., ::-1])
    if pre is not None:
        mirrored = pre.transform(mirrored)
    return (np.concatenate([x, mirrored.astype(x.dtype, copy=False)]),
            np.concatenate([y, y]))


def record_preprocessing(rec, pre):
    """Store a fitted preprocessor's parameters under ``preprocessing/``."""
    if pre is None:
        return
    rec.set("preprocessing/filters", pre.filters_, units="1 / intensity",
            description="convolution filters (out_channels, in_channels, p, p)", **pre.config())
    rec.set("preprocessing/bias", pre.bias_, units="1")
    rec.set("preprocessing/scale", pre.scale_, units="1",
            description="whitened values are divided by this, then split into ON (first "
                        "half of the channels) and OFF and clipped to [0, 1]")


def build_stack(args, input_shape, models=None, layer_specs=None, backres_R=None):
    """The conv STDP stack the options describe (``layer_specs``: list of dicts to override
    the layers; ``models``: :func:`neuron_models`). Nothing is compiled here."""
    import brian2 as b2
    from brainsnn.stdp.backres import BackResSTDPBlock
    from brainsnn.stdp.layer import ConvSTDPLayer
    from brainsnn.stdp.stack import SpikingConvStack

    models = models or {}
    t_on = args.t_on * b2.ms
    stages, channels = [], input_shape[0]
    specs = layer_specs or [dict(n_kernels=k, kernel_size=ks, pool=pl, n_patches=npch,
                                 w_per_input=wpi)
                            for k, ks, pl, npch, wpi in zip(args.kernels, args.kernel_sizes,
                                                            args.pools, args.patches,
                                                            args.w_per_input)]
    for li, spec in enumerate(specs):
        name = spec.pop("name", f"conv{li + 1}")
        layer = ConvSTDPLayer(in_channels=channels, pool_kind=args.pool_kind, t_on=t_on,
                              t_off=args.t_off * b2.ms, f_max=args.f_in * b2.Hz,
                              device=args.brian_device, chunk_size=args.chunk_size,
                              seed=args.seed + 101 * li, name=name, threads=args.threads,
                              **models, **spec)
        stages.append(layer)
        channels = layer.n_kernels
    R = args.backres_R if backres_R is None else backres_R
    if R:
        k = stages[-1].n_kernels
        blk = ConvSTDPLayer(k, 3, k, padding=1, pool=1, n_patches=args.patches[-1], t_on=t_on,
                            t_off=args.t_off * b2.ms, device=args.brian_device,
                            chunk_size=args.chunk_size, seed=args.seed + 977, name="backres",
                            threads=args.threads, **models)
        stages.append(BackResSTDPBlock(blk, R, form=getattr(args, "backres_form", "reentry")))
    stack = SpikingConvStack(stages, input_shape, t_on=extract_t_on(args) * b2.ms,
                             f_in=extract_f_in(args) * b2.Hz, torch_device=args.torch_device,
                             lateral_inhibition=extract_inhibition(args),
                             compile=extract_compile(args),
                             batch_size=args.batch_size, seed=args.seed + 12345)
    set_build_dirs(args, stack)
    return stack


def set_build_dirs(args, stack):
    """Give every layer of ``stack`` without one a standalone project folder keyed by what
    is compiled into it (its settings as the stack runs it, but the seed; the threads), under
    ``--build-dir`` or the cache (``<cache>/standalone``): runs of the same layer reuse the
    compiled project, other layers never share it."""
    from brainsnn.brian.wta import config_hash
    from brainsnn.stdp.backres import stage_layers

    base = Path(args.build_dir) if getattr(args, "build_dir", None) else \
        paths.cache_dir() / "standalone"
    for stage, seen in zip(stack.stages, stack.config()["stages"]):
        for layer, cfg in zip(stage_layers(stage), seen.get("layers", [seen])):
            if layer.directory is None:
                key = {k: cfg[k] for k in layer.config() if k not in ("seed", "name")}
                key["threads"] = layer.threads
                layer.directory = str(base / f"conv_stdp_{layer.name}_{config_hash(key)}")


def extract_compile(args):
    """torch.compile in extraction: the scale's choice (not for smoke: compiling costs more
    than it saves on a few hundred images), never with --no-compile."""
    return bool(getattr(args, "compile", True)) and not getattr(args, "no_compile", False)


def extract_t_on(args):
    v = getattr(args, "extract_t_on", None)
    return float(EXTRACTION["t_on"] if v is None else v)


def extract_f_in(args):
    v = getattr(args, "extract_f_in", None)
    return float(EXTRACTION["f_in"] if v is None else v)


def extract_inhibition(args):
    v = getattr(args, "extract_inhibition", None)
    return (EXTRACTION["inhibition"] if v is None else v) == "on"


def stop_if_asked(run, resumable=False):
    """Between two chunks of work: after a Ctrl-C, stop. ``resumable``: the run's checkpoint
    is saved and continues it (:class:`RunInterrupted`, exit 130 with the resume command);
    else the run is abandoned (``KeyboardInterrupt``)."""
    if run is None or not run.poll_interrupt():
        return
    if resumable:
        raise RunInterrupted(run.resume_command())
    log.warning("stopped: this phase keeps no checkpoint; nothing was saved")
    raise KeyboardInterrupt


def patches_to_learn(stage) -> int:
    """Patches a stage's learning presents (what :meth:`SpikingConvStack.fit` draws): a
    layer's ``n_patches``; a shared BackRes block's share of them over its passes (pass r
    learns on r inputs); separate layers each their own."""
    from brainsnn.stdp.backres import BackResSTDPBlock

    if not isinstance(stage, BackResSTDPBlock):
        return stage.n_patches
    if not stage.shared:
        return sum(layer.n_patches for layer in stage.layers)
    per_stage = max(1, stage.layer.n_patches // stage.R)
    return sum(r * max(1, per_stage // r) for r in range(1, stage.R + 1))


def learn(run, stack, x, start=0):
    """Learn the kernels of the stack's stages from ``start`` on images ``x``, with a
    progress bar over the patches (a Ctrl-C stops after the current chunk)."""
    from brainsnn.stdp.backres import stage_layers

    layers = [lay for stage in stack.stages[start:] for lay in stage_layers(stage)]
    device = layers[0].device
    if device != "runtime":
        log.info(f"STDP learning on {device}: each layer's project is compiled first into "
                 f"{Path(layers[0].directory).parent} (a minute or two per layer the first "
                 "time; reused afterwards) ...")
    bar = Progress(sum(patches_to_learn(s) for s in stack.stages[start:]), "STDP learning",
                   unit="patch")

    def on_chunk(info):
        name = next((lay.name for lay in layers
                     if getattr(lay, "network_", None) is info["network"]), "?")
        bar.update(len(info["indices"]), layer=name)
        stop_if_asked(run)

    t0 = time.perf_counter()
    with bar, run.shielded():
        stack.fit(x, patch_callback=on_chunk, start=start)
    learned = ", ".join(f"{lay.name} {lay.n_kernels} kernels" for lay in layers)
    log.info(f"STDP learning done: {learned} on {len(x)} images "
             f"({time.perf_counter() - t0:.1f} s)")


def record_kernels(rec, stack, prefix=""):
    """Store every layer's kernels, thresholds and learning time under ``prefix``."""
    from brainsnn.stdp.backres import stage_layers

    for stage in stack.stages:
        for layer in stage_layers(stage):
            rec.set(f"{prefix}layers/{layer.name}/kernels", layer.kernels, units="1",
                    R=int(getattr(stage, "R", 1)) if getattr(stage, "shared", False) else 1)
            rec.set(f"{prefix}layers/{layer.name}/theta", layer.theta, units="V",
                    description="adaptive threshold offset per kernel (frozen in extraction)")
            rec.set(f"{prefix}timings/stdp_{layer.name}", float(layer.timings["train"]),
                    units="s", patches=int(layer.patches_presented),
                    compile_s=float(layer.timings["compile"]))


def restore_kernels(rec, stack, prefix=""):
    """Set every layer's kernels and thresholds from those stored by :func:`record_kernels`."""
    from brainsnn.stdp.backres import stage_layers

    for stage in stack.stages:
        for layer in stage_layers(stage):
            layer.set_kernels(rec[f"{prefix}layers/{layer.name}/kernels"],
                              theta=rec[f"{prefix}layers/{layer.name}/theta"])


def sum_pool(features, window):
    """Sum-pool (n, K, H, W) counts over ``window`` x ``window`` cells (floor)."""
    if window <= 1:
        return features
    n, k, h, w = features.shape
    h2, w2 = h // window, w // window
    f = features[:, :, :h2 * window, :w2 * window].reshape(n, k, h2, window, w2, window)
    return f.sum(axis=(3, 5))


def features_key(stack, x):
    """Content key of the features of ``x`` under ``stack``: a hash of the stack's settings,
    every layer's kernels and thresholds, the torch device and version, and the images."""
    import hashlib
    import json

    import torch

    from brainsnn.stdp.backres import stage_layers

    h = hashlib.sha256()
    h.update(json.dumps(stack.config(), sort_keys=True, default=str).encode())
    h.update(f"{torch.device(stack.torch_device).type}|{torch.__version__}|{stack.dtype}".encode())
    for stage in stack.stages:
        for layer in stage_layers(stage):
            h.update(np.ascontiguousarray(layer.kernels, dtype=np.float64).tobytes())
            h.update(np.ascontiguousarray(layer.theta, dtype=np.float64).tobytes())
    xa = np.ascontiguousarray(x, dtype=np.float32)
    h.update(repr(xa.shape).encode())
    h.update(xa.tobytes())
    return h.hexdigest()[:32]


def read_cached_features(path, stack, n_images):
    """``(result, seconds, True)`` from a features cache entry, or None (with a warning)
    where it cannot be read or does not hold ``n_images`` counts of every stage's shape."""
    import json
    import zipfile

    try:
        with np.load(path) as z:
            outs = [z[f"stage_output_{i}"] for i in range(int(z["n_stages"]))]
            meta = json.loads(str(z["meta"]))
        result = {"output": outs[-1], "stage_outputs": outs, "rates": meta["rates"]}
        seconds = float(meta["seconds"])
    except (OSError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile) as err:
        log.warning(f"features cache entry {path} cannot be read ({err}); simulating again")
        return None
    shapes = [(n_images, *shape) for shape in stack.shapes[1:]]
    if [o.shape for o in outs] != shapes:
        log.warning(f"features cache entry {path} holds counts of shapes "
                    f"{[o.shape for o in outs]}, expected {shapes}; simulating again")
        return None
    return result, seconds, True


def cached_run(stack, x, cache_dir, callback=None):
    """``stack.run(x)``, read from / written to ``cache_dir`` (None: no cache).

    Returns ``(result, seconds, cached)``: ``seconds`` is the simulation time of the run
    that produced the counts (the stored one when ``cached``). Files are written whole
    (to a temporary name, then renamed), so an interrupted run leaves no partial entry; an
    entry that cannot be read, or whose counts are not one row per image of every stage's
    shape, is simulated again and replaced (with a warning).
    """
    path = None
    if cache_dir:
        path = Path(cache_dir) / f"features_{features_key(stack, x)}.npz"
        if path.exists():
            cached = read_cached_features(path, stack, len(x))
            if cached is not None:
                return cached
    t0 = time.perf_counter()
    res = stack.run(x, callback=callback)
    seconds = time.perf_counter() - t0
    if path is not None:
        import json

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
        arrays = {f"stage_output_{i}": o for i, o in enumerate(res["stage_outputs"])}
        np.savez(tmp, n_stages=len(res["stage_outputs"]), **arrays,
                 meta=json.dumps({"rates": res["rates"], "seconds": seconds}))
        os.replace(tmp, path)
    return res, seconds, False


def extract(args, stack, x, what, run=None, resumable=False):
    """Spike-count features of images ``x`` (through ``--features-cache`` where given):
    ``(features (n, F), run result, simulation seconds)``; a progress bar per batch, and a
    Ctrl-C stops after the current batch (:func:`stop_if_asked`)."""
    bar = Progress(len(x), f"extract {what}")

    def cb(done, total, seconds):
        bar.update(done - bar.n)
        stop_if_asked(run, resumable)

    with bar:
        res, seconds, cached = cached_run(stack, x, getattr(args, "features_cache", None), cb)
    res["from_cache"] = cached
    if cached:
        log.info(f"extract {what}: {len(x)} images read from the features cache "
                 f"(simulated in {seconds:.0f} s when stored)")
    if args.features == "all":
        feats = np.concatenate([sum_pool(o, args.feature_pool).reshape(len(x), -1)
                                for o in res["stage_outputs"]], axis=1)
    else:
        feats = sum_pool(res["output"], args.feature_pool).reshape(len(x), -1)
    return feats, res, seconds


def extract_with_validation(args, stack, x_train, x_val, run=None, resumable=False):
    """Extract training and validation images in one run, in the training set's order, then
    split: the counts are those a run with ``--train-images`` n_train + n_val extracts (same
    Poisson draws, same features-cache entry), so settings chosen on the validation images
    carry over to the final run on all those training images. A preprocessor fitted on the
    training images (whitening) breaks this: it sees n_train images here, n_train + n_val
    there, so the inputs differ and the final run extracts again.

    Returns ``(f_train, f_val, res_train, res_val, s_train, s_val)``; the rates and the
    simulation time are those of the joint run (the times split in proportion to images)."""
    n = len(x_train)
    feats, res, seconds = extract(args, stack, np.concatenate([x_train, x_val]),
                                  "train+validation", run, resumable)
    res_val = dict(res, stage_outputs=[o[n:] for o in res["stage_outputs"]], output=res["output"][n:])
    res_train = dict(res, stage_outputs=[o[:n] for o in res["stage_outputs"]], output=res["output"][:n])
    share = n / max(len(feats), 1)
    return feats[:n], feats[n:], res_train, res_val, seconds * share, seconds * (1 - share)


def feature_map_shape(args, res):
    """(C, H, W) of the readout's features as maps (what the ``conv`` readout reads), or None
    where they are the counts of several stages of different sizes (only flat then)."""
    outs = res["stage_outputs"] if args.features == "all" else [res["output"]]
    if len(outs) != 1:
        return None
    return tuple(sum_pool(outs[0][:1], args.feature_pool).shape[1:])


def learn_and_extract(args, run, stack, x_train, x_test, split, prefix="", log_name="",
                      start=0, checkpoint=False):
    """Learn the STDP stack (stages from ``start``) on the first ``--stdp-images`` training
    images, then extract the features of ``x_train`` and ``x_test`` (the ``split``: 'test'
    or 'validation'); records kernels, thresholds, timings and spike rates under ``prefix``.

    ``checkpoint``: save a checkpoint once the kernels are learned (``checkpoint/phase`` =
    'learned'); a resumed run with such a checkpoint takes its kernels instead of learning,
    and a Ctrl-C during extraction exits with the resume command.
    Returns ``(f_train, f_test, map_shape, res_test)``."""
    rec = run.rec
    torch_device = str(stack.torch_device)
    if checkpoint and run.resumed and rec.get("checkpoint/phase") == "learned":
        restore_kernels(rec, stack, prefix)
        log.info(f"{log_name}resumed: kernels and thresholds learned before the interruption")
    else:
        learn(run, stack, x_train[:args.stdp_images], start=start)
        record_kernels(rec, stack, prefix)
        if checkpoint:
            rec.set("checkpoint/phase", "learned")
            run.checkpoint()
    compiling = "; torch.compile first compiles the step, about 20 s per layer" \
        if stack.compile else ""
    log.info(f"{log_name}extracting features ({stack.steps} steps per image, torch device "
             f"{torch_device}{compiling})")
    if split == "validation":
        f_train, f_test, res_train, res_test, s_train, s_test = extract_with_validation(
            args, stack, x_train, x_test, run, checkpoint)
    else:
        f_train, res_train, s_train = extract(args, stack, x_train, "train", run, checkpoint)
        f_test, res_test, s_test = extract(args, stack, x_test, split, run, checkpoint)
    ips = (len(x_train) + len(x_test)) / max(s_train + s_test, 1e-9)
    rec.set(f"{prefix}timings/extract", s_train + s_test, units="s")
    rec.set(f"{prefix}timings/extract_images_per_second", ips, units="1/s",
            torch_device=torch_device, steps=int(stack.steps),
            from_features_cache=bool(res_train["from_cache"] or res_test["from_cache"]),
            description="simulation time of the extraction; read from --features-cache when "
                        "from_features_cache (then the time of the run that stored them)")
    log.info(f"{log_name}features {f_train.shape[1]} per image; extraction {ips:.1f} img/s")
    for si, stage in enumerate(stack.stages):
        for p, rate in enumerate(res_test["rates"][si]):
            name = stage.name if len(res_test["rates"][si]) == 1 else stage.pass_name(p)
            rec.set(f"{prefix}layers/{name}/spike_rate", float(rate),
                    units="spikes per neuron per step", dt_ms=float(stack.dt) * 1e3,
                    steps=int(stack.steps),
                    images="train+validation" if split == "validation" else split)
    rec.set(f"{prefix}features/mean_count", float(f_test.mean()), units="spikes per feature per image")
    rec.set(f"{prefix}features/silent_fraction", float((f_test == 0).mean()), units="1")
    return f_train, f_test, feature_map_shape(args, res_test), res_test


def readout_augment(args, kind):
    """The AGDClassifier ``augment`` of readout ``kind``: --readout-augment for conv, else None."""
    value = getattr(args, "readout_augment", "none")
    return None if kind != "conv" or value == "none" else value


def pixel_features(args, x_train, x_test, log_name=""):
    """``--features pixels``: the intensities themselves (the control with no STDP stage)."""
    log.info(f"{log_name}features: the pixels, {int(np.prod(x_train.shape[1:]))} per image "
             f"(control: no STDP stage)")
    return (x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1),
            tuple(x_train.shape[1:]))


def run_pipeline(args, run, stack, x_train, y_train, x_test, y_test, prefix="", log_name="",
                 start=0, checkpoint=False):
    """Learn, extract, read out; write results under ``prefix`` of ``run.rec``. Returns the
    accuracy on the held-out images: the test set, or with ``--validation`` the validation
    images (keys ``metrics/validation_accuracy*`` then, and no test keys). ``start`` and
    ``checkpoint``: see :func:`learn_and_extract`."""
    from brainsnn.analysis.energy import E_MAC
    from brainsnn.stdp.readout import FeatureScaler, make_readout, stack_energy

    rec = run.rec
    torch_device = str(stack.torch_device)
    split = split_name(args)
    if args.features == "pixels":
        f_train, f_test, map_shape = pixel_features(args, x_train, x_test, log_name)
        res_test = None
    else:
        f_train, f_test, map_shape, res_test = learn_and_extract(
            args, run, stack, x_train, x_test, split, prefix, log_name, start, checkpoint)
    scaler = FeatureScaler().fit(f_train)
    z_train, z_test = scaler.transform(f_train), scaler.transform(f_test)
    rec.set(f"{prefix}features/scale", float(scaler.scale_), units="spikes",
            description="features (spike counts, or intensities with --features pixels) are "
                        "divided by this (99.5th percentile of the positive training values) "
                        "and clipped to 1 before the readout")

    acc, clf = None, None
    smoothing = getattr(args, "label_smoothing", 0.0)
    loss_options = {"label_smoothing": smoothing} if smoothing else None
    for kind in args.readout.split(","):
        if kind == "conv" and map_shape is None:
            raise ExperimentError("--readout conv reads one stage's feature maps; the stages "
                                  "here differ in size: give --features last")
        as_input = (lambda z: z.reshape(len(z), *map_shape)) if kind == "conv" else (lambda z: z)
        model = make_readout(kind, loss=args.loss, T=args.readout_T, epochs=args.epochs,
                             hidden=getattr(args, "hidden", 256), loss_options=loss_options,
                             channels=getattr(args, "readout_channels", 32),
                             augment=readout_augment(args, kind),
                             lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                             torch_device=torch_device, verbose=False)
        with rec.timer(f"{prefix}readout_{kind}"):
            model.fit(as_input(z_train), y_train)
        train_acc = model.score(as_input(z_train), y_train)
        test_acc = model.score(as_input(z_test), y_test)
        log.info(f"{log_name}readout {kind}/{args.loss}: train {percent(train_acc)}, "
                 f"{split} {percent(test_acc)}")
        rec.set(f"{prefix}metrics/{split}_accuracy_{kind}", test_acc, units="1", images=len(x_test),
                loss=args.loss)
        rec.set(f"{prefix}metrics/train_accuracy_{kind}", train_acc, units="1",
                images=len(x_train), loss=args.loss)
        for name, value in model.network_.state_dict().items():
            rec.set(f"{prefix}readouts/{kind}/{name}", value.detach().cpu().numpy(),
                    description="trained readout parameter (state_dict of its "
                                "brainsnn.engine.network.Network; input: features / features/scale, "
                                "clipped to 1)")
        for h in model.history_:
            rec.add_metric(f"{prefix}readout_{kind}_train_loss".replace("/", "_"), h["train_loss"],
                           step=h["epoch"])
        if acc is None:                       # the first readout named is the main one
            acc, clf, clf_input = test_acc, model, as_input
            rec.set(f"{prefix}metrics/{split}_accuracy", test_acc, units="1", images=len(x_test),
                    readout=kind, loss=args.loss)
            rec.set(f"{prefix}metrics/train_accuracy", train_acc, units="1", images=len(x_train),
                    readout=kind)
    rec.set(f"{prefix}metrics/n_parameters_stdp", 0 if res_test is None else int(stack.n_parameters))
    n_readout = sum(int(p.numel()) for p in clf.network_.parameters())
    rec.set(f"{prefix}metrics/n_parameters_readout", n_readout)
    # energy per image: STDP conv layers (AC per input spike) + readout
    energy = {} if res_test is None else stack_energy(stack, x_test, res_test)
    rep = clf.energy(clf_input(z_test[:min(len(z_test), 1000)]))
    total = 0.0
    for name, e in energy.items():
        rec.set(f"{prefix}energy/{name}", float(e["energy"]), units="J/image", kind="spiking",
                macs=int(e["macs"]), op_type="AC", operations=float(e["operations"]),
                input_spikes_per_neuron=float(e["input_spikes_per_neuron"]))
        total += e["energy"]
    ann = sum(e["macs"] * E_MAC for e in energy.values())
    for name, e in rep["layers"].items():
        rec.set(f"{prefix}energy/readout_{name}", float(e["energy"]), units="J/image",
                kind=e["kind"], macs=int(e["macs"]), op_type=e["op_type"],
                operations=float(e["operations"]))
        total += e["energy"]
    ann += rep["ann_total"]
    rec.set(f"{prefix}energy/total", float(total), units="J/image", ann_total=float(ann),
            ratio_to_ann=float(total / ann) if ann else float("nan"))
    log.info(f"{log_name}energy {total * 1e9:.2f} nJ/image (equivalent ANN {ann * 1e9:.2f} nJ)")
    return acc


def plot_kernels(path):
    """Figure of the learned kernels of each layer (from the results file alone), saved next
    to it as ``.png``; returns the figure's path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainsnn.analysis.plotting import kernel_grid
    from brainsnn.io.results import RunResults
    from brainsnn.stdp.preprocessing import on_minus_off

    rec = RunResults.load(path)
    names = [n for n in rec.children("layers") if rec.get(f"layers/{n}/kernels") is not None]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], names)):
        kernels, title = rec.get(f"layers/{name}/kernels"), f"{name} kernels"
        if i == 0 and rec.get("preprocessing/filters") is not None:
            kernels, title = on_minus_off(kernels), f"{name} kernels (ON - OFF)"
        kernel_grid(kernels, ax=ax, title=title)
    png = os.path.splitext(str(path))[0] + ".png"
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    log.info(f"wrote {png}")
    return png
