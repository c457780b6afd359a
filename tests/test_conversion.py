"""ANN-to-SNN conversion (brainsnn.learn.conversion): hand-computed thresholds, IF rate bound,
BackRes/residual structure, Brian2 export, batch-norm folding, errors, protocol smoke run."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from brainsnn.learn.conversion import (ANNToSNN, ConversionError, attach_batchnorm, fold_batchnorm,
                                 from_torch, if_spike_count, junction_sources, percentile_scale,
                                 source_layers,
                                 with_kinds)
from brainsnn.models import IF, LIF
from brainsnn.engine.network import (BackRes, Network, Residual, backres_specs, flatten, linear,
                               residual_specs, vgg_specs)

torch.set_num_threads(1)


def _chain(W1, W2, W_out):
    """A bias-free ANN on flat inputs: linear W1 -> ReLU -> linear W2 -> ReLU -> readout."""
    n_in = W1.shape[1]
    specs = [linear(W1.shape[0], "artificial", name="h1"), linear(W2.shape[0], "artificial", name="h2"),
             linear(W_out.shape[0], "artificial", name="output")]
    net = Network(specs, (n_in,), T=1)
    with torch.no_grad():
        for name, W in (("h1", W1), ("h2", W2), ("output", W_out)):
            net.ops[name].weight.copy_(torch.tensor(W, dtype=torch.float32))
    return net.eval()


# --------------------------------------------------------------------------------------------
# The IF neuron's rate vs the ReLU
# --------------------------------------------------------------------------------------------
def test_if_spike_count_closed_form():
    # floor(T I / theta) for 0 <= I <= theta
    assert if_spike_count(0.375, 1.0, 8) == 3          # exact in binary floating point
    assert if_spike_count(0.3, 1.0, 9) == 2
    assert if_spike_count(1.0, 1.0, 7) == 7
    assert if_spike_count(0.0, 1.0, 5) == 0
    assert if_spike_count(-0.5, 1.0, 5) == 0
    np.testing.assert_array_equal(if_spike_count([0.25, 0.5, 0.7], 2.0, 16), [2, 4, 5])


def test_one_layer_rate_approaches_relu_with_subtraction_bound():
    """Rates of a converted hidden layer = floor(T I/theta)/T -> relu(W x)/theta, error < 1/T."""
    W1 = np.array([[1.0, 0.5, -0.3], [0.2, 0.2, 0.2], [-1.0, 0.1, 0.0], [0.7, -0.2, 0.9]])
    x = np.array([[0.9, 0.4, 0.6]], dtype=np.float32)
    # readout = identity on the hidden layer, so the logits are the hidden rates
    specs = [linear(4, "artificial", name="h1"), linear(4, "artificial", name="output")]
    ann = Network(specs, (3,), T=1).eval()
    with torch.no_grad():
        ann.ops["h1"].weight.copy_(torch.tensor(W1, dtype=torch.float32))
        ann.ops["output"].weight.copy_(torch.eye(4))
    conv = ANNToSNN(ann, method="balance", balance_T=4, batch_size=1).fit(x)
    relu = np.maximum(W1 @ x[0], 0)
    theta = conv.thresholds_["h1"]
    assert theta == pytest.approx(relu.max(), rel=1e-6)       # max input current
    Ts = [4, 16, 64, 256, 1024]
    rates = conv.run(x, Ts)[:, 0, :]                            # (len(Ts), 4)
    errors = []
    for k, T in enumerate(Ts):
        current = (torch.tensor(W1, dtype=torch.float32) @ torch.tensor(x[0])).double().numpy()
        expected = if_spike_count(current, theta, T) / T    # same float32 current as the SNN
        np.testing.assert_allclose(rates[k], expected, atol=1e-6)
        err = np.abs(rates[k] - relu / theta)
        assert np.all(err <= 1.0 / T + 1e-6), (T, err)
        errors.append(err.max())
    assert errors[-1] < errors[0] and errors[-1] < 1e-3


# --------------------------------------------------------------------------------------------
# Threshold balancing and percentiles: hand-computed values
# --------------------------------------------------------------------------------------------
W1 = np.array([[1.0, 1.0], [0.5, -1.0], [2.0, 0.0]])
W2 = np.array([[0.7, 0.0, 0.4], [0.0, 1.0, 0.5]])
WO = np.array([[1.0, 0.0], [0.0, 1.0]])
X = np.array([[1.0, 0.5]], dtype=np.float32)


def test_threshold_balancing_hand_computed():
    # layer 1 current = W1 x = [1.5, 0, 2.0] at every step (direct coding): theta1 = 2.0.
    # With theta1 = 2 (balanced first), layer-1 spikes: neuron 0 (I = 1.5) fires at steps
    # 2, 3, 4 (v = 1.5, 3.0->1.0, 2.5->0.5, 2.0->0); neuron 2 (I = 2) fires at every step.
    # Layer 2 currents: step 1: [0.4, 0.5]; steps 2-4: [1.1, 0.5] -> theta2 = 1.1 for T >= 2,
    # and 0.5 for T = 1 (only step 1 seen).
    ann = _chain(W1, W2, WO)
    c4 = ANNToSNN(ann, method="balance", balance_T=4).fit(X)
    assert c4.thresholds_ == pytest.approx({"h1": 2.0, "h2": 1.1}, rel=1e-6)
    c1 = ANNToSNN(ann, method="balance", balance_T=1).fit(X)
    assert c1.thresholds_ == pytest.approx({"h1": 2.0, "h2": 0.5}, rel=1e-6)
    # scales: one spike of h2 stands for lambda = theta1 * theta2 of the ANN
    assert c4.scales_["h2"] == pytest.approx(2.0 * 1.1, rel=1e-6)


def test_balancing_uses_balanced_earlier_layers():
    # if layer 1 kept theta = 1 (not balanced), neuron 2 (I = 2) would fire every step and
    # neuron 0 every step too: layer-2 max would be 0.7 + 0.4 = 1.1 from step 1 on, and
    # T = 1 would give 1.1, not 0.5. The 0.5 above shows balancing is sequential.
    ann = _chain(W1, W2, WO)
    c = ANNToSNN(ann, method="balance", balance_T=1).fit(X)
    assert c.thresholds_["h2"] != pytest.approx(1.1)


def test_percentile_scale_hand_computed():
    assert percentile_scale([0, 1, 2, 3, 4], 100) == 4.0
    assert percentile_scale([0, 0, 1, 2, 3, 4], 50) == 2.5          # zeros are left out
    assert percentile_scale([0, 0, 1, 2, 3, 4], 50, nonzero=False) == 1.5
    assert percentile_scale([0, 0], 99) == 1.0                       # nothing fires: 1.0
    with pytest.raises(ConversionError, match="percentile"):
        percentile_scale([1, 2], 0)


def test_percentile_thresholds_hand_computed():
    # ANN: a1 = relu(W1 x) = [1.5, 0, 2.0]; a2 = relu(W2 a1) = [1.85, 1.0]
    # p = 100: lambda1 = 2.0, lambda2 = 1.85; theta1 = 2.0, theta2 = 1.85 / 2.0 = 0.925
    # p = 50 (of non-zero values): lambda1 = 1.75, lambda2 = 1.425; theta2 = 1.425 / 1.75
    ann = _chain(W1, W2, WO)
    c = ANNToSNN(ann, method="percentile", percentile=100).fit(X)
    assert c.thresholds_ == pytest.approx({"h1": 2.0, "h2": 0.925}, rel=1e-6)
    c = ANNToSNN(ann, method="percentile", percentile=50).fit(X)
    assert c.thresholds_ == pytest.approx({"h1": 1.75, "h2": 1.425 / 1.75}, rel=1e-6)


def test_bias_is_divided_by_input_scale():
    ann = Network([linear(2, "artificial", bias=True, name="h1"),
                   linear(2, "artificial", bias=True, name="output")], (2,), T=1).eval()
    with torch.no_grad():
        ann.ops["h1"].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        ann.ops["h1"].bias.copy_(torch.tensor([0.5, 0.0]))
        ann.ops["output"].weight.copy_(torch.eye(2))
        ann.ops["output"].bias.copy_(torch.tensor([0.3, -0.3]))
    x = np.array([[1.0, 1.0]], dtype=np.float32)
    c = ANNToSNN(ann, method="balance", balance_T=2).fit(x)
    # h1 current = [1.5, 2.0] -> theta 2.0; the readout's bias is divided by lambda_h1 = 2
    assert c.thresholds_["h1"] == pytest.approx(2.0)
    np.testing.assert_allclose(c.snn_.ops["output"].bias.detach().numpy(), [0.15, -0.15], rtol=1e-6)
    np.testing.assert_allclose(c.snn_.ops["h1"].bias.detach().numpy(), [0.5, 0.0])  # input scale 1
    # the ANN keeps its own bias
    np.testing.assert_allclose(ann.ops["output"].bias.detach().numpy(), [0.3, -0.3])
    # long run: logits * lambda_h1 -> ANN logits  (relu([1.5, 2]) + b = [1.8, 1.7])
    z = c.run(x, [2000])[0, 0] * 2.0
    np.testing.assert_allclose(z, [1.8, 1.7], atol=2.0 * 2 / 2000 + 1e-5)


# --------------------------------------------------------------------------------------------
# BackRes, residual, hybrid: structure
# --------------------------------------------------------------------------------------------
def test_backres_conversion_keeps_parameters_and_gives_each_pass_a_threshold():
    x = np.random.default_rng(0).random((6, 1, 12, 12)).astype(np.float32)
    counts = []
    for R in (1, 2, 3):
        torch.manual_seed(0)
        ann = Network(backres_specs(width=4, block_layers=1, R=R, kinds="artificial"),
                      (1, 12, 12), T=1).eval()
        c = ANNToSNN(ann, method="balance", balance_T=8).fit(x)
        assert c.snn_.n_parameters() == ann.n_parameters()
        counts.append(ann.n_parameters())
        names = list(c.thresholds_)
        assert names == c.snn_.spiking_layer_names()
        assert len(names) == 1 + R                      # stem + one per pass
        if R > 1:
            assert [n for n in names if "pass" in n] == [f"conv2_pass{r + 1}" for r in range(R)]
            assert all(c.sources_[f"conv2_pass{r + 1}"] == f"conv2_pass{r}" for r in range(1, R))
        logits = c.run(x, [4, 8])
        assert logits.shape == (2, 6, 10)
        for name, ll in ((ll.name, ll) for ll in c.snn_.layers):
            assert ll.out_shape == next(a.out_shape for a in ann.layers if a.name == name)
    assert counts[0] == counts[1] == counts[2]            # equal parameter count for R = 1, 2, 3


def test_backres_percentile_each_pass_own_threshold():
    x = np.random.default_rng(1).random((4, 1, 8, 8)).astype(np.float32)
    torch.manual_seed(0)
    ann = Network(backres_specs(width=3, block_layers=1, R=3, kinds="artificial"), (1, 8, 8),
                  T=1).eval()
    c = ANNToSNN(ann, method="percentile", percentile=99.0).fit(x)
    lam = c.activation_percentiles_
    for r in (2, 3):
        assert c.thresholds_[f"conv2_pass{r}"] == pytest.approx(
            lam[f"conv2_pass{r}"] / lam[f"conv2_pass{r - 1}"], rel=1e-6)


def test_additive_backres_ties_the_block_input_scale():
    torch.manual_seed(0)
    ann = Network(backres_specs(width=3, block_layers=1, R=3, form="additive", kinds="artificial"),
                  (1, 8, 8), T=1).eval()
    sources, ties = source_layers(ann)
    # y_r = B(y_{r-1} + x): pass r's input sums pass r-1's spikes and the block input (stem)
    assert ties == [("conv2_pass1", "stem"), ("conv2_pass2", "stem")]
    x = np.random.default_rng(5).random((4, 1, 8, 8)).astype(np.float32)
    c = ANNToSNN(ann, method="percentile", percentile=99.0).fit(x)
    assert c.scales_["conv2_pass1"] == pytest.approx(c.scales_["stem"])
    assert c.scales_["conv2_pass2"] == pytest.approx(c.scales_["stem"])
    assert c.snn_.n_parameters() == ann.n_parameters()


def test_residual_conversion_weighs_the_shortcut_by_the_ratio_of_scales():
    x = np.random.default_rng(2).random((5, 1, 8, 8)).astype(np.float32)
    torch.manual_seed(0)
    ann = Network(residual_specs(width=4, n_blocks=2, layers_per_block=2, kinds="artificial"),
                  (1, 8, 8), T=1).eval()
    sources, ties = source_layers(ann)
    # block res0 = conv1, conv2 (shortcut from stem); block res1 = conv4, conv5 (from conv2)
    assert sources["conv1"] == "stem" and sources["conv2"] == "conv1"
    assert ties == []
    assert junction_sources(ann) == {"conv2": "stem", "conv5": "conv2"}
    for method in ("percentile", "balance"):
        c = ANNToSNN(ann, method=method, percentile=99.5, balance_T=8).fit(x)
        assert c.snn_.n_parameters() == ann.n_parameters()
        assert set(c.thresholds_) == set(c.snn_.spiking_layer_names())
        # the shortcut's spikes stand for lambda_stem, the block's own branch for lambda_conv1
        assert c.shortcut_gains_["conv2"] == pytest.approx(c.scales_["stem"] / c.scales_["conv1"])
        assert c.shortcut_gains_["conv5"] == pytest.approx(c.scales_["conv2"] / c.scales_["conv4"])
        assert c.snn_.shortcut_gains == c.shortcut_gains_
        assert c.run(x, [16]).shape == (1, 5, 10)


def test_hybrid_pattern_keeps_artificial_layers():
    torch.manual_seed(0)
    specs = vgg_specs((4, "P"), fc=(16,), kinds="artificial")
    ann = Network(specs, (1, 8, 8), T=1).eval()
    x = np.random.default_rng(3).random((4, 1, 8, 8)).astype(np.float32)
    c = ANNToSNN(ann, method="balance", kinds="SAS", balance_T=8).fit(x)
    kinds = {ll.name: ll.kind for ll in c.snn_.layers if ll.spec.weighted}
    assert kinds == {"conv0": "spiking", "linear3": "artificial", "output": "spiking"}
    assert list(c.thresholds_) == ["conv0"]
    # the artificial layer carries the scale of its input
    assert c.scales_["linear3"] == pytest.approx(c.scales_["conv0"])
    # a static readout (artificial layer on the rates of the whole run): logits at T come from
    # a run of T steps, not from the longest run
    c2 = ANNToSNN(ann, method="balance", kinds="SSA", balance_T=8).fit(x)
    z = c2.run(x, [4, 32])
    np.testing.assert_allclose(z[0], c2.run(x, [4])[0], rtol=1e-6)
    np.testing.assert_allclose(z[1], c2.run(x, [32])[0], rtol=1e-6)
    assert not np.allclose(z[0], z[1])
    with pytest.raises(ConversionError, match="3 letters"):
        with_kinds(specs, "SS")


def test_converted_mlp_matches_ann_on_mnist(mnist_small):
    """Converted network agrees with its ANN on most images (training data, fast)."""
    x, y = mnist_small
    torch.manual_seed(0)
    from brainsnn.learn.conversion import train_ann
    ann = Network([flatten(), linear(64, "artificial"), linear(10, "artificial", name="output")],
                  (1, 28, 28), T=1)
    train_ann(ann, x[:800], y[:800], epochs=3, batch_size=50, lr=3e-3, seed=0)
    c = ANNToSNN(ann, method="balance", balance_T=32, seed=0).fit(x[:200])
    ann_acc = c.ann_accuracy(x[800:], y[800:])
    acc = c.accuracy_vs_T(x[800:], y[800:], [8, 128])
    assert ann_acc > 0.6
    assert acc[1] >= ann_acc - 0.05 and acc[1] >= acc[0] - 0.02
    report = c.energy()
    assert report["T"] == 128 and report["layers"]["linear1"]["spike_rate"] > 0


# --------------------------------------------------------------------------------------------
# Batch-norm folding and torch Sequential import
# --------------------------------------------------------------------------------------------
def test_fold_batchnorm_gives_the_same_ann_outputs():
    torch.manual_seed(0)
    ann = Network(vgg_specs((4, "P", 6), fc=(8,), kinds="artificial"), (1, 8, 8), T=1)
    attach_batchnorm(ann)
    x = torch.rand(16, 1, 8, 8)
    ann.train()
    with torch.no_grad():
        for _ in range(3):
            ann(x * 2, T=1)  # give batch-norm non-trivial running statistics
        for name, op in ann.ops.items():
            if hasattr(op, "__getitem__"):
                op[1].weight.uniform_(0.5, 1.5)
                op[1].bias.uniform_(-0.2, 0.2)
    ann.eval()
    with pytest.raises(ConversionError, match="batch-norm"):
        ANNToSNN(ann).fit(x)
    folded = fold_batchnorm(ann)
    with torch.no_grad():
        np.testing.assert_allclose(folded(x, T=1).numpy(), ann(x, T=1).numpy(), atol=1e-5)
    assert folded.specs[0].bias and not folded.specs[-1].bias     # readout had no batch-norm


def test_from_torch_sequential_and_unsupported_layer_named():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10)).eval()
    with torch.no_grad():
        seq[1].running_mean.uniform_(-0.1, 0.1)
        seq[1].running_var.uniform_(0.5, 2)
    net = from_torch(seq, (1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(net(x, T=1).numpy(), seq(x).numpy(), atol=1e-5)
    bad = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(64, 10))
    with pytest.raises(ConversionError, match=r"layer '2' \(MaxPool2d\).*not supported.*AvgPool2d"):
        from_torch(bad, (1, 8, 8))
    with pytest.raises(ConversionError, match=r"layer '1' \(Sigmoid\)"):
        from_torch(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)), (4,))
    with pytest.raises(ConversionError, match=r"layer '0' \(Linear\).*followed by ReLU"):
        from_torch(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), (4,))


def test_bad_input_errors_name_the_problem():
    ann = _chain(W1, W2, WO)
    c = ANNToSNN(ann, balance_T=2).fit(X)
    for T in (-5, 0, 2.5):
        with pytest.raises(ConversionError, match=r"T \(number of time steps\) must be an integer >= 1"):
            c.run(X, [T])
    with pytest.raises(ConversionError, match="balance_T"):
        ANNToSNN(ann, balance_T=-1).fit(X)
    spiking = Network([linear(3, "spiking", name="h1"), linear(2, name="output")], (2,), T=1)
    with pytest.raises(ConversionError, match="layer 'h1'.*spiking"):
        ANNToSNN(spiking).fit(X)
    with pytest.raises(ConversionError, match="method"):
        ANNToSNN(ann, method="max").fit(X)
    with pytest.raises(ConversionError, match="no parameter 'theta_x'"):
        ANNToSNN(ann, threshold_parameter="theta_x").fit(X)
    with pytest.raises(ConversionError, match=r"batch \(n, 2\)"):
        c.run(np.zeros((1, 3), np.float32), [4])
    with pytest.raises(ConversionError, match="call fit"):
        ANNToSNN(ann).run(X, [4])



def test_out_of_memory_names_the_batch_and_T(monkeypatch):
    c = ANNToSNN(_chain(W1, W2, WO), balance_T=2, batch_size=3).fit(X)

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(c.snn_, "forward", no_memory)
    with pytest.raises(ConversionError, match=r"3 images for T = 64 steps.*--eval-batch"):
        c.run(X, [16, 64])


def test_poisson_input_is_seeded_and_converges():
    ann = _chain(W1, W2, WO)
    runs = []
    for seed in (0, 0, 1):
        c = ANNToSNN(ann, encoder="poisson", balance_T=16, seed=seed).fit(X)
        runs.append(c.run(X, [16, 64])[:, 0])
    np.testing.assert_array_equal(runs[0], runs[1])          # same seed, same spikes
    assert not np.array_equal(runs[0], runs[2])
    # with Bernoulli input of rate x the long-run logits approach the ANN's output / lambda_h2
    ann_out = WO @ np.maximum(W2 @ np.maximum(W1 @ X[0], 0), 0)
    c = ANNToSNN(ann, method="percentile", percentile=100, encoder="poisson", seed=0).fit(X)
    z = c.run(X, [3000])[0, 0] * c.scales_["h2"]
    np.testing.assert_allclose(z, ann_out, atol=0.08)


def test_other_neuron_model_can_be_swapped_in():
    ann = _chain(W1, W2, WO)
    c = ANNToSNN(ann, neuron=LIF, balance_T=4).fit(X)
    assert c.snn_.neurons["h1"].model.name == "lif"
    assert c.thresholds_["h1"] == pytest.approx(2.0)


# --------------------------------------------------------------------------------------------
# Brian2 export: same spikes as the torch engine
# --------------------------------------------------------------------------------------------
def _torch_spikes(net, x, T):
    from brainsnn.brian.export import record_torch_spikes
    with record_torch_spikes(net) as rec, torch.no_grad():
        net(torch.as_tensor(x, dtype=torch.float64), T=T)
    return {name.split(".")[-1]: torch.stack(v).bool().numpy() for name, v in rec.items()}


def _converted_small(R=2):
    torch.manual_seed(0)
    ann = Network(backres_specs(width=2, block_layers=1, R=R, kinds="artificial", stem_pool=True),
                  (1, 6, 6), T=1).eval()
    x = np.random.default_rng(4).random((2, 1, 6, 6)).astype(np.float32)
    c = ANNToSNN(ann, method="balance", balance_T=10, balance_percentile=99.0).fit(x)
    return c, x


def _check_export(device, target=None):
    from brainsnn.brian.export import to_brian2
    c, x = _converted_small()
    net = c.snn_.double()
    T = 12
    torch_spikes = _torch_spikes(net, x.astype(np.float64), T)
    assert c.to_brian2().names == to_brian2(net).names
    result = to_brian2(net).run(x.astype(np.float64), T=T, device=device, target=target)
    assert set(result.spikes) == set(torch_spikes)
    total = 0
    for name, s in torch_spikes.items():
        np.testing.assert_array_equal(result.spikes[name], s, err_msg=name)
        total += s.sum()
    assert total > 0                                      # something spiked
    with torch.no_grad():
        logits = net(torch.as_tensor(x, dtype=torch.float64), T=T).numpy()
    np.testing.assert_allclose(result.logits, logits, rtol=1e-6, atol=1e-9)


def test_export_to_brian2_runtime_same_spikes():
    _check_export("runtime", target="numpy")


@pytest.mark.slow
def test_export_to_brian2_cpp_standalone_same_spikes():
    _check_export("cpp_standalone")


@pytest.mark.gpu
@pytest.mark.slow
def test_export_to_brian2_cuda_standalone_same_spikes():
    from brainsnn.brian.devices import gpu_available
    pytest.importorskip("brian2cuda")
    if not gpu_available():
        pytest.skip("no NVIDIA GPU")
    _check_export("cuda_standalone")


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------
def test_protocol_help():
    out = subprocess.run([sys.executable, "-m", "brainsnn", "run", "conversion", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--scale" in out.stdout and "--max-minutes" in out.stdout


def test_protocol_smoke_writes_results(tmp_path, data_dir):
    from brainsnn.io.results import RunResults
    out = tmp_path / "conv.h5"
    proc = subprocess.run([sys.executable, "-m", "brainsnn", "run", "conversion",
                           "--scale", "smoke", "--out", str(out), "--data", str(data_dir),
                           "--seed", "3", "--plot"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = RunResults.load(out)
    assert rec.seed == 3
    T = np.asarray(rec.get("metrics/T"))
    acc = np.asarray(rec.get("metrics/accuracy_vs_T"))
    assert T.ndim == 1 and acc.shape[-1] == len(T) and np.all((acc >= 0) & (acc <= 1))
    ann = rec.attrs("metrics/accuracy_vs_T")["ann_accuracy"][0]
    assert ann > 0.5 and acc[0, -1] > ann - 0.1     # converted: close to its ANN at the largest T
    assert float(rec.get("energy/total")) > 0
    assert out.with_suffix(".png").exists()


def test_protocol_layer_options_and_validation(load_protocol, tmp_path, data_dir, capsys):
    from brainsnn.io.results import RunResults
    mod = load_protocol("conversion")
    out = tmp_path / "conv_val.h5"
    assert mod.main(["--scale", "smoke", "--out", str(out), "--data", str(data_dir),
                     "--train-images", "300", "--validation", "100", "--conv", "4,P", "--fc",
                     "16", "--label-smoothing", "0.1", "--weight-decay", "1e-4",
                     "--method", "percentile", "--eval-T", "8"]) == 0
    rec = RunResults.load(out)
    assert rec.get("models/vgg/ann_test_accuracy") is None
    assert 0 <= float(rec.get("models/vgg/ann_validation_accuracy")) <= 1
    assert rec.attrs("metrics/accuracy_vs_T")["split"] == "validation"
    assert rec.get("models/vgg/ann/conv0/weight").shape == (4, 1, 3, 3)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        mod.main(["--scale", "smoke", "--fc", "-3", "--out", str(tmp_path / "bad.h5")])
    assert stop.value.code == 2 and "'-3' is not a width" in capsys.readouterr().err
