"""Standard neuron models of the field, ready to use on both engines.

Each model is a :class:`brainsnn.models.NeuronModel` with the parameters of its reference
publication (units as published). Every model has a per-neuron drive ``I`` (a state variable
set to 0; give each neuron its own value with ``initial_state(..., I=...)`` on the torch
engine or ``group.I = ...`` in Brian2) and receives synaptic input in ``input_variable``.
The test suite runs each on the torch engine and on Brian2 (numpy, cython, cpp_standalone)
and compares spikes and every state variable.

==========================  ============================  =================  ===========
name                        model                         method             dt (tests)
==========================  ============================  =================  ===========
``EXACT_LIF``               LIF, current input, 2 ms ref  exact              0.1 ms
``ADAPTIVE_THRESHOLD_LIF``  LIF with a threshold that     exact              1 ms
                            jumps and relaxes
``CONDUCTANCE_LIF``         LIF with excitatory and       exponential_euler  0.1 ms
                            inhibitory conductances
``ADEX``                    adaptive exponential IF       euler              0.1 ms
``IZHIKEVICH``              Izhikevich (2003), regular    euler              0.5 ms
                            spiking
``QIF``                     quadratic integrate-and-fire  rk4                0.1 ms
``HODGKIN_HUXLEY``          Hodgkin-Huxley (Traub &       exponential_euler  0.01 ms
                            Miles), ``exprel`` rates
==========================  ============================  =================  ===========

Example::

    import brian2 as b2
    from brainsnn.catalogue import ADEX
    from brainsnn.engine.neuron import TorchNeuron
    neuron = TorchNeuron(ADEX, dt=0.1 * b2.ms)
    group = ADEX.neuron_group(100, dt=0.1 * b2.ms)    # the same model in Brian2
"""
from __future__ import annotations

import brian2 as b2
from brian2 import mV, ms, nA, nS, pF, uF, um, cm, msiemens, siemens

from brainsnn.models import NeuronModel

__all__ = ["EXACT_LIF", "ADAPTIVE_THRESHOLD_LIF", "CONDUCTANCE_LIF", "ADEX", "IZHIKEVICH",
           "QIF", "HODGKIN_HUXLEY", "CATALOGUE"]

#: Leaky integrate-and-fire with a current drive and a 2 ms refractory period (v clamped),
#: integrated exactly (Brian2's linear solver).
EXACT_LIF = NeuronModel(
    name="exact_lif",
    equations="""
        dv/dt = (v_rest - v + R * I) / tau_m : volt (unless refractory)
        I : amp
    """,
    threshold="v > v_th",
    reset="v = v_reset",
    refractory=2 * ms,
    parameters={"v_rest": -70 * mV, "v_th": -50 * mV, "v_reset": -65 * mV,
                "tau_m": 20 * ms, "R": 100 * b2.Mohm},
    initial={"v": "v_rest"},
    method="exact",
)

#: LIF whose threshold theta jumps by theta_plus at every spike and relaxes to theta_rest
#: (the adaptive threshold of Diehl & Cook, dimensionless).
ADAPTIVE_THRESHOLD_LIF = NeuronModel(
    name="adaptive_threshold_lif",
    equations="""
        dv/dt = (I - v) / tau_m : 1
        dtheta/dt = (theta_rest - theta) / tau_theta : 1
        I : 1
    """,
    threshold="v >= theta",
    reset="v = 0; theta += theta_plus",
    parameters={"tau_m": 20 * ms, "theta_rest": 1.0, "tau_theta": 50 * ms, "theta_plus": 0.2},
    initial={"theta": "theta_rest"},
    method="exact",
)

#: Conductance-based LIF (COBA): excitatory and inhibitory conductances decaying
#: exponentially, synaptic input to g_e (siemens), 5 ms refractory period.
CONDUCTANCE_LIF = NeuronModel(
    name="conductance_lif",
    equations="""
        dv/dt = (g_L * (E_L - v) + g_e * (E_e - v) + g_i * (E_i - v) + I) / C : volt (unless refractory)
        dg_e/dt = -g_e / tau_e : siemens
        dg_i/dt = -g_i / tau_i : siemens
        I : amp
    """,
    threshold="v > v_th",
    reset="v = v_reset",
    refractory=5 * ms,
    parameters={"C": 200 * pF, "g_L": 10 * nS, "E_L": -60 * mV, "E_e": 0 * mV,
                "E_i": -80 * mV, "tau_e": 5 * ms, "tau_i": 10 * ms, "v_th": -50 * mV,
                "v_reset": -60 * mV},
    initial={"v": "E_L"},
    method="exponential_euler",
    input_variable="g_e",
)

