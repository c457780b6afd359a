"""BackRes for STDP: one block of convolutional STDP layers run R times with the same
kernels (re-entry or additive form), and the helpers that treat a stack stage alike whether it
is a layer or a BackRes block."""
from __future__ import annotations

from brainsnn.engine.network import BACKRES_FORMS
from brainsnn.errors import ConvSTDPError
from brainsnn.stdp.layer import ConvSTDPLayer, positive_count


class BackResSTDPBlock:
    """A conv STDP layer run ``R`` times with the same kernels (BackRes).

    ``layer`` must keep the shape of its input: ``in_channels == n_kernels``, stride 1,
    'same' padding (``kernel_size // 2``, odd kernels) and no pooling. Each pass has its own
    neurons; the kernels learn from the patches of every pass (see the module docstring).

    ``form='reentry'`` (default) feeds each pass the spikes of the pass before,
    y_r = B(y_(r-1)); ``form='additive'`` feeds it those spikes plus the block's input x,
    y_r = B(y_(r-1) + x) (the two spike trains are summed on the same synapses), so that a
    pass cannot fall silent when the one before it does.

    A list of ``R`` layers instead of one gives the *physically deeper* reference with the
    same wiring: pass ``r`` uses layer ``r`` (separate kernels, each learned on the input of
    its own pass only), and the parameters grow with R.
    """

    def __init__(self, layer, R=None, form="reentry"):
        layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if not layers or not all(isinstance(l, ConvSTDPLayer) for l in layers):
            raise ConvSTDPError("BackResSTDPBlock needs a ConvSTDPLayer (or a list of them)")
        if form not in BACKRES_FORMS:
            raise ConvSTDPError(f"form must be one of {BACKRES_FORMS}, got {form!r}")
        if len(layers) > 1:
            if R is not None and int(R) != len(layers):
                raise ConvSTDPError(f"R={R} but {len(layers)} separate layers were given "
                                    "(one per pass)")
            R = len(layers)
        self.R = positive_count(2 if R is None else R, "R")
        for lay in layers:
            if lay.in_channels != lay.n_kernels:
                raise ConvSTDPError(f"a BackRes block's output must have the shape of its "
                                    f"input: in_channels ({lay.in_channels}) must equal "
                                    f"n_kernels ({lay.n_kernels})")
            if (lay.stride != 1 or lay.pool != 1 or lay.kernel_size % 2 == 0
                    or lay.padding != lay.kernel_size // 2):
                raise ConvSTDPError("a BackRes block's layer needs stride 1, pool 1, an odd "
                                    "kernel_size and padding = kernel_size // 2 ('same'), so "
                                    "that its output has the shape of its input")
        if len({(l.n_kernels, l.kernel_size) for l in layers}) > 1:
            raise ConvSTDPError("the separate layers of a block must have the same shape")
        self.layers = layers
        self.layer = layers[0]
        self.form = form
        self.name = layers[0].name

    @property
    def shared(self):
        """True when every pass uses the same layer (BackRes), False for separate layers."""
        return len(self.layers) == 1

    def pass_layer(self, p):
        """The layer of pass ``p`` (0-based)."""
        return self.layers[0 if self.shared else p]

    def pass_name(self, p):
        """Name of pass ``p`` in results: ``<layer>_pass<p+1>`` when shared, else the layer's."""
        return f"{self.name}_pass{p + 1}" if self.shared else self.layers[p].name

    # delegated geometry and state
    def output_shape(self, input_shape):
        return self.layer.output_shape(input_shape)

    @property
    def n_parameters(self):
        """Parameters of the block: those of its one layer whatever R (shared), or the sum of
        its separate layers."""
        return sum(l.n_parameters for l in self.layers)

    @property
    def kernels(self):
        return self.layer.kernels

    @property
    def theta(self):
        return self.layer.theta

    @property
    def in_channels(self):
        return self.layer.in_channels

    def config(self):
        cfg = {**self.layer.config(), "backres_R": self.R, "backres_form": self.form,
               "shared_kernels": self.shared}
        if not self.shared:
            cfg["layers"] = [l.config() for l in self.layers]
        return cfg

    def close(self):
        for lay in self.layers:
            lay.close()


def stage_layer(stage):
    return stage.layer if isinstance(stage, BackResSTDPBlock) else stage


def stage_layers(stage):
    """Every distinct layer of a stage: the layer itself, or a BackRes block's layers (one if
    its passes share kernels, R if they are separate)."""
    return list(stage.layers) if isinstance(stage, BackResSTDPBlock) else [stage]


def pass_layer(stage, p):
    return stage.pass_layer(p) if isinstance(stage, BackResSTDPBlock) else stage


def pass_name(stage, p):
    return stage.pass_name(p) if isinstance(stage, BackResSTDPBlock) else stage.name


def is_additive(stage):
    return isinstance(stage, BackResSTDPBlock) and stage.form == "additive"


def stage_passes(stage):
    return stage.R if isinstance(stage, BackResSTDPBlock) else 1
