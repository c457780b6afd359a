"""brainsnn: deep spiking neural networks as Brian2 equations.

Implements, as defined in this project (see docs in README.md), the techniques of Panda,
Aketi & Roy (2019/2020): backward residual (BackRes) connections, stochastic softmax
(stochmax) and hybrid artificial/spiking networks, for STDP, approximate gradient descent
and ANN-to-SNN conversion.
"""
__version__ = "0.1.0"
