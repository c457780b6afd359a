"""The torch engine: same equations, same dt, same scheme as Brian2; surrogate gradients.

Brian2 equivalence: for the same weights and input spike trains, TorchNeuron (float64) and
Brian2 (runtime, and cpp_standalone in one compile) give the same spike trains over 1,000
steps for several hundred neurons, for IF, LIF and user-modified models (adaptive threshold,
refractoriness, Euler with a subexpression).
"""
import math

import brian2 as b2
import numpy as np
import pytest
import torch

from brainsnn.brian.devices import device_session
from brainsnn.brian.export import synaptic_weight_name
from brainsnn.models import IF, LIF, ModelError, NeuronModel
from brainsnn.engine.surrogate import SURROGATES, spike, surrogate_derivative
from brainsnn.engine.neuron import (TIME_STEP_VARIABLE, TorchNeuron, UnsupportedConstructError,
                                   compile_neuron_model)

torch.set_num_threads(1)

DT = 1 * b2.ms

#: A user-modified LIF: the threshold theta is a state variable that jumps by theta_plus at
#: each spike and relaxes to theta_rest (the package's LIF, extended).
ADAPTIVE_LIF = LIF.extend(
    equations="dtheta/dt = (theta_rest - theta) / tau_theta : 1",
    reset="theta += theta_plus",
    parameters={"theta_rest": 1.0, "tau_theta": 50 * b2.ms, "theta_plus": 0.2},
    initial={"theta": "theta_rest"},
)
ADAPTIVE_LIF = ADAPTIVE_LIF.replace(
    name="adaptive_lif",
    parameters={k: v for k, v in ADAPTIVE_LIF.parameters.items() if k != "theta"})

#: LIF with a 3 ms refractory period (v clamped, no spikes while refractory).
REFRACTORY_LIF = LIF.replace(name="lif_ref", equations="dv/dt = -v / tau_m : 1 (unless refractory)",
                             refractory=3 * b2.ms)

#: A synaptic-current model integrated by forward Euler, with a subexpression.
CURRENT_LIF = NeuronModel(
    name="current_lif",
    equations="""
        dv/dt = (I_syn - v) / tau_m : 1
        I_syn = 2 * g * (1.5 - v) : 1
        dg/dt = -g / tau_g : 1
    """,
    threshold="v > theta", reset="v = v_reset",
    parameters={"theta": 1.0, "v_reset": 0.1, "tau_m": 10 * b2.ms, "tau_g": 5 * b2.ms},
    initial={"v": 0.0, "g": 0.0}, method="euler", input_variable="g")

EQUIVALENCE_MODELS = [IF, LIF, ADAPTIVE_LIF, REFRACTORY_LIF, CURRENT_LIF]
N_IN, N_OUT, T_STEPS = 100, 300, 1000


def run_torch(neuron, currents, dtype=torch.float64, **init):
    """Spikes (T, B, n) and final state of ``neuron`` driven by currents (T, B, n)."""
    state = neuron.initial_state(currents.shape[1:], dtype=dtype, **init)
    out = []
    for t in range(currents.shape[0]):
        s, state = neuron(state, currents[t])
        out.append(s)
    return torch.stack(out), state


# -- discrete forms, hand computed ------------------------------------------------------------

def test_if_matches_hand_computed_discrete_form():
    neuron = TorchNeuron(IF, dt=DT)
    inputs = torch.tensor([0.5, 0.75, 0.5, 0.0, 1.5], dtype=torch.float64).reshape(5, 1, 1)
    # v: 0.5; 1.25 -> spike, 0.25; 0.75; 0.75; 2.25 -> spike, 1.25 (reset by subtraction)
    spikes, state = run_torch(neuron, inputs)
    assert spikes.flatten().tolist() == [0, 1, 0, 0, 1]
    assert state["v"].item() == 1.25


def test_lif_matches_hand_computed_discrete_form():
    neuron = TorchNeuron(LIF.with_parameters(theta=1.0, tau_m=10 * b2.ms), dt=DT)
    lam = math.exp(-0.1)
    inputs = [0.6, 0.3, 0.3, 0.0, 0.95]
    v, expected = 0.0, []
    for i in inputs:                       # v[t] = lambda v[t-1] + I[t]; reset to zero
        v = lam * v + i
        expected.append(float(v >= 1.0))
        v = 0.0 if v >= 1.0 else v
    spikes, state = run_torch(neuron, torch.tensor(inputs, dtype=torch.float64).reshape(5, 1, 1))
    assert spikes.flatten().tolist() == expected
    assert expected == [0, 0, 1, 0, 0]
    assert state["v"].item() == pytest.approx(0.95, abs=1e-15)


