"""Layered spiking, artificial and hybrid networks as PyTorch modules (the AGD network).

A network is built from a list of **layer specs**. Each spec names an operation (``conv``,
``linear``, ``avgpool``, ``flatten``) and, for the weighted operations, a ``kind``:

* ``'spiking'`` -- the layer's synaptic current drives a neuron model (a
  :class:`brainsnn.models.NeuronModel`, integrated by :class:`brainsnn.engine.neuron.TorchNeuron`)
  at every one of the T time steps; it emits spikes (0/1);
* ``'artificial'`` -- the layer is computed once, ReLU on its input (a rate or an analog value).

The interfaces between kinds are those of the hybrid networks *as defined in this project*
(docs/techniques.md): a spiking layer feeding an artificial one hands over its rate
r = (1/T) sum_t s[t]; an artificial layer (or a direct-coded analog image) feeding a spiking
one drives it with a constant input current at every step. ``avgpool`` and ``flatten`` are
passive: they act on whatever they receive (spikes step by step, or analog values).

The last weighted layer is the **readout**: it has no threshold.  With ``readout='membrane'``
(default) the logits are the membrane potential of a non-leaky, non-resetting integrator
accumulated over the T steps and divided by T (= the mean synaptic current); with
``readout='rate'`` the output layer is spiking and the logits are its spike rates.

Two compound specs:

* :class:`BackRes` -- a block of layers run R times with the **same weights** and a fresh
  neuron state per pass (re-entry y_r = B(y_{r-1}) or additive y_r = B(y_{r-1} + x)), as
  defined in this project; the block's output must have the shape of its input.
* :class:`Residual` -- a forward (skip) residual block: the block's input is added to the
  input current of its last layer (identity shortcut), for residual-style networks.

The time loop runs layer by layer (all T steps of layer l, then layer l+1). For a feed-forward
network this gives exactly the step-by-step result (layer l+1 receives layer l's spikes of the
same step) and lets convolutions run on T*batch images at once.

An all-``'artificial'`` network is a ReLU ANN (the conversion source); :meth:`Network.with_neuron`
and :meth:`Network.set_thresholds` swap in another neuron model (e.g. IF with reset by
subtraction) and per-layer thresholds for conversion.

Shapes: images are ``(batch, channels, height, width)`` (a ``(batch, H, W)`` grey image gets a
channel axis); direct-coded input is static, Poisson input is ``(T, batch, ...)``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import brian2 as b2
import torch
from torch import nn

from brainsnn.models import LIF, NeuronModel
from brainsnn.errors import NetworkError  # noqa: F401
from brainsnn.validation import check_T

__all__ = [
    "NetworkError", "LayerSpec", "BackRes", "Residual", "conv", "linear", "avgpool", "flatten",
    "Network", "vgg_specs", "parse_layer_list", "residual_specs", "backres_specs", "specs_to_config",
    "specs_from_config", "KINDS", "OPS",
]

KINDS = ("spiking", "artificial")
OPS = ("conv", "linear", "avgpool", "flatten")
READOUTS = ("membrane", "rate")
BACKRES_FORMS = ("reentry", "additive")




# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer of a network.

    Attributes
    ----------
    op : {'conv', 'linear', 'avgpool', 'flatten'}
    kind : {'spiking', 'artificial'}
        For ``conv``/``linear``: spiking neurons or ReLU. Ignored by passive ops.
    out : int
        Output channels (conv) or features (linear).
    kernel_size, stride, padding : int
        Convolution / pooling geometry (padding defaults to kernel_size // 2 for conv).
    bias : bool
        Learnable bias (default False, as conversion requires bias-free layers).
    name : str, optional
        Layer name used in results files (default: ``<op><index>``).
    """

    op: str
    kind: str = "spiking"
    out: int | None = None
    kernel_size: int = 3
    stride: int = 1
    padding: int | None = None
    bias: bool = False
    name: str | None = None

    def __post_init__(self):
        if self.op not in OPS:
            raise NetworkError(f"unknown layer op {self.op!r}; expected one of {', '.join(OPS)}")
        if self.kind not in KINDS:
            raise NetworkError(f"unknown layer kind {self.kind!r} for {self.op} layer; "
                               f"expected 'spiking' or 'artificial'")
        if self.op in ("conv", "linear") and (self.out is None or int(self.out) < 1):
            raise NetworkError(f"{self.op} layer needs out >= 1 (output channels/features), "
                               f"got {self.out!r}")
        if self.kernel_size < 1 or self.stride < 1:
            raise NetworkError(f"{self.op} layer: kernel_size and stride must be >= 1, got "
                               f"{self.kernel_size}, {self.stride}")

    @property
    def weighted(self):
        return self.op in ("conv", "linear")

    def to_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class BackRes:
    """A backward residual block, as defined in this project: ``layers`` run ``R`` times.

    Pass r computes y_r = B(y_{r-1}) (``form='reentry'``) or y_r = B(y_{r-1} + x)
    (``form='additive'``) with y_0 = x, the same weights in every pass and a fresh neuron state
    (and its own threshold) per pass. R = 1 is the plain block.
    """

    layers: tuple
    R: int = 2
    form: str = "reentry"
    name: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(as_spec(s) for s in self.layers))
        if int(self.R) < 1:
            raise NetworkError(f"BackRes block needs R >= 1 passes, got R={self.R}")
        if self.form not in BACKRES_FORMS:
            raise NetworkError(f"BackRes form {self.form!r} unknown; expected 'reentry' or "
                               "'additive'")
        if any(isinstance(s, BackRes) for s in self.layers):
            raise NetworkError("BackRes blocks cannot be nested; put plain layers or Residual "
                               "blocks (a residual stage) in a BackRes block")
        if not any(isinstance(s, Residual) or s.weighted for s in self.layers):
            raise NetworkError("BackRes block needs at least one conv or linear layer")

    def to_dict(self):
        return {"op": "backres", "R": int(self.R), "form": self.form, "name": self.name,
                "layers": [s.to_dict() for s in self.layers]}


