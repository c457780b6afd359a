"""Torch engine: a brainsnn neuron model (Brian2 equations) as a batched PyTorch step.

The model is written once, as Brian2 equations (:class:`brainsnn.models.NeuronModel`). This
module asks Brian2 itself for the state-update code of those equations (its state updaters
produce "abstract code", e.g. ``_v = v*exp(-dt/tau_m)`` for the exact LIF integrator), parses
every expression with sympy (Brian2's ``str_to_sympy``), folds everything that does not depend
on a state variable into a float constant (parameters enter as SI floats, the way Brian2 uses
them internally), and writes one Python function per model that performs a whole time step
with torch operations. That function is compiled once (``exec``) and called every step: no
``torch.compile`` is needed.

One step of :class:`TorchNeuron` (the discrete form PAPER.md gives, as defined in this
project)::

    (refractoriness: not_refractory from t and lastspike, as Brian2 computes it)
    state update       (Brian2's abstract code for the model's method: exact, euler, rk4, ...)
    input_variable += input          (what ``on_pre: v_post += w`` does)
    spike = H(x) with a surrogate dH/dx       (x from the threshold condition, see below)
    (refractoriness: lastspike = t, not_refractory = False where spike)
    reset statements, applied where spike

Supported threshold conditions: one comparison ``a >= b``, ``a > b``, ``a <= b`` or ``a < b``
(``x = a - b`` for ``>=``/``>``, ``x = b - a`` for ``<=``/``<``; strict comparisons give no
spike at ``x == 0``), optionally combined with ``and`` with boolean terms that carry no
gradient (for example ``not_refractory``, added automatically when the model is refractory,
or a comparison of a parameter: when there are several comparisons, the surrogate goes to the
only one that involves a differential-equation variable or the input variable).

Reset statements ``var = expr``, ``var += expr``, ``var -= expr``, ``var *= expr``,
``var /= expr`` are applied with the spike ``s`` (0/1) as a mask, keeping the forward values
exact: ``var -= expr`` becomes ``var - s*expr``, ``var += expr`` becomes ``var + s*expr``,
``var = 0`` becomes ``var*(1 - s)`` and any other assignment ``var*(1 - s) + s*new``. With
``detach_reset=True`` (the default, as is common in surrogate-gradient practice) ``s`` in the
reset is detached from the graph, so gradients do not flow through the reset.

Refractoriness follows Brian2: ``not_refractory`` and ``lastspike`` are state variables,
``t = t_step * dt`` is computed in float64 from an integer step counter, the threshold is
``(condition) and not_refractory``, ``(unless refractory)`` equations are multiplied by
``int(not_refractory)`` (Brian2's ``add_refractoriness``), and input to an
``(unless refractory)`` variable is ignored while the neuron is refractory (Brian2 makes
such writes conditional on ``not_refractory``).

Parameters: model parameters are folded into the code as SI floats; a parameter given as a
tensor (per-neuron values) or listed in ``trainable`` (an ``nn.Parameter``) is read from the
module at every step instead. ``(shared)`` variables have one value per sample.

Unsupported constructs raise :class:`UnsupportedConstructError` naming the construct:
stochastic terms (``xi``), random functions (``rand``, ``randn``, ``poisson``), the neuron
index ``i`` and group size ``N``, ``(constant over dt)`` subexpressions, linked variables, and
threshold conditions other than those above.

Example::

    import torch, brian2 as b2
    from brainsnn.models import LIF
    from brainsnn.engine.neuron import TorchNeuron
    neuron = TorchNeuron(LIF, dt=1 * b2.ms)
    state = neuron.initial_state((32, 100))
    for t in range(T):
        spikes, state = neuron(state, inputs[t])   # inputs[t]: (32, 100)
    print(neuron.source)                           # the generated step

Inputs to other state variables (e.g. the inhibitory conductance of a two-synapse model) go
through ``neuron(state, input, inputs={"gi": ...})``, added at the same point of the step.

Speed: the generated step is plain eager PyTorch with the operations of a hand-written LIF
loop; ``protocols/bench_torch_engine.py`` measures the ratio of training and inference speed
against such a loop (target: at most 1.5 times slower; ``torch.compile`` is not used).
Translations are cached; neurons can be deep-copied and pickled (the step is regenerated).
"""
from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping

import brian2 as b2
import numpy as np
import sympy
import torch
from brian2.core.variables import Constant, Variable
from brian2.equations.equations import DIFFERENTIAL_EQUATION, PARAMETER, SUBEXPRESSION
from brian2.equations.refractory import add_refractoriness
from brian2.parsing.sympytools import str_to_sympy, sympy_to_str
from brian2.stateupdaters.base import StateUpdateMethod
from brian2.units.fundamentalunits import DIMENSIONLESS, get_dimensions
from brian2.utils.stringtools import get_identifiers
from torch import nn

