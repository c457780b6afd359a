#!/usr/bin/env python
"""The bench_torch_engine protocol, run from a clone; the same as ``brainsnn run bench_torch_engine`` (code:
brainsnn.experiments.protocols.bench_torch_engine)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("bench_torch_engine", sys.argv[1:]))
