#!/usr/bin/env python
"""The diehl_cook protocol, run from a clone; the same as ``brainsnn run diehl_cook`` (code:
brainsnn.experiments.protocols.diehl_cook)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("diehl_cook", sys.argv[1:]))
