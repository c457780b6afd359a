"""The protocols an installed brainsnn runs (``brainsnn run NAME``), and how one is run."""
from __future__ import annotations

import importlib
import sys

#: name -> one line on what the protocol measures
PROTOCOLS = {
    "diehl_cook": "the main job: unsupervised WTA STDP on MNIST, labels from training images",
    "bench_stdp": "training images/s of the STDP network against the naive Brian2 loop",
    "conv_stdp": "convolutional STDP stack + readout (linear, MLP, spiking or conv)",
    "bench_extraction": "conv STDP feature extraction images/s on 1 to N CPU threads",
    "backres_stdp": "BackRes R = 1, 2, 3 on one STDP block against a deeper stack",
    "agd": "surrogate-gradient (AGD) training of a spiking VGG-style network",
    "stochmax_latency": "test accuracy against T, softmax vs stochmax, several seeds",
    "backres_depth": "AGD with BackRes R = 1, 2, 3 against physically deeper networks",
    "hybrid_layers": "accuracy and energy of all-spiking, all-artificial and mixed layers",
    "conversion": "ANN training, conversion to IF neurons, accuracy against T, energy",
    "bench_torch_engine": "torch engine against a hand-written PyTorch LIF loop",
}


class UnknownProtocolError(LookupError):
    """A protocol name that is not in :data:`PROTOCOLS`."""


def protocol_module(name: str):
    """The module ``brainsnn.experiments.protocols.<name>``."""
    if name not in PROTOCOLS:
        raise UnknownProtocolError(f"unknown protocol {name!r}; expected one of "
                                   f"{', '.join(PROTOCOLS)}")
    return importlib.import_module(f"brainsnn.experiments.protocols.{name}")


def run_protocol(name: str, argv=None) -> int:
    """Run protocol ``name`` with the command-line arguments ``argv``; returns the exit status.

    A brainsnn error (bad option, unwritable output, missing dataset, ...) is one line on
    standard error and status 2; a run stopped by Ctrl-C after saving its checkpoint prints
    the command that resumes it and returns 130; one stopped by SIGTERM, 143.
    """
    from brainsnn.errors import BrainsnnError
    from brainsnn.experiments.run import AlreadyComplete, RunInterrupted, RunTerminated

    try:
        status = protocol_module(name).main(argv)
    except AlreadyComplete:
        return 0
    except RunInterrupted as stop:
        print(f"brainsnn run {name}: interrupted; checkpoint saved. Resume with:\n  {stop}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"brainsnn run {name}: aborted", file=sys.stderr)
        return 130
    except RunTerminated as stop:
        then = (f"the results file keeps its last checkpoint. Resume with:\n  {stop.resume}"
                if stop.checkpoint else "no checkpoint had been saved yet")
        print(f"brainsnn run {name}: terminated (SIGTERM); {then}", file=sys.stderr)
        return 143
    except BrainsnnError as exc:
        print(f"brainsnn run {name}: error: {exc}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0
