"""Neuron and synapse models as Brian2 equations.

A model is written once, as Brian2 equation strings (model, threshold, reset, refractory
period) and parameters with units. The Brian2 engine builds ``NeuronGroup``/``Synapses``
from it; the torch engine (:mod:`brainsnn.engine.neuron`) integrates the same equations.

Models are immutable; derive a new one with :meth:`EquationModel.replace` or
:meth:`EquationModel.extend`. Every model is parsed and unit-checked when it is made, so an
equation with a unit error fails at once with a message that names the line.

Example: an adaptive-threshold LIF whose threshold decays towards a resting value::

    from brainsnn.models import LIF
    import brian2 as b2
    adaptive = LIF.extend(
        equations="dtheta/dt = (theta_rest - theta) / tau_theta : 1",
        reset="theta += theta_plus",
        parameters={"theta_rest": 1.0, "tau_theta": 50 * b2.ms, "theta_plus": 0.2},
        initial={"theta": "theta_rest"},
    ).replace(threshold="v >= theta", name="adaptive_lif")

Change one equation line with :meth:`EquationModel.substitute` (``LIF.substitute("v",
"dv/dt = (v_rest - v) / tau_m : 1")``); :meth:`EquationModel.diff` shows what differs
between two models.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import re
from collections.abc import Mapping
from types import MappingProxyType

import brian2 as b2
import numpy as np
from brian2.core.variables import Constant, Variable
from brian2.equations.equations import (DIFFERENTIAL_EQUATION, PARAMETER, SUBEXPRESSION,
                                        Equations)
from brian2.equations.unitcheck import check_units_statements
from brian2.parsing.expressions import is_boolean_expression, parse_expression_dimensions
from brian2.parsing.statements import parse_statement
from brian2.stateupdaters.base import StateUpdateMethod
from brian2.units.fundamentalunits import (DimensionMismatchError, get_dimensions,
                                           get_unit_for_display)
from brian2.utils.stringtools import get_identifiers
from brainsnn.errors import ModelError

__all__ = [
    "ModelError",
    "EquationModel",
    "NeuronModel",
    "SynapseModel",
    "IF",
    "LIF",
    "DIEHL_COOK_EXCITATORY",
    "DIEHL_COOK_INHIBITORY",
]




# Names that Brian2 provides to every group.
_GROUP_NAMES = {"t": b2.second, "dt": b2.second, "t_in_timesteps": 1, "i": 1, "N": 1,
                "lastspike": b2.second, "not_refractory": 1}
_SYNAPSE_NAMES = {"i": 1, "j": 1, "N_incoming": 1, "N_outgoing": 1, "lastupdate": b2.second}


def _dims(value):
    return get_dimensions(value) if not isinstance(value, str) else None


def _unit_name(dim):
    return str(get_unit_for_display(dim))


def _temporaries(code):
    """Temporary variables that statements define (``name = ...`` with an unknown name).

    Brian2 allows them in reset and on_pre/on_post code; they are dimensionless here only
    for the name check (Brian2 checks their units when it builds the group).
    """
    names = [m.group(1) for m in (re.match(r"\s*([A-Za-z]\w*)\s*=(?!=)", line)
                                  for line in _statement_lines(code)) if m]
    return {name: Variable(name=name, dimensions=get_dimensions(1)) for name in names}


def _statement_lines(code):
    """The statements of a code block, split as Brian2 splits them (newlines and ``;``)."""
    return [line for line in re.split(r"[;\n]", code or "")
            if line.strip() and not line.strip().startswith("#")]


def _parse_statements(code, model_name, where):
    """``[(target, op, expr)]`` of a code block; a ModelError names a malformed statement."""
    out = []
    for line in _statement_lines(code):
        try:
            target, op, expr, _ = parse_statement(line.strip())
            ast.parse(expr.strip(), mode="eval")
        except (ValueError, SyntaxError) as exc:
            raise ModelError(f"model {model_name!r}: {where} statement {line.strip()!r} does "
                             "not parse: expected 'var = expr' (or +=, -=, *=, /=) with a "
                             f"valid expression ({str(exc).splitlines()[0]})") from None
        out.append((target, op, expr))
    return out


def _defined_variable(line):
    """The variable an equation line defines (None if the line is not an equation)."""
    try:
        return next(iter(Equations(line).keys()))
    except Exception:  # not a complete equation line (Brian2 raises several kinds)
        return None


def _freeze(mapping):
    return MappingProxyType(dict(mapping or {}))


def _rebuild_model(cls, fields):
    """Unpickling helper: a model from its fields (read-only mappings as plain dicts)."""
    return cls(**fields)


@dataclasses.dataclass(frozen=True)
class EquationModel:
    """Brian2 equations plus the parameters (with units) their names refer to.

    Attributes
    ----------
    name : str
        Short identifier, used for group names and in results files.
    equations : str
        Brian2 model equations (differential equations, subexpressions, parameters).
    parameters : Mapping[str, Quantity | float]
        Namespace of constants used in the strings (values with Brian2 units).
    initial : Mapping[str, Quantity | float | str]
        Initial values of state variables (a value or a Brian2 expression string).
    method : str
        Brian2 state-update method ("exact", "euler", ...).
    """

    name: str
    equations: str
    parameters: Mapping = dataclasses.field(default_factory=dict)
    initial: Mapping = dataclasses.field(default_factory=dict)
    method: str = "exact"

    #: flags Brian2 accepts on each kind of equation (NeuronGroup)
    _FLAGS = {DIFFERENTIAL_EQUATION: {"unless refractory"},
              PARAMETER: {"constant", "shared", "linked"},
              SUBEXPRESSION: {"shared", "constant over dt"}}

    def __post_init__(self):
        object.__setattr__(self, "parameters", _freeze(self.parameters))
        object.__setattr__(self, "initial", _freeze(self.initial))
        self.validate()

    # -- copying and pickling (models are immutable; their mappings are read-only views) --
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields = {k: dict(v) if isinstance(v, MappingProxyType) else v for k, v in fields.items()}
        return (_rebuild_model, (type(self), fields))

    # -- derivation -------------------------------------------------------------------
    def replace(self, **changes):
        """A copy with some fields replaced (validated like a new model)."""
        return dataclasses.replace(self, **changes)

    def with_parameters(self, **parameters):
        """A copy with some parameter values changed or added."""
        return self.replace(parameters={**self.parameters, **parameters})

    def substitute(self, old, new):
        """A copy with one equation line replaced by ``new``.

        ``old`` is the variable the line defines (``"v"`` for ``dv/dt = ...``) or the line
        itself (spaces do not matter). A :class:`ModelError` lists the lines when none matches.
        """
        lines = self.equations.splitlines()
        squeeze = "".join(old.split())
        found = [k for k, line in enumerate(lines) if line.strip() and (
            "".join(line.split()) == squeeze or _defined_variable(line) == old.strip())]
        if len(found) != 1:
            listing = "\n  ".join(line.strip() for line in lines if line.strip())
            raise ModelError(f"model {self.name!r}: no equation line {old!r} to substitute "
                             "(give the variable a line defines, or the whole line); the lines "
                             f"are:\n  {listing}")
        indent = lines[found[0]][:len(lines[found[0]]) - len(lines[found[0]].lstrip())]
        lines[found[0]] = indent + new.strip()
        return self.replace(equations="\n".join(lines))

    def diff(self, other) -> str:
        """What differs from ``other``, as a unified diff of the fields (empty if nothing)."""
        def text(model):
            out = []
            for field in dataclasses.fields(model):
                value = getattr(model, field.name)
                if field.name == "equations":
                    out += [f"equations: {line.strip()}" for line in value.splitlines()
                            if line.strip()]
                elif isinstance(value, Mapping):
                    out += [f"{field.name}: {k} = {v!r}" for k, v in sorted(value.items())]
                else:
                    out += [f"{field.name}: {line}" for line in str(value).splitlines() or [""]]
            return out
        return "\n".join(difflib.unified_diff(text(self), text(other), self.name, other.name,
                                               lineterm="", n=0))

    def _extended_fields(self, equations=None, parameters=None, initial=None):
        return {
            "equations": self.equations + ("\n" + equations if equations else ""),
            "parameters": {**self.parameters, **(parameters or {})},
            "initial": {**self.initial, **(initial or {})},
        }

    # -- Brian2 views -----------------------------------------------------------------
    @property
    def brian2_equations(self) -> Equations:
        return Equations(self.equations)

    def namespace(self, **extra):
        """The parameters as a Brian2 namespace dict (``extra`` entries win)."""
        return {**self.parameters, **extra}

    def state_variables(self):
        """Names of the differential-equation and parameter state variables."""
        eqs = self.brian2_equations
        return [name for name, eq in eqs.items() if eq.type != "subexpression"]

    def differential_variables(self):
        return list(self.brian2_equations.diff_eq_names)

    # -- validation -------------------------------------------------------------------
    def _builtin_names(self):
        return _GROUP_NAMES

    def _variables(self):
        """Brian2 Variable objects for every name the strings may use (for unit checks)."""
        try:
            eqs = self.brian2_equations
        except Exception as exc:  # Brian2 raises EquationError / SyntaxError subclasses
            raise ModelError(f"model {self.name!r}: equations do not parse: {exc}") from exc
        variables = {}
        for name, dim in self._builtin_names().items():
            variables[name] = Variable(name=name, dimensions=get_dimensions(dim),
                                       dtype=bool if name == "not_refractory" else None)
        for name, value in self.parameters.items():
            if isinstance(value, str):
                raise ModelError(f"model {self.name!r}: parameter {name!r} must be a value "
                                 f"with units, not the string {value!r}")
            if callable(value) and not isinstance(value, b2.Quantity):
                raise ModelError(
                    f"model {self.name!r}: parameter {name!r} is a function "
                    f"({type(value).__name__}); model parameters are values with units, "
                    "because a model runs on both engines and is stored in results files, "
                    "and the torch engine has no functions of time: give time-varying input "
                    "through the synapses or the torch input instead")
            variables[name] = Constant(name=name, value=value, dimensions=_dims(value))
        for name, eq in eqs.items():
            dtype = {"boolean": bool, "integer": np.int32}.get(eq.var_type, np.float64)
            variables[name] = Variable(name=name, dimensions=eq.dim, dtype=dtype)
        return eqs, variables

    def _check_definition(self, eqs):
        """Name, method and flags, as Brian2 will check them when it builds the group."""
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z]\w*", self.name):
            raise ModelError(f"model name {self.name!r} must be a non-empty identifier (letters, "
                             "digits and underscores, starting with a letter): Brian2 names "
                             "its groups after it")
        methods = [self.method] if isinstance(self.method, str) else (
            list(self.method) if isinstance(self.method, (tuple, list)) else [])
        for method in methods:
            if method not in StateUpdateMethod.stateupdaters:
                raise ModelError(f"model {self.name!r}: unknown integration method {method!r}; "
                                 "expected one of "
                                 f"{', '.join(StateUpdateMethod.stateupdaters)}")
        for name, eq in eqs.items():
            bad = set(eq.flags) - self._FLAGS.get(eq.type, set())
            if bad:
                raise ModelError(
                    f"model {self.name!r}: flag(s) {', '.join(sorted(map(repr, bad)))} on "
                    f"{name} are not allowed on this kind of equation; allowed: "
                    f"{', '.join(sorted(self._FLAGS.get(eq.type, ()))) or 'none'}")

    def _check_identifiers(self, text, variables, where):
        known = set(variables) | set(b2.DEFAULT_FUNCTIONS) | set(b2.DEFAULT_CONSTANTS)
        known |= {"xi"} | {n for n in get_identifiers(text) if n.startswith("xi_")}
        missing = sorted(n for n in get_identifiers(text)
                         if n not in known and not isinstance(getattr(b2.units, n, None), b2.Quantity))
        if missing:
            raise ModelError(f"model {self.name!r}: {where} uses undefined name(s) "
                             f"{', '.join(missing)}; add them to parameters or equations")

    def _check_expression(self, expr, expected_dim, variables, where):
        self._check_identifiers(expr, variables, where)
        try:
            dim = parse_expression_dimensions(expr, self._with_units(variables, expr))
        except (DimensionMismatchError, SyntaxError, KeyError, ValueError, TypeError,
                AssertionError) as exc:
            raise ModelError(f"model {self.name!r}: {where} {expr!r}: {exc}") from exc
        if expected_dim is not None and dim is not expected_dim and dim != expected_dim:
            raise ModelError(
                f"model {self.name!r}: {where} {expr!r} has units "
                f"{_unit_name(dim)} but {_unit_name(expected_dim)} is expected")
        return dim

    def _check_statements(self, code, variables, where):
        if not code or not code.strip():
            return
        variables = {**_temporaries(code), **variables}
        self._check_identifiers(code, variables, where)
        try:
            check_units_statements(code, self._with_units(variables, code))
        except (DimensionMismatchError, SyntaxError, KeyError, ValueError, TypeError,
                AssertionError) as exc:
            raise ModelError(f"model {self.name!r}: {where} {code!r}: {exc}") from exc

    @staticmethod
    def _with_units(variables, text):
        """``variables`` plus Brian2's functions, constants and the unit names in ``text``."""
        names = dict(variables)
        for ident in get_identifiers(text):
            if ident in names:
                continue
            if ident in b2.DEFAULT_FUNCTIONS:
                names[ident] = b2.DEFAULT_FUNCTIONS[ident]
            elif ident in b2.DEFAULT_CONSTANTS:
                names[ident] = b2.DEFAULT_CONSTANTS[ident]
            elif isinstance(getattr(b2.units, ident, None), b2.Quantity):
                unit = getattr(b2.units, ident)
                names[ident] = Constant(name=ident, value=unit, dimensions=get_dimensions(unit))
        return names

    def _check_equations(self, eqs, variables):
        for name, eq in eqs.items():
            if eq.expr is None:
                continue
            expr = str(eq.expr.code)
            if eq.type == DIFFERENTIAL_EQUATION:
                expected = eq.dim / b2.second.dim
                where = f"right-hand side of d{name}/dt"
                expr = re.sub(r"\bxi(_\w+)?\b", "(0*second**-0.5)", expr) if "xi" in expr else expr
                # stochastic terms have units of sqrt(time): checked by Brian2 at run time
                try:
                    self._check_expression(expr, expected, variables, where)
                except ModelError:
                    if "xi" in str(eq.expr.code):
                        continue
                    raise
            else:
                self._check_expression(expr, eq.dim, variables, f"expression for {name}")

    def _check_initial(self, variables):
        for name, value in self.initial.items():
            if name not in variables:
                raise ModelError(f"model {self.name!r}: initial value for unknown variable {name!r}")
            if isinstance(value, str):
                self._check_expression(value, variables[name].dim, variables,
                                       f"initial value of {name}")
            elif get_dimensions(value) != variables[name].dim:
                raise ModelError(f"model {self.name!r}: initial value {value!r} of {name} has "
                                 f"the wrong units (expected {_unit_name(variables[name].dim)})")

    def validate(self):
        """Parse all strings and check units; raise :class:`ModelError` on any problem."""
        eqs, variables = self._variables()
        self._check_definition(eqs)
        self._check_equations(eqs, variables)
        self._check_initial(variables)
        return self



