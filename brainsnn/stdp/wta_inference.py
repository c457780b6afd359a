"""Batched inference of a trained Diehl & Cook network on the torch engine.

:class:`TorchWTAInference` reads a :class:`~brainsnn.brian.wta.DiehlCookNetwork`'s weights,
thresholds, potentials and neuron models and simulates many presentations at once with the
same equations (both neuron models through :class:`~brainsnn.engine.neuron.TorchNeuron`),
learning off. It mirrors one Brian2 chunk of the network per *lane*: a lane shows its images
one after the other (``t_on`` with Poisson input, ``t_off`` rest), starting from the
network's saved potentials with zero conductances; ``batch_size`` lanes run side by side.
The re-presentation rule is the network's own (:meth:`DiehlCookNetwork._infer`: images with
fewer than ``min_spikes`` spikes are shown again at raised rates, the lowest level that
reaches ``min_spikes`` counts).

One time step, in Brian2's schedule order (groups' state update, thresholds, synapses,
resets)::

    excitatory and inhibitory neurons: state update, threshold, reset  (TorchNeuron)
    input spikes: rand() < rate * dt for the pixels with a rate > 0 during t_on
    ge_exc += W[input spikes]            (input -> excitatory, on_pre ge_post += w)
    ge_inh += w_exc_inh * exc spikes     (one-to-one)
    gi_exc += w_inh_exc * (inh spikes of all other neurons)

Brian2 applies the synapses before the resets; the resets write only ``v`` (and ``theta``,
by ``plastic * theta_plus`` = 0 with learning off), the synapses only the conductances, so
the two orders give the same numbers. With learning off ``plastic`` is 0: ``theta`` stays
constant and the weight normalisation at each image start only sets weights below
``W_FLUSH * w_max`` to 0, done here once. Given the same input spike trains and float64, the
excitatory spikes are those of the Brian2 network (tested); the Poisson draws themselves
come from torch's generator, so counts agree with Brian2's in distribution, not draw by draw.

**The frozen step.** Where the network's models allow it (:func:`frozen_step_of`), both
groups run one fused step (:class:`FrozenDiehlCookStep`, through :func:`torch.compile`
where a compiler works) built from the generic steps' own expressions
(:func:`brainsnn.stdp.frozen.step_expressions`): refractoriness as an int32 step counter,
``theta`` a constant, the synapses from the excitatory to the inhibitory neurons and back
inside the step; the input spikes are added to ``ge`` in place, in Brian2's order. (The
conv layers' shortcut of not stepping the inhibitory neurons does not hold here: from
``v_rest`` a Diehl & Cook inhibitory neuron needs two steps to follow its partner, from
higher potentials one.) Its spikes are bit for bit those of the generic step (tested); on
the CPU the lanes run in blocks of ``CPU_LANE_BLOCK`` so that a block's state stays in the
caches.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from brainsnn.brian.wta import W_FLUSH, chunk_seed
from brainsnn.engine.devices import torch_device
from brainsnn.engine.neuron import TorchNeuron
from brainsnn.errors import STDPError
from brainsnn.stdp.frozen import (CompiledStep, compile_step_source, group_step_lines,
                                  step_expressions, theta_is_constant)

__all__ = ["FrozenDiehlCookStep", "TorchWTAInference", "frozen_step_of"]

#: Seed stream of the torch inference rounds (0: Brian2 training, 1: Brian2 inference).
SEED_STREAM = 2

#: Lanes simulated together on the CPU (a block's state, about 3 MB at N = 400 in float64,
#: stays in the shared cache); measured fastest of 32/64/128/256 lanes at N = 400.
CPU_LANE_BLOCK = 128


_PAIR_TEMPLATE = """
def _frozen_pair_step(v, ge, gi, last, v_i, ge_i, last_i, t_step, theta, counts):
{exc}{inh}    ge_i = ge_i + {w_exc_inh!r} * s
    gi = gi + {w_inh_exc!r} * (s_i.sum(1, keepdim=True) - s_i)
    return s, v, ge, gi, last, v_i, ge_i, last_i, counts + s
