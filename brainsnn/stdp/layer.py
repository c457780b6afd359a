"""The convolutional STDP layer: kernels shared over positions, learned by STDP on patches
presented over time to a winner-take-all network of Diehl & Cook neurons, as defined in this
project (docs/stdp.md)."""
from __future__ import annotations

import time

import brian2 as b2
import numpy as np
import torch
import torch.nn.functional as F

from brainsnn.brian.plasticity import make_rule
from brainsnn.brian.wta import DiehlCookNetwork, model_dict
from brainsnn.errors import ConvSTDPError
from brainsnn.models import DIEHL_COOK_EXCITATORY, DIEHL_COOK_INHIBITORY, NeuronModel
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

__all__ = ["CONV_EXCITATORY", "ConvSTDPLayer", "extract_patches", "conv_output_shape",
           "POOL_KINDS"]

POOL_KINDS = ("avg", "max", "none")




def positive_count(value, name, minimum=1):
    return positive_int(value, name, ConvSTDPError, minimum)


def check_quantity(name, value, unit):
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


def check_images(x, shape, name="x"):
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
            positive_count(getattr(self, label), label)
        positive_count(self.padding, "padding", minimum=0)
        if self.pool_kind not in POOL_KINDS:
            raise ConvSTDPError(f"pool_kind must be one of {POOL_KINDS}, got {self.pool_kind!r}")
        for label, unit in (("f_max", b2.Hz), ("t_on", b2.second), ("t_off", b2.second),
                            ("dt", b2.second)):
            check_quantity(label, getattr(self, label), unit)
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
                "learning": "patches", "exc_model": model_dict(self.exc_model),
                "inh_model": model_dict(self.inh_model)}

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
        x = check_images(x, (self.in_channels, *np.shape(x)[-2:]))
        self.output_shape(x.shape[1:])
        rng = np.random.default_rng([self.seed, 1])
        return self.fit_patches(self.sample_patches(x, self.n_patches, rng), callback=callback)

    def close(self):
        """Release the compiled Brian2 project of the learning network."""
        if getattr(self, "network_", None) is not None:
            self.network_.close()