def test_state_update_is_brian2s_scheme():
    """method='euler' gives the Euler factor (1 - dt/tau), 'exact' exp(-dt/tau)."""
    euler = TorchNeuron(LIF.replace(method="euler", threshold="v >= 100"), dt=DT)
    exact = TorchNeuron(LIF.replace(threshold="v >= 100"), dt=DT)
    for neuron, factor in ((euler, 1 - 1 / 20), (exact, math.exp(-1 / 20))):
        state = neuron.initial_state((1, 1), dtype=torch.float64, v=1.0)
        _, state = neuron(state, torch.zeros(1, 1, dtype=torch.float64))
        assert state["v"].item() == pytest.approx(factor, rel=1e-15)
    assert "exp" not in euler.compiled.abstract_code


def test_dt_changes_the_decay():
    a = TorchNeuron(LIF.replace(threshold="v >= 100"), dt=0.5 * b2.ms)
    state = a.initial_state((1,), dtype=torch.float64, v=1.0)
    _, state = a(state)
    assert state["v"].item() == pytest.approx(math.exp(-0.5 / 20), rel=1e-15)


def test_refractory_blocks_spikes_and_clamps_v():
    neuron = TorchNeuron(REFRACTORY_LIF, dt=DT)
    # big input every step: spikes at steps 0, 3, 6 (refractory for 3 steps after a spike)
    spikes, state = run_torch(neuron, torch.full((8, 1, 1), 2.0, dtype=torch.float64))
    assert spikes.flatten().tolist() == [1, 0, 0, 1, 0, 0, 1, 0]
    assert state[TIME_STEP_VARIABLE].item() == 8
    assert state["lastspike"].item() == pytest.approx(0.006)


def test_not_refractory_is_derived_from_lastspike_and_may_be_left_out_of_the_state():
    neuron = TorchNeuron(REFRACTORY_LIF, dt=DT)
    assert neuron.compiled.derived == {"not_refractory"}
    inputs = torch.full((8, 1, 1), 2.0, dtype=torch.float64)
    full = neuron.initial_state((1, 1), dtype=torch.float64)
    lean = {k: v for k, v in full.items() if k != "not_refractory"}
    for x in inputs:
        s_full, full = neuron(full, x)
        s_lean, lean = neuron(lean, x)
        assert torch.equal(s_full, s_lean) and torch.equal(full["v"], lean["v"])
        lean.pop("not_refractory")
    # a boolean refractory condition keeps the previous value: it is state, not derived
    held = REFRACTORY_LIF.replace(name="lif_held", refractory="v > 0.5")
    assert TorchNeuron(held, dt=DT).compiled.derived == set()
    with pytest.raises(KeyError):
        TorchNeuron(held, dt=DT)({"v": torch.zeros(1, 1), "lastspike": torch.zeros(1, 1),
                                   TIME_STEP_VARIABLE: torch.tensor(0)}, inputs[0])


def test_shared_and_per_neuron_variables():
    model = LIF.extend(equations="gain : 1 (shared)\nbias_v : 1").replace(name="lif_gain")
    neuron = TorchNeuron(model, dt=DT)
    state = neuron.initial_state((2, 3), bias_v=torch.tensor([0.1, 0.2, 0.3]))
    assert state["gain"].shape == (2, 1)
    assert state["bias_v"].shape == (2, 3)
    assert torch.equal(state["bias_v"][1], torch.tensor([0.1, 0.2, 0.3]))


def test_per_neuron_tensor_threshold_and_trainable_parameter():
    theta = torch.tensor([0.5, 1.0, 2.0])
    neuron = TorchNeuron(IF, parameters={"theta": theta})
    spikes, _ = run_torch(neuron, torch.full((1, 1, 3), 1.0), dtype=torch.float32)
    assert spikes.flatten().tolist() == [1, 1, 0]
    learn = TorchNeuron(IF, trainable=["theta"])
    assert isinstance(learn.theta, torch.nn.Parameter)
    s, _ = learn(learn.initial_state((1, 1)), torch.full((1, 1), 0.8))
    s.sum().backward()
    # ds/dtheta = -g(v - theta) = -(1 - |0.8 - 1|) = -0.8
    assert learn.theta.grad.item() == pytest.approx(-0.8)


