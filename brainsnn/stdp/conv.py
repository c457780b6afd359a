"""Convolutional STDP layers, stacking, pooling, BackRes for STDP and feature extraction.

As defined in this project (``shared/PAPER.md``, "STDP" and "BackRes"):

* A **convolutional STDP layer** has ``n_kernels`` kernels of shape
  ``(in_channels, kernel_size, kernel_size)`` shared over all positions. At every output
  position there are ``n_kernels`` adaptive-threshold excitatory neurons (Diehl & Cook's
  :data:`~brainsnn.models.DIEHL_COOK_EXCITATORY`), one per feature map, and as many inhibitory
  partners: lateral inhibition across the feature maps *at that position* makes each position a
  soft winner-take-all (the same circuit as :class:`~brainsnn.brian.wta.DiehlCookNetwork`).
* **Learning by patches** ("convolution over time", Srinivasan et al. 2018): the kernels are
  the input weights of one :class:`~brainsnn.brian.wta.DiehlCookNetwork` with ``k*k*C`` Poisson
  inputs and ``n_kernels`` excitatory neurons; input patches, drawn from the layer's input
  over the training images, are presented one after another. The WTA network's STDP rule,
  adaptive thresholds ``theta`` and weight normalisation (each kernel's weights sum to
  ``w_target``) are the layer's. This is the method chosen here, by a short measurement
  (cpp_standalone, 1 thread, the shared 2-core machine, 100 ms + 50 ms per presentation):
  the patch network (16 kernels, 25 inputs) learned on 1,000 patches per 0.6 to 1.0 s and
  compiled in 20 s (unloaded) to 120 s (loaded); the unrolled network of *one* 28x28 image
  (16 kernels 5x5: 9,216 + 9,216 neurons, 230k synapses), frozen -- a lower bound of kernel
  tying, which adds STDP on every unrolled synapse plus a gather and a copy of the kernel
  every step -- ran 0.23 s per image and took 234 s to build and compile. Per position the
  two cost about the same, but patch learning skips blank patches (about half of MNIST's
  positions), compiles a network whose size does not grow with the image, keeps Diehl &
  Cook's per-presentation dynamics (tying sums the updates of 576 positions at every step,
  so its learning rates would need retuning), and reuses the package's tested WTA network
  unchanged (one way to do a thing).
* **Pooling** of spikes over ``pool x pool`` windows (stride ``pool``): ``'avg'`` (the sum of
  the window's spikes divided by its area is the next layer's input at that step; folded into
  the next layer's synapses in Brian2) or ``'max'`` (spiking max: 1 when any neuron of the
  window spikes at that step).
* **Stacking**: layer ``l + 1`` learns on the spikes of layer ``l``: the frozen stack below is
  run (torch engine) on training images, and the rate of every input unit of layer ``l + 1``
  (its spike count over the presentation divided by the number of steps, i.e. spikes per
  step) becomes the firing probability per step of a Poisson input during patch learning
  (``f_max = 1/dt``).
* **BackRes for STDP** (:class:`BackResSTDPBlock`): a conv layer whose output has the shape of
  its input (``in_channels == n_kernels``, 'same' padding, stride 1, no pooling) runs ``R``
  times with the same kernels, y_r = B(y_(r-1)); each pass has its own neurons (membrane
  potentials, conductances, thresholds start from the learned ``theta``). The kernels learn
  from the updates of all passes: training proceeds in ``R`` stages; at stage ``s`` the
  inputs of passes ``1..s`` are computed with the kernels learned so far, and patches drawn
  equally from all of them are presented to the one shared WTA network, so the shared
  kernels accumulate (sum) the STDP updates of every pass. ``form='additive'`` feeds every
  pass after the first the block's input as well, y_r = B(y_(r-1) + x) (both spike trains on
  the same kernel synapses). The physically deeper reference is the same block with a list
  of separate layers, one per pass, each learned on the input of its own pass.
  Measured (``protocols/backres_stdp.py``, MNIST, small scale): in re-entry form the spike
  rate falls about tenfold per layer (layer 1 0.0029, layer 2 0.0003, layer 3 3e-7 spikes
  per neuron per step), so that the third STDP layer never fires, neither while learning nor
  in extraction; the additive form keeps every pass driven by the block's input.
* **Feature extraction** (:class:`SpikingConvStack`): the frozen stack runs on the torch
  engine (:class:`~brainsnn.engine.neuron.TorchNeuron`, the same Brian2 equations, batched,
  ``plastic = 0``: thresholds frozen), one Brian2-schedule step at a time; the features are
  the spike counts of the last stage's (pooled) output. Each layer runs the step specialised
  for a frozen layer (:mod:`brainsnn.stdp.frozen`: the same spikes, 4-5x faster on the CPU)
  where the layer allows it. :func:`brian2_stack_spikes` runs the
  same frozen stack as a Brian2 network (unrolled synapses whose weights are the kernels), the
  reference that the tests compare with the torch engine spike for spike.

Extraction settings (``SpikingConvStack(t_on=..., f_in=..., lateral_inhibition=...)``):
presentation time, input rate and whether lateral inhibition is active are settings of the
frozen stack, chosen by measurement on training/validation images, never on test images.
Measured (issue 4; MNIST, one layer of 32 5x5 kernels learned on 20,000 patches of 2,000
images, avg pool 2, linear readout trained on 2,000 training images, validated on the next
1,000; ``lateral_inhibition`` / ``t_on`` / ``f_in``; rate in spikes per neuron per step):

=========  =====  ======  ======  =========
inhibition t_on   f_in    rate    val. acc.
=========  =====  ======  ======  =========
on         100 ms 255 Hz  0.0004  95.6 %
on          50 ms 1 kHz   0.0023  96.2 %
on          25 ms 255 Hz  0.0003  92.5 %
off         50 ms 1 kHz   0.0131  90.1 %
off         25 ms 1 kHz   0.0121  90.1 %
off         25 ms 255 Hz  0.0016  88.3 %
=========  =====  ======  ======  =========

Lateral inhibition during extraction helps (the per-position winner code is more
informative than the graded counts without it), and a higher input rate over a shorter
presentation gives more spikes at half the steps. The earlier 62 % (two layers, features of
the second layer only) came from the second layer: its spike counts alone carry little;
``--features all`` in ``protocols/conv_stdp.py`` reads out every layer's spikes.

Example::

    from brainsnn.stdp.conv import ConvSTDPLayer, SpikingConvStack
    l1 = ConvSTDPLayer(16, 5, in_channels=1, pool=2, n_patches=20000, seed=0)
    stack = SpikingConvStack([l1], input_shape=(1, 28, 28))
    stack.fit(x_train[:2000])                  # learns the kernels layer by layer, no labels
    features = stack.transform(x_test)         # spike counts (n, F)
"""
from __future__ import annotations

