"""Networks: layer specs, hybrid interfaces, BackRes weight sharing, residual blocks, errors."""
import math

import numpy as np
import pytest
import torch

from brainsnn.models import IF, LIF
from brainsnn.engine.network import (BackRes, LayerSpec, Network, NetworkError, Residual, as_spec,
                               avgpool, backres_specs, conv, flatten, linear, residual_specs,
                               specs_from_config, specs_to_config, vgg_specs)


def _set_identity(net):
    with torch.no_grad():
        for op in net.ops.values():
            if hasattr(op, "weight"):
                op.weight.copy_(torch.eye(*op.weight.shape))


# -- hybrid interfaces, checked against hand-computed spike counts ----------------------------
def test_direct_input_drives_if_layer_with_constant_current():
    # IF neuron, reset by subtraction, constant input I in [0, theta]: floor(T I / theta) spikes.
    x = torch.tensor([[0.0, 0.13, 0.5, 0.74, 1.0]])
    T = 8
    net = Network([linear(5, "spiking"), linear(5, "artificial", name="output")], (5,), T=T,
                  neuron=IF)
    _set_identity(net)
    out = net(x)
    expected = torch.floor(T * x + 1e-6) / T   # rate handed to the artificial readout
    assert torch.allclose(out, expected, atol=1e-6)


def test_artificial_to_spiking_and_membrane_readout():
    # artificial (ReLU) -> spiking (IF, theta 0.5) -> membrane readout: logits = rate (W = I).
    x = torch.tensor([[-0.3, 0.12, 0.27, 0.44]])
    T = 10
    net = Network([linear(4, "artificial"), linear(4, "spiking"),
                   linear(4, "spiking", name="output")], (4,), T=T, neuron=IF,
                  thresholds=[0.5])
    _set_identity(net)
    expected = torch.floor(T * torch.relu(x) / 0.5 + 1e-6) / T
    assert torch.allclose(net(x), expected, atol=1e-6)
    assert net.thresholds() == {"linear1": 0.5}


def test_lif_spikes_match_hand_computed_train():
    # LIF with lambda = exp(-1/20), reset to zero, constant input 0.3: step by step by hand.
    lam = math.exp(-1 / 20)
    v, count = 0.0, 0
    for _ in range(12):
        v = lam * v + 0.3
        if v >= 1.0:
            count += 1
            v = 0.0
    net = Network([linear(1, "spiking"), linear(1, "artificial", name="output")], (1,), T=12,
                  neuron=LIF)
    _set_identity(net)
    assert float(net(torch.tensor([[0.3]])).detach()) == pytest.approx(count / 12)
    assert count == 3


def test_layerwise_time_loop_equals_stepwise_loop():
    torch.manual_seed(0)
    net = Network([conv(4, "spiking"), avgpool(2), flatten(), linear(6, "spiking"),
                   linear(3, "spiking", name="output")], (1, 6, 6), T=5)
    x = torch.rand(2, 1, 6, 6)
    out = net(x)
    # the same network, one time step at a time through every layer
    names = net.spiking_layer_names()
    states = {}
    acc = 0
    with torch.no_grad():
        for t in range(5):
            h = net.ops["conv0"](x)
            n0 = net.neurons[names[0]]
            states.setdefault(0, n0.initial_state(h.shape))
            s, states[0] = n0(states[0], h)
            h = net.ops["flatten2"](net.ops["avgpool1"](s))
            h = net.ops["linear3"](h)
            n1 = net.neurons[names[1]]
            states.setdefault(1, n1.initial_state(h.shape))
            s, states[1] = n1(states[1], h)
            acc = acc + net.ops["output"](s)
    assert torch.allclose(out, acc / 5, atol=1e-5)


def test_poisson_encoder_input_is_spikes():
    from brainsnn.engine.encoding import PoissonEncoder

    torch.manual_seed(1)
    enc = PoissonEncoder()
    x = torch.full((2000, 3), 0.25)
    s = enc(x, 8)
    assert s.shape == (8, 2000, 3)
    assert set(torch.unique(s).tolist()) <= {0.0, 1.0}
    assert abs(float(s.mean()) - 0.25) < 0.01
    net = Network([linear(3, "spiking"), linear(2, "artificial", name="output")], (3,), T=4,
                  encoder=enc)
    assert net(x[:5]).shape == (5, 2)


# -- BackRes ---------------------------------------------------------------------------------
def test_backres_parameter_count_is_one_pass():
    counts = [Network(backres_specs(8, 1, R=R), (1, 12, 12)).n_parameters() for R in (1, 2, 3)]
    assert counts[0] == counts[1] == counts[2]
    deep = Network(backres_specs(8, 1, R=3, shared=False), (1, 12, 12)).n_parameters()
    assert deep == counts[0] + 2 * 8 * 8 * 9
    net = Network(backres_specs(8, 1, R=3), (1, 12, 12))
    assert net.spiking_layer_names() == ["stem", "conv2_pass1", "conv2_pass2", "conv2_pass3"]


