"""Convolutional STDP: layers learned on patches, stacks, BackRes blocks, feature
extraction, readouts, label assignment and input preprocessing."""
