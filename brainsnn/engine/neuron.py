"""Torch engine: a brainsnn neuron model (Brian2 equations) as a batched PyTorch step.

The model is written once, as Brian2 equations (:class:`brainsnn.models.NeuronModel`). The
translation is Brian2's own code generation for its numpy target, ending in torch instead of
numpy: Brian2's state updater writes the abstract code of the model's method (``exact``,
``euler``, ``rk2``, ``rk4``, ``heun``, ``exponential_euler``, ...), Brian2's
``make_statements`` turns it, the threshold and the reset into statements with loop
invariants pulled out and arithmetic simplified, the loop invariants (``exp(-dt/tau)``, ...)
are evaluated once here with Brian2's numpy functions, and every remaining statement is
rendered as torch code node for node, in Brian2's order of operations. The result is one
Python function per model, compiled once (``exec``) and called every step.

One step of :class:`TorchNeuron`, as Brian2 schedules a group whose synapses act in the same
step::

    refractoriness     (not_refractory from t and lastspike, as Brian2 computes it)
    state update       (Brian2's statements for the model's method)
    input_variable += input          (what ``on_pre: v_post += w`` does)
    spike = condition, with surrogate derivatives (see below)
    lastspike = t, not_refractory = False where spike (refractory models)
    reset statements, applied where spike

Spikes: the forward value is the threshold condition evaluated as Brian2 evaluates it
(comparisons joined by ``and``/``or``, boolean terms, ``not_refractory``). For the backward
pass every comparison ``a >= b``, ``a > b``, ``a <= b``, ``a < b`` of a variable that changes
during the step gets the surrogate ``g(x)`` with ``x = a - b`` (``b - a`` for ``<``/``<=``),
masked where the other terms of the condition make it irrelevant.

Resets are a select (``torch.where``): Brian2 evaluates reset statements for the spiking
neurons only, so an expression that is infinite or NaN for a silent neuron does not reach it.
Two exact shortcuts: ``var += k`` / ``var -= k`` with a finite constant ``k`` is
``var + s*k``; ``var = k`` while a graph is recorded (training) is ``var*(1 - s) + s*k``,
which a select would match except for a state that is already infinite at the spike (a
select costs more in the backward pass).
With ``detach_reset=True`` (the default) no gradient flows through the spike in the reset;
with ``False`` the reset ``var -> new`` has the derivative ``new - var`` with respect to the
spike, as for the masked form ``var*(1 - s) + s*new``.

Refractoriness follows Brian2: ``not_refractory`` and ``lastspike`` are state variables,
``t = t_step * dt`` is computed in float64 from an integer step counter, the threshold is
``(condition) and not_refractory``, ``(unless refractory)`` variables are written only where
``not_refractory`` (state update and synaptic input alike).

Parameters: model parameters enter as SI numbers (folded into the code); a parameter given as
a tensor (per-neuron values) or listed in ``trainable`` (an ``nn.Parameter``) is read from the
module at every step instead. ``(shared)`` variables have one value per sample; ``integer``
variables are held as whole numbers in the state's float dtype (exact up to 2**24 in float32,
2**53 in float64); ``i`` is the flat index of a neuron within one sample, ``N`` their number.

Unsupported constructs raise :class:`UnsupportedConstructError` naming the construct and
where it is: stochastic terms (``xi``), random functions (``rand``, ``randn``, ``poisson``),
linked variables, functions given as parameters (``TimedArray``), GSL methods, thresholds
without a comparison of a variable that changes during the step.

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
loop; ``brainsnn run bench_torch_engine`` measures the ratio of training and inference speed
against such a loop (target: at most 1.5 times slower; ``torch.compile`` is not used).
Translations are cached; neurons can be deep-copied and pickled (the step is regenerated).
"""
from __future__ import annotations

import ast
import math
from collections.abc import Mapping

import brian2 as b2
import numpy as np
import torch
from brian2.codegen.generators.numpy_generator import NumpyCodeGenerator
from brian2.codegen.translation import make_statements
from brian2.core.variables import Constant, Subexpression, Variable
from brian2.equations.equations import SUBEXPRESSION, extract_constant_subexpressions
from brian2.equations.refractory import add_refractoriness
from brian2.parsing.bast import brian_dtype_from_dtype
from brian2.parsing.rendering import NodeRenderer, NumpyNodeRenderer
from brian2.stateupdaters.base import StateUpdateMethod
from brian2.units.fundamentalunits import DIMENSIONLESS, get_dimensions
from brian2.utils.stringtools import get_identifiers
from torch import nn

from brainsnn.engine.surrogate import SURROGATES, check_surrogate
from brainsnn.errors import ModelError, UnsupportedConstructError
from brainsnn.models import NeuronModel

__all__ = ["UnsupportedConstructError", "CompiledNeuronModel", "compile_neuron_model",
           "TorchNeuron", "TIME_STEP_VARIABLE"]

