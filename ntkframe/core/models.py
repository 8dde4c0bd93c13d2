"""The Model interface and the two network families, TwoLayerNet and MLP.

Models are written once against the backend's array namespace.  A *structured* model gives its
Jacobian as factors (:class:`GramBlock`): for a dense layer y = c·V h the Gram of its weight
gradients is c² (G₁G₂ᵀ) ⊙ (H₁H₂ᵀ), G the back-propagated signals at y and H the layer inputs
(docs/theory.md §2), so the backend never forms the N × P Jacobian.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import validation
from .activations import Activation, get_activation
from .fields import Field
from .gram import GramBlock  # noqa: F401 - re-exported: models build their factors from it

TRAIN_MODES = ("both", "hidden", "output")
OUTPUT_INITS = ("gaussian", "sign")
PARAMETERIZATIONS = ("ntk", "standard")


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive integer; got {value!r}")
    return int(value)


def _choice(value: Any, what: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return value


def _fields(*extra: Field) -> list[Field]:
    """The ``[model]`` keys (config_fields) of a built-in network: d, m, σ, ``extra``, parameterisation, k."""
    return [Field("d", int, 8, "input dimension d", positive=True),
            Field("m", int, 1024, "width m (mlp: of every hidden layer)", positive=True),
            Field("activation", str, "softplus", "activation σ (any registered one)", choices_from="activations"),
            *extra, Field("parameterization", str, "ntk", "where the 1/√m sits (docs/theory.md §5)",
                          choices=PARAMETERIZATIONS), Field("outputs", int, 1, "outputs k", positive=True)]


class Model:
    """A network f_θ: R^d → R^k with parameters in a dict of named backend arrays."""

    structured: bool = True
    d: int
    outputs: int

    # -- to implement ----------------------------------------------------------------------
    def init(self, backend: Any = None, seed: int = 0) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, params: dict, X: Any, backend: Any = None) -> Any:
        raise NotImplementedError

    def vjp(self, params: dict, X: Any, cotangent: Any, backend: Any = None) -> dict[str, Any]:
        raise NotImplementedError

    def forward_backward(self, params: dict, X: Any, cotangent_fn: Any, backend: Any = None,
                         check: bool = True) -> tuple[Any, dict[str, Any]]:
        """(f(X), vjp(cotangent_fn(f(X)))) with one forward pass shared by both.

        The gradient-flow right-hand side uses this: f → ∂ℓ/∂f → ∇θ. ``check=False`` skips the
        input validation (and its device-to-host sync) for inputs already checked once.
        """
        f = self.apply(params, X, backend=backend)
        return f, self.vjp(params, X, cotangent_fn(f), backend=backend)

    def jacobian_factors(self, params: dict, X: Any, backend: Any, trace: bool = False) -> list[GramBlock]:
        raise NotImplementedError

    def factor_bytes_per_row(self, itemsize: int, k: int) -> int:
        raise NotImplementedError

    @property
    def trainable(self) -> tuple[str, ...]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def n_params(self, params: dict) -> int:
        return int(sum(math.prod(params[k].shape) for k in self.trainable))

    def check_inputs(self, be: Any, X: Any, name: str = "X") -> Any:
        """X on the backend, checked real, (N, d), non-empty, finite (:func:`~ntkframe.core.validation.check_inputs`)."""
        return validation.check_inputs(be, X, self.d, name)

    def param_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """The parameter dict's keys and shapes (None: a model whose parameters are any pytree)."""
        return None

    def check_params(self, params: Any, backend: Any = None, name: str = "params") -> dict:
        """``params`` on the backend after checking keys, shapes, framework/device, dtype and finiteness
        (:func:`ntkframe.core.validation.check_params`): what every public entry point runs once."""
        be = self._backend(backend, params)
        return validation.check_params(params, self.param_shapes(), be=be, name=name)

    def _backend(self, backend: Any, params: dict) -> Any:
        from .backend import resolve_backend

        if backend is None:
            validation.check_params_dict(params, self.param_shapes())
        return resolve_backend(backend, params)

    def _check_params(self, params: dict, shapes: dict[str, tuple[int, ...]], be: Any = None) -> dict:
        """:func:`ntkframe.core.validation.check_params` (finiteness only of concrete arrays: not JAX tracers)."""
        return validation.check_params(params, shapes, be=be)

    def _output(self, f: Any) -> Any:
        return f[:, 0] if self.outputs == 1 else f

    def _cotangent(self, be: Any, cot: Any, n: int) -> Any:
        cot = be.asarray(cot, name="cotangent")
        if self.outputs == 1 and cot.ndim == 1:
            cot = cot[:, None]
        if tuple(cot.shape) != (n, self.outputs):
            want = f"({n},)" if self.outputs == 1 else f"({n}, {self.outputs})"
            raise ValueError(f"cotangent has shape {tuple(cot.shape)}; expected {want}")
        return cot


