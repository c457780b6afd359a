#!/usr/bin/env python
"""The conv_stdp protocol, run from a clone; the same as ``brainsnn run conv_stdp`` (code:
brainsnn.experiments.protocols.conv_stdp)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("conv_stdp", sys.argv[1:]))