def _copy_shared_into_deep(shared, deep):
    with torch.no_grad():
        for name, op in deep.ops.items():
            if hasattr(op, "weight"):
                block = [n for n, o in shared.ops.items()
                         if hasattr(o, "weight") and n not in ("stem", "output")][0]
                src = shared.ops[name] if name in ("stem", "output") else shared.ops[block]
                op.weight.copy_(src.weight)


@pytest.mark.parametrize("form", ["reentry", "additive"])
def test_backres_shared_weights_receive_summed_gradient(form):
    torch.manual_seed(0)
    R = 3
    shared = Network(backres_specs(4, 1, R=R, form=form, stem_pool=False), (1, 6, 6), T=4)
    specs = backres_specs(4, 1, R=R, shared=False, stem_pool=False)
    deep = Network(specs, (1, 6, 6), T=4)
    _copy_shared_into_deep(shared, deep)
    x = torch.rand(3, 1, 6, 6) * 1.5
    if form == "additive":
        # the unrolled control of the additive form: x re-added before passes 2..R
        def deep_forward(net, x):
            from brainsnn.engine.network import Activity
            stem = net._layer(net.layers[0], Activity(x, False, True), 4)
            y = stem
            for k, ll in enumerate(net.layers[1:1 + R]):
                y = net._layer(ll, y + stem if k > 0 else y, 4)
            for ll in net.layers[1 + R:]:
                y = net._layer(ll, y, 4)
            return y.static()
        out_deep = deep_forward(deep, x)
    else:
        out_deep = deep(x)
    out_shared = shared(x)
    assert torch.allclose(out_shared, out_deep, atol=1e-5)
    out_shared.square().sum().backward()
    out_deep.square().sum().backward()
    copies = [n for n, op in deep.ops.items() if hasattr(op, "weight") and n not in ("stem", "output")]
    assert len(copies) == R
    summed = sum(deep.ops[n].weight.grad for n in copies)
    g = shared.ops["conv1"].weight.grad
    assert float(summed.abs().sum()) > 0
    assert torch.allclose(g, summed, atol=1e-5)
    # and not just one pass's gradient
    assert not torch.allclose(g, deep.ops[copies[0]].weight.grad, atol=1e-5)


def test_backres_forms_by_hand_on_relu_block():
    W = torch.tensor([[0.5, -1.0], [1.0, 0.25]])
    x = torch.tensor([[1.0, 2.0]])
    for form, expected in (("reentry", None), ("additive", None)):
        net = Network([BackRes((linear(2, "artificial"),), R=2, form=form),
                       linear(2, "artificial", name="output")], (2,), T=1)
        with torch.no_grad():
            net.ops["linear0"].weight.copy_(W)
            net.ops["output"].weight.copy_(torch.eye(2))
        y1 = torch.relu(x @ W.T)
        y2 = torch.relu((y1 if form == "reentry" else y1 + x) @ W.T)
        assert torch.allclose(net(x), y2)


def test_backres_r1_is_the_plain_network():
    torch.manual_seed(0)
    a = Network(backres_specs(4, 2, R=1), (1, 8, 8), T=3)
    b = Network(backres_specs(4, 2, R=1, shared=False), (1, 8, 8), T=3)
    b.ops.load_state_dict(a.ops.state_dict())
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(a(x), b(x))


def test_residual_block_by_hand():
    W1 = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    W2 = torch.tensor([[-2.0, 0.0], [1.0, 1.0]])
    net = Network([Residual((linear(2, "artificial"), linear(2, "artificial"))),
                   linear(2, "artificial", name="output")], (2,))
    with torch.no_grad():
        net.ops["linear0"].weight.copy_(W1)
        net.ops["linear1"].weight.copy_(W2)
        net.ops["output"].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.2]])
    expected = torch.relu(torch.relu(x @ W1.T) @ W2.T + x)
    assert torch.allclose(net(x), expected)
    spiking = Network(residual_specs(4, n_blocks=2), (1, 8, 8), T=2)
    assert spiking(torch.rand(2, 1, 8, 8)).shape == (2, 10)


# -- conversion helpers ---------------------------------------------------------------------
def test_with_neuron_keeps_weights_and_sets_thresholds():
    ann = Network(vgg_specs((4, "P"), fc=(8,), kinds="artificial"), (1, 8, 8))
    snn = ann.with_neuron(IF, kind="spiking", thresholds=[2.0, 3.0])
    assert snn.thresholds() == {"conv0": 2.0, "linear3": 3.0}
    for name, op in ann.ops.items():
        if hasattr(op, "weight"):
            assert torch.equal(op.weight, snn.ops[name].weight)
    assert all(ll.kind == "spiking" for ll in snn.layers if ll.spec.weighted)


def test_specs_round_trip_through_config():
    specs = backres_specs(8, 2, R=2, form="additive") + [Residual((conv(8), conv(8)))]
    cfg = specs_to_config(specs)
    assert specs_from_config(cfg) == [as_spec(s) for s in specs]
    import json
    json.dumps(cfg)


