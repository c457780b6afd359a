"""The winner-take-all STDP network of Diehl & Cook (2015), as defined in this project.

784 Poisson inputs (one per pixel) -> N excitatory adaptive-threshold neurons (plastic STDP
synapses, all-to-all) -> N inhibitory neurons (one-to-one, ``w_exc_inh``) -> back to every
excitatory neuron except the one that drove it (``w_inh_exc``): lateral inhibition makes the
layer a soft winner-take-all. Each image is shown for ``t_on`` (350 ms) and followed by a
``t_off`` (150 ms) rest without input; at the start of each image the incoming weights of
every excitatory neuron are rescaled so that they sum to ``w_target`` (78).

How it runs (docs/stdp.md):

* one long ``run()`` per chunk of ``chunk_size`` images; the input rates come from a 2-D
  :class:`~brian2.TimedArray` (one row per image), a gate expression on ``t_in_timesteps``
  silences the rest periods, and a 1-D TimedArray ``learn(t)`` switches learning on or off
  per image (``plastic`` of the excitatory neurons: STDP, threshold growth and decay);
* per-image operations are ``run_regularly`` code: set ``plastic``; weight normalisation
  (each synapse keeps ``wsum_post``, its neuron's incoming weight sum, up to date when it
  changes ``w``, so normalising is one multiplication per synapse per image);
* on ``cpp_standalone``/``cuda_standalone`` the project is compiled once; every chunk is
  ``device.run(run_args=...)`` with new TimedArray values, weights, thresholds and
  membrane potentials (no recompilation). On the runtime device the network is rebuilt per
  chunk (Cython code is cached). The state between chunks is (w, theta, v) only: traces
  and conductances restart from zero at each chunk (they have decayed during the rest).
* every chunk gets its own random seed, derived from ``seed`` and the chunk counter, so a
  run resumed from a saved state (:meth:`get_state`/:meth:`set_state`) continues exactly
  as the uninterrupted run would have.

The neurons' membranes are integrated by linearly implicit Euler (:func:`stable_neuron_model`;
everything else as the models say, i.e. forward Euler like Diehl & Cook's code): with forward
Euler, ~30 inhibitory spikes in one time step (easily reached at N=400) throw ``v`` below
``v_inh`` and back above threshold, and the layer then fires at its maximal rate for ever.
A training chunk without any excitatory spike warns (:class:`SilentNetworkWarning`), and the
normalisation sets weights below ``W_FLUSH * w_max`` to 0 (no slow denormal numbers).

Images that make fewer than ``min_spikes`` excitatory spikes are shown again with the input
rate raised by ``f_boost`` (Diehl & Cook's rule), here chunk-wise: they are queued at the
start of the next chunk (``min_spikes=0`` turns this off). When a pass over the training
images has no new image left, the images still pending get one last chunk and are then not
shown again. A chunk with fewer images than ``chunk_size`` (the re-presentations at the end
of a pass or of an inference, the last images) stops one time step after the rest of its last
image (cpp_standalone: a ``run_regularly`` sets Brian2's stop flag at the first blank image;
runtime: a shorter run; cuda_standalone chunks keep their full length), so it costs what it
simulates; its final potentials are those of that
step. With learning off
(:meth:`DiehlCookNetwork.transform`) an image is shown at two higher rates at once per
round (the lowest one that reaches ``min_spikes`` counts).
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import time
import warnings
from collections import deque

import numpy as np
import brian2 as b2

from brainsnn.brian import devices
from brainsnn.brian.encoding import EncodingError, flatten_images, gate_expression, steps_per
from brainsnn.models import DIEHL_COOK_EXCITATORY, DIEHL_COOK_INHIBITORY, ModelError, NeuronModel
from brainsnn import paths
from brainsnn.brian.defaults import ETA_FINAL, NU_POST
from brainsnn.brian.plasticity import SynapseModel, triplet_stdp
from brainsnn.errors import STDPError, SilentNetworkWarning  # noqa: F401
from brainsnn.params import Params
from brainsnn.validation import check_finite

__all__ = ["STDPError", "SilentNetworkWarning", "DiehlCookNetwork", "chunk_seed",
           "stable_neuron_model", "W_FLUSH", "UNTRAINED_CORRELATION"]

#: Weights below this are set to 0 by the per-image normalisation. A weight whose input
#: never spikes only shrinks (by the normalisation factor, < 1, image after image) and would
#: end as a denormal number, on which every multiplication is ~100x slower; 1e-12 of w_max
#: changes no conductance measurably (and additive potentiation restarts from 0 the same way).
W_FLUSH = 1e-12

#: A neuron whose input weights still correlate above this with its random initial ones has
#: not learned a receptive field (after one pass at N = 6,400 with theta_plus 0.05 or 0.2 mV
#: the correlations are near 1 or near 0, few between; a convention where they are not).
UNTRAINED_CORRELATION = 0.5

_SEED_CODE = """
{
    const char* _brainsnn_seed = getenv("BRAINSNN_SEED");
    if (_brainsnn_seed != NULL)
        for (int _i=0; _i<(int)brian::_random_generators.size(); _i++)
            brian::_random_generators[_i].seed(strtoull(_brainsnn_seed, NULL, 10) + _i);
}
"""






def _stop_at_blank_python(active):
    return active    # the runtime device runs only the chunk's images instead


#: ``stop_at_blank(active)``: 1 for an image of the chunk; at the first blank image (0) it
#: sets the standalone program's stop flag, which ends the run after the current time step.
_STOP_AT_BLANK = b2.Function(_stop_at_blank_python, arg_units=[1], return_unit=1)
_STOP_AT_BLANK.implementations.add_implementation(
    "cpp", "double _brainsnn_stop_at_blank(double active)\n"
           "{ if (active == 0) Network::_globally_stopped = true; return active; }\n",
    name="_brainsnn_stop_at_blank", compiler_kwds={"headers": ['"network.h"']})


def chunk_seed(seed: int, counter: int, stream: int = 0) -> int:
    """Seed of the ``counter``-th chunk run (``stream`` 0: training, 1: inference)."""
    ss = np.random.SeedSequence([int(seed), int(stream), int(counter)])
    return int(ss.generate_state(1, dtype=np.uint32)[0] % (2**31 - 1))


def stable_neuron_model(model: NeuronModel, variables=("v",)) -> NeuronModel:
    """``model`` with its membrane equation made unconditionally stable under forward Euler.

    Why: the membrane of a conductance-based neuron, ``tau_m dv/dt = (v_rest - v) - ge v +
    gi (v_inh - v)``, relaxes with the time constant ``tau_m / (1 + ge + gi)``. Forward Euler
    (the models' ``method``, as in Diehl & Cook's Brian 1 code) multiplies the distance to
    the equilibrium by ``1 - dt (1 + ge + gi) / tau_m`` per step: ``v`` overshoots past the
    reversal potential when ``ge + gi > tau_m/dt - 1`` and diverges beyond ``2 tau_m/dt - 1``
    (399 for the excitatory neuron at dt 0.5 ms). Lateral inhibition adds ``w_inh_exc`` = 17
    per inhibitory spike, and N=400 has 399 inhibitory inputs per neuron: ~30 inhibitory
    spikes in one step throw ``v`` below ``v_inh`` and back above threshold, so inhibition
    itself makes neurons fire, which makes more inhibition; the whole layer then fires at
    its maximal rate with or without input and theta runs away (an N=400 training run went
    that way after ~2,900 images and was silent ever after).

    The fix, for each variable ``x`` of ``variables`` whose equation ``dx/dt = A x + B`` is
    linear in ``x`` (``A``, ``B`` may depend on other variables, e.g. the conductances):
    ``dx/dt = f`` becomes ``dx/dt = f / (1 - dt A)``. One forward Euler step of it is the
    linearly implicit (backward) Euler step ``x' = (x + dt B) / (1 - dt A)`` of the original
    equation: ``v'`` is a weighted mean of ``v``, the leak and the reversal potentials with
    positive weights, so it stays between them for any conductance (no overshoot, no spike
    from inhibition); for the conductances of normal activity (``dt |A|`` ~ 0.01) the step
    differs from forward Euler's by ~1 %. Everything else (the conductance decays, traces,
    threshold) stays exactly as in the Euler-integrated model, and it costs one division
    per neuron and step (exponential Euler would cost an ``exp()`` and slow N=400 training
    down twofold). Models not integrated by ``"euler"`` are returned unchanged.

    ``variables``: the membrane potential(s) to treat so (default ``("v",)``).
    """
    if model.method != "euler":
        return model
    # deferred import: Brian2's helper that splits dx/dt into A x + B (with sympy)
    from brian2.stateupdaters.exponential_euler import get_conditionally_linear_system
    import sympy
    from brian2.parsing.sympytools import sympy_to_str

    try:
        system = get_conditionally_linear_system(b2.Equations(model.equations))
    except ValueError as exc:
        raise STDPError(f"model {model.name!r}: cannot make {', '.join(variables)} implicit: "
                        f"the equations are not linear in them ({exc})") from exc
    equations = model.equations
    for var in variables:
        if var not in system:
            raise STDPError(f"model {model.name!r}: {var!r} is not a differential variable "
                            "linear in itself")
        coefficient = sympy_to_str(sympy.sympify(system[var][0]))
        pattern = re.compile(rf"^(\s*)d{var}/dt\s*=\s*(.+?)\s*:(.*)$", flags=re.M)
        if len(pattern.findall(equations)) != 1:
            raise STDPError(f"model {model.name!r}: no single line 'd{var}/dt = ...' found")
        equations = pattern.sub(lambda m: f"{m.group(1)}d{var}/dt = ({m.group(2)}) / "
                                          f"(1 - dt * ({coefficient})) :{m.group(3)}",
                                equations)
    return model.replace(equations=equations)


def _q(value, unit):
    """A float of ``value`` expressed in ``unit`` (for JSON-able configs)."""
    return float(value / unit)


#: The default STDP rule: the triplet rule of Diehl & Cook's code with presynaptic traces on
#: the input neurons, at the learning rates of the ``diehl_cook`` protocol.
PROTOCOL_RULE = triplet_stdp(nu_pre=0.0001, nu_post=NU_POST["triplet"], traces="neuron")

#: The training state (see :meth:`DiehlCookNetwork.get_state`) and its bookkeeping: made from
#: the seed at first use (or by :meth:`~DiehlCookNetwork.reset_state`), not by ``__init__``.
_STATE = ("weights", "theta", "v_exc", "v_inh", "position", "passes", "train_runs", "pending",
          "images_presented", "silent_chunks")


class DiehlCookNetwork(Params):
    """Unsupervised WTA STDP layer with the scikit-learn interface (``fit``/``transform``,
    ``get_params``/``set_params``).

    The defaults are those of the ``diehl_cook`` protocol: the triplet rule
    (:data:`PROTOCOL_RULE`) and plasticity falling to ``eta_final`` = 0.125 over a pass.
    The parameters are stored as given and checked at first use; the state (``weights``,
    ``theta``, ...) is made from ``seed`` at first use.

    Parameters
    ----------
    n_neurons : int
        N, the number of excitatory (and of inhibitory) neurons.
    exc_model, inh_model : NeuronModel
        Excitatory (needs ``input_variable``, ``inhibitory_variable`` and a shared
        ``plastic`` gate: 0 with learning off, the plasticity factor in (0, 1] during
        training) and inhibitory neuron models.
    rule : SynapseModel
        STDP rule of the input synapses (:mod:`brainsnn.brian.plasticity`), gated by
        ``plastic_post`` (default :data:`PROTOCOL_RULE`: ``triplet_stdp(nu_pre=0.0001,
        nu_post=0.08, traces="neuron")``, the rule of Diehl & Cook's code at the protocol's
        rates; ``diehl_cook_stdp(traces="neuron")`` is the power-law rule).
    device : {"runtime", "cpp_standalone", "cuda_standalone"}
    chunk_size : int
        Images per long run (the compiled program's length).
    seed : int
        Fixes the initial weights (numpy) and every chunk's Poisson spikes (Brian2).
    dt : Quantity (time)
        Simulation time step (0.5 ms).
    t_on, t_off : Quantity (time)
        Presentation and rest time per image (350 ms, 150 ms).
    f_max : Quantity (rate)
        Input rate of a pixel of intensity 1 (63.75 Hz).
    f_boost : Quantity (rate)
        Added to ``f_max`` at each re-presentation of an image with < ``min_spikes`` spikes.
    min_spikes, max_repeats : int
        Re-presentation rule (0: off) and the most re-presentations of one image.
    w_target : float
        Sum of each excitatory neuron's incoming weights after normalisation (78).
    w_init : (float, float)
        Initial weights uniform in this range (before the first normalisation).
    w_exc_inh, w_inh_exc : float
        Conductance increments exc->inh (one-to-one) and inh->exc (all but self).
    inhibitory_variable : str
        Excitatory neuron variable that the inhibitory spikes increment.
    n_inputs : int
        Number of input pixels.
    threads : int
        OpenMP threads of cpp_standalone.
    directory : str, optional
        Standalone project directory (reusing one with the same network skips compilation).
        Default: the cache folder of the network's hash (:func:`brainsnn.paths.standalone_dir`),
        the folder the ``diehl_cook`` protocol uses, so a network is compiled once.
    codegen_target : {None, "cython", "numpy"}
        Runtime device only: Brian2's code generation target (None: Brian2's default;
        "numpy" needs no compiler, for tiny networks in tests).
    integration : {"stable", "model"}
        How the neurons' membranes are integrated. "stable" (default): as
        :func:`stable_neuron_model` makes them (linearly implicit Euler for ``v``, stable for
        any conductance; all else as in the models); "model": the models' own forward Euler
        (as Diehl & Cook's code), which diverges when many inhibitory neurons fire in the
        same step (it wrecked N=400 training) and is kept only to reproduce earlier runs.
    eta_final : float in (0, 1]
        Plasticity at the end of a training pass. During training the ``plastic`` gate
        (which multiplies every STDP weight change and the threshold growth) falls linearly
        from 1 at the first image of the pass to ``eta_final`` at the last one; weight
        normalisation is unaffected. 0.125 (default, with the triplet rule's rates); 1:
        constant plasticity, as Diehl & Cook.
    """

    def __init__(self, n_neurons=100, *, exc_model: NeuronModel = DIEHL_COOK_EXCITATORY,
                 inh_model: NeuronModel = DIEHL_COOK_INHIBITORY,
                 rule: SynapseModel = PROTOCOL_RULE,
                 device="cpp_standalone", chunk_size=1000, seed=0, dt=0.5 * b2.ms,
                 t_on=350 * b2.ms, t_off=150 * b2.ms, f_max=63.75 * b2.Hz,
                 f_boost=31.875 * b2.Hz, min_spikes=5, max_repeats=10, w_target=78.0,
                 w_init=(0.003, 0.303), w_exc_inh=10.4, w_inh_exc=17.0,
                 inhibitory_variable="gi", n_inputs=784, threads=1, directory=None,
                 codegen_target=None, integration="stable", eta_final=ETA_FINAL["triplet"]):
        self.n_neurons, self.exc_model, self.inh_model, self.rule = (n_neurons, exc_model,
                                                                     inh_model, rule)
        self.device, self.chunk_size, self.seed = device, chunk_size, seed
        self.dt, self.t_on, self.t_off, self.f_max, self.f_boost = dt, t_on, t_off, f_max, f_boost
        self.min_spikes, self.max_repeats = min_spikes, max_repeats
        self.w_target, self.w_init = w_target, w_init
        self.w_exc_inh, self.w_inh_exc = w_exc_inh, w_inh_exc
        self.inhibitory_variable, self.n_inputs = inhibitory_variable, n_inputs
        self.threads, self.directory, self.codegen_target = threads, directory, codegen_target
        self.integration, self.eta_final = integration, eta_final

    def __setattr__(self, name, value):
        # the state is made whole at first use: setting one part of it (weights of a saved
        # network, say) makes the rest first, so that the first use keeps what was set
        if name in _STATE and "weights" not in self.__dict__ \
                and not self.__dict__.get("_making_state", False):
            self.reset_state()
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # called only for attributes not set yet: the state, made at first use
        if name in _STATE:
            self.reset_state()
            return self.__dict__[name]
        if name == "timings":
            self.timings = {"compile": 0.0, "train": 0.0, "inference": 0.0}
            return self.timings
        if name == "_built":    # standalone: dict of the compiled project's Brian2 objects
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def period(self):
        """Presentation plus rest time of one image."""
        return self.t_on + self.t_off

    @property
    def steps_per_image(self):
        try:
            return steps_per(self.period, self.dt)
        except EncodingError as exc:
            raise STDPError(str(exc)) from exc

    @property
    def gate(self):
        """Brian2 expression: 1 during ``t_on`` of each period, else 0."""
        try:
            return gate_expression(self.t_on, self.period, self.dt)
        except EncodingError as exc:
            raise STDPError(str(exc)) from exc

    # -- checks -----------------------------------------------------------------------
    def _check_params(self):
        """Check every parameter (at first use; ``__init__`` only stores them)."""
        for label in ("n_neurons", "n_inputs", "chunk_size"):
            self._positive_int(getattr(self, label), label)
        devices.check_device_name(self.device)
        for label, unit in (("dt", b2.second), ("t_on", b2.second), ("t_off", b2.second),
                            ("f_max", b2.Hz), ("f_boost", b2.Hz)):
            value = getattr(self, label)
            if b2.get_dimensions(value) != unit.dim or float(value) < 0:
                raise STDPError(f"{label} must be a non-negative quantity in units of "
                                f"{unit!r}, got {value!r}")
        self.steps_per_image, self.gate  # noqa: B018  (whole numbers of time steps)
        lo, hi = (float(v) for v in self.w_init)
        if not 0 <= lo <= hi:
            raise STDPError(f"w_init must be a range (low, high) with 0 <= low <= high, got "
                            f"{self.w_init}")
        if self.codegen_target not in (None, "cython", "numpy"):
            raise STDPError(f"codegen_target must be None, 'cython' or 'numpy', got "
                            f"{self.codegen_target!r}")
        if self.integration not in ("stable", "model"):
            raise STDPError(f"integration must be 'stable' or 'model', got "
                            f"{self.integration!r}")
        if not 0 < float(self.eta_final) <= 1:
            raise STDPError(f"eta_final must be in (0, 1], got {self.eta_final!r}")
        self._check_models()

    @staticmethod
    def _positive_int(value, name):
        if isinstance(value, bool) or int(value) != value or int(value) < 1:
            raise STDPError(f"{name} must be a positive integer, got {value!r}")
        return int(value)

    def _check_models(self):
        if not isinstance(self.exc_model, NeuronModel) or not isinstance(self.inh_model, NeuronModel):
            raise STDPError("exc_model and inh_model must be brainsnn.models.NeuronModel objects")
        if not isinstance(self.rule, SynapseModel):
            raise STDPError("rule must be a brainsnn.models.SynapseModel (see brainsnn.brian.plasticity)")
        exc_vars = set(self.exc_model.brian2_equations.names)
        for needed in ("v", "theta", "plastic", self.inhibitory_variable):
            if needed not in exc_vars:
                raise STDPError(f"excitatory model {self.exc_model.name!r} has no variable "
                                f"{needed!r}; the STDP network needs v, theta, a shared "
                                f"'plastic' flag and the inhibitory variable "
                                f"{self.inhibitory_variable!r}")
        if "w" not in self.rule.brian2_equations.names:
            raise STDPError(f"STDP rule {self.rule.name!r} has no weight variable 'w'")

    def config(self) -> dict:
        """The network's configuration as a JSON-able dict (units in the key names)."""
        self._check_params()
        return {
            "n_neurons": int(self.n_neurons), "n_inputs": int(self.n_inputs),
            "chunk_size": int(self.chunk_size), "device": self.device, "seed": int(self.seed),
            "dt_ms": _q(self.dt, b2.ms),
            "t_on_ms": _q(self.t_on, b2.ms), "t_off_ms": _q(self.t_off, b2.ms),
            "f_max_Hz": _q(self.f_max, b2.Hz), "f_boost_Hz": _q(self.f_boost, b2.Hz),
            "min_spikes": int(self.min_spikes), "max_repeats": int(self.max_repeats),
            "w_target": float(self.w_target), "w_init": [float(v) for v in self.w_init],
            "w_exc_inh": float(self.w_exc_inh), "w_inh_exc": float(self.w_inh_exc),
            "threads": int(self.threads), "integration": self.integration,
            "eta_final": float(self.eta_final),
            "exc_model": model_dict(self.exc_model), "inh_model": model_dict(self.inh_model),
            "rule": model_dict(self.rule),
        }

    def network_hash(self) -> str:
        """Hash of everything that goes into the compiled standalone program (the
        configuration but the seed, which the program reads when it runs); recorded in the
        project folder and checked before each chunk."""
        return config_hash({k: v for k, v in self.config().items() if k != "seed"})

    # -- state ------------------------------------------------------------------------
    def reset_state(self):
        """Initial weights (seeded numpy uniform in ``w_init``), thresholds and potentials."""
        self._check_params()
        self._making_state = True
        try:
            self.weights = self.initial_weights()
        finally:
            self._making_state = False
        ns = self.exc_model.namespace()
        self.theta = np.full(self.n_neurons, self._initial_value(self.exc_model, "theta", 0.0))
        self.v_exc = np.full(self.n_neurons, self._initial_value(self.exc_model, "v", float(ns.get("v_rest", 0))))
        ns_i = self.inh_model.namespace()
        self.v_inh = np.full(self.n_neurons, self._initial_value(self.inh_model, "v", float(ns_i.get("v_rest", 0))))
        self.position = 0        # index of the next new training image in the current pass
        self.passes = 0          # completed passes over the training images
        self.train_runs = 0      # chunk runs done while training (seeds the next one)
        self.pending = np.zeros((0, 2), dtype=np.int64)  # (image index, level) to re-present
        self.images_presented = 0  # presentations during training, re-presentations included
        self.silent_chunks = 0   # training chunks in a row without any excitatory spike
        return self

    def initial_weights(self, seed=None) -> np.ndarray:
        """The random initial input weights (n_inputs, N): numpy uniform in ``w_init``
        (dimensionless, in units of the excitatory conductance step), drawn with ``seed``
        (default this network's)."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        lo, hi = (float(v) for v in self.w_init)
        return lo + (hi - lo) * rng.random((self.n_inputs, self.n_neurons))

    def initial_weight_correlation(self, seed=None) -> np.ndarray:
        """Pearson correlation (N,) of each neuron's input weights with its initial ones: 1
        for a neuron that has not learned (weight normalisation only rescales), near 0 for a
        learned receptive field. Above :data:`UNTRAINED_CORRELATION` a neuron counts as
        untrained. ``seed``: that of the initial weights, default this network's (give the
        training run's seed where the network was rebuilt with another one, as
        ``network_from_results`` does for its inference input)."""
        self._check_state()
        w = self.weights - self.weights.mean(axis=0)
        w0 = self.initial_weights(seed)
        w0 -= w0.mean(axis=0)
        norm = np.sqrt((w * w).sum(axis=0) * (w0 * w0).sum(axis=0))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(norm > 0, (w * w0).sum(axis=0) / norm, 0.0)

    def _check_state(self):
        """The state must fit the parameters (they may have changed since it was made)."""
        w = np.asarray(self.weights)
        want = (self.n_inputs, self.n_neurons)
        shapes = {"theta": np.shape(self.theta), "v_exc": np.shape(self.v_exc),
                  "v_inh": np.shape(self.v_inh)}
        if w.shape != want or any(shape != (self.n_neurons,) for shape in shapes.values()):
            raise STDPError(f"the network's state (weights {w.shape}) does not fit n_inputs="
                            f"{self.n_inputs}, n_neurons={self.n_neurons}: call reset_state() "
                            "or fit() after changing them")

    @staticmethod
    def _initial_value(model, var, default):
        value = model.initial.get(var, default)
        if isinstance(value, str):
            value = eval(value, dict(vars(b2)),  # noqa: S307 (model initial-value string)
                         dict(model.namespace()))
        return float(value)

    def get_state(self) -> dict:
        """Everything needed to continue training exactly (numpy arrays and ints; SI units)."""
        return {"weights": self.weights.copy(), "theta": self.theta.copy(),
                "v_exc": self.v_exc.copy(), "v_inh": self.v_inh.copy(),
                "position": self.position, "passes": self.passes,
                "train_runs": self.train_runs, "pending": self.pending.copy(),
                "images_presented": self.images_presented}

    def set_state(self, state: dict):
        """Restore a state from :meth:`get_state` (e.g. read back from a results file)."""
        self._check_params()
        w = check_finite(state["weights"], "saved weights", error=STDPError)
        if w.shape != (self.n_inputs, self.n_neurons):
            raise STDPError(f"saved weights have shape {w.shape} but this network needs "
                            f"{(self.n_inputs, self.n_neurons)}")
        self.weights = w.copy()
        for name in ("theta", "v_exc", "v_inh"):
            arr = check_finite(state[name], f"saved {name}", (self.n_neurons,), STDPError)
            setattr(self, name, arr.copy())
        for name in ("position", "passes", "train_runs", "images_presented"):
            setattr(self, name, int(np.asarray(state[name])))
        self.pending = np.asarray(state["pending"], dtype=np.int64).reshape(-1, 2)
        return self

    # -- Brian2 objects -----------------------------------------------------------------
    def _objects(self, rates, learn):
        """Build the Brian2 objects for one chunk; ``rates`` (Hz, (chunk, inputs)), ``learn``."""
        n, n_in = self.n_neurons, self.n_inputs
        stim = b2.TimedArray(rates * b2.Hz, dt=self.period, name="stimulus")
        learn_ta = b2.TimedArray(learn, dt=self.period, name="learn")
        # 1 for the chunk's images, 0 for its blank padding (where the program stops)
        active = b2.TimedArray(np.ones(self.chunk_size), dt=self.period, name="active")
        # Poisson inputs as a NeuronGroup (what PoissonGroup does), with the rule's
        # presynaptic traces when they live on the neurons
        rule_traces = getattr(self.rule, "traces", "synapse") == "neuron"
        trace_ns = dict(self.rule.trace_parameters or {}) if rule_traces else {}
        stops = self.device == "cpp_standalone"
        inputs = b2.NeuronGroup(
            n_in, f"rates = stimulus(t, i) * {self.gate} : Hz\n"
                  + ("running : 1 (shared)\n" if stops else "")
                  + (self.rule.pre_equations if rule_traces else ""),
            # "rates > 0 and": no random number for silent inputs (background pixels, rest)
            threshold="rates > 0*Hz and rand() < rates * dt",
            reset=(self.rule.pre_reset or None) if rule_traces else None,
            method="exact", namespace={"stimulus": stim, **trace_ns, "active": active,
                                       "stop_at_blank": _STOP_AT_BLANK}, name="inputs")
        if stops:
            inputs.run_regularly("running = stop_at_blank(active(t))", dt=self.period,
                                 when="start", order=-1, name="stop_at_blank")
        exc_model, inh_model = self.simulated_models()
        if rule_traces:
            exc_model = self.rule.post_neuron(exc_model)
        exc_model = exc_model.extend(equations="wsum : 1\nnorm : 1")
        exc = exc_model.neuron_group(n, name="exc", namespace={"learn": learn_ta,
                                                               "w_target": self.w_target})
        inh = inh_model.neuron_group(n, name="inh")
        # keep wsum_post equal to the postsynaptic neuron's incoming weight sum
        track = {key: f"w_before = w\n{code}\nwsum_post += w - w_before"
                 for key, code in (("on_pre", self.rule.on_pre), ("on_post", self.rule.on_post))
                 if code.strip()}
        syn = self.rule.replace(**track).synapses(inputs, exc, name="input_exc")
        syn.connect(i=np.repeat(np.arange(n_in), n), j=np.tile(np.arange(n), n_in))
        exc.run_regularly("plastic = learn(t)\n"
                          "norm = 1 + int(plastic > 0) * int(wsum > 0) * (w_target / (wsum + int(wsum <= 0)) - 1)\n"
                          "wsum = wsum * norm",
                          dt=self.period, when="start", order=0, name="exc_normalise")
        # weights below W_FLUSH * w_max go to 0 (they would end as slow denormal numbers)
        syn.run_regularly("w = w * norm_post\n"
                          f"w = w * int(w >= {W_FLUSH * self._w_max()!r})",
                          dt=self.period, when="start", order=1, name="input_exc_normalise")
        ei = b2.Synapses(exc, inh, on_pre=f"{self.inh_model.input_variable}_post += w_exc_inh",
                         namespace={"w_exc_inh": self.w_exc_inh}, name="exc_inh")
        ei.connect(i=np.arange(n), j=np.arange(n))
        ie = b2.Synapses(inh, exc, on_pre=f"{self.inhibitory_variable}_post += w_inh_exc",
                         namespace={"w_inh_exc": self.w_inh_exc}, name="inh_exc")
        src, tgt = np.nonzero(~np.eye(n, dtype=bool))  # all pairs but i == j
        ie.connect(i=src, j=tgt)
        mon = b2.SpikeMonitor(exc, record=True, name="exc_spikes")
        net = b2.Network(inputs, exc, inh, syn, ei, ie, mon)
        return {"net": net, "stim": stim, "learn": learn_ta, "active": active,
                "inputs": inputs, "exc": exc,
                "inh": inh, "syn": syn, "mon": mon}

    def simulated_models(self):
        """The (excitatory, inhibitory) neuron models as the network integrates them."""
        if self.integration == "model":
            return self.exc_model, self.inh_model
        try:
            return stable_neuron_model(self.exc_model), stable_neuron_model(self.inh_model)
        except ModelError as exc:
            raise STDPError(str(exc)) from exc

    def _w_max(self):
        return float(self.rule.parameters.get("w_max", 1.0))

    def _set_values(self, objs):
        objs["syn"].w = self.weights.reshape(-1)
        objs["exc"].wsum = self.weights.sum(axis=0)
        objs["exc"].theta = self.theta * b2.volt
        objs["exc"].v = self.v_exc * b2.volt
        objs["inh"].v = self.v_inh * b2.volt

    def project_directory(self) -> str:
        """``directory``, else the cache folder keyed by the network's hash (one compilation
        per network, shared by every run of the same network)."""
        if self.directory:
            return self.directory
        return str(paths.standalone_dir(f"dc{self.n_neurons}_{self.device}_{self.network_hash()}"))

    def compile(self, generate_only=False):
        """Generate and compile the standalone project (once; no-op on the runtime device).

        ``generate_only=True`` (cuda_standalone) writes the CUDA project without looking for
        a GPU and without compiling it: a check of the code generation on a CPU machine.
        """
        if self._built is not None and self._built["generation"] != devices.generation():
            self._built = None      # Brian2 was reset since (e.g. by another network): rebuild
        if self.device == "runtime" or self._built is not None:
            return self
        t0 = time.perf_counter()
        directory = self.project_directory()
        # objects of an earlier build still alive would make Brian2 rename the new code
        # objects (..._1), i.e. new source files and a full recompilation
        gc.collect()
        devices.select_device(self.device, directory=directory, threads=self.threads,
                              generate_only=generate_only and self.device == "cuda_standalone")
        b2.defaultclock.dt = self.dt
        rates = np.zeros((self.chunk_size, self.n_inputs))
        objs = self._objects(rates, np.zeros(self.chunk_size))
        self._set_values(objs)
        if self.device == "cpp_standalone":
            b2.device.insert_code("before_network_run", _SEED_CODE)
        else:
            b2.seed(self.seed)
        objs["net"].run(self.chunk_size * self.period, namespace={})
        with devices.project_lock(directory):
            b2.device.build(directory=directory, compile=not generate_only, run=False,
                            with_output=False)
            if not generate_only:
                devices.record_network_hash(directory, self.network_hash())
        objs["directory"] = directory
        objs["generation"] = devices.generation()
        if generate_only:
            devices._reset_brian2()
            self.timings["compile"] += time.perf_counter() - t0
            return self
        self._built = objs
        self.timings["compile"] += time.perf_counter() - t0
        return self

    def close(self):
        """Forget the compiled project and return Brian2 to the runtime device."""
        if self._built is not None:
            devices._reset_brian2()
            self._built = None

    # -- one chunk ----------------------------------------------------------------------
    def _run_chunk(self, rates, learn, seed, n_images=None):
        """Run one chunk; return spike counts (chunk, N) and the final state arrays.

        ``n_images``: the chunk's images (its first rows; default all): the run stops one
        time step into the first blank image after them."""
        n_images = self.chunk_size if n_images is None else int(n_images)
        if self.device == "runtime":
            devices.select_device("runtime")
            if self.codegen_target:
                b2.prefs.codegen.target = self.codegen_target
            b2.defaultclock.dt = self.dt
            objs = self._objects(rates, learn)
            self._set_values(objs)
            b2.seed(seed)
            duration = self.chunk_size * self.period
            if n_images < self.chunk_size:   # as the standalone program stops
                duration = n_images * self.period + self.dt
            objs["net"].run(duration, namespace={})
        else:
            self.compile()
            objs = self._built
            active = (np.arange(self.chunk_size) < n_images).astype(np.float64)
            run_args = {objs["stim"]: rates * b2.Hz, objs["learn"]: learn,
                        objs["active"]: active,
                        objs["syn"].w: self.weights.reshape(-1),
                        objs["exc"].wsum: self.weights.sum(axis=0),
                        objs["exc"].theta: self.theta * b2.volt,
                        objs["exc"].v: self.v_exc * b2.volt,
                        objs["inh"].v: self.v_inh * b2.volt}
            os.environ["BRAINSNN_SEED"] = str(seed)  # read by _SEED_CODE in the program
            # runs of the same project by several processes share its folder: inputs are
            # written, the program run and its results read under the project's lock
            with devices.standalone_run(objs["directory"], self.network_hash(), run_args):
                return self._read_chunk(objs)
        counts, final = self._read_chunk(objs)
        devices._reset_brian2()
        return counts, final

    def _read_chunk(self, objs):
        """Spike counts (chunk, N) and final state arrays of the chunk just run (copies: the
        arrays of the runtime device are freed when Brian2 is reset)."""
        mon = objs["mon"]
        steps = np.round(np.array(mon.t[:] / self.dt)).astype(np.int64)
        image = np.minimum(steps // self.steps_per_image, self.chunk_size - 1)
        counts = np.zeros((self.chunk_size, self.n_neurons), dtype=np.int64)
        np.add.at(counts, (image, np.array(mon.i[:], dtype=np.int64)), 1)
        final = {"weights": np.array(objs["syn"].w[:], dtype=np.float64).reshape(self.n_inputs, self.n_neurons),
                 "theta": np.array(objs["exc"].theta[:] / b2.volt, dtype=np.float64),
                 "v_exc": np.array(objs["exc"].v[:] / b2.volt, dtype=np.float64),
                 "v_inh": np.array(objs["inh"].v[:] / b2.volt, dtype=np.float64)}
        return counts, final

    def _rates(self, pixels, items):
        """Input rates (Hz) of a chunk of (image index, level) items, padded with blanks."""
        rates = np.zeros((self.chunk_size, self.n_inputs))
        learn_rate = float(self.f_max)
        for row, (idx, level) in enumerate(items):
            rates[row] = pixels[idx] * (learn_rate + level * float(self.f_boost))
        return rates

    def _infer(self, pixels, callback=None, levels_per_round=2, run_items=None,
               capacity=None):
        """Spike counts of all images with learning off and the re-presentation rule.

        With learning off the presentations are independent, so an image that made fewer
        than ``min_spikes`` spikes is shown again at its next ``levels_per_round`` levels at
        once (in the next chunk); the lowest level that reaches ``min_spikes`` is kept.

        ``run_items(items)`` (default: one Brian2 chunk) returns the spike counts
        (len(items), N) of a list of (image index, level) presentations, at most
        ``capacity`` (default ``chunk_size``) of them.
        """
        capacity = self.chunk_size if capacity is None else int(capacity)
        if run_items is None:
            chunks = iter(range(2**62))

            def run_items(items):
                counts, _ = self._run_chunk(self._rates(pixels, items), np.zeros(self.chunk_size),
                                            chunk_seed(self.seed, next(chunks), 1), len(items))
                return counts
        out = np.zeros((len(pixels), self.n_neurons), dtype=np.int64)
        new = deque(range(len(pixels)))
        retry = deque()  # (index, level) presentations still to make
        candidates = {}  # index -> {level: counts} of the re-presentations so far
        waiting = {}     # index -> presentations of the current round not yet made
        done = 0

        def schedule(idx, first):
            levels = list(range(first, min(first + levels_per_round, self.max_repeats + 1)))
            retry.extend((idx, lv) for lv in levels)
            waiting[idx] = len(levels)

        while new or retry:
            items = []
            while retry and len(items) < capacity:
                items.append(retry.popleft())
            while new and len(items) < capacity:
                items.append((new.popleft(), 0))
            t0 = time.perf_counter()
            counts = run_items(items)
            for row, (idx, level) in enumerate(items):
                c = counts[row]
                if level == 0:
                    if c.sum() >= self.min_spikes or self.max_repeats == 0:
                        out[idx] = c
                        done += 1
                    else:
                        candidates[idx] = {}
                        schedule(idx, 1)
                    continue
                candidates[idx][level] = c
                waiting[idx] -= 1
                if waiting[idx]:
                    continue  # the round's other levels are in a later chunk
                cand = candidates[idx]
                good = [lv for lv in sorted(cand) if cand[lv].sum() >= self.min_spikes]
                if good or max(cand) >= self.max_repeats:
                    out[idx] = cand[good[0] if good else max(cand)]
                    del candidates[idx], waiting[idx]
                    done += 1
                else:
                    schedule(idx, max(cand) + 1)
            if callback is not None:
                callback({"done": done, "total": len(pixels),
                          "seconds": time.perf_counter() - t0})
        return out

    # -- public API ---------------------------------------------------------------------
    def _pixels(self, images):
        try:
            pixels = flatten_images(images)
        except EncodingError as exc:
            raise STDPError(str(exc)) from exc
        if pixels.shape[1] != self.n_inputs:
            raise STDPError(f"images have {pixels.shape[1]} pixels (shape {np.shape(images)[1:]}) "
                            f"but the network has {self.n_inputs} inputs (e.g. 28x28 MNIST)")
        return pixels

    def fit(self, images, y=None, callback=None, max_images=None):
        """Reset the state and train on one pass over ``images`` (labels ``y`` are ignored);
        returns self, with ``fit_seconds_``."""
        t0 = time.perf_counter()
        self.reset_state()
        self.partial_fit(images, callback=callback, max_images=max_images)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def partial_fit(self, images, y=None, callback=None, max_images=None, max_chunks=None):
        """Continue the current pass over ``images`` from :attr:`position` (resumable).

        ``callback(info)`` is called after every chunk with a dict: ``counts`` (spike counts
        of the images that were completed in this chunk, rows in ``indices`` order),
        ``neuron_spikes`` (each neuron's spikes in the whole chunk, re-presentations
        included), ``indices``, ``levels``, ``position``, ``seconds``, ``network`` (self). Saving
        :meth:`get_state` there makes the run resumable. ``max_images`` stops after that
        many new images and ``max_chunks`` after that many chunk runs (the pass continues
        at the next call; images waiting to be re-presented are kept in :attr:`pending`).
        """
        self._check_state()
        pixels = self._pixels(images)
        stop = len(pixels) if max_images is None else min(len(pixels), self.position + int(max_images))
        t_start = time.perf_counter()
        chunks = 0
        while self.position < stop or (len(self.pending) and stop == len(pixels)):
            if max_chunks is not None and chunks >= max_chunks:
                break
            chunks += 1
            items = [tuple(map(int, p)) for p in self.pending]
            n_new = max(0, min(self.chunk_size - len(items), stop - self.position))
            items += [(i, 0) for i in range(self.position, self.position + n_new)]
            if not items:
                break
            flags = np.zeros(self.chunk_size)
            flags[:len(items)] = self.plasticity([idx for idx, _ in items], len(pixels))
            t0 = time.perf_counter()
            counts, final = self._run_chunk(self._rates(pixels, items), flags,
                                            chunk_seed(self.seed, self.train_runs, 0),
                                            len(items))
            seconds = time.perf_counter() - t0
            self.train_runs += 1
            self.images_presented += len(items)
            self.weights, self.theta = final["weights"], final["theta"]
            self.v_exc, self.v_inh = final["v_exc"], final["v_inh"]
            self.position += n_new
            # at the end of the pass (no new image left) pending images get one more chunk
            last = self.position >= len(pixels)
            pending, done_idx, done_lvl, done_rows = [], [], [], []
            for row, (idx, level) in enumerate(items):
                if (counts[row].sum() < self.min_spikes and level < self.max_repeats
                        and not (last and n_new == 0)):
                    pending.append((idx, level + 1))
                else:
                    done_idx.append(idx)
                    done_lvl.append(level)
                    done_rows.append(row)
            self.pending = np.asarray(pending, dtype=np.int64).reshape(-1, 2)
            chunk_spikes = int(counts[:len(items)].sum())
            self.silent_chunks = 0 if chunk_spikes else self.silent_chunks + 1
            if not chunk_spikes:
                warnings.warn(self._silence_message(items), SilentNetworkWarning, stacklevel=2)
            if self.position >= len(pixels) and not len(self.pending):
                self.passes += 1
                self.position = 0
                stop = 0
            if callback is not None:
                callback({"counts": counts[done_rows],
                          "neuron_spikes": counts[:len(items)].sum(axis=0),
                          "indices": np.asarray(done_idx, dtype=np.int64),
                          "levels": np.asarray(done_lvl, dtype=np.int64),
                          "presented": len(items), "position": self.position,
                          "passes": self.passes, "seconds": seconds,
                          "chunk_spikes": chunk_spikes, "silent_chunks": self.silent_chunks,
                          "network": self})
        self.timings["train"] += time.perf_counter() - t_start
        return self

    def plasticity(self, indices, n_images):
        """The ``plastic`` gate of training images ``indices`` of a pass over ``n_images``."""
        progress = np.asarray(indices, dtype=np.float64) / max(n_images - 1, 1)
        return 1.0 - (1.0 - self.eta_final) * progress

    def _silence_message(self, items):
        levels = np.asarray([level for _, level in items])
        theta_mv = 1e3 * self.theta
        return (f"no excitatory spike in a whole training chunk ({len(items)} presentations, "
                f"{int((levels > 0).sum())} of them re-presentations at up to "
                f"{float(self.f_max + levels.max() * self.f_boost):.1f} Hz; "
                f"{self.silent_chunks} silent chunk(s) in a row): the network has stopped "
                f"learning. theta is {theta_mv.min():.1f} to {theta_mv.max():.1f} mV "
                f"(it starts at {1e3 * self._initial_value(self.exc_model, 'theta', 0.0):.0f} mV; "
                f"a theta far above that means runaway firing earlier in the run)")

    def transform(self, images, callback=None):
        """Excitatory spike counts (n, N) of ``images`` with learning off (state unchanged).

        Images with fewer than ``min_spikes`` spikes are shown again at higher rates (levels
        1 .. ``max_repeats``, two per round), as in training; the counts of the lowest level
        that reaches ``min_spikes`` (else of the highest level) are returned. ``callback(info)`` gets
        ``done``, ``total`` and ``seconds`` after each chunk.
        """
        self._check_state()
        pixels = self._pixels(images)
        t_start = time.perf_counter()
        out = self._infer(pixels, callback)
        self.timings["inference"] += time.perf_counter() - t_start
        return out

    @property
    def receptive_fields(self):
        """Weights as images, shape (N, 28, 28) for 784 inputs (else (N, n_inputs))."""
        side = int(round(np.sqrt(self.n_inputs)))
        w = self.weights.T
        return w.reshape(-1, side, side) if side * side == self.n_inputs else w


def model_dict(model) -> dict:
    """JSON-able description of an equation model (strings and parameters with units)."""
    out = {"name": model.name, "equations": model.equations, "method": model.method,
           "parameters": {k: str(v) for k, v in model.parameters.items()},
           "initial": {k: str(v) for k, v in model.initial.items()}}
    for field in ("threshold", "reset", "refractory", "input_variable", "on_pre", "on_post"):
        if hasattr(model, field):
            out[field] = str(getattr(model, field))
    return out


def config_hash(config: dict) -> str:
    """Short stable hash of a configuration (for standalone project directories)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
