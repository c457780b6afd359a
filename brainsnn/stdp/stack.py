"""A stack of convolutional STDP stages (layers, BackRes blocks): learned layer by layer, then
run frozen on the torch engine, many images at once, to extract spike-count features."""
from __future__ import annotations

import time

import brian2 as b2
import numpy as np
import torch
import torch.nn.functional as F

from brainsnn.engine.devices import torch_device
from brainsnn.engine.neuron import TorchNeuron
from brainsnn.errors import ConvSTDPError
from brainsnn.params import Params
from brainsnn.stdp.backres import (BackResSTDPBlock, is_additive, pass_layer, stage_layer,
                                   stage_layers, stage_passes)
from brainsnn.stdp.frozen import CompiledStep, frozen_wta
from brainsnn.stdp.layer import ConvSTDPLayer, check_images, check_quantity, positive_count


def resting_potential(model):
    """Resting potential of a model in volts (its ``v_rest`` parameter)."""
    if "v_rest" not in model.parameters:
        raise ConvSTDPError(f"neuron model {model.name!r} needs a v_rest parameter (the "
                            "membrane potential every image starts from in extraction)")
    return float(model.parameters["v_rest"])


def _carried(neuron, state):
    """The state a step hands to the next: without the variables the step recomputes first
    (``not_refractory``, from ``lastspike``). Not writing that boolean tensor every step
    made compiled CPU extraction 1.7-2.1x faster (README "Status"); the spikes are the same."""
    if state is None:
        return None
    return {k: v for k, v in state.items() if k not in neuron.compiled.derived}


class _TorchConvWTA(CompiledStep):
    """One frozen conv WTA layer (one pass) on the torch engine.

    ``inhibition=False`` leaves lateral inhibition out (extraction option, see
    :class:`SpikingConvStack`): the inhibitory partners then have no effect on the excitatory
    neurons and are not simulated at all. ``compile=True`` runs the step through
    :func:`torch.compile` (the same operations fused; falls back to eager on failure).
    """

    def __init__(self, layer: ConvSTDPLayer, dtype, inhibition=True, compile=False):
        super().__init__()
        self.layer = layer
        self.inhibition = bool(inhibition)
        self.exc = TorchNeuron(layer.exc_model, dt=layer.dt)
        self.inh = TorchNeuron(layer.inh_model, dt=layer.dt)
        self.register_buffer("weight", torch.as_tensor(layer.kernels, dtype=dtype))
        self.register_buffer("theta", torch.as_tensor(layer.theta, dtype=dtype).view(1, -1, 1, 1))
        self._compile_step(compile)

    def initial_state(self, shape, device, dtype):
        """Every image starts at rest (v = v_rest), as after the rest period of learning."""
        exc = self.exc.initial_state(shape, device=device, dtype=dtype, plastic=0.0,
                                     theta=self.theta.to(device), v=resting_potential(self.layer.exc_model))
        inh = self.inh.initial_state(shape, device=device, dtype=dtype,
                                     v=resting_potential(self.layer.inh_model)) if self.inhibition else None
        return _carried(self.exc, exc), _carried(self.inh, inh)

    def _step(self, state, s_in):
        exc_state, inh_state = state
        lay = self.layer
        current = F.conv2d(s_in, self.weight, stride=lay.stride, padding=lay.padding)
        s_exc, exc_state = self.exc(exc_state, current)
        if self.inhibition:
            s_inh, inh_state = self.inh(inh_state, lay.w_exc_inh * s_exc)
            # inhibition of every other feature map at the same position (not of oneself)
            exc_state["gi"] = exc_state["gi"] + lay.w_inh_exc * (s_inh.sum(1, keepdim=True) - s_inh)
        return s_exc, (_carried(self.exc, exc_state), _carried(self.inh, inh_state))


def _step_settings(layer):
    """The layer's settings that a frozen step is built with (a new step when they change)."""
    return (layer.exc_model, layer.inh_model, float(layer.dt), float(layer.w_exc_inh),
            float(layer.w_inh_exc), layer.stride, layer.padding)