from brainsnn.models import ModelError, NeuronModel
from brainsnn.engine.surrogate import SpikeFunction, check_surrogate
from brainsnn.errors import UnsupportedConstructError  # noqa: F401

__all__ = ["UnsupportedConstructError", "CompiledNeuronModel", "compile_neuron_model",
           "TorchNeuron", "TIME_STEP_VARIABLE"]

#: Key of the integer time-step counter in the state dict (present when the model uses ``t``,
#: ``lastspike`` or refractoriness). Brian2 computes ``t = t_step * dt`` in float64.
TIME_STEP_VARIABLE = "t_step"




# -- helpers available to generated code ----------------------------------------------------

def _bs_int(x, dtype=None):
    """Brian2's int(): booleans to 0/1 (of the state's float dtype), floats truncated."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool:
            return x.to(dtype or torch.get_default_dtype())
        return torch.trunc(x)
    return int(x)


def _bs_timestep(t, dt):
    """Brian2's timestep(t, dt) = int64((t + 1e-3*dt) / dt)."""
    if isinstance(t, torch.Tensor):
        return torch.trunc((t + 1e-3 * dt) / dt).to(torch.int64)
    return int((t + 1e-3 * dt) / dt)


def _bs_exprel(x):
    """(exp(x) - 1) / x with the limit 1 at x = 0."""
    small = x.abs() < 1e-8
    safe = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1.0 + x / 2.0, torch.expm1(safe) / safe)


def _bs_clip(x, low, high):
    return torch.clamp(x, low, high)


# Brian2 function name -> (name in generated code, python/math version for constant folding)
_FUNCTIONS = {
    "exp": ("_bs_torch.exp", math.exp), "log": ("_bs_torch.log", math.log),
    "log10": ("_bs_torch.log10", math.log10), "expm1": ("_bs_torch.expm1", math.expm1),
    "log1p": ("_bs_torch.log1p", math.log1p), "sqrt": ("_bs_torch.sqrt", math.sqrt),
    "sin": ("_bs_torch.sin", math.sin), "cos": ("_bs_torch.cos", math.cos),
    "tan": ("_bs_torch.tan", math.tan), "sinh": ("_bs_torch.sinh", math.sinh),
    "cosh": ("_bs_torch.cosh", math.cosh), "tanh": ("_bs_torch.tanh", math.tanh),
    "arcsin": ("_bs_torch.asin", math.asin), "arccos": ("_bs_torch.acos", math.acos),
    "arctan": ("_bs_torch.atan", math.atan), "abs": ("_bs_torch.abs", abs),
    "sign": ("_bs_torch.sign", lambda x: float(np.sign(x))),
    "floor": ("_bs_torch.floor", math.floor), "ceil": ("_bs_torch.ceil", math.ceil),
    "clip": ("_bs_clip", lambda x, lo, hi: min(max(x, lo), hi)),
    "int": ("_bs_int", _bs_int), "int_": ("_bs_int", _bs_int),
    "timestep": ("_bs_timestep", _bs_timestep),
    "exprel": ("_bs_exprel", lambda x: 1.0 if x == 0 else math.expm1(x) / x),
}
_RANDOM_FUNCTIONS = {"rand", "randn", "poisson"}
_GENERATED_NAMESPACE = {"_bs_torch": torch, "_bs_int": _bs_int, "_bs_timestep": _bs_timestep,
                        "_bs_exprel": _bs_exprel, "_bs_clip": _bs_clip}

_STATEMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*(=|\+=|-=|\*=|/=)\s*(.+?)\s*$")


def _si(value, what):
    """A parameter value as a float in SI units (Brian2's internal representation)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    try:
        return float(np.asarray(value, dtype=float)) if np.ndim(value) == 0 else None
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{what}: value {value!r} is not a number with units") from exc


class _DtVariable(Variable):
    """``dt`` as Brian2's state updaters expect it (``get_value()[0]`` is the step in s)."""

    def __init__(self, dt):
        super().__init__(name="dt", dimensions=b2.second.dim, scalar=True, constant=True,
                         read_only=True)
        self._dt = dt

    def get_value(self):
        return np.array([self._dt])


