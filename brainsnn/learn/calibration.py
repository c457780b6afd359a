"""Layer-wise bias calibration of a converted SNN for a given number of time steps T.

After Li et al. (2021), "A free lunch from ANN: towards efficient, accurate spiking neural
networks calibration" (bias correction). At small T a converted layer's output,
lambda_l * rate, differs from the ANN activation it stands for, and the error has a non-zero
mean per channel (flooring loses on average half a spike, the first spikes come late, errors
of earlier layers add up). Layer by layer, in the order they run, on a few hundred training
images, the mean error of each output channel is measured

    e_c = mean over images and positions of (a_c - lambda_l r_c)

(a: the ANN's activation, clipped at lambda_l for a ReLU ANN; r: spikes per step of the
converted layer run for T steps with the earlier layers already calibrated) and added to the
channel's bias as the current e_c / lambda_src(l) (lambda_src: the scale of the layer's input,
:attr:`~brainsnn.learn.conversion.ANNToSNN.scales_`), ``iterations`` times per layer. The
readout (a membrane integrator) is corrected the same way, its output being the mean current
times lambda_src. Layers without a bias get one (zero before calibration). The correction
is for one T: :class:`CalibratedConverter` calibrates a copy for each T it evaluates.

Example::

    from brainsnn.learn.calibration import CalibratedConverter
    from brainsnn.learn.conversion import ANNToSNN
    conv = CalibratedConverter(ANNToSNN(ann, method='percentile')).fit(x_train[:300])
    conv.accuracy_vs_T(x_test, y_test, [4, 8, 16, 32])   # one calibration per T
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from brainsnn.errors import ConversionError
from brainsnn.learn.conversion import StopForward, probing
from brainsnn.params import Params
from brainsnn.validation import check_T, positive_int

__all__ = ["calibrate_biases", "rate_errors", "CalibratedConverter"]


def _channel_mean(t):
    """Mean over the batch and spatial axes of (batch, channels, ...): shape (channels,)."""
    return t.mean(dim=[0, *range(2, t.dim())]) if t.dim() > 2 else t.mean(0)


class _Capture:
    """Probe: keeps the input current of layer ``target`` and ends the forward pass there."""

    def __init__(self, target):
        self.target, self.current, self.temporal = target, None, False

    def __call__(self, ll, current, temporal):
        if ll.name == self.target:
            self.current, self.temporal = current.detach(), temporal
            raise StopForward


def _calibrated_layers(conv):
    """Logical layers of the converted network that calibration corrects, in running order:
    those with a neuron, and the readout."""
    return [ll for ll in conv.snn_.layers if ll.neuron_key is not None or ll.is_readout]


def _ann_targets(conv, X, layers):
    """{layer: per-channel mean of the ANN activation it stands for}, on images X."""
    ann = conv.ann
    sums, counts = {}, {}
    names = {ll.name: ll for ll in layers}
    lam = conv.scales_

    def probe(ll, current, temporal):
        if ll.name not in names:
            return
        if ll.is_readout:
            a = current
        elif hasattr(ann, "activation"):     # a QCFS network: its quantiser
            a = ann.activation(ll.name, current)
        else:                                # a ReLU network, clipped at the layer's scale
            a = torch.clamp(current, 0, lam[ll.name])
        n = len(a)
        sums[ll.name] = sums.get(ll.name, 0) + _channel_mean(a.detach().double()) * n
        counts[ll.name] = counts.get(ll.name, 0) + n

    ann.eval()
    with probing(ann, probe):
        for xb in conv._batches(X):
            ann(xb, T=1)
    return {name: sums[name] / counts[name] for name in names}


def _spike_rate(neuron, current, temporal, T):
    """Spikes per step of a neuron group driven by ``current`` for T steps."""
    shape = tuple(current.shape[1:] if temporal else current.shape)
    state = neuron.initial_state(shape, device=current.device, dtype=current.dtype)
    count = torch.zeros(shape, device=current.device, dtype=current.dtype)
    for t in range(T):
        spikes, state = neuron(state, current[t] if temporal else current)
        count += spikes
    return count / T


def _snn_output(conv, X, ll, T):
    """Per-channel mean of layer ``ll``'s output in ANN units, lambda_l * rate (readout: mean
    current * lambda_src), after T steps on images X."""
    snn = conv.snn_
    capture = _Capture(ll.name)
    snn.probe = capture
    total, n = 0, 0
    try:
        for xb in conv._batches(X):
            try:
                snn(xb, T=T)
            except StopForward:
                pass
            cur, temporal = capture.current, capture.temporal
            if ll.is_readout:
                out = (cur.mean(0) if temporal else cur) * _source_scale(conv, ll.name)
            else:
                out = _spike_rate(snn.neurons[ll.neuron_key], cur, temporal, T) \
                    * conv.scales_[ll.name]
            total = total + _channel_mean(out.double()) * len(xb)
            n += len(xb)
    finally:
        snn.probe = None
    return total / n


def _source_scale(conv, name):
    src = conv.sources_[name]
    return 1.0 if src is None else conv.scales_[src]


def _bias_of(snn, ll):
    """The op's bias parameter (created, zero, if the op has none). Shared ops are refused."""
    if sum(x.op_name == ll.op_name for x in snn.layers) > 1:
        raise ConversionError(f"layer {ll.name!r} shares its weights with other passes "
                              "(BackRes); bias calibration corrects one layer at a time and "
                              "cannot calibrate shared weights")
    op = snn.ops[ll.op_name]
    if not isinstance(op, (nn.Linear, nn.Conv2d)):
        raise ConversionError(f"layer {ll.name!r} is a {type(op).__name__}; bias calibration "
                              "needs a Linear or Conv2d layer")
    if op.bias is None:
        op.bias = nn.Parameter(torch.zeros(op.weight.shape[0], dtype=op.weight.dtype,
                                           device=op.weight.device))
    return op.bias