import dataclasses
import math
import time

import brian2 as b2
import numpy as np
import torch
import torch.nn.functional as F

from brainsnn.models import DIEHL_COOK_EXCITATORY, DIEHL_COOK_INHIBITORY, NeuronModel
from brainsnn.brian.plasticity import make_rule
from brainsnn.stdp.preprocessing import positive_percentile
from brainsnn.brian.wta import DiehlCookNetwork, _model_dict
from brainsnn.engine.network import BACKRES_FORMS
from brainsnn.engine.neuron import TorchNeuron
from brainsnn.stdp.frozen import CompiledStep, frozen_wta
from brainsnn.errors import ConvSTDPError  # noqa: F401
from brainsnn.params import Params
from brainsnn.validation import check_finite, positive_int, validate_images

#: Excitatory neuron of the conv STDP layers, as defined in this project: Diehl & Cook's
#: adaptive-threshold neuron whose threshold offset theta decays towards theta_rest = 20 mV
#: (the Diehl & Cook initial value: threshold -52 mV) with tau_theta = 100 s (instead of
#: decaying to 0 with 1e4 s) while learning. A kernel sees far more patches than a Diehl &
#: Cook neuron sees images: with the slow decay theta grows by theta_plus at every spike
#: without bound and the layer falls silent; decaying to 0, the threshold of a rarely
#: firing neuron sinks below the resting potential and it fires without input. Here theta
#: settles where theta - theta_rest = theta_plus * rate * tau_theta (homeostasis).
CONV_EXCITATORY = DIEHL_COOK_EXCITATORY.replace(
    equations=DIEHL_COOK_EXCITATORY.equations.replace(
        "-plastic * theta / tau_theta", "-plastic * (theta - theta_rest) / tau_theta"),
    parameters={**DIEHL_COOK_EXCITATORY.parameters, "tau_theta": 100 * b2.second,
                "theta_rest": 20 * b2.mV},
    name="conv_exc")
assert "theta_rest" in CONV_EXCITATORY.equations

__all__ = ["CONV_EXCITATORY", "ConvSTDPError", "ConvSTDPLayer", "BackResSTDPBlock", "SpikingConvStack",
           "extract_patches", "conv_output_shape", "stage_layers", "brian2_stack_spikes",
           "POOL_KINDS"]

POOL_KINDS = ("avg", "max", "none")




def _positive_int(value, name, minimum=1):
    return positive_int(value, name, ConvSTDPError, minimum)


def _check_quantity(name, value, unit):
    if b2.get_dimensions(value) != unit.dim or not float(value) >= 0:
        raise ConvSTDPError(f"{name} must be a non-negative quantity in {unit!r}, got {value!r}")


def conv_output_shape(input_shape, kernel_size, stride=1, padding=0, pool=1):
    """Output shape ``(H', W')`` of a conv (+ pooling) on an input ``(C, H, W)``.

    Raises :class:`ConvSTDPError` when the kernel does not fit the (padded) input or the
    pooling window does not fit the conv output.
    """
    c, h, w = input_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    if kernel_size > hp or kernel_size > wp:
        raise ConvSTDPError(f"kernel {kernel_size}x{kernel_size} is larger than the input "
                            f"{h}x{w} (padding {padding}); use a smaller kernel_size or more "
                            "padding")
    ho, wo = (hp - kernel_size) // stride + 1, (wp - kernel_size) // stride + 1
    if pool > 1 and (pool > ho or pool > wo):
        raise ConvSTDPError(f"pooling window {pool}x{pool} is larger than the conv output "
                            f"{ho}x{wo}")
    return ho, wo


def _check_inputs(x, shape, name="x"):
    """Images ``(n, C, H, W)`` (``(n, H, W)`` for one channel) with finite values in [0, 1],
    checked against ``shape`` = (C, H, W); float32."""
    arr = validate_images(x, name=name, error=ConvSTDPError)
    if arr.ndim == 3 and shape[0] == 1:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise ConvSTDPError(f"{name} must be shaped (n, channels, height, width) "
                            f"(or (n, height, width) for one channel); got shape {arr.shape}")
    if arr.shape[1] != shape[0]:
        raise ConvSTDPError(f"{name} has {arr.shape[1]} channel(s) but the layer expects "
                            f"{shape[0]} (in_channels); mismatched channels")
    if tuple(arr.shape[2:]) != tuple(shape[1:]):
        raise ConvSTDPError(f"{name} has images of {arr.shape[2]}x{arr.shape[3]} but "
                            f"{shape[1]}x{shape[2]} is expected")
    return arr.astype(np.float32, copy=False)


def extract_patches(x, kernel_size, stride=1, padding=0):
    """All ``kernel_size`` x ``kernel_size`` patches of ``x`` (n, C, H, W).

    Returns a float32 array ``(n, positions, C*k*k)``; the last axis is ordered
    (channel, row, column), the layout of a conv kernel ``(C, k, k)`` flattened, and
    positions are row-major over the conv output.
    """
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if t.dim() != 4:
        raise ConvSTDPError(f"x must be (n, C, H, W), got shape {tuple(t.shape)}")
    conv_output_shape(tuple(t.shape[1:]), kernel_size, stride, padding)
    cols = F.unfold(t, kernel_size, padding=padding, stride=stride)   # (n, C*k*k, L)
    return cols.transpose(1, 2).contiguous().numpy()