@dataclasses.dataclass(frozen=True)
class Residual:
    """A forward residual block: its input, through the shortcut, is added to the input
    current of its last layer (before that layer's neuron or ReLU), as in a ResNet basic block.

    ``shortcut`` is None (identity: the block keeps the shape of its input) or a conv spec,
    the projection (e.g. ``conv(out, kernel_size=1, stride=2, padding=0)``) that maps the block
    input to the block's output shape; it has no neuron of its own (its output is a current)
    and takes the kind of the block's last layer.
    """

    layers: tuple
    name: str | None = None
    shortcut: LayerSpec | None = None

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(as_spec(s) for s in self.layers))
        if not self.layers or not all(isinstance(s, LayerSpec) for s in self.layers):
            raise NetworkError("Residual block layers must be plain layer specs (conv, linear, "
                               "avgpool, flatten)")
        if not self.layers[-1].weighted:
            raise NetworkError("Residual block must end with a conv or linear layer")
        if self.shortcut is not None:
            short = as_spec(self.shortcut)
            if not isinstance(short, LayerSpec) or not short.weighted:
                raise NetworkError(f"Residual shortcut must be a conv or linear spec (the "
                                   f"projection), got {self.shortcut!r}")
            object.__setattr__(self, "shortcut",
                               dataclasses.replace(short, kind=self.layers[-1].kind))

    def to_dict(self):
        d = {"op": "residual", "name": self.name, "layers": [s.to_dict() for s in self.layers]}
        if self.shortcut is not None:
            d["shortcut"] = self.shortcut.to_dict()
        return d


def conv(out, kind="spiking", kernel_size=3, stride=1, padding=None, bias=False, name=None):
    """A convolution layer spec (padding 'same' by default)."""
    return LayerSpec("conv", kind, out, kernel_size, stride, padding, bias, name)


def linear(out, kind="spiking", bias=False, name=None):
    """A fully connected layer spec."""
    return LayerSpec("linear", kind, out, bias=bias, name=name)


def avgpool(kernel_size=2, name=None):
    """An average-pooling layer spec (stride = kernel_size)."""
    return LayerSpec("avgpool", "spiking", None, kernel_size, kernel_size, 0, False, name)


def flatten(name=None):
    return LayerSpec("flatten", name=name)


def as_spec(obj):
    """A LayerSpec / BackRes / Residual from itself or from its dict form."""
    if isinstance(obj, (LayerSpec, BackRes, Residual)):
        return obj
    if isinstance(obj, Mapping):
        d = dict(obj)
        op = d.get("op")
        if op == "backres":
            return BackRes(tuple(as_spec(s) for s in d["layers"]), int(d.get("R", 2)),
                           d.get("form", "reentry"), d.get("name"))
        if op == "residual":
            return Residual(tuple(as_spec(s) for s in d["layers"]), d.get("name"),
                            as_spec(d["shortcut"]) if d.get("shortcut") else None)
        try:
            return LayerSpec(**d)
        except TypeError as exc:
            raise NetworkError(f"bad layer spec {obj!r}: {exc}") from exc
    raise NetworkError(f"a layer spec must be a LayerSpec, BackRes, Residual or dict, "
                       f"got {type(obj).__name__}: {obj!r}")


def specs_to_config(specs):
    """JSON-able list of dicts (for results files); :func:`specs_from_config` inverts it."""
    return [as_spec(s).to_dict() for s in specs]


def specs_from_config(config):
    return [as_spec(d) for d in config]


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------
def kind_list(kinds, n, default):
    """``n`` layer kinds from ``kinds``: None (all ``default``), 'spiking', 'artificial', an
    S/A pattern such as ``'SSAA'`` (one letter per weighted layer, readout last) or a list."""
    if kinds is None:
        return [default] * n
    if isinstance(kinds, str):
        if kinds in KINDS:
            return [kinds] * n
        letters = {"S": "spiking", "A": "artificial"}
        if len(kinds) != n or any(c not in letters for c in kinds):
            raise NetworkError(f"kinds pattern {kinds!r} must have {n} letters S (spiking) or "
                               "A (artificial), one per weighted layer including the readout")
        return [letters[c] for c in kinds]
    kinds = list(kinds)
    if len(kinds) != n:
        raise NetworkError(f"got {len(kinds)} kinds for {n} weighted layers (readout included)")
    return kinds


