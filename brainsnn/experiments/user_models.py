"""Loading a user's own neuron model for a protocol: ``--neuron module:ATTR``."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from brainsnn.errors import ExperimentError


def load_neuron_model(spec: str):
    """The :class:`~brainsnn.models.NeuronModel` named by ``spec``: ``package.module:ATTR``
    (a module on the Python path) or ``path/to/file.py:ATTR``."""
    from brainsnn.models import NeuronModel

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ExperimentError(f"--neuron must be MODULE:ATTR or FILE.py:ATTR, got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise ExperimentError(f"--neuron {spec!r}: no file {str(path)!r}")
        mod_spec = importlib.util.spec_from_file_location(f"brainsnn_user_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            raise ExperimentError(f"--neuron {spec!r}: importing {str(path)!r} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ExperimentError(f"--neuron {spec!r}: cannot import {module_name!r} ({exc})") from exc
    try:
        model = getattr(module, attr)
    except AttributeError:
        raise ExperimentError(f"--neuron {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(model, NeuronModel):
        raise ExperimentError(f"--neuron {spec!r} is a {type(model).__name__}, not a "
                              "brainsnn.models.NeuronModel")
    return model
