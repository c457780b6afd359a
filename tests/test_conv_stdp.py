"""Convolutional STDP: kernel sharing, learning update, BackRes, extraction, readouts, errors."""
import os
import subprocess
import sys
import types
from pathlib import Path

import brian2 as b2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainsnn.brian import devices
from brainsnn.experiments import stdp_pipeline as pipeline
from brainsnn.errors import ConvSTDPError
from brainsnn.stdp.backres import BackResSTDPBlock
from brainsnn.stdp.brian_reference import _conv_synapses, brian2_stack_spikes
from brainsnn.stdp.layer import ConvSTDPLayer, conv_output_shape, extract_patches
from brainsnn.stdp.readout import FeatureScaler, make_readout
from brainsnn.stdp.stack import SpikingConvStack
from brainsnn.brian.plasticity import make_rule

REPO = Path(__file__).resolve().parent.parent


def _random_kernels(layer, rng, scale=3.0):
    k = rng.random(layer.kernels.shape)
    k *= layer.target_sum / k.reshape(len(k), -1).sum(1)[:, None, None, None]
    # theta in [18, 22] mV: thresholds around -52 mV, above rest (no spike without input)
    layer.set_kernels(k * scale, theta=rng.uniform(0.018, 0.022, layer.n_kernels))
    return layer


# -- kernel sharing -------------------------------------------------------------------------

@pytest.mark.parametrize("stride,padding,pool_in", [(1, 0, 1), (2, 1, 1), (1, 1, 2)])
def test_unrolled_synapses_apply_the_kernel_at_every_position(stride, padding, pool_in):
    """Every unrolled synapse carries its kernel element: summing w * s over the synapses
    gives conv2d(s, kernels), the input current of every position (avg pooling folded in)."""
    rng = np.random.default_rng(1)
    layer = ConvSTDPLayer(3, 3, 2, stride=stride, padding=padding, pool=1)
    layer.set_kernels(rng.normal(size=layer.kernels.shape))
    in_shape = (2, 7, 6)
    pre_shape = (2, 7 * pool_in, 6 * pool_in)
    s = rng.random(pre_shape)
    i, j, widx = _conv_synapses(in_shape, layer, pool_in, pre_shape)
    conv = layer.conv_shape(in_shape)
    current = np.zeros(int(np.prod(conv)))
    np.add.at(current, j, layer.kernels.reshape(-1)[widx] / pool_in ** 2 * s.reshape(-1)[i])
    pooled = F.avg_pool2d(torch.as_tensor(s)[None], pool_in) if pool_in > 1 else torch.as_tensor(s)[None]
    expected = F.conv2d(pooled, torch.as_tensor(layer.kernels), stride=stride, padding=padding)
    np.testing.assert_allclose(current.reshape(conv), expected[0].numpy(), rtol=1e-10, atol=1e-12)
    # and the patch layout is the kernel layout: patches @ kernel = conv
    pats = extract_patches(pooled.numpy(), 3, stride, padding)[0]         # (positions, C*k*k)
    via_patches = pats @ layer.kernels.reshape(3, -1).T.astype(np.float32)
    np.testing.assert_allclose(via_patches.T.reshape(conv), expected[0].numpy(), rtol=1e-5, atol=1e-5)


def test_single_pairing_changes_the_shared_kernel_by_the_hand_computed_amount():
    """A pre spike at image pixel (y0+dy, x0+dx), then a post spike of kernel 1 at position
    (y0, x0), 4 ms later: only kernel element (1, 0, dy, dx) changes, by
    nu_post * (exp(-4 ms / tau_pre) - x_tar) * (w_max - w)**mu (Diehl & Cook's rule)."""
    layer = ConvSTDPLayer(2, 3, 1, pool=1, seed=3)
    w0 = layer.kernels.copy()
    dy, dx, y0, x0 = 2, 1, 3, 4
    image = np.zeros((1, 1, 8, 8))
    image[0, 0, y0 + dy, x0 + dx] = 1.0
    patch = extract_patches(image, 3)[0].reshape(6, 6, -1)[y0, x0]       # the patch at (y0, x0)
    (pre_index,) = np.nonzero(patch)
    rule = make_rule("diehl_cook", gate=None)
    dt = 0.5 * b2.ms
    with devices.device_session("runtime"):
        b2.prefs.codegen.target = "numpy"
        pre = b2.SpikeGeneratorGroup(layer.n_inputs, pre_index, [1.0] * b2.ms, dt=dt)
        post = b2.NeuronGroup(layer.n_kernels, "ge : 1", threshold="i == 1 and t >= 5*ms and t < 5.4*ms",
                              dt=dt)
        syn = rule.synapses(pre, post)
        syn.connect()                                # i-major: (input, kernel)
        syn.w = layer._weights.reshape(-1)
        b2.Network(pre, post, syn).run(10 * b2.ms, namespace={})
        w_after = np.asarray(syn.w[:]).reshape(layer.n_inputs, layer.n_kernels)
    layer._weights = w_after
    w1 = layer.kernels
    p = rule.parameters
    # hand computation: at the post spike of kernel 1 every synapse of kernel 1 changes by
    # nu_post * (xpre - x_tar) * (w_max - w)**mu, xpre = exp(-4 ms / tau_pre) for the paired
    # input and 0 for the others; the pre spike came first (xpost = 0: no depression);
    # kernel 0 never fired and is unchanged.
    xpre = np.zeros((3, 3))
    xpre[dy, dx] = np.exp(-4e-3 / float(p["tau_pre"]))
    expected = w0.copy()
    expected[1, 0] = np.clip(w0[1, 0] + p["nu_post"] * (xpre - p["x_tar"])
                             * (p["w_max"] - w0[1, 0]) ** p["mu"], 0, p["w_max"])
    np.testing.assert_allclose(w1, expected, rtol=1e-12, atol=1e-15)
    assert w1[1, 0, dy, dx] > w0[1, 0, dy, dx]                    # the paired element grows
    assert np.all(np.delete(w1[1, 0].ravel(), dy * 3 + dx) < np.delete(w0[1, 0].ravel(), dy * 3 + dx))