class _Renderer:
    """Render a Brian2 expression (string) as Python code with torch operations.

    Names of tensors (state variables, temporaries, tensor parameters) are kept; constants
    are replaced by their float values, and any subexpression that depends on no tensor is
    evaluated once here (in float64, as Brian2's C++ code evaluates loop invariants).
    """

    def __init__(self, constants, tensors, model_name):
        self.constants = constants      # name -> float/bool
        self.tensors = set(tensors)     # names bound to tensors in the generated function
        self.model_name = model_name

    # returns (code, is_constant, value)
    def render(self, expr):
        return self._node(ast.parse(expr.strip(), mode="eval").body)

    def code(self, expr):
        code, const, value = self.render(expr)
        return repr(value) if const else code

    def _node(self, node):
        meth = getattr(self, "_" + type(node).__name__, None)
        if meth is None:
            raise UnsupportedConstructError(
                f"model {self.model_name!r}: expression construct {type(node).__name__} is "
                "not supported by the torch engine")
        return meth(node)

    @staticmethod
    def _const(value):
        if isinstance(value, (bool, np.bool_)):
            value = bool(value)
        elif isinstance(value, (int, np.integer)):
            value = int(value)
        else:
            value = float(value)
        return repr(value), True, value

    def _Constant(self, node):
        return self._const(node.value)

    def _Name(self, node):
        name = node.id
        if name in self.tensors:
            return name, False, None
        if name in self.constants:
            return self._const(self.constants[name])
        if name in ("True", "False"):
            return self._const(name == "True")
        unit = getattr(b2.units, name, None)
        if isinstance(unit, b2.Quantity):
            return self._const(float(unit))
        if name in ("i", "N"):
            raise UnsupportedConstructError(
                f"model {self.model_name!r}: the neuron index 'i' and the group size 'N' are "
                "not supported by the torch engine (use a per-neuron parameter instead)")
        if name == "xi" or name.startswith("xi_"):
            raise UnsupportedConstructError(
                f"model {self.model_name!r}: stochastic term {name!r} is not supported by the "
                "torch engine (it needs a deterministic step)")
        raise UnsupportedConstructError(
            f"model {self.model_name!r}: name {name!r} is neither a state variable nor a "
            "parameter (the torch engine cannot resolve it)")

    def _BinOp(self, node):
        ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**",
               ast.Mod: "%", ast.FloorDiv: "//"}
        op = ops.get(type(node.op))
        if op is None:
            raise UnsupportedConstructError(
                f"model {self.model_name!r}: operator {type(node.op).__name__} is not supported")
        left, right = self._node(node.left), self._node(node.right)
        return self._combine(f"{{}} {op} {{}}", [left, right])

    @staticmethod
    def _literal(value):
        # parenthesised when negative: "-2.0 ** 2" would parse as -(2.0 ** 2)
        return f"({value!r})" if value < 0 else repr(value)

    def _combine(self, template, parts, fold=None):
        if all(p[1] for p in parts):
            if fold is None:
                code = template.format(*(self._literal(p[2]) for p in parts))
                value = eval(code, {"__builtins__": {}})
            else:
                value = fold(*(p[2] for p in parts))
            return self._const(value)
        return template.format(*(f"({p[0]})" if not p[1] else self._literal(p[2])
                                 for p in parts)), False, None

    def _UnaryOp(self, node):
        operand = self._node(node.operand)
        if isinstance(node.op, ast.USub):
            return self._combine("-{}", [operand])
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.Not):
            if operand[1]:
                return self._const(not operand[2])
            return f"~({operand[0]})", False, None
        raise UnsupportedConstructError(
            f"model {self.model_name!r}: unary operator {type(node.op).__name__} not supported")

    def _BoolOp(self, node):
        values = [self._node(v) for v in node.values]
        is_and = isinstance(node.op, ast.And)
        if all(v[1] for v in values):
            result = all(v[2] for v in values) if is_and else any(v[2] for v in values)
            return self._const(result)
        joiner = " & " if is_and else " | "
        return joiner.join(f"({v[0]})" if not v[1] else repr(bool(v[2])) for v in values), False, None

    def _Compare(self, node):
        if len(node.ops) != 1:
            raise UnsupportedConstructError(
                f"model {self.model_name!r}: chained comparisons (a < b < c) are not supported")
        ops = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
               ast.NotEq: "!="}
        op = ops[type(node.ops[0])]
        return self._combine(f"{{}} {op} {{}}", [self._node(node.left), self._node(node.comparators[0])])

    def _Call(self, node):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name in _RANDOM_FUNCTIONS:
            raise UnsupportedConstructError(
                f"model {self.model_name!r}: random function {name}() is not supported by the "
                "torch engine (it needs a deterministic step)")
        if name not in _FUNCTIONS:
            raise UnsupportedConstructError(
                f"model {self.model_name!r}: function {name}() is not supported by the torch "
                f"engine (supported: {', '.join(sorted(set(_FUNCTIONS) - {'int_'}))})")
        code_name, py_func = _FUNCTIONS[name]
        args = [self._node(a) for a in node.args]
        template = code_name + "(" + ", ".join("{}" for _ in args) + ")"
        if code_name == "_bs_int":      # booleans become numbers of the state's dtype
            template = "_bs_int({}, _bs_dtype)"
        return self._combine(template, args, fold=py_func)


