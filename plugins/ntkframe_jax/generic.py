"""Generic Jacobian-Gram on JAX: the NTK of any model given as a pure function f(params, X).

Two autodiff algorithms (Novak, Sohl-Dickstein & Schoenholz 2022, "Fast finite width NTK"; the
names follow neural-tangents), both jitted, both per-sample (``vmap`` over inputs, so the cost
is linear in the batch where it should be), both tiled by ``block_size``:

* ``jacobian_contraction``: per-sample Jacobians J(x) = ∂f(x)/∂θ (``vmap(jacrev)``), leaf by
  leaf of the parameter pytree, then H = Σ_leaves J₁J₂ᵀ with one GEMM per leaf (through
  :func:`ntkframe.core.backend.combine_blocks`, the same contraction the structured path uses).
* ``ntk_vector_products``: no Jacobian matrix; for each x' and output c' the VJP gives the
  parameter-space vector v = J(x')ᵀe_c', and a JVP of f on the whole X1 along v gives the column
  J(X1)J(x')ᵀe_c' = H[:, x', :, c'].  Both are ``vmap``-ed over x' and c'.

Notation: N1, N2 inputs, k outputs per input, P parameters, [FP] the cost of one sample's forward
pass.  Time (flops), ignoring constants:

    jacobian_contraction   (N1 + N2)·k·[FP]  +  N1·N2·k·P·(k, or 1 with trace)
    ntk_vector_products    N2·k·[FP]         +  N1·N2·k·[FP]

Memory, per tile of b × b inputs: contraction holds 2·b·k·P Jacobian entries; vector products
hold b·k·P tangents plus the JVP's intermediates, b²·k·(activations per sample).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ntkframe.core.backend import combine_blocks

from .backend import JaxBackend, model_key, n_params, rows_at

#: the generic algorithms (``"auto"`` picks one; ``"structured"`` needs an ntkframe Model)
GENERIC = ("jacobian_contraction", "ntk_vector_products")


def generic_jacobian_gram(be: JaxBackend, model: Any, params: Any, X1: Any, X2: Any | None = None, *,
                          implementation: str = "auto", block_size: int | str | None = None,
                          trace: bool = False) -> Any:
    """See :meth:`JaxBackend.generic_jacobian_gram` (the public entry point)."""
    from ntkframe.core.kernels import IMPLEMENTATIONS
    from ntkframe.core.models import Model

    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}; allowed: {', '.join(IMPLEMENTATIONS)}")
    jax = be._jax
    trace = bool(trace)
    if isinstance(model, Model):
        if implementation in ("auto", "structured") and model.structured:
            return be.jacobian_gram(model, params, X1, X2, block_size=block_size, trace=trace)
        if implementation == "structured":
            raise ValueError(f"implementation='structured' needs Jacobian factors, which {type(model).__name__} "
                             f"does not provide; use 'jacobian_contraction' or 'ntk_vector_products'")
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
        if implementation == "structured":
            raise ValueError("implementation='structured' needs an ntkframe Model with Jacobian factors; got "
                             f"{type(model).__name__}; use 'auto', 'jacobian_contraction' or 'ntk_vector_products'")
        if not callable(model):
            raise TypeError(f"model must be an ntkframe Model or a function f(params, X); got {type(model).__name__}")
        if params is None:
            raise ValueError("params is None: a function f(params, X) needs the pytree of parameters to "
                             "differentiate against (e.g. a dict of arrays)")
        X1 = _check_batch(be, X1, "X1")
        X2 = None if X2 is None else _check_batch(be, X2, "X2", like=X1)
        diff, const = be.params_on_device(params), {}
        key = ("fn", model)
        make_fn = lambda: (lambda p, c, X: model(p, X))  # noqa: E731

    P = n_params(jax, diff)
    if P == 0:
        raise ValueError("the model has no trainable parameters: its NTK is identically zero")
    symmetric = X2 is None
    X2c = X1 if symmetric else X2
    fns = be.cached(("generic", key, trace), lambda: _generic_functions(be, make_fn(), trace))
    k = _outputs(jax, fns["fn"], diff, const, X1)
    k_out = 1 if (trace or k == 1) else k
    n1, n2 = X1.shape[0], X2c.shape[0]
    b = be.resolve_block_size(_RowCost(k * P), block_size, n1, n2, k_out)
    if implementation == "auto":
        implementation = choose_implementation(be, fns, key, trace, diff, const, X1, None if symmetric else X2c, b)
    if implementation == "ntk_vector_products" and block_size == "auto" and b is not None:
        b = max(1, min(b, _nvp_tile_limit(be, fns, diff, const, X1, k)))
    if b is None or (b >= n1 and b >= n2):
        if implementation == "jacobian_contraction":
            H = fns["jc_whole"](diff, const, X1, None if symmetric else X2c)
        else:
            H = fns["nvp"](diff, const, X1, X2c)
        return be._remember(H)
    if implementation == "jacobian_contraction":
        H = be.fill_tiles(
            n1, n2, b, symmetric, k_out,
            row=lambda i0, bi: fns["jac_rows"](diff, const, X1, i0, bi),
            tile=lambda Ji, j0, bj: fns["jc_tile"](Ji, diff, const, X2c, j0, bj),
            diag=lambda Ji: fns["contract"](Ji, None),
        )
    else:
        H = be.fill_tiles(
            n1, n2, b, symmetric, k_out,
            row=lambda i0, bi: (i0, bi),
            tile=lambda r, j0, bj: fns["nvp_tile"](diff, const, X1, r[0], r[1], X2c, j0, bj),
            diag=lambda r: fns["nvp_tile"](diff, const, X1, r[0], r[1], X1, r[0], r[1]),
        )
    return be._remember(H)


def choose_implementation(be: JaxBackend, fns: dict, key: Any, trace: bool, diff: Any, const: Any, X1: Any,
                          X2: Any | None, b: int | None) -> str:
    """The ``"auto"`` rule: lower both algorithms for the (tile) shapes at hand, ask XLA's cost
    analysis for their flop counts, and take the cheaper one (neural-tangents' AUTO rule); ties
    and a missing cost analysis go to ``jacobian_contraction`` (one large GEMM: the faster kernel
    at equal flops).  The decision is cached per (function, trace, shapes)."""
    jax = be._jax

    def tile_of(X: Any) -> Any:  # the shape of a tile's inputs, for lowering without data
        n = X.shape[0] if b is None else min(b, X.shape[0])
        return jax.ShapeDtypeStruct((n,) + tuple(X.shape[1:]), X.dtype)

    x1 = tile_of(X1)
    x2 = None if X2 is None else tile_of(X2)
    shapes = (x1.shape, None if x2 is None else x2.shape, str(x1.dtype))

    def decide() -> str:
        jc = _flops(fns["jc_whole"], diff, const, x1, x2)
        nvp = _flops(fns["nvp"], diff, const, x1, x1 if x2 is None else x2)
        if jc is None or nvp is None or jc <= nvp:
            return "jacobian_contraction"
        return "ntk_vector_products"

    return be.cached(("auto-choice", key, trace, shapes), decide)


def _flops(jitted: Any, *args: Any) -> float | None:
    try:
        cost = jitted.lower(*args).cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        return float(cost["flops"])
    except Exception:  # noqa: BLE001 - cost analysis is best effort; the caller has a default
        return None


def _generic_functions(be: JaxBackend, fn: Any, trace: bool) -> dict[str, Any]:
    """The jitted pieces for one function ``fn(p, c, X)`` (p differentiated, c held constant).

    jac_rows(p, c, X, i0, b): per-sample Jacobians of rows i0:i0+b, a pytree like p with leaves
    (b, k, *leaf.shape); contract(J1, J2|None): Σ_leaves J₁J₂ᵀ; jc_tile(J1, p, c, X2, j0, b);
    jc_whole(p, c, X1, X2|None); nvp(p, c, X1, X2): NTK-vector products; nvp_tile(p, c, X1, i0,
    bi, X2, j0, bj).  Start indices are traced and b static, so a blocked run compiles each piece once.
    """
    jax = be._jax
    jnp = be.xp
    from ntkframe.core.models import GramBlock

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

    def nvp_tile(p: Any, c: Any, X1: Any, i0: Any, bi: int, X2: Any, j0: Any, bj: int) -> Any:
        return nvp(p, c, rows_at(X1, i0, bi), rows_at(X2, j0, bj))

    def cast(f: Any) -> Any:  # the kernel in the backend's dtype, whatever dtype f computes in
        return lambda *args: f(*args).astype(be._dtype)

    return {"fn": fn, "one": one, "jac_rows": jax.jit(jac_rows, static_argnums=4), "contract": jax.jit(cast(contract)),
            "jc_tile": jax.jit(cast(jc_tile), static_argnums=5), "jc_whole": jax.jit(cast(jc_whole)),
            "nvp": jax.jit(cast(nvp)), "nvp_tile": jax.jit(cast(nvp_tile), static_argnums=(4, 7))}


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


class _RowCost:
    """Stands in for a model in :meth:`Backend.resolve_block_size`: bytes one input's Jacobian takes."""

    def __init__(self, scalars_per_row: int):
        self.scalars = scalars_per_row

    def factor_bytes_per_row(self, itemsize: int, k: int) -> int:
        return itemsize * self.scalars


def _nvp_tile_limit(be: JaxBackend, fns: dict, p: Any, c: Any, X1: Any, k: int) -> int:
    """Largest b whose NTK-vector-product intermediates, b²·k·A scalars (A = values one sample's
    forward pass computes, read off its jaxpr: an over-estimate), fit the memory budget."""
    jax = be._jax
    jaxpr = jax.make_jaxpr(fns["one"])(p, c, X1[0])
    A = sum(int(np.prod(v.aval.shape, dtype=np.int64)) for eqn in jaxpr.eqns for v in eqn.outvars)
    return max(1, int(np.sqrt(be.memory_budget() / (be.itemsize * k * max(A, 1)))))
