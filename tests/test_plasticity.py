"""STDP rules: one pre/post pair changes a weight by the hand-computed amount.

The tiny networks run on Brian2's runtime device with the numpy target (no compiler).
"""
import contextlib
import math

import brian2 as b2
import numpy as np
import pytest

from brainsnn.brian import devices
from brainsnn.models import ModelError
from brainsnn.brian.plasticity import (DIEHL_COOK_STDP, RULES, diehl_cook_stdp, make_rule, pair_stdp,
                                 triplet_stdp)

DT = 0.5 * b2.ms


@contextlib.contextmanager
def numpy_runtime():
    """Brian2's runtime device with numpy code (no compiler), dt = DT; reset afterwards."""
    devices.select_device("runtime")
    b2.prefs.codegen.target = "numpy"
    b2.defaultclock.dt = DT
    try:
        yield
    finally:
        devices._reset_brian2()


def run_pair(rule, t_pre, t_post, w0=0.5, plastic=1.0):
    """A presynaptic spike at t_pre, post spikes at t_post (ms); return the final weight.

    Both neurons spike at given time steps (threshold on t_in_timesteps); with neuron
    traces (``rule.traces == "neuron"``) they carry the rule's traces.
    """
    devices.select_device("runtime")
    b2.prefs.codegen.target = "numpy"
    b2.defaultclock.dt = DT
    neuron_traces = getattr(rule, "traces", "synapse") == "neuron"
    ns = dict(rule.trace_parameters or {}) if neuron_traces else {}

    def spikes_at(times):
        return " or ".join(f"t_in_timesteps == {int(round(t / 0.5))}" for t in np.atleast_1d(times))

    try:
        pre = b2.NeuronGroup(1, "dummy : 1\n" + (rule.pre_equations if neuron_traces else ""),
                             threshold=spikes_at(t_pre),
                             reset=(rule.pre_reset or None) if neuron_traces else None,
                             method="exact", namespace=ns, name="pre")
        post = b2.NeuronGroup(1, "ge : 1\nplastic : 1 (shared)\n"
                              + (rule.post_equations if neuron_traces else ""),
                              threshold=spikes_at(t_post),
                              reset=(rule.post_reset or None) if neuron_traces else None,
                              method="exact", namespace=ns, name="post")
        post.plastic = plastic
        syn = rule.synapses(pre, post, name="syn")
        syn.connect(i=0, j=0)
        syn.w = w0
        net = b2.Network(pre, post, syn)
        net.run(max(t_pre, *np.atleast_1d(t_post)) * b2.ms + 2 * b2.ms)
        return float(syn.w[0]), float(post.ge[0])
    finally:
        devices._reset_brian2()


NU_PRE, NU_POST = 0.05, 0.1


TRACES = pytest.mark.parametrize("traces", ["synapse", "neuron"])


@TRACES
def test_diehl_cook_pre_then_post_hand_value(traces):
    rule = diehl_cook_stdp(nu_pre=NU_PRE, nu_post=NU_POST, x_tar=0.4, mu=0.2, traces=traces)
    w, ge = run_pair(rule, 10.0, 15.0)
    # pre at 10 ms: xpost = 0, no depression; post at 15 ms: xpre = exp(-5/20)
    expected = 0.5 + NU_POST * (math.exp(-5 / 20) - 0.4) * (1 - 0.5) ** 0.2
    assert w == pytest.approx(expected, rel=1e-9)
    assert ge == pytest.approx(0.5 * 1.0, abs=1e-12)  # transmitted w at the pre spike (no decay)


@TRACES
def test_diehl_cook_post_then_pre_hand_value(traces):
    rule = diehl_cook_stdp(nu_pre=NU_PRE, nu_post=NU_POST, x_tar=0.4, mu=0.2, traces=traces)
    w, _ = run_pair(rule, 15.0, 10.0)
    # post at 10 ms: xpre = 0 -> dw = -nu_post * x_tar * (1 - w)^mu; pre at 15 ms: xpost = exp(-5/20)
    w1 = 0.5 - NU_POST * 0.4 * (1 - 0.5) ** 0.2
    expected = w1 - NU_PRE * math.exp(-5 / 20) * w1 ** 0.2
    assert w == pytest.approx(expected, rel=1e-9)


