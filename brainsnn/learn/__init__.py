"""Gradient-based training: AGD (surrogate gradients), losses (softmax, stochmax) and
ANN-to-SNN conversion."""