# -- BackRes ----------------------------------------------------------------------------------

def test_backres_passes_share_one_set_of_kernels():
    base = ConvSTDPLayer(4, 3, 4, padding=1, pool=1)
    counts = [BackResSTDPBlock(base, R).n_parameters for R in (1, 2, 3)]
    assert counts == [4 * 4 * 9 + 4] * 3                   # does not grow with R
    deeper = [ConvSTDPLayer(4, 3, 4, padding=1, pool=1) for _ in range(3)]
    assert sum(layer.n_parameters for layer in deeper) == 3 * counts[0]
    stack = SpikingConvStack([BackResSTDPBlock(base, 3)], (4, 6, 6))
    mods = stack._modules(1)[0]
    assert len(mods) == 3 and all(m is mods[0] for m in mods)   # one kernel tensor, 3 passes


def test_separate_layer_block_counts_every_layer_and_uses_one_per_pass():
    layers = [ConvSTDPLayer(4, 3, 4, padding=1, pool=1, seed=i, name=f"deep{i + 1}")
              for i in range(3)]
    block = BackResSTDPBlock(layers, form="additive")
    assert block.R == 3 and not block.shared
    assert block.n_parameters == 3 * (4 * 4 * 9 + 4)
    assert [block.pass_layer(p) for p in range(3)] == layers
    assert [block.pass_name(p) for p in range(3)] == ["deep1", "deep2", "deep3"]
    mods = SpikingConvStack([block], (4, 6, 6))._modules(1)[0]
    assert [m.layer for m in mods] == layers                       # one module per layer
    shared = BackResSTDPBlock(layers[0], 3, form="additive")
    assert shared.shared and shared.pass_name(1) == "deep1_pass2"
    assert shared.config()["backres_form"] == "additive"


def test_backres_block_shape_is_checked():
    with pytest.raises(ConvSTDPError, match="form"):
        BackResSTDPBlock(ConvSTDPLayer(4, 3, 4, padding=1, pool=1), 2, form="concat")
    with pytest.raises(ConvSTDPError, match="one per pass"):
        BackResSTDPBlock([ConvSTDPLayer(4, 3, 4, padding=1, pool=1) for _ in range(2)], R=3)
    with pytest.raises(ConvSTDPError, match="same shape"):
        BackResSTDPBlock([ConvSTDPLayer(4, 3, 4, padding=1, pool=1),
                          ConvSTDPLayer(4, 5, 4, padding=2, pool=1)])
    with pytest.raises(ConvSTDPError, match="in_channels"):
        BackResSTDPBlock(ConvSTDPLayer(4, 3, 2, padding=1, pool=1), 2)
    with pytest.raises(ConvSTDPError, match="same"):
        BackResSTDPBlock(ConvSTDPLayer(4, 3, 4, padding=0, pool=1), 2)


# -- extraction: torch engine == Brian2 --------------------------------------------------------

