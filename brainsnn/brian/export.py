"""Export a torch spiking network to Brian2 (the reverse direction of the torch engine).

A network trained with the torch engine (:class:`brainsnn.engine.neuron.TorchNeuron` layers)
runs in Brian2, on the runtime device or ``cpp_standalone`` (or ``cuda_standalone``), with
the same spikes for the same input spikes. Two kinds of source are accepted:

* a :class:`brainsnn.engine.network.Network` whose weighted layers are all ``'spiking'`` (plain
  layers, :class:`~brainsnn.engine.network.BackRes` blocks of both forms and
  :class:`~brainsnn.engine.network.Residual` blocks; the readout may be ``'membrane'``: it is then
  a non-spiking integrator whose potential divided by T gives the logits);
* a plain list of torch modules and neurons, e.g.
  ``[nn.Conv2d(...), TorchNeuron(IF), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(...),
  TorchNeuron(LIF)]``: the linear modules before a :class:`TorchNeuron` feed it (an
  ``input_shape`` is then needed).

Every linear operation (``nn.Linear``, ``nn.Conv2d`` with ``groups=1``, ``nn.AvgPool2d``,
``nn.Flatten``, ``nn.Identity``) is unrolled into a sparse matrix; passive operations between
spiking layers (average pooling, flattening) are folded into the matrix of the next weighted
layer, and the product becomes one ``Synapses`` object whose ``i``/``j`` index arrays and
weights are set from arrays (not string expressions). The weight is named ``w_syn`` (or
``w_syn1``, ... when the neuron model uses that name), so that models with their own ``w``
(AdEx) export as they are. Biases and direct-coded (analog)
input become constant currents, delivered every step by a group that spikes at every step.
A batch of B images is simulated at once as B copies of the network (block-diagonal
synapses).

**Schedule (same-step propagation).** Brian2's default schedule runs the thresholds of all
groups, then the synapses, so a spike reaches the next layer one step later. The torch engine
uses the per-layer same-step form, as defined in this project: per layer, [state update, add
input, threshold, reset], and layer l+1 sees the spikes of layer l of the same step. The export
reproduces it by putting every object into the ``'groups'`` slot with an explicit ``order``:
the input generators first (order 0), then for layer k (k = 1, 2, ...): its state updater
(order 10k), the pre pathways of its incoming synapses (10k + 1), its thresholder (10k + 2)
and its resetter (10k + 3). Spike monitors run in the ``'end'`` slot.

Precision: Brian2 computes in float64. Spikes are identical to the torch engine's run in
float64 (``network.double()``); the only differences allowed by the arithmetic are decisions
where a membrane potential lies within rounding of the threshold (sums of the same synaptic
weights taken in another order), which random real-valued weights make vanishingly rare. A
float32 torch network can differ from its export where float32 rounding decides a spike.

Example::

    plan = to_brian2(network)                       # a description, no Brian2 objects yet
    out = plan.run(input_spikes, device="cpp_standalone")   # (T, B, *input_shape) 0/1
    out.spikes["conv0"]   # (T, B, C, H, W) bool, same as the torch engine's spikes
    out.logits            # (B, n_classes) for a membrane readout
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Sequence

import brian2 as b2
import numpy as np
import scipy.sparse as sp
import torch
from brian2.units.fundamentalunits import get_dimensions, get_unit
from brian2.utils.stringtools import get_identifiers
from torch import nn

from brainsnn.brian.devices import device_session
from brainsnn.models import NeuronModel
from brainsnn.engine.neuron import TorchNeuron
from brainsnn.errors import ExportError  # noqa: F401

__all__ = ["ExportError", "ExportedLayer", "Brian2Export", "Brian2Result", "to_brian2",
           "linear_operator", "synaptic_weight_name", "record_torch_spikes", "run_torch_layers", "READOUT_MODEL"]

#: The non-spiking integrator of a membrane readout: v accumulates the synaptic input.
READOUT_MODEL = NeuronModel(name="readout", equations="v : 1", threshold="v > inf",
                            reset="v = v", parameters={}, initial={"v": 0.0}, method="exact")




def _model_identifiers(model):
    texts = [model.equations, model.threshold, model.reset, str(model.refractory)]
    return set().union(*(get_identifiers(t) for t in texts))


def synaptic_weight_name(model, namespace=None):
    """A name for the synaptic weight that no name of ``model`` uses (``w_syn``, else
    ``w_syn1``, ...): Brian2 refuses a synaptic variable named like a variable of the
    target group (AdEx's adaptation current ``w``, for one)."""
    taken = _model_identifiers(model) | set(model.parameters) | set(namespace or {})
    taken |= {f"{name}_post" for name in taken} | {f"{name}_pre" for name in taken}
    name, k = "w_syn", 0
    while name in taken:
        k += 1
        name = f"w_syn{k}"
    return name


# -- linear operators as sparse matrices ------------------------------------------------------

def _conv_matrix(conv: nn.Conv2d, in_shape):
    if conv.groups != 1:
        raise ExportError(f"Conv2d with groups={conv.groups} is not supported by the export "
                          "(groups=1 only)")
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ExportError("Conv2d export needs numeric zero padding (padding_mode='zeros')")
    c_in, h, w = in_shape
    weight = conv.weight.detach().double().cpu().numpy()          # (c_out, c_in, kh, kw)
    c_out, _, kh, kw = weight.shape
    sh, sw = conv.stride
    ph, pw = conv.padding
    dh, dw = conv.dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    co, ci, ky, kx, oy, ox = np.meshgrid(np.arange(c_out), np.arange(c_in), np.arange(kh),
                                         np.arange(kw), np.arange(oh), np.arange(ow),
                                         indexing="ij")
    iy = oy * sh - ph + ky * dh
    ix = ox * sw - pw + kx * dw
    valid = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    rows = ((co * oh + oy) * ow + ox)[valid]
    cols = ((ci * h + iy) * w + ix)[valid]
    vals = weight[co[valid], ci[valid], ky[valid], kx[valid]]
    mat = sp.csr_matrix((vals, (rows, cols)), shape=(c_out * oh * ow, c_in * h * w))
    bias = None if conv.bias is None else np.repeat(
        conv.bias.detach().double().cpu().numpy(), oh * ow)
    return mat, bias, (c_out, oh, ow)


def _avgpool_matrix(pool: nn.AvgPool2d, in_shape):
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)
    kh, kw = pair(pool.kernel_size)
    sh, sw = pair(pool.stride if pool.stride is not None else pool.kernel_size)
    ph, pw = pair(pool.padding)
    if pool.ceil_mode or pool.divisor_override is not None or ((ph or pw) and not pool.count_include_pad):
        raise ExportError("AvgPool2d export supports ceil_mode=False, no divisor_override and "
                          "count_include_pad=True")
    c, h, w = in_shape
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    ch, ky, kx, oy, ox = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw),
                                     np.arange(oh), np.arange(ow), indexing="ij")
    iy, ix = oy * sh - ph + ky, ox * sw - pw + kx
    valid = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    rows = ((ch * oh + oy) * ow + ox)[valid]
    cols = ((ch * h + iy) * w + ix)[valid]
    vals = np.full(rows.shape, 1.0 / (kh * kw))
    return sp.csr_matrix((vals, (rows, cols)), shape=(c * oh * ow, c * h * w)), None, (c, oh, ow)


