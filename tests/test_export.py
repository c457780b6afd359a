"""Export of torch spiking networks to Brian2: same spikes as the torch engine."""
import brian2 as b2
import numpy as np
import pytest
import torch
from torch import nn

from brainsnn.engine import network as nw
from brainsnn.brian.export import (ExportError, linear_operator, record_torch_spikes, run_torch_layers,
                             to_brian2)
from brainsnn.models import IF, LIF
from brainsnn.engine.neuron import TorchNeuron

torch.set_num_threads(1)


def _numpy_runtime(plan, inputs, **kw):
    return plan.run(inputs, device="runtime", target="numpy", **kw)


@pytest.mark.parametrize("module,in_shape", [
    (nn.Conv2d(2, 3, 3, stride=1, padding=1), (2, 6, 6)),
    (nn.Conv2d(2, 3, 3, stride=2, padding=0, bias=False), (2, 7, 7)),
    (nn.Conv2d(1, 2, (3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)), (1, 8, 6)),
    (nn.AvgPool2d(2), (3, 6, 6)),
    (nn.AvgPool2d(3, stride=2, padding=1), (1, 7, 7)),
    (nn.Linear(12, 5), (12,)),
    (nn.Flatten(), (2, 3, 4)),
])
def test_linear_operator_equals_the_torch_module(module, in_shape):
    torch.manual_seed(0)
    module = module.double()
    x = torch.rand(4, *in_shape, dtype=torch.float64)
    mat, bias, out_shape = linear_operator(module, in_shape)
    with torch.no_grad():
        y = module(x)
    assert tuple(y.shape[1:]) == out_shape
    got = (mat @ x.reshape(4, -1).numpy().T).T + (0 if bias is None else bias)
    np.testing.assert_allclose(got, y.reshape(4, -1).numpy(), rtol=1e-12, atol=1e-12)


def test_same_step_propagation_through_a_chain():
    """One input spike at step 0 crosses three layers within step 0 (not one step per layer)."""
    layers = []
    for _ in range(3):
        lin = nn.Linear(1, 1, bias=False)
        nn.init.constant_(lin.weight, 1.5)
        layers += [lin, TorchNeuron(IF)]
    spikes = np.zeros((4, 1, 1))
    spikes[0, 0, 0] = 1
    out = _numpy_runtime(to_brian2(layers, input_shape=(1,)), spikes)
    for name in ("layer1", "layer2", "layer3"):
        assert out.spikes[name][:, 0, 0].tolist() == [True, False, False, False], name
    ref = run_torch_layers(layers, spikes)
    assert all(np.array_equal(ref[k], out.spikes[k]) for k in ref)


