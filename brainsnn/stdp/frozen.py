"""A specialised step for a frozen conv WTA layer: the same spikes at a fraction of the cost.

Feature extraction runs conv STDP layers with their thresholds frozen (``plastic = 0``). The
generic torch-engine step (:class:`~brainsnn.engine.neuron.TorchNeuron`) of such a layer
does work whose result is known in advance:

* **refractoriness** in float64: ``timestep(t - lastspike, dt) >= R`` on every neuron every
  step. Here the step of the last spike is an int32 (int16 vectorises worse in the fused
  step) and the test is ``t_step - last_step >= R``: the same boolean for every pair of
  steps (checked exhaustively by the tests);
* **theta** integrated and reset with ``plastic = 0``: it never changes. Here it is a
  constant of the layer (one value per kernel); the identity is checked on the layer's own
  theta values, with and without a spike, before the step is used;
* **inhibitory neurons** stepped at every position. Each one is driven only by its own
  excitatory partner; with the layer's weights it spikes exactly one step after each spike
  of the partner and never otherwise (checked by simulating the generic inhibitory neuron on
  every periodic spike train with the excitatory refractory gap or more, and on random
  trains, before the step is used). Lateral inhibition is then a reduction over kernels of
  the previous step's excitatory spikes: ``gi += w_inh_exc * (sum_k s_prev - s_prev)``.

The membrane, conductance and threshold expressions are not rewritten: they are taken from
the generic step's generated source (Brian2's order of operations), so that every float
operation on ``v``, ``ge`` and ``gi`` is the one the generic step performs. When a model or
a setting does not fit this form (another neuron model, plastic thresholds, inhibition that
does not follow the partner), :func:`frozen_wta` returns ``None`` and the caller keeps the
generic step. The spike counts are bitwise those of the generic step
(``tests/test_frozen_wta.py``).
"""
from __future__ import annotations

import ast
import contextlib
import logging

import numpy as np
import torch
import torch.nn.functional as F

from brainsnn.engine.neuron import TorchNeuron

__all__ = ["CompiledStep", "FrozenConvWTA", "compile_step_source", "frozen_exc_step", "frozen_wta",
           "group_step_lines", "inhibition_follows_partner", "refractory_steps", "step_expressions",
           "stream_bytes_per_image", "theta_is_constant"]

#: Names an extracted expression may read (state, constants of the layer, torch).
_ALLOWED = {"v", "ge", "gi", "theta", "not_refractory", "_bs_torch"}


def _assignments(source):
    """``{target: value node}`` of the top-level single-name assignments of a generated
    step (the last one of each name), and the ``_lio_*`` loop invariants among them."""
    body = ast.parse(source).body[0].body
    out = {}
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            out.setdefault(node.targets[0].id, node.value)
    return out


def refractory_steps(neuron: TorchNeuron):
    """``(R, dt)`` of a generated step whose refractoriness is
    ``not_refractory = timestep(t - lastspike, dt) >= R``, else ``None``."""
    node = _assignments(neuron.source).get("not_refractory")
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1
            and isinstance(node.ops[0], ast.GtE)):
        return None
    call, bound = node.left, node.comparators[0]
    if not (isinstance(call, ast.Call) and ast.unparse(call.func) == "_bs_f_timestep"
            and ast.unparse(call.args[0]) == "t - lastspike"
            and isinstance(bound, ast.Constant) and isinstance(bound.value, int)):
        return None
    return bound.value, float(ast.literal_eval(call.args[1]))


def _expression(assignments, name, allowed=_ALLOWED):
    """Source of the expression assigned to ``name``, if it reads only ``allowed`` names."""
    node = assignments.get(name)
    if node is None:
        return None
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    return ast.unparse(node) if names <= allowed else None