def linear_operator(module: nn.Module, in_shape):
    """``(matrix, bias, out_shape)`` of a linear torch module acting on one sample.

    ``matrix`` is a scipy CSR matrix (float64) of shape ``(prod(out_shape), prod(in_shape))``
    in row-major (C, H, W) order, ``bias`` a float64 vector or None.
    """
    in_shape = tuple(int(s) for s in in_shape)
    n_in = math.prod(in_shape)
    if isinstance(module, nn.Linear):
        if in_shape != (module.in_features,):
            raise ExportError(f"Linear({module.in_features}, {module.out_features}) gets input "
                              f"of shape {in_shape}; flatten it first")
        mat = sp.csr_matrix(module.weight.detach().double().cpu().numpy())
        bias = None if module.bias is None else module.bias.detach().double().cpu().numpy()
        return mat, bias, (module.out_features,)
    if isinstance(module, nn.Conv2d):
        if len(in_shape) != 3:
            raise ExportError(f"Conv2d needs a (C, H, W) input, got shape {in_shape}")
        return _conv_matrix(module, in_shape)
    if isinstance(module, nn.AvgPool2d):
        if len(in_shape) != 3:
            raise ExportError(f"AvgPool2d needs a (C, H, W) input, got shape {in_shape}")
        return _avgpool_matrix(module, in_shape)
    if isinstance(module, (nn.Flatten, nn.Identity)):
        out = (n_in,) if isinstance(module, nn.Flatten) else in_shape
        return sp.identity(n_in, format="csr", dtype=np.float64), None, out
    raise ExportError(f"cannot export {type(module).__name__}: supported linear modules are "
                      "Linear, Conv2d, AvgPool2d, Flatten, Identity")


