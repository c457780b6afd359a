"""STDP rules as Brian2 synapse models (:class:`brainsnn.models.SynapseModel` objects).

Every rule here is a plastic excitatory synapse: its ``on_pre`` code transmits the spike
(``{target}_post += w``, the weight ``w`` being dimensionless: a conductance in units of the
postsynaptic neuron's ``ge``) and updates the weight; traces are ``event-driven``, so a rule
costs nothing between spikes. Weights are clipped to ``[0, w_max]``.

Learning can be switched on and off without rebuilding anything: with ``gate`` set (the
default ``"plastic_post"``, the Diehl & Cook neuron's shared ``plastic`` flag), every weight
change is multiplied by that variable.

Rules, as defined in this project (docs/techniques.md):

``diehl_cook_stdp`` (default)
    Diehl & Cook's trace rule with weight dependence. A presynaptic trace ``xpre`` and a
    postsynaptic trace ``xpost`` decay with ``tau_pre``/``tau_post`` and are set to 1 at a
    spike of their neuron (``trace="set"``; ``"add"`` adds 1 instead). At a postsynaptic
    spike ``dw = nu_post * (xpre - x_tar) * (w_max - w)**mu``; at a presynaptic spike
    ``dw = -nu_pre * xpost * w**mu``.
``triplet_stdp``
    The rule of Diehl & Cook's published code (a minimal triplet rule, Pfister & Gerstner
    2006): at a post spike ``dw = nu_post * xpre * xpost2``, where ``xpost2`` (slow post
    trace, ``tau_post2``) is read before it is set to 1; at a pre spike
    ``dw = -nu_pre * xpost``. It learns smooth digit prototypes where ``diehl_cook_stdp``
    (x_tar 0.4, mu 0.2) memorises single digits with weights near 0 or 1, and it is the
    default of ``protocols/diehl_cook.py`` (82.0 % validation accuracy after 10,000 MNIST
    training images at N=100 with ``nu_post=0.04``, vs 69.0 % for ``diehl_cook_stdp`` and
    74.3 % for nu_post 0.01; the protocol starts at 0.08 and lets plasticity fall to 0.01
    over the pass, see its NU_POST and ETA_FINAL).
``pair_stdp``
    Classic additive pair-based STDP with all-to-all traces (``+= 1``): at a post spike
    ``dw = nu_post * xpre``, at a pre spike ``dw = -nu_pre * xpost``.

Example::

    from brainsnn.brian.plasticity import diehl_cook_stdp
    rule = diehl_cook_stdp(mu=0.2, x_tar=0.4)
    syn = rule.synapses(inputs, exc)        # brian2.Synapses
    syn.connect()
"""
from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType

import brian2 as b2

from brainsnn.brian.defaults import ETA_FINAL, NU_POST  # noqa: F401  (re-exported)
from brainsnn.models import ModelError, SynapseModel

__all__ = ["STDPRule", "diehl_cook_stdp", "triplet_stdp", "pair_stdp", "make_rule", "RULES",
           "DIEHL_COOK_STDP"]


def _power(base: str, exponent: float) -> str:
    """``clip(base, 0, w_max)**mu`` as code, simplified for mu = 0 and 1 (no pow() call).

    The clip keeps the base non-negative: weight normalisation may push a weight above
    ``w_max`` and a negative number to a fractional power is NaN.
    """
    if exponent == 0:
        return "1"
    if exponent == 1:
        return f"clip({base}, 0, w_max)"
    return f"clip({base}, 0, w_max)**mu"


def _gated(expr: str, gate: str | None) -> str:
    return f"{gate} * {expr}" if gate else expr


def _check_common(name, nu_pre, nu_post, w_max, tau_pre, tau_post, trace):
    for label, value in (("nu_pre", nu_pre), ("nu_post", nu_post)):
        if not float(value) >= 0:
            raise ModelError(f"{name}: learning rate {label} must be >= 0, got {value!r}")
    if not float(w_max) > 0:
        raise ModelError(f"{name}: w_max must be > 0, got {w_max!r}")
    for label, value in (("tau_pre", tau_pre), ("tau_post", tau_post)):
        if b2.get_dimensions(value) != b2.second.dim or not float(value) > 0:
            raise ModelError(f"{name}: {label} must be a positive time (e.g. 20*ms), "
                             f"got {value!r}")
    if trace not in ("set", "add"):
        raise ModelError(f"{name}: trace must be 'set' (trace = 1 at a spike) or 'add' "
                         f"(trace += 1), got {trace!r}")


def _trace_update(var, trace):
    return f"{var} = 1" if trace == "set" else f"{var} += 1"