#: Key of the integer time-step counter in the state dict (present when the model uses ``t``,
#: ``lastspike`` or refractoriness). Brian2 computes ``t = t_step * dt`` in float64.
TIME_STEP_VARIABLE = "t_step"


# -- helpers available to generated code ----------------------------------------------------
# Every Brian2 function is one helper: torch on tensors, Brian2's own numpy implementation on
# numbers (loop invariants are numbers, evaluated as Brian2's numpy target evaluates them).

def _numpy_function(name):
    """Brian2's numpy-target implementation of a default function (its pyfunc if none)."""
    function = b2.DEFAULT_FUNCTIONS[name]
    try:
        return function.implementations[NumpyCodeGenerator].get_code(None)
    except (KeyError, NotImplementedError):
        return function.pyfunc


def _dispatch(torch_function, numpy_function):
    def helper(*args):
        if any(isinstance(a, torch.Tensor) for a in args):
            return torch_function(*args)
        return numpy_function(*args)
    return helper


def _torch_timestep(t, dt):
    """Brian2's timestep(t, dt) = int64((t + 1e-3*dt) / dt)."""
    t = torch.as_tensor(t)
    return torch.trunc((t + 1e-3 * dt) / dt).to(torch.int64)


def _torch_exprel(x):
    """(exp(x) - 1) / x as Brian2 computes it: 1 for |x| < 1e-16, inf above 717."""
    small = x.abs() < 1e-16
    big = x > 717
    safe = torch.where(small | big, torch.ones_like(x), x)
    out = torch.expm1(safe) / safe
    return torch.where(small, torch.ones_like(x), torch.where(big, torch.full_like(x, math.inf), out))


def _torch_clip(x, low, high):
    if not isinstance(x, torch.Tensor):
        ref = low if isinstance(low, torch.Tensor) else high
        x = torch.full_like(ref, float(x))
    return torch.clamp(x, low, high)


_TORCH_FUNCTIONS = {
    "exp": torch.exp, "log": torch.log, "log10": torch.log10, "expm1": torch.expm1,
    "log1p": torch.log1p, "sqrt": torch.sqrt, "sin": torch.sin, "cos": torch.cos,
    "tan": torch.tan, "sinh": torch.sinh, "cosh": torch.cosh, "tanh": torch.tanh,
    "arcsin": torch.asin, "arccos": torch.acos, "arctan": torch.atan, "abs": torch.abs,
    "sign": torch.sign, "floor": torch.floor, "ceil": torch.ceil, "clip": _torch_clip,
    "timestep": _torch_timestep, "exprel": _torch_exprel,
}
_RANDOM_FUNCTIONS = {"rand", "randn", "poisson"}


def _bs_int(x, dtype):
    """int() in generated code: 0/1 of the state's float dtype for booleans."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype) if x.dtype == torch.bool else torch.trunc(x)
    return _numpy_function("int")(x)


def _bs_pow(x, exponent):
    """x ** exponent for exponents numpy does not special-case (elementwise pow, as numpy)."""
    if isinstance(x, torch.Tensor):
        return torch.pow(x, torch.full_like(x, exponent))
    return np.power(x, exponent)


def _bs_not(x):
    return torch.logical_not(x) if isinstance(x, torch.Tensor) else np.logical_not(x)


def _bs_index(reference):
    """Brian2's neuron index ``i``: the flat index within one sample (float, see integers)."""
    shape = reference.shape[1:]
    return torch.arange(math.prod(shape), dtype=reference.dtype,
                        device=reference.device).reshape((1, *shape))


_GENERATED_NAMESPACE = {"_bs_torch": torch, "_bs_np": np, "_bs_int": _bs_int, "_bs_pow": _bs_pow,
                        "_bs_not": _bs_not, "_bs_index": _bs_index, "_bs_inf": math.inf,
                        "_bs_nan": math.nan, "_bs_math": math}
_GENERATED_NAMESPACE.update({f"_bs_f_{name}": _dispatch(fn, _numpy_function(name))
                             for name, fn in _TORCH_FUNCTIONS.items()})

#: numpy's fast paths of ``array ** scalar`` (torch computes the same for these exponents)
_EXACT_POWERS = {-1.0, 0.0, 0.5, 1.0, 2.0}


def _si(value, what):
    """A parameter value as a number in SI units (Brian2's internal representation).

    Booleans and integers keep their type (Brian2 types expressions by them); arrays give None.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        return float(np.asarray(value, dtype=float)) if np.ndim(value) == 0 else None
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{what}: value {value!r} is not a number with units") from exc


def _literal(value):
    """Python source of a number: exact (repr round-trips), inf/nan by name, negatives
    parenthesised ("-2.0 ** 2" would parse as -(2.0 ** 2))."""
    if isinstance(value, (bool, np.bool_)):
        return repr(bool(value))
    if isinstance(value, (int, np.integer)):
        value = int(value)
        return f"({value})" if value < 0 else repr(value)
    value = float(value)
    if math.isnan(value):
        return "_bs_nan"
    if math.isinf(value):
        return "_bs_inf" if value > 0 else "(-_bs_inf)"
    return f"({value!r})" if value < 0 or (value == 0 and math.copysign(1, value) < 0) else repr(value)


class _DtVariable(Variable):
    """``dt`` as Brian2's state updaters expect it (``get_value()[0]`` is the step in s)."""

    def __init__(self, dt):
        super().__init__(name="dt", dimensions=b2.second.dim, scalar=True, constant=True,
                         read_only=True)
        self._dt = dt

    def get_value(self):
        return np.array([self._dt])


