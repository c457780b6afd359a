"""The specialised frozen conv WTA step gives the generic torch-engine step's spikes, bit for bit;
it is refused where its shortcuts do not hold; chunked, deferred-pooling extraction changes no
count; the roofline byte count by hand."""
import brian2 as b2
import numpy as np
import pytest
import torch

import brainsnn.stdp.stack as stack_module
from brainsnn.engine.neuron import TorchNeuron, _torch_timestep
from brainsnn.models import DIEHL_COOK_INHIBITORY
from brainsnn.stdp.layer import CONV_EXCITATORY, ConvSTDPLayer
from brainsnn.stdp.stack import SpikingConvStack, _TorchConvWTA
from brainsnn.stdp.frozen import (FrozenConvWTA, frozen_wta, inhibition_follows_partner,
                                  refractory_steps, stream_bytes_per_image)


def _layer(rng, n_kernels=8, in_channels=1, scale=3.0, **kw):
    layer = ConvSTDPLayer(n_kernels, 5, in_channels, **kw)
    k = rng.random(layer.kernels.shape)
    k *= layer.target_sum / k.reshape(len(k), -1).sum(1)[:, None, None, None]
    layer.set_kernels(k * scale, theta=rng.uniform(0.018, 0.022, n_kernels))
    return layer


def _images(rng, n, shape):
    return (rng.random((n, *shape)) * (rng.random((n, *shape)) < 0.4)).astype(np.float32)


def _generic_run(stack, x):
    stack.set_params(frozen_step=False)
    try:
        out = stack.run(x)
        assert isinstance(stack._modules(1)[0][0], _TorchConvWTA)
        return out
    finally:
        stack.set_params(frozen_step=True)


def test_refractory_counter_is_brian2s_float64_test_for_every_pair_of_steps():
    """timestep(t - lastspike, dt) >= R in float64 (Brian2) == t_step - last_step >= R, for
    all steps 0..3000 and last spikes before them (and the initial lastspike -1e4 s)."""
    neuron = TorchNeuron(CONV_EXCITATORY, dt=0.5 * b2.ms)
    R, dt = refractory_steps(neuron)
    assert (R, dt) == (10, 0.0005)                       # 5 ms / 0.5 ms
    n = torch.arange(3001, dtype=torch.int64)
    t = n.to(torch.float64) * dt
    for m in range(0, 3001, 7):
        brian = _torch_timestep(t[m:] - t[m], dt) >= R
        assert torch.equal(brian, (n[m:] - m) >= R)
    assert bool((_torch_timestep(t - (-1e4), dt) >= R).all())   # never refractory at start