"""

#: Names of the inhibitory neurons' variables in the pair step (they receive no inhibition:
#: their ``gi`` stays 0 and is the constant 0.0 there).
_INH_NAMES = {"v": "v_i", "ge": "ge_i", "gi": "0.0", "not_refractory": "not_refractory_i"}


class FrozenDiehlCookStep(CompiledStep):
    """Both neuron groups of a frozen Diehl & Cook network, one Brian2-schedule step fused.

    State ``(v, ge, gi, last, v_i, ge_i, last_i, t_step, counts)``: ``v`` (volt), ``ge``,
    ``gi`` and the int32 step of the last spike of the excitatory neurons (lanes, N), the
    same of the inhibitory neurons (no ``gi``: nothing inhibits them), the step counter and
    the excitatory spike counts since the counts were last read.
    """

    def __init__(self, theta, step, refractory, source, compile):
        super().__init__()
        self.register_buffer("theta", theta.reshape(1, -1))
        self._step_fn, self.refractory, self.source = step, refractory, source
        self._compile_step(compile)

    def initial_state(self, v, v_i):
        """The lanes' state at the start of a chunk: potentials ``v``, ``v_i`` (lanes, N),
        no conductance, free of refractoriness."""
        zero = torch.zeros_like(v)
        free = [torch.full(v.shape, -r, dtype=torch.int32, device=v.device) for r in self.refractory]
        t_step = torch.zeros((), dtype=torch.int32, device=v.device)
        return v, zero, zero.clone(), free[0], v_i, zero.clone(), free[1], t_step, zero.clone()

    def _step(self, state, s_in=None):
        v, ge, gi, last, v_i, ge_i, last_i, t_step, counts = state
        s, *new = self._step_fn(v, ge, gi, last, v_i, ge_i, last_i, t_step, self.theta, counts)
        return s, (*new[:7], t_step + 1, new[7])


def frozen_step_of(net, exc: TorchNeuron, inh: TorchNeuron, dtype, device, compile=True):
    """A :class:`FrozenDiehlCookStep` of ``net``, or ``None`` where its shortcuts do not hold
    (a neuron model whose step has another form, thresholds that move)."""
    parts_e = step_expressions(exc, net.dt)
    parts_i = step_expressions(inh, net.dt, rename=_INH_NAMES)
    theta = torch.as_tensor(np.asarray(net.theta, dtype=np.float64), dtype=dtype)
    if parts_e is None or parts_i is None or not theta_is_constant(exc, theta, dtype):
        return None
    source = _PAIR_TEMPLATE.format(
        exc="".join(group_step_lines(parts_e)),
        inh="".join(group_step_lines({**parts_i, "gi": None}, suffix="_i")),
        w_exc_inh=float(net.w_exc_inh), w_inh_exc=float(net.w_inh_exc))
    step = compile_step_source(source, "_frozen_pair_step", exc)
    return FrozenDiehlCookStep(theta, step, (parts_e["R"], parts_i["R"]), source,
                               compile=compile).to(device)


class TorchWTAInference:
    """Spike counts of a frozen :class:`~brainsnn.brian.wta.DiehlCookNetwork` on torch.

    Parameters
    ----------
    net : DiehlCookNetwork
        The trained network (its state is read at construction; retrain -> build anew).
    batch_size : int
        Lanes simulated at once (one lane shows its images one after the other).
    device : str or torch.device
        Torch device ("cpu", "cuda").
    dtype : torch.dtype
        float64 (default; Brian2's precision) or float32.
    frozen_step : bool
        Run the frozen step where the network allows it (default; the same spikes);
        ``False``: the generic step of both neuron groups.
    compile : bool
        Fuse the frozen step with :func:`torch.compile` (eager where no compiler works).
    """

    def __init__(self, net, batch_size=256, device="cpu", dtype=torch.float64, frozen_step=True,
                 compile=True):
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise STDPError(f"batch_size must be a positive integer, got {batch_size!r}")
        net._check_state()
        self.net, self.batch_size = net, int(batch_size)
        self.device, self.dtype = torch_device(device), dtype
        exc_model, inh_model = net.simulated_models()
        self.exc = TorchNeuron(exc_model, dt=net.dt)
        self.inh = TorchNeuron(inh_model, dt=net.dt)
        w = np.asarray(net.weights, dtype=np.float64)
        w = w * (w >= W_FLUSH * net._w_max())
        self.weights = torch.as_tensor(w, dtype=dtype, device=self.device)   # (inputs, N)
        self.dt = float(net.dt)
        self.steps_on = int(round(float(net.t_on) / self.dt))
        self.steps_per_image = net.steps_per_image
        self.rounds = 0
        self.timings = {"simulate": 0.0}
        self.frozen = None
        if frozen_step:
            self.frozen = frozen_step_of(net, self.exc, self.inh, dtype, self.device,
                                         compile=compile)

    @property
    def step_kind(self):
        """``"frozen"`` (the fused step of both groups) or ``"generic"`` (each group's
        generated step)."""
        return "generic" if self.frozen is None else "frozen"

    # -- one round of lanes ---------------------------------------------------------------
    def _initial_states(self, lanes):
        n, net = self.net.n_neurons, self.net
        exc = self.exc.initial_state((lanes, n), device=self.device, dtype=self.dtype,
                                     v=net.v_exc, theta=net.theta, plastic=0.0)
        inh = self.inh.initial_state((lanes, n), device=self.device, dtype=self.dtype,
                                     v=net.v_inh)
        return exc, inh

    def simulate(self, rates=None, input_spikes=None, generator=None, record=False):
        """Excitatory spike counts (lanes, images, N) of lanes of images.

        ``rates``: input rates in Hz, (lanes, images, inputs), for Poisson inputs drawn with
        ``generator``; or ``input_spikes``: given input spike trains, a boolean array
        (lanes, images * steps_per_image, inputs) (spikes during the rest are ignored: the
        input is gated off then, as in the network). ``record=True`` also returns the
        excitatory spikes as an array of (lane, time step, neuron) rows.
        """
        if (rates is None) == (input_spikes is None):
            raise STDPError("simulate needs either rates or input_spikes")
        n_in = self.net.n_inputs
        if rates is not None:
            rates = torch.as_tensor(np.asarray(rates), dtype=self.dtype, device=self.device)
            lanes, images = rates.shape[:2]
            shape_ok = rates.ndim == 3 and rates.shape[2] == n_in
        else:
            input_spikes = torch.as_tensor(np.asarray(input_spikes, dtype=bool), device=self.device)
            lanes = input_spikes.shape[0]
            images = input_spikes.shape[1] // self.steps_per_image
            shape_ok = (input_spikes.ndim == 3 and input_spikes.shape[2] == n_in
                        and input_spikes.shape[1] == images * self.steps_per_image)
        if not shape_ok:
            raise STDPError(f"rates must be (lanes, images, {n_in}) and input spikes (lanes, "
                            f"images * {self.steps_per_image}, {n_in}); got "
                            f"{tuple((rates if rates is not None else input_spikes).shape)}")
        t0 = time.perf_counter()
        block = lanes if self.device.type != "cpu" else CPU_LANE_BLOCK
        counts, rows = [], []
        with torch.inference_mode():
            for first in range(0, lanes, block):
                part = slice(first, first + block)
                c, r = self._simulate_lanes(None if rates is None else rates[part],
                                            None if input_spikes is None else input_spikes[part],
                                            images, generator, record)
                counts.append(c)
                if record and len(r):
                    rows.append(r + torch.tensor([first, 0, 0], device=r.device))
        counts = torch.cat(counts)
        self.timings["simulate"] += time.perf_counter() - t0
        if record:
            rows = torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.int64)
            return counts.cpu().numpy(), rows.cpu().numpy()
        return counts.cpu().numpy()

    def _simulate_lanes(self, rates, input_spikes, images, generator, record):
        """Counts (lanes, images, N) and recorded spikes (rows of lane, step, neuron) of one
        block of lanes; the step is the frozen one where it applies."""
        lanes = len(rates if rates is not None else input_spikes)
        n, per, on = self.net.n_neurons, self.steps_per_image, self.steps_on
        counts = torch.zeros((lanes, images, n), dtype=torch.int64, device=self.device)
        spikes = []
        if self.frozen is not None:
            v, v_i = (torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=self.dtype,
                                      device=self.device).expand(lanes, n).clone()
                      for x in (self.net.v_exc, self.net.v_inh))
            state = self.frozen.initial_state(v, v_i)
        else:
            exc, inh = self._initial_states(lanes)
        for image in range(images):
            if self.frozen is None:                 # the frozen step counts in its state
                image_counts = torch.zeros((lanes, n), dtype=self.dtype, device=self.device)
            if rates is not None:
                lane, pixel = torch.nonzero(rates[:, image] > 0, as_tuple=True)
                p = rates[lane, image, pixel] * self.dt
            for step in range(image * per, (image + 1) * per):
                if self.frozen is not None:
                    s_exc, state = self.frozen.step(state, None)
                else:
                    s_exc, exc = self.exc(exc)
                    s_inh, inh = self.inh(inh)
                    image_counts += s_exc
                if record and s_exc.any():
                    lane_n, neuron = torch.nonzero(s_exc, as_tuple=True)
                    spikes.append(torch.stack([lane_n, torch.full_like(lane_n, step), neuron], 1))
                if step - image * per < on:
                    if rates is not None:
                        fire = self.poisson(p, generator)
                        src_lane, src = lane[fire], pixel[fire]
                    else:
                        src_lane, src = torch.nonzero(input_spikes[:, step], as_tuple=True)
                    if len(src):
                        if self.frozen is not None:       # in place, in Brian2's order
                            state[1].index_add_(0, src_lane, self.weights[src])
                        else:
                            exc["ge"] = exc["ge"].index_add(0, src_lane, self.weights[src])
                if self.frozen is None:
                    inh["ge"] = inh["ge"] + self.net.w_exc_inh * s_exc
                    exc["gi"] = exc["gi"] + self.net.w_inh_exc * (
                        s_inh.sum(dim=1, keepdim=True) - s_inh)
            if self.frozen is not None:
                image_counts = state[-1]
                state = (*state[:-1], torch.zeros_like(image_counts))
            counts[:, image] = image_counts.to(torch.int64)
        rows = torch.cat(spikes) if spikes else torch.zeros((0, 3), dtype=torch.int64)
        return counts, rows

    def poisson(self, p, generator=None):
        """Input spikes of one step: ``rand() < p`` with ``p = rate * dt`` (as Brian2's
        ``rand() < rates * dt``)."""
        return torch.rand(p.shape, generator=generator, dtype=self.dtype, device=self.device) < p

    # -- presentations and the re-presentation rule --------------------------------------------
    def run_items(self, pixels, items):
        """Spike counts (len(items), N) of (image index, level) presentations, laid out in
        as few images per lane as ``batch_size`` lanes allow (item k: lane k // per_lane)."""
        per_lane = math.ceil(len(items) / self.batch_size)
        lanes = math.ceil(len(items) / per_lane)
        padded = np.zeros((lanes * per_lane, self.net.n_inputs))
        f_max, f_boost = float(self.net.f_max), float(self.net.f_boost)
        for row, (idx, level) in enumerate(items):     # as DiehlCookNetwork._rates
            padded[row] = pixels[idx] * (f_max + level * f_boost)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(chunk_seed(self.net.seed, self.rounds, SEED_STREAM))
        self.rounds += 1
        counts = self.simulate(padded.reshape(lanes, per_lane, -1), generator=generator)
        return counts.reshape(lanes * per_lane, -1)[:len(items)]

    def transform(self, images, callback=None):
        """Excitatory spike counts (n, N) of ``images``, as ``net.transform`` gives them
        (learning off, the network's re-presentation rule)."""
        pixels = self.net._pixels(images)
        capacity = self.batch_size * self.net.chunk_size    # a round: lanes of <= chunk_size
        return self.net._infer(pixels, callback, run_items=lambda items: self.run_items(pixels, items),
                               capacity=capacity)