# -- the layer ------------------------------------------------------------------------------

class ConvSTDPLayer(Params):
    """A convolutional STDP layer whose shared kernels are learned on patches.

    Parameters
    ----------
    n_kernels : int
        Number of kernels (feature maps); the WTA network has this many excitatory neurons.
    kernel_size : int
        Side ``k`` of the square kernels.
    in_channels : int
        Channels ``C`` of the input.
    stride, padding : int
        Convolution stride and zero padding.
    pool : int
        Pooling window and stride after the layer (1: none).
    pool_kind : {'avg', 'max'}
        Average (sum / area) or spiking-max pooling of the output spikes.
    n_patches : int
        Patches presented in :meth:`fit` (one pass).
    min_patch_mean : float
        Patches whose mean input is below this fraction of the 99th percentile of all patch
        means are not drawn (blank patches give no spikes and teach nothing); 0 draws
        patches uniformly.
    f_max : Quantity (rate)
        Poisson rate of an input of intensity 1 (for a first layer: a white pixel). The
        stack sets ``1/dt`` for layers fed by spikes (the intensity is then spikes per step).
    w_target : float
        Sum of each kernel's weights after normalisation (default ``0.1 * k*k*C`` scaled by
        ``w_per_input``, i.e. ``w_per_input * k*k*C``).
    w_per_input : float
        Mean weight used for the default ``w_target``.
    t_on, t_off : Quantity (time)
        Presentation and rest per patch (training) and presentation per image (extraction).
    dt : Quantity (time)
        Time step, the same in training, extraction and the Brian2 reference.
    rule : str
        STDP rule name (:data:`brainsnn.brian.plasticity.RULES`); ``rule_options`` its parameters.
    min_spikes, max_repeats : int
        Re-presentation of silent patches (see :class:`~brainsnn.brian.wta.DiehlCookNetwork`).
    w_exc_inh, w_inh_exc : float
        Lateral inhibition weights (as in the WTA network).
    device : {'runtime', 'cpp_standalone', 'cuda_standalone'}
        Brian2 device of the learning network.
    chunk_size : int
        Patches per compiled run.
    seed : int
        Fixes the initial kernels, the patch draw and every Poisson spike of learning.
    exc_model, inh_model : NeuronModel
        Neuron models of the excitatory (kernel) and inhibitory populations (default
        :data:`CONV_EXCITATORY` and ``DIEHL_COOK_INHIBITORY``); used in learning, extraction
        and the Brian2 reference alike.

    Before :meth:`fit` the kernels are the seeded initial ones (:attr:`kernels`,
    :attr:`theta`; :meth:`set_kernels` replaces them). After it: ``network_`` (the WTA
    network that learned them), ``timings_`` (seconds of learning and compilation) and
    ``patches_presented_``.
    """

    def __init__(self, n_kernels=16, kernel_size=5, in_channels=1, *, stride=1, padding=0,
                 pool=2, pool_kind="avg", n_patches=20000, min_patch_mean=0.1,
                 f_max=255 * b2.Hz, w_target=None, w_per_input=0.35, t_on=100 * b2.ms,
                 t_off=50 * b2.ms, dt=0.5 * b2.ms, rule="diehl_cook", rule_options=None,
                 min_spikes=2, max_repeats=5, w_exc_inh=10.4, w_inh_exc=17.0,
                 w_init=(0.0, 0.3), device="cpp_standalone", chunk_size=2000, seed=0,
                 threads=1, directory=None, name="conv",
                 exc_model: NeuronModel = CONV_EXCITATORY,
                 inh_model: NeuronModel = DIEHL_COOK_INHIBITORY):
        self.n_kernels, self.kernel_size, self.in_channels = n_kernels, kernel_size, in_channels
        self.stride, self.padding, self.pool, self.pool_kind = stride, padding, pool, pool_kind
        self.n_patches, self.min_patch_mean = n_patches, min_patch_mean
        self.f_max, self.w_target, self.w_per_input = f_max, w_target, w_per_input
        self.t_on, self.t_off, self.dt = t_on, t_off, dt
        self.rule, self.rule_options = rule, rule_options
        self.min_spikes, self.max_repeats = min_spikes, max_repeats
        self.w_exc_inh, self.w_inh_exc, self.w_init = w_exc_inh, w_inh_exc, w_init
        self.device, self.chunk_size, self.seed = device, chunk_size, seed
        self.threads, self.directory, self.name = threads, directory, name
        self.exc_model, self.inh_model = exc_model, inh_model

    # -- checks and derived values ----------------------------------------------------------
    def _check_params(self):
        for label in ("n_kernels", "kernel_size", "in_channels", "stride", "pool", "n_patches",
                      "chunk_size"):
            _positive_int(getattr(self, label), label)
        _positive_int(self.padding, "padding", minimum=0)
        if self.pool_kind not in POOL_KINDS:
            raise ConvSTDPError(f"pool_kind must be one of {POOL_KINDS}, got {self.pool_kind!r}")
        for label, unit in (("f_max", b2.Hz), ("t_on", b2.second), ("t_off", b2.second),
                            ("dt", b2.second)):
            _check_quantity(label, getattr(self, label), unit)
        if not self.target_sum > 0:
            raise ConvSTDPError(f"w_target must be > 0, got {self.target_sum}")
        for label in ("exc_model", "inh_model"):
            if not isinstance(getattr(self, label), NeuronModel):
                raise ConvSTDPError(f"{label} must be a brainsnn.models.NeuronModel")

    @property
    def n_inputs(self):
        """Inputs of one kernel, ``C * k * k``."""
        return int(self.in_channels) * int(self.kernel_size) ** 2

    @property
    def target_sum(self):
        """The sum every kernel is normalised to: ``w_target``, else ``w_per_input * C*k*k``."""
        return float(self.w_target if self.w_target is not None
                     else float(self.w_per_input) * self.n_inputs)

    @property
    def pooling(self):
        """The pooling applied: ``pool_kind``, or ``'none'`` when ``pool`` is 1."""
        return "none" if int(self.pool) == 1 else self.pool_kind

    def _state(self):
        """(weights (C*k*k, K), theta (K,)): the learned ones, else the seeded initial ones."""
        if "_weights" not in self.__dict__:
            self._check_params()
            rng = np.random.default_rng(self.seed)
            lo, hi = (float(v) for v in self.w_init)
            w = lo + (hi - lo) * rng.random((self.n_inputs, int(self.n_kernels)))
            w *= self.target_sum / w.sum(axis=0, keepdims=True)
            self._weights = w
            self._theta = np.full(int(self.n_kernels),
                                  float(self.exc_model.initial.get("theta", 0 * b2.volt)))
        return self._weights, self._theta

    @property
    def timings(self):
        """Seconds of learning (``train``) and compilation (``compile``) so far."""
        return dict(self.__dict__.get("timings_", {"train": 0.0, "compile": 0.0}))

    @property
    def patches_presented(self):
        """Patches presented by :meth:`fit` / :meth:`fit_patches` so far."""
        return self.__dict__.get("patches_presented_", 0)

    # -- geometry -------------------------------------------------------------------------
    def output_shape(self, input_shape):
        """``(n_kernels, H', W')`` after conv and pooling, for an input ``(C, H, W)``."""
        self._check_params()
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != 3:
            raise ConvSTDPError(f"input_shape must be (channels, height, width), got {input_shape}")
        if input_shape[0] != self.in_channels:
            raise ConvSTDPError(f"layer {self.name!r} expects {self.in_channels} input channel(s) "
                                f"but its input has {input_shape[0]}; mismatched channels")
        ho, wo = conv_output_shape(input_shape, self.kernel_size, self.stride, self.padding,
                                   self.pool)
        return (self.n_kernels, ho // self.pool, wo // self.pool)

    def conv_shape(self, input_shape):
        """``(n_kernels, H', W')`` of the conv output (before pooling)."""
        ho, wo = conv_output_shape(tuple(input_shape), self.kernel_size, self.stride, self.padding)
        return (self.n_kernels, ho, wo)

    @property
    def n_parameters(self):
        """Number of learned values: kernel weights plus one threshold per kernel."""
        return self.n_kernels * self.n_inputs + self.n_kernels

    # -- state ----------------------------------------------------------------------------
    @property
    def kernels(self):
        """The shared kernels, float64 array ``(n_kernels, C, k, k)`` (dimensionless weights)."""
        return self._state()[0].T.reshape(self.n_kernels, self.in_channels, self.kernel_size,
                                          self.kernel_size).copy()

    @property
    def theta(self):
        """Adaptive-threshold offsets per kernel, float64 ``(n_kernels,)`` in volts."""
        return self._state()[1].copy()

    def set_kernels(self, kernels, theta=None):
        """Set the kernels ``(n_kernels, C, k, k)`` (and thresholds ``theta`` in volts)."""
        self._state()
        shape = (self.n_kernels, self.in_channels, self.kernel_size, self.kernel_size)
        k = check_finite(kernels, "kernels", shape, ConvSTDPError)
        self._weights = k.reshape(self.n_kernels, -1).T.copy()
        if theta is not None:
            th = check_finite(np.reshape(theta, -1), "theta", (self.n_kernels,), ConvSTDPError)
            self._theta = th.copy()
        return self

    def config(self):
        """JSON-able configuration (units in the key names)."""
        return {"name": self.name, "n_kernels": self.n_kernels, "kernel_size": self.kernel_size,
                "in_channels": self.in_channels, "stride": self.stride,
                "padding": self.padding, "pool": self.pool, "pool_kind": self.pooling,
                "n_patches": self.n_patches, "min_patch_mean": float(self.min_patch_mean),
                "f_max_Hz": float(self.f_max / b2.Hz), "w_target": self.target_sum,
                "t_on_ms": float(self.t_on / b2.ms), "t_off_ms": float(self.t_off / b2.ms),
                "dt_ms": float(self.dt / b2.ms), "rule": self.rule,
                "rule_options": {k: str(v) for k, v in (self.rule_options or {}).items()},
                "min_spikes": int(self.min_spikes), "max_repeats": int(self.max_repeats),
                "w_exc_inh": float(self.w_exc_inh), "w_inh_exc": float(self.w_inh_exc),
                "w_init": [float(v) for v in self.w_init], "device": self.device,
                "chunk_size": self.chunk_size, "seed": self.seed,
                "learning": "patches", "exc_model": _model_dict(self.exc_model),
                "inh_model": _model_dict(self.inh_model)}

    # -- learning -------------------------------------------------------------------------
    def make_network(self):
        """The WTA STDP network that learns the kernels (inputs = one patch)."""
        if getattr(self, "network_", None) is None:
            self._check_params()
            weights, theta = self._state()
            self.network_ = DiehlCookNetwork(
                int(self.n_kernels), exc_model=self.exc_model, inh_model=self.inh_model,
                n_inputs=self.n_inputs, rule=make_rule(self.rule, **(self.rule_options or {})),
                device=self.device, chunk_size=int(self.chunk_size), seed=int(self.seed),
                dt=self.dt, t_on=self.t_on, t_off=self.t_off, f_max=self.f_max,
                f_boost=self.f_max / 2, min_spikes=int(self.min_spikes),
                max_repeats=int(self.max_repeats), w_target=self.target_sum,
                w_init=tuple(float(v) for v in self.w_init), w_exc_inh=float(self.w_exc_inh),
                w_inh_exc=float(self.w_inh_exc), threads=int(self.threads),
                directory=self.directory, eta_final=1.0)     # constant plasticity
            state = self.network_.get_state()
            state["weights"], state["theta"] = weights.copy(), theta.copy()
            self.network_.set_state(state)
        return self.network_

    def sample_patches(self, x, n, rng):
        """``n`` patches ``(n, C*k*k)`` of ``x`` (n_img, C, H, W), non-blank ones preferred.

        Patches whose mean is below ``min_patch_mean`` times the 99th percentile of the patch
        means are left out (blank patches teach nothing); if too few remain, all
        patches are candidates. Patches are drawn uniformly (with replacement) from the
        candidates, with a seeded ``rng``.
        """
        pats = extract_patches(x, self.kernel_size, self.stride, self.padding)
        pats = pats.reshape(-1, self.n_inputs)
        means = pats.mean(axis=1)
        keep = means >= float(self.min_patch_mean) * np.percentile(means, 99)
        candidates = pats[keep] if keep.sum() >= max(1, min(n, 100)) else pats
        idx = rng.integers(0, len(candidates), size=int(n))
        return candidates[idx]

    def fit_patches(self, patches, callback=None):
        """Present patches ``(n, C*k*k)`` (intensities; clipped to [0, 1]) to the WTA network."""
        p = np.asarray(patches, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != self.n_inputs:
            raise ConvSTDPError(f"patches must be (n, {self.n_inputs}) (C*k*k inputs), "
                                f"got shape {p.shape}")
        p = np.clip(p, 0.0, 1.0)
        net = self.make_network()
        t0 = time.perf_counter()
        net.partial_fit(p, callback=callback)
        timings = self.timings
        timings["train"] += time.perf_counter() - t0
        timings["compile"] = net.timings["compile"]
        self.timings_ = timings
        self._weights, self._theta = net.weights.copy(), net.theta.copy()
        self.patches_presented_ = self.patches_presented + len(p)
        return self

    def fit(self, x, y=None, callback=None):
        """Learn the kernels on ``n_patches`` patches of images ``x`` (n, C, H, W) in [0, 1];
        labels ignored; returns self."""
        self._check_params()
        x = _check_inputs(x, (self.in_channels, *np.shape(x)[-2:]))
        self.output_shape(x.shape[1:])
        rng = np.random.default_rng([self.seed, 1])
        return self.fit_patches(self.sample_patches(x, self.n_patches, rng), callback=callback)

    def close(self):
        """Release the compiled Brian2 project of the learning network."""
        if getattr(self, "network_", None) is not None:
            self.network_.close()




class BackResSTDPBlock:
    """A conv STDP layer run ``R`` times with the same kernels (BackRes).

    ``layer`` must keep the shape of its input: ``in_channels == n_kernels``, stride 1,
    'same' padding (``kernel_size // 2``, odd kernels) and no pooling. Each pass has its own
    neurons; the kernels learn from the patches of every pass (see the module docstring).

    ``form='reentry'`` (default) feeds each pass the spikes of the pass before,
    y_r = B(y_(r-1)); ``form='additive'`` feeds it those spikes plus the block's input x,
    y_r = B(y_(r-1) + x) (the two spike trains are summed on the same synapses), so that a
    pass cannot fall silent when the one before it does.

    A list of ``R`` layers instead of one gives the *physically deeper* reference with the
    same wiring: pass ``r`` uses layer ``r`` (separate kernels, each learned on the input of
    its own pass only), and the parameters grow with R.
    """

    def __init__(self, layer, R=None, form="reentry"):
        layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if not layers or not all(isinstance(l, ConvSTDPLayer) for l in layers):
            raise ConvSTDPError("BackResSTDPBlock needs a ConvSTDPLayer (or a list of them)")
        if form not in BACKRES_FORMS:
            raise ConvSTDPError(f"form must be one of {BACKRES_FORMS}, got {form!r}")
        if len(layers) > 1:
            if R is not None and int(R) != len(layers):
                raise ConvSTDPError(f"R={R} but {len(layers)} separate layers were given "
                                    "(one per pass)")
            R = len(layers)
        self.R = _positive_int(2 if R is None else R, "R")
        for lay in layers:
            if lay.in_channels != lay.n_kernels:
                raise ConvSTDPError(f"a BackRes block's output must have the shape of its "
                                    f"input: in_channels ({lay.in_channels}) must equal "
                                    f"n_kernels ({lay.n_kernels})")
            if (lay.stride != 1 or lay.pool != 1 or lay.kernel_size % 2 == 0
                    or lay.padding != lay.kernel_size // 2):
                raise ConvSTDPError("a BackRes block's layer needs stride 1, pool 1, an odd "
                                    "kernel_size and padding = kernel_size // 2 ('same'), so "
                                    "that its output has the shape of its input")
        if len({(l.n_kernels, l.kernel_size) for l in layers}) > 1:
            raise ConvSTDPError("the separate layers of a block must have the same shape")
        self.layers = layers
        self.layer = layers[0]
        self.form = form
        self.name = layers[0].name

    @property
    def shared(self):
        """True when every pass uses the same layer (BackRes), False for separate layers."""
        return len(self.layers) == 1

    def pass_layer(self, p):
        """The layer of pass ``p`` (0-based)."""
        return self.layers[0 if self.shared else p]

    def pass_name(self, p):
        """Name of pass ``p`` in results: ``<layer>_pass<p+1>`` when shared, else the layer's."""
        return f"{self.name}_pass{p + 1}" if self.shared else self.layers[p].name

    # delegated geometry and state
    def output_shape(self, input_shape):
        return self.layer.output_shape(input_shape)

    @property
    def n_parameters(self):
        """Parameters of the block: those of its one layer whatever R (shared), or the sum of
        its separate layers."""
        return sum(l.n_parameters for l in self.layers)

    @property
    def kernels(self):
        return self.layer.kernels

    @property
    def theta(self):
        return self.layer.theta

    @property
    def in_channels(self):
        return self.layer.in_channels

    def config(self):
        cfg = {**self.layer.config(), "backres_R": self.R, "backres_form": self.form,
               "shared_kernels": self.shared}
        if not self.shared:
            cfg["layers"] = [l.config() for l in self.layers]
        return cfg

    def close(self):
        for lay in self.layers:
            lay.close()


# -- torch engine: the frozen stack -----------------------------------------------------------

def _stage_layer(stage):
    return stage.layer if isinstance(stage, BackResSTDPBlock) else stage


def stage_layers(stage):
    """Every distinct layer of a stage: the layer itself, or a BackRes block's layers (one if
    its passes share kernels, R if they are separate)."""
    return list(stage.layers) if isinstance(stage, BackResSTDPBlock) else [stage]


def _pass_layer(stage, p):
    return stage.pass_layer(p) if isinstance(stage, BackResSTDPBlock) else stage


def _pass_name(stage, p):
    return stage.pass_name(p) if isinstance(stage, BackResSTDPBlock) else stage.name


def _additive(stage):
    return isinstance(stage, BackResSTDPBlock) and stage.form == "additive"


def _stage_passes(stage):
    return stage.R if isinstance(stage, BackResSTDPBlock) else 1


def _v_rest(model):
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
                                     theta=self.theta.to(device), v=_v_rest(self.layer.exc_model))
        inh = self.inh.initial_state(shape, device=device, dtype=dtype,
                                     v=_v_rest(self.layer.inh_model)) if self.inhibition else None
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
        training/validation data (see ``protocols/conv_stdp.py``).
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
        dt = _stage_layer(self.stages[0]).dt
        if any(lay.dt != dt for stage in self.stages for lay in stage_layers(stage)):
            raise ConvSTDPError("all stages must use the same dt")
        return dt

    @property
    def presentation_time(self):
        """Presentation time per image in extraction: ``t_on``, else the first layer's."""
        return self.t_on if self.t_on is not None else _stage_layer(self.stages[0]).t_on

    @property
    def input_rate(self):
        """Poisson rate of intensity 1 in extraction: ``f_in``, else the first layer's f_max."""
        rate = _stage_layer(self.stages[0]).f_max if self.f_in is None else self.f_in
        _check_quantity("f_in", rate, b2.Hz)
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
        x = _check_inputs(x, self.shapes[0])
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
        x = _check_inputs(x, self.shapes[0])
        for s, stage in enumerate(self.stages):
            if s < start:
                continue
            if s:
                for lay in stage_layers(stage):
                    lay.set_params(**self._spike_fed())
            layer = _stage_layer(stage)
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
            inputs.append(block_input + y if _additive(stage) else y)
        return inputs

    def _pass_rates(self, stage_index, rates, p=0):
        """Pass ``p`` of stage ``stage_index`` alone, Poisson input from ``rates`` (spikes per
        step): the output spikes per step (n, K, H, W)."""
        sub = SpikingConvStack([_pass_layer(self.stages[stage_index], p)], rates.shape[1:],
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
            passes = _stage_passes(stage)
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
        additive = [_additive(stage) for stage in self.stages[:upto]]
        pool_layers = [_stage_layer(stage) for stage in self.stages[:upto]]
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
        return self._run(_check_inputs(x, self.shapes[0]), upto, batch_size, callback)

    def _run(self, x, upto=None, batch_size=None, callback=None):
        """:meth:`run` on checked input (also rates above 1: a block's input plus a pass's
        output, whose firing probability per step is clipped to 1)."""
        bs = _positive_int(batch_size or self.batch_size, "batch_size")
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
        x = _check_inputs(x, self.shapes[0])
        return self._run(x, batch_size=batch_size, callback=callback)["output"].reshape(len(x), -1)

    def fit_transform(self, x, y=None, **kwargs):
        return self.fit(x, **kwargs).transform(x)

    def close(self):
        for stage in self.stages:
            stage.close()


# -- Brian2 reference of the frozen stack -----------------------------------------------------

def _conv_synapses(in_shape, layer, pool_in=1, pre_shape=None):
    """(i, j, kernel index) of the unrolled synapses of one conv layer.

    ``in_shape`` is the (C, H, W) shape the conv sees; with ``pool_in`` > 1 the presynaptic
    neurons are the un-pooled neurons of the layer below (shape (C, H*pool, W*pool)) and every
    one of them connects to the pooled cell's targets (average pooling folded into the
    synapses: the weight is divided by pool**2 by the caller).
    Returns arrays i (pre index), j (post index), widx (flat index into kernels).
    """
    C, H, W = in_shape
    _, preH, preW = pre_shape if pre_shape is not None else in_shape
    K, k, st, pad = layer.n_kernels, layer.kernel_size, layer.stride, layer.padding
    _, Ho, Wo = layer.conv_shape(in_shape)
    ii, jj, ww = [], [], []
    ko, yo, xo = np.meshgrid(np.arange(K), np.arange(Ho), np.arange(Wo), indexing="ij")
    post = (ko * Ho + yo) * Wo + xo
    for c in range(C):
        for dy in range(k):
            for dx in range(k):
                y = yo * st - pad + dy
                xx = xo * st - pad + dx
                ok = (y >= 0) & (y < H) & (xx >= 0) & (xx < W)
                widx = ((ko * C + c) * k + dy) * k + dx
                for py in range(pool_in):
                    for px in range(pool_in):
                        pre = (c * preH + y * pool_in + py) * preW + xx * pool_in + px
                        ii.append(pre[ok])
                        jj.append(post[ok])
                        ww.append(widx[ok])
    return np.concatenate(ii), np.concatenate(jj), np.concatenate(ww)


def brian2_stack_spikes(stack: SpikingConvStack, input_spikes):
    """The frozen stack as a Brian2 network (runtime device) on given input spikes.

    ``input_spikes`` is a bool array ``(T, B, C, H, W)``; each image is simulated as its own
    copy of the network (block-diagonal synapses) in one run. Unrolled synapses carry the
    kernel elements as weights; average pooling is folded into the next layer's synapses
    (weight / pool**2); lateral inhibition connects the feature maps of one position. Returns
    a list per stage of lists per pass of bool arrays (T, B, K, H', W') of excitatory spikes.
    Only 'avg' pooling between stages is supported (spiking max pooling needs extra neurons).
    """
    x = np.asarray(input_spikes, dtype=bool)
    T, B = x.shape[:2]
    dt = stack.dt
    shape = tuple(x.shape[2:])
    n_in = int(np.prod(shape))
    tt, bb, *rest = np.nonzero(x)
    flat = np.ravel_multi_index(tuple(rest), shape) if len(tt) else np.zeros(0, int)
    gen = b2.SpikeGeneratorGroup(B * n_in, bb * n_in + flat, tt * dt, dt=dt, name="input")
    objects = [gen]
    monitors = []
    pre_group, pre_shape, pre_pool = gen, shape, 1

    def feedforward(pre, pre_shape, pre_pool, in_shape, post, layer, name):
        pre_i, post_j, widx = _conv_synapses(in_shape, layer, pre_pool, pre_shape)
        n_pre, n_post = int(np.prod(pre_shape)), post.N // B
        syn = b2.Synapses(pre, post, "w : 1", on_pre=f"{layer.exc_model.input_variable}_post += w",
                          name=name, dt=dt)
        syn.connect(i=(np.arange(B)[:, None] * n_pre + pre_i[None]).ravel(),
                    j=(np.arange(B)[:, None] * n_post + post_j[None]).ravel())
        syn.w = np.tile(layer.kernels.reshape(-1)[widx] / pre_pool ** 2, B)
        return syn

    for si, stage in enumerate(stack.stages):
        in_shape = pre_shape if pre_pool == 1 else (pre_shape[0], pre_shape[1] // pre_pool,
                                                     pre_shape[2] // pre_pool)
        block_in = (pre_group, pre_shape, pre_pool, in_shape)     # for the additive form
        conv = _stage_layer(stage).conv_shape(in_shape)
        n_out = int(np.prod(conv))
        stage_mons = []
        for p in range(_stage_passes(stage)):
            layer = _pass_layer(stage, p)
            exc = layer.exc_model.neuron_group(B * n_out, name=f"exc_{si}_{p}", dt=dt)
            exc.plastic = 0
            exc.v = _v_rest(layer.exc_model) * b2.volt
            exc.theta = np.tile(np.repeat(layer.theta, n_out // layer.n_kernels), B) * b2.volt
            inh = layer.inh_model.neuron_group(B * n_out, name=f"inh_{si}_{p}", dt=dt)
            inh.v = _v_rest(layer.inh_model) * b2.volt
            syn = [feedforward(pre_group, pre_shape, pre_pool, in_shape, exc, layer, f"ff_{si}_{p}")]
            if p and _additive(stage):         # y_r = B(y_(r-1) + x): the block's input too
                syn.append(feedforward(*block_in, exc, layer, f"ffx_{si}_{p}"))
            ei = b2.Synapses(exc, inh, on_pre=f"{layer.inh_model.input_variable}_post += {layer.w_exc_inh!r}",
                             name=f"ei_{si}_{p}", dt=dt)
            ei.connect(j="i")
            positions = n_out // layer.n_kernels
            ie = b2.Synapses(inh, exc, on_pre=f"gi_post += {layer.w_inh_exc!r}", name=f"ie_{si}_{p}",
                             dt=dt)
            # same image, same position (index modulo positions), another feature map
            bq, k1, k2 = np.meshgrid(np.arange(B * positions), np.arange(layer.n_kernels),
                                     np.arange(layer.n_kernels), indexing="ij")
            other = k1 != k2
            b_of, q_of = bq[other] // positions, bq[other] % positions
            ie.connect(i=b_of * n_out + k1[other] * positions + q_of,
                       j=b_of * n_out + k2[other] * positions + q_of)
            mon = b2.SpikeMonitor(exc, name=f"mon_{si}_{p}")
            if getattr(stack, "lateral_inhibition", True):
                objects += [exc, inh, *syn, ei, ie, mon]
            else:                       # extraction without lateral inhibition
                objects += [exc, *syn, mon]
            stage_mons.append((mon, n_out, conv))
            pre_group, pre_shape, pre_pool = exc, conv, 1
            in_shape = conv
        monitors.append(stage_mons)
        layer = _stage_layer(stage)
        if layer.pool > 1:
            if layer.pooling != "avg":
                raise ConvSTDPError("the Brian2 reference supports only 'avg' pooling between "
                                    f"stages, stage {si} uses {layer.pooling!r}")
            pre_pool = layer.pool
    net = b2.Network(*objects)
    net.run(T * dt, namespace={})
    if b2.get_device().__class__.__name__ != "RuntimeDevice":
        b2.device.build(run=True, compile=True, with_output=False)
    out = []
    for stage_mons in monitors:
        st = []
        for mon, n_out, conv in stage_mons:
            arr = np.zeros((T, B * n_out), dtype=bool)
            arr[np.round(np.asarray(mon.t / dt)).astype(int), np.asarray(mon.i)] = True
            st.append(arr.reshape(T, B, *conv))
        out.append(st)
    return out


# -- hybrid readouts and energy ---------------------------------------------------------------

#: Readouts of the spiking features, all trained by gradient descent with
#: :class:`brainsnn.learn.agd.AGDClassifier` (the package's trainable stage):
#: ``linear`` (artificial), ``mlp`` (artificial ReLU hidden layer), ``spiking`` (LIF hidden
#: layer driven by the features as a constant current, surrogate gradients through T steps),
#: ``conv`` (artificial: a 3x3 ReLU convolution over the feature maps (C, H, W), 2x2 average
#: pooling, a linear output layer; it reads maps, not flat features).
READOUTS = ("linear", "mlp", "spiking", "conv")


def _features(features):
    """Spike-count features: finite and >= 0 (any shape)."""
    arr = np.asarray(features)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ConvSTDPError(f"features must be spike counts (numbers), got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ConvSTDPError("features hold NaN or infinite values; expected spike counts")
    if arr.size and arr.min() < 0:
        raise ConvSTDPError(f"features hold negative values (min {arr.min()}); expected "
                            "spike counts >= 0")
    return arr


class FeatureScaler(Params):
    """Scales spike-count features into [0, 1] (``fit`` on training features only).

    ``x / scale`` clipped to 1, where ``scale`` is the ``percentile`` of the positive
    training feature values (the readouts take inputs in [0, 1]).
    """

    def __init__(self, percentile=99.5):
        self.percentile = percentile

    def fit(self, features, y=None):
        """Learn ``scale_`` from training features (finite, >= 0); returns self."""
        if not 0 < float(self.percentile) <= 100:
            raise ConvSTDPError(f"percentile must be in (0, 100], got {self.percentile!r}")
        features = _features(features)
        # only the positive entries are copied (to float64): all of them would not fit the
        # memory with 100,000 images of 12,544 counts
        self.scale_ = positive_percentile(features[features > 0].astype(np.float64),
                                          float(self.percentile))
        return self

    def transform(self, features):
        if not hasattr(self, "scale_"):
            raise ConvSTDPError("FeatureScaler: call fit() on the training features first")
        features = _features(features)
        return np.clip(features.astype(np.float32) / self.scale_, 0, 1).astype(np.float32)

    def fit_transform(self, features, y=None):
        return self.fit(features).transform(features)


def make_readout(kind="linear", n_classes=10, hidden=256, loss="softmax", loss_options=None,
                 T=8, epochs=30, batch_size=128, lr=1e-3, weight_decay=0.0, seed=0,
                 torch_device="cpu", verbose=False, max_minutes=None, channels=32,
                 augment=None):
    """A readout (:class:`brainsnn.learn.agd.AGDClassifier`) of ``kind`` in :data:`READOUTS`.

    ``loss`` is ``'softmax'`` or ``'stochmax'`` (:mod:`brainsnn.learn.losses`); ``T`` is used by
    the spiking readout only (the artificial ones run one step); ``hidden`` by the mlp and
    spiking readouts, ``channels`` by the conv readout. ``augment`` (conv readout only:
    the others read flat features) is an :data:`brainsnn.learn.agd.AUGMENTATIONS` entry;
    'shift' translates the feature maps, as a translation of the image would (the kernels
    are applied at every position; one map pixel is ``pool`` image pixels).
    """
    from brainsnn.engine.network import avgpool, conv, flatten, linear
    from brainsnn.learn.agd import AGDClassifier

    if kind not in READOUTS:
        raise ConvSTDPError(f"readout must be one of {READOUTS}, got {kind!r}")
    if augment is not None and kind != "conv":
        raise ConvSTDPError(f"augment applies to the conv readout (feature maps) only, not "
                            f"to {kind!r}")
    if kind == "linear":
        specs, steps = [linear(n_classes, kind="artificial", bias=True)], 1
    elif kind == "mlp":
        specs, steps = [linear(hidden, kind="artificial", bias=True),
                        linear(n_classes, kind="artificial", bias=True)], 1
    elif kind == "conv":
        specs, steps = [conv(channels, kind="artificial", kernel_size=3, bias=True), avgpool(2),
                        flatten(), linear(n_classes, kind="artificial", bias=True)], 1
    else:
        specs, steps = [linear(hidden, kind="spiking"), linear(n_classes, kind="spiking")], int(T)
    return AGDClassifier(specs, T=steps, encoder="direct", loss=loss, loss_options=loss_options,
                         epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         seed=seed, device=torch_device, verbose=verbose, max_minutes=max_minutes,
                         augment=augment)


def stack_energy(stack: SpikingConvStack, x, run_result, e_ac=None):
    """Energy per image (J) of every logical conv layer of ``stack``, as defined in this project.

    A spiking conv layer costs its synaptic operations, MACs x (mean input spikes per input
    neuron over the presentation), times E_AC (:mod:`brainsnn.analysis.energy`). ``run_result`` is the
    dict of :meth:`SpikingConvStack.run` on images ``x`` (its ``rates``). Returns
    ``{name: {"energy", "macs", "input_spikes_per_neuron", "operations", "kind", "op_type"}}``.
    """
    from brainsnn.analysis.energy import E_AC, layer_energy

    e_ac = E_AC if e_ac is None else e_ac
    x = np.asarray(x, dtype=np.float64)
    # first layer: Poisson input, expected spikes per pixel = p * f_in * t_on
    in_spikes = float(x.mean()) * float(stack.input_rate * stack.dt) * stack.steps
    out, shape = {}, stack.input_shape
    for si, stage in enumerate(stack.stages):
        layer = _stage_layer(stage)
        block_in_spikes = in_spikes
        for p in range(_stage_passes(stage)):
            conv = layer.conv_shape(shape)
            macs = int(np.prod(conv)) * layer.n_inputs
            if p and _additive(stage):                 # the block's input arrives again
                in_spikes += block_in_spikes
            energy, ops, op_type = layer_energy("spiking", macs, in_spikes, e_ac=e_ac)
            name = layer.name if _stage_passes(stage) == 1 else _pass_name(stage, p)
            out[name] = {"energy": energy, "macs": macs, "input_spikes_per_neuron": in_spikes,
                         "operations": ops, "kind": "spiking", "op_type": op_type}
            rate = run_result["rates"][si][p]          # spikes per neuron per step
            in_spikes = rate * stack.steps             # spikes per neuron per image
            shape = conv
        if layer.pool > 1:
            # average pooling: a pooled unit carries the window's spikes / area; spiking max
            # pooling at most one spike per step (upper bound: the same count)
            shape = stage.output_shape(stack.shapes[si])
    return out
