#!/usr/bin/env python
"""The backres_stdp protocol, run from a clone; the same as ``brainsnn run backres_stdp`` (code:
brainsnn.experiments.protocols.backres_stdp)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("backres_stdp", sys.argv[1:]))