def test_initial_values_from_expressions():
    neuron = TorchNeuron(ADAPTIVE_LIF)
    state = neuron.initial_state((4, 5))
    assert torch.all(state["theta"] == 1.0) and torch.all(state["v"] == 0.0)


# -- surrogate gradients ----------------------------------------------------------------------

@pytest.mark.parametrize("alpha,current", [(1.0, 0.8), (2.0, 0.8), (2.0, 1.3), (1.0, 2.5)])
def test_surrogate_gradient_of_one_neuron_is_analytic(alpha, current):
    neuron = TorchNeuron(LIF, dt=DT, alpha=alpha)
    I = torch.tensor([[current]], dtype=torch.float64, requires_grad=True)
    s, _ = neuron(neuron.initial_state((1, 1), dtype=torch.float64), I)
    s.sum().backward()
    # v = I (v starts at 0), x = v - theta, ds/dI = max(0, alpha - alpha^2 |x|)
    expected = max(0.0, alpha - alpha ** 2 * abs(current - 1.0))
    assert I.grad.item() == pytest.approx(expected, abs=1e-12)
    assert s.item() == float(current >= 1.0)


def test_gradient_through_the_leak_and_the_reset():
    """Two IF steps, theta = 1: ds2/dI1 = g(x2) (detached reset) or g(x2)(1 - theta g(x1))."""
    I1, I2 = 1.2, 0.5
    x1, x2 = I1 - 1.0, (I1 - 1.0) + I2 - 1.0
    g1, g2 = 1 - abs(x1), 1 - abs(x2)
    for detach, expected in ((True, g2), (False, g2 * (1 - g1))):
        neuron = TorchNeuron(IF, detach_reset=detach)
        i1 = torch.tensor([[I1]], dtype=torch.float64, requires_grad=True)
        state = neuron.initial_state((1, 1), dtype=torch.float64)
        s1, state = neuron(state, i1)
        s2, state = neuron(state, torch.tensor([[I2]], dtype=torch.float64))
        s2.sum().backward()
        assert i1.grad.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_selectable_surrogates(name):
    x = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    spike(x, name, 1.5).sum().backward()
    formulas = {
        "triangle": lambda x, a: np.maximum(0, a - a * a * np.abs(x)),
        "fast_sigmoid": lambda x, a: 1 / (1 + a * np.abs(x)) ** 2,
        "sigmoid": lambda x, a: a * np.exp(-a * x) / (1 + np.exp(-a * x)) ** 2,
        "arctan": lambda x, a: a / (2 * (1 + (np.pi / 2 * a * x) ** 2)),
        "rectangle": lambda x, a: a * (np.abs(x) < 0.5 / a),
        "gaussian": lambda x, a: a / np.sqrt(2 * np.pi) * np.exp(-(a * x) ** 2 / 2),
    }
    xs = x.detach().numpy()
    np.testing.assert_allclose(x.grad.numpy(), formulas[name](xs, 1.5), atol=1e-12)
    assert torch.equal(spike(x.detach(), name), (x.detach() >= 0).double())
    with pytest.raises(ValueError, match="unknown surrogate 'nope'"):
        surrogate_derivative(x, "nope")


def test_strict_threshold_gives_no_spike_at_equality():
    ge = TorchNeuron(IF.replace(threshold="v >= theta"))
    gt = TorchNeuron(IF.replace(threshold="v > theta"))
    one = torch.ones(1, 1, dtype=torch.float64)
    assert ge(ge.initial_state((1, 1), dtype=torch.float64), one)[0].item() == 1.0
    assert gt(gt.initial_state((1, 1), dtype=torch.float64), one)[0].item() == 0.0


# -- errors -----------------------------------------------------------------------------------

def test_stochastic_term_is_rejected_with_its_name():
    noisy = LIF.replace(name="noisy", equations="dv/dt = -v / tau_m + sigma * xi / sqrt(tau_m) : 1",
                        parameters={**LIF.parameters, "sigma": 0.1}, method="euler")
    with pytest.raises(UnsupportedConstructError, match="stochastic term 'xi'"):
        TorchNeuron(noisy)


def test_random_function_in_reset_is_rejected():
    model = IF.replace(name="rand_reset", reset="v = rand()")
    with pytest.raises(UnsupportedConstructError, match=r"random function rand\(\)"):
        TorchNeuron(model)


def test_threshold_without_a_comparison_of_a_changing_variable_is_rejected():
    model = IF.extend(equations="gate : 1").replace(name="gate_thr", threshold="gate > 0.5")
    with pytest.raises(UnsupportedConstructError, match="threshold 'gate > 0.5' has no comparison"):
        TorchNeuron(model)