class TwoLayerNet(Model):
    r"""The seed's two-layer network f(x) = (1/√m) Σ_r a_r σ(w_rᵀx) — no 1/√d.

    Parameters ``{"W": (m, d), "a": (m,)}`` (``a`` is (m, k) with ``outputs=k``), w_r ~ N(0, I_d),
    a_r ~ N(0, 1) (``output_init="gaussian"``) or ±1 (``"sign"``).  ``train`` picks which groups the
    NTK and gradient flow see: ``"both"``, ``"hidden"`` (W only) or ``"output"`` (a only).
    ``parameterization="standard"`` stores the 1/√m in ``a`` instead (same function at init).

    NTK (docs/theory.md §2), S = σ(XWᵀ), D = σ'(XWᵀ):
        H = (1/m)[S₁S₂ᵀ + (X₁X₂ᵀ) ⊙ ((D₁ diag a)(D₂ diag a)ᵀ)]
    """

    config_fields = _fields(
        Field("train", str, "both", "which layers train (and enter the NTK)", choices=TRAIN_MODES),
        Field("output_init", str, "gaussian", "initial output weights a: N(0,1) or ±1", choices=OUTPUT_INITS))

    def __init__(self, d: int, m: int, activation: str | Activation = "softplus", train: str = "both",
                 output_init: str = "gaussian", parameterization: str = "ntk", outputs: int = 1):
        self.d = _positive_int(d, "d (input dimension)")
        self.m = _positive_int(m, "m (width)")
        self.outputs = _positive_int(outputs, "outputs")
        self.activation = get_activation(activation)
        self.train = _choice(train, "train mode", TRAIN_MODES)
        self.output_init = _choice(output_init, "output_init", OUTPUT_INITS)
        self.parameterization = _choice(parameterization, "parameterization", PARAMETERIZATIONS)
        self.c = 1.0 / math.sqrt(self.m) if self.parameterization == "ntk" else 1.0

    def __repr__(self) -> str:
        return (f"TwoLayerNet(d={self.d}, m={self.m}, activation={self.activation.name!r}, train={self.train!r}, "
                f"output_init={self.output_init!r}, parameterization={self.parameterization!r}, outputs={self.outputs})")

    def config(self) -> dict[str, Any]:
        return {"kind": "two_layer", "d": self.d, "m": self.m, "activation": self.activation.name,
                "train": self.train, "output_init": self.output_init,
                "parameterization": self.parameterization, "outputs": self.outputs}

    @property
    def trainable(self) -> tuple[str, ...]:
        return {"both": ("W", "a"), "hidden": ("W",), "output": ("a",)}[self.train]

    def _a_shape(self) -> tuple[int, ...]:
        return (self.m,) if self.outputs == 1 else (self.m, self.outputs)

    def init(self, backend: Any = None, seed: int = 0) -> dict[str, Any]:
        """Draw W ~ N(0, 1) and a on the host with ``numpy.random.default_rng(seed)``, then move them."""
        seed = validation.check_seed(seed)
        be = self._backend(backend or "numpy", {})
        rng = np.random.default_rng(seed)
        W = rng.standard_normal((self.m, self.d))
        if self.output_init == "gaussian":
            a = rng.standard_normal(self._a_shape())
        else:
            a = rng.choice(np.array([-1.0, 1.0]), size=self._a_shape())
        if self.parameterization == "standard":
            a = a / math.sqrt(self.m)
        return {"W": be.asarray(W, name="W"), "a": be.asarray(a, name="a")}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W": (self.m, self.d), "a": self._a_shape()}

    def _forward(self, be: Any, params: dict, X: Any, need_derivative: bool, dscale: Any = None) -> tuple[Any, Any]:
        """(σ(XWᵀ), σ'(XWᵀ)·dscale or None); the callers have checked params."""
        return be.dense_activation(self.activation, X, params["W"], dscale, need_derivative)

    def _a2(self, params: dict) -> Any:
        a = params["a"]
        return a[:, None] if a.ndim == 1 else a

    def apply(self, params: dict, X: Any, backend: Any = None) -> Any:
        """f(X): (N,) for one output, (N, k) otherwise."""
        be = self._backend(backend, params)
        X = self.check_inputs(be, X)
        params = self.check_params(params, be)
        S, _ = self._forward(be, params, X, need_derivative=False)
        return self._output((S @ self._a2(params)) * self.c)

    def vjp(self, params: dict, X: Any, cotangent: Any, backend: Any = None) -> dict[str, Any]:
        """Σ_n cot[n]ᵀ ∂f(x_n)/∂θ for the trainable groups: a ← c Sᵀcot, W ← c ((cot aᵀ) ⊙ D)ᵀ X."""
        be = self._backend(backend, params)
        X = self.check_inputs(be, X)
        params = self.check_params(params, be)
        cot = self._cotangent(be, cotangent, X.shape[0])
        S, D = self._forward(be, params, X, need_derivative="W" in self.trainable)
        return self._grads(be, params, X, S, D, cot)

    def forward_backward(self, params: dict, X: Any, cotangent_fn: Any, backend: Any = None,
                         check: bool = True) -> tuple[Any, dict[str, Any]]:
        be = self._backend(backend, params)
        X = self.check_inputs(be, X) if check else be.asarray(X, name="X")
        params = self.check_params(params, be) if check else params
        S, D = self._forward(be, params, X, need_derivative="W" in self.trainable)
        f = self._output((S @ self._a2(params)) * self.c)
        return f, self._grads(be, params, X, S, D, self._cotangent(be, cotangent_fn(f), X.shape[0]))

    def _grads(self, be: Any, params: dict, X: Any, S: Any, D: Any, cot: Any) -> dict[str, Any]:
        """∇_a = c Sᵀcot, ∇_W = c ((cot aᵀ) ⊙ D)ᵀ X; the GEMM through ``be.gram`` (views), so torch's
        thread policy gives it every core (a plain ``D.T @ Y`` ran on one thread: 33 ms against 13)."""
        out = {}
        if "W" in self.trainable:
            a2 = self._a2(params)  # k = 1: ((cot aᵀ) ⊙ D)ᵀ X = diag(a) Dᵀ (cot ⊙ X), no N × m temporary
            one = a2.shape[1] == 1
            gW = be.gram((D if one else (cot @ a2.T) * D).T, (cot * X if one else X).T)
            out["W"] = (a2 * gW if one else gW) * self.c
        if "a" in self.trainable:
            ga = (S.T @ cot) * self.c
            out["a"] = ga[:, 0] if params["a"].ndim == 1 else ga
        return out

    def jacobian_factors(self, params: dict, X: Any, backend: Any, trace: bool = False) -> list[GramBlock]:
        be = backend
        self._check_params(params, self.param_shapes())
        a = params["a"]
        # one output: fold a into σ' inside the elementwise pass (D ← σ'(Z) diag a)
        fold = a if a.ndim == 1 else None
        S, D = self._forward(be, params, X, need_derivative="W" in self.trainable, dscale=fold)
        blocks = []
        c2 = self.c * self.c
        if "a" in self.trainable:
            blocks.append(GramBlock("a", S, None, c2, diagonal=True))
        if "W" in self.trainable:
            if a.ndim == 1:
                left = D[:, None, :]
            elif trace:  # mean over c of (D diag a_c)(D diag a_c)ᵀ = D diag(mean_c a_c²) Dᵀ
                left = (D * be.xp.sqrt((a * a).mean(1)))[:, None, :]
            else:
                left = D[:, None, :] * a.T[None, :, :]
            blocks.append(GramBlock("W", left, X, c2))
        return blocks

    def factor_bytes_per_row(self, itemsize: int, k: int) -> int:
        return itemsize * (self.m * (3 + k) + self.d)


