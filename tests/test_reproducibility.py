"""Same seed, same number: CPU training is bitwise reproducible, and a reference run of the
code as it is today reproduces exactly (a change of the numerics shows up here; regenerate
the reference file with the command in its `command` attribute when the change is meant)."""
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "results" / "reference" / "agd_mnist_smoke_seed0.h5"


def test_agd_training_on_the_cpu_is_bitwise_reproducible(rng):
    from brainsnn.engine.network import vgg_specs
    from brainsnn.learn.agd import AGDClassifier

    x = rng.random((64, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    params = [AGDClassifier(vgg_specs((4, "P"), fc=(16,)), T=3, epochs=2, batch_size=16,
                            augment="crop_flip", seed=5).fit(x, y).network_.state_dict()
              for _ in range(2)]
    for key in params[0]:
        assert params[0][key].equal(params[1][key]), key
    other = AGDClassifier(vgg_specs((4, "P"), fc=(16,)), T=3, epochs=2, batch_size=16,
                          augment="crop_flip", seed=6).fit(x, y).network_.state_dict()
    assert any(not params[0][k].equal(other[k]) for k in other)


def test_the_agd_smoke_reference_run_reproduces_exactly(tmp_path, monkeypatch, data_dir):
    from brainsnn.experiments.registry import run_protocol
    from brainsnn.io.results import RunResults

    reference = RunResults.load(REFERENCE)
    command = reference.config["command"].split()
    assert command[:3] == ["brainsnn", "run", "agd"]
    monkeypatch.chdir(tmp_path)
    assert run_protocol("agd", command[3:] + ["--data", str(data_dir), "-q"]) == 0
    (out,) = (tmp_path / "results").glob("*.h5")
    now = RunResults.load(out)
    for key in ("metrics/test_accuracy", "metrics/accuracy_vs_T", "metrics/train_loss"):
        np.testing.assert_array_equal(now[key], reference[key], err_msg=key)