def test_bad_arguments_say_what_is_expected():
    with pytest.raises(ModelError, match="has no parameter 'tau'"):
        TorchNeuron(LIF, parameters={"tau": 1.0})
    with pytest.raises(ValueError, match="unknown surrogate"):
        TorchNeuron(LIF, surrogate="relu")
    with pytest.raises(ModelError, match="dt must be a time"):
        compile_neuron_model(LIF, 1 * b2.mV)
    with pytest.raises(ValueError, match="unknown variable"):
        TorchNeuron(LIF).initial_state((1, 2), w=1.0)


# -- Brian2 equivalence -----------------------------------------------------------------------

def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    spikes = rng.random((T_STEPS, N_IN)) < 0.05
    weights = {m.name: rng.normal(0.03, 0.12, size=(N_OUT, N_IN)) for m in EQUIVALENCE_MODELS}
    return spikes, weights


def _brian2_spikes(models, spikes, weights, dt):
    """One network, one input generator, one group per model: same-step schedule."""
    t_idx, k_idx = np.nonzero(spikes)
    gen = b2.SpikeGeneratorGroup(N_IN, k_idx, t_idx * dt, dt=dt, when="groups", order=0)
    objects, monitors = [gen], {}
    for k, model in enumerate(models, start=1):
        group = model.neuron_group(N_OUT, dt=dt)
        w = synaptic_weight_name(model)
        syn = b2.Synapses(gen, group, f"{w} : 1", on_pre=f"{model.input_variable}_post += {w}",
                          dt=dt)
        syn.connect()                                    # i-major: (i, j) = (0,0), (0,1), ...
        setattr(syn, w, weights[model.name].T.reshape(-1))
        group.state_updater.when, group.state_updater.order = "groups", 10 * k
        syn.pre.when, syn.pre.order = "groups", 10 * k + 1
        group.thresholder["spike"].when, group.thresholder["spike"].order = "groups", 10 * k + 2
        group.resetter["spike"].when, group.resetter["spike"].order = "groups", 10 * k + 3
        monitors[model.name] = b2.SpikeMonitor(group)
        objects += [group, syn, monitors[model.name]]
    net = b2.Network(*objects)
    net.run(T_STEPS * dt, namespace={})
    if b2.get_device().__class__.__name__ != "RuntimeDevice":
        b2.device.build(run=True, compile=True)
    out = {}
    for name, mon in monitors.items():
        arr = np.zeros((T_STEPS, N_OUT), dtype=bool)
        arr[np.round(np.asarray(mon.t / dt)).astype(int), np.asarray(mon.i)] = True
        out[name] = arr
    return out


def _torch_spikes(models, spikes, weights, dt):
    x = torch.as_tensor(spikes, dtype=torch.float64)
    out = {}
    for model in models:
        W = torch.as_tensor(weights[model.name])
        currents = (x @ W.T).unsqueeze(1)                # (T, 1, N_OUT)
        s, _ = run_torch(TorchNeuron(model, dt=dt), currents)
        out[model.name] = s[:, 0].bool().numpy()
    return out


def _check_equal(torch_out, brian_out):
    for name, ref in torch_out.items():
        rate = ref.mean()
        assert 0.005 < rate < 0.5, f"{name}: rate {rate} makes a weak test"
        diff = np.argwhere(ref != brian_out[name])
        assert diff.size == 0, (f"{name}: {len(diff)} of {ref.size} spike decisions differ, "
                                f"first at (step, neuron) {tuple(diff[0])}")


@pytest.fixture(scope="module")
def equivalence_data():
    spikes, weights = _inputs()
    return spikes, weights, _torch_spikes(EQUIVALENCE_MODELS, spikes, weights, DT)


def test_torch_engine_equals_brian2_runtime(equivalence_data):
    spikes, weights, torch_out = equivalence_data
    with device_session("runtime"):
        b2.prefs.codegen.target = "numpy"
        brian_out = _brian2_spikes(EQUIVALENCE_MODELS, spikes, weights, DT)
    _check_equal(torch_out, brian_out)


def test_equivalence_test_can_fail(equivalence_data):
    """A slightly different tau_m in Brian2 changes spikes: the comparison detects it."""
    spikes, weights, torch_out = equivalence_data
    with device_session("runtime"):
        b2.prefs.codegen.target = "numpy"
        brian_out = _brian2_spikes([LIF.with_parameters(tau_m=21 * b2.ms)], spikes, weights, DT)
    assert (brian_out["lif"] != torch_out["lif"]).any()


