"""The scikit-learn contract of brainsnn's trainable stages: parameters in, fitted state out.

A class that inherits :class:`Params` stores every argument of its ``__init__`` under the
argument's name and nothing else (no check, no derived value: those happen in ``fit`` or
at first use), so that :meth:`~Params.get_params` can read the parameters back from the
signature and ``sklearn.base.clone`` can build an unfitted copy. What ``fit`` learns ends
in an underscore (``scale_``, ``classes_``).
"""
from __future__ import annotations

import inspect

from brainsnn.errors import BrainsnnError

__all__ = ["Params"]


class Params:
    """``get_params`` / ``set_params`` from the signature of ``__init__``, as in scikit-learn."""

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        names = []
        for p in list(signature.parameters.values())[1:]:
            if p.kind == p.VAR_POSITIONAL:
                raise TypeError(f"{cls.__name__}.__init__ must not take *args: its parameters "
                                "are read back by name")
            if p.kind != p.VAR_KEYWORD:
                names.append(p.name)
        return names

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments ``{name: value}``; with ``deep``, also those of
        parameters that are estimators themselves, as ``name__sub``."""
        out = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        """Set constructor arguments (``name__sub`` reaches a nested estimator); returns self.

        Fitted state is not touched: call ``fit`` again for the new values to take effect.
        """
        valid = self._param_names()
        nested = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise BrainsnnError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid parameters: {', '.join(valid)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self):
        defaults = {p.name: p.default for p in
                    inspect.signature(type(self).__init__).parameters.values()}
        shown = [f"{name}={_short(getattr(self, name))}" for name in self._param_names()
                 if not _same(getattr(self, name), defaults.get(name, inspect.Parameter.empty))]
        return f"{type(self).__name__}({', '.join(shown)})"


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, (bool, int, float, str, tuple)) and type(a) is type(b):
        return a == b
    return False


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
