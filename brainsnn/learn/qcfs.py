"""Quantisation clip-floor-shift (QCFS) ANNs, whose activations IF neurons reproduce at small T.

After Bu et al. (2022), "Optimal ANN-SNN conversion for high-accuracy and ultra-low-latency
spiking neural networks". The ANN is trained with, in place of ReLU,

    h(x) = lambda / L * clip(floor(x L / lambda + 1/2), 0, L)

with L quantisation steps and a trainable threshold lambda per layer. The floor passes its
gradient straight through: with q = floor(x L / lambda + 1/2) the unclipped step, dh/dx = 1
and dh/dlambda = (h - x) / lambda where 0 < q < L; dh/dx = 0 and dh/dlambda = 1 where q >= L
(h = lambda); both 0 where q <= 0.
The converted IF neuron (reset by subtraction) gets the threshold lambda (in units of its
input's scale, as every converted layer of :class:`~brainsnn.learn.conversion.ANNToSNN`) and
the initial potential theta/2 (:data:`IF_HALF`). For a constant input current I it fires

    N(T) = clip(floor(T I / theta + 1/2), 0, T)

spikes in T steps, so theta N(T) / T is h(I) with T quantisation steps: at T = L the rate
equals the ANN's activation exactly (for a layer with constant input: the first layer of a
direct-coded network). At T = kL it is the finer quantiser with kL steps, which differs from
h (e.g. L = 1, theta = 1, I = 0.3: h = 0, but one spike in T = 2); deeper layers, whose input
varies in time, match only on average.

Example::

    from brainsnn.engine.network import vgg_specs
    from brainsnn.learn.qcfs import QCFSNetwork, QCFSConverter, train_qcfs
    ann = QCFSNetwork(vgg_specs((), fc=(256, 256), kinds='artificial'), (1, 28, 28), L=4)
    train_qcfs(ann, x_train, y_train, epochs=4)
    conv = QCFSConverter(ann).fit(x_train[:10])
    conv.accuracy_vs_T(x_test, y_test, [4, 8, 16, 32])
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from brainsnn.engine.network import Activity, Network, device_of
from brainsnn.errors import ConversionError
from brainsnn.learn.conversion import (ANNToSNN, Probe, StopForward, percentile_scale,
                                       train_ann)
from brainsnn.models import IF

__all__ = ["qcfs", "QCFSNetwork", "QCFSConverter", "train_qcfs", "IF_HALF"]

#: IF neuron with reset by subtraction whose potential starts at theta / 2 (the "shift" of
#: QCFS: rounding instead of flooring the input current).
IF_HALF = dataclasses.replace(IF.extend(initial={"v": "theta/2"}), name="if_half")

#: smallest lambda used in the quantiser (a lambda trained to <= 0 would divide by zero)
MIN_LAMBDA = 1e-3


def _floor_ste(z):
    """floor(z) forward, identity gradient (straight-through estimator)."""
    return z + (torch.floor(z) - z).detach()


def qcfs(x, lam, L):
    """Quantisation clip-floor-shift activation lambda/L * clip(floor(x L/lambda + 1/2), 0, L).

    ``x``: pre-activations (tensor); ``lam``: threshold lambda > 0 (tensor, trainable; same
    units as ``x``); ``L``: quantisation steps (int >= 1). The floor passes gradients
    straight through.
    """
    lam = lam.clamp_min(MIN_LAMBDA)
    q = torch.clamp(_floor_ste(x * L / lam + 0.5), 0, L)
    return q * lam / L


def _check_L(L):
    if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L < 1:
        raise ConversionError(f"L (quantisation steps of QCFS) must be an integer >= 1, got {L!r}")
    return int(L)


class QCFSNetwork(Network):
    """An all-artificial :class:`~brainsnn.engine.network.Network` with QCFS activations.

    Same arguments as :class:`~brainsnn.engine.network.Network` (``T`` defaults to 1), plus
    ``L`` (quantisation steps) and ``lambda_init`` (initial lambda of every hidden layer;
    :func:`train_qcfs` sets them from activation percentiles instead). ``lambdas`` holds one
    trainable lambda per hidden weighted logical layer (one per BackRes pass).
    """

    def __init__(self, specs, input_shape, L=4, lambda_init=1.0, T=1, **kwargs):
        super().__init__(specs, input_shape, T=T, **kwargs)
        self.L = _check_L(L)
        if not float(lambda_init) > 0:
            raise ConversionError(f"lambda_init must be > 0, got {lambda_init!r}")
        self.lambdas = nn.ParameterDict({
            ll.name: nn.Parameter(torch.tensor(float(lambda_init)))
            for ll in self.layers
            if ll.spec.weighted and ll.kind == "artificial" and not ll.is_readout
            and not ll.is_shortcut})

    @classmethod
    def from_network(cls, net, L=4, lambdas=None):
        """A QCFS network with the specs and weights of ``net`` (e.g. a trained ReLU ANN or a
        batch-norm-folded network); ``lambdas`` {layer: value} (else ``lambda_init=1``)."""
        other = cls(net.specs, net.input_shape, L=L, dt=net.dt, surrogate=net.surrogate,
                    alpha=net.alpha, readout=net.readout, encoder=net.encoder)
        other.ops.load_state_dict(net.ops.state_dict())
        if lambdas is not None:
            other.set_lambdas(lambdas)
        return other.to(device_of(net))

    @torch.no_grad()
    def set_lambdas(self, lambdas):
        """Set lambdas from {layer name: value}; names must be hidden layers of this network."""
        unknown = sorted(set(lambdas) - set(self.lambdas))
        if unknown:
            raise ConversionError(f"no QCFS layer named {', '.join(unknown)}; QCFS layers are "
                                  f"{', '.join(self.lambdas)}")
        for name, value in lambdas.items():
            if not float(value) > 0:
                raise ConversionError(f"lambda of {name!r} must be > 0, got {value!r}")
            self.lambdas[name].fill_(float(value))

    def lambda_values(self):
        """{layer name: lambda} as floats (clamped as the activation uses them)."""
        return {name: max(float(p.detach()), MIN_LAMBDA) for name, p in self.lambdas.items()}

    def activation(self, name, current):
        """The activation of hidden layer ``name`` for its input ``current`` (ANN units)."""
        return qcfs(current, self.lambdas[name], self.L)

    def _layer(self, ll, x, T, shortcut=None):
        out = super()._layer(ll, x, T, shortcut)
        if ll.name not in self.lambdas or ll.kind != "artificial":
            return out
        # the base class returns relu(current); qcfs(relu(c)) = qcfs(c) (both 0 for c < 0,
        # gradients included), so the quantiser can act on that output
        return Activity(self.activation(ll.name, out.value), out.temporal, out.analog, out.scale)


@torch.no_grad()
def init_lambdas(net, X, percentile=99.9, batch_size=256, seed=0):
    """Set each lambda of ``net`` to the ``percentile`` of its layer's positive pre-activations
    on images ``X``, layer by layer in the order they run (earlier layers already quantised).
    Returns {layer: lambda}."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(np.asarray(X, dtype=np.float32)).to(device_of(net))
    was_training = net.training
    net.eval()
    try:
        for name in [ll.name for ll in net.layers if ll.name in net.lambdas]:
            probe = Probe(target=name, sample=200_000, generator=gen)
            net.probe = probe
            for i in range(0, len(x), batch_size):
                try:
                    net(x[i:i + batch_size])
                except StopForward:
                    pass
            lam = percentile_scale(np.concatenate(probe.samples.get(name, [np.zeros(0)])),
                                   percentile)
            net.set_lambdas({name: lam})
    finally:
        net.probe = None
        net.train(was_training)
    return net.lambda_values()