@dataclasses.dataclass(frozen=True)
class NeuronModel(EquationModel):
    """A neuron: equations, threshold condition, reset statements, refractoriness.

    ``input_variable`` names the state variable that synapses increment on a presynaptic
    spike (``on_pre: {input_variable}_post += w``); an artificial layer driving the neuron
    adds its constant input to that same variable every time step.
    """

    threshold: str = "v >= theta"
    reset: str = "v = 0"
    refractory: object = None  # Quantity (time) or a Brian2 condition string, or None
    input_variable: str = "v"

    def extend(self, equations=None, reset=None, parameters=None, initial=None):
        """A copy with equation lines and reset statements appended, parameters added."""
        fields = self._extended_fields(equations, parameters, initial)
        if reset:
            fields["reset"] = self.reset + "\n" + reset
        return self.replace(**fields)

    def validate(self):
        eqs, variables = self._variables()
        self._check_definition(eqs)
        self._check_equations(eqs, variables)
        self._check_initial(variables)
        self._check_expression(self.threshold, None, variables, "threshold")
        self._check_condition(variables)
        self._check_reset_targets(eqs)
        self._check_statements(self.reset, variables, "reset")
        if isinstance(self.refractory, str):
            self._check_expression(self.refractory, None, variables, "refractory")
        elif self.refractory is not None and get_dimensions(self.refractory) != b2.second.dim:
            raise ModelError(f"model {self.name!r}: refractory must be a time or a condition "
                             f"string, got {self.refractory!r}")
        if self.input_variable not in eqs:
            raise ModelError(f"model {self.name!r}: input_variable {self.input_variable!r} "
                             "is not a variable of the equations")
        return self

    def _check_condition(self, variables):
        try:
            boolean = is_boolean_expression(self.threshold, {**variables, **b2.DEFAULT_FUNCTIONS})
        except (SyntaxError, ValueError, KeyError):
            boolean = False
        if not boolean:
            raise ModelError(f"model {self.name!r}: threshold {self.threshold!r} is not a "
                             "condition; expected a comparison such as 'v >= theta' (terms "
                             "may be joined with 'and'/'or')")

    def _check_reset_targets(self, eqs):
        """Every reset statement writes a state variable or a temporary read later on (a name
        that is neither is a typo: Brian2 would take it for a temporary and never reset)."""
        statements = _parse_statements(self.reset, self.name, "reset")
        writable = {n for n, eq in eqs.items() if eq.type != SUBEXPRESSION} | {
            "lastspike", "not_refractory"}
        for k, (target, op, _) in enumerate(statements):
            if target in writable:
                continue
            if target in self.parameters:
                raise ModelError(f"model {self.name!r}: the reset writes to the parameter "
                                 f"{target!r}; parameters are constants (declare it as a state "
                                 f"variable, '{target} : <unit>', to change it)")
            if target in eqs:
                raise ModelError(f"model {self.name!r}: the reset writes to the subexpression "
                                 f"{target!r}; only state variables can be assigned")
            read_later = any(target in get_identifiers(expr) for _, _, expr in statements[k + 1:])
            if op != "=" or not read_later:
                state = ", ".join(sorted(n for n in writable if n not in ("lastspike", "not_refractory")))
                raise ModelError(f"model {self.name!r}: the reset assigns to {target!r}, which "
                                 f"is not a state variable (state variables: {state}) nor a "
                                 "temporary used by a later statement; is it a typo?")

    def neuron_group(self, n, name=None, namespace=None, **kwargs):
        """Build a ``brian2.NeuronGroup`` of ``n`` neurons with initial values set."""
        group = b2.NeuronGroup(
            n, self.equations, threshold=self.threshold, reset=self.reset,
            refractory=self.refractory if self.refractory is not None else False,
            method=self.method, namespace=self.namespace(**(namespace or {})),
            name=name or self.name + "*", **kwargs)
        for var, value in self.initial.items():
            setattr(group, var, value)
        return group


