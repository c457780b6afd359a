"""The torch engine: a neuron model's Brian2 equations as a batched, differentiable PyTorch
step, surrogate derivatives, input encoders, layer specs and the `Network` module."""