# -- the export plan --------------------------------------------------------------------------

class _Activity:
    """A linear combination of spike sources: {source: matrix}, plus a constant current."""

    def __init__(self, shape, terms=None, const=None, analog=None):
        self.shape = tuple(shape)
        self.terms = dict(terms or {})   # source name -> sparse (n, n_source)
        self.const = const               # float64 (n,) per-step current, or None
        self.analog = analog             # sparse (n, n_input) applied to analog input, or None

    @property
    def n(self):
        return math.prod(self.shape)

    def apply(self, module):
        mat, bias, out_shape = linear_operator(module, self.shape)
        terms = {k: (mat @ m).tocsr() for k, m in self.terms.items()}
        const = None if self.const is None else mat @ self.const
        if bias is not None:
            const = bias if const is None else const + bias
        analog = None if self.analog is None else (mat @ self.analog).tocsr()
        return _Activity(out_shape, terms, const, analog)

    def scaled(self, factor):
        """This activity times ``factor`` (a residual junction's shortcut gain)."""
        if factor == 1.0:
            return self
        return _Activity(self.shape, {k: (m * factor).tocsr() for k, m in self.terms.items()},
                         None if self.const is None else self.const * factor,
                         None if self.analog is None else (self.analog * factor).tocsr())

    def __add__(self, other):
        if self.shape != other.shape:
            raise ExportError(f"cannot add activities of shapes {self.shape} and {other.shape}")
        terms = dict(self.terms)
        for k, m in other.terms.items():
            terms[k] = (terms[k] + m).tocsr() if k in terms else m
        const = (self.const if other.const is None else other.const if self.const is None
                 else self.const + other.const)
        analog = (self.analog if other.analog is None else other.analog if self.analog is None
                  else (self.analog + other.analog).tocsr())
        return _Activity(self.shape, terms, const, analog)


@dataclasses.dataclass
class ExportedLayer:
    """One neuron group of the export and the synapses that feed it.

    Attributes
    ----------
    name : str
    model : NeuronModel
    namespace : dict
        Parameter values that replace the model's (e.g. a per-layer threshold).
    shape : tuple
        Neuron shape of one sample (row-major flat index in Brian2).
    inputs : dict
        Source name ('input' or an earlier layer) -> CSR matrix (n_target, n_source).
    const : ndarray or None
        Constant current (bias) added at every step, per neuron.
    analog : CSR matrix or None
        Maps a direct-coded (analog) input image to a constant current per step.
    readout : bool
        A non-spiking membrane readout (no threshold; logits = v / T).
    """

    name: str
    model: NeuronModel
    namespace: dict
    shape: tuple
    inputs: dict
    const: np.ndarray | None = None
    analog: object = None
    readout: bool = False

    @property
    def n(self):
        return math.prod(self.shape)

    def n_synapses(self):
        return int(sum(m.nnz for m in self.inputs.values()))


@dataclasses.dataclass
class Brian2Result:
    """What :meth:`Brian2Export.run` returns.

    ``spikes[name]`` is a bool array (T, B, *shape); ``logits`` the membrane readout's
    potential / T (B, n) or None; ``wall_s`` seconds of the Brian2 run (build included).
    """

    spikes: dict
    logits: np.ndarray | None
    T: int
    device: str
    wall_s: float