@pytest.mark.parametrize("inhibition", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frozen_step_counts_are_the_generic_steps_bit_for_bit(inhibition, dtype):
    rng = np.random.default_rng(3)
    layer = _layer(rng, 8, pool=2)
    stack = SpikingConvStack([layer], (1, 16, 16), t_on=40 * b2.ms, f_in=1000 * b2.Hz,
                             batch_size=24, seed=4, dtype=dtype, lateral_inhibition=inhibition)
    x = _images(rng, 40, (1, 16, 16))
    fast = stack.run(x)
    assert isinstance(stack._modules(1)[0][0], FrozenConvWTA)
    generic = _generic_run(stack, x)
    counts = fast["output"].sum()
    assert counts > 100                                  # the layer fires: spikes to compare
    np.testing.assert_array_equal(fast["output"], generic["output"])
    assert fast["rates"] == generic["rates"]


def test_two_stage_stack_with_channels_padding_and_stride_is_the_generic_one():
    """Several input channels, padding and stride (layer 2 fed by layer 1's pooled spikes)."""
    rng = np.random.default_rng(5)
    l1 = _layer(rng, 6, 2, pool=2, padding=1)
    l2 = _layer(rng, 5, 6, pool=1, stride=2, scale=12.0)
    stack = SpikingConvStack([l1, l2], (2, 14, 14), t_on=40 * b2.ms, f_in=1000 * b2.Hz,
                             batch_size=16, seed=1)
    x = _images(rng, 16, (2, 14, 14))
    fast = stack.run(x)
    generic = _generic_run(stack, x)
    assert all(c.sum() > 0 for c in fast["stage_outputs"])
    for a, b in zip(fast["stage_outputs"], generic["stage_outputs"]):
        np.testing.assert_array_equal(a, b)


def test_comparison_with_the_generic_step_can_fail(monkeypatch):
    """A frozen step with another inh->exc weight baked in gives other counts."""
    rng = np.random.default_rng(3)
    layer = _layer(rng, 8, pool=2)
    stack = SpikingConvStack([layer], (1, 16, 16), t_on=40 * b2.ms, f_in=1000 * b2.Hz, seed=4)
    x = _images(rng, 16, (1, 16, 16))
    generic = _generic_run(stack, x)["output"]
    real = stack_module.frozen_wta

    def weaker(lay, *a, **k):
        saved = lay.w_inh_exc
        lay.w_inh_exc = saved / 4
        try:
            return real(lay, *a, **k)
        finally:
            lay.w_inh_exc = saved

    with monkeypatch.context() as m:
        m.setattr(stack_module, "frozen_wta", weaker)
        stack.__dict__.pop("_module_cache", None)
        changed = stack.run(x)["output"]
    assert changed.sum() > generic.sum()


def test_last_stage_pooled_once_at_the_end_equals_pooling_every_step():
    """Stage 1 of a two-stage stack is pooled at every step (it feeds stage 2); run alone it
    is the last stage, pooled once from its counts: the same numbers."""
    rng = np.random.default_rng(7)
    l1 = _layer(rng, 6, pool=2)
    l2 = _layer(rng, 4, 6, pool=2, scale=12.0)
    stack = SpikingConvStack([l1, l2], (1, 16, 16), t_on=30 * b2.ms, f_in=1000 * b2.Hz, seed=2)
    spikes = stack.poisson_input(_images(rng, 8, (1, 16, 16)), torch.Generator().manual_seed(0))
    both = stack.simulate(spikes)["stage_outputs"][0]
    alone = stack.simulate(spikes, upto=1)["output"]
    assert float(alone.sum()) > 0 and torch.equal(both, alone)
    assert torch.equal(alone * 4, torch.round(alone * 4))          # quarters: exact


def test_chunked_extraction_gives_the_counts_of_one_batch(monkeypatch):
    rng = np.random.default_rng(9)
    stack = SpikingConvStack([_layer(rng, 8, pool=2)], (1, 16, 16), t_on=30 * b2.ms,
                             f_in=1000 * b2.Hz, batch_size=40, seed=3)
    x = _images(rng, 40, (1, 16, 16))
    monkeypatch.setattr(stack_module, "CHUNK_IMAGES", 1000)
    whole = stack.run(x)
    monkeypatch.setattr(stack_module, "CHUNK_IMAGES", 3)
    chunked = stack.run(x)
    assert whole["output"].sum() > 0
    np.testing.assert_array_equal(whole["output"], chunked["output"])
    np.testing.assert_allclose(whole["rates"], chunked["rates"], rtol=1e-12)


def test_inhibitory_neuron_follows_its_partner_only_when_strongly_driven():
    inh = TorchNeuron(DIEHL_COOK_INHIBITORY, dt=0.5 * b2.ms)
    assert inhibition_follows_partner(inh, 10.4, 10, 100, torch.float32)
    # too weak a drive: the inhibitory neuron does not fire after every partner spike
    assert not inhibition_follows_partner(inh, 0.5, 10, 100, torch.float32)
    # partner spikes closer than the inhibitory refractory period: some are missed
    assert not inhibition_follows_partner(inh, 10.4, 2, 100, torch.float32)


def test_frozen_step_is_refused_where_its_shortcuts_do_not_hold(monkeypatch):
    rng = np.random.default_rng(0)
    assert frozen_wta(_layer(rng), torch.float32) is not None
    weak = _layer(rng, w_exc_inh=0.5)
    assert frozen_wta(weak, torch.float32) is None
    assert frozen_wta(weak, torch.float32, inhibition=False) is not None
    # theta that moves although plastic = 0: not a constant
    drifting = CONV_EXCITATORY.replace(equations=CONV_EXCITATORY.equations.replace(
        "-plastic * (theta - theta_rest) / tau_theta", "-(theta - theta_rest) / (1*ms)"))
    assert frozen_wta(_layer(rng, exc_model=drifting), torch.float32) is None
    # and the stack then runs the generic step
    stack = SpikingConvStack([_layer(rng, exc_model=drifting)], (1, 12, 12))
    assert isinstance(stack._modules(1)[0][0], _TorchConvWTA)


def test_stream_bytes_by_hand():
    layer = ConvSTDPLayer(32, 5, 1, pool=2)
    # 32 x 24 x 24 neurons x 60 B + 576 positions x 25 x 8 B + 784 pixels x 4 B, per step
    per_step = 18432 * 60 + 576 * 25 * 8 + 784 * 4
    assert stream_bytes_per_image(layer, (1, 28, 28), 100) == 100 * per_step == 122_425_600


@pytest.mark.slow
def test_compiled_frozen_step_on_a_32_kernel_layer_is_the_generic_one():
    """The bench's setting (torch.compile, 32 5x5 kernels, 28x28, 50 ms at 1 kHz), random
    kernels and images: the same counts as the generic compiled step."""
    rng = np.random.default_rng(11)
    layer = _layer(rng, 32, pool=2)
    stack = SpikingConvStack([layer], (1, 28, 28), t_on=50 * b2.ms, f_in=1000 * b2.Hz,
                             batch_size=64, seed=0, compile=True)
    x = _images(rng, 64, (1, 28, 28))
    fast = stack.run(x)["output"]
    assert fast.sum() > 1000
    np.testing.assert_array_equal(fast, _generic_run(stack, x)["output"])


def test_roofline_rate_by_hand_and_bad_input():
    from brainsnn.analysis.roofline import copy_bandwidth, roofline_rate
    from brainsnn.errors import BrainsnnError
    assert roofline_rate(120e6, 24e9) == pytest.approx(200.0)
    assert copy_bandwidth(mbytes=8, repeats=2) > 1e8             # any machine: > 0.1 GB/s
    with pytest.raises(BrainsnnError, match="positive bytes"):
        roofline_rate(0, 1e9)
    with pytest.raises(BrainsnnError, match="repeats >= 1"):
        copy_bandwidth(repeats=0)
