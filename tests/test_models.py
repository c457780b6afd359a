"""Neuron models as equation objects: validation, extension, and what Brian2 integrates.

Brian2 runs on the runtime device with the numpy target (no compiler) for these tiny groups.
"""
import math

import brian2 as b2
import numpy as np
import pytest

from brainsnn.brian import devices
from brainsnn.models import (DIEHL_COOK_EXCITATORY, DIEHL_COOK_INHIBITORY, IF, LIF, ModelError,
                             NeuronModel, SynapseModel)

DT = 0.5 * b2.ms


@pytest.fixture
def runtime():
    devices.select_device("runtime")
    b2.prefs.codegen.target = "numpy"
    b2.defaultclock.dt = DT
    yield
    devices._reset_brian2()


def test_builtin_models_validate():
    for model in (IF, LIF, DIEHL_COOK_EXCITATORY, DIEHL_COOK_INHIBITORY):
        assert model.validate() is model
    assert DIEHL_COOK_EXCITATORY.input_variable == "ge"
    assert set(DIEHL_COOK_EXCITATORY.state_variables()) >= {"v", "ge", "gi", "theta", "plastic"}


def test_lif_decays_by_exp_minus_dt_over_tau(runtime):
    g = LIF.neuron_group(1)
    g.v = 0.5
    b2.run(10 * DT)
    assert float(g.v[0]) == pytest.approx(0.5 * math.exp(-10 * 0.5 / 20), rel=1e-12)


def test_if_resets_by_subtraction(runtime):
    g = IF.neuron_group(2)
    g.v = [1.3, 0.7]
    mon = b2.SpikeMonitor(g)
    b2.run(DT)
    assert list(mon.i[:]) == [0]
    np.testing.assert_allclose(g.v[:], [0.3, 0.7])


def test_diehl_cook_theta_grows_only_while_plastic(runtime):
    g = DIEHL_COOK_EXCITATORY.neuron_group(2)
    g.v = -10 * b2.mV            # above threshold: theta - 20 mV - 52 mV = -52 mV
    g.plastic = 1
    b2.run(DT)
    theta_plus = DIEHL_COOK_EXCITATORY.parameters["theta_plus"]
    np.testing.assert_allclose(g.theta[:] / b2.mV, (20 * b2.mV + theta_plus) / b2.mV, rtol=1e-6)
    assert np.all(g.v[:] == -65 * b2.mV)
    g.plastic = 0
    g.v = -10 * b2.mV
    b2.run(6 * b2.ms)            # after the 5 ms refractory period it spikes again
    np.testing.assert_allclose(g.theta[:] / b2.mV, (20 * b2.mV + theta_plus) / b2.mV, rtol=1e-6)


def test_diehl_cook_refractory_clamps_v(runtime):
    g = DIEHL_COOK_EXCITATORY.neuron_group(1)
    g.v = -10 * b2.mV
    b2.run(DT)
    g.ge = 100.0                 # strong input during the refractory period: v must not move
    b2.run(2 * b2.ms)
    assert float(g.v[0] / b2.mV) == pytest.approx(-65.0)


def test_unit_error_raises_with_the_line():
    with pytest.raises(ModelError, match=r"dv/dt.*units"):
        LIF.replace(equations="dv/dt = -v : 1")
    with pytest.raises(ModelError, match="units"):
        DIEHL_COOK_EXCITATORY.replace(threshold="v > theta + 1")  # volt + dimensionless
    with pytest.raises(ModelError, match="undefined name"):
        LIF.replace(reset="v = v_reset")
    with pytest.raises(ModelError, match="input_variable"):
        LIF.replace(input_variable="ge")
    with pytest.raises(ModelError, match="do not parse"):
        LIF.replace(equations="dv/dt = -v / tau_m : ")


def test_extend_adaptive_lif_example(runtime):
    """The example of brainsnn.models' docstring: an adaptive-threshold LIF."""
    adaptive = LIF.extend(
        equations="dtheta/dt = (theta_rest - theta) / tau_theta : 1",
        reset="theta += theta_plus",
        parameters={"theta_rest": 1.0, "tau_theta": 50 * b2.ms, "theta_plus": 0.2},
        initial={"theta": "theta_rest"},
    ).replace(threshold="v >= theta", name="adaptive_lif")
    assert "theta" in adaptive.differential_variables()
    g = adaptive.neuron_group(1)
    g.v = 2.0
    b2.run(DT)
    # spike at the first step: theta(after one exact decay step at rest) + theta_plus
    assert float(g.theta[0]) == pytest.approx(1.2, rel=1e-9)
    assert float(g.v[0]) == 0.0