def vgg_specs(conv_channels=(16, "P", 32, "P"), fc=(128,), n_classes=10, kinds=None,
              kernel_size=3, bias=False):
    """VGG-style specs: 3x3 convolutions, 'P' = 2x2 average pooling, then linear layers.

    ``kinds`` is None (all spiking), 'spiking', 'artificial', a pattern string such as
    ``'SSAA'`` (one letter per weighted layer, readout last) or a list.
    """
    n_weighted = sum(1 for c in conv_channels if c != "P") + len(fc) + 1
    kinds = kind_list(kinds, n_weighted, "spiking")
    specs, k = [], 0
    for c in conv_channels:
        if c == "P":
            specs.append(avgpool(2))
        else:
            specs.append(conv(int(c), kinds[k], kernel_size, bias=bias))
            k += 1
    specs.append(flatten())
    for f in fc:
        specs.append(linear(int(f), kinds[k], bias=bias))
        k += 1
    specs.append(linear(int(n_classes), kinds[k], bias=bias, name="output"))
    return specs


def parse_layer_list(text, pooling=True):
    """A layer list as a command line gives it: ``'96,96,P,192'`` -> ``(96, 96, 'P', 192)``.

    Widths are integers >= 1; with ``pooling`` (the ``conv_channels`` of :func:`vgg_specs`)
    'P' marks a 2x2 average pooling. An empty string is an empty list (no layers).
    """
    items = []
    for token in (t.strip() for t in str(text).split(",")):
        if not token:
            continue
        if pooling and token.upper() == "P":
            items.append("P")
            continue
        try:
            width = int(token)
        except ValueError:
            width = 0
        if width < 1:
            expected = "integers >= 1 and 'P' (pooling)" if pooling else "integers >= 1"
            raise NetworkError(f"layer list {text!r}: {token!r} is not a width; expected "
                               f"comma-separated {expected}, e.g. "
                               f"{'96,96,P,192,192,P' if pooling else '512,256'}")
        items.append(width)
    return tuple(items)


def residual_specs(width=16, n_blocks=2, layers_per_block=2, n_classes=10, kinds=None,
                   pool_every=1, bias=False):
    """Residual-style specs: a stem conv, ``n_blocks`` identity-shortcut blocks, avgpool, readout."""
    n_weighted = 1 + n_blocks * layers_per_block + 1
    kinds = kind_list(kinds, n_weighted, "spiking")
    specs, k = [conv(width, kinds[0], bias=bias, name="stem")], 1
    for b in range(n_blocks):
        block = []
        for _ in range(layers_per_block):
            block.append(conv(width, kinds[k], bias=bias))
            k += 1
        specs.append(Residual(tuple(block), name=f"res{b}"))
        if pool_every and (b + 1) % pool_every == 0 and b < 2:
            specs.append(avgpool(2))
    specs += [flatten(), linear(n_classes, kinds[k], bias=bias, name="output")]
    return specs


def backres_specs(width=16, block_layers=1, R=2, shared=True, form="reentry", n_classes=10,
                  stem_pool=True, fc=(), kinds="spiking", bias=False):
    """Stem conv (+pool), a block of ``block_layers`` convs used R times, pool, readout.

    ``shared=True``: one :class:`BackRes` block with R passes (weights of one pass);
    ``shared=False``: the block physically repeated R times with separate weights (the
    "physically deeper" control with the same logical depth).
    """
    if int(R) < 1:
        raise NetworkError(f"R must be >= 1, got {R}")
    specs = [conv(width, kinds, bias=bias, name="stem")]
    if stem_pool:
        specs.append(avgpool(2))
    block = tuple(conv(width, kinds, bias=bias) for _ in range(block_layers))
    if shared:
        specs.append(BackRes(block, R=R, form=form, name="backres"))
    else:
        for _ in range(R):
            specs += list(block)
    specs += [avgpool(2), flatten()]
    specs += [linear(f, kinds, bias=bias) for f in fc]
    specs.append(linear(n_classes, kinds, bias=bias, name="output"))
    return specs


# ---------------------------------------------------------------------------------------------
# Activity passed between layers
# ---------------------------------------------------------------------------------------------
class Activity:
    """A layer's output: ``temporal`` (T, batch, ...) spikes/currents, or static (batch, ...).

    ``analog`` marks real-valued input (direct-coded image, artificial layer output);
    ``scale`` converts summed values to spike events (average pooling of k x k spikes divides
    the event count by k*k, which ``scale`` undoes for the energy count).
    """

    __slots__ = ("value", "temporal", "analog", "scale")

    def __init__(self, value, temporal, analog, scale=1.0):
        self.value, self.temporal, self.analog, self.scale = value, temporal, analog, scale

    def static(self):
        """The rate (mean over T) of a temporal activity, or the static value itself."""
        return self.value.mean(0) if self.temporal else self.value

    def temporal_value(self, T):
        if self.temporal:
            return self.value
        return self.value.unsqueeze(0).expand(T, *self.value.shape)

    def __add__(self, other):
        if self.temporal or other.temporal:
            T = self.value.shape[0] if self.temporal else other.value.shape[0]
            return Activity(self.temporal_value(T) + other.temporal_value(T), True,
                            self.analog or other.analog, max(self.scale, other.scale))
        return Activity(self.value + other.value, False, True)