class _TorchRenderer(NodeRenderer):
    """Render one of Brian2's optimised expressions as Python code, node for node.

    The expression tree is Brian2's own (after its loop-invariant and arithmetic
    optimisations), rendered without any reordering, so that every operation is the one
    Brian2's numpy target performs: constants become exact literals, functions become helpers
    (torch on tensors, numpy on numbers), ``and``/``or`` become ``&``/``|`` as in numpy.
    """

    expression_ops = dict(NodeRenderer.expression_ops, And="&", Or="|")

    def __init__(self, values, runtime, model_name):
        super().__init__()
        self.values = values            # name -> number (constants and folded invariants)
        self.runtime = runtime          # names bound in the generated function
        self.model_name = model_name

    def render_Name(self, node):
        name = node.id
        if name in self.runtime:
            return name
        if name in self.values:
            return _literal(self.values[name])
        if name in ("True", "False"):
            return name
        raise UnsupportedConstructError(
            f"model {self.model_name!r}: name {name!r} is neither a state variable nor a "
            "parameter (the torch engine cannot resolve it)")

    def render_Constant(self, node):
        return _literal(node.value)

    def render_element_parentheses(self, node):
        if node.__class__.__name__ == "Constant":
            return _literal(node.value)     # negative ones come parenthesised
        return super().render_element_parentheses(node)

    def render_Call(self, node):
        name = node.func.id
        args = ", ".join(self.render_node(arg) for arg in node.args)
        if name == "int":
            return f"_bs_int({args}, _bs_dtype)"
        return f"_bs_f_{name}({args})"

    def render_UnaryOp(self, node):
        if node.op.__class__.__name__ == "Not":
            return f"_bs_not({self.render_node(node.operand)})"
        return super().render_UnaryOp(node)

    def render_BinOp(self, node):
        if node.op.__class__.__name__ == "Pow" and node.right.__class__.__name__ == "Constant":
            if float(node.right.value) not in _EXACT_POWERS:
                return f"_bs_pow({self.render_node(node.left)}, {float(node.right.value)!r})"
        return super().render_BinOp(node)


def _numpy_namespace(values):
    """Brian2's numpy-target namespace for evaluating loop invariants at translation time."""
    namespace = {name: _numpy_function(name) for name in b2.DEFAULT_FUNCTIONS}
    namespace.update({"logical_not": np.logical_not, "True": True, "False": False})
    for name, value in values.items():
        namespace[name] = value if isinstance(value, (bool, np.bool_)) else np.asarray(value)[()]
    return namespace


class _Block:
    """Brian2's statements of one code block (state update, threshold, reset, ...)."""

    def __init__(self, scalar, vector):
        self.scalar, self.vector = scalar, vector


