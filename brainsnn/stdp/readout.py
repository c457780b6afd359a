"""Readouts of spike-count features, trained by gradient descent, their input scaling, and the
energy of a feature stack."""
from __future__ import annotations

import numpy as np

from brainsnn.errors import ConvSTDPError
from brainsnn.params import Params
from brainsnn.stdp.backres import pass_name, stage_layer, stage_passes, is_additive
from brainsnn.stdp.preprocessing import positive_percentile
from brainsnn.stdp.stack import SpikingConvStack


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
        layer = stage_layer(stage)
        block_in_spikes = in_spikes
        for p in range(stage_passes(stage)):
            conv = layer.conv_shape(shape)
            macs = int(np.prod(conv)) * layer.n_inputs
            if p and is_additive(stage):                 # the block's input arrives again
                in_spikes += block_in_spikes
            energy, ops, op_type = layer_energy("spiking", macs, in_spikes, e_ac=e_ac)
            name = layer.name if stage_passes(stage) == 1 else pass_name(stage, p)
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
