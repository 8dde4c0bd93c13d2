"""The checks every public entry point runs on its arguments: params, inputs X, seeds.

One place for them, so that ``model.init/apply/vjp``, ``empirical_ntk``, ``analytic_ntk``,
``kernel_to_file``, ``simulate`` and ``predict`` refuse the same bad argument with the same message:

- **params**: a dict (not a list), exactly the model's keys, each value an array of the backend's
  framework and device (never a silent copy between frameworks), of a real floating dtype, with the
  model's shape, and finite (NaN in θ would give an all-NaN kernel);
- **X**: a numeric array (not a string, dict or None) of real numbers — complex X is refused (its
  imaginary part would be dropped silently) — moved to the backend, of shape (N, d), N ≥ 1, finite;
- **seed**: an int ≥ 0 (``numpy.random.default_rng`` seeds).

Every error is an :class:`~ntkframe.errors.InputError` that is also the built-in exception callers may
already catch (:class:`~ntkframe.errors.InputValueError` ⊂ ValueError, ``InputTypeError`` ⊂ TypeError,
``ParamKeyError`` ⊂ KeyError) and names the argument.  Value checks (finiteness) read the array, one
host sync per array; they are skipped for arrays being traced by a compiler (JAX tracers), whose values
do not exist yet.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Iterator

import numpy as np

from ..errors import InputError, InputTypeError, InputValueError, ParamKeyError

FRAMEWORKS = ("numpy", "torch", "jax", "jaxlib", "cupy", "tensorflow")
_REFUSED_TYPES = (str, bytes, dict, set, frozenset)


def framework(x: Any) -> str | None:
    """The array framework owning ``x`` ("numpy", "torch", "jax", "cupy", ...), or None for other objects."""
    mod = type(x).__module__.split(".")[0]
    return mod if mod in FRAMEWORKS else None


def is_tracer(x: Any) -> bool:
    """True for a JAX tracer (an array inside ``jax.jit``/``vmap`` whose values are not known yet)."""
    return framework(x) in ("jax", "jaxlib") and "Tracer" in type(x).__name__


def _dtype_kind(x: Any) -> str:
    """NumPy's dtype kind letter of an array of any framework ('f', 'c', 'i', 'b', ...)."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return "O"
    text = str(dt).replace("torch.", "")
    if "complex" in text:
        return "c"
    try:
        return np.dtype(text).kind
    except TypeError:
        return "f" if "float" in text else "O"


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` as an int after checking it is an integer ≥ 0 (what ``numpy.random.default_rng`` takes)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise InputTypeError(f"{name}={seed!r} ({type(seed).__name__}); allowed: an integer >= 0")
    if seed < 0:
        raise InputValueError(f"{name}={seed!r}; allowed: an integer >= 0 (numpy.random.default_rng seeds)")
    return int(seed)


def _numeric(x: Any, name: str) -> None:
    """Refuse what is not an array of real numbers: strings, dicts, None, objects, complex numbers."""
    if x is None or isinstance(x, _REFUSED_TYPES) or callable(x):
        raise InputTypeError(f"{name} is {type(x).__name__} {_short(x)}; expected an array of real numbers")
    if framework(x) is None:
        try:
            kind = np.asarray(x).dtype.kind
        except (TypeError, ValueError) as exc:  # ragged lists and the like
            raise InputTypeError(f"{name} cannot be read as an array of real numbers: {exc}") from None
        if kind in "OUSVMm":
            raise InputTypeError(f"{name} holds {np.asarray(x).dtype} values, not real numbers")
    else:
        kind = _dtype_kind(x)
    if kind == "c":
        raise InputValueError(f"{name} is complex ({getattr(x, 'dtype', type(x).__name__)}); ntkframe computes with "
                              "real numbers only and would drop the imaginary part: pass the real part, or real and "
                              "imaginary parts as separate features, explicitly")
    if kind not in "biuf":
        raise InputTypeError(f"{name} has dtype {getattr(x, 'dtype', '?')}; expected real numbers")


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def to_backend(be: Any, x: Any, name: str) -> Any:
    """``be.asarray(x)`` with its refusal (another framework, another device) raised as an InputError."""
    try:
        return be.asarray(x, name=name)
    except TypeError as exc:
        raise InputTypeError(_named(str(exc), name)) from None
    except ValueError as exc:
        raise InputValueError(_named(str(exc), name)) from None


def _named(message: str, name: str) -> str:
    return message if name in message else f"{name}: {message}"


def all_finite(be: Any, x: Any) -> bool:
    """Whether every entry of the backend array ``x`` is finite (True for tracers: unknown yet)."""
    if is_tracer(x):
        return True
    return bool(be.xp.isfinite(x).all())


def check_array(be: Any, x: Any, name: str, *, finite: bool = True) -> Any:
    """``x`` as a backend array, after checking it holds real numbers (and, with ``finite``, no NaN/inf)."""
    _numeric(x, name)
    a = to_backend(be, x, name)
    if finite and not all_finite(be, a):
        raise InputValueError(f"{name} contains NaN or infinite values")
    return a


def check_inputs(be: Any, X: Any, d: int, name: str = "X") -> Any:
    """X as a backend array of shape (N, d), N ≥ 1, real and finite."""
    X = check_array(be, X, name, finite=False)
    if X.ndim != 2:
        raise InputValueError(
            f"{name} must be a 2-D array of shape (N, d={d}); got shape {tuple(X.shape)}"
            + (" (use X.reshape(-1, 1) for one feature, or X[None, :] for one point)" if X.ndim == 1 else ""))
    if X.shape[1] != d:
        raise InputValueError(f"{name} has d={X.shape[1]} features (shape {tuple(X.shape)}) but the model expects d={d}")
    if X.shape[0] == 0:
        raise InputValueError(f"{name} has no rows (shape {tuple(X.shape)})")
    if not all_finite(be, X):
        raise InputValueError(f"{name} contains NaN or infinite values")
    return X


def check_params_dict(params: Any, expected: Any = None, name: str = "params") -> dict:
    """``params`` after checking it is a non-empty dict (``expected``: its keys, for the message)."""
    want = f" with keys {sorted(expected)}" if expected else ""
    if not isinstance(params, dict):
        raise InputTypeError(f"{name} must be a dict of arrays{want} (as model.init returns); got "
                             f"{type(params).__name__} {_short(params)}")
    if not params:
        raise ParamKeyError(f"{name} is an empty dict; expected arrays{want or ' (as model.init returns)'}")
    return params


def check_params(params: Any, shapes: dict[str, tuple[int, ...]] | None, *, be: Any = None,
                 name: str = "params", values: bool = True) -> dict:
    """Check a model's parameter dict; with ``be`` return it moved to the backend (else as given).

    ``shapes``: the model's keys and their shapes (None: any keys and shapes, e.g. a pytree model's).
    Checked: dict type, keys (missing and unexpected ones), each value an array of real floating numbers
    of the backend's framework/device (with ``be``; else of some array framework) and of its shape, and,
    with ``values``, finite.  Pytree groups (dicts/lists of arrays) are checked leaf by leaf.
    """
    check_params_dict(params, shapes, name)
    if shapes is not None:
        missing = sorted(set(shapes) - set(params))
        extra = sorted(set(params) - set(shapes), key=str)
        if missing or extra:
            parts = ([f"lack {missing}"] if missing else []) + ([f"have unexpected {extra}"] if extra else [])
            raise ParamKeyError(f"{name} {' and '.join(parts)}; expected keys {sorted(shapes)}")
    out = {}
    for key, value in params.items():
        where = f"{name}[{key!r}]"
        if shapes is None and isinstance(value, (dict, list, tuple)):
            out[key] = _check_tree(value, be, where, values)
            continue
        out[key] = _check_leaf(value, be, where, values, None if shapes is None else shapes[key])
    return out if be is not None else params


def _check_tree(tree: Any, be: Any, where: str, values: bool) -> Any:
    if isinstance(tree, dict):
        return {k: _check_tree(v, be, f"{where}[{k!r}]", values) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_check_tree(v, be, f"{where}[{i}]", values) for i, v in enumerate(tree))
    return _check_leaf(tree, be, where, values, None)


def _check_leaf(value: Any, be: Any, where: str, values: bool, shape: tuple[int, ...] | None) -> Any:
    if framework(value) is None:
        raise InputTypeError(f"{where} is {type(value).__name__} {_short(value)}; expected an array "
                             f"({'of the ' + be.name + ' backend, or NumPy' if be is not None else 'as model.init returns'})")
    _numeric(value, where)
    if _dtype_kind(value) != "f":
        raise InputValueError(f"{where} has dtype {value.dtype}; parameters must be real floating point "
                              "(float32 or float64)")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise InputValueError(f"{where} has shape {tuple(value.shape)}; expected {tuple(shape)}")
    a = value if be is None else to_backend(be, value, where)
    if values and not is_tracer(a) and not _finite_any(a, be):
        raise InputValueError(f"{where} contains NaN or infinite values: the model's outputs and kernel would be "
                              "NaN (a diverged training run, or an uninitialised array?)")
    return a


def _finite_any(a: Any, be: Any) -> bool:
    if be is not None:
        return all_finite(be, a)
    fw = framework(a)
    if fw == "torch":
        import torch

        return bool(torch.isfinite(a).all())
    if fw in ("jax", "jaxlib"):
        import jax.numpy as jnp

        return bool(jnp.isfinite(a).all())
    if fw == "cupy":
        import cupy

        return bool(cupy.isfinite(a).all())
    return bool(np.isfinite(np.asarray(a)).all())


def check_targets_real(y: Any, name: str = "y") -> None:
    """Refuse complex or non-numeric targets (the losses' own checks handle shape and finiteness)."""
    _numeric(y, name)


def finite_float(value: Any, name: str, *, positive: bool = False) -> float:
    """``value`` as a float after checking it is a real, finite number (and > 0 with ``positive``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InputValueError(f"{name}={value!r}; expected a finite real number")
    if positive and not value > 0:
        raise InputValueError(f"{name}={value!r}; expected a positive number")
    return float(value)


def backend_of_params(params: dict, infer: Any, name: str = "params") -> Any:
    """``infer(first array of params)``: the backend owning it (:func:`ntkframe.core.backend.infer_backend`),
    with the refusal of something that is not an array of a known framework raised as an InputError."""
    key, first = next(iter(params.items()))
    try:
        return infer(first)
    except TypeError as exc:
        raise InputTypeError(f"{name}[{key!r}]: {exc}") from None
    except ValueError as exc:
        raise InputValueError(f"{name}[{key!r}]: {exc}") from None


@contextlib.contextmanager
def input_errors(name: str) -> Iterator[None]:
    """Raise a plain ValueError/TypeError from checking argument ``name`` (a helper of another module: the
    losses' target checks, the integrators' time checks) as the matching InputError, message unchanged."""
    try:
        yield
    except InputError:
        raise
    except ValueError as exc:
        raise InputValueError(_named(str(exc), name)) from exc
    except TypeError as exc:
        raise InputTypeError(_named(str(exc), name)) from exc
