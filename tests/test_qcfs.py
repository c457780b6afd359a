"""Conversion at small T: the QCFS activation (brainsnn.learn.qcfs), its IF conversion with
v[0] = theta/2, layer-wise bias calibration (brainsnn.learn.calibration) and the latency
helpers (brainsnn.learn.latency), against hand-computed values and closed forms."""
import h5py
import numpy as np
import pytest
import torch

from brainsnn.engine.network import Network, linear
from brainsnn.learn.calibration import CalibratedConverter, calibrate_biases, rate_errors
from brainsnn.learn.conversion import ANNToSNN, ConversionError
from brainsnn.learn.latency import first_T_within
from brainsnn.learn.qcfs import IF_HALF, QCFSConverter, QCFSNetwork, qcfs, train_qcfs

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# The activation
# --------------------------------------------------------------------------------------------
def test_qcfs_forward_hand_computed():
    # lambda = 2, L = 4: steps of 0.5; x L / lambda + 1/2 = 2x + 0.5 is floored, clipped to 0..4
    x = torch.tensor([-0.3, 0.1, 0.3, 0.5, 0.9, 1.2, 1.8, 2.5])
    h = qcfs(x, torch.tensor(2.0), 4)
    np.testing.assert_allclose(h.numpy(), [0, 0, 0.5, 0.5, 1.0, 1.0, 2.0, 2.0])
    # L = 1 is a step at lambda / 2
    np.testing.assert_allclose(qcfs(torch.tensor([0.49, 0.5, 3.0]), torch.tensor(1.0), 1).numpy(),
                               [0, 1, 1])


@pytest.mark.parametrize("x, dx, dlam", [
    (-0.3, 0.0, 0.0),            # q = -1: below the clip
    (0.1, 0.0, 0.0),             # q = 0: h = 0, clipped (no gradient at the boundary)
    (0.3, 1.0, (0.5 - 0.3) / 2),  # 0 < q < L: dh/dx = 1, dh/dlambda = (h - x) / lambda
    (1.2, 1.0, (1.0 - 1.2) / 2),
    (1.8, 0.0, 1.0),             # q = 4 = L: h = lambda
    (2.5, 0.0, 1.0),             # above: h = lambda
])
def test_qcfs_gradient_hand_computed(x, dx, dlam):
    xt = torch.tensor(x, requires_grad=True)
    lam = torch.tensor(2.0, requires_grad=True)
    qcfs(xt, lam, 4).backward()
    assert xt.grad.item() == pytest.approx(dx, abs=1e-6)
    assert lam.grad.item() == pytest.approx(dlam, abs=1e-6)


def test_qcfs_network_uses_the_quantiser_and_trains_lambdas():
    specs = [linear(3, "artificial", name="h1"), linear(2, "artificial", name="output")]
    net = QCFSNetwork(specs, (2,), L=2, lambda_init=1.0)
    assert set(net.lambdas) == {"h1"}
    assert any(p is net.lambdas["h1"] for p in net.parameters())  # the optimiser sees it
    with torch.no_grad():
        net.ops["h1"].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
        net.ops["output"].weight.copy_(torch.eye(2, 3))
    out = net(torch.tensor([[0.3, 0.8]]))
    # h1 = qcfs([0.3, 0.8, -0.3], 1, 2) = 0.5 * floor(2 x + 0.5) clipped = [0.5, 1.0, 0]
    np.testing.assert_allclose(out.detach().numpy(), [[0.5, 1.0]])
    with pytest.raises(ConversionError, match="L"):
        QCFSNetwork(specs, (2,), L=0)
    with pytest.raises(ConversionError, match="no QCFS layer"):
        net.set_lambdas({"output": 1.0})