def theta_is_constant(neuron, theta, dtype):
    """Whether one generic step leaves ``theta`` (one value per kernel) bitwise unchanged,
    for a neuron that spikes and for one that does not (``plastic = 0``)."""
    th = torch.as_tensor(theta, dtype=dtype).reshape(1, -1).repeat(2, 1)
    state = neuron.initial_state(tuple(th.shape), dtype=dtype, plastic=0.0, theta=th)
    drive = torch.zeros_like(th)
    drive[0] = 1e6                                   # row 0 spikes, row 1 does not
    spiked = torch.zeros_like(th, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(3):
            s, state = neuron(state, drive)
            spiked |= s.bool()
    return (bool(spiked[0].all()) and not bool(spiked[1].any())
            and torch.equal(state["theta"], th))


def inhibition_follows_partner(inh: TorchNeuron, weight, gap, steps, dtype, seed=0, v0=None):
    """Whether the inhibitory neuron, driven by ``weight`` per spike of its excitatory
    partner (whose spikes are at least ``gap`` steps apart), spikes exactly one step after
    each partner spike and never otherwise, over ``steps`` steps from ``v0`` (volt; default
    ``v_rest``). The membrane relaxes monotonically towards ``v_rest``, so a check from the
    lowest starting potential of a network covers its higher ones.

    Checked by simulating the generic neuron on every periodic train of period ``gap`` to
    ``gap + steps`` (each from the first step), and on 256 random trains whose gaps are
    ``gap`` plus a geometric number of steps.
    """
    steps = int(steps) + 2
    periods = np.arange(gap, gap + steps)
    t = np.arange(steps)
    trains = [(t[None] % periods[:, None]) == 0]
    rng = np.random.default_rng(seed)
    random = np.zeros((256, steps), bool)
    for row in random:
        k = int(rng.integers(0, gap))
        while k < steps:
            row[k] = True
            k += gap + int(rng.geometric(0.3)) - 1
    trains.append(random)
    exc = torch.as_tensor(np.concatenate(trains), dtype=dtype)          # (cases, steps)
    v0 = float(inh.model.parameters["v_rest"]) if v0 is None else float(v0)
    state = inh.initial_state((exc.shape[0], 1), dtype=dtype, v=v0)
    out = []
    with torch.no_grad():
        for k in range(steps):
            s, state = inh(state, weight * exc[:, k:k + 1])
            out.append(s[:, 0])
    s_inh = torch.stack(out, 1)
    return bool((s_inh[:, 0] == 0).all()) and torch.equal(s_inh[:, 1:], exc[:, :-1])


def group_step_lines(parts, suffix=""):
    """``(update, spikes)``: the source lines of one neuron group's frozen step, from the
    parts of :func:`step_expressions` (whose expressions already use the names with
    ``suffix``): the update (refractoriness, conductances, membrane) and the threshold,
    spikes ``s<suffix>`` and reset. A group without ``gi`` has ``parts["gi"] = None``."""
    x = suffix
    update = [f"not_refractory{x} = (t_step - last{x}) >= {parts['R']}",
              f"_ge{x} = {parts['ge']}"]
    if parts["gi"] is not None:
        update.append(f"_gi{x} = {parts['gi']}")
    update += [f"_v{x} = {parts['v']}", f"ge{x} = _ge{x}"]
    if parts["gi"] is not None:
        update.append(f"gi{x} = _gi{x}")
    update.append(f"v{x} = _bs_torch.where(not_refractory{x}, _v{x}, v{x})")
    spikes = [f"_bs_c{x} = {parts['threshold']}", f"s{x} = _bs_c{x}.to(v{x}.dtype)",
              f"last{x} = _bs_torch.where(_bs_c{x}, t_step.to(last{x}.dtype), last{x})",
              f"v{x} = _bs_torch.where(_bs_c{x}, {parts['v_reset']!r}, v{x})"]
    return tuple("".join(f"    {line}\n" for line in lines) for lines in (update, spikes))


_STEP_TEMPLATE = """
def _frozen_step(v, ge, gi, last, s_prev, current, t_step, theta, inhibition):
{update}    ge = ge + current
{spikes}    if inhibition:
        gi = gi + {w_inh_exc} * (s_prev.sum(1, keepdim=True) - s_prev)
    return s, v, ge, gi, last
"""


def step_expressions(neuron, dt, rename=None):
    """The parts of a generated step in the frozen form: ``{"ge", "gi", "v", "threshold"}``
    (expression sources, Brian2's order of operations, names changed by ``rename``, e.g.
    ``{"v": "v_inh", "gi": "0.0"}``), ``"R"`` (refractory steps of ``dt``) and ``"v_reset"``
    (volt); ``None`` when the step does not have that form (refractoriness not a whole
    number of ``dt``, input not into ``ge``, a reset other than ``v = v_reset`` followed
    only by ``theta += plastic * ...``)."""
    refractory = refractory_steps(neuron)
    if refractory is None or abs(refractory[1] - float(dt)) > 1e-12 * float(dt):
        return None
    a = _assignments(neuron.source)
    parts = {name: _expression(a, key) for name, key in
             (("ge", "_ge"), ("gi", "_gi"), ("v", "_v"), ("threshold", "_bs_c"))}
    if None in parts.values() or neuron.model.input_variable != "ge" \
            or "ge = ge + _bs_input" not in neuron.source:
        return None
    reset = [line.strip() for line in neuron.model.reset.replace(";", "\n").splitlines()
             if line.strip()]
    if not reset or reset[0].replace(" ", "") != "v=v_reset" or any(
            not line.replace(" ", "").startswith("theta+=plastic*") for line in reset[1:]):
        return None
    if rename:
        parts = {k: _renamed(src, rename) for k, src in parts.items()}
    return {**parts, "R": refractory[0], "v_reset": float(neuron.model.parameters["v_reset"])}


def _renamed(source, rename):
    """``source`` with the names in ``rename`` replaced by their sources."""
    class Rename(ast.NodeTransformer):
        def visit_Name(self, node):
            return ast.parse(rename[node.id], mode="eval").body if node.id in rename else node
    return ast.unparse(Rename().visit(ast.parse(source, mode="eval")))


def compile_step_source(source, name, neuron):
    """The function ``name`` defined by ``source``, in the generated step's namespace."""
    namespace = dict(neuron.compiled.step_function.__globals__)
    exec(compile(source, f"<{name} of {neuron.model.name}>", "exec"), namespace)
    return namespace[name]


def frozen_exc_step(neuron, dt, w_inh_exc):
    """``(step, R, source)``: the frozen excitatory step (a Python function of this module's
    template) made from the generic step's source, with refractoriness of ``R`` steps of
    ``dt`` and lateral inhibition ``w_inh_exc``; ``None`` when the source does not have the
    expected form."""
    parts = step_expressions(neuron, dt)
    if parts is None:
        return None
    update, spikes = group_step_lines(parts)
    source = _STEP_TEMPLATE.format(w_inh_exc=repr(float(w_inh_exc)), update=update, spikes=spikes)
    return compile_step_source(source, "_frozen_step", neuron), parts["R"], source


class CompiledStep(torch.nn.Module):
    """A module whose ``_step(state, s_in)`` runs through :func:`torch.compile` when asked
    (the same operations fused; eager where no compiler works). The fused CPU loops use the
    thread count set when they run (``torch.set_num_threads``), not the one at compilation."""

    def _compile_step(self, compile):
        self._compiled = None
        if compile:
            try:
                self._compiled = torch.compile(self._step, dynamic=False,
                                               options={"cpp.dynamic_threads": True})
            except Exception:                                   # pragma: no cover
                self._compiled = None

    def step(self, state, s_in):
        """One Brian2-schedule step: returns the excitatory spikes (B, K, H', W')."""
        if self._compiled is not None:
            try:
                if not getattr(self, "_compiled_once", False):
                    with _quiet_cpp_extension():
                        spikes = self._compiled(state, s_in)
                    self._compiled_once = True
                    return spikes
                return self._compiled(state, s_in)
            except Exception:                                   # pragma: no cover
                self._compiled = None                           # no compiler here: eager
        return self._step(state, s_in)


@contextlib.contextmanager
def _quiet_cpp_extension():
    """Compiling for the CPU, torch warns "No CUDA runtime is found" where there is no GPU;
    that is expected here, so its logger is held to errors while the step compiles."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class FrozenConvWTA(CompiledStep):
    """One frozen conv WTA layer (one pass): the interface of the generic module
    (``initial_state``, ``step``), with the specialised step of this module's doc.

    The state is ``(v, ge, gi, last_step, s_prev, t_step)``: float ``v``, ``ge``, ``gi`` of
    the excitatory neurons, the int32 step of their last spike, their spikes of the
    previous step (the inhibitory spikes of this one) and the step counter.
    """

    def __init__(self, layer, dtype, inhibition, compile, step, refractory, source, steps):
        super().__init__()
        self.layer, self.inhibition, self.source = layer, bool(inhibition), source
        self.refractory = refractory
        if steps + refractory >= 2 ** 31 - 1:
            raise ValueError(f"{steps} steps per presentation do not fit the int32 step counter")
        self.index_dtype = torch.int32
        self.register_buffer("weight", torch.as_tensor(layer.kernels, dtype=dtype))
        self.register_buffer("theta", torch.as_tensor(layer.theta, dtype=dtype).view(1, -1, 1, 1))
        self._step_fn = step
        self._compile_step(compile)

    def initial_state(self, shape, device, dtype):
        """Every image starts at rest (v = v_rest, no conductance, free of refractoriness)."""
        v_rest = float(self.layer.exc_model.parameters["v_rest"])
        v = torch.full(shape, v_rest, dtype=dtype, device=device)
        zero = torch.zeros(shape, dtype=dtype, device=device)
        last = torch.full(shape, -self.refractory, dtype=self.index_dtype, device=device)
        t_step = torch.zeros((), dtype=self.index_dtype, device=device)
        return v, zero, zero.clone(), last, zero.clone(), t_step

    def _conv(self, s_in):
        """The layer's input current: the convolution as one matrix product of the kernels
        with the unfolded input (2-3x faster than ``conv2d`` with few input channels on the
        CPU; the same float32 sums, checked by the tests)."""
        lay = self.layer
        cols = F.unfold(s_in, lay.kernel_size, padding=lay.padding, stride=lay.stride)
        return torch.matmul(self.weight.reshape(len(self.weight), -1), cols).view(
            len(s_in), *lay.conv_shape(tuple(s_in.shape[1:])))

    def _step(self, state, s_in):
        v, ge, gi, last, s_prev, t_step = state
        current = self._conv(s_in)
        s, v, ge, gi, last = self._step_fn(v, ge, gi, last, s_prev, current, t_step,
                                           self.theta, self.inhibition)
        return s, (v, ge, gi, last, s, t_step + 1)


def frozen_wta(layer, dtype, inhibition=True, compile=False, steps=1000):
    """A :class:`FrozenConvWTA` of ``layer`` (``steps`` per presentation at most), or
    ``None`` when the layer's models or settings do not allow the specialised step (the
    caller then keeps the generic one)."""
    exc = TorchNeuron(layer.exc_model, dt=layer.dt)
    made = frozen_exc_step(exc, layer.dt, layer.w_inh_exc)
    if made is None or "v_rest" not in layer.exc_model.parameters \
            or not theta_is_constant(exc, layer.theta, dtype):
        return None
    if inhibition:
        inh = TorchNeuron(layer.inh_model, dt=layer.dt)
        if "v_rest" not in layer.inh_model.parameters or not inhibition_follows_partner(
                inh, float(layer.w_exc_inh), made[1], steps, dtype):
            return None
    return FrozenConvWTA(layer, dtype, inhibition, compile, *made, steps=steps)


def stream_bytes_per_image(layer, input_shape, steps):
    """Bytes one image moves through memory in the frozen step, if every array it touches
    were read from and written to main memory at every step (no cache reuse): the roofline
    model of extraction (images/s <= bandwidth / these bytes).

    Per step and excitatory neuron (float32 / int32, 4 bytes): ``v``, ``ge``, ``gi`` and the
    last spike step read and written (32 B), the input current written by the convolution
    and read by the step (8 B), the spikes written, read by the count and read again as the
    next step's inhibition (12 B), the count read and written (8 B): 60 B. Per step and
    output position, the unfolded input patch (``C*k*k`` values) written and read; per step,
    the input spikes read once.
    """
    c, h, w = input_shape
    k, ho, wo = layer.conv_shape(input_shape)
    per_step = 60 * k * ho * wo + 8 * c * layer.kernel_size ** 2 * ho * wo + 4 * c * h * w
    return int(per_step) * int(steps)
