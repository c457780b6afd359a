#!/usr/bin/env python
"""The stochmax_latency protocol, run from a clone; the same as ``brainsnn run stochmax_latency`` (code:
brainsnn.experiments.protocols.stochmax_latency)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("stochmax_latency", sys.argv[1:]))