@dataclasses.dataclass(frozen=True)
class SynapseModel(EquationModel):
    """A synapse: model equations (weight, traces), on_pre and on_post statements.

    Names ending in ``_pre``/``_post`` refer to the pre- and postsynaptic neuron's variables;
    they are checked when the Synapses object is built, where both neuron models are known.
    """

    on_pre: str = ""
    on_post: str = ""

    _FLAGS = {DIFFERENTIAL_EQUATION: {"event-driven", "clock-driven"},
              PARAMETER: {"constant", "shared"},
              SUBEXPRESSION: {"summed", "shared", "constant over dt"}}

    def _builtin_names(self):
        return {**_GROUP_NAMES, **_SYNAPSE_NAMES}

    def _check_identifiers(self, text, variables, where):
        text_local = re.sub(r"\b\w+_(pre|post)\b", "0", text)
        super()._check_identifiers(text_local, variables, where)

    def validate(self):
        eqs, variables = self._variables()
        self._check_definition(eqs)
        for where, code in (("on_pre", self.on_pre), ("on_post", self.on_post)):
            _parse_statements(code, self.name, where)
        own = set(variables)  # parameters and equation variables (e.g. tau_pre is one)
        for name in list(get_identifiers(self.equations + self.on_pre + self.on_post)):
            if re.fullmatch(r"\w+_(pre|post)", name) and name not in variables:
                # dimension unknown until the synapse is connected; treat as dimensionless
                # only for the parse check (units are checked by Brian2 at build time)
                variables[name] = Variable(name=name, dimensions=get_dimensions(1))
        try:
            self._check_equations(eqs, variables)
        except ModelError:
            # only equations that use neuron variables (v_post, ...) of unknown units
            # are left to Brian2's check at build time
            if not any(re.fullmatch(r"\w+_(pre|post)", n) and n not in own
                       for n in get_identifiers(self.equations)):
                raise
        self._check_initial(variables)
        for where, code in (("on_pre", self.on_pre), ("on_post", self.on_post)):
            self._check_identifiers(code, {**variables, **_temporaries(code)}, where)
        return self

    def extend(self, equations=None, on_pre=None, on_post=None, parameters=None, initial=None):
        fields = self._extended_fields(equations, parameters, initial)
        if on_pre:
            fields["on_pre"] = self.on_pre + "\n" + on_pre
        if on_post:
            fields["on_post"] = self.on_post + "\n" + on_post
        return self.replace(**fields)

    def synapses(self, source, target, name=None, namespace=None, **kwargs):
        """Build ``brian2.Synapses`` between two groups (connect them yourself)."""
        syn = b2.Synapses(source, target, model=self.equations, on_pre=self.on_pre or None,
                          on_post=self.on_post or None, method=self.method,
                          namespace=self.namespace(**(namespace or {})),
                          name=name or self.name + "*", **kwargs)
        return syn


