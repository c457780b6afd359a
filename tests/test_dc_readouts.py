"""tools/dc_readouts.py rebuilds a finished Diehl & Cook run from its file and scores every
readout on the same spike counts; the readout is chosen on hold-out training images."""

import numpy as np
import pytest

from brainsnn.experiments.protocols.diehl_cook import network_from_results
from brainsnn.experiments.registry import run_protocol
from brainsnn.io.results import RunResults
from brainsnn.stdp.labels import VOTES, LabelAssignment

TINY = ["--scale", "smoke", "--brian-device", "runtime", "--neurons", "6", "--train-images",
        "20", "--assign-images", "8", "--test-images", "6", "--chunk-size", "10", "-q"]


@pytest.fixture(scope="module")
def dc_readouts(load_tool):
    return load_tool("dc_readouts")


def test_readouts_of_a_finished_run(dc_readouts, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_protocol("diehl_cook", TINY + ["--data", str(data_dir), "--out", "dc.h5"]) == 0
    source = RunResults.load(tmp_path / "dc.h5")
    net, _ = network_from_results(tmp_path / "dc.h5")
    from brainsnn.io.datasets import load_mnist
    x, y = load_mnist("train", data_dir=data_dir, n=12)
    y_test = load_mnist("test", data_dir=data_dir, n=6)[1]
    net.transform(x[:2])                                 # the saved weights are what runs
    np.testing.assert_array_equal(net.weights, source["layers/exc/weights"])
    np.testing.assert_array_equal(net.theta, source["layers/exc/theta"])
    argv = ["dc.h5", "--assign-images", "8", "5", "--holdout-images", "4", "--test-images", "6",
            "--data", str(data_dir), "--counts", "c.npz", "--out", "r.h5"]
    assert dc_readouts.main(argv) == 0
    rec = RunResults.load(tmp_path / "r.h5")
    counts = np.load(tmp_path / "c.npz")
    assert counts["train"].shape == (12, 6) and counts["test"].shape == (6, 6)
    np.testing.assert_array_equal(rec["readouts/assign_images"], [5, 8])
    holdout = {}                                         # hold-out: images 8..11 for both sizes
    for i, n in enumerate([5, 8]):
        for vote in VOTES:
            clf = LabelAssignment(vote=vote).fit(counts["train"][:n], y[:n])
            holdout[n, vote] = clf.score(counts["train"][8:], y[8:])
            assert rec[f"readouts/{vote}/holdout_accuracy"][i] == holdout[n, vote]
            assert rec[f"readouts/{vote}/test_accuracy"][i] == clf.score(counts["test"], y_test)
    chosen = int(rec["readouts/chosen_assign_images"]), str(rec["readouts/chosen"])
    assert holdout[chosen] == max(holdout.values())
    i = [5, 8].index(chosen[0])
    assert float(rec["metrics/test_accuracy"]) == rec[f"readouts/{chosen[1]}/test_accuracy"][i]
    assert dc_readouts.main(argv[:-1] + ["r2.h5"]) == 0                     # from the cache
    assert float(RunResults.load(tmp_path / "r2.h5")["metrics/test_accuracy"]) == \
        float(rec["metrics/test_accuracy"])
    with pytest.raises(SystemExit, match="counts of another run or seed"):
        dc_readouts.main(argv[:-1] + ["r3.h5", "--seed", "5"])


def test_a_run_this_version_cannot_rebuild_is_refused(dc_readouts, data_dir, tmp_path,
                                                      monkeypatch):
    from brainsnn.errors import ExperimentError

    monkeypatch.chdir(tmp_path)
    assert run_protocol("diehl_cook", TINY + ["--data", str(data_dir), "--out", "dc.h5"]) == 0
    rec = RunResults.load(tmp_path / "dc.h5")
    network = rec.config["network"]
    rec.update_config(network={**network, "w_inh_exc": 99.0})
    rec.save(tmp_path / "other.h5", complete=True)
    with pytest.raises(ExperimentError, match="w_inh_exc: 99.0 in the file, 17.0 now"):
        network_from_results(tmp_path / "other.h5")