def _layer_list(seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    lin = nn.Linear(4 * 4 * 4, 20, bias=True)
    with torch.no_grad():
        conv.weight.normal_(0.15, 0.3)
        lin.weight.normal_(0.02, 0.15)
        lin.bias.uniform_(-0.02, 0.05)
    return [conv, TorchNeuron(IF, parameters={"theta": 0.7}), nn.AvgPool2d(2), nn.Flatten(),
            lin, TorchNeuron(LIF.with_parameters(tau_m=10 * b2.ms))]


def test_layer_list_export_reproduces_spikes():
    layers = _layer_list()
    rng = np.random.default_rng(1)
    spikes = (rng.random((200, 2, 1, 8, 8)) < 0.15).astype(float)
    ref = run_torch_layers(layers, spikes)
    out = _numpy_runtime(to_brian2(layers, input_shape=(1, 8, 8)), spikes)
    for name, r in ref.items():
        assert 0.01 < r.mean() < 0.6, f"{name}: rate {r.mean()} makes a weak test"
        assert np.array_equal(r, out.spikes[name]), f"{name}: {(r != out.spikes[name]).sum()} differ"
    assert out.spikes["layer1"].shape == (200, 2, 4, 8, 8)


def test_export_detects_a_changed_weight():
    """The comparison can fail: changing one weight in the export changes the spikes."""
    layers = _layer_list()
    rng = np.random.default_rng(1)
    spikes = (rng.random((200, 1, 1, 8, 8)) < 0.15).astype(float)
    ref = run_torch_layers(layers, spikes)
    plan = to_brian2(layers, input_shape=(1, 8, 8))
    plan.layers[1].inputs["layer1"] = plan.layers[1].inputs["layer1"] * 1.2
    out = _numpy_runtime(plan, spikes)
    assert np.array_equal(ref["layer1"], out.spikes["layer1"])
    assert not np.array_equal(ref["layer2"], out.spikes["layer2"])


class _FixedSpikes:
    """An encoder that returns given spikes (so that both engines see the same input)."""

    name = "fixed"

    def __init__(self, spikes):
        self.spikes = spikes

    def __call__(self, x, T):
        return self.spikes[:T].to(x.dtype)


def _network(encoder, neuron=IF):
    torch.manual_seed(3)
    specs = [nw.conv(4), nw.avgpool(2),
             nw.BackRes((nw.conv(4),), R=2, form="additive"),
             nw.Residual((nw.conv(4), nw.conv(4))),
             nw.flatten(), nw.linear(16), nw.linear(10, name="output")]
    net = nw.Network(specs, (1, 8, 8), T=40, neuron=neuron, encoder=encoder).double()
    return net


@pytest.mark.parametrize("coding", ["poisson", "direct"])
def test_network_export_reproduces_spikes_and_logits(coding):
    rng = np.random.default_rng(2)
    x = torch.as_tensor(rng.random((2, 1, 8, 8)))
    if coding == "poisson":
        spikes = (torch.rand(40, 2, 1, 8, 8, generator=torch.Generator().manual_seed(4)) < x)
        net, inputs, T = _network(_FixedSpikes(spikes.double())), spikes.double(), None
    else:
        net, inputs, T = _network(None), x, 40
    net.set_thresholds([0.8, 1.0, 1.2, 0.9, 1.1, 1.0])
    with record_torch_spikes(net) as rec, torch.no_grad():
        logits = net(x)
    plan = to_brian2(net)
    assert [l.name for l in plan.layers][-1] == "output" and plan.layers[-1].readout
    out = _numpy_runtime(plan, inputs, T=T)
    assert set(out.spikes) == set(rec)
    for name, steps in rec.items():
        ref = torch.stack(steps).bool().numpy()
        assert 0.002 < ref.mean() < 0.7, f"{name}: rate {ref.mean()} makes a weak test"
        assert np.array_equal(ref, out.spikes[name]), f"{name}: {(ref != out.spikes[name]).sum()} differ"
    np.testing.assert_allclose(out.logits, logits.numpy(), rtol=1e-9, atol=1e-12)


def test_export_errors_say_what_is_wrong():
    ann = nw.Network([nw.linear(5, kind="artificial"), nw.linear(2, name="output")], (4,))
    with pytest.raises(ExportError, match="artificial"):
        to_brian2(ann)
    with pytest.raises(ExportError, match="cannot export ReLU"):
        to_brian2([nn.ReLU(), TorchNeuron(IF)], input_shape=(3,))
    with pytest.raises(ExportError, match="needs input_shape"):
        to_brian2([nn.Linear(3, 2), TorchNeuron(IF)])
    plan = to_brian2([nn.Linear(3, 2), TorchNeuron(IF)], input_shape=(3,))
    with pytest.raises(ExportError, match=r"input spikes must have shape \(T, B, 3\)"):
        plan.run(np.zeros((5, 4)))
    with pytest.raises(ExportError, match="0/1"):
        plan.run(np.full((5, 1, 3), 0.5))


@pytest.mark.slow
def test_network_export_on_cpp_standalone(tmp_path):
    """One compile: a trained-style LIF conv network with Poisson input, 100 steps, batch 2."""
    rng = np.random.default_rng(5)
    x = torch.as_tensor(rng.random((2, 1, 8, 8)))
    spikes = (torch.rand(100, 2, 1, 8, 8, generator=torch.Generator().manual_seed(6)) < x).double()
    net = _network(_FixedSpikes(spikes), neuron=LIF)
    net.set_thresholds([0.5, 0.6, 0.6, 0.5, 0.5, 0.4])
    with record_torch_spikes(net) as rec, torch.no_grad():
        logits = net(x, T=100)
    out = to_brian2(net).run(spikes, device="cpp_standalone", directory=str(tmp_path / "cpp"))
    for name, steps in rec.items():
        ref = torch.stack(steps).bool().numpy()
        assert ref.any(), name
        assert np.array_equal(ref, out.spikes[name]), f"{name}: {(ref != out.spikes[name]).sum()} differ"
    np.testing.assert_allclose(out.logits, logits.numpy(), rtol=1e-9, atol=1e-12)


def test_converted_network_export_reproduces_spikes():
    """A ReLU ANN with biases converted to IF neurons (per-layer thresholds) exports exactly."""
    from brainsnn.learn.conversion import ANNToSNN
    torch.manual_seed(0)
    ann = nw.Network([nw.conv(4, kind="artificial", bias=True), nw.avgpool(2), nw.flatten(),
                      nw.linear(12, kind="artificial", bias=True),
                      nw.linear(10, kind="artificial", name="output")], (1, 8, 8), T=1)
    X = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)
    snn = ANNToSNN(ann, method="percentile").fit(X).snn_.double()
    plan = to_brian2(snn)
    assert [l.const is not None for l in plan.layers] == [True, True, False]   # biases
    x = torch.as_tensor(X[:3], dtype=torch.float64)
    with record_torch_spikes(snn) as rec, torch.no_grad():
        logits = snn(x, T=60)
    out = _numpy_runtime(plan, x, T=60)
    for name, steps in rec.items():
        ref = torch.stack(steps).bool().numpy()
        assert 0.01 < ref.mean() < 0.7, f"{name}: rate {ref.mean()} makes a weak test"
        assert np.array_equal(ref, out.spikes[name]), name
    np.testing.assert_allclose(out.logits, logits.numpy(), rtol=1e-9, atol=1e-12)


def test_model_with_its_own_w_exports():
    """AdEx names its adaptation current w: the export's weight must not clash with it."""
    from brainsnn.brian.export import synaptic_weight_name
    from brainsnn.catalogue import ADEX
    assert synaptic_weight_name(ADEX) == "w_syn"
    assert synaptic_weight_name(ADEX.extend(equations="w_syn : 1")) == "w_syn1"
    drive = ADEX.extend(parameters={"I_0": 0.5 * b2.nA}).substitute("I", "I = I_0 : amp")
    torch.manual_seed(0)
    lin = nn.Linear(10, 8, bias=False)
    with torch.no_grad():
        lin.weight.uniform_(0, 4e-3)                       # volts per input spike
    layers = [lin, TorchNeuron(drive, dt=0.1 * b2.ms)]
    spikes = (np.random.default_rng(0).random((200, 1, 10)) < 0.1).astype(float)
    ref = run_torch_layers(layers, spikes)["layer1"]
    out = _numpy_runtime(to_brian2(layers, input_shape=(10,)), spikes)
    assert ref.sum() > 5 and np.array_equal(ref, out.spikes["layer1"])