@pytest.fixture(scope="module")
def small_stack():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    l1 = _random_kernels(ConvSTDPLayer(4, 3, 1, pool=2, seed=0), rng)
    l2 = _random_kernels(ConvSTDPLayer(3, 3, 4, pool=1, seed=1), rng, scale=25.0)
    blk = BackResSTDPBlock(_random_kernels(ConvSTDPLayer(3, 3, 3, padding=1, pool=1, seed=2),
                                           rng, scale=40.0), R=2)
    stack = SpikingConvStack([l1, l2, blk], (1, 12, 12), dtype=torch.float64, t_on=40 * b2.ms)
    stack.f_in = 400 * b2.Hz
    x = rng.random((2, 1, 12, 12))
    spikes_in = stack.poisson_input(x, torch.Generator().manual_seed(0))
    res = stack.simulate(spikes_in, record=True)
    return stack, spikes_in, res


def _brian2(stack, spikes_in):
    with devices.device_session("runtime"):
        b2.prefs.codegen.target = "numpy"
        return brian2_stack_spikes(stack, spikes_in.numpy().astype(bool))


def _assert_same_spikes(torch_spikes, brian2_spikes, passes):
    """Equal spike trains, stage by stage and pass by pass, each pass with some spikes."""
    for si, (fast, slow) in enumerate(zip(torch_spikes, brian2_spikes)):
        assert len(fast) == len(slow) == passes[si]
        for p, (a, b) in enumerate(zip(fast, slow)):
            a = a.numpy()
            assert a.sum() >= 3, f"stage {si} pass {p}: only {a.sum()} spikes, a weak test"
            diff = np.argwhere(a != b)
            assert diff.size == 0, f"stage {si} pass {p}: {len(diff)} spikes differ, first {diff[0]}"


def test_torch_extraction_equals_brian2_spikes(small_stack):
    stack, spikes_in, res = small_stack
    ref = _brian2(stack, spikes_in)
    _assert_same_spikes(res["spikes"], ref, passes=[1, 1, 2])
    # counts and pooled output are the recorded spikes
    assert torch.equal(res["counts"][0][0], res["spikes"][0][0].sum(0).to(res["counts"][0][0].dtype))


