"""The equivalence catalogue: every standard model, torch engine against Brian2.

Each model of :mod:`brainsnn.catalogue` runs for 1,000 steps with 100 neurons in float64,
driven by a per-neuron constant drive ``I`` (spread so that some neurons are silent and some
fire fast) and by a per-neuron Poisson spike train with per-neuron weights added to the
input variable (one synapse per neuron, so Brian2 adds one weight per step, as the torch
engine does). Compared: the spike trains (identical) and every state variable at every step.

Tolerance of the states: ``|torch - brian2| <= 1e-9 * scale`` where ``scale`` is the largest
magnitude the variable takes in Brian2's run. Models whose step uses only + - * /, ``**2``
and loop invariants (evaluated with numpy on both sides) must agree bit for bit with Brian2's
numpy target; models with ``exp``, ``exprel`` or other powers inside the step (AdEx,
conductance LIF, Hodgkin-Huxley) agree to a few units in the last place per step, because
torch's and numpy's ``exp`` differ in the last bit (measured spread in the docs).
"""
import brian2 as b2
import numpy as np
import pytest
import torch

from brainsnn.brian.devices import device_session
from brainsnn.brian.export import run_torch_layers, synaptic_weight_name, to_brian2
from brainsnn.catalogue import (ADAPTIVE_THRESHOLD_LIF, ADEX, CATALOGUE, CONDUCTANCE_LIF,
                                EXACT_LIF, HODGKIN_HUXLEY, IZHIKEVICH, QIF)
from brainsnn.engine.neuron import TorchNeuron

torch.set_num_threads(1)

N, T = 100, 1000
RTOL = 1e-9

#: model -> (dt, drive I range (SI), input weight range (SI), rate per step, bit-exact?)
CASES = {
    EXACT_LIF.name: (0.1 * b2.ms, (0.0, 0.35e-9), (0.0, 3e-3), 0.02, True),
    ADAPTIVE_THRESHOLD_LIF.name: (1 * b2.ms, (0.5, 2.5), (0.0, 0.4), 0.05, True),
    CONDUCTANCE_LIF.name: (0.1 * b2.ms, (0.0, 0.3e-9), (0.0, 6e-9), 0.02, False),
    ADEX.name: (0.1 * b2.ms, (0.0, 1.0e-9), (0.0, 3e-3), 0.02, False),
    IZHIKEVICH.name: (0.5 * b2.ms, (0.0, 15.0), (0.0, 4.0), 0.02, True),
    QIF.name: (0.1 * b2.ms, (-1.0, 20.0), (0.0, 0.5), 0.02, True),
    HODGKIN_HUXLEY.name: (0.1 * b2.ms, (0.0, 1.0e-9), (0.0, 3e-3), 0.02, False),
}


def _drive(name, seed=0, steps=T):
    dt, (i_lo, i_hi), (w_lo, w_hi), rate, _ = CASES[name]
    rng = np.random.default_rng(seed)
    drive = rng.uniform(i_lo, i_hi, N)
    weights = rng.uniform(w_lo, w_hi, N)
    spikes = rng.random((steps, N)) < rate
    return dt, drive, weights, spikes


def run_torch(model, dt, drive, weights, spikes):
    """Spikes (T, N) bool and states {var: (T, N)} after every step, float64."""
    neuron = TorchNeuron(model, dt=dt)
    state = neuron.initial_state((1, N), dtype=torch.float64, I=torch.as_tensor(drive))
    inputs = torch.as_tensor(spikes * weights[None, :], dtype=torch.float64)
    out, record = [], {name: [] for name in model.state_variables()}
    with torch.no_grad():
        for t in range(len(spikes)):
            s, state = neuron(state, inputs[t][None])
            out.append(s[0].numpy().astype(bool))
            for name in record:
                record[name].append(state[name][0].double().numpy().copy())
    return np.array(out), {k: np.array(v) for k, v in record.items()}


def run_brian2(model, dt, drive, weights, spikes, device="runtime", directory=None,
               target="numpy"):
    """The same in Brian2: one group, one synapse per neuron, same-step schedule."""
    with device_session(device, directory=directory):
        if device == "runtime":
            b2.prefs.codegen.target = target
        group = model.neuron_group(N, dt=dt)
        group.I = drive * _unit(model, "I")
        t_idx, k_idx = np.nonzero(spikes)
        gen = b2.SpikeGeneratorGroup(N, k_idx, t_idx * dt, dt=dt, when="groups", order=0)
        w = synaptic_weight_name(model)
        syn = b2.Synapses(gen, group, f"{w} : {_unit_name(model, model.input_variable)}",
                          on_pre=f"{model.input_variable}_post += {w}", dt=dt)
        syn.connect(j="i")
        setattr(syn, w, weights * _unit(model, model.input_variable))
        group.state_updater.when, group.state_updater.order = "groups", 10
        syn.pre.when, syn.pre.order = "groups", 11
        group.thresholder["spike"].when, group.thresholder["spike"].order = "groups", 12
        if model.reset.strip():
            group.resetter["spike"].when, group.resetter["spike"].order = "groups", 13
        names = model.state_variables()
        states = b2.StateMonitor(group, names, record=True, when="end")
        mon = b2.SpikeMonitor(group)
        net = b2.Network(group, gen, syn, states, mon)
        net.run(len(spikes) * dt, namespace={})
        if device != "runtime":
            b2.device.build(run=True, compile=True)
        out = np.zeros((len(spikes), N), dtype=bool)
        out[np.round(np.asarray(mon.t / dt)).astype(int), np.asarray(mon.i)] = True
        record = {name: np.asarray(getattr(states, name)).T for name in names}
    return out, record


