"""JaxModel: a pure JAX function f(params, X) with a parameter pytree as an ntkframe Model.

The adapter differentiates ``apply(params, X)`` with JAX's own autodiff (``jax.vjp``) and lets the
JAX backend's generic NTK paths (Jacobian contraction, NTK-vector products) compute
H(x, x') = ∇θf(x)ᵀ∇θf(x') (docs/theory.md §1).  Parameters are any pytree of floating arrays
(dicts, lists, tuples — a Flax ``variables["params"]`` is one); every leaf is trained.  ``apply``
must treat the samples of a batch independently (no batch statistics, no dropout).

jax is imported when a JaxModel is built, never when ntkframe or this plugin is imported.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ntkframe.core.fields import FACTORY_FIELDS
from ntkframe.core.models import Model


class JaxModel(Model):
    """``JaxModel(apply, params)``: f(X) = apply(params, X) for a pure ``apply``.

    ``params`` are the initial parameters (a pytree of arrays); ntkframe holds them as
    ``{"params": pytree}`` (what :meth:`init` returns and :attr:`params` is), so that gradient
    flow, checkpoints and the NTK see one named group; ``init_fn(seed) -> params`` (optional) draws new ones per seed, as the
    experiments' seed sweeps need — without it, an integer seed is refused rather than ignored.
    Outputs of shape (N,) or (N, 1) are one output, (N, k) k outputs.
    """

    structured = False
    config_fields = FACTORY_FIELDS  # [model] kind = "jax": factory, kwargs, width_arg, path

    def __init__(self, apply: Callable, params: Any = None, *, init_fn: Callable[[int], Any] | None = None,
                 name: str | None = None):
        import jax

        self._jax = jax
        if not callable(apply):
            raise TypeError(f"apply must be a function apply(params, X); got {type(apply).__name__}")
        if params is None and init_fn is None:
            raise ValueError("give the initial params (a pytree of arrays) or init_fn(seed) -> params")
        self.apply_fn, self.params0, self.init_fn = apply, params, init_fn
        self.name = name or getattr(apply, "__qualname__", "apply")
        self.outputs = None
        self.sample_shape: tuple[int, ...] | None = None
        self._compiled: dict = {}

    def __repr__(self) -> str:
        return f"JaxModel({self.name})"

    @property
    def trainable(self) -> tuple[str, ...]:
        return ("params",)

    def config(self) -> dict[str, Any]:
        return {"kind": "jax", "apply": self.name}

    def _check_backend(self, be: Any) -> Any:
        if be is None or getattr(be, "name", None) != "jax":
            raise TypeError(f"JaxModel computes with JAX: pass backend=nf.get_backend('jax', ...); got "
                            f"{getattr(be, 'name', be)!r}")
        return be

    def _leaves(self, params: Any) -> list:
        return self._jax.tree_util.tree_leaves(params)

    def init(self, backend: Any = None, seed: int | None = 0) -> Any:
        """The parameter pytree on the backend's device and dtype: ``init_fn(seed)``, or the
        params given at construction when ``seed`` is None or no ``init_fn`` exists and seed is 0."""
        from ntkframe.core.backend import get_backend

        be = self._check_backend(get_backend(backend) if isinstance(backend, str) else backend)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be an integer >= 0 (or None: the params given); got {seed!r}")
        if seed is None or self.init_fn is None:
            if seed not in (None, 0):
                raise ValueError(f"seed={seed}: this JaxModel has no init_fn(seed), so it cannot draw other parameters; "
                                 "pass init_fn=... or seed=None")
            params = self.params0
        else:
            params = self.init_fn(int(seed))
        return {"params": be.params_on_device(params)}

    @property
    def params(self) -> dict[str, Any]:
        """The params given at construction, as ``{"params": pytree}`` (NumPy or jax leaves)."""
        if self.params0 is None:
            raise AttributeError("this JaxModel was built with init_fn only: use model.init(backend, seed)")
        return {"params": self.params0}

    def _params(self, be: Any, params: Any) -> Any:
        if not isinstance(params, dict) or set(params) != {"params"}:
            raise TypeError("params must be {'params': pytree} as JaxModel.init returns; got "
                            f"{type(params).__name__}{' with keys ' + str(sorted(params)) if isinstance(params, dict) else ''}")
        if not self._leaves(params["params"]):
            raise TypeError("params['params'] holds no arrays")
        return {"params": be.params_on_device(params["params"])}

    def check_inputs(self, be: Any, X: Any, name: str = "X") -> Any:
        """X as a jax array (N, ...) on the backend, non-empty and finite."""
        self._check_backend(be)
        X = be.asarray(X, name=name)
        if X.ndim == 0 or X.shape[0] == 0:
            raise ValueError(f"{name} must have a leading batch axis with at least one sample; got shape {tuple(X.shape)}")
        if not bool(be.xp.isfinite(X).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        if self.sample_shape is not None and tuple(X.shape[1:]) != self.sample_shape:
            raise ValueError(f"{name} has samples of shape {tuple(X.shape[1:])}; the model was used with {self.sample_shape}")
        if self.outputs is None:
            self._call(self.init(be, seed=None if self.params0 is not None else 0)["params"], X[:1])
        return X

    def _call(self, params: Any, X: Any) -> Any:
        out = self.apply_fn(params, X)
        if getattr(out, "ndim", 0) == 0 or out.shape[0] != X.shape[0]:
            raise ValueError(f"apply must return one row per input, (N,) or (N, k); for {X.shape[0]} inputs it "
                             f"returned shape {tuple(getattr(out, 'shape', ()))}")
        k = max(1, math.prod(out.shape[1:]))
        if self.outputs is None:
            self.outputs, self.sample_shape = k, tuple(X.shape[1:])
        out = out.reshape(X.shape[0], k)
        return out[:, 0] if k == 1 else out

    def _be(self, backend: Any, params: Any) -> Any:
        if backend is None:
            from ntkframe.core.backend import infer_backend

            backend = infer_backend(self._leaves(params)[0])
        elif isinstance(backend, str):
            from ntkframe.core.backend import get_backend

            backend = get_backend(backend)
        return self._check_backend(backend)

    def apply(self, params: Any, X: Any, backend: Any = None) -> Any:
        be = self._be(backend, params)
        X = self.check_inputs(be, X)
        return self._call(self._params(be, params)["params"], X)

    def forward_backward(self, params: Any, X: Any, cotangent_fn: Any, backend: Any = None,
                         check: bool = True) -> tuple[Any, Any]:
        """(f(X), Σ_n cot[n]ᵀ ∂f(x_n)/∂θ) from one ``jax.vjp``; the gradient has params' structure."""
        be = self._be(backend, params)
        if check:
            X = self.check_inputs(be, X)
            params = self._params(be, params)
        f, pullback = self._jax.vjp(lambda p: self._call(p["params"], X), params)
        cot = be.asarray(cotangent_fn(f), name="cotangent")
        if tuple(cot.shape) != tuple(f.shape):
            raise ValueError(f"cotangent has shape {tuple(cot.shape)}; expected {tuple(f.shape)}")
        (grads,) = pullback(cot)
        return f, grads

    def vjp(self, params: Any, X: Any, cotangent: Any, backend: Any = None) -> Any:
        return self.forward_backward(params, X, lambda f: cotangent, backend=backend)[1]

    def n_params(self, params: Any) -> int:
        return int(sum(math.prod(np.shape(leaf)) for leaf in self._leaves(params)))

    def autodiff_target(self, params: Any) -> tuple[Callable, Any]:
        """(apply, params pytree) for the JAX backend's generic NTK paths."""
        return self.apply_fn, params["params"]
