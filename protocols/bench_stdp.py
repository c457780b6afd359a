#!/usr/bin/env python
"""The bench_stdp protocol, run from a clone; the same as ``brainsnn run bench_stdp`` (code:
brainsnn.experiments.protocols.bench_stdp)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("bench_stdp", sys.argv[1:]))