@pytest.fixture(scope="module")
def additive_stack():
    """Layer 1, a shared additive BackRes block (R=2), then two separate additive layers."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    l1 = _random_kernels(ConvSTDPLayer(3, 3, 1, pool=2, seed=0), rng)
    shared = BackResSTDPBlock(_random_kernels(ConvSTDPLayer(3, 3, 3, padding=1, pool=1, seed=1),
                                              rng, scale=30.0), R=2, form="additive")
    separate = BackResSTDPBlock(
        [_random_kernels(ConvSTDPLayer(3, 3, 3, padding=1, pool=1, seed=2 + i, name=f"d{i}"),
                         rng, scale=30.0) for i in range(2)], form="additive")
    stack = SpikingConvStack([l1, shared, separate], (1, 12, 12), dtype=torch.float64,
                             t_on=40 * b2.ms)
    stack.f_in = 400 * b2.Hz
    spikes_in = stack.poisson_input(rng.random((2, 1, 12, 12)), torch.Generator().manual_seed(1))
    return stack, spikes_in, stack.simulate(spikes_in, record=True)


def test_additive_backres_and_separate_layers_equal_brian2_spikes(additive_stack):
    stack, spikes_in, res = additive_stack
    ref = _brian2(stack, spikes_in)
    _assert_same_spikes(res["spikes"], ref, passes=[1, 2, 2])


def test_additive_pass_receives_the_block_input(additive_stack):
    """The same kernels in re-entry form give pass 2 less input, hence fewer spikes."""
    stack, spikes_in, res = additive_stack
    shared = stack.stages[1]
    reentry = SpikingConvStack([stack.stages[0], BackResSTDPBlock(shared.layer, 2)],
                               (1, 12, 12), dtype=torch.float64, t_on=40 * b2.ms)
    out = reentry.simulate(spikes_in, record=True)
    assert torch.equal(out["spikes"][1][0], res["spikes"][1][0])       # pass 1: same input
    assert res["spikes"][1][1].sum() > out["spikes"][1][1].sum()


def test_extraction_comparison_can_fail(small_stack):
    """Swapping two layer-1 kernels in Brian2 changes spikes: the comparison detects it."""
    stack, spikes_in, res = small_stack
    l1 = stack.stages[0]
    k, th = l1.kernels, l1.theta
    try:
        l1.set_kernels(k[[1, 0, 2, 3]], th)
        ref = _brian2(stack, spikes_in)
    finally:
        l1.set_kernels(k, th)
    assert (res["spikes"][0][0].numpy() != ref[0][0]).any()


def test_lateral_inhibition_is_per_position(small_stack):
    """The winner of a position inhibits the other maps there, and only there: without the
    inh->exc weight layer 1 fires more, and spikes at distant positions change nothing."""
    stack, spikes_in, res = small_stack
    l1 = stack.stages[0]
    saved = l1.w_inh_exc
    try:
        l1.w_inh_exc = 0.0
        free = stack.simulate(spikes_in, upto=1)["counts"][0][0]
    finally:
        l1.w_inh_exc = saved
    with_inh = res["counts"][0][0]
    assert float(free.sum()) > 1.2 * float(with_inh.sum())
    # positions where no map fires are unaffected by the inhibition of other positions
    silent = free.sum(1) == 0
    assert torch.all(with_inh.sum(1)[silent] == 0)
    # input in two corners whose receptive fields do not overlap: corner B's spikes leave
    # the spikes over corner A exactly as they are without B (global inhibition would not)
    a, b = np.zeros((1, 1, 12, 12)), np.zeros((1, 1, 12, 12))
    a[..., :4, :4], b[..., 8:, 8:] = 1.0, 1.0
    spikes_a = stack.poisson_input(a, torch.Generator().manual_seed(1))
    spikes_b = stack.poisson_input(b, torch.Generator().manual_seed(2))
    only_a = stack.simulate(spikes_a, upto=1)["counts"][0][0]
    both = stack.simulate(torch.maximum(spikes_a, spikes_b), upto=1)["counts"][0][0]
    assert float(only_a[..., :4, :4].sum()) > 0 and float(both[..., 6:, 6:].sum()) > 0
    assert torch.equal(both[..., :4, :4], only_a[..., :4, :4])


def test_extraction_without_lateral_inhibition_equals_brian2_and_fires_more(small_stack):
    """Extraction option lateral_inhibition=False: the same stack without the inh->exc
    synapses gives the same spikes on both engines, and layer 1 fires more than with it."""
    stack, spikes_in, res = small_stack
    free = SpikingConvStack(stack.stages, stack.input_shape, dtype=torch.float64,
                            t_on=stack.t_on, lateral_inhibition=False)
    out = free.simulate(spikes_in, record=True)
    ref = _brian2(free, spikes_in)
    for si, (fast, slow) in enumerate(zip(out["spikes"], ref)):
        for p, (a, b) in enumerate(zip(fast, slow)):
            a = a.numpy()
            assert a.sum() >= 3, f"stage {si} pass {p}: only {a.sum()} spikes, a weak test"
            assert (a == b).all(), f"stage {si} pass {p}: {(a != b).sum()} spikes differ"
    assert float(out["counts"][0][0].sum()) > 1.2 * float(res["counts"][0][0].sum())
    assert free.config()["lateral_inhibition"] is False


# -- learning (patches) and stacking ----------------------------------------------------------

def test_layer_learns_on_patches_and_second_layer_on_first_layer_spikes(mnist_small):
    x = mnist_small[0][:40, None]
    l1 = ConvSTDPLayer(4, 5, 1, pool=2, n_patches=60, device="runtime", chunk_size=60,
                       t_on=40 * b2.ms, t_off=20 * b2.ms, seed=0, f_max=500 * b2.Hz)
    l2 = ConvSTDPLayer(4, 3, 4, pool=1, n_patches=30, device="runtime", chunk_size=30,
                       t_on=40 * b2.ms, t_off=20 * b2.ms, seed=1, min_spikes=0, w_per_input=0.9)
    stack = SpikingConvStack([l1, l2], (1, 28, 28), batch_size=20)
    k1_before, k2_before = l1.kernels, l2.kernels
    stack.fit(x)
    assert l1.patches_presented == 60 and l2.patches_presented == 30
    assert not np.allclose(l1.kernels, k1_before)
    assert not np.allclose(l2.kernels, k2_before)         # layer 2 fired and learned
    # normalisation: every kernel sums to w_target at the start of each patch; the last
    # patch's STDP moves the sums by a few per cent at most
    assert np.all(l1.kernels >= 0) and np.all(l1.kernels <= 1.0 + 1e-9)
    for layer in (l1, l2):
        sums = layer.kernels.reshape(layer.n_kernels, -1).sum(axis=1)
        np.testing.assert_allclose(sums, layer.target_sum, rtol=0.05)
    assert float(l2.f_max) == pytest.approx(1 / 0.5e-3)        # fed by spikes: spikes per step
    rates = stack.stage_input_rates(x[:4], 1)
    assert rates.shape == (4, 4, 12, 12) and rates.max() <= 1.0 and rates.sum() > 0
    feats = stack.transform(x[:4])
    assert feats.shape == (4, 4 * 10 * 10)
    out = stack.run(x[:4])
    assert out["stage_outputs"][0].shape == (4, 4, 12, 12)
    np.testing.assert_array_equal(out["stage_outputs"][-1], out["output"])


# -- readouts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "mlp", "spiking"])
def test_readout_reaches_100_percent_on_separable_features(kind):
    rng = np.random.default_rng(0)
    n, d, classes = 300, 20, 4
    y = rng.integers(0, classes, n)
    centers = rng.random((classes, d)) * 20
    counts = np.maximum(0, centers[y] + rng.normal(0, 1.0, (n, d)))
    z = FeatureScaler().fit_transform(counts)
    clf = make_readout(kind, n_classes=classes, hidden=32, T=4, epochs=40, lr=1e-2, seed=0)
    clf.fit(z[:200], y[:200])
    assert clf.score(z[:200], y[:200]) == 1.0
    assert clf.score(z[200:], y[200:]) == 1.0


def test_conv_readout_reads_feature_maps_and_separates_them():
    rng = np.random.default_rng(0)
    n, classes, channels = 240, 3, 4
    y = rng.integers(0, classes, n)
    maps = rng.random((n, classes, 6, 6)) * 0.2
    maps[np.arange(n), y, 2:4, 2:4] += 0.8                 # class c: a bump in map c
    clf = make_readout("conv", n_classes=classes, channels=channels, epochs=40, lr=1e-2, seed=0)
    clf.fit(maps[:160], y[:160])
    assert clf.score(maps[:160], y[:160]) == 1.0
    assert clf.score(maps[160:], y[160:]) == 1.0
    # 3x3 conv (weights + bias), 2x2 average pooling of the 6x6 maps, linear output layer
    n_params = sum(int(p.numel()) for p in clf.network_.parameters())
    assert n_params == channels * classes * 9 + channels + channels * 3 * 3 * classes + classes


def test_stochmax_readout_is_selectable():
    clf = make_readout("linear", loss="stochmax", epochs=1)
    assert clf.loss == "stochmax"


# -- errors -----------------------------------------------------------------------------------

def test_bad_input_gives_clear_errors():
    with pytest.raises(ConvSTDPError, match="larger than the input"):
        ConvSTDPLayer(4, 9, 1).output_shape((1, 8, 8))
    with pytest.raises(ConvSTDPError, match="larger than the input"):
        SpikingConvStack([ConvSTDPLayer(4, 30, 1)], (1, 28, 28)).output_shape
    with pytest.raises(ConvSTDPError, match="n_kernels must be an integer >= 1"):
        ConvSTDPLayer(0, 5, 1).output_shape((1, 8, 8))
    with pytest.raises(ConvSTDPError, match="mismatched channels"):
        SpikingConvStack([ConvSTDPLayer(4, 5, 1), ConvSTDPLayer(4, 3, 2)], (1, 28, 28)).shapes
    with pytest.raises(ConvSTDPError, match="mismatched channels"):
        ConvSTDPLayer(4, 5, 3).fit(np.zeros((2, 1, 28, 28)))
    with pytest.raises(ConvSTDPError, match=r"expected values in \[0, 1\]"):
        SpikingConvStack([ConvSTDPLayer(4, 5, 1)], (1, 28, 28)).transform(-np.ones((1, 1, 28, 28)))
    with pytest.raises(ConvSTDPError, match="pool_kind"):
        ConvSTDPLayer(4, 5, 1, pool_kind="median").fit(np.zeros((1, 1, 28, 28)))
    with pytest.raises(ConvSTDPError, match="readout"):
        make_readout("svm")
    with pytest.raises(ConvSTDPError, match="conv readout"):
        make_readout("linear", augment="shift")     # flat features have no maps to shift
    assert make_readout("conv", augment="shift").augment == "shift"
    assert conv_output_shape((1, 28, 28), 5, 1, 0, 2) == (24, 24)


# -- protocols (smoke scale) --------------------------------------------------------------------

def _run_protocol(name, out, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "brainsnn", "run", name, "--scale", "smoke", "--out",
           str(out), "--torch-device", "cpu", "--quiet", *extra]
    subprocess.run(cmd, check=True, env=env, timeout=600, cwd=out.parent)
    from brainsnn.io.results import RunResults
    return RunResults.load(out)


@pytest.mark.slow
def test_conv_stdp_protocol_smoke(tmp_path, data_dir):
    rec = _run_protocol("conv_stdp", tmp_path / "cs.h5")
    assert rec.is_complete
    assert rec.get("layers/conv1/kernels").shape == (8, 1, 5, 5)
    assert rec.get("layers/conv1/spike_rate") > 0
    assert rec.get("metrics/test_accuracy") > 0.3          # 10 classes: chance is 0.1
    assert rec.get("energy/total") > 0
    assert rec.get("timings/extract_images_per_second") > 0
    import h5py
    with h5py.File(tmp_path / "cs.h5") as f:  # the trained readout is stored with the run
        params = [f["readouts/linear"][k][()] for k in f["readouts/linear"]]
    assert params and all(np.all(np.isfinite(p)) for p in params)


@pytest.mark.slow
def test_bench_extraction_smoke_times_each_thread_count(tmp_path, data_dir):
    out = tmp_path / "bench.h5"
    subprocess.run([sys.executable, "-m", "brainsnn", "run", "bench_extraction", "--scale",
                    "smoke", "--threads", "2", "--out", str(out)], check=True, timeout=600,
                   cwd=tmp_path)
    from brainsnn.io.results import RunResults
    rec = RunResults.load(out)
    assert rec.get("results/identical_counts")
    assert rec.get("results/speedup_1t") == 1.0
    assert rec.get("results/speedup_2t") == pytest.approx(
        rec.get("results/images_per_s_2t") / rec.get("results/images_per_s_1t"))


@pytest.mark.slow
def test_backres_stdp_protocol_smoke(tmp_path, data_dir):
    rec = _run_protocol("backres_stdp", tmp_path / "br.h5")
    params = list(rec.get("metrics/n_parameters"))
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in rec.get("metrics/configs")]
    assert names == ["backres_R1", "backres_R2", "separate_D2"]
    assert params[0] == params[1] and params[2] > params[1]


@pytest.mark.slow
def test_conv_stdp_protocol_whitened_cifar_smoke(tmp_path, data_dir):
    rec = _run_protocol("conv_stdp", tmp_path / "cw.h5",
                        ["--dataset", "cifar10", "--preprocess", "whiten"])
    assert rec.is_complete
    # ON and OFF channel of every colour: the first layer's kernels see 6 input channels
    assert rec.get("layers/conv1/kernels").shape == (8, 6, 5, 5)
    assert rec.get("preprocessing/filters").shape == (3, 3, 9, 9)
    assert rec.get("preprocessing/scale") > 0
    assert rec.get("layers/conv1/spike_rate") > 0


# -- the protocol's features cache and readout options ----------------------------------------

def _small_stack_and_images(seed):
    """A one-layer stack (4 random 3x3 kernels, 12x12 input, batches of 2) and 5 images."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    layer = _random_kernels(ConvSTDPLayer(4, 3, 1, pool=2, seed=0), rng)
    stack = SpikingConvStack([layer], (1, 12, 12), t_on=20 * b2.ms, batch_size=2)
    return layer, stack, rng.random((5, 1, 12, 12))