# -- errors ----------------------------------------------------------------------------------
def test_backres_block_that_changes_shape_is_refused():
    with pytest.raises(NetworkError, match="BackRes block.*output shape.*differs"):
        Network([conv(4), BackRes((conv(8),), R=2), flatten(), linear(10, name="output")],
                (1, 8, 8))
    with pytest.raises(NetworkError, match="BackRes block.*output shape"):
        Network([conv(4), BackRes((conv(4), avgpool(2)), R=2), flatten(), linear(10)], (1, 8, 8))


def test_unknown_kind_and_op_are_refused():
    with pytest.raises(NetworkError, match="unknown layer kind 'sometimes'.*spiking.*artificial"):
        conv(4, kind="sometimes")
    with pytest.raises(NetworkError, match="unknown layer op 'maxpool'"):
        LayerSpec("maxpool")
    with pytest.raises(NetworkError, match="kinds pattern"):
        vgg_specs((4,), fc=(), kinds="SX")


def test_bad_T_is_refused():
    net = Network([linear(3), linear(2, name="output")], (4,), T=2)
    with pytest.raises(NetworkError, match="T .* must be an integer >= 1, got 0"):
        Network([linear(3), linear(2)], (4,), T=0)
    with pytest.raises(NetworkError, match="integer >= 1"):
        net(torch.rand(1, 4), T=-1)
    with pytest.raises(NetworkError, match="integer >= 1"):
        net(torch.rand(1, 4), T=2.5)


def test_bad_input_and_geometry_messages():
    net = Network([linear(3), linear(2, name="output")], (4,), T=2)
    with pytest.raises(NetworkError, match="got one image"):
        net(torch.rand(4))
    with pytest.raises(NetworkError, match=r"expects \(batch, 4\)"):
        net(torch.rand(2, 5))
    with pytest.raises(NetworkError, match="flatten"):
        Network([conv(4), linear(10)], (1, 8, 8))
    with pytest.raises(NetworkError, match="rate.*spiking output"):
        Network([linear(3), linear(2, "artificial")], (4,), readout="rate")
    with pytest.raises(NetworkError, match="R >= 1"):
        BackRes((conv(4),), R=0)


def test_calibrate_rates_revives_silent_deep_layers():
    torch.manual_seed(0)
    net = Network(vgg_specs((4, 4, "P", 8), fc=(16,)), (1, 8, 8), T=4)
    with torch.no_grad():
        for op in net.ops.values():
            if hasattr(op, "weight"):
                op.weight.mul_(0.05)          # silent at initialisation
    x = torch.rand(16, 1, 8, 8)
    rates = net.calibrate_rates(x, target_rate=0.1)
    assert set(rates) == set(net.spiking_layer_names())
    for name, rate in rates.items():
        assert 0.1 / 1.5 <= rate <= 0.1 * 1.5, (name, rate)
    assert not net.record and net.stats["images"] == 0


@pytest.mark.parametrize("training", [False, True])
def test_calibrate_rates_scales_the_batchnorm_of_a_layer_with_batchnorm(training):
    """With batch-norm after the weights, the batch-norm scale is what calibration scales
    (scaling the weights would be normalised away in training mode); silent layers fire."""
    from brainsnn.engine.network import BatchNormOp, attach_batchnorm

    torch.manual_seed(0)
    net = attach_batchnorm(Network(vgg_specs((4, 4, "P", 8), fc=(16,)), (1, 8, 8), T=4))
    with torch.no_grad():
        for op in net.ops.values():
            if isinstance(op, BatchNormOp):
                op[1].weight.fill_(0.01)        # silent at initialisation
    weights = {k: op[0].weight.clone() for k, op in net.ops.items() if isinstance(op, BatchNormOp)}
    net.train(training)
    rates = net.calibrate_rates(torch.rand(16, 1, 8, 8), target_rate=0.1)
    assert set(rates) == set(net.spiking_layer_names())
    for name, rate in rates.items():
        assert 0.1 / 1.5 <= rate <= 0.1 * 1.5, (name, rate)
    for k, w in weights.items():
        assert torch.equal(net.ops[k][0].weight, w)
        assert not torch.allclose(net.ops[k][1].weight, torch.tensor(0.01))
    assert net.training == training


def test_parse_layer_list():
    from brainsnn.engine.network import NetworkError, parse_layer_list

    assert parse_layer_list("96, 96,P,192,p") == (96, 96, "P", 192, "P")
    assert parse_layer_list("512,256", pooling=False) == (512, 256)
    assert parse_layer_list("") == ()
    with pytest.raises(NetworkError, match=r"'x' is not a width.*'P' \(pooling\)"):
        parse_layer_list("64,x")
    with pytest.raises(NetworkError, match="'P' is not a width; expected comma-separated integers"):
        parse_layer_list("64,P", pooling=False)
    with pytest.raises(NetworkError, match="'0' is not a width"):
        parse_layer_list("0")
