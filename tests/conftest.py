"""Shared test fixtures.

- ``data_dir``: the shared datasets (``$BRAINSNN_DATA``, else ``<repo>/../shared/data``); tests
  that use it are skipped, with the reason, when the folder is absent.
- ``mnist_train`` / ``mnist_test``: MNIST loaded once per session (float32 (n, 28, 28), int64).
- ``mnist_small``: the first 1,000 training images and labels.
- ``rng``: a numpy Generator seeded with 0 (a fresh one per test).
- ``tmp_cache``: ``BRAINSNN_CACHE`` pointed at a temporary folder for one test.
- ``load_protocol``: the protocol module ``brainsnn.experiments.protocols.<name>``.

CPU threads are limited to one (``OMP_NUM_THREADS=1`` unless set, before torch is imported,
so torch also uses one thread): the test machines are shared.
"""
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
if "BRAINSNN_DATA" not in os.environ and (Path(__file__).resolve().parents[2] / "shared" / "data").is_dir():
    os.environ["BRAINSNN_DATA"] = str(Path(__file__).resolve().parents[2] / "shared" / "data")

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Where the tests look for datasets: ``$BRAINSNN_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("BRAINSNN_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def load_protocol():
    """``load(name)``: the installed protocol module ``brainsnn.experiments.protocols.<name>``."""
    import importlib

    def load(name):
        return importlib.import_module(f"brainsnn.experiments.protocols.{name}")

    return load


@pytest.fixture(scope="session")
def load_tool():
    """``load(name)``: the script ``tools/<name>.py`` as a module (the tools are not a package)."""
    import importlib.util
    import sys

    def load(name):
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module          # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"datasets not found at {path} (set BRAINSNN_DATA to the folder holding "
                    "mnist/, fashion-mnist/, cifar-10/)")
    return path


@pytest.fixture(scope="session")
def mnist_train(data_dir):
    from brainsnn.io.datasets import load_mnist
    return load_mnist("train", data_dir=data_dir)


@pytest.fixture(scope="session")
def mnist_test(data_dir):
    from brainsnn.io.datasets import load_mnist
    return load_mnist("test", data_dir=data_dir)


@pytest.fixture(scope="session")
def mnist_small(data_dir):
    from brainsnn.io.datasets import load_mnist
    return load_mnist("train", data_dir=data_dir, n=1000)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("BRAINSNN_CACHE", str(cache))
    return cache