def train_qcfs(net, X, y, n_init=512, init_percentile=99.9, seed=0, **kwargs):
    """Train a :class:`QCFSNetwork` (weights and lambdas) on images ``X``, labels ``y``.

    The lambdas start at the ``init_percentile`` of the pre-activations on ``n_init`` training
    images (:func:`init_lambdas`); then :func:`brainsnn.learn.conversion.train_ann` trains
    (keyword arguments as there). Returns the classifier. Batch-norm must not be attached
    (fold it first and wrap the result with :meth:`QCFSNetwork.from_network`).
    """
    if not isinstance(net, QCFSNetwork):
        raise ConversionError(f"train_qcfs expects a QCFSNetwork, got {type(net).__name__}")
    idx = np.random.default_rng(seed).permutation(len(X))[:int(n_init)]
    init_lambdas(net, np.asarray(X)[idx], init_percentile, seed=seed)
    return train_ann(net, X, y, seed=seed, **kwargs)


class QCFSConverter(ANNToSNN):
    """Converts a trained :class:`QCFSNetwork`: threshold = lambda, initial potential theta/2.

    The scikit-learn contract and evaluation of :class:`~brainsnn.learn.conversion.ANNToSNN`
    (``fit``, ``accuracy_vs_T``, ``energy``, ``to_brian2``); the scales are the trained
    lambdas instead of activation percentiles (so ``fit`` only needs images to check their
    shape: one is enough), and the neuron starts at theta/2 (:data:`IF_HALF`). ``lambdas_``
    holds the lambdas used.
    """

    def __init__(self, ann, neuron=IF_HALF, kinds="spiking", encoder=None, batch_size=100,
                 threshold_parameter="theta", device=None, seed=0, verbose=False):
        super().__init__(ann, method="percentile", neuron=neuron, kinds=kinds, encoder=encoder,
                         batch_size=batch_size, threshold_parameter=threshold_parameter,
                         device=device, seed=seed, verbose=verbose)

    def _check_params(self):
        if not isinstance(self.ann, QCFSNetwork):
            raise ConversionError(f"QCFSConverter converts a QCFSNetwork (train one with "
                                  f"train_qcfs), got {type(self.ann).__name__}; use ANNToSNN "
                                  "for a ReLU network")
        super()._check_params()

    def _percentile_scales(self, ann, X, sources, ties, spiking, order):
        if ties:
            raise ConversionError("QCFS conversion of additive BackRes blocks (whose summed "
                                  "trains need equal scales) is not supported; use the "
                                  "re-entry form")
        lam = ann.lambda_values()
        self.lambdas_ = {name: lam[name] for name in order if name in spiking}
        return dict(self.lambdas_)