class Brian2Export:
    """A description of a spiking network as Brian2 groups and synapses (numpy arrays only).

    Build and run it with :meth:`run`; :meth:`build` makes the Brian2 objects on the active
    device (inside a :func:`brainsnn.brian.devices.device_session`) and returns them.
    """

    def __init__(self, layers, input_shape, dt):
        self.layers = list(layers)
        self.input_shape = tuple(input_shape)
        self.dt = float(dt)

    @property
    def names(self):
        return [l.name for l in self.layers]

    def n_synapses(self):
        return sum(l.n_synapses() for l in self.layers)

    def _check_inputs(self, inputs, T):
        x = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
        needs_analog = any(l.analog is not None for l in self.layers)
        if needs_analog:
            if x.shape[1:] != self.input_shape or T is None:
                raise ExportError(f"this network takes direct-coded input: give an analog batch "
                                  f"(B, {', '.join(map(str, self.input_shape))}) and T; got "
                                  f"shape {x.shape}, T={T}")
            return None, x.reshape(x.shape[0], -1).astype(np.float64), int(T), x.shape[0]
        if x.ndim < 2 or x.shape[2:] != self.input_shape:
            raise ExportError(f"input spikes must have shape (T, B, {', '.join(map(str, self.input_shape))}),"
                              f" got {x.shape}")
        if not np.all((x == 0) | (x == 1)):
            raise ExportError("input spikes must be 0/1 values")
        if T is not None and int(T) != x.shape[0]:
            raise ExportError(f"T={T} differs from the {x.shape[0]} steps of the input spikes")
        return x.reshape(x.shape[0], x.shape[1], -1).astype(bool), None, x.shape[0], x.shape[1]

    def build(self, input_spikes=None, analog=None, T=None, batch=1):
        """Make the Brian2 objects on the active device.

        Returns ``(network, monitors, groups)``; ``monitors[name]`` is a SpikeMonitor.
        """
        dt = self.dt * b2.second
        n_in = math.prod(self.input_shape)
        objects, monitors, groups = [], {}, {}
        sources = {}
        if input_spikes is not None:
            t_idx, b_idx, k_idx = np.nonzero(input_spikes)
            gen = b2.SpikeGeneratorGroup(batch * n_in, b_idx * n_in + k_idx, t_idx * dt,
                                         dt=dt, when="groups", order=0, name="input")
            objects.append(gen)
            sources["input"] = (gen, n_in)
        clock_group = None
        if any(l.const is not None or l.analog is not None for l in self.layers):
            clock_group = b2.NeuronGroup(batch, "", threshold="True", reset="", dt=dt,
                                        name="bias_clock")
            clock_group.thresholder["spike"].when = "groups"
            clock_group.thresholder["spike"].order = 0
            objects.append(clock_group)
        for k, layer in enumerate(self.layers, start=1):
            model = layer.model
            if batch > 1 and {"i", "N"} & _model_identifiers(model):
                raise ExportError(f"layer {layer.name!r}: model {model.name!r} uses the neuron "
                                  "index 'i' or the group size 'N', which differ between the "
                                  "torch layer (per sample) and the export's batch of copies; "
                                  "export one sample at a time (batch 1)")
            group = b2.NeuronGroup(
                batch * layer.n, model.equations, threshold=None if layer.readout else model.threshold,
                reset=None if layer.readout else model.reset,
                refractory=model.refractory if model.refractory is not None else False,
                method=model.method, namespace=model.namespace(**layer.namespace), dt=dt,
                name=f"layer_{k}")
            for var, value in model.initial.items():
                setattr(group, var, value)
            base = 10 * k
            if group.state_updater is not None:
                group.state_updater.when, group.state_updater.order = "groups", base
            if not layer.readout:
                group.thresholder["spike"].when, group.thresholder["spike"].order = "groups", base + 2
                group.resetter["spike"].when, group.resetter["spike"].order = "groups", base + 3
            objects.append(group)
            groups[layer.name] = group
            unit = get_unit(model.brian2_equations[model.input_variable].dim)
            unit_name = "1" if unit is None or get_dimensions(unit).is_dimensionless else repr(unit)
            weight_unit = 1 if unit_name == "1" else unit
            weight = synaptic_weight_name(model, layer.namespace)
            on_pre = f"{model.input_variable}_post += {weight}"
            for src_name, mat in layer.inputs.items():
                src, n_src = sources[src_name]
                coo = mat.tocoo()
                if coo.nnz == 0:
                    continue
                syn = b2.Synapses(src, group, model=f"{weight} : {unit_name}", on_pre=on_pre,
                                  dt=dt, name=f"syn_{src_name}_to_{k}")
                offs_i = np.repeat(np.arange(batch) * n_src, coo.nnz)
                offs_j = np.repeat(np.arange(batch) * layer.n, coo.nnz)
                syn.connect(i=np.tile(coo.col, batch) + offs_i, j=np.tile(coo.row, batch) + offs_j)
                setattr(syn, weight, np.tile(coo.data, batch) * weight_unit)
                syn.pre.when, syn.pre.order = "groups", base + 1
                objects.append(syn)
            const = np.zeros((batch, layer.n)) if (layer.const is not None or layer.analog is not None) else None
            if layer.const is not None:
                const += layer.const[None, :]
            if layer.analog is not None:
                const += (layer.analog @ analog.T).T
            if const is not None:
                syn = b2.Synapses(clock_group, group, model=f"{weight} : {unit_name}",
                                  on_pre=on_pre, dt=dt, name=f"syn_const_to_{k}")
                syn.connect(i=np.repeat(np.arange(batch), layer.n), j=np.arange(batch * layer.n))
                setattr(syn, weight, const.reshape(-1) * weight_unit)
                syn.pre.when, syn.pre.order = "groups", base + 1
                objects.append(syn)
            if not layer.readout:
                mon = b2.SpikeMonitor(group, name=f"spikes_{k}")
                monitors[layer.name] = mon
                objects.append(mon)
                sources[layer.name] = (group, layer.n)
        return b2.Network(*objects), monitors, groups

    def run(self, inputs, T=None, device="runtime", directory=None, threads=1,
            generate_only=False, target=None):
        """Simulate ``inputs`` in Brian2; return a :class:`Brian2Result`.

        ``inputs``: input spikes ``(T, B, *input_shape)`` (0/1), or for direct-coded networks
        an analog batch ``(B, *input_shape)`` with ``T`` given. ``device``: 'runtime',
        'cpp_standalone' or 'cuda_standalone' (built in a fresh project each call).
        ``target``: runtime code-generation target ('cython' or 'numpy'; default Brian2's).
        """
        import time
        spikes_in, analog, T, batch = self._check_inputs(inputs, T)
        t0 = time.perf_counter()
        with device_session(device, directory=directory, threads=threads,
                            generate_only=generate_only):
            if target is not None:
                b2.prefs.codegen.target = target
            net, monitors, groups = self.build(spikes_in, analog, T, batch)
            net.run(T * self.dt * b2.second, namespace={})
            if device != "runtime":
                b2.device.build(run=not generate_only, compile=True)
            out = {}
            for layer in self.layers:
                if layer.readout:
                    continue
                mon = monitors[layer.name]
                arr = np.zeros((T, batch * layer.n), dtype=bool)
                steps = np.round(np.asarray(mon.t / b2.second) / self.dt).astype(int)
                arr[steps, np.asarray(mon.i)] = True
                out[layer.name] = arr.reshape(T, batch, *layer.shape)
            logits = None
            readouts = [l for l in self.layers if l.readout]
            if readouts:
                v = np.asarray(groups[readouts[-1].name].v[:])
                logits = v.reshape(batch, -1) / T
        return Brian2Result(out, logits, T, device, time.perf_counter() - t0)


