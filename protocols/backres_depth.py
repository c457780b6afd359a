#!/usr/bin/env python
"""The backres_depth protocol, run from a clone; the same as ``brainsnn run backres_depth`` (code:
brainsnn.experiments.protocols.backres_depth)."""
import sys

from brainsnn.experiments.registry import run_protocol

if __name__ == "__main__":
    sys.exit(run_protocol("backres_depth", sys.argv[1:]))