class MLP(Model):
    r"""A deep fully-connected network in Jacot et al.'s NTK parameterisation.

    z_1 = W_1 x/√d + β b_1,  z_l = W_l σ(z_{l-1})/√n_{l-1} + β b_l,  f = W_{L+1} σ(z_L)/√n_L + β b_{L+1},
    every weight N(0, 1) (``parameterization="standard"``: N(0, 1/fan_in) and no factor; biases
    N(0, β²) and no factor).  Parameters ``{"W1": (n_1, d), "b1": (n_1,), ..., "W{L+1}": (k, n_L)}``.
    A one-hidden-layer MLP without bias equals TwoLayerNet on X/√d.
    """

    #: ``depth`` hidden layers of width ``m`` (widths = [m] * depth)
    config_fields = _fields(Field("depth", int, 2, "number of hidden layers (mlp)", positive=True),
                            Field("bias", bool, True, "biases β b_l in every layer"),
                            Field("beta", float, 0.1, "bias scale β", minimum=0))

    def __init__(self, d: int, widths: list[int] | tuple[int, ...], activation: str | Activation = "relu",
                 outputs: int = 1, bias: bool = True, beta: float = 0.1, parameterization: str = "ntk"):
        self.d = _positive_int(d, "d (input dimension)")
        if isinstance(widths, (int, np.integer)):
            widths = [widths]
        if len(widths) == 0:
            raise ValueError("widths must list at least one hidden width, e.g. [512, 512]")
        self.widths = [_positive_int(w, f"widths[{i}]") for i, w in enumerate(widths)]
        self.outputs = _positive_int(outputs, "outputs")
        self.activation = get_activation(activation)
        self.bias = bool(bias)
        self.beta = float(beta)
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a finite number >= 0; got {beta!r}")
        self.parameterization = _choice(parameterization, "parameterization", PARAMETERIZATIONS)
        self.sizes = [self.d, *self.widths, self.outputs]
        self.depth = len(self.widths) + 1  # number of dense layers

    def __repr__(self) -> str:
        return (f"MLP(d={self.d}, widths={self.widths}, activation={self.activation.name!r}, outputs={self.outputs}, "
                f"bias={self.bias}, beta={self.beta}, parameterization={self.parameterization!r})")

    def config(self) -> dict[str, Any]:
        return {"kind": "mlp", "d": self.d, "widths": list(self.widths), "activation": self.activation.name,
                "outputs": self.outputs, "bias": self.bias, "beta": self.beta,
                "parameterization": self.parameterization}

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {}
        for l in range(1, self.depth + 1):
            shapes[f"W{l}"] = (self.sizes[l], self.sizes[l - 1])
            if self.bias:
                shapes[f"b{l}"] = (self.sizes[l],)
        return shapes

    @property
    def trainable(self) -> tuple[str, ...]:
        return tuple(self._shapes())

    def _coef(self, l: int) -> tuple[float, float]:
        """(weight factor c_l, bias factor) of layer l in the forward pass."""
        if self.parameterization == "ntk":
            return 1.0 / math.sqrt(self.sizes[l - 1]), self.beta
        return 1.0, 1.0

    def init(self, backend: Any = None, seed: int = 0) -> dict[str, Any]:
        seed = validation.check_seed(seed)
        be = self._backend(backend or "numpy", {})
        rng = np.random.default_rng(seed)
        out = {}
        for key, shape in self._shapes().items():
            w = rng.standard_normal(shape)
            if self.parameterization == "standard":
                w = w / math.sqrt(shape[1]) if key.startswith("W") else w * self.beta
            out[key] = be.asarray(w, name=key)
        return out

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return self._shapes()

    def _forward(self, be: Any, params: dict, X: Any, need_derivative: bool):
        """(f, layer inputs h_l, σ'(z_l)); the callers have checked params."""
        hs, Ds = [X], [None]
        h = X
        for l in range(1, self.depth):
            c, cb = self._coef(l)
            z = be.mul_into(be.gram(h, params[f"W{l}"]), c)  # h W_lᵀ c
            if self.bias:
                z = z + params[f"b{l}"] * cb
            if need_derivative:
                h, D = be.activation_joint(self.activation, z, overwrite=True)
            else:
                (h,) = be.map_rows(lambda t: self.activation.value(be, t), z, 1)
                D = None
            hs.append(h)
            Ds.append(D)
        L = self.depth
        c, cb = self._coef(L)
        f = (h @ params[f"W{L}"].T) * c
        if self.bias:
            f = f + params[f"b{L}"] * cb
        return f, hs, Ds

    def apply(self, params: dict, X: Any, backend: Any = None) -> Any:
        be = self._backend(backend, params)
        X = self.check_inputs(be, X)
        params = self.check_params(params, be)
        f, _, _ = self._forward(be, params, X, need_derivative=False)
        return self._output(f)

    def vjp(self, params: dict, X: Any, cotangent: Any, backend: Any = None) -> dict[str, Any]:
        """Back-propagation: δ_{L+1} = cot, grad W_l = c_l δ_lᵀ h_{l-1}, δ_{l-1} = c_l (δ_l W_l) ⊙ σ'(z_{l-1})."""
        be = self._backend(backend, params)
        X = self.check_inputs(be, X)
        params = self.check_params(params, be)
        delta = self._cotangent(be, cotangent, X.shape[0])
        _, hs, Ds = self._forward(be, params, X, need_derivative=True)
        return self._backprop(params, hs, Ds, delta)

    def forward_backward(self, params: dict, X: Any, cotangent_fn: Any, backend: Any = None,
                         check: bool = True) -> tuple[Any, dict[str, Any]]:
        be = self._backend(backend, params)
        X = self.check_inputs(be, X) if check else be.asarray(X, name="X")
        params = self.check_params(params, be) if check else params
        f, hs, Ds = self._forward(be, params, X, need_derivative=True)
        f = self._output(f)
        delta = self._cotangent(be, cotangent_fn(f), X.shape[0])
        return f, self._backprop(params, hs, Ds, delta)

    def _backprop(self, params: dict, hs: list, Ds: list, delta: Any) -> dict[str, Any]:
        grads = {}
        for l in range(self.depth, 0, -1):
            c, cb = self._coef(l)
            grads[f"W{l}"] = (delta.T @ hs[l - 1]) * c
            if self.bias:
                grads[f"b{l}"] = delta.sum(0) * cb
            if l > 1:
                delta = ((delta @ params[f"W{l}"]) * c) * Ds[l - 1]
        return {k: grads[k] for k in self.trainable}

    def jacobian_factors(self, params: dict, X: Any, backend: Any, trace: bool = False) -> list[GramBlock]:
        be = backend
        self._check_params(params, self.param_shapes())
        _, hs, Ds = self._forward(be, params, X, need_derivative=True)
        L = self.depth
        c, cb = self._coef(L)
        blocks = [GramBlock(f"W{L}", hs[L - 1], None, c * c, diagonal=True)]
        if self.bias:
            ones = be.asarray(np.ones((X.shape[0], 1)))
            blocks.append(GramBlock(f"b{L}", ones, None, cb * cb, diagonal=True))
        # G: (N, k, n_l), the signal ∂f_c/∂z_l back-propagated to layer l
        G = Ds[L - 1][:, None, :] * (params[f"W{L}"] * c)[None, :, :]
        for l in range(L - 1, 0, -1):
            c, cb = self._coef(l)
            blocks.append(GramBlock(f"W{l}", G, hs[l - 1], c * c))
            if self.bias:
                blocks.append(GramBlock(f"b{l}", G, None, cb * cb))
            if l > 1:
                # (N, k, n_l) @ (n_l, n_{l-1}) as one 2-D GEMM: a batched 3-D matmul runs N small products
                n, k = G.shape[0], G.shape[1]
                G = ((G.reshape(n * k, -1) @ params[f"W{l}"]).reshape(n, k, -1) * c) * Ds[l - 1][:, None, :]
        return blocks

    def factor_bytes_per_row(self, itemsize: int, k: int) -> int:
        return itemsize * (sum(self.widths) * (2 + k) + self.d + self.outputs)