class CompiledNeuronModel:
    """A neuron model translated into one Python function with torch operations.

    Attributes
    ----------
    model : NeuronModel
    dt : float
        Time step in seconds.
    state_names : list of str
        Keys of the state dict (state variables; ``t_step`` when time is used).
    shared : set of str
        State variables marked ``(shared)``: one value per sample.
    boolean : set of str
        Boolean state variables (``not_refractory``).
    derived : set of str
        State variables the step recomputes from others before any use, so it never reads
        them: ``not_refractory`` when the refractory period is a time (Brian2 derives it from
        ``lastspike`` and ``t`` at every step). A state dict may leave them out.
    source : str
        Source code of the generated step function (for inspection).
    """

    def __init__(self, model: NeuronModel, dt: float, parameters: Mapping | None = None,
                 tensor_parameters=()):
        if not isinstance(model, NeuronModel):
            raise TypeError(f"expected a brainsnn.models.NeuronModel, got {type(model).__name__}")
        self.model = model
        self.dt = float(dt)
        self.tensor_parameters = list(tensor_parameters)
        params = {**model.parameters, **(parameters or {})}
        self.constants = {}
        for name, value in params.items():
            if name in self.tensor_parameters:
                continue
            if callable(value) and not isinstance(value, b2.Quantity):
                raise UnsupportedConstructError(
                    f"model {model.name!r}: parameter {name!r} is a function "
                    f"({type(value).__name__}); the torch engine supports numbers with units")
            si = _si(value, f"model {model.name!r}: parameter {name!r}")
            if si is None:
                raise ModelError(f"model {model.name!r}: parameter {name!r} is an array; pass "
                                 "per-neuron values as a tensor parameter or a state variable")
            self.constants[name] = si
        for name in ("pi", "e", "inf"):
            self.constants.setdefault(name, float(b2.DEFAULT_CONSTANTS[name].value))
        self.constants["dt"] = self.dt
        self._compile()

    # -- analysis -----------------------------------------------------------------------
    def _equations(self):
        model = self.model
        eqs = model.brian2_equations
        for name, eq in eqs.items():
            code = str(eq.expr.code) if eq.expr is not None else ""
            for ident in get_identifiers(code):
                if ident == "xi" or ident.startswith("xi_"):
                    raise UnsupportedConstructError(
                        f"model {model.name!r}: stochastic term {ident!r} in the equation for "
                        f"{name} is not supported by the torch engine (it needs a "
                        "deterministic step)")
            flags = set(eq.flags)
            allowed = {DIFFERENTIAL_EQUATION: {"unless refractory"},
                       PARAMETER: {"constant", "shared"},
                       SUBEXPRESSION: {"shared"}}[eq.type]
            bad = flags - allowed
            if bad:
                raise UnsupportedConstructError(
                    f"model {model.name!r}: flag(s) {', '.join(sorted(bad))} on {name} are not "
                    "supported by the torch engine")
            if eq.var_type not in ("float", "boolean"):
                raise UnsupportedConstructError(
                    f"model {model.name!r}: variable {name} of type {eq.var_type} is not "
                    "supported by the torch engine (float and boolean are)")
        uses_unless = any("unless refractory" in eq.flags for eq in eqs.values())
        if model.refractory is not None:
            eqs = add_refractoriness(eqs)
        elif uses_unless:
            raise ModelError(f"model {model.name!r}: equations use (unless refractory) but the "
                             "model has no refractory period")
        return eqs

    def _variables(self, eqs):
        variables = {"dt": _DtVariable(self.dt),
                     "t": Variable(name="t", dimensions=b2.second.dim, scalar=True)}
        for name, value in {**self.model.parameters}.items():
            if name in self.tensor_parameters:
                variables[name] = Variable(name=name, dimensions=get_dimensions(value)
                                           if not isinstance(value, torch.Tensor) else DIMENSIONLESS,
                                           scalar=False, constant=True)
            else:
                variables[name] = Constant(name=name, value=self.constants.get(name, 0.0),
                                           dimensions=get_dimensions(value))
        for name, eq in eqs.items():
            if eq.type == SUBEXPRESSION:
                continue
            variables[name] = Variable(name=name, dimensions=eq.dim,
                                       constant="constant" in eq.flags,
                                       scalar="shared" in eq.flags,
                                       dtype=bool if eq.var_type == "boolean" else np.float64)
        return variables

    def _refractory_code(self):
        ref = self.model.refractory
        if ref is None:
            return ""
        if not isinstance(ref, str):
            return (f"not_refractory = timestep(t - lastspike, dt) >= "
                    f"timestep({float(ref)!r}, dt)")
        dims = self.model._check_expression(ref, None, self.model._variables()[1], "refractory")
        if dims is b2.second.dim:
            return f"not_refractory = timestep(t - lastspike, dt) >= timestep({ref}, dt)"
        return f"not_refractory = not_refractory or not ({ref})"

    def _substitute(self, expr):
        """Sympy-normalised expression string with subexpressions substituted."""
        sym = str_to_sympy(expr)
        for _ in range(len(self.subexpressions) + 1):
            repl = {s: self.subexpressions[s.name] for s in sym.free_symbols
                    if s.name in self.subexpressions}
            if not repl:
                break
            sym = sym.xreplace(repl)
        return sym

    # -- code generation ----------------------------------------------------------------
    def _compile(self):
        model = self.model
        eqs = self._equations()
        self.equations = eqs
        self.subexpressions = {name: str_to_sympy(str(eq.expr.code)) for name, eq in eqs.items()
                               if eq.type == SUBEXPRESSION}
        state = [name for name, eq in eqs.items() if eq.type != SUBEXPRESSION]
        self.shared = {name for name, eq in eqs.items()
                       if eq.type != SUBEXPRESSION and "shared" in eq.flags}
        self.boolean = {name for name, eq in eqs.items()
                        if eq.type != SUBEXPRESSION and eq.var_type == "boolean"}
        variables = self._variables(eqs)
        try:
            su_code = StateUpdateMethod.apply_stateupdater(eqs, variables, model.method,
                                                           group_name=model.name)
        except Exception as exc:
            raise ModelError(f"model {model.name!r}: Brian2 cannot integrate the equations with "
                             f"method {model.method!r}: {exc}") from exc
        if not isinstance(su_code, str):
            raise UnsupportedConstructError(f"model {model.name!r}: method {model.method!r} "
                                            "does not produce abstract code (GSL is not supported)")
        self.abstract_code = su_code
        all_text = "\n".join([su_code, model.threshold, model.reset, self._refractory_code()])
        uses_time = model.refractory is not None or "t" in get_identifiers(all_text) or any(
            "t" in get_identifiers(str(e)) for e in self.subexpressions.values())
        self.uses_time = uses_time
        self.state_names = list(state) + ([TIME_STEP_VARIABLE] if uses_time else [])

        temporaries = set()
        lines = ["def _bs_step(_bs_state, _bs_input, _bs_spike, _bs_params, _bs_detach=True, "
                 "_bs_extra=None):"]
        tensors = set(state) | set(self.tensor_parameters)
        # a refractory period given as a time: not_refractory comes from lastspike alone
        # (a boolean refractory condition keeps the previous value: not derived)
        self.derived = ({"not_refractory"} if self._refractory_code().startswith(
            "not_refractory = timestep(") else set())
        for name in state:
            if name not in self.derived:
                lines.append(f"    {name} = _bs_state[{name!r}]")
        for name in self.tensor_parameters:
            lines.append(f"    {name} = _bs_params[{name!r}]")
        lines.append(f"    _bs_dtype = _bs_state[{model.input_variable!r}].dtype")
        if uses_time:
            lines.append(f"    {TIME_STEP_VARIABLE} = _bs_state[{TIME_STEP_VARIABLE!r}]")
            lines.append(f"    t = {TIME_STEP_VARIABLE}.to(_bs_torch.float64) * {self.dt!r}")
            tensors.add("t")
        renderer = _Renderer(self.constants, tensors, model.name)

        def statement_lines(code, where):
            out = []
            for raw in code.split("\n"):
                if not raw.strip() or raw.strip().startswith("#"):
                    continue
                m = _STATEMENT.match(raw)
                if m is None:
                    raise UnsupportedConstructError(
                        f"model {model.name!r}: {where} statement {raw.strip()!r} is not of the "
                        "form 'var = expr' (or +=, -=, *=, /=)")
                out.append(m.groups())
            return out

        # refractoriness (before the state update, as in Brian2's state updater)
        ref_code = self._refractory_code()
        lines.append("    # refractoriness")
        for target, op, expr in statement_lines(ref_code, "refractory"):
            code = renderer.code(sympy_to_str(self._substitute(expr)))
            lines.append(f"    {target} = {code}")
        # state update
        lines.append(f"    # state update (Brian2 method {model.method!r})")
        for target, op, expr in statement_lines(su_code, "state update"):
            if target not in tensors:
                temporaries.add(target)
                renderer.tensors.add(target)
            code = renderer.code(sympy_to_str(self._substitute(expr)))
            if op != "=":
                code = f"{target} {op[0]} ({code})"
            lines.append(f"    {target} = {code}")
        # input
        lines.append("    # synaptic input")
        original = model.brian2_equations
        self.input_variables = [n for n in state if n not in self.boolean
                                and n not in ("lastspike",)]

        def add_input(var, source):
            if "unless refractory" in original[var].flags:
                # Brian2 makes writes to an (unless refractory) variable conditional on
                # not_refractory: synaptic input is ignored while the neuron is refractory
                return f"{var} = {var} + {source} * not_refractory.to({var}.dtype)"
            return f"{var} = {var} + {source}"

        lines.append("    if _bs_input is not None:")
        lines.append("        " + add_input(model.input_variable, "_bs_input"))
        lines.append("    if _bs_extra is not None:")
        for var in self.input_variables:
            lines.append(f"        if {var!r} in _bs_extra:")
            lines.append("            " + add_input(var, f"_bs_extra[{var!r}]"))
        # threshold
        lines.append(f"    # threshold: {model.threshold}")
        lines += self._threshold_lines(renderer)
        if model.refractory is not None:
            lines.append("    _bs_sb = _bs_s > 0")
            lines.append("    lastspike = _bs_torch.where(_bs_sb, t, lastspike)")
            lines.append("    not_refractory = not_refractory & ~_bs_sb")
        # reset
        lines.append(f"    # reset: {'; '.join(l.strip() for l in model.reset.splitlines() if l.strip())}")
        for target, op, expr in statement_lines(model.reset, "reset"):
            if target not in state:
                raise UnsupportedConstructError(
                    f"model {model.name!r}: reset assigns to {target!r}, which is not a state "
                    "variable")
            code, const, value = renderer.render(sympy_to_str(self._substitute(expr)))
            rhs = repr(value) if const else f"({code})"
            if target in self.boolean:
                new = rhs if op == "=" else f"{target} {op[0]} {rhs}"
                lines.append(f"    {target} = _bs_torch.where(_bs_s > 0, {new}, {target})")
            elif op == "+=":
                lines.append(f"    {target} = {target} + _bs_r * {rhs}")
            elif op == "-=":
                lines.append(f"    {target} = {target} - _bs_r * {rhs}")
            elif op == "=" and const and value == 0:
                lines.append(f"    {target} = {target} * (1.0 - _bs_r)")
            else:
                new = rhs if op == "=" else f"({target} {op[0]} {rhs})"
                lines.append(f"    {target} = {target} * (1.0 - _bs_r) + _bs_r * {new}")
        if uses_time:
            lines.append(f"    {TIME_STEP_VARIABLE} = {TIME_STEP_VARIABLE} + 1")
        items = ", ".join(f"{n!r}: {n}" for n in self.state_names)
        lines.append(f"    return _bs_s, {{{items}}}")
        self.source = "\n".join(lines) + "\n"
        namespace = dict(_GENERATED_NAMESPACE)
        exec(compile(self.source, f"<brainsnn torch step of {model.name}>", "exec"), namespace)
        self.step_function = namespace["_bs_step"]

    def _threshold_lines(self, renderer):
        model = self.model
        cond = str_to_sympy(model.threshold)
        terms = list(cond.args) if isinstance(cond, sympy.And) else [cond]
        relational = [c for c in terms if isinstance(c, (sympy.GreaterThan, sympy.StrictGreaterThan,
                                                         sympy.LessThan, sympy.StrictLessThan))]
        if len(relational) > 1:
            # the surrogate goes to the one comparison of a dynamic variable (differential
            # equation or input variable); the other terms are masks
            dynamic = set(self.equations.diff_eq_names) | {model.input_variable}
            relational = [c for c in relational
                          if {sym.name for sym in self._substitute(sympy_to_str(c)).free_symbols}
                          & dynamic]
        if len(relational) != 1:
            raise UnsupportedConstructError(
                f"model {model.name!r}: threshold {model.threshold!r} is not supported by the "
                "torch engine: it needs exactly one comparison a >= b, a > b, a <= b or a < b "
                "of a dynamic variable, optionally joined by 'and' with boolean terms")
        rel = relational[0]
        masks = [c for c in terms if c is not rel]
        if isinstance(rel, (sympy.GreaterThan, sympy.StrictGreaterThan)):
            high, low = rel.lhs, rel.rhs
        else:
            high, low = rel.rhs, rel.lhs
        strict = isinstance(rel, (sympy.StrictGreaterThan, sympy.StrictLessThan))
        # x = high - low as one final subtraction: x >= 0 exactly when high >= low (IEEE),
        # so the forward decision is the comparison Brian2 evaluates
        parts = [renderer.render(sympy_to_str(self._substitute(sympy_to_str(side))))
                 for side in (high, low)]
        if parts[0][1] and parts[1][1]:
            raise UnsupportedConstructError(
                f"model {model.name!r}: threshold {model.threshold!r} does not depend on a "
                "state variable")
        code = " - ".join(repr(p[2]) if p[1] else f"({p[0]})" for p in parts)
        out = [f"    _bs_x = {code}",
               f"    _bs_s = _bs_spike(_bs_x, {strict!r})"]
        mask_terms = [renderer.code(sympy_to_str(self._substitute(sympy_to_str(m)))) for m in masks]
        if model.refractory is not None:
            mask_terms.append("not_refractory")
        if mask_terms:
            mask = " & ".join(f"({m})" for m in mask_terms)
            out.append(f"    _bs_s = _bs_s * ({mask}).to(_bs_s.dtype)")
        out.append("    _bs_r = _bs_s.detach() if _bs_detach else _bs_s")
        return out


