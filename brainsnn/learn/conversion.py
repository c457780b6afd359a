"""ANN-to-SNN conversion: ReLU network -> integrate-and-fire network, as defined in this project.

The third training family of Panda, Aketi & Roy (as defined in this project: docs/conversion.md). A ReLU
ANN is a :class:`brainsnn.engine.network.Network` whose weighted layers are all ``'artificial'``
(biases off, or batch-norm folded into weights and biases with :func:`fold_batchnorm`; average
pooling). :class:`ANNToSNN` copies its weights into a network of the same specs whose layers
are ``'spiking'`` (or a hybrid pattern of spiking and artificial layers), with a neuron model of
the package (default :data:`brainsnn.models.IF`: v[t] = v[t-1] + input, spike at v >= theta,
reset by subtraction v -= theta), and sets one threshold per logical layer (one per BackRes
pass):

* ``method='balance'`` -- threshold balancing after Sengupta et al. (2019), as defined in this
  project: layer by layer, in the order the layers run, the converted network runs on training
  images for ``balance_T`` steps with the earlier layers already balanced, and the layer's
  threshold is the maximum input current (synaptic input of one step, shortcut included) that
  any of its neurons receives (``balance_percentile=100``; a lower percentile of the positive
  currents is the "robust" variant).
* ``method='percentile'`` -- activation percentiles after Rueckauer et al. (2017), as defined in
  this project: lambda_l is the p-th percentile (default 99.9) of the non-zero ReLU outputs of
  the ANN's layer l on training images; with unit (0/1) spikes the threshold is
  theta_l = lambda_l / lambda_src(l), where src(l) is the spiking layer that feeds l (lambda of
  the input image is 1). This is Rueckauer's weight normalisation written as thresholds, so
  BackRes passes, which share weights, can each get their own.

Spikes are 0/1 events, so one spike of layer l stands for the ANN activation lambda_l
(``scales_``). A layer's bias (from folded batch-norm) is therefore divided by the scale of its
input, lambda_src(l), for the converted network. A Residual block adds its input (identity
shortcut, spikes of scale lambda_x) or its projection's current (scale lambda_x too: the
projection's bias is divided by it) to the current of the block's last layer l, whose own
branch has scale lambda_src(l). Both methods weigh the shortcut at that junction by the gain
g_l = lambda_x / lambda_src(l) (``shortcut_gains_``, held by the converted network's
``shortcut_gains`` and exported to Brian2 as scaled synaptic weights), so that the summed
current is the ANN's sum in units of lambda_src(l); the junction's threshold is then set on
that current (the maximum with the shortcut included for ``'balance'``, lambda_l / lambda_src(l)
for ``'percentile'``). Without the gain the two trains, whose scales differ, would be added as
if equal, which is where residual conversions lose most of their accuracy. The additive
BackRes form sums its two trains with equal weights: for ``'percentile'`` their scales are
made equal (the larger of the two percentiles). In a
hybrid conversion an artificial layer is computed once, on the rates of its input (see
:mod:`brainsnn.engine.network`), and carries the scale of its input.

The output layer is a non-spiking integrator (``readout='membrane'``): the logits after T
steps are the accumulated input current divided by T. One run of T_max steps gives the accuracy
at every T <= T_max (:meth:`ANNToSNN.accuracy_vs_T`).

Error bound used by the tests: an IF neuron with reset by subtraction, v[0] = 0, a constant
input current I with 0 <= I <= theta, fires N = floor(T I / theta) spikes in T steps, so
|N/T - I/theta| < 1/T.

Example::

    from brainsnn.engine.network import Network, vgg_specs
    from brainsnn.learn.conversion import ANNToSNN, train_ann
    ann = Network(vgg_specs((16, 'P', 32, 'P'), fc=(128,), kinds='artificial'), (1, 28, 28), T=1)
    train_ann(ann, x_train, y_train, epochs=2)
    conv = ANNToSNN(ann, method='balance').fit(x_train[:500])
    conv.accuracy_vs_T(x_test, y_test, [32, 64, 128, 256])
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings

import numpy as np
import torch
from torch import nn

from brainsnn.models import IF, NeuronModel
from brainsnn.engine.devices import torch_device
from brainsnn.engine.network import LayerSpec, Network, as_spec
from brainsnn.engine.network import BatchNormOp, device_of, attach_batchnorm, fold_batchnorm  # noqa: F401
from brainsnn.errors import ConversionError  # noqa: F401
from brainsnn.params import Params
from brainsnn.validation import check_labels, check_T, positive_int, validate_images

__all__ = [
    "ConversionError", "ANNToSNN", "if_spike_count", "percentile_scale",
    "source_layers", "junction_sources", "with_kinds", "attach_batchnorm", "fold_batchnorm", "train_ann",
    "from_torch", "METHODS",
]

METHODS = ("balance", "percentile")




@contextlib.contextmanager
def probing(net, probe):
    """Attach ``probe`` to ``net`` (it sees every layer's current in the forward passes run
    inside the block) and detach it afterwards, whatever happens."""
    net.probe = probe
    try:
        yield probe
    finally:
        net.probe = None


class StopForward(Exception):
    """Raised by a probe to end a forward pass once the probed layer has been seen."""


def if_spike_count(current, theta, T):
    """Spikes of an IF neuron with reset by subtraction driven by a constant current.

    v[0] = 0; each step v += current, spike if v >= theta, then v -= theta. For
    0 <= current <= theta this is floor(T * current / theta) (computed here step by step in
    float64 so it also holds for currents above theta or below zero).
    """
    current = np.asarray(current, dtype=np.float64)
    v = np.zeros_like(current)
    n = np.zeros_like(current)
    for _ in range(check_T(T, error=ConversionError)):
        v = v + current
        s = v >= theta
        n += s
        v = v - theta * s
    return n


def percentile_scale(activations, p=99.9, nonzero=True):
    """The p-th percentile of activations (of the non-zero ones by default); 1.0 if none."""
    a = np.asarray(activations, dtype=np.float64).ravel()
    if nonzero:
        a = a[a > 0]
    if not 0 < p <= 100:
        raise ConversionError(f"percentile must lie in (0, 100], got {p!r}")
    if a.size == 0:
        return 1.0
    return float(np.percentile(a, p))


# ---------------------------------------------------------------------------------------------
# Specs helpers
# ---------------------------------------------------------------------------------------------
def _weighted_specs(specs):
    out = []
    for s in specs:
        if isinstance(s, LayerSpec):
            if s.weighted:
                out.append(s)
        else:
            out.extend(_weighted_specs(s.layers))
    return out


def with_kinds(specs, kinds):
    """Specs with the kind of every weighted layer set (conversion target pattern).

    ``kinds``: 'spiking', 'artificial', a pattern string of S/A letters with one letter per
    weighted layer spec in order (a BackRes block's layers count once; the readout last), or
    a list of kinds.
    """
    specs = [as_spec(s) for s in specs]
    n = len(_weighted_specs(specs))
    if isinstance(kinds, str) and kinds in ("spiking", "artificial"):
        kinds = [kinds] * n
    elif isinstance(kinds, str):
        letters = {"S": "spiking", "A": "artificial"}
        if len(kinds) != n or any(c not in letters for c in kinds):
            raise ConversionError(f"kinds pattern {kinds!r} must have {n} letters S (spiking) "
                                  "or A (artificial), one per weighted layer, readout last")
        kinds = [letters[c] for c in kinds]
    else:
        kinds = list(kinds)
        if len(kinds) != n or any(k not in ("spiking", "artificial") for k in kinds):
            raise ConversionError(f"kinds must list {n} entries 'spiking'/'artificial', got "
                                  f"{kinds!r}")
    it = iter(kinds)

    def walk(items):
        out = []
        for s in items:
            if isinstance(s, LayerSpec):
                out.append(dataclasses.replace(s, kind=next(it)) if s.weighted else s)
            else:
                out.append(dataclasses.replace(s, layers=tuple(walk(s.layers))))
        return out

    return walk(specs)


def _rebuild(net, specs, neuron=None, encoder="same", readout=None):
    """A Network of ``specs`` (same names and shapes as ``net``) with ``net``'s weights."""
    other = Network(specs, net.input_shape, T=net.T,
                    neuron=net.neuron_model if neuron is None else neuron, dt=net.dt,
                    surrogate=net.surrogate, alpha=net.alpha,
                    readout=net.readout if readout is None else readout,
                    encoder=net.encoder if encoder == "same" else encoder)
    other.ops.load_state_dict(net.ops.state_dict())
    return other.to(device_of(net))


# ---------------------------------------------------------------------------------------------
# Topology: which layer feeds which (for scales), from the network's plan
# ---------------------------------------------------------------------------------------------
def source_layers(net):
    """Sources and scale ties of the weighted logical layers of a Network.

    Returns ``(sources, ties)``: ``sources[name]`` is the weighted logical layer whose output
    feeds layer ``name`` (through passive ops), None for the input image (a projection
    shortcut's source is its block's input); ``ties`` lists pairs of layers (or None) whose
    spike trains an additive BackRes pass sums with equal weights, so that their scales must
    be equal for rates to add up like the ANN activations. (Residual junctions weigh their
    shortcut instead: :func:`junction_sources`.)
    """
    sources, ties, _ = _topology(net)
    return sources, ties


def junction_sources(net):
    """{last layer of a Residual block: the layer (or None, the image) whose output its
    shortcut adds}: the block input's source (identity) or the projection itself."""
    return _topology(net)[2]


def _topology(net):
    sources, ties, junctions = {}, [], {}

    def visit(ll, cur, shortcut):
        if not ll.spec.weighted:
            return cur
        sources[ll.name] = cur
        if ll.shortcut is not None:
            junctions[ll.name] = shortcut
        return ll.name

    def add(a, b):
        ties.append((a, b))
        return a

    net.walk(None, visit, add)
    return sources, ties, junctions


# ---------------------------------------------------------------------------------------------
# Probing a Network's layer currents
# ---------------------------------------------------------------------------------------------
class Probe:
    """Callable set as ``network.probe``: sees each weighted layer's input current."""

    def __init__(self, target=None, readout=None, sample=None, generator=None, stop=True):
        self.target, self.readout_name, self.stop = target, readout, stop
        self.max = -math.inf
        self.samples = {} if sample else None
        self.sample = sample
        self.generator = generator
        self.trace = None

    def _keep(self, name, values):
        v = values.detach().reshape(-1)
        v = v[v > 0]
        if v.numel() > self.sample:
            idx = torch.randperm(v.numel(), generator=self.generator)[:self.sample]
            v = v[idx.to(v.device)]
        self.samples.setdefault(name, []).append(v.float().cpu().numpy())

    def __call__(self, ll, current, temporal):
        if self.readout_name is not None and ll.name == self.readout_name:
            self.trace = (current.detach(), temporal)
        if self.target is None and self.samples is not None and not ll.is_readout:
            self._keep(ll.name, torch.relu(current))
            return
        if ll.name == self.target:
            self.max = max(self.max, float(current.max()))
            if self.samples is not None:
                self._keep(ll.name, current)
            if self.stop:
                raise StopForward


def _require_probe(net):
    if not hasattr(net, "probe"):
        raise ConversionError("this brainsnn.engine.network.Network has no 'probe' hook (needed to "
                              "read layer currents); update brainsnn/engine/network.py")


# ---------------------------------------------------------------------------------------------
# The converter
# ---------------------------------------------------------------------------------------------
class ANNToSNN(Params):
    """Converts a ReLU ANN (an all-artificial Network) into a spiking network.

    scikit-learn contract: ``fit(images)`` sets the thresholds on training images, ``predict``,
    ``score`` and ``accuracy_vs_T`` evaluate the converted network.

    Parameters
    ----------
    ann : brainsnn.engine.network.Network
        The trained ANN: every weighted layer 'artificial', no batch-norm left (see
        :func:`fold_batchnorm`).
    method : {'balance', 'percentile'}
        Threshold balancing (Sengupta et al. 2019) or activation percentiles (Rueckauer et al.
        2017), as defined in this project (module docstring).
    neuron : NeuronModel
        Neuron of the spiking layers (default IF, reset by subtraction). It must have the
        threshold parameter ``threshold_parameter`` (default ``theta``, dimensionless).
    kinds : str or list
        Target layer kinds: 'spiking' (default; the readout integrates) or a hybrid pattern
        such as 'SSAA' (see :func:`with_kinds`).
    percentile : float
        p for ``method='percentile'`` (percent, default 99.9).
    balance_T : int
        Time steps per balancing image (default 128).
    balance_percentile : float
        100 (default): the maximum current (Sengupta); lower: that percentile of the positive
        currents.
    encoder : None, 'direct', 'poisson' or callable
        Input coding of the converted network (default direct: the analog image is the first
        layer's input current at every step).
    batch_size : int
        Images per forward pass (memory grows with T x batch_size).
    device : str or torch.device, optional
        Default: the device of the ANN.
    seed : int
        Seeds Poisson input and the sampling of activations.

    Attributes (after fit)
    ----------------------
    snn_ : Network
        The converted network (IF neurons, thresholds set).
    thresholds_ : dict
        {logical layer name: theta} for every spiking logical layer (one per BackRes pass).
    scales_ : dict
        {weighted logical layer name: lambda}, the ANN activation one spike stands for.
    classes_ : int array
        The class indices ``0 .. n_outputs - 1`` of the ANN's output layer.
    fit_seconds_ : float
    """

    def __init__(self, ann, method="balance", neuron: NeuronModel = IF, kinds="spiking",
                 percentile=99.9, balance_T=128, balance_percentile=100.0, encoder=None,
                 batch_size=100, threshold_parameter="theta", device=None, seed=0,
                 max_samples=200_000, verbose=False):
        self.ann, self.method, self.neuron, self.kinds = ann, method, neuron, kinds
        self.percentile, self.balance_percentile = percentile, balance_percentile
        self.balance_T = balance_T
        self.encoder = encoder
        self.batch_size = batch_size
        self.threshold_parameter = threshold_parameter
        self.device = device
        self.seed, self.max_samples, self.verbose = seed, max_samples, verbose

    def _check_params(self):
        ann, neuron = self.ann, self.neuron
        if not isinstance(ann, Network):
            raise ConversionError(
                f"ann must be a brainsnn.engine.network.Network (got {type(ann).__name__}); convert a "
                "torch nn.Sequential first with brainsnn.learn.conversion.from_torch")
        if self.method not in METHODS:
            raise ConversionError(f"method {self.method!r} unknown; expected 'balance' or "
                                  "'percentile'")
        if not isinstance(neuron, NeuronModel):
            raise ConversionError(f"neuron must be a brainsnn.models.NeuronModel, got {neuron!r}")
        if self.threshold_parameter not in neuron.parameters:
            raise ConversionError(f"neuron model {neuron.name!r} has no parameter "
                                  f"{self.threshold_parameter!r} to hold the threshold")
        if not 0 < float(self.percentile) <= 100 or not 0 < float(self.balance_percentile) <= 100:
            raise ConversionError(f"percentiles must lie in (0, 100], got {self.percentile!r} "
                                  f"and {self.balance_percentile!r}")
        _check_ann(ann)
        check_T(self.balance_T, "balance_T", ConversionError)
        positive_int(self.batch_size, "batch_size", ConversionError)
        positive_int(self.max_samples, "max_samples", ConversionError)
        with_kinds(ann.specs, self.kinds)  # the pattern fits the ANN

    def _device(self):
        return torch_device(self.device) if self.device is not None else device_of(self.ann)

    def _log(self, msg):
        if self.verbose:
            print(msg, flush=True)

    # -- building ----------------------------------------------------------------------------
    def _make_encoder(self):
        if self.encoder is None or self.encoder == "direct":
            return None
        if callable(self.encoder):
            return self.encoder
        if self.encoder == "poisson":
            from brainsnn.engine.encoding import PoissonEncoder

            gen = torch.Generator(device=self._device()).manual_seed(self.seed)
            return PoissonEncoder(generator=gen)
        raise ConversionError(f"encoder must be None, 'direct', 'poisson' or a callable, got "
                              f"{self.encoder!r}")

    def _images(self, X, what="images"):
        """Images as float32 (n, *input_shape): finite, in [0, 1], the ANN's input shape."""
        shape = tuple(self.ann.input_shape)
        X = np.asarray(validate_images(X, name=what, error=ConversionError), dtype=np.float32)
        if X.ndim == len(shape) and len(shape) == 3 and shape[0] == 1:
            X = X[:, None]
        if X.ndim != len(shape) + 1 or tuple(X.shape[1:]) != shape:
            raise ConversionError(f"{what} must be a batch (n, {', '.join(map(str, shape))}), "
                                  f"got shape {X.shape}")
        return X

    def _labels(self, y, n):
        classes = self.classes_ if hasattr(self, "classes_") else _output_classes(self.ann)
        return check_labels(y, n, len(classes), name="labels", error=ConversionError)

    def _batches(self, X):
        bs, device = int(self.batch_size), self._device()
        for i in range(0, len(X), bs):
            yield torch.from_numpy(X[i:i + bs]).to(device)

    # -- fit -----------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, X, y=None):
        """Set every spiking layer's threshold from training images ``X``; returns self."""
        start = time.perf_counter()
        self._check_params()
        X = self._images(X)
        balance_T = check_T(self.balance_T, "balance_T", ConversionError)
        torch.manual_seed(self.seed)
        ann = self.ann.to(self._device()).eval()
        _require_probe(ann)
        snn = Network(with_kinds(ann.specs, self.kinds), ann.input_shape, T=balance_T,
                      neuron=self.neuron, dt=ann.dt, readout="membrane",
                      encoder=self._make_encoder())
        snn.ops.load_state_dict(ann.ops.state_dict())
        snn = snn.to(self._device()).eval()
        self.snn_ = snn
        self.classes_ = _output_classes(ann)
        self._bias = {name: (op.bias.detach().clone() if getattr(op, "bias", None) is not None
                             else None) for name, op in ann.ops.items()}
        sources, ties, junctions = _topology(snn)
        kind = {ll.name: ll.kind for ll in snn.layers if ll.spec.weighted}
        spiking = set(snn.spiking_layer_names())
        order = [ll.name for ll in snn.layers if ll.spec.weighted]
        self.sources_ = sources
        if self.method == "percentile":
            scales = self._percentile_scales(ann, X, sources, ties, spiking, order)
        else:
            scales = None
        self.scales_, self.thresholds_, self.shortcut_gains_ = {}, {}, {}
        snn.shortcut_gains = {}
        gen = torch.Generator().manual_seed(self.seed)

        def src_scale(name):
            s = sources[name]
            return 1.0 if s is None else self.scales_[s]

        for ll in [ll for ll in snn.layers if ll.spec.weighted]:
            name = ll.name
            lam_src = src_scale(name)
            self._scale_bias(snn, ll, lam_src)
            if name in junctions:
                # the shortcut's spikes (or projection current) stand for the activation scale
                # of their own source; weigh them so that both summed branches are in units of
                # lam_src, the scale of the block's own branch, like the ANN's sum
                short = junctions[name]
                gain = (1.0 if short is None else self.scales_[short]) / lam_src
                snn.shortcut_gains[name] = gain
                self.shortcut_gains_[name] = gain
            if name not in spiking:  # artificial layer or readout: carries its input's scale
                self.scales_[name] = lam_src
                continue
            if scales is not None:
                theta = scales[name] / lam_src
            else:
                theta = self._balance_layer(snn, X, name, gen)
            self.thresholds_[name] = theta
            self.scales_[name] = lam_src * theta
            snn.set_thresholds({name: theta}, parameter=self.threshold_parameter)
            self._log(f"  {self.method}: {name:<14} theta {theta:.4g} (lambda {lam_src * theta:.4g},"
                      f" kind {kind[name]})")
        snn.T = balance_T
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _scale_bias(self, snn, ll, lam_src):
        b = self._bias.get(ll.op_name)
        if b is None:
            return
        op = snn.ops[ll.op_name]
        shared = [x for x in snn.layers if x.op_name == ll.op_name]
        if len(shared) > 1 and not np.isclose(lam_src, getattr(op, "_bs_lam_src", lam_src)):
            raise ConversionError(
                f"layer {ll.name!r}: the BackRes passes of a layer with a bias need different "
                f"bias scales ({getattr(op, '_bs_lam_src')} and {lam_src}); train BackRes "
                "blocks without biases / batch-norm for conversion")
        op._bs_lam_src = lam_src
        op.bias.copy_(b / lam_src)

    def _balance_layer(self, snn, X, name, gen):
        probe = Probe(target=name, sample=int(self.max_samples) // max(1, math.ceil(
            len(X) / int(self.batch_size))) if self.balance_percentile < 100 else None,
            generator=gen)
        with probing(snn, probe):
            for xb in self._batches(X):
                try:
                    snn(xb, T=snn.T)
                except StopForward:
                    pass
        if self.balance_percentile < 100:
            theta = percentile_scale(np.concatenate(probe.samples.get(name, [np.zeros(0)])),
                                     self.balance_percentile)
        else:
            theta = probe.max
        if not theta > 0:
            warnings.warn(f"layer {name!r} received no positive input current while balancing; "
                          "its threshold is set to 1.0 (it will not fire)")
            theta = 1.0
        return float(theta)

    def _percentile_scales(self, ann, X, sources, ties, spiking, order):
        """lambda per spiking layer: p-th percentile of ANN activations, tied where summed."""
        gen = torch.Generator().manual_seed(self.seed)
        n_batches = math.ceil(len(X) / int(self.batch_size))
        probe = Probe(sample=max(1, int(self.max_samples) // n_batches), generator=gen)
        with probing(ann, probe):
            for xb in self._batches(X):
                ann(xb, T=1)
        lam = {}
        for name in order:
            if name in spiking:
                vals = probe.samples.get(name, [np.zeros(0)])
                lam[name] = percentile_scale(np.concatenate(vals), self.percentile)

        # owner: the spiking layer whose scale a layer carries (None: the image, scale 1)
        def owner(name):
            while name is not None and name not in spiking:
                name = sources[name]
            return name

        parent = {}

        def find(a):
            while parent.get(a, a) != a:
                a = parent[a]
            return a

        for a, b in ties:
            ra, rb = find(owner(a)), find(owner(b))
            if ra != rb:
                if ra is None:
                    ra, rb = rb, ra
                parent[ra] = rb  # None (the image) stays a root
        groups = {}
        for name in lam:
            groups.setdefault(find(name), []).append(name)
        for root, members in groups.items():
            value = 1.0 if root is None else max(lam[m] for m in members)
            for m in members:
                lam[m] = value
        self.activation_percentiles_ = dict(lam)
        return lam

    # -- evaluation ------------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "snn_"):
            raise ConversionError("call fit(images) first: the thresholds are not set")

    @torch.no_grad()
    def run(self, X, Ts, record=False):
        """Logits at every T in ``Ts`` from one run of max(Ts) steps: array (len(Ts), n, classes).

        With ``record=True`` the spike statistics of the run are kept in ``snn_.stats`` (for
        :func:`brainsnn.analysis.energy.energy_report`).
        """
        self._check_fitted()
        Ts = [check_T(T, error=ConversionError) for T in np.atleast_1d(Ts).tolist()]
        X = self._images(X)
        snn = self.snn_
        T_max = max(Ts)
        readout = next(ll.name for ll in snn.layers if ll.is_readout)
        snn.eval()
        if record:
            snn.reset_stats()
            snn.record = True
        probe = Probe(readout=readout)
        snn.probe = probe
        out = []
        device = self._device()
        idx = torch.tensor([T - 1 for T in Ts], device=device)
        steps = torch.tensor(Ts, dtype=torch.float32, device=device)
        try:
            for xb in self._batches(X):
                logits = snn(xb, T=T_max)
                cur, temporal = probe.trace
                if temporal:
                    acc = torch.cumsum(cur.float(), 0)[idx] / steps.reshape(-1, 1, 1)
                else:
                    # static readout current (hybrid: an artificial layer computed once on the
                    # rates of the whole run): one run per T, statistics kept from T_max only
                    per_T = []
                    snn.record = False
                    for T in Ts:
                        per_T.append(logits if T == T_max else snn(xb, T=T))
                    snn.record = record
                    acc = torch.stack(per_T).float()
                out.append(acc.cpu())
        except torch.OutOfMemoryError as exc:
            raise ConversionError(
                f"out of {device} memory running {self.batch_size} images for T = {T_max} "
                "steps (each layer's spikes are held as (T, batch, ...)); use a smaller "
                "batch_size (protocols: --eval-batch) or a smaller T") from exc
        finally:
            snn.probe = None
            snn.record = False
        return torch.cat(out, 1).numpy()

    def predict(self, X, T=256):
        """Class indices (n,) after T steps."""
        return self.run(X, [T])[0].argmax(-1)

    def score(self, X, y, T=256):
        """Accuracy in [0, 1] after T steps."""
        pred = self.predict(X, T)
        return float((pred == self._labels(y, len(pred))).mean())

    def accuracy_vs_T(self, X, y, Ts, record=True):
        """Accuracies (len(Ts),) at each T from one run of max(Ts) steps.

        With ``record=True`` (default) spike statistics of that run are kept for
        :meth:`energy`.
        """
        logits = self.run(X, Ts, record=record)
        y = self._labels(y, logits.shape[1])
        return (logits.argmax(-1) == y[None]).mean(1)

    def energy(self, **kwargs):
        """Energy report of the last recorded run (see :func:`brainsnn.analysis.energy.energy_report`)."""
        from brainsnn.analysis.energy import energy_report

        self._check_fitted()
        return energy_report(self.snn_, **kwargs)

    def to_brian2(self):
        """The converted network as Brian2 groups and synapses (:func:`brainsnn.brian.export.to_brian2`).

        For small networks: ``conv.to_brian2().run(images, T=T, device='cpp_standalone')``
        gives the same spikes as the torch engine (run the torch side in float64 to compare
        spike for spike: ``conv.snn_.double()``). Hybrid networks (artificial layers) cannot
        be exported.
        """
        from brainsnn.brian.export import to_brian2

        self._check_fitted()
        return to_brian2(self.snn_)

    def ann_accuracy(self, X, y):
        """Accuracy of the source ANN on ``X``, ``y``."""
        X = self._images(X)
        y = self._labels(y, len(X))
        ann = self.ann.to(self._device()).eval()
        pred = []
        with torch.no_grad():
            for xb in self._batches(X):
                pred.append(ann(xb, T=1).argmax(1).cpu())
        return float((torch.cat(pred).numpy() == y).mean())


def _output_classes(net):
    """Class indices 0 .. n_outputs - 1 of a network's output layer."""
    return np.arange(int(np.prod(net.output_shape)))


def _check_ann(ann):
    """The ANN must be all-artificial and batch-norm free (names the offending layer)."""
    for ll in ann.layers:
        if ll.spec.weighted and ll.kind != "artificial":
            raise ConversionError(
                f"layer {ll.name!r} of the source network is {ll.kind!r}; conversion expects a "
                "ReLU ANN (every conv/linear layer kind='artificial')")
    for name, op in ann.ops.items():
        if isinstance(op, BatchNormOp):
            raise ConversionError(f"layer {name!r} still has batch-norm: call "
                                  "brainsnn.learn.conversion.fold_batchnorm(ann) before converting")
        if not isinstance(op, (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.Flatten)):
            raise ConversionError(f"layer {name!r} is a {type(op).__name__}, which the converter "
                                  "does not support (conv, linear, avgpool, flatten)")


# ---------------------------------------------------------------------------------------------
# Training the ANN (the gradient-descent trainer of the package, all layers artificial)
# ---------------------------------------------------------------------------------------------
def train_ann(ann, X, y, epochs=3, batch_size=128, lr=1e-3, weight_decay=0.0, augment=None,
              max_minutes=None, device=None, seed=0, verbose=False, X_val=None, y_val=None,
              optimizer="adam", loss_options=None, callback=None):
    """Train an all-artificial Network with :class:`brainsnn.learn.agd.AGDClassifier` (T = 1).

    Returns the classifier (its ``history``, ``train_seconds``); the network is trained in
    place. Batch-norm attached with :func:`attach_batchnorm` is trained too (fold it after).
    ``optimizer``: 'adam' or 'sgd' (Nesterov momentum, see :class:`~brainsnn.learn.agd.AGDClassifier`).
    ``loss_options``: options of the softmax loss, e.g. ``{'label_smoothing': 0.1}``.
    ``callback(classifier, epoch_record)`` is called after each epoch (as in
    :meth:`AGDClassifier.fit <brainsnn.learn.agd.AGDClassifier.fit>`).
    """
    from brainsnn.learn.agd import AGDClassifier

    _check_ann_kinds(ann)
    device = device or device_of(ann)
    clf = AGDClassifier(network=ann, T=1, epochs=epochs, batch_size=batch_size, lr=lr,
                        weight_decay=weight_decay, augment=augment, max_minutes=max_minutes,
                        device=str(device), seed=seed, verbose=verbose, optimizer=optimizer,
                        loss_options=loss_options)
    clf.fit(X, y, X_val, y_val, callback=callback)
    ann.eval()
    return clf


def _check_ann_kinds(ann):
    for ll in ann.layers:
        if ll.spec.weighted and ll.kind != "artificial":
            raise ConversionError(f"layer {ll.name!r} is {ll.kind!r}; an ANN for conversion has "
                                  "only artificial (ReLU) layers")


# ---------------------------------------------------------------------------------------------
# From a plain torch nn.Sequential
# ---------------------------------------------------------------------------------------------
def from_torch(module, input_shape):
    """An all-artificial Network with the weights of a torch ``nn.Sequential`` ReLU ANN.

    Supported layers: Conv2d (square kernel, equal stride, square padding, no groups or
    dilation), Linear, ReLU (after a conv/linear), AvgPool2d, Flatten, BatchNorm1d/2d right
    after a conv/linear (folded), Dropout and Identity (dropped). The last conv/linear is the
    readout (no ReLU after it). Anything else raises :class:`ConversionError` naming the layer.
    """
    from brainsnn.engine.network import avgpool, conv, flatten, linear

    if not isinstance(module, nn.Sequential):
        raise ConversionError(f"from_torch expects an nn.Sequential, got {type(module).__name__}")
    items = list(module.named_children())
    specs, weights, relus = [], [], []
    i = 0
    while i < len(items):
        name, m = items[i]
        where = f"layer {name!r} ({type(m).__name__})"
        if isinstance(m, (nn.Dropout, nn.Identity)):
            i += 1
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bn = None
            if i + 1 < len(items) and isinstance(items[i + 1][1], (nn.BatchNorm1d, nn.BatchNorm2d)):
                bn = items[i + 1][1]
                i += 1
            relu = i + 1 < len(items) and isinstance(items[i + 1][1], nn.ReLU)
            relus.append((name, type(m).__name__, relu))
            if isinstance(m, nn.Conv2d):
                k, s, p = m.kernel_size, m.stride, m.padding
                if (k[0] != k[1] or s[0] != s[1] or isinstance(p, str) or p[0] != p[1]
                        or m.groups != 1 or m.dilation != (1, 1)):
                    raise ConversionError(f"{where}: only square kernels, equal strides and "
                                          "paddings, groups=1, dilation=1 are supported")
                spec = conv(m.out_channels, "artificial", k[0], s[0], p[0],
                            bias=m.bias is not None or bn is not None, name=f"{type(m).__name__.lower()}{name}")
            else:
                spec = linear(m.out_features, "artificial",
                              bias=m.bias is not None or bn is not None, name=f"linear{name}")
            specs.append(spec)
            weights.append((spec.name, m, bn))
            i += 2 if relu else 1
            continue
        if isinstance(m, nn.AvgPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            st = m.stride if isinstance(m.stride, int) else (m.stride or (k,))[0]
            if st != k or (m.padding not in (0, (0, 0))):
                raise ConversionError(f"{where}: only AvgPool2d with stride = kernel_size and "
                                      "no padding is supported")
            specs.append(avgpool(k, name=f"avgpool{name}"))
            i += 1
            continue
        if isinstance(m, nn.Flatten):
            specs.append(flatten(name=f"flatten{name}"))
            i += 1
            continue
        hint = " (use average pooling: nn.AvgPool2d)" if "MaxPool" in type(m).__name__ else ""
        raise ConversionError(f"{where} is not supported by the converter{hint}; supported: "
                              "Conv2d, Linear, ReLU, AvgPool2d, Flatten, BatchNorm after "
                              "Conv2d/Linear, Dropout, Identity")
    if not weights:
        raise ConversionError("the nn.Sequential has no Conv2d or Linear layer")
    for k, (name, tname, relu) in enumerate(relus):
        last = k == len(relus) - 1
        if relu == last:
            raise ConversionError(
                f"layer {name!r} ({tname}): " + ("the readout (last conv/linear layer) must not be "
                                                 "followed by ReLU" if last else
                                                 "every conv/linear layer but the readout must be "
                                                 "followed by ReLU"))
    net = Network(specs, tuple(input_shape), T=1, neuron=IF)
    with torch.no_grad():
        for name, m, bn in weights:
            target = net.ops[name]
            w, b = m.weight.detach().float(), (m.bias.detach().float() if m.bias is not None
                                               else None)
            if bn is not None:
                g = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
                w = w * g.reshape((-1,) + (1,) * (w.dim() - 1))
                b0 = b if b is not None else torch.zeros_like(bn.running_mean)
                b = (b0 - bn.running_mean) * g + bn.bias.detach()
            if target.weight.shape != w.shape:
                raise ConversionError(f"layer {name!r}: weight shape {tuple(w.shape)} does not "
                                      f"fit the input shape (expected {tuple(target.weight.shape)})")
            target.weight.copy_(w)
            if b is not None:
                target.bias.copy_(b)
    return net.eval()