@TRACES
def test_triplet_uses_slow_post_trace_before_the_spike(traces):
    rule = triplet_stdp(nu_pre=NU_PRE, nu_post=NU_POST, traces=traces)
    # pre at 5 ms, post at 10 ms and 20 ms: the second post spike sees xpost2 = exp(-10/40)
    w, _ = run_pair(rule, 5.0, [10.0, 20.0])
    w1 = 0.5 + NU_POST * math.exp(-5 / 20) * 0.0       # first post: xpost2 was 0
    expected = w1 + NU_POST * math.exp(-15 / 20) * math.exp(-10 / 40)
    assert w == pytest.approx(expected, rel=1e-9)


@TRACES
def test_pair_rule_additive_traces(traces):
    rule = pair_stdp(nu_pre=NU_PRE, nu_post=NU_POST, traces=traces)
    w, _ = run_pair(rule, 10.0, 12.0)
    assert w == pytest.approx(0.5 + NU_POST * math.exp(-2 / 20), rel=1e-9)
    w, _ = run_pair(rule, 12.0, 10.0)
    assert w == pytest.approx(0.5 - NU_PRE * math.exp(-2 / 20), rel=1e-9)


def test_learning_off_when_plastic_is_zero():
    rule = diehl_cook_stdp(nu_pre=NU_PRE, nu_post=NU_POST)
    w, ge = run_pair(rule, 10.0, 15.0, plastic=0.0)
    assert w == 0.5 and ge == pytest.approx(0.5)


def test_weights_clipped_to_w_max():
    rule = pair_stdp(nu_pre=NU_PRE, nu_post=5.0, w_max=1.0)
    w, _ = run_pair(rule, 10.0, 10.5, w0=0.9)
    assert w == 1.0


def test_mu_zero_and_one_need_no_pow():
    assert "**" not in diehl_cook_stdp(mu=0).on_post
    assert "**" not in diehl_cook_stdp(mu=1).on_post
    assert "**mu" in DIEHL_COOK_STDP.on_post


@pytest.mark.parametrize("kwargs, match", [
    ({"nu_pre": -1.0}, "nu_pre"),
    ({"w_max": 0.0}, "w_max"),
    ({"tau_pre": 20 * b2.mV}, "tau_pre"),
    ({"mu": -0.5}, "mu"),
    ({"trace": "sometimes"}, "trace"),
])
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ModelError, match=match):
        diehl_cook_stdp(**kwargs)


def test_unit_error_in_rule_equations_raises():
    with pytest.raises(ModelError, match="units"):
        DIEHL_COOK_STDP.replace(equations="w : 1\ndxpre/dt = -xpre / tau_pre : volt (event-driven)\n"
                                          "dxpost/dt = -xpost : 1 (event-driven)")


def test_make_rule_by_name():
    assert set(RULES) == {"diehl_cook", "triplet", "pair"}
    assert make_rule("triplet", nu_post=0.02).parameters["nu_post"] == 0.02
    with pytest.raises(ModelError, match="unknown STDP rule"):
        make_rule("hebbian")
    with pytest.raises(ModelError, match="unexpected keyword"):
        make_rule("pair", mu=0.2)


def test_neuron_traces_on_an_euler_neuron_decay_exactly():
    """The post trace added to an Euler-integrated neuron decays by exp(-dt/tau) per step."""
    from brainsnn.models import DIEHL_COOK_EXCITATORY
    model = diehl_cook_stdp(traces="neuron").post_neuron(DIEHL_COOK_EXCITATORY)
    assert model.method == "euler" and "xpost = 1" in model.reset
    with numpy_runtime():
        g = model.neuron_group(1)
        g.xpost = 1.0
        b2.run(10 * DT)
        assert float(g.xpost[0]) == pytest.approx(math.exp(-10 * 0.5 / 20), rel=1e-12)


def test_neuron_traces_on_an_exponential_euler_neuron_are_not_rewritten():
    """Exponential Euler integrates the plain decay exactly: the trace is added as it is."""
    from brainsnn.models import DIEHL_COOK_EXCITATORY
    neuron = DIEHL_COOK_EXCITATORY.replace(method="exponential_euler")
    model = triplet_stdp(traces="neuron").post_neuron(neuron)
    assert "dxpost/dt = -xpost / tau_post : 1" in model.equations
    with numpy_runtime():
        g = model.neuron_group(1)
        g.xpost2 = 1.0
        b2.run(10 * DT)
        assert float(g.xpost2[0]) == pytest.approx(math.exp(-10 * 0.5 / 40), rel=1e-12)
