"""Generic Jacobian-Gram on JAX: the NTK of any model given as a pure function f(params, X).

Two autodiff algorithms (Novak, Sohl-Dickstein & Schoenholz 2022, "Fast finite width NTK"; the
names follow neural-tangents), both jitted, both per-sample (``vmap`` over inputs, so the cost
is linear in the batch where it should be), both tiled by ``block_size``:

* ``jacobian_contraction``: per-sample Jacobians J(x) = ∂f(x)/∂θ (``vmap(jacrev)``), leaf by
  leaf of the parameter pytree, then H = Σ_leaves J₁J₂ᵀ with one GEMM per leaf (through
  :func:`ntkframe.core.gram.combine_blocks`, the same contraction the structured path uses).
* ``ntk_vector_products``: no Jacobian matrix; for each x' and output c' the VJP gives the
  parameter-space vector v = J(x')ᵀe_c', and a JVP of f on the whole X1 along v gives the column
  J(X1)J(x')ᵀe_c' = H[:, x', :, c'].  Both are ``vmap``-ed over x' and c'.

Their costs (flops and bytes) and the ``"auto"`` rule are the ones of every autodiff backend:
:mod:`ntkframe.core.autodiff`; here XLA's cost analysis of one sample's forward pass gives the
forward flops F, and its jaxpr the activation bytes A.  Tiles come from :mod:`ntkframe.core.tiles`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ntkframe.core.autodiff import Problem, generic_gram, structured_or_none
from ntkframe.core.gram import combine_blocks

from .backend import JaxBackend, model_key, n_params, rows_at


def generic_jacobian_gram(be: JaxBackend, model: Any, params: Any, X1: Any, X2: Any | None = None, *,
                          implementation: str = "auto", block_size: int | str | None = None,
                          trace: bool = False) -> Any:
    """See :meth:`JaxBackend.generic_jacobian_gram` (the public entry point)."""
    from ntkframe.core.models import Model

    done = structured_or_none(be, model, params, X1, X2, implementation=implementation, block_size=block_size,
                              trace=trace)
    if done is not None:
        return done
    trace = bool(trace)
    if isinstance(model, Model):
        if not isinstance(params, dict):
            raise TypeError(f"params of {type(model).__name__} must be its dict of arrays (model.init(be, seed)); "
                            f"got {type(params).__name__}")
        missing = sorted(set(model.trainable) - set(params))
        if missing:
            raise KeyError(f"params lack the trainable groups {missing} of {model!r}")
        X1 = model.check_inputs(be, X1, "X1")
        X2 = None if X2 is None else model.check_inputs(be, X2, "X2")
        diff = be.params_on_device({k: params[k] for k in model.trainable})
        const = be.params_on_device({k: v for k, v in params.items() if k not in model.trainable})
        key = ("model", model_key(model))
        make_fn = lambda: _traceable_model(be, model)  # noqa: E731
    else:
        if not callable(model):
            raise TypeError(f"model must be an ntkframe Model or a function f(params, X); got {type(model).__name__}")
        if params is None:
            raise TypeError("params is None: a function f(params, X) needs params as the pytree of parameters to "
                            "differentiate against (e.g. a dict of arrays)")
        X1 = _check_batch(be, X1, "X1")
        X2 = None if X2 is None else _check_batch(be, X2, "X2", like=X1)
        diff, const = be.params_on_device(params), {}
        key = ("fn", model)
        make_fn = lambda: (lambda p, c, X: model(p, X))  # noqa: E731

    fns = be.cached(("generic", key, trace), lambda: _generic_functions(be, make_fn(), trace))
    k = _outputs(be._jax, fns["fn"], diff, const, X1)
    sizes = problem_sizes(be, fns, key, diff, const, X1, k)

    def pieces(impl: str) -> dict[str, Any]:
        if impl == "jacobian_contraction":
            return {"rows": lambda X, i0, b: fns["jac_rows"](diff, const, X, i0, b),
                    "tile": fns["contract"], "whole": lambda A, B: fns["jc_whole"](diff, const, A, B),
                    "cross": lambda J1, X, j0, b: fns["jc_tile"](J1, diff, const, X, j0, b)}
        return {"rows": be.rows, "tile": lambda A, B: fns["nvp"](diff, const, A, A if B is None else B),
                "whole": lambda A, B: fns["nvp"](diff, const, A, A if B is None else B)}

    H = generic_gram(be, sizes, X1, X2, implementation=implementation, block_size=block_size, trace=trace,
                     pieces=pieces)
    return be._remember(H)


def problem_sizes(be: JaxBackend, fns: dict, key: Any, p: Any, c: Any, X: Any, k: int) -> Problem:
    """k, P, and for the cost model one sample's forward flops (XLA's cost analysis) and activation
    bytes (the values its jaxpr computes: an over-estimate); cached per (function, parameter and
    sample shapes)."""
    jax = be._jax

    def measure() -> Problem:
        x0 = jax.ShapeDtypeStruct(tuple(X.shape[1:]), X.dtype)
        jaxpr = jax.make_jaxpr(fns["one"])(p, c, x0)
        values = sum(int(np.prod(v.aval.shape, dtype=np.int64)) for eqn in jaxpr.eqns for v in eqn.outvars)
        return Problem(k, n_params(jax, p), _flops(jax.jit(fns["one"]), p, c, x0) or 0.0, values * be.itemsize)

    leaves, tree = jax.tree_util.tree_flatten((p, c))
    shapes = tuple((tuple(np.shape(a)), str(getattr(a, "dtype", ""))) for a in leaves)
    return be.cached(("sizes", key, tree, shapes, k, tuple(X.shape[1:]), str(X.dtype)), measure)


def _flops(jitted: Any, *args: Any) -> float | None:
    try:
        cost = jitted.lower(*args).cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        return float(cost["flops"])
    except Exception:  # noqa: BLE001 - cost analysis is best effort; the cost model has a default
        return None


def _generic_functions(be: JaxBackend, fn: Any, trace: bool) -> dict[str, Any]:
    """The jitted pieces for one function ``fn(p, c, X)`` (p differentiated, c held constant).

    jac_rows(p, c, X, i0, b): per-sample Jacobians of rows i0:i0+b, a pytree like p with leaves
    (b, k, *leaf.shape); contract(J1, J2|None): Σ_leaves J₁J₂ᵀ; jc_tile(J1, p, c, X2, j0, b): J1
    against the Jacobians of rows j0:j0+b of X2 in one piece; jc_whole(p, c, X1, X2|None);
    nvp(p, c, X1, X2): NTK-vector products.  Each goes through :meth:`JaxBackend.compile`; start
    indices are traced and b static, and the tile engine gives tiles of one shape, so a blocked run
    compiles each piece once.
    """
    jax = be._jax
    jnp = be.xp
    from ntkframe.core.gram import GramBlock

    def one(p: Any, c: Any, x: Any) -> Any:
        """One sample's outputs, flattened to (k,)."""
        return fn(p, c, x[None]).reshape(-1)

    def jac(p: Any, c: Any, X: Any) -> Any:
        return jax.vmap(jax.jacrev(one), in_axes=(None, None, 0))(p, c, X)

    def blocks(J: Any) -> list:
        leaves = jax.tree_util.tree_leaves_with_path(J)
        return [GramBlock(jax.tree_util.keystr(path), leaf.reshape(leaf.shape[0], leaf.shape[1], -1), None, 1.0)
                for path, leaf in leaves]

    def contract(J1: Any, J2: Any | None) -> Any:
        B1 = blocks(J1)
        k = B1[0].left.shape[1]
        return combine_blocks(be, B1, None if J2 is None else blocks(J2), k, trace)

    def jac_rows(p: Any, c: Any, X: Any, i0: Any, b: int) -> Any:
        return jac(p, c, rows_at(X, i0, b))

    def jc_tile(J1: Any, p: Any, c: Any, X2: Any, j0: Any, b: int) -> Any:
        return contract(J1, jac(p, c, rows_at(X2, j0, b)))

    def jc_whole(p: Any, c: Any, X1: Any, X2: Any | None) -> Any:
        J1 = jac(p, c, X1)
        return contract(J1, None if X2 is None else jac(p, c, X2))

    def nvp(p: Any, c: Any, X1: Any, X2: Any) -> Any:
        n1 = X1.shape[0]
        spec = jax.eval_shape(one, p, c, X2[0])
        k = spec.shape[0]

        def f1(q: Any) -> Any:
            return fn(q, c, X1).reshape(n1, -1)

        def column(x2: Any) -> Any:
            _, pullback = jax.vjp(lambda q: one(q, c, x2), p)

            def product(e: Any) -> Any:
                (v,) = pullback(e)  # J(x2)ᵀ e
                return jax.jvp(f1, (p,), (v,))[1]  # J(X1) J(x2)ᵀ e: (n1, k)

            return jax.vmap(product)(jnp.eye(k, dtype=spec.dtype))  # (k', n1, k)

        H = jnp.transpose(jax.vmap(column)(X2), (2, 0, 3, 1))  # (n1, n2, k, k')
        if k == 1:
            return H[:, :, 0, 0]
        if trace:
            return jnp.trace(H, axis1=2, axis2=3) * (1.0 / k)
        return H

    def cast(f: Any) -> Any:  # the kernel in the backend's dtype, whatever dtype f computes in
        return lambda *args: f(*args).astype(be._dtype)

    return {"fn": fn, "one": one, "jac_rows": be.compile(jac_rows, static_argnums=(4,)),
            "contract": be.compile(cast(contract)), "jc_tile": be.compile(cast(jc_tile), static_argnums=(5,)),
            "jc_whole": be.compile(cast(jc_whole)), "nvp": be.compile(cast(nvp))}