# -- The package's neuron models -----------------------------------------------------------

#: Integrate-and-fire (conversion): v[t] = v[t-1] + input; spike at v >= theta; v -= theta.
IF = NeuronModel(
    name="if",
    equations="dv/dt = 0/second : 1",
    threshold="v >= theta",
    reset="v -= theta",
    parameters={"theta": 1.0},
    initial={"v": 0.0},
    # Brian2's "exact" integrator rejects dv/dt = 0 (singular linear system); Euler integrates
    # it exactly (v unchanged between inputs).
    method="euler",
)

#: Leaky integrate-and-fire (AGD): v decays with tau_m, lambda = exp(-dt/tau_m).
LIF = NeuronModel(
    name="lif",
    equations="dv/dt = -v / tau_m : 1",
    threshold="v >= theta",
    reset="v = 0",
    parameters={"theta": 1.0, "tau_m": 20 * b2.ms},
    initial={"v": 0.0},
    method="exact",
)

#: Diehl & Cook (2015) excitatory neuron: conductance LIF with adaptive threshold theta.
#: theta grows by plastic * theta_plus at each spike and decays with tau_theta / plastic;
#: ``plastic`` is 1 while learning (less under a falling plasticity schedule, see
#: DiehlCookNetwork's eta_final) and 0 when testing, which freezes theta.
DIEHL_COOK_EXCITATORY = NeuronModel(
    name="dc_exc",
    equations="""
        dv/dt = ((v_rest - v) + (I_synE + I_synI) / nS) / tau_m : volt (unless refractory)
        I_synE = ge * nS * -v : amp
        I_synI = gi * nS * (v_inh - v) : amp
        dge/dt = -ge / tau_ge : 1
        dgi/dt = -gi / tau_gi : 1
        dtheta/dt = -plastic * theta / tau_theta : volt
        plastic : 1 (shared)
    """,
    threshold="v > (theta - theta_offset + v_thresh)",
    reset="v = v_reset\ntheta += plastic * theta_plus",
    refractory=5 * b2.ms,
    parameters={
        "v_rest": -65 * b2.mV, "v_reset": -65 * b2.mV, "v_thresh": -52 * b2.mV,
        "v_inh": -100 * b2.mV, "tau_m": 100 * b2.ms, "tau_ge": 1 * b2.ms, "tau_gi": 2 * b2.ms,
        "tau_theta": 1e7 * b2.ms, "theta_plus": 0.05 * b2.mV, "theta_offset": 20 * b2.mV,
    },
    initial={"v": "v_rest - 40*mV", "theta": 20 * b2.mV, "plastic": 1.0},
    method="euler",
    input_variable="ge",
)

#: Diehl & Cook (2015) inhibitory neuron (lateral inhibition partner).
DIEHL_COOK_INHIBITORY = NeuronModel(
    name="dc_inh",
    equations="""
        dv/dt = ((v_rest - v) + (I_synE + I_synI) / nS) / tau_m : volt (unless refractory)
        I_synE = ge * nS * -v : amp
        I_synI = gi * nS * (v_inh - v) : amp
        dge/dt = -ge / tau_ge : 1
        dgi/dt = -gi / tau_gi : 1
    """,
    threshold="v > v_thresh",
    reset="v = v_reset",
    refractory=2 * b2.ms,
    parameters={
        "v_rest": -60 * b2.mV, "v_reset": -45 * b2.mV, "v_thresh": -40 * b2.mV,
        "v_inh": -85 * b2.mV, "tau_m": 10 * b2.ms, "tau_ge": 1 * b2.ms, "tau_gi": 2 * b2.ms,
    },
    initial={"v": "v_rest - 40*mV"},
    method="euler",
    input_variable="ge",
)