_CACHE: dict = {}
_CACHE_SIZE = 256


def _cache_key(model, dt, parameters, tensor_parameters):
    fields = (model.name, model.equations, model.threshold, model.reset, repr(model.refractory),
              model.method, model.input_variable, repr(sorted(model.parameters.items())),
              repr(sorted(model.initial.items())))
    return (type(model).__name__, fields, dt, repr(sorted((parameters or {}).items())),
            tuple(tensor_parameters))


def compile_neuron_model(model: NeuronModel, dt, parameters=None, tensor_parameters=()):
    """Translate ``model`` into a :class:`CompiledNeuronModel` (``dt`` a time or seconds).

    Translations are cached (a compiled model is immutable), so that building many layers,
    copying or unpickling neurons of the same model costs one translation.
    """
    dt = _si_dt(dt)
    if not isinstance(model, NeuronModel):
        raise TypeError(f"expected a brainsnn.models.NeuronModel, got {type(model).__name__}")
    key = _cache_key(model, dt, parameters, tensor_parameters)
    compiled = _CACHE.get(key)
    if compiled is None:
        compiled = CompiledNeuronModel(model, dt, parameters, tensor_parameters)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = compiled
    return compiled


def _si_dt(dt):
    if isinstance(dt, b2.Quantity):
        if get_dimensions(dt) is not b2.second.dim:
            raise ModelError(f"dt must be a time, got {dt!r}")
        return float(dt)
    dt = float(dt)
    if not dt > 0:
        raise ModelError(f"dt must be positive, got {dt!r}")
    return dt


