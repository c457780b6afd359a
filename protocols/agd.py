#!/usr/bin/env python
"""The agd protocol, run from a clone; the same as ``brainsnn run agd`` (code:
brainsnn.experiments.protocols.agd)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("agd", sys.argv[1:]))