# --------------------------------------------------------------------------------------------
# Conversion: IF with reset by subtraction, threshold lambda, v[0] = theta / 2
# --------------------------------------------------------------------------------------------
def _one_hidden(L, lam, n_in=6, n_hidden=16, n_out=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    specs = [linear(n_hidden, "artificial", name="h1"), linear(n_out, "artificial", name="output")]
    net = QCFSNetwork(specs, (n_in,), L=L, lambda_init=lam)
    with torch.no_grad():
        net.ops["h1"].weight.copy_(torch.randn(n_hidden, n_in, generator=g))
        net.ops["output"].weight.copy_(torch.randn(n_out, n_hidden, generator=g))
    return net.eval()


@pytest.mark.parametrize("L", [1, 2, 4, 8])
def test_converted_qcfs_network_equals_the_quantised_ann_at_T_equal_L(L):
    """Constant (direct-coded) input: theta N(T) / T = h(I) exactly when T = L."""
    lam = 1.5                                  # lambda / L exact in binary floating point
    ann = _one_hidden(L, lam)
    x = np.random.default_rng(1).random((200, 6)).astype(np.float32)
    conv = QCFSConverter(ann, batch_size=50).fit(x[:1])
    assert conv.thresholds_ == {"h1": lam}
    with torch.no_grad():
        expected = ann(torch.from_numpy(x)).numpy()
    # the readout integrates spikes of scale lambda: logits in units of lambda
    logits = conv.run(x, [L])[0] * lam
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_at_multiples_of_L_the_rate_is_the_finer_quantiser_not_the_ann():
    """T = kL gives h with kL steps (closed form), which is not h with L steps."""
    L, lam = 2, 1.5
    n_hidden = 16
    ann = _one_hidden(L, lam, n_hidden=n_hidden, n_out=n_hidden)
    with torch.no_grad():
        ann.ops["output"].weight.copy_(torch.eye(n_hidden))   # logits = hidden rates
    x = np.random.default_rng(2).random((100, 6)).astype(np.float32)
    conv = QCFSConverter(ann, batch_size=100).fit(x[:1])
    current = x @ ann.ops["h1"].weight.detach().numpy().T
    for T in (2 * L, 4 * L):
        spikes = np.clip(np.floor(T * current / lam + 0.5), 0, T)
        np.testing.assert_allclose(conv.run(x, [T])[0] * T, spikes, atol=1e-4)
    # the counter-example: L = 1, lambda = 1, I = 0.3 -> h = 0, but one spike in T = 2
    assert qcfs(torch.tensor(0.3), torch.tensor(1.0), 1).item() == 0.0
    assert np.floor(2 * 0.3 + 0.5) == 1


def test_qcfs_converter_sets_lambda_thresholds_and_half_potential():
    specs = [linear(4, "artificial", name="h1"), linear(4, "artificial", name="h2"),
             linear(3, "artificial", name="output")]
    ann = QCFSNetwork(specs, (5,), L=4)
    ann.set_lambdas({"h1": 2.0, "h2": 0.5})
    conv = QCFSConverter(ann).fit(np.zeros((1, 5), np.float32))
    # theta_l = lambda_l / lambda_src(l), as percentile thresholds
    assert conv.thresholds_ == {"h1": 2.0, "h2": 0.25}
    assert conv.scales_ == {"h1": 2.0, "h2": 0.5, "output": 0.5}
    v0 = conv.snn_.neurons["h2"].initial_state((1, 4))["v"]
    np.testing.assert_allclose(v0.numpy(), 0.125)
    assert conv.neuron is IF_HALF
    with pytest.raises(ConversionError, match="QCFSNetwork"):
        QCFSConverter(Network(specs, (5,), T=1)).fit(np.zeros((1, 5), np.float32))


def _bars(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = 0.2 * rng.random((n, 1, 8, 8)).astype("float32")
    x[np.arange(n), 0, 2 * y, 1:7] = 1.0
    return x, y


def test_train_qcfs_sets_lambdas_from_data_and_learns():
    from brainsnn.engine.network import vgg_specs

    x, y = _bars(400, 0)
    torch.manual_seed(0)
    net = QCFSNetwork(vgg_specs((), fc=(32,), n_classes=4, kinds="artificial"), (1, 8, 8), L=4)
    train_qcfs(net, x, y, epochs=10, lr=1e-2, batch_size=32, n_init=100)
    lam = net.lambda_values()
    assert set(lam) == {"linear1"} and lam["linear1"] != 1.0 and lam["linear1"] > 0
    conv = QCFSConverter(net).fit(x[:1])
    assert conv.ann_accuracy(x, y) > 0.9
    assert conv.score(x, y, T=4) == pytest.approx(conv.ann_accuracy(x, y))  # one layer: exact


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------
def _relu_chain(seed=0):
    g = torch.Generator().manual_seed(seed)
    specs = [linear(32, "artificial", name="h1"), linear(32, "artificial", name="h2"),
             linear(4, "artificial", name="output")]
    net = Network(specs, (10,), T=1)
    with torch.no_grad():
        for name, op in net.ops.items():
            op.weight.copy_(torch.randn(op.weight.shape, generator=g) / op.weight.shape[1] ** 0.5)
    return net.eval()


def test_calibration_reduces_the_rate_error_of_every_layer():
    x = np.random.default_rng(0).random((300, 10)).astype(np.float32)
    conv = ANNToSNN(_relu_chain(), method="percentile", batch_size=100).fit(x)
    T = 4
    before = rate_errors(conv, x, T)
    original = {k: v.clone() for k, v in conv.snn_.state_dict().items()}
    cal = CalibratedConverter(conv, n_images=300).fit(x)
    calibrated = cal.calibrated(T)
    after = rate_errors(calibrated, x, T)
    assert set(before) == {"h1", "h2", "output"}
    for name in before:
        assert before[name] > 0.01, name           # flooring at T = 4 loses a measurable mean
        assert after[name] < 0.5 * before[name], (name, before[name], after[name])
    # the fitted converter is untouched: each T gets its own calibrated copy
    for k, v in conv.snn_.state_dict().items():
        torch.testing.assert_close(v, original[k])
    assert set(cal.biases_) == {T}
    # the correction is a per-neuron bias (current units)
    assert cal.biases_[T]["h1"].shape == (32,)


def test_calibrate_biases_hand_computed_one_layer():
    """One neuron, constant input 0.3, theta = 1, T = 4: one spike would be 0.25 for an ANN
    target of 0.3 -> bias += 0.05 after the first correction."""
    specs = [linear(1, "artificial", name="h1"), linear(1, "artificial", name="output")]
    ann = Network(specs, (1,), T=1).eval()
    with torch.no_grad():
        ann.ops["h1"].weight.fill_(1.0)
        ann.ops["output"].weight.fill_(1.0)
    x = np.full((1, 1), 0.3, np.float32)
    conv = ANNToSNN(ann, method="percentile", percentile=100).fit(np.ones((1, 1), np.float32))
    assert conv.thresholds_ == {"h1": 1.0}
    changes = calibrate_biases(conv, x, 4, iterations=1)
    # after the h1 correction the current is 0.35: floor(4 * 0.35) = 1 spike still, and the
    # readout gets rate 0.25 for an ANN logit 0.3: its bias += 0.05 as well
    assert changes["h1"] == pytest.approx([0.05], abs=1e-6)
    assert changes["output"] == pytest.approx([0.05], abs=1e-6)


def test_calibration_errors_named():
    conv = ANNToSNN(_relu_chain(), method="percentile")
    with pytest.raises(ConversionError, match="fit"):
        rate_errors(conv, np.zeros((2, 10), np.float32), 4)
    with pytest.raises(ConversionError, match="fit"):
        CalibratedConverter(conv).calibrated(4)


# --------------------------------------------------------------------------------------------
# Latency helpers and the protocol
# --------------------------------------------------------------------------------------------
def test_first_T_within_hand_computed():
    assert first_T_within([0.80, 0.975, 0.99, 0.99], [4, 8, 16, 32], 0.985) == 8
    assert first_T_within([0.80, 0.97], [4, 8], 0.985) is None
    assert first_T_within([0.99, 0.5], [32, 4], 0.985) == 32       # sorted by T
    with pytest.raises(ConversionError, match="accuracies"):
        first_T_within([0.9], [4, 8], 0.9)


def test_protocol_smoke_qcfs_and_calibration(tmp_path, data_dir, monkeypatch):
    from brainsnn.experiments.protocols import conversion

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "q.h5"
    assert conversion.main(["--scale", "smoke", "--method", "percentile,qcfs+calibration",
                            "--eval-T", "4,8", "--qcfs-L", "2", "--out", str(out),
                            "--data", str(data_dir)]) == 0
    with h5py.File(out, "r") as f:
        lam = f["models/mlp/qcfs_ann/lambda/linear1"][()]
        assert lam > 0
        theta = f["models/mlp/qcfs+calibration/theta/linear1"][()]
        assert theta == pytest.approx(lam)
        assert f["models/mlp/qcfs+calibration/accuracy_vs_T"].shape == (2,)
        assert f["models/mlp/percentile/energy_vs_T"].shape == (2,)
        assert "T_within_1_point" in f["models/mlp/percentile"]


@pytest.mark.parametrize("dataset, label", [("mnist", "mlp"), ("cifar10", "vgg")])
def test_protocol_qcfs_init_from_the_relu_ann(tmp_path, data_dir, monkeypatch, dataset, label):
    """--qcfs-init ann starts QCFS training from the trained ReLU weights (batch norm folded,
    for CIFAR-10): with a learning rate too small to move them, the QCFS ANN's weights are
    the ReLU ANN's; from scratch they are not."""
    from brainsnn.experiments.protocols import conversion

    monkeypatch.chdir(tmp_path)
    weights = {}
    for init in ("ann", "scratch"):
        out = tmp_path / f"{init}.h5"
        assert conversion.main(["--dataset", dataset, "--scale", "smoke", "--method", "qcfs",
                                "--eval-T", "4", "--qcfs-init", init, "--qcfs-epochs", "1",
                                "--qcfs-lr", "1e-9", "--out", str(out),
                                "--data", str(data_dir)]) == 0
        with h5py.File(out, "r") as f:
            assert f[f"models/{label}/qcfs_training/init"][()].decode() == init
            assert f[f"models/{label}/qcfs_training/lr"][()] == pytest.approx(1e-9)
            relu, quantised = f[f"models/{label}/ann"], f[f"models/{label}/qcfs_ann"]
            names = []
            relu.visit(lambda n: names.append(n) if isinstance(relu[n], h5py.Dataset) else None)
            assert names
            weights[init] = max(float(np.max(np.abs(relu[n][()] - quantised[n][()])))
                                for n in names)
    assert weights["ann"] < 1e-6
    assert weights["scratch"] > 1e-2


def test_protocol_rejects_bad_qcfs_training_options(capsys):
    from brainsnn.experiments.protocols import conversion

    for argv, message in ((["--qcfs-epochs", "0"], "--qcfs-epochs"),
                          (["--qcfs-lr", "-1"], "--qcfs-lr"),
                          (["--qcfs-init", "relu"], "--qcfs-init"),
                          (["--qcfs-epochs", "3"], "--qcfs-epochs set(s) QCFS training, but "
                                                   "--method lists no qcfs method"),
                          (["--qcfs-init", "ann", "--method", "percentile+calibration"],
                           "--qcfs-init ann set(s) QCFS training")):
        with pytest.raises(SystemExit):
            conversion.parse_args(["--scale", "smoke", *argv])
        assert message in capsys.readouterr().err
    assert conversion.parse_args(["--scale", "smoke", "--qcfs-epochs", "3", "--method",
                                  "qcfs+calibration"]).qcfs_epochs == 3


def test_protocol_ann_loaded_with_batchnorm_folded_scores_as_trained(tmp_path, data_dir,
                                                                       monkeypatch):
    """--ann reloads a batch-norm network (CIFAR-10) with its folded biases: the loaded ANN
    scores what the trained one scored (the biases were once dropped: chance accuracy)."""
    from brainsnn.experiments.protocols import conversion

    monkeypatch.chdir(tmp_path)
    common = ["--dataset", "cifar10", "--scale", "smoke", "--method", "percentile",
              "--eval-T", "4", "--data", str(data_dir)]
    assert conversion.main([*common, "--out", str(tmp_path / "a.h5")]) == 0
    assert conversion.main([*common, "--ann", str(tmp_path / "a.h5"),
                            "--out", str(tmp_path / "b.h5")]) == 0
    with h5py.File(tmp_path / "a.h5", "r") as a, h5py.File(tmp_path / "b.h5", "r") as b:
        assert "models/vgg/ann/conv0/bias" in a
        assert b["models/vgg/ann_test_accuracy"][()] == a["models/vgg/ann_test_accuracy"][()]
        assert (b["models/vgg/percentile/accuracy_vs_T"][()]
                == a["models/vgg/percentile/accuracy_vs_T"][()]).all()


def test_protocol_ann_with_weights_the_network_lacks_is_refused(tmp_path, data_dir,
                                                                 monkeypatch):
    from brainsnn.experiments.protocols import conversion

    monkeypatch.chdir(tmp_path)
    assert conversion.main(["--dataset", "cifar10", "--scale", "smoke", "--method",
                            "percentile", "--eval-T", "4", "--data", str(data_dir),
                            "--out", str(tmp_path / "a.h5")]) == 0
    from brainsnn.io.results import RunResults

    rec = RunResults.load(tmp_path / "a.h5")
    rec.set("models/vgg/ann/conv9/weight", np.zeros(3, np.float32))
    rec.save(tmp_path / "a.h5")
    from brainsnn.errors import ExperimentError

    with pytest.raises(ExperimentError, match="no place for models/vgg/ann/conv9/weight"):
        conversion.main(["--dataset", "cifar10", "--scale", "smoke", "--method", "percentile",
                         "--eval-T", "4", "--data", str(data_dir), "--ann",
                         str(tmp_path / "a.h5"), "--out", str(tmp_path / "b.h5")])


def test_protocol_ann_from_another_dataset_or_the_held_out_images_is_refused(
        tmp_path, data_dir, monkeypatch):
    """--ann checks where its ANN was trained: another dataset (same shapes: it would score
    at chance, exit 0) or training images that this run holds out for validation (a
    validation accuracy on images the ANN was trained on) are refused; the provenance is
    recorded and followed through a chain of --ann runs, and through older files' settings."""
    from brainsnn.errors import ExperimentError
    from brainsnn.experiments.protocols import conversion
    from brainsnn.io.results import RunResults

    monkeypatch.chdir(tmp_path)
    common = ["--scale", "smoke", "--method", "percentile", "--eval-T", "4",
              "--data", str(data_dir)]
    a, b = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    assert conversion.main([*common, "--dataset", "mnist", "--out", a]) == 0   # 2,000 images
    assert RunResults.load(a).get("ann_training/images") == 2000
    with pytest.raises(ExperimentError, match="trained on mnist, this run is on fashion_mnist"):
        conversion.main([*common, "--dataset", "fashion_mnist", "--ann", a, "--out", b])
    overlap = r"first 2000 mnist training images, which include the validation images this " \
              r"run holds out \(training images 1500..2499\)"
    with pytest.raises(ExperimentError, match=overlap):
        conversion.main([*common, "--dataset", "mnist", "--ann", a, "--validation", "1000",
                         "--train-images", "1500", "--out", b])
    # held out after the ANN's images: accepted
    assert conversion.main([*common, "--dataset", "mnist", "--ann", a, "--validation", "1000",
                            "--train-images", "2000", "--out", str(tmp_path / "v.h5")]) == 0
    # a chain: b's settings say 500 training images, but its ANN is a's (2,000)
    assert conversion.main([*common, "--dataset", "mnist", "--ann", a, "--train-images", "500",
                            "--out", b]) == 0
    rec = RunResults.load(b)
    assert rec.get("ann_training/images") == 2000
    assert rec.attrs("ann_training/images")["dataset"] == "mnist"
    with pytest.raises(ExperimentError, match="first 2000 mnist"):
        conversion.main([*common, "--dataset", "mnist", "--ann", b, "--validation", "1000",
                         "--train-images", "1500", "--out", str(tmp_path / "c.h5")])
    # an older file without ann_training/: followed to the file its ANN came from
    del rec["ann_training/images"]
    rec.save(b)
    assert conversion.ann_provenance(b) == ("mnist", 2000)
    (tmp_path / "a.h5").unlink()
    with pytest.raises(ExperimentError, match="was loaded from .*a.h5, which is not there"):
        conversion.ann_provenance(b)


def test_protocol_ann_of_another_network_is_refused(tmp_path, data_dir, monkeypatch):
    from brainsnn.errors import ExperimentError
    from brainsnn.experiments.protocols import conversion

    monkeypatch.chdir(tmp_path)
    common = ["--dataset", "mnist", "--scale", "smoke", "--method", "percentile",
              "--eval-T", "4", "--data", str(data_dir)]
    assert conversion.main([*common, "--out", str(tmp_path / "a.h5")]) == 0
    with pytest.raises(ExperimentError, match="network 'mlp' differs from this run's in"):
        conversion.main([*common, "--fc", "64,64", "--ann", str(tmp_path / "a.h5"),
                         "--out", str(tmp_path / "b.h5")])
    with pytest.raises(SystemExit):
        conversion.parse_args([*common, "--ann", str(tmp_path / "none.h5")])