def _images(conv, X):
    conv._check_fitted()
    return conv._images(X, "calibration images")


@torch.no_grad()
def rate_errors(conv, X, T):
    """{layer: root mean square over channels of the mean output error e_c} (ANN units) of a
    fitted converter ``conv`` run for T steps on images X (see the module docstring)."""
    X = _images(conv, X)
    T = check_T(T, error=ConversionError)
    layers = _calibrated_layers(conv)
    target = _ann_targets(conv, X, layers)
    return {ll.name: float(torch.sqrt(torch.mean((target[ll.name]
                                                  - _snn_output(conv, X, ll, T)) ** 2)))
            for ll in layers}


@torch.no_grad()
def calibrate_biases(conv, X, T, iterations=2):
    """Correct the biases of ``conv.snn_`` in place for T steps (module docstring).

    ``conv``: a fitted :class:`~brainsnn.learn.conversion.ANNToSNN` (or subclass); ``X``: a
    few hundred training images; ``iterations``: corrections per layer. Returns {layer:
    per-channel bias change (numpy array, current units of the converted layer)}.
    """
    X = _images(conv, X)
    T = check_T(T, error=ConversionError)
    iterations = positive_int(iterations, "iterations", ConversionError)
    layers = _calibrated_layers(conv)
    target = _ann_targets(conv, X, layers)
    changes = {}
    for ll in layers:
        bias = _bias_of(conv.snn_, ll)
        before = bias.detach().clone()
        for _ in range(iterations):
            error = target[ll.name] - _snn_output(conv, X, ll, T)
            bias += (error / _source_scale(conv, ll.name)).to(bias.dtype)
        changes[ll.name] = (bias - before).cpu().numpy()
    return changes


class CalibratedConverter(Params):
    """A converter whose SNN is bias-calibrated (:func:`calibrate_biases`) for each T.

    Parameters
    ----------
    converter : ANNToSNN
        Fitted by :meth:`fit` (e.g. ``ANNToSNN(ann, method='percentile')`` or a
        :class:`~brainsnn.learn.qcfs.QCFSConverter`).
    n_images : int
        Calibration images: the first ``n_images`` of those given to :meth:`fit`.
    iterations : int
        Corrections per layer.

    ``run``, ``accuracy_vs_T``, ``predict``, ``score`` calibrate a copy of the converted
    network for each T (one run per T); ``energy`` reports the last run (``last_``).
    """

    def __init__(self, converter, n_images=300, iterations=2):
        self.converter, self.n_images, self.iterations = converter, n_images, iterations

    def fit(self, X, y=None):
        """Fit the converter on images X and keep the first ``n_images`` for calibration."""
        positive_int(self.n_images, "n_images", ConversionError)
        self.converter.fit(X)
        self.calibration_images_ = np.asarray(X)[:int(self.n_images)]
        self.biases_ = {}
        return self

    @property
    def thresholds_(self):
        return self.converter.thresholds_

    @property
    def scales_(self):
        return self.converter.scales_

    def calibrated(self, T):
        """A copy of the fitted converter whose SNN is calibrated for T steps."""
        if not hasattr(self, "calibration_images_"):
            raise ConversionError("call fit(images) first: no calibration images yet")
        conv = copy.copy(self.converter)
        conv.snn_ = copy.deepcopy(self.converter.snn_)
        self.biases_[int(T)] = calibrate_biases(conv, self.calibration_images_, T,
                                                self.iterations)
        return conv

    def run(self, X, Ts, record=False):
        """Logits (len(Ts), n, classes): one calibration and one run per T."""
        out = []
        for T in np.atleast_1d(Ts).tolist():
            self.last_ = self.calibrated(T)
            out.append(self.last_.run(X, [T], record=record)[0])
        return np.stack(out)

    def accuracy_vs_T(self, X, y, Ts, record=True):
        logits = self.run(X, Ts, record=record)
        y = self.converter._labels(y, logits.shape[1])
        return (logits.argmax(-1) == y[None]).mean(1)

    def predict(self, X, T=16):
        return self.run(X, [T])[0].argmax(-1)

    def score(self, X, y, T=16):
        return float(self.accuracy_vs_T(X, y, [T], record=False)[0])

    def energy(self, **kwargs):
        if not hasattr(self, "last_"):
            raise ConversionError("no recorded run yet: call accuracy_vs_T first")
        return self.last_.energy(**kwargs)

    def ann_accuracy(self, X, y):
        return self.converter.ann_accuracy(X, y)