def test_features_cache_returns_the_stored_counts_and_is_keyed_by_stack_and_images(
        load_protocol, tmp_path):
    cp = load_protocol("conv_stdp")
    layer, stack, x = _small_stack_and_images(seed=3)
    res, seconds, cached = pipeline.cached_run(stack, x, tmp_path)
    assert not cached and res["output"].sum() > 0
    assert [p.name for p in tmp_path.iterdir()] == [f"features_{pipeline.features_key(stack, x)}.npz"]

    def no_simulation(*a, **k):
        raise AssertionError("simulated although the counts are cached")

    run = stack.run
    stack.run = no_simulation
    again, seconds_again, cached = pipeline.cached_run(stack, x, tmp_path)
    assert cached and seconds_again == pytest.approx(seconds)
    np.testing.assert_array_equal(again["output"], res["output"])
    np.testing.assert_array_equal(again["stage_outputs"][0], res["stage_outputs"][0])
    assert again["rates"] == res["rates"]
    stack.run = run
    # other images, other thresholds or another seed: another key, simulated again
    assert pipeline.cached_run(stack, x[:4], tmp_path)[2] is False
    layer.set_kernels(layer.kernels, theta=layer.theta * 1.5)
    assert pipeline.cached_run(stack, x, tmp_path)[2] is False
    stack.seed += 1
    assert pipeline.cached_run(stack, x, tmp_path)[2] is False
    assert len(list(tmp_path.glob("features_*.npz"))) == 4
    assert not list(tmp_path.glob("*.tmp*"))                 # written whole, then renamed
    assert pipeline.cached_run(stack, x, None)[2] is False         # no cache: always simulated