def compare(name, torch_out, brian_out, rtol=RTOL):
    """Assert equal spikes and states within rtol of each variable's scale; return the
    largest relative state difference."""
    (s_torch, x_torch), (s_brian, x_brian) = torch_out, brian_out
    diff = np.argwhere(s_torch != s_brian)
    assert diff.size == 0, (f"{name}: {len(diff)} of {s_torch.size} spike decisions differ, "
                            f"first at (step, neuron) {tuple(diff[0])}")
    worst = 0.0
    for var, ref in x_brian.items():
        scale = np.max(np.abs(ref)) or 1.0
        err = np.max(np.abs(x_torch[var] - ref)) / scale
        assert err <= rtol, f"{name}: {var} differs by {err:.3g} of its scale (tolerance {rtol})"
        worst = max(worst, err)
    return worst


class _TorchRuns(dict):
    """The torch run of a catalogue model, made the first time a test asks for it."""

    def __missing__(self, name):
        self[name] = run_torch(CATALOGUE[name], *_drive(name))
        return self[name]


@pytest.fixture(scope="module")
def torch_runs():
    return _TorchRuns()


def test_every_catalogue_model_is_a_valid_model_with_a_drive():
    assert set(CATALOGUE) == set(CASES)
    for model in CATALOGUE.values():
        assert model.validate() is model and "I" in model.state_variables()


#: Brian2's numpy target evaluates exprel slowly (units checked at every call): the full
#: Hodgkin-Huxley run is slow-marked, a 200-step run of it is in the default run
NUMPY_CASES = [pytest.param(n, marks=pytest.mark.slow) if n == HODGKIN_HUXLEY.name else n
               for n in sorted(CASES)]


@pytest.mark.parametrize("name", NUMPY_CASES)
def test_torch_engine_equals_brian2_numpy(name, torch_runs):
    brian_out = run_brian2(CATALOGUE[name], *_drive(name))
    spikes = torch_runs[name][0]
    rate = spikes.mean()
    silent = (spikes.sum(0) == 0).mean()
    assert 0.001 < rate < 0.3, f"{name}: spike rate {rate} makes a weak test"
    assert silent < 0.9, f"{name}: {silent:.0%} of the neurons are silent"
    worst = compare(name, torch_runs[name], brian_out)
    if CASES[name][-1]:
        assert worst == 0.0, f"{name}: expected bit-identical states, worst {worst:.3g}"


def test_hodgkin_huxley_short_run_equals_brian2_numpy():
    drive = _drive(HODGKIN_HUXLEY.name, steps=200)
    torch_out = run_torch(HODGKIN_HUXLEY, *drive)
    assert torch_out[0].sum() > 50
    compare(HODGKIN_HUXLEY.name, torch_out, run_brian2(HODGKIN_HUXLEY, *drive))


def test_the_comparison_detects_a_changed_parameter(torch_runs):
    """A 1e-6 relative change of one parameter is caught (by the states if not the spikes)."""
    model = IZHIKEVICH.with_parameters(a=0.02 * (1 + 1e-6))
    brian_out = run_brian2(model, *_drive(IZHIKEVICH.name))
    with pytest.raises(AssertionError):
        compare(IZHIKEVICH.name, torch_runs[IZHIKEVICH.name], brian_out)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_engine_equals_brian2_cython(name, torch_runs):
    pytest.importorskip("Cython")
    brian_out = run_brian2(CATALOGUE[name], *_drive(name), target="cython")
    compare(name, torch_runs[name], brian_out)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_engine_equals_brian2_cpp_standalone(name, torch_runs, tmp_path):
    brian_out = run_brian2(CATALOGUE[name], *_drive(name), device="cpp_standalone",
                           directory=str(tmp_path / "cpp"))
    compare(name, torch_runs[name], brian_out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_catalogue_model_exports_through_to_brian2(name):
    """Each model as the hidden layer of a small network (20 inputs -> 30 neurons), exported
    with to_brian2 and run on Brian2: the same spikes as the torch engine."""
    model = CATALOGUE[name]
    dt, (i_lo, i_hi), (w_lo, w_hi), _, _ = CASES[name]
    torch.manual_seed(1)
    lin = torch.nn.Linear(20, 30, bias=True)
    with torch.no_grad():
        lin.weight.uniform_(w_lo / 2, w_hi / 2)
        lin.bias.uniform_(w_lo / 20, w_hi / 20)
    # the drive enters as a per-layer parameter: the export takes scalar parameters
    drive = model.extend(parameters={"I_0": (i_lo + i_hi) / 2 * _unit(model, "I")})
    layers = [lin, TorchNeuron(drive.substitute("I", f"I = I_0 : {_unit_name(model, 'I')}"), dt=dt)]
    rng = np.random.default_rng(2)
    spikes = (rng.random((150, 2, 20)) < 0.1).astype(float)
    ref = run_torch_layers(layers, spikes)["layer1"]
    out = to_brian2(layers, input_shape=(20,)).run(spikes, device="runtime", target="numpy")
    assert ref.mean() > 0.001, f"{name}: the exported network hardly spikes"
    assert np.array_equal(ref, out.spikes["layer1"]), (
        f"{name}: {(ref != out.spikes['layer1']).sum()} spike decisions differ")


def _unit(model, var):
    """The Brian2 unit of ``var`` (1 when dimensionless)."""
    dim = model.brian2_equations[var].dim
    return 1 if dim.is_dimensionless else b2.get_unit(dim)


def _unit_name(model, var):
    dim = model.brian2_equations[var].dim
    return "1" if dim.is_dimensionless else repr(b2.get_unit(dim))
