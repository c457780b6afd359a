#!/usr/bin/env python
"""The bench_extraction protocol, run from a clone; the same as ``brainsnn run bench_extraction`` (code:
brainsnn.experiments.protocols.bench_extraction)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("bench_extraction", sys.argv[1:]))