@pytest.mark.slow
def test_torch_engine_equals_brian2_cpp_standalone(equivalence_data, tmp_path):
    spikes, weights, torch_out = equivalence_data
    with device_session("cpp_standalone", directory=str(tmp_path / "cpp")):
        brian_out = _brian2_spikes(EQUIVALENCE_MODELS, spikes, weights, DT)
    _check_equal(torch_out, brian_out)


def test_parameter_units_are_checked_and_extra_inputs_reach_their_variable():
    with pytest.raises(ModelError, match="'tau_m' of model 'lif' needs units of"):
        TorchNeuron(LIF, parameters={"tau_m": 1 * b2.mV})
    from brainsnn.models import DIEHL_COOK_EXCITATORY
    neuron = TorchNeuron(DIEHL_COOK_EXCITATORY, dt=0.5 * b2.ms)
    state = neuron.initial_state((1, 2), dtype=torch.float64)
    _, state = neuron(state, torch.ones(1, 2, dtype=torch.float64),
                      inputs={"gi": torch.full((1, 2), 2.0, dtype=torch.float64)})
    assert state["ge"].tolist() == [[1.0, 1.0]] and state["gi"].tolist() == [[2.0, 2.0]]
    with pytest.raises(ValueError, match="inputs for unknown variable"):
        neuron(state, None, inputs={"w": torch.ones(1, 2)})


def test_benchmark_protocol_smoke(tmp_path):
    """The bench_torch_engine protocol runs at smoke scale and writes its HDF5 file."""
    from brainsnn.experiments.protocols import bench_torch_engine as bench
    from brainsnn.io.results import RunResults
    out = tmp_path / "bench.h5"
    bench.main(["--scale", "smoke", "--batches", "1", "--repeats", "2", "--n-hidden", "50",
                "--out", str(out), "--seed", "3"])
    rec = RunResults.load(out)
    assert rec.is_complete and rec.config["n_hidden"] == 50 and rec.config["torch_compile"] is False
    assert rec.get("results/first_batch_loss_engine") == pytest.approx(
        rec.get("results/first_batch_loss_hand"), rel=1e-5)
    assert len(rec.metric("train_images_per_s_engine")) == 2
    assert float(rec.get("results/ratio_train")) > 0
    assert "_bs_step" in str(rec.get("results/generated_step_source"))


def test_neurons_survive_deepcopy_and_pickling():
    import copy
    import io
    neuron = TorchNeuron(REFRACTORY_LIF, parameters={"theta": torch.tensor([0.5, 1.0])},
                         trainable=["tau_m"])
    inputs = torch.tensor([[0.7, 0.7]])
    expected, _ = neuron(neuron.initial_state((1, 2)), inputs)
    buf = io.BytesIO()
    torch.save(neuron, buf)
    buf.seek(0)
    for other in (copy.deepcopy(neuron), torch.load(buf, weights_only=False)):
        spikes, _ = other(other.initial_state((1, 2)), inputs)
        assert torch.equal(spikes, expected) and spikes.tolist() == [[1.0, 0.0]]
        assert isinstance(other.tau_m, torch.nn.Parameter)


def test_diehl_cook_neurons_equal_brian2_runtime():
    """Voltage-based conductance models with units, Euler, adaptive threshold, refractoriness."""
    from brainsnn.models import DIEHL_COOK_EXCITATORY, DIEHL_COOK_INHIBITORY
    models = [DIEHL_COOK_EXCITATORY, DIEHL_COOK_INHIBITORY]
    spikes, _ = _inputs()
    rng = np.random.default_rng(7)
    weights = {m.name: np.abs(rng.normal(0.0, 0.3, size=(N_OUT, N_IN))) for m in models}
    torch_out = _torch_spikes(models, spikes, weights, 0.5 * b2.ms)
    with device_session("runtime"):
        b2.prefs.codegen.target = "numpy"
        brian_out = _brian2_spikes(models, spikes, weights, 0.5 * b2.ms)
    _check_equal(torch_out, brian_out)