def test_reset_may_define_temporaries():
    model = LIF.replace(reset="excess = v - theta\nv = excess")
    assert "excess" in model.reset


def test_synapse_model_unit_error_even_with_pre_post_names():
    with pytest.raises(ModelError, match="units"):
        SynapseModel(name="bad", equations="dx/dt = -x : 1", parameters={"tau_pre": 1 * b2.ms},
                     on_pre="v_post += x")


def test_models_are_immutable():
    with pytest.raises(Exception):
        LIF.threshold = "v > 2"  # noqa
    assert isinstance(LIF.with_parameters(theta=2.0), NeuronModel)
    assert LIF.parameters["theta"] == 1.0


@pytest.mark.parametrize("make,message", [
    (lambda: LIF.replace(reset="V = 0"), "assigns to 'V', which is not a state variable"),
    (lambda: LIF.replace(reset="theta = 0"), "writes to the parameter 'theta'"),
    (lambda: LIF.replace(threshold="v + 1"), "threshold 'v \\+ 1' is not a condition"),
    (lambda: LIF.replace(method="magic"), "unknown integration method 'magic'"),
    (lambda: LIF.replace(name=""), "model name '' must be a non-empty identifier"),
    (lambda: LIF.replace(name="my lif"), "model name 'my lif'"),
    (lambda: LIF.replace(equations="dv/dt = -v / tau_m : 1 (unles refractory)",
                         refractory=2 * b2.ms), "flag\\(s\\) 'unles refractory' on v"),
    (lambda: SynapseModel(name="syn", equations="w : 1", on_pre="v_post += (w"),
     "on_pre statement 'v_post \\+= \\(w' does not parse"),
    (lambda: LIF.with_parameters(stim=b2.TimedArray([1.0, 2.0], dt=b2.ms)),
     "parameter 'stim' is a function \\(TimedArray\\)"),
])
def test_mistakes_are_refused_when_the_model_is_made(make, message):
    with pytest.raises(ModelError, match=message):
        make()


def test_reset_typo_would_have_run_wrong_in_brian2(runtime):
    """Why the typo check matters: Brian2 takes 'V' for a temporary and never resets v."""
    group = b2.NeuronGroup(1, "dv/dt = 1/ms : 1", threshold="v >= 1", reset="V = 0",
                           method="euler")
    b2.run(5 * DT)
    assert float(group.v[0]) > 1                      # never reset
    assert LIF.replace(reset="excess = v - theta; v = excess").reset   # a real temporary


def test_substitute_replaces_one_equation_line():
    model = LIF.extend(equations="I : 1").replace(name="driven")
    by_name = model.substitute("v", "dv/dt = (I - v) / tau_m : 1")
    by_line = model.substitute("dv/dt = -v/tau_m : 1", "dv/dt = (I - v) / tau_m : 1")
    assert by_name == by_line
    assert [l.strip() for l in by_name.equations.splitlines()] == [
        "dv/dt = (I - v) / tau_m : 1", "I : 1"]
    with pytest.raises(ModelError, match="(?s)no equation line .u. to substitute.*dv/dt = -v / tau_m"):
        model.substitute("u", "du/dt = -u / tau_m : 1")
    with pytest.raises(ModelError, match="units"):            # validated like a new model
        model.substitute("v", "dv/dt = I - v : 1")


def test_diff_shows_what_differs():
    other = LIF.substitute("v", "dv/dt = (0.5 - v) / tau_m : 1").with_parameters(theta=2.0)
    diff = LIF.diff(other).splitlines()
    assert "-equations: dv/dt = -v / tau_m : 1" in diff
    assert "+equations: dv/dt = (0.5 - v) / tau_m : 1" in diff
    assert "-parameters: theta = 1.0" in diff and "+parameters: theta = 2.0" in diff
    assert LIF.diff(LIF) == ""