def test_features_cache_entry_that_is_torn_or_of_other_shapes_is_simulated_again(
        tmp_path, caplog):
    """A cache entry that cannot be read, or holds counts of other shapes, is never returned
    as features: the images are simulated again and the entry replaced."""
    layer, stack, x = _small_stack_and_images(seed=3)
    res = pipeline.cached_run(stack, x, tmp_path)[0]
    path = tmp_path / f"features_{pipeline.features_key(stack, x)}.npz"
    path.write_bytes(path.read_bytes()[:100])                     # torn
    again, _, cached = pipeline.cached_run(stack, x, tmp_path)
    assert not cached and "cannot be read" in caplog.text
    np.testing.assert_array_equal(again["output"], res["output"])
    assert pipeline.cached_run(stack, x, tmp_path)[2] is True     # replaced by a good entry
    np.savez(path, n_stages=1, stage_output_0=res["output"][:3],  # 3 images' counts, not 5
             meta='{"rates": [], "seconds": 1.0}')
    again, _, cached = pipeline.cached_run(stack, x, tmp_path)
    assert not cached and "expected [(5, 4, 5, 5)]" in caplog.text
    np.testing.assert_array_equal(again["output"], res["output"])


@pytest.mark.parametrize("argv, message", [
    (["--hidden", "0"], "--hidden"),
    (["--label-smoothing", "1.0"], "--label-smoothing"),
    (["--loss", "stochmax", "--label-smoothing", "0.1"], "softmax loss only"),
    (["--readout", "cnn"], "unknown readout 'cnn'"),
    (["--readout", "conv", "--kernels", "4,4"], "--features last"),
    (["--readout-channels", "0"], "--readout-channels"),
])
def test_conv_stdp_readout_options_give_clear_errors(load_protocol, argv, message, capsys,
                                                    tmp_path):
    cp = load_protocol("conv_stdp")
    with pytest.raises(SystemExit) as stop:           # before any data is read
        cp.main(["--scale", "smoke", "--data", str(tmp_path / "none"), *argv])
    assert message in str(stop.value) + capsys.readouterr().err