# -- building the plan -----------------------------------------------------------------------

def _neuron_namespace(neuron: TorchNeuron):
    """Parameter values of a TorchNeuron that differ from its model (as Brian2 namespace)."""
    if neuron.tensor_parameter_names:
        raise ExportError(f"neuron {neuron.model.name!r} has tensor parameters "
                          f"{', '.join(neuron.tensor_parameter_names)}; the export needs scalar "
                          "parameters (per-layer values)")
    namespace = {}
    for name, value in neuron.parameter_overrides.items():
        dim = get_dimensions(neuron.model.parameters[name])
        if not isinstance(value, b2.Quantity) and not dim.is_dimensionless:
            value = float(value) * get_unit(dim)     # an SI float of a dimensioned parameter
        namespace[name] = value
    return namespace


def _from_layer_list(items, input_shape, dt):
    if input_shape is None:
        raise ExportError("exporting a list of layers needs input_shape (one sample's shape)")
    act = _Activity(input_shape, {"input": sp.identity(math.prod(input_shape), format="csr")})
    layers, count = [], 0
    for item in items:
        if isinstance(item, TorchNeuron):
            count += 1
            if dt is None:
                dt = item.dt
            elif abs(item.dt - dt) > 1e-15:
                raise ExportError(f"all neurons need the same dt, got {item.dt} and {dt}")
            name = f"layer{count}"
            layers.append(ExportedLayer(name, item.model, _neuron_namespace(item), act.shape,
                                        act.terms, act.const, act.analog))
            act = _Activity(act.shape, {name: sp.identity(act.n, format="csr")})
        elif isinstance(item, nn.Module):
            act = act.apply(item)
        else:
            raise ExportError(f"cannot export {item!r}: give torch modules and TorchNeuron "
                              "objects")
    if not layers:
        raise ExportError("no TorchNeuron in the layer list: nothing spikes")
    return layers, dt


