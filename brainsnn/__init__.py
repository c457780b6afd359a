"""brainsnn: deep spiking neural networks as Brian2 equations, trained by STDP, surrogate
gradients (AGD) or ANN-to-SNN conversion, with backward residual connections (BackRes),
stochastic softmax (stochmax) and hybrid artificial/spiking layers, as defined in this
project (docs/techniques.md).

One model, two engines: a :class:`NeuronModel` is a set of Brian2 equations; Brian2 simulates
it (runtime, cpp_standalone, cuda_standalone) and :class:`TorchNeuron` integrates the same
equations as a differentiable PyTorch step. The names below are imported on first use, so
``import brainsnn`` stays fast.
"""
from __future__ import annotations

import importlib

from brainsnn.errors import BrainsnnError

__version__ = "0.2.10"

#: public name -> module that defines it
_EXPORTS = {
    "NeuronModel": "brainsnn.models", "SynapseModel": "brainsnn.models",
    "IF": "brainsnn.models", "LIF": "brainsnn.models",
    "DIEHL_COOK_EXCITATORY": "brainsnn.models", "DIEHL_COOK_INHIBITORY": "brainsnn.models",
    "TorchNeuron": "brainsnn.engine.neuron",
    "Network": "brainsnn.engine.network", "vgg_specs": "brainsnn.engine.network",
    "backres_specs": "brainsnn.engine.network", "residual_specs": "brainsnn.engine.network",
    "DiehlCookNetwork": "brainsnn.brian.wta",
    "to_brian2": "brainsnn.brian.export",
    "ConvSTDPLayer": "brainsnn.stdp.layer", "SpikingConvStack": "brainsnn.stdp.stack",
    "BackResSTDPBlock": "brainsnn.stdp.backres", "LabelAssignment": "brainsnn.stdp.labels",
    "OnOffWhitening": "brainsnn.stdp.preprocessing",
    "AGDClassifier": "brainsnn.learn.agd", "ANNToSNN": "brainsnn.learn.conversion",
    "StochMax": "brainsnn.learn.losses",
    "RunResults": "brainsnn.io.results",
    "load_dataset": "brainsnn.io.datasets",
    "energy_report": "brainsnn.analysis.energy",
}

__all__ = ["BrainsnnError", "__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'brainsnn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