def test_other_threshold_and_reset_forms():
    """'a < b' thresholds, boolean 'and' masks (no gradient) and '*=' resets."""
    model = NeuronModel(name="gated", equations="dv/dt = 0/second : 1\ngate : 1",
                        threshold="theta < v and gate > 0.5", reset="v *= 0.25",
                        parameters={"theta": 1.0}, method="euler")
    neuron = TorchNeuron(model)
    state = neuron.initial_state((1, 3), dtype=torch.float64, gate=torch.tensor([1.0, 0.0, 1.0]))
    current = torch.tensor([[2.0, 2.0, 1.0]], dtype=torch.float64, requires_grad=True)
    spikes, state = neuron(state, current)
    # strict '<': v == theta does not spike; the gate masks neuron 1; spiking v -> v / 4
    assert spikes.tolist() == [[1.0, 0.0, 0.0]]
    assert state["v"].tolist() == [[0.5, 2.0, 1.0]]
    spikes.sum().backward()
    # x = v - theta; ds/dI = g(x) * mask: g(1) = 0 (triangle edge), neuron 2: g(0) = 1
    assert current.grad.tolist() == [[0.0, 0.0, 1.0]]


def test_negative_parameters_keep_operator_precedence():
    """c = -2: 'c**2' is 4 (not -(2**2)), '2**c' is 0.25."""
    model = IF.replace(name="neg", reset="v = c**2 + 2**c", parameters={"theta": 1.0, "c": -2.0})
    neuron = TorchNeuron(model)
    _, state = neuron(neuron.initial_state((1, 1), dtype=torch.float64),
                      torch.ones(1, 1, dtype=torch.float64))
    assert state["v"].item() == 4.25


# -- Brian2's semantics, construct by construct -------------------------------------------------

def _versus_brian2(model, steps=200, n=20, dt=DT, **values):
    """Run ``model`` for ``steps`` on both engines from the same per-neuron values (no input);
    return (torch spikes, brian2 spikes, torch final state, brian2 final state)."""
    neuron = TorchNeuron(model, dt=dt)
    state = neuron.initial_state((1, n), dtype=torch.float64, **values)
    spikes = []
    with torch.no_grad():
        for _ in range(steps):
            s, state = neuron(state)
            spikes.append(s[0].numpy().astype(bool))
    with device_session("runtime"):
        b2.prefs.codegen.target = "numpy"
        group = model.neuron_group(n, dt=dt)
        for k, v in values.items():
            setattr(group, k, v)
        mon = b2.SpikeMonitor(group)
        b2.Network(group, mon).run(steps * dt, namespace={})
        ref = np.zeros((steps, n), dtype=bool)
        ref[np.round(np.asarray(mon.t / dt)).astype(int), np.asarray(mon.i)] = True
        final = {k: np.asarray(getattr(group, k)[:]) for k in model.state_variables()}
    return np.array(spikes), ref, {k: v[0].numpy() for k, v in state.items()}, final


def _assert_same(model, **kw):
    spikes, ref, state, final = _versus_brian2(model, **kw)
    assert spikes.any(), "no spike: a weak test"
    assert np.array_equal(spikes, ref), f"{(spikes != ref).sum()} spike decisions differ"
    for name, value in final.items():
        np.testing.assert_array_equal(state[name].astype(value.dtype), value, err_msg=name)
    return spikes


def test_float64_initial_values_are_not_rounded_through_float32():
    neuron = TorchNeuron(LIF.replace(initial={"v": 0.1}))
    assert neuron.initial_state((1, 1), dtype=torch.float64)["v"].item() == 0.1
    assert neuron.initial_state((1, 2), dtype=torch.float64, v=0.1)["v"].tolist() == [[0.1, 0.1]]
    assert neuron.initial_state((1, 2), dtype=torch.float64,
                                v=np.array([0.1, 0.2]))["v"].tolist() == [[0.1, 0.2]]
    # an exact tie: IF from half its threshold, inputs of half the threshold (0.35 + 0.35 = 0.7)
    model = IF.replace(name="if_half", parameters={"theta": 0.7}, initial={"v": "0.5*theta"},
                       equations="dv/dt = I / second : 1\nI : 1")
    spikes = _assert_same(model, steps=20, n=1, dt=1 * b2.second, I=0.35)
    assert spikes[0, 0]