def _apply_op(module, x, temporal):
    if not temporal:
        return module(x)
    T, B = x.shape[:2]
    y = module(x.reshape(T * B, *x.shape[2:]))
    return y.reshape(T, B, *y.shape[1:])


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class LogicalLayer:
    """One computing layer as it runs (a BackRes block gives R logical layers per spec).

    ``op_name`` names the weight module (shared between the passes of a BackRes block).
    """

    name: str
    spec: LayerSpec
    op_name: str
    in_shape: tuple = ()
    out_shape: tuple = ()
    is_readout: bool = False
    pass_index: int = 0
    neuron_key: str | None = None
    #: the projection of a Residual block: a current added at the block's last layer
    #: (``junction``), no neuron or ReLU of its own
    is_shortcut: bool = False
    #: for the last layer of a Residual block: the name of its projection shortcut, or
    #: ``'identity'``
    shortcut: str | None = None

    @property
    def kind(self):
        return self.spec.kind

    @property
    def macs(self):
        """Multiply-accumulates of one evaluation of this layer for one image."""
        s = self.spec
        if s.op == "linear":
            return int(self.in_shape[0]) * int(self.out_shape[0])
        if s.op == "conv":
            c_in = self.in_shape[0]
            c_out, h, w = self.out_shape
            return int(c_in * s.kernel_size ** 2 * c_out * h * w)
        return 0