def _outputs(jax: Any, fn: Any, p: Any, c: Any, X: Any) -> int:
    """k, the outputs per input, after checking that f maps a batch of N inputs to N rows."""
    out = jax.eval_shape(fn, p, c, X)
    shape = tuple(getattr(out, "shape", ()))
    if len(shape) == 0 or shape[0] != X.shape[0]:
        raise ValueError(f"f(params, X) must return one row per input: for X of shape {tuple(X.shape)} it "
                         f"returned shape {shape}; expected ({X.shape[0]},) or ({X.shape[0]}, k)")
    return int(np.prod(shape[1:], dtype=np.int64))


def _check_batch(be: JaxBackend, X: Any, name: str, like: Any = None) -> Any:
    """A batch of inputs (N, ...) for a pure function: on the device, N ≥ 1, finite."""
    X = be.asarray(X, name=name)
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(f"{name} must be a batch of inputs with shape (N, ...) and N >= 1; got shape {tuple(X.shape)}")
    if like is not None and X.shape[1:] != like.shape[1:]:
        raise ValueError(f"{name} has per-input shape {tuple(X.shape[1:])} but X1 has {tuple(like.shape[1:])}")
    if not bool(be.xp.isfinite(X).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def _traceable_model(be: JaxBackend, model: Any) -> Any:
    """f(p, c, X) = model.apply({**c, **p}, X) in a form JAX can trace.

    ``Model.check_inputs`` tests finiteness with ``bool(...)``, which a traced array cannot answer;
    the inputs were validated before tracing, so the traced copy of the model only converts them.
    """
    import copy

    traced = copy.copy(model)
    traced.check_inputs = lambda backend, X, name="X": backend.asarray(X, name=name)
    return lambda p, c, X: traced.apply({**c, **p}, X, backend=be)