def test_reset_is_applied_to_spiking_neurons_only():
    """theta += 0.5/count is inf/nan for the silent neuron (count = 0): it must not reach it."""
    m = NeuronModel(name="c", equations="dv/dt = -v/tau : 1\ntheta : 1\ncount : 1",
                    threshold="v >= theta", reset="v = 0\ncount += 1\ntheta += 0.5/count",
                    parameters={"tau": 20 * b2.ms}, initial={"theta": 1.0, "count": 0.0})
    neuron = TorchNeuron(m)
    _, state = neuron(neuron.initial_state((1, 2), dtype=torch.float64),
                      torch.tensor([[1.5, 0.2]], dtype=torch.float64))
    assert state["theta"].tolist() == [[1.5, 1.0]] and state["count"].tolist() == [[1.0, 0.0]]
    # a neuron whose v overflowed resets to 0 (a select); with a graph recorded the masked
    # form v*(1 - s) is used for constants (documented: differs only for an infinite state)
    neuron = TorchNeuron(LIF)
    with torch.no_grad():
        _, state = neuron({"v": torch.tensor([[math.inf, 0.5]], dtype=torch.float64)})
    assert state["v"].tolist() == [[0.0, 0.5 * math.exp(-1 / 20)]]
    sqrt_reset = NeuronModel(name="sq", equations="dv/dt = (I - v)/(10*ms) : 1\nI : 1\nw : 1",
                             threshold="v > 1", reset="v = 0; w += 0.1*sqrt(v - 1)")
    spikes = _assert_same(sqrt_reset, I=np.linspace(0.5, 3, 20))
    assert spikes.sum() > 50


def test_differentiated_reset_keeps_the_masked_gradient():
    """detach_reset=False: d v_after / d s = new - v, as for v*(1 - s) + s*new."""
    neuron = TorchNeuron(LIF.replace(reset="v = 0.25"), detach_reset=False)
    current = torch.tensor([[1.2]], dtype=torch.float64, requires_grad=True)
    _, state = neuron(neuron.initial_state((1, 1), dtype=torch.float64), current)
    state["v"].sum().backward()
    # v = I; s = H(I - 1) with g(0.2) = 0.8; v_after = v(1 - s) + 0.25 s -> dv/dI = 0 + (0.25 - 1.2) 0.8
    assert state["v"].item() == 0.25
    assert current.grad.item() == pytest.approx((0.25 - 1.2) * 0.8, abs=1e-12)


def test_semicolon_separated_reset():
    model = LIF.extend(equations="dw/dt = -w / (50*ms) : 1").replace(
        name="semi", reset="v = 0; w += 0.1", equations="dv/dt = (I - v - w) / tau_m : 1\n"
                                                         "dw/dt = -w / (50*ms) : 1\nI : 1")
    _assert_same(model, I=np.linspace(0.8, 3, 20))


def test_infinite_parameter_renders():
    model = LIF.with_parameters(v_max=np.inf, v_min=-np.inf).replace(
        name="clipped", equations="dv/dt = (I - v) / tau_m : 1\nI : 1",
        threshold="v >= theta and v < v_max", reset="v = clip(-v_max, v_min, 0)")
    assert "_bs_inf" in TorchNeuron(model).source
    _assert_same(model, I=np.linspace(0.8, 3, 20))


def test_chaotic_model_matches_brian2_numpy_bit_for_bit_over_thousands_of_steps():
    """Izhikevich with v**2 at dt = 1 ms (sensitive to the order of operations): 3,000 steps."""
    from brainsnn.catalogue import IZHIKEVICH
    spikes = _assert_same(IZHIKEVICH, steps=3000, n=100, dt=1 * b2.ms,
                          I=np.random.default_rng(0).uniform(0, 15, 100))
    assert spikes.sum() > 1000


def test_torch_step_follows_brian2s_order_of_operations():
    from brainsnn.catalogue import IZHIKEVICH
    source = TorchNeuron(IZHIKEVICH, dt=1 * b2.ms).source
    # Brian2's own statement: 140 + I + 0.04 v**2 + 5 v - u, grouped as Brian2 groups it
    assert "(140.0 + ((I + (0.04 * (v ** 2))) + (5.0 * v))) - u" in source


