#!/usr/bin/env python
"""The conversion protocol, run from a clone; the same as ``brainsnn run conversion`` (code:
brainsnn.experiments.protocols.conversion)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("conversion", sys.argv[1:]))