def test_validation_images_are_extracted_with_the_training_images(load_protocol, tmp_path):
    """Training + validation counts equal those of one extraction of both (the cache entry a
    later run on all those training images reads)."""
    cp = load_protocol("conv_stdp")
    _, stack, x = _small_stack_and_images(seed=4)
    args = types.SimpleNamespace(features="all", feature_pool=1, quiet=True,
                                 features_cache=str(tmp_path))
    f_train, f_val, res_train, res_val, s_train, s_val = pipeline.extract_with_validation(
        args, stack, x[:3], x[3:])
    assert [p.name for p in tmp_path.iterdir()] == [f"features_{pipeline.features_key(stack, x)}.npz"]
    whole, res, _ = pipeline.extract(args, stack, x, "train")
    assert res["from_cache"]
    np.testing.assert_array_equal(f_train, whole[:3])
    np.testing.assert_array_equal(f_val, whole[3:])
    np.testing.assert_array_equal(res_val["output"], res["output"][3:])
    assert f_train.sum() > 0 and f_val.sum() > 0
    # extracted on their own, the validation images get other Poisson draws
    alone, _, _ = pipeline.extract(args, stack, x[3:], "validation")
    assert not np.array_equal(alone, f_val)


def test_conv_stdp_protocol_pixel_control_with_conv_readout(tmp_path, data_dir):
    rec = _run_protocol("conv_stdp", tmp_path / "px.h5",
                        ["--features", "pixels", "--readout", "conv,linear",
                         "--readout-channels", "4"])
    assert rec.is_complete
    assert rec.get("layers/conv1/kernels") is None        # no STDP stage learned or run
    assert rec.get("metrics/n_parameters_stdp") == 0
    assert rec.get("readouts/conv/ops.conv0.weight").shape == (4, 1, 3, 3)
    assert rec.get("readouts/linear/ops.linear0.weight").shape == (10, 784)
    assert rec.get("metrics/test_accuracy_conv") > 0.5      # 200 MNIST images; chance is 0.1
    assert rec.get("energy/total") > 0


@pytest.mark.parametrize("dataset, preprocess", [
    ("mnist", "none"), ("fashion_mnist", "whiten"), ("cifar10", "whiten")])
def test_conv_stdp_preprocessing_default_per_dataset(load_protocol, dataset, preprocess):
    cp = load_protocol("conv_stdp")
    assert cp.parse_args(["--dataset", dataset]).preprocess == preprocess
    assert cp.parse_args(["--dataset", dataset, "--preprocess", "none"]).preprocess == "none"


@pytest.mark.slow
def test_conv_stdp_protocol_validation_hidden_and_features_cache(tmp_path, data_dir):
    extra = ["--validation", "60", "--readout", "linear,mlp", "--hidden", "16",
             "--label-smoothing", "0.1", "--features-cache", str(tmp_path / "cache")]
    rec = _run_protocol("conv_stdp", tmp_path / "v1.h5", extra)
    assert rec.get("metrics/test_accuracy") is None           # the test set is not touched
    acc = rec.get("metrics/validation_accuracy_mlp")
    assert 0.0 <= acc <= 1.0 and rec.attrs("metrics/validation_accuracy")["images"] == 60
    assert rec.get("readouts/mlp/ops.linear0.weight").shape[0] == 16
    assert rec.attrs("timings/extract_images_per_second")["from_features_cache"] == False  # noqa: E712
    again = _run_protocol("conv_stdp", tmp_path / "v2.h5", extra)
    assert again.attrs("timings/extract_images_per_second")["from_features_cache"] == True  # noqa: E712
    assert again.get("metrics/validation_accuracy_mlp") == acc
    # the test run on all 260 images reads their counts (one entry) and adds the test set's
    test = _run_protocol("conv_stdp", tmp_path / "t.h5",
                         ["--train-images", "260", "--features-cache", str(tmp_path / "cache")])
    assert test.attrs("timings/extract_images_per_second")["from_features_cache"] == True  # noqa: E712
    assert len(list((tmp_path / "cache").glob("features_*.npz"))) == 2