class CompiledNeuronModel:
    """A neuron model translated into one Python function with torch operations.

    The translation follows Brian2's own code generation for its numpy target: Brian2's state
    updater writes the abstract code, Brian2's ``make_statements`` turns it (and the
    threshold and reset) into statements with loop invariants pulled out and arithmetic
    simplified, the loop invariants are evaluated here once with numpy (as Brian2's numpy
    target does every step), and every vector statement is rendered as torch code in the
    same order of operations.

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
        Boolean state variables (``not_refractory``, user ``boolean`` variables).
    integer : set of str
        ``integer`` state variables (held as whole numbers in the state's float dtype).
    derived : set of str
        State variables the step recomputes from others before any use, so it never reads
        them: ``not_refractory`` when the refractory period is a time (Brian2 derives it from
        ``lastspike`` and ``t`` at every step), ``(constant over dt)`` subexpressions. A state
        dict may leave them out.
    abstract_code : str
        Brian2's abstract code of the state update (refractoriness included).
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
                    f"({type(value).__name__}); the torch engine supports numbers with units "
                    "and per-neuron tensors (give time-varying input through the input)")
            si = _si(value, f"model {model.name!r}: parameter {name!r}")
            if si is None:
                raise ModelError(f"model {model.name!r}: parameter {name!r} is an array; pass "
                                 "per-neuron values as a tensor parameter or a state variable")
            self.constants[name] = si
        for name in ("pi", "e", "inf"):
            self.constants.setdefault(name, float(b2.DEFAULT_CONSTANTS[name].value))
        self.constants["dt"] = self.dt
        self._initial_lines = {}
        self._compile()

    # -- analysis -----------------------------------------------------------------------
    def _refuse_random(self, text, where):
        for ident in get_identifiers(text):
            if ident == "xi" or ident.startswith("xi_"):
                raise UnsupportedConstructError(
                    f"model {self.model.name!r}: stochastic term {ident!r} in {where} is not "
                    "supported by the torch engine (it needs a deterministic step)")
            if ident in _RANDOM_FUNCTIONS:
                raise UnsupportedConstructError(
                    f"model {self.model.name!r}: random function {ident}() in {where} is not "
                    "supported by the torch engine (it needs a deterministic step)")

    def _equations(self):
        model = self.model
        eqs = model.brian2_equations
        for name, eq in eqs.items():
            code = str(eq.expr.code) if eq.expr is not None else ""
            self._refuse_random(code, f"the equation for {name}")
            if "linked" in eq.flags:
                raise UnsupportedConstructError(
                    f"model {model.name!r}: linked variable {name} is not supported by the "
                    "torch engine (a layer has no other group to link to)")
        uses_unless = any("unless refractory" in eq.flags for eq in eqs.values())
        if model.refractory is not None:
            eqs = add_refractoriness(eqs)
        elif uses_unless:
            raise ModelError(f"model {model.name!r}: equations use (unless refractory) but the "
                             "model has no refractory period")
        eqs, constant_over_dt = extract_constant_subexpressions(eqs)
        return eqs, constant_over_dt

    def _variables(self, eqs):
        """Brian2 Variable objects for every name, as a NeuronGroup would declare them."""
        variables = {"dt": _DtVariable(self.dt),
                     "t": Variable(name="t", dimensions=b2.second.dim, scalar=True,
                                   dtype=np.float64),
                     "t_in_timesteps": Variable(name="t_in_timesteps", scalar=True,
                                                dtype=np.int64),
                     "i": Variable(name="i", dtype=np.int32),
                     "N": Constant(name="N", value=1)}
        for name, value in self.model.parameters.items():
            if name in self.tensor_parameters:
                variables[name] = Variable(name=name, dimensions=get_dimensions(value)
                                           if not isinstance(value, torch.Tensor) else DIMENSIONLESS,
                                           dtype=np.float64, constant=True)
            else:
                variables[name] = Constant(name=name, value=self.constants[name],
                                           dimensions=get_dimensions(value))
        for name in ("pi", "e", "inf"):
            variables.setdefault(name, b2.DEFAULT_CONSTANTS[name])
        for name, eq in eqs.items():
            dtype = {"boolean": bool, "integer": np.int32}.get(eq.var_type, np.float64)
            if eq.type == SUBEXPRESSION:
                variables[name] = Subexpression(name, None, str(eq.expr.code), None,
                                                dimensions=eq.dim, dtype=dtype,
                                                scalar="shared" in eq.flags)
            else:
                variables[name] = Variable(name=name, dimensions=eq.dim, dtype=dtype,
                                           constant="constant" in eq.flags,
                                           scalar="shared" in eq.flags)
        variables.update(b2.DEFAULT_FUNCTIONS)
        return variables

    def _add_units(self, text):
        """Unit names used in ``text`` as constants (Brian2 resolves them the same way)."""
        for ident in get_identifiers(text):
            if ident in self.variables:
                continue
            unit = getattr(b2.units, ident, None)
            if isinstance(unit, b2.Quantity):
                self.variables[ident] = Constant(name=ident, value=float(unit),
                                                 dimensions=get_dimensions(unit))
                self.values[ident] = float(unit)

    def _refractory_code(self):
        ref = self.model.refractory
        if ref is None:
            return ""
        if not isinstance(ref, str):
            return (f"not_refractory = timestep(t - lastspike, dt) >= "
                    f"timestep({float(ref)!r}, dt)\n")
        dims = self.model._check_expression(ref, None, self.model._variables()[1], "refractory")
        if dims is b2.second.dim:
            return f"not_refractory = timestep(t - lastspike, dt) >= timestep({ref}, dt)\n"
        return f"not_refractory = not_refractory or not ({ref})\n"

    # -- code generation ----------------------------------------------------------------
    def _statements(self, code, blockname):
        """Brian2's (scalar, vector) statements of ``code``, loop invariants optimised."""
        self._add_units(code)
        try:
            scalar, vector = make_statements(code, self.variables, np.float64, optimise=True,
                                             blockname=blockname)
        except (SyntaxError, TypeError, KeyError, ValueError) as exc:
            raise ModelError(f"model {self.model.name!r}: Brian2 cannot translate the "
                             f"{blockname} code {code.strip()!r}: {exc}") from exc
        return _Block(scalar, vector)

    def _scalar_lines(self, block, renderer):
        """Loop invariants: numbers evaluated now with numpy (as Brian2's numpy target does
        at every step); the few that depend on tensors (``t``, shared variables) or on ``N``
        become lines of the step."""
        lines = []
        fold = _numpy_namespace(self.values)
        for stmt in block.scalar:
            names = set(get_identifiers(stmt.expr))
            if stmt.op == ":=" and stmt.var not in self.runtime and not names & self.runtime:
                expr = NumpyNodeRenderer().render_expr(stmt.expr)
                with np.errstate(all="ignore"):
                    value = eval(expr, fold)
                self.values[stmt.var] = value
                fold[stmt.var] = value
                continue
            if stmt.op == ":=":
                self.runtime.add(stmt.var)
            lines.append(self._assignment(stmt, renderer.render_expr(stmt.expr)))
        return lines

    def _assignment(self, stmt, code):
        if stmt.op in (":=", "="):
            return f"{stmt.var} = {code}"
        return f"{stmt.var} = {stmt.var} {stmt.op[0]} ({code})"

    def _vector_code(self, stmt, renderer):
        """The right-hand side of a vector statement, as Brian2's numpy generator writes it
        (a statement using one boolean variable becomes a ``where`` over its two cases)."""
        if (stmt.used_boolean_variables is not None and len(stmt.used_boolean_variables) == 1
                and brian_dtype_from_dtype(stmt.dtype) == "float"
                and stmt.complexity_std > sum(stmt.complexities.values())):
            boolvar = stmt.used_boolean_variables[0]
            cases = {assign[0][1]: expr for assign, expr in stmt.boolean_simplified_expressions.items()}
            return (f"_bs_torch.where({boolvar}, {renderer.render_expr(cases[True])}, "
                    f"{renderer.render_expr(cases[False])})")
        return renderer.render_expr(stmt.expr)

    def _new_value(self, stmt, renderer):
        code = self._vector_code(stmt, renderer)
        if stmt.op in (":=", "="):
            new = code
        else:
            new = f"{stmt.var} {stmt.op[0]} ({code})"
        if stmt.var in self.integer:
            new = f"_bs_torch.trunc(_bs_torch.as_tensor({new}, dtype=_bs_dtype))"
        return new

    def _plain_lines(self, block, renderer, conditional=()):
        """Statements executed for every neuron (state update, temporaries)."""
        lines = self._scalar_lines(block, renderer)
        for stmt in block.vector:
            if stmt.var not in self.state and stmt.var not in self.runtime:
                self.runtime.add(stmt.var)            # a temporary
            new = self._new_value(stmt, renderer)
            if stmt.var in conditional:
                # Brian2 writes (unless refractory) variables only where not_refractory
                new = f"_bs_torch.where(not_refractory, {new}, {stmt.var})"
            lines.append(f"{stmt.var} = {new}")
        return lines

    def _compile(self):
        model = self.model
        eqs, constant_over_dt = self._equations()
        self.equations = eqs
        self.state = [name for name, eq in eqs.items() if eq.type != SUBEXPRESSION]
        state = self.state
        self.shared = {name for name in state if "shared" in eqs[name].flags}
        self.boolean = {name for name in state if eqs[name].var_type == "boolean"}
        self.integer = {name for name in state if eqs[name].var_type == "integer"}
        self.variables = variables = self._variables(eqs)
        self.values = {**self.constants}
        try:
            su_code = StateUpdateMethod.apply_stateupdater(eqs, variables, model.method,
                                                           group_name=model.name)
        except Exception as exc:
            raise ModelError(f"model {model.name!r}: Brian2 cannot integrate the equations with "
                             f"method {model.method!r}: {exc}") from exc
        if not isinstance(su_code, str):
            raise UnsupportedConstructError(f"model {model.name!r}: method {model.method!r} "
                                            "does not produce abstract code (GSL is not supported)")
        ref_code = self._refractory_code()
        self.abstract_code = ref_code + su_code
        cod_code = "\n".join(f"{eq.varname} = {eq.expr}" for eq in constant_over_dt.ordered)
        threshold_code = (f"_cond = ({model.threshold}) and not_refractory"
                          if model.refractory is not None else f"_cond = {model.threshold}")
        for text, where in ((model.threshold, "the threshold"), (model.reset, "the reset"),
                            (ref_code, "the refractory condition")):
            self._refuse_random(text, where)
        all_text = "\n".join([self.abstract_code, threshold_code, model.reset, cod_code] +
                             [str(eq.expr.code) for eq in eqs.values() if eq.expr is not None])
        used = set(get_identifiers(all_text))
        uses_time = model.refractory is not None or bool(used & {"t", "t_in_timesteps"})
        self.uses_time = uses_time
        self.state_names = list(state) + ([TIME_STEP_VARIABLE] if uses_time else [])
        # a refractory period given as a time: not_refractory comes from lastspike alone
        # (a boolean refractory condition keeps the previous value: not derived)
        self.derived = ({"not_refractory"} if ref_code.startswith("not_refractory = timestep(")
                        else set()) | {eq.varname for eq in constant_over_dt.ordered}
        self.runtime = set(state) | set(self.tensor_parameters)
        if uses_time:
            self.runtime |= {"t", "t_in_timesteps"}
        if "i" in used:
            self.runtime.add("i")
        if "N" in used:
            self.runtime.add("N")
        renderer = _TorchRenderer(self.values, self.runtime, model.name)

        lines = ["def _bs_step(_bs_state, _bs_input, _bs_spike, _bs_params, _bs_detach=True, "
                 "_bs_extra=None):"]
        for name in state:
            if name not in self.derived:
                lines.append(f"    {name} = _bs_state[{name!r}]")
        for name in self.tensor_parameters:
            lines.append(f"    {name} = _bs_params[{name!r}]")
        lines.append(f"    _bs_dtype = _bs_state[{model.input_variable!r}].dtype")
        if uses_time:
            lines.append(f"    {TIME_STEP_VARIABLE} = _bs_state[{TIME_STEP_VARIABLE!r}]")
            lines.append(f"    t_in_timesteps = {TIME_STEP_VARIABLE}")
            lines.append(f"    t = {TIME_STEP_VARIABLE}.to(_bs_torch.float64) * {self.dt!r}")
        if "i" in used:
            lines.append(f"    i = _bs_index(_bs_state[{model.input_variable!r}])")
        if "N" in used:
            lines.append(f"    N = _bs_math.prod(_bs_state[{model.input_variable!r}].shape[1:])")

        def emit(comment, body):
            lines.append(f"    # {comment}")
            lines.extend("    " + line for line in body)

        if cod_code:
            emit("(constant over dt) subexpressions",
                 self._plain_lines(self._statements(cod_code, "subexpression_update"), renderer))
        original = model.brian2_equations
        unless = {n for n, eq in original.items() if "unless refractory" in eq.flags}
        emit(f"state update (Brian2 method {model.method!r}, refractoriness first)",
             self._plain_lines(self._statements(self.abstract_code, "stateupdate"), renderer,
                               conditional=unless))
        self.input_variables = [n for n in state if n not in self.boolean and n != "lastspike"
                                and n not in self.derived]

        def add_input(var, source):
            if var in unless:
                # Brian2 makes writes to an (unless refractory) variable conditional on
                # not_refractory: synaptic input is ignored while the neuron is refractory
                return f"{var} = _bs_torch.where(not_refractory, {var} + {source}, {var})"
            return f"{var} = {var} + {source}"

        lines.append("    # synaptic input")
        lines.append("    if _bs_input is not None:")
        lines.append("        " + add_input(model.input_variable, "_bs_input"))
        lines.append("    if _bs_extra is not None:")
        for var in self.input_variables:
            lines.append(f"        if {var!r} in _bs_extra:")
            lines.append("            " + add_input(var, f"_bs_extra[{var!r}]"))
        emit(f"threshold: {model.threshold}", self._threshold_lines(threshold_code, renderer))
        if model.refractory is not None:
            lines.append("    lastspike = _bs_torch.where(_bs_c, t, lastspike)")
            lines.append("    not_refractory = not_refractory & ~_bs_c")
        reset_text = "; ".join(line.strip() for line in model.reset.splitlines() if line.strip())
        emit(f"reset (where spiking): {reset_text}", self._reset_lines(renderer))
        if uses_time:
            lines.append(f"    {TIME_STEP_VARIABLE} = {TIME_STEP_VARIABLE} + 1")
        items = ", ".join(f"{n!r}: {n}" for n in self.state_names)
        lines.append(f"    return _bs_s, {{{items}}}")
        self.source = "\n".join(lines) + "\n"
        namespace = dict(_GENERATED_NAMESPACE)
        exec(compile(self.source, f"<brainsnn torch step of {model.name}>", "exec"), namespace)
        self.step_function = namespace["_bs_step"]

    def initial_value(self, name, value, state):
        """The initial value of ``name``: a number in SI units, or an expression evaluated
        as Brian2 evaluates ``group.name = 'expr'`` (loop invariants with numpy), given the
        ``state`` dict of tensors set so far."""
        if not isinstance(value, str):
            return _si(value, f"model {self.model.name!r}: initial value of {name}")
        lines = self._initial_lines.get((name, value))
        if lines is None:
            renderer = _TorchRenderer(self.values, self.runtime, self.model.name)
            block = self._statements(f"{name} = {value}", f"initial_{name}")
            lines = self._plain_lines(block, renderer)
            self._initial_lines[(name, value)] = lines
        namespace = {**_GENERATED_NAMESPACE, **state, "_bs_dtype": state[name].dtype}
        exec("\n".join(lines), namespace)
        return namespace[name]

    def _reset_lines(self, renderer):
        """Reset statements applied where the neuron spiked (a select, as Brian2 evaluates
        them for the spiking neurons only); temporaries are computed for all neurons.

        ``_bs_r`` is the spike as a 0/1 mask (detached unless the reset is differentiated).
        Adding or subtracting a finite constant is exact as ``var + r*k``; an assignment of a
        finite constant, while a graph is recorded, is the masked form ``var*(1 - r) + r*k``
        (a select costs more in the backward pass; the two differ only where the state is
        already infinite at the spike); everything else is a select.
        """
        model = self.model
        if not model.reset.strip():
            return []
        block = self._statements(model.reset, "resetter")
        lines = self._scalar_lines(block, renderer)
        lines.append("_bs_r = _bs_s.detach() if _bs_detach or not _bs_s.requires_grad else _bs_s")
        lines.append("_bs_ds = None if _bs_r is not _bs_s else _bs_s - _bs_s.detach()")
        for stmt in block.vector:
            if stmt.var not in self.state:
                if stmt.var in self.tensor_parameters or stmt.var in ("t", "i", "N"):
                    raise UnsupportedConstructError(
                        f"model {model.name!r}: the reset assigns to {stmt.var!r}, which is not "
                        "a state variable")
                self.runtime.add(stmt.var)
                lines.append(f"{stmt.var} = {self._new_value(stmt, renderer)}")
                continue
            if stmt.var in self.shared:
                raise UnsupportedConstructError(
                    f"model {model.name!r}: the reset writes to the shared variable "
                    f"{stmt.var!r}; Brian2 would write it for all neurons whenever one spikes")
            lines += self._reset_statement(stmt, renderer)
        return lines

    def _finite_constant(self, stmt, renderer):
        """The statement's right-hand side when it is a finite number, else None."""
        code = self._vector_code(stmt, renderer)
        try:
            value = float(eval(code, {"__builtins__": {}}, dict(_GENERATED_NAMESPACE)))
        except Exception:           # a tensor expression: names unknown here
            return None
        return code if math.isfinite(value) and stmt.var not in self.integer else None

    def _reset_statement(self, stmt, renderer):
        var = stmt.var
        const = None if var in self.boolean else self._finite_constant(stmt, renderer)
        if const is not None and stmt.op in ("+=", "-="):
            return [f"{var} = {var} {stmt.op[0]} _bs_r * {const}"]
        if const is not None and stmt.op in (":=", "="):
            masked = f"{var} * (1.0 - _bs_r)" + ("" if float(eval(const, dict(
                _GENERATED_NAMESPACE))) == 0 else f" + _bs_r * {const}")
            return ["if _bs_s.requires_grad:",
                    f"    {var} = {masked}",
                    "else:",
                    f"    {var} = _bs_torch.where(_bs_c, {const}, {var})"]
        lines = [f"_bs_new = {self._new_value(stmt, renderer)}"]
        if var in self.boolean:
            return lines + [f"{var} = _bs_torch.where(_bs_c, _bs_new, {var})"]
        # the surrogate-gradient path of a differentiated reset: d(var)/ds = new - var
        return lines + [f"_bs_old = {var}",
                        f"{var} = _bs_torch.where(_bs_c, _bs_new, {var})",
                        "if _bs_ds is not None:",
                        f"    {var} = {var} + _bs_ds * _bs_torch.nan_to_num(_bs_new - _bs_old)"]

    # -- threshold ------------------------------------------------------------------------
    def _dynamic_names(self, block):
        """Names whose value changes within a step: differential-equation variables, the input
        variable, and temporaries computed from them."""
        dynamic = set(self.equations.diff_eq_names) | {self.model.input_variable}
        for stmt in block.vector:
            if set(get_identifiers(stmt.expr)) & dynamic:
                dynamic.add(stmt.var)
        return dynamic

    def _gradient_terms(self, node, dynamic, context=()):
        """The comparisons of dynamic variables in the condition, each with the terms that
        must be true (``and``) or false (``or``) for it to decide the spike."""
        kind = node.__class__.__name__
        if kind == "BoolOp":
            is_and = node.op.__class__.__name__ == "And"
            terms = []
            for k, value in enumerate(node.values):
                others = tuple((v, is_and) for j, v in enumerate(node.values) if j != k)
                terms += self._gradient_terms(value, dynamic, context + others)
            return terms
        if kind == "Compare" and node.ops[0].__class__.__name__ in ("Gt", "GtE", "Lt", "LtE"):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if names & dynamic:
                return [(node, context)]
        return []

    def _threshold_lines(self, code, renderer):
        model = self.model
        block = self._statements(code, "thresholder")
        lines = self._plain_lines(_Block(block.scalar, block.vector[:-1]), renderer)
        cond = block.vector[-1]
        tree = ast.parse(cond.expr.strip(), mode="eval").body
        terms = self._gradient_terms(tree, self._dynamic_names(block))
        if not terms:
            raise UnsupportedConstructError(
                f"model {model.name!r}: threshold {model.threshold!r} has no comparison "
                "(a >= b, a > b, a <= b, a < b) of a variable that changes during the step; "
                "the torch engine needs one for the surrogate gradient")
        lines.append(f"_bs_c = {renderer.render_expr(cond.expr)}")
        grads = []
        for comparison, context in terms:
            high, low = comparison.left, comparison.comparators[0]
            if comparison.ops[0].__class__.__name__ in ("Lt", "LtE"):
                high, low = low, high
            x = (f"{renderer.render_element_parentheses(high)} - "
                 f"{renderer.render_element_parentheses(low)}")
            masks = [renderer.render_element_parentheses(n) if truth else
                     f"_bs_not({renderer.render_node(n)})" for n, truth in context]
            grads.append(f"{x}, {' & '.join(masks) if masks else 'None'}")
        lines.append("if _bs_torch.is_grad_enabled():")
        if len(grads) == 1:
            lines.append(f"    _bs_s = _bs_spike(_bs_c, {grads[0]})")
        else:
            pairs = ", ".join(f"({g})" for g in grads)
            lines.append(f"    _bs_s = _bs_spike.several(_bs_c, [{pairs}])")
        lines.append("else:")
        lines.append("    _bs_s = _bs_c.to(_bs_dtype)")
        return lines