#: Adaptive exponential integrate-and-fire (Brette & Gerstner 2005), with its adaptation
#: current w; spikes are cut at V_T + 5 Delta_T.
ADEX = NeuronModel(
    name="adex",
    equations="""
        dv/dt = (g_L * (E_L - v) + g_L * Delta_T * exp((v - V_T) / Delta_T) - w + I) / C : volt
        dw/dt = (a * (v - E_L) - w) / tau_w : amp
        I : amp
    """,
    threshold="v > V_T + 5 * Delta_T",
    reset="v = V_r; w += b",
    parameters={"C": 281 * pF, "g_L": 30 * nS, "E_L": -70.6 * mV, "V_T": -50.4 * mV,
                "Delta_T": 2 * mV, "tau_w": 144 * ms, "a": 4 * nS, "b": 0.0805 * nA,
                "V_r": -70.6 * mV},
    initial={"v": "E_L", "w": 0 * nA},
    method="euler",
)

#: Izhikevich (2003) in its published units (v in mV, t in ms), regular spiking (a, b, c, d);
#: semicolon-separated reset as published.
IZHIKEVICH = NeuronModel(
    name="izhikevich",
    equations="""
        dv/dt = (0.04 * v**2 + 5 * v + 140 - u + I) / ms : 1
        du/dt = a * (b * v - u) / ms : 1
        I : 1
    """,
    threshold="v >= 30",
    reset="v = c; u += d",
    parameters={"a": 0.02, "b": 0.2, "c": -65.0, "d": 8.0},
    initial={"v": -65.0, "u": "b * -65.0"},
    method="euler",
)

#: Quadratic integrate-and-fire (normal form of a saddle-node neuron), dimensionless,
#: integrated by fourth-order Runge-Kutta.
QIF = NeuronModel(
    name="qif",
    equations="""
        dv/dt = (v**2 + I) / tau : 1
        I : 1
    """,
    threshold="v >= v_peak",
    reset="v = v_reset",
    parameters={"tau": 10 * ms, "v_peak": 10.0, "v_reset": -10.0},
    initial={"v": -1.0},
    method="rk4",
)

_AREA = 20000 * um ** 2

#: Hodgkin-Huxley with the Traub & Miles rate functions written with exprel (Brian2's COBAHH
#: example); a spike is v crossing -40 mV, refractory while v stays above it; no reset.
HODGKIN_HUXLEY = NeuronModel(
    name="hodgkin_huxley",
    equations="""
        dv/dt = (g_l * (E_l - v) - g_na * (m*m*m) * h * (v - E_na) - g_kd * (n*n*n*n) * (v - E_k) + I) / C_m : volt
        dm/dt = 0.32 * (mV**-1) * 4 * mV / exprel((13 * mV - v + V_T) / (4 * mV)) / ms * (1 - m) - 0.28 * (mV**-1) * 5 * mV / exprel((v - V_T - 40 * mV) / (5 * mV)) / ms * m : 1
        dn/dt = 0.032 * (mV**-1) * 5 * mV / exprel((15 * mV - v + V_T) / (5 * mV)) / ms * (1 - n) - 0.5 * exp((10 * mV - v + V_T) / (40 * mV)) / ms * n : 1
        dh/dt = 0.128 * exp((17 * mV - v + V_T) / (18 * mV)) / ms * (1 - h) - 4 / (1 + exp((40 * mV - v + V_T) / (5 * mV))) / ms * h : 1
        I : amp
    """,
    threshold="v > -40 * mV",
    reset="",
    refractory="v > -40 * mV",
    parameters={"C_m": 1 * uF / cm ** 2 * _AREA, "g_l": 5e-5 * siemens / cm ** 2 * _AREA,
                "E_l": -65 * mV, "E_k": -90 * mV, "E_na": 50 * mV,
                "g_na": 100 * msiemens / cm ** 2 * _AREA,
                "g_kd": 30 * msiemens / cm ** 2 * _AREA, "V_T": -63 * mV},
    initial={"v": "E_l", "m": 0.05, "n": 0.3, "h": 0.6},
    method="exponential_euler",
)

#: Every model of the catalogue, by name.
CATALOGUE = {m.name: m for m in (EXACT_LIF, ADAPTIVE_THRESHOLD_LIF, CONDUCTANCE_LIF, ADEX,
                                 IZHIKEVICH, QIF, HODGKIN_HUXLEY)}