class Network(nn.Module):
    """A spiking / artificial / hybrid network built from layer specs.

    Parameters
    ----------
    specs : sequence of LayerSpec / BackRes / Residual / dict
    input_shape : tuple
        One input image, ``(channels, height, width)`` or ``(features,)``.
    T : int
        Default number of time steps (>= 1); ``forward(x, T=...)`` may override it.
    neuron : NeuronModel
        Neuron of the spiking layers (default :data:`brainsnn.models.LIF`, reset to zero).
    dt : brian2 Quantity
        Time step of the neuron integration (default 1 ms).
    surrogate, alpha
        Surrogate derivative of the spike (default triangle, alpha = 1).
    readout : {'membrane', 'rate'}
        Logits from the accumulated membrane potential / T (non-spiking integrator) or from
        the output spike rate (the output layer's kind must then be 'spiking').
    encoder : None or callable
        Turns a batch of images into the first layer's input: None = direct coding (the
        analog image is a constant input current at every step); a callable
        ``encoder(x, T) -> (T, batch, ...)`` spike tensor (see :mod:`brainsnn.engine.encoding`).
    thresholds : mapping or sequence, optional
        Per-logical-layer thresholds (see :meth:`set_thresholds`).
    """

    def __init__(self, specs, input_shape, T=4, neuron: NeuronModel = LIF, dt=1 * b2.ms,
                 surrogate="triangle", alpha=1.0, readout="membrane", encoder=None,
                 thresholds=None):
        super().__init__()
        self.specs = [as_spec(s) for s in specs]
        if not self.specs:
            raise NetworkError("a network needs at least one layer spec")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.T = check_T(T, error=NetworkError)
        if not isinstance(neuron, NeuronModel):
            raise NetworkError(f"neuron must be a brainsnn.models.NeuronModel, got {neuron!r}")
        if readout not in READOUTS:
            raise NetworkError(f"readout {readout!r} unknown; expected 'membrane' or 'rate'")
        self.neuron_model = neuron
        self.dt = dt
        self.surrogate = surrogate
        self.alpha = alpha
        self.readout = readout
        self.encoder = encoder
        self.ops = nn.ModuleDict()
        self.neurons = nn.ModuleDict()
        self.layers: list[LogicalLayer] = []
        self._plan = self._build()
        self._neuron_models: dict[str, NeuronModel] = {}
        self._make_neurons({})
        if thresholds is not None:
            self.set_thresholds(thresholds)
        #: {junction logical layer: factor of the shortcut current}; conversion sets it so
        #: that both summed branches stand for the same activation scale
        self.shortcut_gains: dict[str, float] = {}
        self.record = False
        #: optional callable probe(logical_layer, current, temporal), called with the input
        #: current of every weighted layer (shortcut included) before its ReLU / neuron / readout
        #: (used by brainsnn.learn.conversion to balance thresholds and read the readout per step)
        self.probe = None
        self.reset_stats()

    # -- building --------------------------------------------------------------------------
    def _build(self):
        """Create the weight modules and logical layers; returns the execution plan.

        Plan items: ``('layer', ll)``, ``('backres', spec, [sub-plan per pass])`` and
        ``('residual', spec, sub-plan, shortcut_ll or None)`` (see :meth:`walk`).
        """
        weighted_idx = [i for i, s in enumerate(self.specs)
                        if (isinstance(s, LayerSpec) and s.weighted) or not isinstance(s, LayerSpec)]
        if not weighted_idx:
            raise NetworkError("a network needs at least one conv or linear layer (the readout)")
        last = weighted_idx[-1]
        if not isinstance(self.specs[last], LayerSpec):
            raise NetworkError("the last weighted layer (the readout) must be a plain linear or "
                               "conv layer, not a BackRes/Residual block")
        if self.readout == "rate" and self.specs[last].kind != "spiking":
            raise NetworkError("readout='rate' needs a spiking output layer")
        self._counter = 0
        shape, plan = self.input_shape, []
        for idx, spec in enumerate(self.specs):
            template, shape = self._template(spec, shape, idx)
            plan += self._instantiate(template, suffix="", pass_index=0,
                                      is_readout=(idx == last))
        self.output_shape = shape
        return plan

    def _add_op(self, spec, shape, default_name=None):
        i = self._counter
        self._counter += 1
        name = spec.name or default_name or f"{spec.op}{i}"
        if name in self.ops:
            raise NetworkError(f"duplicate layer name {name!r}")
        module = self._make_op(spec, shape, name)
        self.ops[name] = module
        return name, _out_shape(module, shape, name)

    def _template(self, spec, shape, idx):
        """Make the weight modules of one spec (once, shared by BackRes passes); returns
        ``(template, output shape)``, the template being what :meth:`_instantiate` unrolls."""
        if isinstance(spec, LayerSpec):
            name, out = self._add_op(spec, shape)
            return ("layer", spec, name, shape, out), out
        bname = spec.name or f"block{idx}"
        if isinstance(spec, Residual):
            block_in, body = shape, []
            for s in spec.layers:
                t, shape = self._template(s, shape, idx)
                body.append(t)
            short = None
            if spec.shortcut is not None:
                name, s_out = self._add_op(spec.shortcut, block_in, f"{bname}_shortcut")
                if s_out != shape:
                    raise NetworkError(
                        f"Residual block {bname!r}: the shortcut makes shape {s_out} from the "
                        f"block input {block_in}, the block's layers make {shape}; give the "
                        "projection the block's output channels and stride")
                short = ("layer", spec.shortcut, name, block_in, s_out)
            elif shape != block_in:
                raise NetworkError(
                    f"Residual block {bname!r}: output shape {shape} differs from its "
                    f"input shape {block_in}; an identity shortcut needs equal shapes (give a "
                    "projection shortcut, e.g. shortcut=conv(out, kernel_size=1, stride=2, "
                    "padding=0))")
            return ("residual", spec, body, short), shape
        block_in, body = shape, []
        for s in spec.layers:
            t, shape = self._template(s, shape, idx)
            body.append(t)
        if shape != block_in:
            raise NetworkError(
                f"BackRes block {bname!r}: output shape {shape} differs from its "
                f"input shape {block_in}; a block fed back into itself must keep the "
                "shape (same channels, stride 1, no pooling)")
        return ("backres", spec, body), shape

    def _instantiate(self, template, suffix, pass_index, is_readout=False):
        """Logical layers (appended to ``self.layers`` in running order) and plan items."""
        if template[0] == "layer":
            _, spec, name, i_sh, o_sh = template
            ll = LogicalLayer(name + suffix, spec, name, i_sh, o_sh, is_readout=is_readout,
                              pass_index=pass_index)
            self.layers.append(ll)
            return [("layer", ll)]
        if template[0] == "residual":
            _, spec, body, short = template
            short_ll = None
            if short is not None:
                _, s_spec, name, i_sh, o_sh = short
                short_ll = LogicalLayer(name + suffix, s_spec, name, i_sh, o_sh,
                                        pass_index=pass_index, is_shortcut=True)
                self.layers.append(short_ll)
            sub = []
            for t in body:
                sub += self._instantiate(t, suffix, pass_index)
            sub[-1][1].shortcut = short_ll.name if short_ll is not None else "identity"
            return [("residual", spec, sub, short_ll)]
        _, spec, body = template
        passes = []
        for r in range(int(spec.R)):
            sfx = f"{suffix}_pass{r + 1}" if spec.R > 1 else suffix
            sub = []
            for t in body:
                sub += self._instantiate(t, sfx, r)
            passes.append(sub)
        return [("backres", spec, passes)]

    def walk(self, act, visit, add=None, plan=None):
        """Run ``act`` through the execution plan with a caller's layer function.

        ``visit(ll, x, shortcut)`` returns the output of logical layer ``ll`` on ``x``;
        ``shortcut`` is the block input (identity) or the projection's output, to be added
        (times the junction's gain, :attr:`shortcut_gains`) to the current of the last layer
        of a Residual block, else None; for a projection (``ll.is_shortcut``) it returns its
        current. ``add(a, b)`` (default ``a + b``) sums the inputs of an additive BackRes pass.
        The forward pass, the Brian2 export and conversion's source tracking all use it.
        """
        add = add or (lambda a, b: a + b)
        for item in self._plan if plan is None else plan:
            if item[0] == "layer":
                act = visit(item[1], act, None)
            elif item[0] == "backres":
                spec, passes = item[1], item[2]
                x0 = act
                for r, sub in enumerate(passes):
                    if spec.form == "additive" and r > 0:
                        act = add(act, x0)
                    act = self.walk(act, visit, add, sub)
            else:
                sub, short_ll = item[2], item[3]
                shortcut = act if short_ll is None else visit(short_ll, act, None)
                act = self.walk(act, visit, add, sub[:-1])
                act = visit(sub[-1][1], act, shortcut)
        return act

    def shortcut_gain(self, name):
        """The factor of the shortcut current at junction layer ``name`` (1 unless set)."""
        return float(self.shortcut_gains.get(name, 1.0))

    def _make_op(self, spec, shape, name):
        if spec.op == "conv":
            if len(shape) != 3:
                raise NetworkError(f"conv layer {name!r} needs a (channels, height, width) input, "
                                   f"got shape {shape}; put it before flatten")
            pad = spec.kernel_size // 2 if spec.padding is None else spec.padding
            m = nn.Conv2d(shape[0], int(spec.out), spec.kernel_size, spec.stride, pad,
                          bias=spec.bias)
        elif spec.op == "linear":
            if len(shape) != 1:
                raise NetworkError(f"linear layer {name!r} needs a flat input, got shape {shape}; "
                                   "add a flatten() spec before it")
            m = nn.Linear(shape[0], int(spec.out), bias=spec.bias)
        elif spec.op == "avgpool":
            if len(shape) != 3:
                raise NetworkError(f"avgpool layer {name!r} needs a (channels, height, width) "
                                   f"input, got shape {shape}")
            m = nn.AvgPool2d(spec.kernel_size, spec.stride, spec.padding or 0)
        else:
            m = nn.Flatten()
        if spec.weighted:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        return m

    def _make_neurons(self, models):
        from brainsnn.engine.neuron import TorchNeuron  # the package's one neuron integrator

        self.neurons = nn.ModuleDict()
        for ll in self.layers:
            if not ll.spec.weighted or ll.kind != "spiking" or ll.is_shortcut:
                ll.neuron_key = None
                continue
            if ll.is_readout and self.readout == "membrane":
                ll.neuron_key = None
                continue
            model = models.get(ll.name, self.neuron_model)
            self._neuron_models[ll.name] = model
            self.neurons[ll.name] = TorchNeuron(model, dt=self.dt, surrogate=self.surrogate,
                                                alpha=self.alpha)
            ll.neuron_key = ll.name

    # -- conversion helpers ----------------------------------------------------------------
    def spiking_layer_names(self):
        """Names of the logical layers that hold a neuron (one per BackRes pass)."""
        return [ll.name for ll in self.layers if ll.neuron_key is not None]

    def weighted_layer_names(self):
        return [ll.name for ll in self.layers if ll.spec.weighted]

    def with_neuron(self, neuron: NeuronModel, thresholds=None, kind=None):
        """A copy of this network (same weights) with another neuron model.

        ``kind='spiking'`` also turns every artificial layer spiking (ANN -> SNN conversion);
        ``thresholds`` as in :meth:`set_thresholds`.
        """
        specs = self.specs if kind is None else _respec(self.specs, kind)
        other = Network(specs, self.input_shape, self.T, neuron, self.dt, self.surrogate,
                        self.alpha, self.readout, self.encoder)
        other.ops.load_state_dict(self.ops.state_dict())
        other.to(next(self.parameters()).device)
        other.shortcut_gains = dict(self.shortcut_gains)
        if thresholds is not None:
            other.set_thresholds(thresholds)
        return other

    def set_thresholds(self, thresholds, parameter="theta"):
        """Give spiking layers their own threshold (parameter ``theta`` of the neuron model).

        ``thresholds``: a mapping {logical layer name: value} or a sequence in the order of
        :meth:`spiking_layer_names`.
        """
        names = self.spiking_layer_names()
        if not isinstance(thresholds, Mapping):
            thresholds = list(thresholds)
            if len(thresholds) != len(names):
                raise NetworkError(f"got {len(thresholds)} thresholds for {len(names)} spiking "
                                   f"layers ({', '.join(names)})")
            thresholds = dict(zip(names, thresholds))
        unknown = sorted(set(thresholds) - set(names))
        if unknown:
            raise NetworkError(f"no spiking layer named {', '.join(unknown)}; spiking layers are "
                               f"{', '.join(names)}")
        device = next(self.parameters()).device
        models = dict(self._neuron_models)
        for name, value in thresholds.items():
            models[name] = models[name].with_parameters(**{parameter: float(value)})
        self._make_neurons(models)
        self.neurons.to(device)

    def thresholds(self, parameter="theta"):
        return {n: float(self._neuron_models[n].parameters.get(parameter, float("nan")))
                for n in self.spiking_layer_names()}

    # -- statistics ------------------------------------------------------------------------
    def reset_stats(self):
        """Clear the spike statistics accumulated while ``self.record`` is True."""
        self.stats = {"images": 0, "T": None, "layers": {}}

    def _note(self, ll, x: Activity, T, out=None):
        if not self.record:
            return
        with torch.no_grad():
            st = self.stats["layers"].setdefault(
                ll.name, {"input_count": 0.0, "input_analog": False, "input_temporal": False,
                          "output_spikes": 0.0, "output_neurons": math.prod(ll.out_shape),
                          "input_neurons": math.prod(ll.in_shape), "op_name": ll.op_name})
            batch = x.value.shape[1] if x.temporal else x.value.shape[0]
            st["input_analog"] = st["input_analog"] or bool(x.analog)
            st["input_temporal"] = bool(x.temporal)
            if x.temporal and not x.analog:
                # total input spikes over the T steps, summed over the batch
                st["input_count"] += float(x.value.sum()) * x.scale
            if out is not None:
                st["output_spikes"] += float(out.sum())
            st["batch_seen"] = st.get("batch_seen", 0) + batch

    # -- running ---------------------------------------------------------------------------
    def _run_neuron(self, ll, current: Activity, T):
        neuron = self.neurons[ll.neuron_key]
        cur = current.value
        static = not current.temporal
        shape = cur.shape if static else cur.shape[1:]
        state = neuron.initial_state(tuple(shape), device=cur.device, dtype=cur.dtype)
        spikes = []
        for t in range(T):
            s, state = neuron(state, cur if static else cur[t])
            spikes.append(s)
        return torch.stack(spikes)

    def _layer(self, ll, x: Activity, T, shortcut: Activity | None = None):
        op = self.ops[ll.op_name]
        spec = ll.spec
        if not spec.weighted:
            scale = x.scale * (spec.kernel_size ** 2 if spec.op == "avgpool" else 1)
            return Activity(_apply_op(op, x.value, x.temporal), x.temporal, x.analog, scale)
        if ll.is_shortcut:  # projection: a current, summed at the block's last layer
            self._note(ll, x, T)
            return Activity(_apply_op(op, x.value, x.temporal), x.temporal, True)
        if shortcut is not None and ll.name in self.shortcut_gains:
            g = self.shortcut_gain(ll.name)
            shortcut = Activity(shortcut.value * g, shortcut.temporal, shortcut.analog,
                                shortcut.scale)
        if spec.kind == "artificial":
            inp = x.static()
            cur = op(inp)
            if shortcut is not None:
                cur = cur + shortcut.static()
            if self.probe is not None:
                self.probe(ll, cur, False)
            out = cur if ll.is_readout else torch.relu(cur)
            self._note(ll, Activity(inp, False, True), T)
            return Activity(out, False, True)
        # spiking: synaptic current each step (constant if the input is static/analog)
        cur = Activity(_apply_op(op, x.value, x.temporal), x.temporal, True)
        if shortcut is not None:
            cur = cur + shortcut
        if self.probe is not None:
            self.probe(ll, cur.value, cur.temporal)
        if ll.is_readout and self.readout == "membrane":
            self._note(ll, x, T)
            return Activity(cur.static(), False, True)  # accumulated potential / T
        spikes = self._run_neuron(ll, cur, T)
        self._note(ll, x, T, spikes)
        return Activity(spikes, True, False)

    def forward(self, x, T=None):
        """Logits ``(batch, n_out)`` for a batch of images (see the class docstring)."""
        T = self.T if T is None else check_T(T, error=NetworkError)
        x = self._check_input(x)
        if self.encoder is None:
            act = Activity(x, False, True)
        else:
            act = Activity(self.encoder(x, T), True, False)
        if self.record:
            self.stats["T"] = T
            self.stats["images"] += x.shape[0]
        act = self.walk(act, lambda ll, x, shortcut: self._layer(ll, x, T, shortcut))
        return act.static()

    def _check_input(self, x):
        if not torch.is_tensor(x):
            x = torch.as_tensor(x, dtype=torch.float32)
        shape = tuple(x.shape)
        if shape == self.input_shape:
            raise NetworkError(f"input must be a batch (batch, {', '.join(map(str, self.input_shape))})"
                               f", got one image of shape {shape}; use x[None]")
        if shape[1:] == self.input_shape:
            return x
        if len(self.input_shape) == 3 and self.input_shape[0] == 1 and \
                shape[1:] == self.input_shape[1:]:
            return x.unsqueeze(1)
        raise NetworkError(f"input batch has shape {shape}, the network expects "
                           f"(batch, {', '.join(map(str, self.input_shape))})")

    @torch.no_grad()
    def calibrate_rates(self, x, target_rate=0.1, iterations=10, tolerance=0.5, T=None):
        """Data-driven initialisation: scale weights so every spiking layer fires.

        Layer by layer, in the order they run, the weights of each spiking layer are scaled
        (factor in [0.5, 2] per iteration) until its mean spike rate on the batch ``x`` lies
        within a factor ``1 + tolerance`` of ``target_rate`` (spikes per neuron per step).
        This counters the fading of spiking activity in deep layers at initialisation. A
        BackRes block's shared weights are scaled on its first pass; a layer with batch-norm
        has its batch-norm scale (gamma) scaled, since batch statistics would undo a scaling
        of the weights. Returns {layer: rate}.
        """
        was_record, was_training = self.record, self.training
        self.eval()
        done, rates = set(), {}
        try:
            for ll in self.layers:
                if ll.neuron_key is None or ll.op_name in done:
                    continue
                done.add(ll.op_name)
                op = self.ops[ll.op_name]
                weight = op[1].weight if isinstance(op, BatchNormOp) else op.weight
                for _ in range(int(iterations)):
                    self.reset_stats()
                    self.record = True
                    self(x, T=T)
                    st = self.stats["layers"][ll.name]
                    rate = st["output_spikes"] / (st["output_neurons"] * self.stats["images"]
                                                  * self.stats["T"])
                    rates[ll.name] = rate
                    if target_rate / (1 + tolerance) <= rate <= target_rate * (1 + tolerance):
                        break
                    factor = 2.0 if rate == 0 else min(2.0, max(0.5, (target_rate / rate) ** 0.7))
                    weight.mul_(factor)
        finally:
            self.record = was_record
            self.reset_stats()
            self.train(was_training)
        return rates

    # -- description -----------------------------------------------------------------------
    def n_parameters(self):
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def describe(self):
        """One line per logical layer: name, op, kind, shapes, MACs."""
        lines = []
        for ll in self.layers:
            kind = "shortcut" if ll.is_shortcut else ll.kind if ll.spec.weighted else "passive"
            if ll.is_readout:
                kind += f" readout({self.readout})"
            lines.append(f"{ll.name:<16} {ll.spec.op:<8} {kind:<28} {str(ll.in_shape):>14} -> "
                         f"{str(ll.out_shape):<14} MACs={ll.macs}")
        return "\n".join(lines)

    def config(self):
        """JSON-able description (for results files)."""
        return {"specs": specs_to_config(self.specs), "input_shape": list(self.input_shape),
                "T": self.T, "neuron": self.neuron_model.name, "dt_ms": float(self.dt / b2.ms),
                "surrogate": self.surrogate, "alpha": float(self.alpha), "readout": self.readout,
                "encoder": getattr(self.encoder, "name", None) or "direct",
                "n_parameters": self.n_parameters()}


