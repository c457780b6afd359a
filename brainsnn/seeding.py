"""One seed for every random number: numpy, torch and Brian2."""
from __future__ import annotations


def seed_everything(seed: int):
    """Seed numpy's global generator, torch and Brian2 with ``seed``; returns a numpy
    Generator seeded the same way (for this run's own draws)."""
    import brian2
    import numpy as np
    import torch

    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    brian2.seed(int(seed))
    return np.random.default_rng(int(seed))