def _from_network(net, dt):
    if dt is None:
        dt = float(net.dt)                 # a Brian2 time or seconds: SI float either way
    if net.encoder is None:
        act = _Activity(net.input_shape, analog=sp.identity(math.prod(net.input_shape), format="csr"))
    else:
        act = _Activity(net.input_shape, {"input": sp.identity(math.prod(net.input_shape), format="csr")})
    layers = []

    def layer(ll, x, shortcut=None):
        op = net.ops[ll.op_name]
        if not ll.spec.weighted:
            return x.apply(op)
        if ll.spec.kind != "spiking":
            raise ExportError(f"layer {ll.name!r} is artificial (ReLU); only all-spiking "
                              "networks can be exported to Brian2")
        cur = x.apply(op)
        if ll.is_shortcut:          # projection: a current summed at the block's last layer
            return cur
        if shortcut is not None:
            cur = cur + shortcut.scaled(net.shortcut_gain(ll.name))
        if ll.neuron_key is None:   # membrane readout
            layers.append(ExportedLayer(ll.name, READOUT_MODEL, {}, cur.shape, cur.terms,
                                        cur.const, cur.analog, readout=True))
            return None
        neuron = net.neurons[ll.neuron_key]
        layers.append(ExportedLayer(ll.name, neuron.model, _neuron_namespace(neuron), cur.shape,
                                    cur.terms, cur.const, cur.analog))
        return _Activity(cur.shape, {ll.name: sp.identity(cur.n, format="csr")})

    net.walk(act, layer)
    return layers, dt


def to_brian2(source, input_shape=None, dt=None) -> Brian2Export:
    """Describe a torch spiking network as Brian2 groups and synapses.

    Parameters
    ----------
    source : brainsnn.engine.network.Network or sequence of torch modules / TorchNeuron
    input_shape : tuple, optional
        Shape of one input sample (needed for a layer list; a Network knows its own).
    dt : float, optional
        Time step in seconds (default: the neurons' dt).
    """
    try:
        from brainsnn.engine.network import Network
    except ImportError:  # pragma: no cover - networks is optional for the export
        Network = ()
    if isinstance(source, Network):
        layers, dt = _from_network(source, dt)
        input_shape = source.input_shape
    elif isinstance(source, Sequence) or isinstance(source, nn.Sequential):
        layers, dt = _from_layer_list(list(source), tuple(input_shape) if input_shape else None, dt)
    else:
        raise ExportError(f"cannot export {type(source).__name__}: give a brainsnn Network or "
                          "a list of torch modules and TorchNeuron objects")
    return Brian2Export(layers, input_shape, dt)


# -- the torch side, for comparisons ---------------------------------------------------------

@contextlib.contextmanager
def record_torch_spikes(module: nn.Module):
    """Record the spikes of every TorchNeuron inside ``module`` while the block runs.

    Yields a dict ``{name: list of (B, *shape) tensors, one per step}`` keyed by the last
    component of the TorchNeuron's name in ``module.named_modules()`` (for a
    :class:`brainsnn.engine.network.Network`: the logical layer name, as in the export).
    """
    record, handles = {}, []
    for name, sub in module.named_modules():
        if isinstance(sub, TorchNeuron):
            name = name.rsplit(".", 1)[-1]
            def hook(mod, args, output, name=name):
                record.setdefault(name, []).append(output[0].detach())
            handles.append(sub.register_forward_hook(hook))
    try:
        yield record
    finally:
        for h in handles:
            h.remove()


def run_torch_layers(items, inputs, dtype=torch.float64):
    """Run a layer list (as for :func:`to_brian2`) in torch, step by step.

    ``inputs``: (T, B, *input_shape) spikes. Returns ``{layer<k>: (T, B, *shape) bool}``.
    """
    items = [copy.deepcopy(item).to(dtype) if isinstance(item, nn.Module) and
             not isinstance(item, TorchNeuron) else item for item in items]
    x = torch.as_tensor(inputs).to(dtype)
    T, batch = x.shape[:2]
    states, out, count = {}, {}, 0
    names = {}
    for idx, item in enumerate(items):
        if isinstance(item, TorchNeuron):
            count += 1
            names[idx] = f"layer{count}"
    records = {n: [] for n in names.values()}
    with torch.no_grad():
        for t in range(T):
            cur = x[t]
            for idx, item in enumerate(items):
                if isinstance(item, TorchNeuron):
                    if idx not in states:
                        states[idx] = item.initial_state(cur.shape, dtype=dtype)
                    s, states[idx] = item(states[idx], cur)
                    records[names[idx]].append(s)
                    cur = s
                else:
                    cur = item(cur)
    for name, steps in records.items():
        out[name] = torch.stack(steps).bool().numpy()
    return out
