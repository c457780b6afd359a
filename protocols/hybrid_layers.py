#!/usr/bin/env python
"""The hybrid_layers protocol, run from a clone; the same as ``brainsnn run hybrid_layers`` (code:
brainsnn.experiments.protocols.hybrid_layers)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("hybrid_layers", sys.argv[1:]))
