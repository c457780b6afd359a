"""Convolutional STDP: layers learned on patches (``layer``), BackRes blocks (``backres``),
stacks run frozen on the torch engine for feature extraction (``stack``, ``frozen``), readouts
(``readout``), label assignment (``labels``), input preprocessing (``preprocessing``), batched
inference of a trained winner-take-all network (``wta_inference``), and the Brian2 reference of
a frozen stack (``brian_reference``)."""