#: Images simulated together on the CPU in extraction (a batch is run chunk by chunk, so
#: that a chunk's state stays in the caches for all its steps; one size whatever the thread
#: count, so that a compiled step serves every count). Measured on one thread, 32 5x5 kernels
#: on 28x28 images: 16 to 32 images (9 to 18 MB of state) ran 1.9-2.2x faster than 256.
CHUNK_IMAGES = 32


def _wta_module(layer, dtype, inhibition, compile, steps):
    """The frozen layer's step for presentations of ``steps`` steps: the specialised one
    (:mod:`brainsnn.stdp.frozen`, the same spikes) where the layer allows it, else (or with
    ``steps=None``) the generic one."""
    return ((steps is not None and frozen_wta(layer, dtype, inhibition, compile, steps))
            or _TorchConvWTA(layer, dtype, inhibition=inhibition, compile=compile))


def _pool(s, layer):
    if layer.pooling == "avg":
        return F.avg_pool2d(s, layer.pool)
    if layer.pooling == "max":
        return F.max_pool2d(s, layer.pool)
    return s


class SpikingConvStack(Params):
    """A stack of conv STDP stages (layers or BackRes blocks) with fast torch extraction.

    Parameters
    ----------
    stages : list of ConvSTDPLayer / BackResSTDPBlock
    input_shape : (C, H, W)
    t_on : Quantity (time), optional
        Presentation time per image in extraction (default: the first layer's ``t_on``).
    torch_device : str
        Torch device of extraction (``'cpu'``, ``'cuda'``).
    dtype : torch dtype
        float32 (fast) or float64 (the Brian2 reference's precision; used by the tests).
    batch_size : int
        Images simulated at once in :meth:`transform`.
    seed : int
        Fixes the Poisson input spikes of extraction.
    f_in : Quantity (rate), optional
        Poisson rate of an input of intensity 1 in extraction (default: the first layer's
        ``f_max``, the rate it learned with). An extraction setting, like ``t_on``.
    lateral_inhibition : bool
        Whether lateral inhibition across the feature maps is active in extraction (default
        True, the learning circuit). With False every excitatory neuron integrates its
        kernel's input on its own (the same neuron equations, thresholds frozen at the
        learned ``theta``): the spike counts grow with the kernel's match instead of only
        the winner of each position firing. An extraction setting, chosen by measurement on
        training/validation data (see ``brainsnn run conv_stdp --help``).
    compile : bool
        Run each layer's step through :func:`torch.compile` (fused: 3.5x faster than
        eager for a 32-kernel layer on one CPU thread; about 20 s of compilation per layer
        shape).
    frozen_step : bool
        Run each layer with the specialised frozen step of :mod:`brainsnn.stdp.frozen` where
        the layer allows it (the same spikes, bit for bit; 3-5x faster on the CPU); False runs
        the generic torch-engine step (for comparison).

    The layers of every stage after the first are fed by spikes: :meth:`fit` sets their
    ``f_max`` to ``1/dt`` (an input intensity is then spikes per step) and ``min_spikes`` to
    0 (no boosted re-presentation: their thresholds must adapt to the rates that extraction
    gives them). After :meth:`fit`: ``fit_seconds_``; after :meth:`run`: ``timings_``
    (seconds of extraction) and ``images_per_second_``.
    """

    def __init__(self, stages, input_shape, t_on=None, torch_device="cpu",
                 dtype=torch.float32, batch_size=128, seed=0, f_in=None,
                 lateral_inhibition=True, compile=False, frozen_step=True):
        self.stages, self.input_shape = stages, input_shape
        self.t_on, self.f_in = t_on, f_in
        self.torch_device, self.dtype = torch_device, dtype
        self.batch_size, self.seed = batch_size, seed
        self.lateral_inhibition, self.compile = lateral_inhibition, compile
        self.frozen_step = frozen_step

    # -- derived values ---------------------------------------------------------------------
    @property
    def shapes(self):
        """Shapes (C, H, W) of the input and of every stage's (pooled) output."""
        if not len(self.stages):
            raise ConvSTDPError("a stack needs at least one stage")
        shape = tuple(int(s) for s in self.input_shape)
        if len(shape) != 3:
            raise ConvSTDPError(f"input_shape must be (channels, height, width), got "
                                f"{self.input_shape}")
        shapes = [shape]
        for stage in self.stages:
            if not isinstance(stage, (ConvSTDPLayer, BackResSTDPBlock)):
                raise ConvSTDPError(f"stages must be ConvSTDPLayer or BackResSTDPBlock, got {stage!r}")
            shapes.append(stage.output_shape(shapes[-1]))
        return shapes

    @property
    def dt(self):
        """The time step, the same in every stage."""
        dt = stage_layer(self.stages[0]).dt
        if any(lay.dt != dt for stage in self.stages for lay in stage_layers(stage)):
            raise ConvSTDPError("all stages must use the same dt")
        return dt

    @property
    def presentation_time(self):
        """Presentation time per image in extraction: ``t_on``, else the first layer's."""
        return self.t_on if self.t_on is not None else stage_layer(self.stages[0]).t_on

    @property
    def input_rate(self):
        """Poisson rate of intensity 1 in extraction: ``f_in``, else the first layer's f_max."""
        rate = stage_layer(self.stages[0]).f_max if self.f_in is None else self.f_in
        check_quantity("f_in", rate, b2.Hz)
        return rate

    @property
    def steps(self):
        """Time steps per image in extraction."""
        return int(round(float(self.presentation_time / self.dt)))

    @property
    def output_shape(self):
        return self.shapes[-1]

    @property
    def n_parameters(self):
        return sum(s.n_parameters for s in self.stages)

    def _spike_fed(self):
        """Settings of the layers after the first stage, fed by spikes (see the class doc)."""
        return {"f_max": 1.0 / self.dt, "min_spikes": 0}

    def config(self):
        stages = [s.config() for s in self.stages]
        fed = {"f_max_Hz": float(self._spike_fed()["f_max"] / b2.Hz), "min_spikes": 0}
        for cfg in stages[1:]:
            for layer_cfg in [cfg, *cfg.get("layers", [])]:
                layer_cfg.update(fed)
        return {"input_shape": [int(s) for s in self.input_shape],
                "t_on_ms": float(self.presentation_time / b2.ms),
                "dt_ms": float(self.dt / b2.ms), "steps": self.steps,
                "f_in_Hz": float(self.input_rate / b2.Hz), "batch_size": int(self.batch_size),
                "lateral_inhibition": bool(self.lateral_inhibition),
                "compile": bool(self.compile), "seed": int(self.seed), "stages": stages}

    # -- learning ---------------------------------------------------------------------------
    def stage_input_rates(self, x, stage_index, batch_size=None):
        """Input of stage ``stage_index`` as intensities: pixels for stage 0, else the spikes
        per step of the stage below's (pooled) output, shape (n, C, H, W)."""
        x = check_images(x, self.shapes[0])
        if stage_index == 0:
            return x
        counts = self._run(x, upto=stage_index, batch_size=batch_size)["output"]
        return counts / self.steps

    def fit(self, x, y=None, verbose=False, patch_callback=None, start=0):
        """Learn every stage's kernels in turn on images ``x`` (labels ignored).

        ``start`` skips the first stages (already trained, e.g. shared between stacks).
        Images ``x`` (n, C, H, W) in [0, 1]; returns self.
        """
        t_start = time.perf_counter()
        x = check_images(x, self.shapes[0])
        for s, stage in enumerate(self.stages):
            if s < start:
                continue
            if s:
                for lay in stage_layers(stage):
                    lay.set_params(**self._spike_fed())
            layer = stage_layer(stage)
            rng = np.random.default_rng([layer.seed, 1, s])
            t0 = time.perf_counter()
            inp = self.stage_input_rates(x, s)
            if isinstance(stage, BackResSTDPBlock) and stage.shared:
                per_stage = max(1, layer.n_patches // stage.R)
                for r in range(1, stage.R + 1):
                    inputs = self._block_pass_inputs(s, inp, r)
                    per_pass = max(1, per_stage // r)
                    patches = np.concatenate([layer.sample_patches(a, per_pass, rng) for a in inputs])
                    patches = patches[rng.permutation(len(patches))]
                    layer.fit_patches(patches, callback=patch_callback)
                    if verbose:
                        print(f"  stage {s} ({layer.name}) BackRes R={stage.R} {stage.form}: "
                              f"learned on {len(patches)} patches of passes 1..{r} "
                              f"({time.perf_counter() - t0:.1f} s)", flush=True)
            elif isinstance(stage, BackResSTDPBlock):      # separate layers, one per pass
                for r, lay in enumerate(stage.layers, start=1):
                    pass_in = self._block_pass_inputs(s, inp, r)[-1]
                    lay.fit_patches(lay.sample_patches(pass_in, lay.n_patches, rng),
                                    callback=patch_callback)
                    if verbose:
                        print(f"  stage {s} pass {r} ({lay.name}, {stage.form}): learned "
                              f"{lay.n_kernels} kernels on {lay.n_patches} patches "
                              f"({time.perf_counter() - t0:.1f} s)", flush=True)
            else:
                layer.fit_patches(layer.sample_patches(inp, layer.n_patches, rng),
                                  callback=patch_callback)
                if verbose:
                    print(f"  stage {s} ({layer.name}): learned {layer.n_kernels} kernels on "
                          f"{layer.n_patches} patches ({time.perf_counter() - t0:.1f} s)",
                          flush=True)
        self.fit_seconds_ = time.perf_counter() - t_start
        return self

    def _block_pass_inputs(self, stage_index, block_input, n_passes):
        """Inputs (spikes per step) of passes ``1..n_passes`` of block ``stage_index`` whose
        input is ``block_input``, computed with the kernels learned so far: pass 1 gets the
        block's input, pass r the output of pass r - 1 (re-entry) or that plus the block's
        input (additive)."""
        stage = self.stages[stage_index]
        inputs = [block_input]
        for r in range(1, n_passes):
            y = self._pass_rates(stage_index, inputs[-1], r - 1)
            inputs.append(block_input + y if is_additive(stage) else y)
        return inputs

    def _pass_rates(self, stage_index, rates, p=0):
        """Pass ``p`` of stage ``stage_index`` alone, Poisson input from ``rates`` (spikes per
        step): the output spikes per step (n, K, H, W)."""
        sub = SpikingConvStack([pass_layer(self.stages[stage_index], p)], rates.shape[1:],
                               t_on=self.presentation_time, torch_device=self.torch_device,
                               dtype=self.dtype, batch_size=self.batch_size,
                               seed=self.seed + 7919 * (stage_index + 1), f_in=1.0 / self.dt,
                               lateral_inhibition=self.lateral_inhibition, compile=self.compile,
                               frozen_step=self.frozen_step)
        return sub._run(rates)["output"] / self.steps

    # -- extraction -------------------------------------------------------------------------
    def _modules(self, upto, steps=None):
        """Torch modules of the first ``upto`` stages for presentations of ``steps`` steps
        (default :attr:`steps`), kept while kernels and settings are unchanged (so that
        compiled steps are reused from batch to batch)."""
        steps = self.steps if steps is None else steps
        cache = self.__dict__.setdefault("_module_cache", {})
        key = (self.lateral_inhibition, self.compile, str(self.dtype), str(self.torch_device),
               int(steps), bool(self.frozen_step))
        mods = []
        for si, stage in enumerate(self.stages[:upto]):
            per_layer = []
            for li, layer in enumerate(stage_layers(stage)):
                hit = cache.get((si, li))
                weights, theta = layer._state()
                settings = _step_settings(layer)
                if (hit is None or hit[0] != key or not np.array_equal(hit[1], weights)
                        or not np.array_equal(hit[2], theta) or hit[3].layer is not layer
                        or hit[4] != settings):
                    mod = _wta_module(layer, self.dtype, bool(self.lateral_inhibition),
                                      bool(self.compile), steps if self.frozen_step else None
                                      ).to(self.torch_device)
                    hit = cache[(si, li)] = (key, weights.copy(), theta.copy(), mod, settings)
                per_layer.append(hit[3])
            passes = stage_passes(stage)
            mods.append(per_layer * passes if len(per_layer) == 1 else per_layer)
        return mods

    @torch.no_grad()
    def simulate(self, input_spikes, upto=None, record=False):
        """Run the frozen stack on given input spikes ``(T, B, C, H, W)`` (0/1 tensor).

        Returns a dict: ``output`` (B, K, H, W) spike counts of the last stage's pooled
        output; ``stage_outputs`` the same for every stage; ``counts`` a list per stage of per-pass excitatory spike counts
        (B, K, H', W') before pooling; with ``record``, ``spikes`` a list per stage of lists
        per pass of (T, B, K, H', W') bool tensors.
        """
        upto = len(self.stages) if upto is None else int(upto)
        x = torch.as_tensor(input_spikes).to(self.torch_device, self.dtype)
        T, B = x.shape[:2]
        mods = self._modules(upto, T)
        states, counts, spikes, shape = [], [], [], tuple(x.shape[2:])
        for stage, passes in zip(self.stages[:upto], mods):
            conv = stage.layer.conv_shape(shape) if isinstance(stage, BackResSTDPBlock) \
                else stage.conv_shape(shape)
            states.append([m.initial_state((B, *conv), self.torch_device, self.dtype) for m in passes])
            counts.append([torch.zeros((B, *conv), dtype=self.dtype, device=self.torch_device)
                           for _ in passes])
            spikes.append([[] for _ in passes])
            shape = stage.output_shape(shape)
        stage_out = [None] * len(mods)
        additive = [is_additive(stage) for stage in self.stages[:upto]]
        pool_layers = [stage_layer(stage) for stage in self.stages[:upto]]
        # the last stage's output, when pooling is linear ('avg', 'none'), is its counts
        # pooled once at the end: the same numbers (multiples of 1/pool**2, exact in float)
        deferred = len(mods) - 1 if pool_layers and pool_layers[-1].pooling != "max" else None
        for t in range(T):
            s = x[t]
            for si, passes in enumerate(mods):
                block_in = s
                for p, mod in enumerate(passes):
                    if p and additive[si]:
                        s = s + block_in
                    s, states[si][p] = mod.step(states[si][p], s)
                    counts[si][p] += s
                    if record:
                        spikes[si][p].append(s.bool().cpu())
                if si == deferred:
                    continue
                s = _pool(s, pool_layers[si])
                stage_out[si] = s.clone() if stage_out[si] is None else stage_out[si] + s
        if T and deferred is not None:
            total = counts[deferred][-1]
            pooled = _pool(total, pool_layers[deferred])
            stage_out[deferred] = pooled.clone() if pooled is total else pooled
        if T == 0:
            stage_out = [torch.zeros((B, *self.shapes[i + 1]), dtype=self.dtype,
                                     device=self.torch_device) for i in range(len(mods))]
        result = {"output": stage_out[-1], "counts": counts, "stage_outputs": stage_out}
        if record:
            result["spikes"] = [[torch.stack(p) for p in st] for st in spikes]
        return result

    def _simulate_chunks(self, input_spikes, upto=None):
        """:meth:`simulate` on chunks of :data:`CHUNK_IMAGES` images of a batch of input
        spikes, one after another (each chunk's state stays in the CPU caches for all its
        steps; the images are independent: the same counts), concatenated."""
        B, chunk = input_spikes.shape[1], CHUNK_IMAGES
        if str(self.torch_device) != "cpu" or B <= chunk:
            return self.simulate(input_spikes, upto=upto)
        parts = [self.simulate(input_spikes[:, i:i + chunk], upto=upto)
                 for i in range(0, B, chunk)]
        return {"output": torch.cat([p["output"] for p in parts]),
                "stage_outputs": [torch.cat(o) for o in zip(*(p["stage_outputs"] for p in parts))],
                "counts": [[torch.cat(c) for c in zip(*stage)]
                           for stage in zip(*(p["counts"] for p in parts))]}

    def poisson_input(self, x, generator):
        """Bernoulli input spikes ``(T, B, C, H, W)``: probability ``x * f_in * dt`` per step."""
        p = torch.as_tensor(x, dtype=self.dtype, device=self.torch_device)
        p = torch.clamp(p * float(self.input_rate * self.dt), 0, 1)
        u = torch.rand((self.steps, *p.shape), generator=generator, device=self.torch_device,
                       dtype=self.dtype)
        return (u < p).to(self.dtype)

    def run(self, x, upto=None, batch_size=None, callback=None):
        """Simulate images ``x`` (n, C, H, W), intensities in [0, 1], batch by batch with
        seeded Poisson input.

        Returns numpy arrays: ``output`` (n, K, H, W) spike counts of the last stage's pooled
        output, ``stage_outputs`` (a list: every stage's pooled output counts), and ``rates`` a list per stage of per-pass mean spikes per neuron per step.
        """
        return self._run(check_images(x, self.shapes[0]), upto, batch_size, callback)

    def _run(self, x, upto=None, batch_size=None, callback=None):
        """:meth:`run` on checked input (also rates above 1: a block's input plus a pass's
        output, whose firing probability per step is clipped to 1)."""
        bs = positive_count(batch_size or self.batch_size, "batch_size")
        torch_device(self.torch_device, "torch_device")
        gen = torch.Generator(device=self.torch_device).manual_seed(self.seed)
        outs, stage_outs, rate_sums, n_done = [], [], None, 0
        t0 = time.perf_counter()
        for i in range(0, len(x), bs):
            xb = x[i:i + bs]
            res = self._simulate_chunks(self.poisson_input(xb, gen), upto=upto)
            outs.append(res["output"].cpu().numpy())
            stage_outs.append([o.cpu().numpy() for o in res["stage_outputs"]])
            per = [[float(c.mean()) * len(xb) / self.steps for c in st] for st in res["counts"]]
            rate_sums = per if rate_sums is None else [[a + b for a, b in zip(ra, pa)]
                                                       for ra, pa in zip(rate_sums, per)]
            n_done += len(xb)
            if callback is not None:
                callback(n_done, len(x), time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
        self.timings_ = {"extract": getattr(self, "timings_", {"extract": 0.0})["extract"]
                         + seconds}
        if len(x):
            self.images_per_second_ = len(x) / max(seconds, 1e-9)
        rates = [[v / max(n_done, 1) for v in st] for st in (rate_sums or [])]
        shape = self.shapes[len(self.stages) if upto is None else upto]
        output = np.concatenate(outs) if outs else np.zeros((0, *shape), np.float32)
        per_stage = [np.concatenate(parts) for parts in zip(*stage_outs)] if stage_outs else []
        return {"output": output, "rates": rates, "stage_outputs": per_stage}

    def transform(self, x, batch_size=None, callback=None):
        """Features of images ``x``: the last stage's pooled spike counts, flattened (n, F)."""
        x = check_images(x, self.shapes[0])
        return self._run(x, batch_size=batch_size, callback=callback)["output"].reshape(len(x), -1)

    def fit_transform(self, x, y=None, **kwargs):
        return self.fit(x, **kwargs).transform(x)

    def close(self):
        for stage in self.stages:
            stage.close()