# ---------------------------------------------------------------------------------------------
# Batch-norm as a training aid, folded into weights and biases afterwards
# ---------------------------------------------------------------------------------------------
def device_of(module):
    """The device of a module's first parameter (the CPU for a module without parameters)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class BatchNormOp(nn.Sequential):
    """A weight op followed by batch-norm (training-time only; see :func:`fold_batchnorm`)."""


def attach_batchnorm(net):
    """Put batch-norm after every weighted layer except the readout (in place; returns ``net``).

    Training aid for deep networks (ANN or SNN): train with it, then :func:`fold_batchnorm`
    (before conversion; :class:`brainsnn.learn.agd.AGDClassifier` folds at the end of ``fit``).
    In a spiking layer batch-norm normalises the input current over batch and time steps.
    A BackRes block's passes share the batch-norm with the weights.
    """
    readout = next(ll.op_name for ll in net.layers if ll.is_readout)
    for ll in net.layers:
        if not ll.spec.weighted or ll.op_name == readout or isinstance(net.ops[ll.op_name], BatchNormOp):
            continue
        op = net.ops[ll.op_name]
        bn = nn.BatchNorm2d(op.out_channels) if ll.spec.op == "conv" else \
            nn.BatchNorm1d(op.out_features)
        net.ops[ll.op_name] = BatchNormOp(op, bn.to(op.weight.device))
    return net


def fold_batchnorm(net):
    """A new Network without batch-norm: BN folded into the preceding weights and biases.

    W' = W * gamma / sqrt(var + eps) (per output channel), b' = (b - mean) * gamma /
    sqrt(var + eps) + beta. Folded layers get ``bias=True`` in their spec. A network without
    batch-norm is returned unchanged (the same object).
    """
    folded = {name for name, op in net.ops.items() if isinstance(op, BatchNormOp)}
    if not folded:
        return net

    def walk(items):
        out = []
        for s in items:
            if isinstance(s, LayerSpec):
                name = _spec_names(net).get(id(s))
                out.append(dataclasses.replace(s, bias=True) if name in folded else s)
            elif isinstance(s, Residual) and s.shortcut is not None:
                out.append(dataclasses.replace(s, layers=tuple(walk(s.layers)),
                                               shortcut=walk([s.shortcut])[0]))
            else:
                out.append(dataclasses.replace(s, layers=tuple(walk(s.layers))))
        return out

    specs = walk(net.specs)
    other = Network(specs, net.input_shape, T=net.T, neuron=net.neuron_model, dt=net.dt,
                    surrogate=net.surrogate, alpha=net.alpha, readout=net.readout,
                    encoder=net.encoder).to(device_of(net))
    with torch.no_grad():
        for name, op in net.ops.items():
            target = other.ops[name]
            if isinstance(op, BatchNormOp):
                w_op, bn = op[0], op[1]
                g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                shape = (-1,) + (1,) * (w_op.weight.dim() - 1)
                target.weight.copy_(w_op.weight * g.reshape(shape))
                b = w_op.bias if w_op.bias is not None else torch.zeros_like(bn.running_mean)
                target.bias.copy_((b - bn.running_mean) * g + bn.bias)
            else:
                target.load_state_dict(op.state_dict())
    return other


def _spec_names(net):
    """{id(spec): op name} for the LayerSpecs of ``net`` (from its logical layers)."""
    return {id(ll.spec): ll.op_name for ll in net.layers}


def _out_shape(module, shape, name):
    with torch.no_grad():
        try:
            y = module(torch.zeros(1, *shape))
        except RuntimeError as exc:
            raise NetworkError(f"layer {name!r} cannot take input of shape {shape}: {exc}") from exc
    if y.numel() == 0:
        raise NetworkError(f"layer {name!r} makes an empty output from input shape {shape} "
                           "(too much pooling for this image size?)")
    return tuple(y.shape[1:])


def _respec(specs, kind):
    out = []
    for s in specs:
        if isinstance(s, LayerSpec):
            out.append(dataclasses.replace(s, kind=kind) if s.weighted else s)
        else:  # BackRes or Residual (a projection takes the kind of the block's last layer)
            out.append(dataclasses.replace(s, layers=tuple(_respec(s.layers, kind))))
    return out