@pytest.mark.parametrize("threshold", ["v > 1 or w > 0.5", "v > 0.5 and w > 0.2"])
def test_thresholds_joined_by_or_and_and(threshold):
    model = NeuronModel(name="two", equations="dv/dt = (I - v)/(10*ms) : 1\n"
                        "dw/dt = (J - w)/(30*ms) : 1\nI : 1\nJ : 1", threshold=threshold,
                        reset="v = 0; w = 0")
    rng = np.random.default_rng(0)
    _assert_same(model, I=rng.uniform(0, 2, 20), J=rng.uniform(0, 1, 20))
    # gradients: each comparison gets its surrogate where it decides the spike; the input
    # goes to v. v = 0.9 (x_v = v - 0.5 or v - 1), w = J after one step of its decay
    neuron = TorchNeuron(model, dt=DT)
    state = neuron.initial_state((1, 2), dtype=torch.float64, w=np.array([0.1, 0.6]))
    x = torch.tensor([[0.9, 0.9]], dtype=torch.float64, requires_grad=True)
    s, _ = neuron(state, x)
    s.sum().backward()
    if "or" in threshold:   # v > 1 decides only where w > 0.5 is false (neuron 0)
        assert s.tolist() == [[0.0, 1.0]] and x.grad.tolist() == [[1 - 0.1, 0.0]]
    else:                   # v > 0.5 decides only where w > 0.2 is true (neuron 1)
        assert s.tolist() == [[0.0, 1.0]] and x.grad.tolist() == [[0.0, 1 - 0.4]]


def test_reset_temporaries_integer_boolean_index_and_constant_over_dt():
    model = NeuronModel(
        name="constructs",
        equations="""dv/dt = (I + bias - v) / (10*ms) : 1
                     I : 1
                     count : integer
                     fired : boolean
                     bias = 0.05 * i / N : 1 (constant over dt)""",
        threshold="v > 1", reset="excess = v - 1\nv = excess / 2\ncount += 1\nfired = True")
    spikes = _assert_same(model, I=np.linspace(0.9, 3, 20))
    neuron = TorchNeuron(model)
    assert neuron.compiled.integer == {"count"} and "fired" in neuron.compiled.boolean
    assert spikes.sum() > 20


def test_refused_constructs_name_the_construct_and_where():
    noisy = LIF.replace(name="noisy_reset", reset="v = 0.1 * randn()")
    with pytest.raises(UnsupportedConstructError, match=r"random function randn\(\) in the reset"):
        TorchNeuron(noisy)
    with pytest.raises(UnsupportedConstructError, match="stochastic term 'xi' in the equation for v"):
        TorchNeuron(LIF.replace(name="xi", method="euler",
                                equations="dv/dt = -v / tau_m + xi / sqrt(tau_m) : 1"))


# -- the torch device of a torch-engine object ------------------------------------------------
@pytest.fixture
def no_gpu(monkeypatch):
    """A machine where torch finds no CUDA GPU (whatever this one has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_torch_device_checks_the_name_and_the_machine(no_gpu, monkeypatch):
    from brainsnn.engine.devices import torch_device
    from brainsnn.errors import DeviceError

    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(DeviceError, match="'gpu' is not a torch device; expected 'cpu'"):
        torch_device("gpu")
    with pytest.raises(DeviceError, match="--torch-device 'cuda' was asked for, but torch finds "
                                          "no CUDA GPU"):
        torch_device("cuda", "--torch-device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert torch_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"'cuda:2' was asked for, but torch finds 2 CUDA "
                                          r"GPU\(s\) on this machine \(cuda:0..cuda:1\)"):
        torch_device("cuda:2")


def test_torch_engine_objects_refuse_a_gpu_where_there_is_none(no_gpu):
    """Each torch-engine estimator names the missing GPU (DeviceError), not torch's driver
    message from deep inside a run."""
    from brainsnn.brian.wta import DiehlCookNetwork
    from brainsnn.engine.network import Network, flatten, linear
    from brainsnn.errors import DeviceError
    from brainsnn.learn.agd import AGDClassifier
    from brainsnn.learn.conversion import ANNToSNN
    from brainsnn.stdp.layer import ConvSTDPLayer
    from brainsnn.stdp.stack import SpikingConvStack
    from brainsnn.stdp.wta_inference import TorchWTAInference

    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    net = DiehlCookNetwork(4, device="runtime", codegen_target="numpy")
    with pytest.raises(DeviceError, match="device 'cuda' was asked for"):
        TorchWTAInference(net, device="cuda")
    stack = SpikingConvStack([ConvSTDPLayer(2, 3, 1, seed=0)], (1, 8, 8), torch_device="cuda")
    with pytest.raises(DeviceError, match="torch_device 'cuda' was asked for"):
        stack.run(x)
    specs = [flatten(), linear(2, "artificial", name="output")]
    ann = Network(specs, (1, 8, 8), T=1)
    with pytest.raises(DeviceError, match="device 'cuda' was asked for"):
        ANNToSNN(ann, device="cuda").fit(x)
    with pytest.raises(DeviceError, match="device 'cuda' was asked for"):
        AGDClassifier(specs, T=2, epochs=1, device="cuda").fit(x, np.array([0, 1]))