class TorchNeuron(nn.Module):
    """A layer of neurons of a brainsnn model, one differentiable time step per call.

    Parameters
    ----------
    model : NeuronModel
        Brian2 equations, threshold, reset, refractoriness, parameters with units.
    dt : Quantity or float
        Time step (a Brian2 time, or seconds). Default 1 ms.
    surrogate : str
        Surrogate derivative of the spike (:data:`brainsnn.engine.surrogate.SURROGATES`).
    alpha : float
        Surrogate sharpness, in 1/(SI units of the threshold comparison).
    detach_reset : bool
        Detach the spike in the reset from the graph (default True).
    parameters : mapping, optional
        Parameter values that replace the model's (numbers with units, or SI floats).
        A ``torch.Tensor`` value (e.g. per-neuron thresholds, shape broadcastable to
        ``(batch, *neuron_shape)``) becomes a buffer, or an ``nn.Parameter`` when its name is
        in ``trainable``.
    trainable : iterable of str
        Parameters to learn by gradient descent (stored as ``nn.Parameter`` in SI units).

    Call ``spikes, state = neuron(state, input)``; ``state`` is a dict of tensors made by
    :meth:`initial_state`, ``input`` a tensor of shape ``(batch, *neuron_shape)`` (or None)
    added to ``model.input_variable`` after the state update.
    """

    def __init__(self, model: NeuronModel, dt=1 * b2.ms, surrogate: str = "triangle",
                 alpha: float = 1.0, detach_reset: bool = True, parameters=None,
                 trainable=()):
        super().__init__()
        self.model = model
        self.surrogate = check_surrogate(surrogate)
        self.alpha = float(alpha)
        self.detach_reset = bool(detach_reset)
        parameters = dict(parameters or {})
        trainable = list(trainable)
        for name in list(parameters) + trainable:
            if name not in model.parameters:
                raise ModelError(f"model {model.name!r} has no parameter {name!r} (it has "
                                 f"{', '.join(sorted(model.parameters)) or 'none'})")
        for name, value in parameters.items():
            expected = get_dimensions(model.parameters[name])
            if isinstance(value, b2.Quantity) and get_dimensions(value) != expected:
                raise ModelError(f"parameter {name!r} of model {model.name!r} needs units of "
                                 f"{b2.get_unit(expected)!r}, got {value!r} (plain numbers "
                                 "are taken as SI values)")
        tensor_params = []
        for name in trainable:
            value = parameters.get(name, model.parameters[name])
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(_si(value, f"parameter {name!r}"), dtype=torch.get_default_dtype())
            self.register_parameter(name, nn.Parameter(value.detach().clone()))
            tensor_params.append(name)
        for name, value in parameters.items():
            if name in trainable:
                continue
            if isinstance(value, (torch.Tensor, np.ndarray)) and np.ndim(value) > 0:
                self.register_buffer(name, torch.as_tensor(value))
                tensor_params.append(name)
        self.tensor_parameter_names = tensor_params
        #: scalar parameter values that replace the model's (as given: Quantity or SI float)
        self.parameter_overrides = {k: v for k, v in parameters.items() if k not in tensor_params}
        self.compiled = compile_neuron_model(
            model, dt, {k: v for k, v in parameters.items() if k not in tensor_params},
            tensor_params)
        self.dt = self.compiled.dt
        self._step = self.compiled.step_function
        self._spike = self._make_spike()

    # generated code is rebuilt (from the cache) after copying or unpickling
    _UNPICKLED = ("compiled", "_step", "_spike")

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in self._UNPICKLED}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.compiled = compile_neuron_model(self.model, self.dt, self.parameter_overrides,
                                             self.tensor_parameter_names)
        self._step = self.compiled.step_function
        self._spike = self._make_spike()

    def _make_spike(self):
        name, alpha, apply = self.surrogate, self.alpha, SpikeFunction.apply

        def spike_fn(x, strict):
            if x.requires_grad and torch.is_grad_enabled():
                return apply(x, alpha, name, strict)
            return ((x > 0) if strict else (x >= 0)).to(x.dtype)   # no graph: the step alone
        return spike_fn

    @property
    def source(self) -> str:
        """The generated Python source of one step."""
        return self.compiled.source

    @property
    def state_names(self):
        return list(self.compiled.state_names)

    def extra_repr(self):
        return (f"model={self.model.name!r}, dt={self.dt!r} s, surrogate={self.surrogate!r}, "
                f"alpha={self.alpha}, detach_reset={self.detach_reset}")

    def initial_state(self, shape, device=None, dtype=torch.float32, **values):
        """The state dict at t = 0 for ``shape = (batch, *neuron_shape)``.

        Values come from ``model.initial`` (numbers with units, or expressions of parameters
        and earlier state variables), else 0 (``lastspike`` -1e4 s and ``not_refractory``
        True, as in Brian2). ``values`` overrides them (SI floats or tensors broadcastable to
        the shape of the variable). ``(shared)`` variables have shape ``(batch, 1, ..., 1)``.
        """
        shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list, torch.Size))
                                        else (shape,)))
        if len(shape) < 1 or any(s < 0 for s in shape):
            raise ValueError(f"shape must be (batch, *neuron_shape) with sizes >= 0, got {shape}")
        unknown = set(values) - set(self.compiled.state_names)
        if unknown:
            raise ValueError(f"initial_state got unknown variable(s) {', '.join(sorted(unknown))}; "
                             f"state variables are {', '.join(self.compiled.state_names)}")
        shared_shape = shape[:1] + (1,) * (len(shape) - 1)
        state = {}
        constants = self.compiled.constants
        for name in self.compiled.state_names:
            if name == TIME_STEP_VARIABLE:
                state[name] = torch.zeros((), dtype=torch.int64, device=device)
                continue
            var_shape = shared_shape if name in self.compiled.shared else shape
            var_dtype = torch.bool if name in self.compiled.boolean else dtype
            if name == "lastspike":
                var_dtype = torch.float64
            if name in values:
                value = values[name]
            elif name in self.model.initial:
                value = self.model.initial[name]
                if isinstance(value, str):
                    renderer = _Renderer(constants, set(state), self.model.name)
                    code = renderer.code(sympy_to_str(str_to_sympy(value)))
                    value = eval(code, dict(_GENERATED_NAMESPACE), dict(state))
                else:
                    value = _si(value, f"initial value of {name}")
            elif name == "lastspike":
                value = -1e4
            elif name == "not_refractory":
                value = True
            else:
                value = 0.0
            tensor = torch.as_tensor(value, device=device)
            state[name] = torch.broadcast_to(tensor.to(var_dtype), var_shape).clone()
        return state

    def forward(self, state, input=None, inputs=None):
        """One time step: returns ``(spikes, new_state)`` (spikes float 0/1).

        ``input`` is added to ``model.input_variable``; ``inputs`` (optional) maps other
        state variables to tensors added at the same point of the step (for example
        ``{"gi": inhibitory_input}`` for a conductance model with two synapse types).
        """
        if inputs:
            unknown = set(inputs) - set(self.compiled.input_variables)
            if unknown:
                raise ValueError(f"inputs for unknown variable(s) {', '.join(sorted(unknown))}; "
                                 f"inputs can go to {', '.join(self.compiled.input_variables)}")
        params = {name: getattr(self, name) for name in self.tensor_parameter_names}
        return self._step(state, input, self._spike, params, self.detach_reset, inputs or None)
