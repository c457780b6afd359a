"""Where brainsnn reads data and keeps caches: one rule for every part of the package.

- datasets: ``$BRAINSNN_DATA``, else the user's data folder (``$XDG_DATA_HOME/brainsnn`` or
  ``~/.local/share/brainsnn``);
- caches (decoded datasets, compiled Brian2 projects, extracted features): ``$BRAINSNN_CACHE``,
  else ``$XDG_CACHE_HOME/brainsnn`` or ``~/.cache/brainsnn``;
- results: ``./results`` of the current folder (protocols take ``--out`` / ``--out-dir``).

Nothing is ever written into the installed package or the folder it was installed from.
"""
from __future__ import annotations

import os
from pathlib import Path


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    return Path(value).expanduser() if value else Path.home() / fallback


def data_dir() -> Path:
    """The default dataset folder (holding ``mnist/``, ``fashion-mnist/``, ``cifar-10/``)."""
    env = os.environ.get("BRAINSNN_DATA")
    if env:
        return Path(env).expanduser()
    return _xdg("XDG_DATA_HOME", ".local/share") / "brainsnn"


def cache_dir() -> Path:
    """The cache folder: ``$BRAINSNN_CACHE``, else ``~/.cache/brainsnn`` (XDG). Not created here."""
    env = os.environ.get("BRAINSNN_CACHE")
    if env:
        return Path(env).expanduser()
    return _xdg("XDG_CACHE_HOME", ".cache") / "brainsnn"


def standalone_dir(key: str) -> Path:
    """The folder of a compiled Brian2 standalone project, keyed by the network's hash."""
    return cache_dir() / "standalone" / key


def results_dir() -> Path:
    """Where protocols write results by default: ``./results`` of the current folder."""
    return Path.cwd() / "results"