@dataclasses.dataclass(frozen=True)
class STDPRule(SynapseModel):
    """A plastic synapse model whose traces may live on the neurons (``traces="neuron"``).

    With per-synapse traces (``traces="synapse"``) this is an ordinary SynapseModel. With
    neuron traces, the synapse code reads ``xpre_pre``/``xpost_post`` and the neuron groups
    must hold the traces: :meth:`pre_neuron`/:meth:`post_neuron` extend a
    :class:`~brainsnn.models.NeuronModel` with them (equations ``pre_equations`` /
    ``post_equations``, reset code ``pre_reset``/``post_reset``). The traces of all synapses
    of one neuron are equal, so this gives the same weights while saving two ``exp()`` per
    synaptic event (the Diehl & Cook network runs several times faster).
    """

    traces: str = "synapse"
    pre_equations: str = ""
    pre_reset: str = ""
    post_equations: str = ""
    post_reset: str = ""
    trace_parameters: object = None  # parameters the neuron-side code needs

    def _extend_neuron(self, model, equations, reset):
        if self.traces != "neuron":
            return model
        if model.method not in ("exact", "linear", "exponential_euler"):
            # one Euler step of this form is the exact decay exp(-dt/tau) of the trace
            # (exact, linear and exponential Euler integrate the plain decay exactly)
            equations = re.sub(r"d(\w+)/dt = -\1 / (\w+) : 1",
                               r"d\1/dt = -\1 * (1 - exp(-dt / \2)) / dt : 1", equations)
        return model.extend(equations=equations, reset=reset,
                            parameters=dict(self.trace_parameters or {}))

    def pre_neuron(self, model):
        """``model`` with the presynaptic traces added (unchanged for synapse traces)."""
        return self._extend_neuron(model, self.pre_equations, self.pre_reset)

    def post_neuron(self, model):
        """``model`` with the postsynaptic traces added (unchanged for synapse traces)."""
        return self._extend_neuron(model, self.post_equations, self.post_reset)


def _rule(name, traces, trace_vars, trace, target, pre_weight, post_weight, parameters):
    """Assemble an :class:`STDPRule`.

    ``trace_vars``: (variable, tau parameter, side) tuples; ``pre_weight``/``post_weight``:
    weight statements written with ``{xpre}``-style placeholders for the trace names.
    """
    if traces not in ("synapse", "neuron"):
        raise ModelError(f"{name}: traces must be 'synapse' or 'neuron', got {traces!r}")
    names = {var: (var if traces == "synapse" else f"{var}_{side}")
             for var, _, side in trace_vars}
    pre_weight, post_weight = pre_weight.format(**names), post_weight.format(**names)
    odes = {var: f"d{var}/dt = -{var} / {tau} : 1" for var, tau, _ in trace_vars}
    updates = {side: "\n".join(_trace_update(var, trace) for var, _, sd in trace_vars if sd == side)
               for side in ("pre", "post")}
    fields = dict(name=name, parameters=parameters, initial={"w": 0.0}, method="exact",
                  traces=traces)
    if traces == "synapse":
        fields["equations"] = "w : 1\n" + "\n".join(f"{ode} (event-driven)" for ode in odes.values())
        fields["on_pre"] = f"{target}_post += w\n{updates['pre']}\n{pre_weight}"
        fields["on_post"] = f"{post_weight}\n{updates['post']}"
    else:
        taus = {tau for _, tau, _ in trace_vars}
        fields["equations"] = "w : 1"
        fields["on_pre"] = f"{target}_post += w\n{pre_weight}"
        fields["on_post"] = post_weight
        fields["trace_parameters"] = MappingProxyType({t: parameters[t] for t in taus})
        fields["parameters"] = {k: v for k, v in parameters.items() if k not in taus}
        for side in ("pre", "post"):
            fields[f"{side}_equations"] = "\n".join(odes[v] for v, _, sd in trace_vars if sd == side)
            fields[f"{side}_reset"] = updates[side]
    return STDPRule(**fields)