class _ComparisonSpike(torch.autograd.Function):
    """Spikes of a condition with one comparison ``x`` (see :class:`_ConditionSpike`)."""

    @staticmethod
    def forward(ctx, cond, x, mask, alpha, name):
        ctx.save_for_backward(x)
        ctx.alpha, ctx.name, ctx.mask = alpha, name, mask
        return cond.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        g = grad_output * SURROGATES[ctx.name](x, ctx.alpha)
        return None, (g if ctx.mask is None else g * ctx.mask.to(g.dtype)), None, None, None


class _ConditionSpike(torch.autograd.Function):
    """Spikes: the exact condition forward, surrogate derivatives backward.

    Forward: ``cond`` (Brian2's threshold condition, evaluated as Brian2 does). Backward: for
    each comparison ``k`` of the condition, ``g(x_k)`` times the mask under which that
    comparison decides the spike (``x_k`` = signed distance to its threshold).
    """

    @staticmethod
    def forward(ctx, cond, alpha, name, masks, *xs):
        ctx.save_for_backward(*xs)
        ctx.alpha, ctx.name, ctx.masks = alpha, name, masks
        return cond.to(xs[0].dtype)

    @staticmethod
    def backward(ctx, grad_output):
        grads = []
        for x, mask in zip(ctx.saved_tensors, ctx.masks):
            g = grad_output * SURROGATES[ctx.name](x, ctx.alpha)
            grads.append(g if mask is None else g * mask.to(g.dtype))
        return (None, None, None, None, *grads)


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
        name, alpha = self.surrogate, self.alpha
        one, several = _ComparisonSpike.apply, _ConditionSpike.apply

        def spike_fn(cond, x, mask):
            """One comparison ``x`` (the common case, kept lean)."""
            if not x.requires_grad:
                return cond.to(x.dtype)                # no graph: the condition alone
            if x.shape != cond.shape:
                x = torch.broadcast_to(x, cond.shape)
            return one(cond, x, mask, alpha, name)

        def several_fn(cond, comparisons):
            xs = [x for x, _ in comparisons]
            if not any(isinstance(x, torch.Tensor) and x.requires_grad for x in xs):
                return cond.to(xs[0].dtype)
            xs = [x if isinstance(x, torch.Tensor) and x.shape == cond.shape
                  else torch.broadcast_to(torch.as_tensor(x, dtype=xs[0].dtype), cond.shape)
                  for x in xs]
            return several(cond, alpha, name, tuple(m for _, m in comparisons), *xs)

        spike_fn.several = several_fn
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
        True, as in Brian2). ``values`` overrides them (SI numbers, numpy arrays or tensors
        broadcastable to the shape of the variable; numbers and arrays are converted to the
        state's dtype directly, without a float32 detour). ``(shared)`` variables have shape ``(batch, 1, ..., 1)``.
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
        compiled = self.compiled
        state = {}
        for name in compiled.state_names:
            if name == TIME_STEP_VARIABLE:
                state[name] = torch.zeros((), dtype=torch.int64, device=device)
                continue
            var_shape = shared_shape if name in compiled.shared else shape
            var_dtype = (torch.bool if name in compiled.boolean else
                         torch.float64 if name == "lastspike" else dtype)
            default = -1e4 if name == "lastspike" else name == "not_refractory" or 0.0
            state[name] = torch.full(var_shape, default, dtype=var_dtype, device=device)
        # the model's initial values in their order, as Brian2 sets them, then the overrides
        for name, value in self.model.initial.items():
            if name not in values:
                state[name] = self._initial(name, compiled.initial_value(name, value, state),
                                            state[name])
        for name, value in values.items():
            state[name] = self._initial(name, value, state[name])
        return state

    def _initial(self, name, value, like):
        """``value`` (a number in SI units or a tensor) as the state tensor ``like``."""
        if not isinstance(value, torch.Tensor):
            value = (np.asarray(value, dtype=np.float64) if np.ndim(value) > 0
                     else _si(value, f"initial value of {name}"))
        tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        if name in self.compiled.integer:
            tensor = torch.trunc(tensor)
        return torch.broadcast_to(tensor, like.shape).clone()

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