def test_mirrored_training_images_are_preprocessed_mirrors_with_the_same_labels(load_protocol):
    from brainsnn.stdp.preprocessing import make_preprocessor

    cp = load_protocol("conv_stdp")
    rng = np.random.default_rng(7)
    raw = rng.random((6, 3, 12, 12)).astype(np.float32)
    y = np.arange(6)
    x2, y2 = pipeline.add_mirrored(raw, y, raw, None)
    assert x2.shape == (12, 3, 12, 12)
    np.testing.assert_array_equal(y2, np.r_[y, y])
    np.testing.assert_array_equal(x2[:6], raw)
    np.testing.assert_array_equal(x2[6 + 2, :, 4, 0], raw[2, :, 4, 11])   # column j <-> 11 - j
    # with whitening, the mirror is taken before the (unmirrored-fitted) filters
    pre = make_preprocessor("whiten", seed=0).fit(raw)
    x = pre.transform(raw)
    x2, _ = pipeline.add_mirrored(raw, y, x, pre)
    assert x2.shape == (12, 6, 12, 12) and x2.dtype == x.dtype
    np.testing.assert_array_equal(x2[:6], x)
    np.testing.assert_allclose(x2[6:], pre.transform(raw[..., ::-1].copy()), atol=1e-6)
    assert not np.allclose(x2[6:], x)


def test_readout_augment_reaches_the_conv_readout_only(load_protocol):
    cp = load_protocol("conv_stdp")
    args = cp.parse_args(["--scale", "smoke", "--readout", "conv,linear", "--readout-augment",
                          "shift"])
    assert pipeline.readout_augment(args, "conv") == "shift"
    assert pipeline.readout_augment(args, "linear") is None
    assert pipeline.readout_augment(cp.parse_args([]), "conv") is None


@pytest.mark.slow
def test_conv_stdp_protocol_mirror_doubles_only_the_training_images(tmp_path, data_dir):
    rec = _run_protocol("conv_stdp", tmp_path / "m.h5",
                        ["--mirror", "--validation", "50", "--train-images", "150"])
    assert rec.attrs("metrics/train_accuracy")["images"] == 300
    assert rec.attrs("metrics/validation_accuracy")["images"] == 50
    assert rec.config["mirror"] is True


# -- the settings of the small and full scales, at tiny size ----------------------------------

def test_cpp_standalone_layer_learns_as_on_runtime_and_float32_extraction_keeps_the_counts(
        mnist_small, tmp_cache):
    """The small/full scales learn kernels on cpp_standalone and extract in float32: at tiny
    size, cpp_standalone learns the same kernels as runtime (Brian2 draws the same random
    numbers on both); float32 extraction is deterministic and, its Poisson draws being
    another stream, agrees with float64 in distribution (mean count per feature)."""
    x = mnist_small[0][:12, None]
    kw = dict(pool=2, n_patches=24, chunk_size=24, t_on=30 * b2.ms, t_off=10 * b2.ms, seed=3,
              f_max=500 * b2.Hz)
    runtime = ConvSTDPLayer(3, 5, 1, device="runtime", **kw)
    cpp = ConvSTDPLayer(3, 5, 1, device="cpp_standalone",
                        directory=str(tmp_cache / "conv_cpp"), **kw)
    before = runtime.kernels.copy()
    SpikingConvStack([runtime], (1, 28, 28)).fit(x)
    SpikingConvStack([cpp], (1, 28, 28)).fit(x)
    assert not np.allclose(runtime.kernels, before)                  # it learned something
    np.testing.assert_allclose(cpp.kernels, runtime.kernels, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(cpp.theta, runtime.theta)
    def extract(dtype):
        return SpikingConvStack([cpp], (1, 28, 28), dtype=dtype, seed=1).transform(x)

    f32, f64 = extract(torch.float32), extract(torch.float64)
    np.testing.assert_array_equal(extract(torch.float32), f32)
    assert f32.sum() > 0 and f32.mean() == pytest.approx(f64.mean(), rel=0.1)