def diehl_cook_stdp(nu_pre=0.0001, nu_post=0.01, x_tar=0.4, mu=0.2, w_max=1.0,
                    tau_pre=20 * b2.ms, tau_post=20 * b2.ms, trace="set",
                    target="ge", gate="plastic_post", traces="synapse",
                    name="dc_stdp") -> STDPRule:
    """Diehl & Cook's trace rule with weight dependence ``mu`` (see the module docstring).

    Parameters
    ----------
    nu_pre, nu_post : float
        Learning rates (dimensionless, per spike) of depression at a pre spike and of
        the update at a post spike.
    x_tar : float
        Target value of the presynaptic trace at a post spike: inputs whose trace is
        below it are depressed.
    mu : float
        Weight dependence exponent (0: additive; 1: multiplicative soft bounds).
    w_max : float
        Largest weight (dimensionless, in units of the target conductance).
    tau_pre, tau_post : Quantity (time)
        Trace time constants.
    trace : {"set", "add"}
        A spike sets its trace to 1 (Diehl & Cook) or adds 1 to it.
    target : str
        Postsynaptic variable the spike increments by ``w``.
    gate : str or None
        Expression multiplying every weight change (``None``: always learning).
    traces : {"synapse", "neuron"}
        Where the traces live (see :class:`STDPRule`).
    """
    _check_common(name, nu_pre, nu_post, w_max, tau_pre, tau_post, trace)
    if not float(mu) >= 0:
        raise ModelError(f"{name}: mu must be >= 0, got {mu!r}")
    ltd = _gated(f"nu_pre * {{xpost}} * {_power('w', mu)}", gate)
    ltp = _gated(f"nu_post * ({{xpre}} - x_tar) * {_power('w_max - w', mu)}", gate)
    return _rule(name, traces, [("xpre", "tau_pre", "pre"), ("xpost", "tau_post", "post")],
                 trace, target, f"w = clip(w - {ltd}, 0, w_max)",
                 f"w = clip(w + {ltp}, 0, w_max)",
                 {"nu_pre": float(nu_pre), "nu_post": float(nu_post), "x_tar": float(x_tar),
                  "mu": float(mu), "w_max": float(w_max), "tau_pre": tau_pre,
                  "tau_post": tau_post})


def triplet_stdp(nu_pre=0.0001, nu_post=0.01, w_max=1.0, tau_pre=20 * b2.ms,
                 tau_post=20 * b2.ms, tau_post2=40 * b2.ms, trace="set", target="ge",
                 gate="plastic_post", traces="synapse", name="triplet_stdp") -> STDPRule:
    """The minimal triplet rule of Diehl & Cook's published code (see module docstring).

    ``tau_post2`` (time) is the slow postsynaptic trace whose value just before the
    post spike scales potentiation; the other parameters are as in :func:`diehl_cook_stdp`.
    """
    _check_common(name, nu_pre, nu_post, w_max, tau_pre, tau_post, trace)
    if b2.get_dimensions(tau_post2) != b2.second.dim or not float(tau_post2) > 0:
        raise ModelError(f"{name}: tau_post2 must be a positive time, got {tau_post2!r}")
    return _rule(name, traces, [("xpre", "tau_pre", "pre"), ("xpost", "tau_post", "post"),
                                ("xpost2", "tau_post2", "post")],
                 trace, target,
                 f"w = clip(w - {_gated('nu_pre * {xpost}', gate)}, 0, w_max)",
                 f"w = clip(w + {_gated('nu_post * {xpre} * {xpost2}', gate)}, 0, w_max)",
                 {"nu_pre": float(nu_pre), "nu_post": float(nu_post), "w_max": float(w_max),
                  "tau_pre": tau_pre, "tau_post": tau_post, "tau_post2": tau_post2})


def pair_stdp(nu_pre=0.0001, nu_post=0.01, w_max=1.0, tau_pre=20 * b2.ms,
              tau_post=20 * b2.ms, trace="add", target="ge", gate="plastic_post",
              traces="synapse", name="pair_stdp") -> STDPRule:
    """Additive pair-based STDP (all-to-all traces by default, ``trace="add"``)."""
    _check_common(name, nu_pre, nu_post, w_max, tau_pre, tau_post, trace)
    return _rule(name, traces, [("xpre", "tau_pre", "pre"), ("xpost", "tau_post", "post")],
                 trace, target,
                 f"w = clip(w - {_gated('nu_pre * {xpost}', gate)}, 0, w_max)",
                 f"w = clip(w + {_gated('nu_post * {xpre}', gate)}, 0, w_max)",
                 {"nu_pre": float(nu_pre), "nu_post": float(nu_post), "w_max": float(w_max),
                  "tau_pre": tau_pre, "tau_post": tau_post})


#: Factories by name (what ``--rule`` of the protocols selects).
RULES = {"diehl_cook": diehl_cook_stdp, "triplet": triplet_stdp, "pair": pair_stdp}

DIEHL_COOK_STDP = diehl_cook_stdp()


def make_rule(name: str, **parameters) -> SynapseModel:
    """The rule called ``name`` (one of :data:`RULES`) with some parameters changed."""
    if name not in RULES:
        raise ModelError(f"unknown STDP rule {name!r}; expected one of {', '.join(RULES)}")
    try:
        return RULES[name](**parameters)
    except TypeError as exc:
        raise ModelError(f"STDP rule {name!r}: {exc}") from exc
