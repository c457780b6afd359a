"""Energy: hand count for a two-layer network, sum over layers, ANN reference, BackRes passes."""
import pytest
import torch

from brainsnn.analysis.energy import (E_AC, E_MAC, EnergyError, ann_energy, energy_report, format_report,
                             layer_energy, measure)
from brainsnn.models import IF
from brainsnn.engine.network import Network, avgpool, backres_specs, conv, flatten, linear, vgg_specs


def _two_layer():
    net = Network([linear(3, "spiking"), linear(2, "spiking", name="output")], (4,), T=4,
                  neuron=IF)
    with torch.no_grad():
        net.ops["linear0"].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0],
                                                      [0.5, 0.5, 0, 0]]))
        net.ops["output"].weight.fill_(0.1)
    return net


def test_constants():
    assert E_MAC == pytest.approx(4.6e-12)
    assert E_AC == pytest.approx(0.9e-12)


def test_two_layer_network_matches_hand_count():
    net = _two_layer()
    x = torch.tensor([[0.5, 1.0, 0.0, 0.0]] * 2)       # two identical images
    rep = measure(net, x, T=4)
    # layer 1: direct (analog) input, current computed once: 4*3 MACs at E_MAC
    l1 = rep["layers"]["linear0"]
    assert l1["macs"] == 12 and l1["op_type"] == "MAC"
    assert l1["energy"] == pytest.approx(12 * 4.6e-12)
    # IF neurons, currents 0.5, 1.0, 0.75 for 4 steps: 2 + 4 + 3 = 9 spikes per image
    assert l1["spike_rate"] == pytest.approx(9 / (3 * 4))
    # layer 2: 3*2 MACs, 9 input spikes over 3 input neurons = 3 per neuron -> 18 ACs
    l2 = rep["layers"]["output"]
    assert l2["input_spikes_per_neuron"] == pytest.approx(3.0)
    assert l2["operations"] == pytest.approx(18)
    assert l2["energy"] == pytest.approx(18 * 0.9e-12)
    assert rep["total"] == pytest.approx(12 * 4.6e-12 + 18 * 0.9e-12)
    assert rep["ann_total"] == pytest.approx(18 * 4.6e-12)
    assert rep["ratio_to_ann"] == pytest.approx((55.2 + 16.2) / 82.8)
    per_step = measure(net, x, T=4, analog_input="per_step")
    assert per_step["layers"]["linear0"]["energy"] == pytest.approx(4 * 12 * 4.6e-12)
    assert "total" in format_report(rep)


#: MACs per image of vgg_specs((4, "P", 8, "P"), fc=(16,)) on 1x12x12, counted by hand:
#: 3x3 'same' convolutions, 2x2 pooling, 10 classes.
HAND_MACS = {"conv0": 4 * 12 * 12 * 9 * 1, "conv2": 8 * 6 * 6 * 9 * 4,
             "linear5": 8 * 3 * 3 * 16, "output": 16 * 10}


def test_energies_match_the_hand_counted_macs():
    """Per layer: an artificial layer or a layer fed analog values (the first one, or one
    after an artificial layer) costs its hand-counted MACs x E_MAC, a spiking layer fed
    spikes MACs x input spikes per neuron x E_AC; the ANN reference is the
    hand-counted total (16,864 MACs) x E_MAC."""
    torch.manual_seed(0)
    x = torch.rand(6, 1, 12, 12)
    assert sum(HAND_MACS.values()) == 16864
    for kinds in ("SSSS", "SASA", "AAAA", "ASAS"):
        net = Network(vgg_specs((4, "P", 8, "P"), fc=(16,), kinds=kinds), (1, 12, 12), T=3)
        rep = measure(net, x)
        assert {k: e["macs"] for k, e in rep["layers"].items()} == HAND_MACS
        assert rep["ann_total"] == pytest.approx(16864 * E_MAC)
        expected, spiking_inputs = 0.0, 0
        for (name, macs), kind, before in zip(HAND_MACS.items(), kinds, "A" + kinds):
            e = rep["layers"][name]
            if kind == "A" or before == "A":          # analog input: its MACs are MACs
                hand = macs * E_MAC
            else:
                hand = macs * e["input_spikes_per_neuron"] * E_AC
                spiking_inputs += e["input_spikes_per_neuron"] > 0
            assert e["energy"] == pytest.approx(hand, rel=1e-12), (kinds, name)
            expected += hand
        assert rep["total"] == pytest.approx(expected, rel=1e-12)
        if kinds == "AAAA":
            assert rep["total"] == pytest.approx(16864 * E_MAC)
        if kinds == "SSSS":
            assert spiking_inputs >= 1, "spikes reach a later layer: a test of E_AC"


def test_pooled_spikes_count_as_events():
    torch.manual_seed(1)
    net = Network([conv(4, "spiking"), avgpool(2), flatten(), linear(3, name="output")],
                  (1, 8, 8), T=5)
    rep = measure(net, torch.rand(4, 1, 8, 8) * 2)
    spikes_per_image = rep["layers"]["conv0"]["spike_rate"] * 4 * 8 * 8 * 5
    assert spikes_per_image > 0
    # every spike of conv0 reaches the readout once through its pooling cell
    assert rep["layers"]["output"]["input_spikes_per_neuron"] * 4 * 4 * 4 == \
        pytest.approx(spikes_per_image, rel=1e-5)


def test_backres_passes_each_cost_energy():
    net = Network(backres_specs(4, 1, R=3), (1, 8, 8), T=2)
    ann = ann_energy(net)
    assert [k for k in ann if k.startswith("conv2")] == ["conv2_pass1", "conv2_pass2",
                                                          "conv2_pass3"]
    assert ann["conv2_pass1"] == ann["conv2_pass3"] == pytest.approx(4 * 9 * 4 * 4 * 4 * E_MAC)


def test_errors():
    net = _two_layer()
    with pytest.raises(EnergyError, match="no spike statistics"):
        energy_report(net)
    with pytest.raises(EnergyError, match="'spiking' or 'artificial'"):
        layer_energy("passive", 10)
    with pytest.raises(EnergyError, match="analog_input"):
        layer_energy("spiking", 10, analog=True, analog_input="sometimes")
