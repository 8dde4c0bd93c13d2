"""The Backend interface (arrays, devices, dtypes, memory, compilation), its structured hot path, and ``get_backend()``.

A backend owns execution: its array namespace ``xp``, device, dtype, conversion from and to NumPy,
and the hot path :meth:`Backend.jacobian_gram`, which evaluates the neural tangent kernel

    H(x, x') = ∇θf(x)ᵀ ∇θf(x')  =  Σ_blocks  scale · (L₁L₂ᵀ) ⊙ (R₁R₂ᵀ)

from the Jacobian *factors* a structured model provides (docs/theory.md §2), with GEMMs only
(:func:`ntkframe.core.gram.combine_blocks`) and without forming the N × P Jacobian, tile by tile
through the one tile engine (:mod:`ntkframe.core.tiles`).  A backend package overrides what its
framework does differently: arrays and devices (``backend.py``), the activation pass and the
combine (``gram.py``), and, with autodiff, :meth:`generic_jacobian_gram` (``autodiff.py``);
a compiling framework plugs in through :meth:`compile`, :meth:`rows` and :meth:`set_block`.
Host utilities live in :mod:`ntkframe.core.host`, performance constants in :mod:`ntkframe.core.tuning`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, ClassVar

import numpy as np

from . import tiles, tuning
from .gram import combine_blocks
from .host import (DTYPES, available_memory_bytes, cpu_threads, framework_availability,  # noqa: F401 - re-exported
                   parse_device, parse_dtype)
from ..errors import BackendUnavailableError, UnknownNameError


def _freeze(value: Any) -> Any:
    """A hashable copy of a model's ``config()`` (dicts and lists become sorted tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    hash(value)
    return value


def model_key(model: Any) -> tuple:
    """Identify a model's traced computation: its class, its frozen ``config()`` and its activation
    object (two custom activations with one name must not share a compiled function).  Models whose
    config cannot be frozen are keyed by the object itself."""
    try:
        return (type(model), _freeze(model.config()), getattr(model, "activation", None))
    except Exception:  # noqa: BLE001 - any un-hashable or unimplemented config falls back to identity
        pass
    try:
        hash(model)
        return (type(model), "object", model)  # holds the model, so its id cannot be reused
    except TypeError:
        return (type(model), "id", id(model))


class Backend:
    """Execution engine for one array framework on one device and dtype.

    Subclasses set ``name`` and ``framework`` and implement ``_load`` (import the framework and
    return its namespace), ``asarray`` checks, ``array_to_numpy`` and ``owns``.  Capabilities:
    ``autodiff`` (the generic paths exist), ``compiles`` (:meth:`compile` does something: the
    pieces of the hot path are then cached per model), ``fixed_tile_shape`` (tiles of one shape).
    """

    name: ClassVar[str] = "base"
    framework: ClassVar[str] = ""
    devices_allowed: ClassVar[tuple[str, ...]] = ("cpu",)
    autodiff: ClassVar[bool] = False
    compiles: ClassVar[bool] = False
    fixed_tile_shape: ClassVar[bool] = False

    def __init__(self, device: str | None = None, dtype: Any = "float64"):
        self.dtype_name = parse_dtype(dtype)
        self.device_kind, self.device_index = parse_device(device, self.devices_allowed)
        ok, reason = type(self).availability()
        if not ok:
            raise BackendUnavailableError(f"backend {self.name!r} is unavailable: {reason}")
        self._jit_cache: OrderedDict[Any, Any] = OrderedDict()
        self.xp = self._load()

    # -- identity --------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return "cpu" if self.device_kind == "cpu" else f"{self.device_kind}:{self.device_index}"

    @property
    def device_object(self) -> Any:
        """The framework's own device object (torch.device, jax.Device, cupy Device; "cpu" for NumPy)."""
        return self.device

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} device={self.device!r} dtype={self.dtype_name!r}>"

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "device": self.device, "dtype": self.dtype_name}

    def blas_info(self) -> dict[str, Any]:
        """Which GEMM library and path this backend's hot path runs on, for provenance:
        ``{"path": ..., "library": ...}`` (each backend says what it knows, without importing
        anything it has not already loaded)."""
        return {"path": "unknown", "library": "unknown"}

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, reason or version string); must not raise, and must not import the
        framework (use ``importlib.util.find_spec``): listing backends stays cheap."""
        return True, ""

    @classmethod
    def devices(cls) -> list[str]:
        return ["cpu"]

    @classmethod
    def owns(cls, x: Any) -> bool:
        """Whether ``x`` is an array of this backend's framework (checked without importing it)."""
        return False

    @staticmethod
    def array_to_numpy(x: Any) -> np.ndarray:
        return np.asarray(x)

    @classmethod
    def from_array(cls, x: Any) -> "Backend":
        """A backend on ``x``'s device with ``x``'s dtype."""
        return cls(dtype=str(x.dtype).replace("torch.", ""))

    def _load(self) -> Any:
        raise NotImplementedError

    # -- arrays ----------------------------------------------------------------------------
    def asarray(self, x: Any, name: str = "array") -> Any:
        """Convert NumPy input (or nested lists/scalars) to a backend array of this dtype and device."""
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        return type(self).array_to_numpy(x)

    def params_on_device(self, params: Any, name: str = "params") -> Any:
        """Every array of the dict ``params`` through :meth:`asarray` (moved, cast, or refused)."""
        if not isinstance(params, dict):
            return params
        return {k: self.asarray(v, name=f"{name}[{k!r}]") for k, v in params.items()}

    def astype(self, x: Any, dtype: Any) -> Any:
        return x.astype(dtype)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.asarray(np.zeros(shape))

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype_name)

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype_name == "float32" else 8

    def sync(self, x: Any = None) -> Any:
        """Wait for queued device work (no-op on the CPU); returns ``x``."""
        return x

    def memory_budget(self) -> int:
        """Bytes that ``block_size="auto"`` may use for factors and tiles (``tuning.MEMORY_FRACTION``)."""
        return int(tuning.MEMORY_FRACTION * available_memory_bytes())

    # -- compilation and tiles -------------------------------------------------------------
    def compile(self, fn: Any, static_argnums: tuple[int, ...] = ()) -> Any:
        """``fn`` compiled for this backend where that pays (JAX: ``jax.jit``); else ``fn`` itself.
        ``fn`` must be a pure function of its array (pytree) arguments; ``static_argnums`` are the
        Python values (tile sizes) it is specialised on."""
        return fn

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """The compiled function(s) stored under ``key``, built by ``build()`` on first use (LRU,
        ``tuning.JIT_CACHE_SIZE`` entries)."""
        cache = self._jit_cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = build()
        cache[key] = value
        while len(cache) > tuning.JIT_CACHE_SIZE:
            cache.popitem(last=False)
        return value

    def rows(self, X: Any, i0: Any, b: int) -> Any:
        """X[i0:i0+b] (a compiling backend takes a traced start: one compiled tile for every position)."""
        return X[i0:i0 + b]

    def set_block(self, out: Any, i0: int, j0: int, tile: Any, mirror: bool = False) -> Any:
        """``out[i0:, j0:] = tile`` (and with ``mirror`` its transpose at ``out[j0:, i0:]``, output
        axes swapped for a (b, b, k, k) tile); returns ``out`` (a new array on functional backends)."""
        ni, nj = tile.shape[0], tile.shape[1]
        out[i0:i0 + ni, j0:j0 + nj] = tile
        if mirror:
            out[j0:j0 + nj, i0:i0 + ni] = self.permute(tile, (1, 0) if tile.ndim == 2 else (1, 0, 3, 2))
        return out

    # -- elementwise and GEMMs (a backend's gram.py specialises these) ---------------------
    def erf(self, z: Any) -> Any:
        raise NotImplementedError

    def relu(self, z: Any) -> Any:
        return (z + self.xp.abs(z)) * 0.5

    def step(self, z: Any) -> Any:
        """Heaviside step 1[z > 0] in the dtype of ``z``."""
        return self.astype(z > 0, z.dtype)

    def map_rows(self, fn: Any, z: Any, n_out: int) -> tuple[Any, ...]:
        """Apply an elementwise ``fn(z) -> tuple`` of ``n_out`` arrays (CPU backends split rows over threads)."""
        out = fn(z)
        return out if isinstance(out, tuple) else (out,)

    def activation_joint(self, act: Any, z: Any, dscale: Any | None = None,
                         overwrite: bool = False) -> tuple[Any, Any]:
        """(σ(z), σ'(z)·dscale) elementwise; ``dscale`` (a row vector, e.g. the output weights a)
        is folded into the derivative so the hot path needs no extra pass over the N × m matrix.
        ``overwrite=True`` says the caller no longer needs ``z``: a backend may then return σ(z)
        in ``z``'s memory (NumPy does; the default ignores it)."""
        S, D = self.map_rows(lambda t: act.value_and_derivative(self, t), z, 2)
        return S, (D if dscale is None else D * dscale)

    def dense_activation(self, act: Any, X: Any, W: Any, dscale: Any | None = None,
                         need_derivative: bool = True) -> tuple[Any, Any]:
        """A dense layer's forward pass: (σ(Z), σ'(Z)·dscale) with Z = X Wᵀ (N × m), or (σ(Z), None)
        without ``need_derivative`` (docs/theory.md §2: the factors S and D of the two-layer NTK).

        Here :meth:`gram` then :meth:`activation_joint`; torch runs both per row block on its threads."""
        Z = self.gram(X, W)
        if need_derivative:
            return self.activation_joint(act, Z, dscale, overwrite=True)
        (S,) = self.map_rows(lambda z: act.value(self, z), Z, 1)
        return S, None

    def gram(self, A: Any, B: Any | None = None) -> Any:
        """A Bᵀ, or the symmetric A Aᵀ when ``B`` is None."""
        return A @ (A if B is None else B).T

    def combine(self, F1: list, F2: list | None, k: int, trace: bool) -> Any:
        """The kernel from Jacobian factors: :func:`~ntkframe.core.gram.combine_blocks` (a backend may
        specialise it, e.g. NumPy accumulates the symmetric products into one triangle with BLAS ``syrk``)."""
        return combine_blocks(self, F1, F2, k, trace)

    def mul_into(self, x: Any, y: Any) -> Any:
        """x ⊙ y (``y`` broadcast to ``x``'s shape); a backend may write it into ``x``, which the
        caller owns and no longer needs (combine_blocks passes only fresh Gram products)."""
        return x * y

    def add_into(self, x: Any, y: Any) -> Any:
        """x + y, into ``x`` where the backend can (same contract as :meth:`mul_into`)."""
        return x + y

    def permute(self, x: Any, axes: tuple[int, ...]) -> Any:
        return x.transpose(axes)

    # -- hot path --------------------------------------------------------------------------
    def jacobian_gram(self, model: Any, params: dict, X1: Any, X2: Any | None = None, *,
                      block_size: int | str | None = None, trace: bool = False) -> Any:
        """The empirical NTK H(X1, X2) of a structured model, from its Jacobian factors.

        Shapes: X1 (N1, d), X2 (N2, d) or None (then H(X1, X1), computed with symmetric GEMMs).
        Returns (N1, N2) for one output or ``trace=True`` (mean of the k diagonal kernels), else
        (N1, N2, k, k).  ``block_size=b`` fills the result in b × b tiles (:mod:`ntkframe.core.tiles`)
        so that only the factors of 2b inputs are alive at once; ``"auto"`` picks b from
        :meth:`memory_budget` and ``model.factor_bytes_per_row``.  On a compiling backend the
        factor and contraction pieces are compiled once per (model config, trace) and cached.
        """
        trace = tiles.check_trace(trace)
        X1 = model.check_inputs(self, X1, "X1")
        symmetric = X2 is None
        X2c = X1 if symmetric else model.check_inputs(self, X2, "X2")
        params = model.check_params(params, self)  # keys, shapes, framework, dtype, finiteness: once, here
        n1, n2 = X1.shape[0], X2c.shape[0]
        k = 1 if trace else model.outputs
        b = tiles.plan_block(self, model.factor_bytes_per_row(self.itemsize, k), n1, n2, k=k, block_size=block_size)
        build = lambda: self._structured_pieces(model, trace)  # noqa: E731
        fns = self.cached(("structured", model_key(model), trace), build) if self.compiles else build()
        H = tiles.gram(self, n1, n2, b, k=k, symmetric=symmetric,
                       rows1=lambda i0, bi: fns["rows"](params, X1, i0, bi),
                       rows2=lambda j0, bj: fns["rows"](params, X2c, j0, bj),
                       tile=fns["tile"], whole=lambda: fns["whole"](params, X1, None if symmetric else X2c),
                       cross=lambda F1, j0, bj: fns["cross"](F1, params, X2c, j0, bj))
        return self._remember(H)

    def _structured_pieces(self, model: Any, trace: bool) -> dict[str, Any]:
        """rows(params, X, i0, b): the factors of rows i0:i0+b; tile(F1, F2|None): their contraction;
        cross(F1, params, X, j0, b): F1 against the factors of rows j0:j0+b of X, in one piece;
        whole(params, X1, X2|None): both sides in one piece — each through :meth:`compile`."""
        k = model.outputs

        def rows(params: dict, X: Any, i0: Any, b: int) -> list:
            return model.jacobian_factors(params, self.rows(X, i0, b), self, trace=trace)

        def tile(F1: list, F2: list | None) -> Any:
            return self.combine(F1, F2, k, trace)

        def cross(F1: list, params: dict, X: Any, j0: Any, b: int) -> Any:
            return self.combine(F1, rows(params, X, j0, b), k, trace)

        def whole(params: dict, X1: Any, X2: Any | None) -> Any:
            F1 = model.jacobian_factors(params, X1, self, trace=trace)
            return self.combine(F1, None if X2 is None else model.jacobian_factors(params, X2, self, trace=trace),
                                k, trace)

        return {"rows": self.compile(rows, static_argnums=(3,)), "tile": self.compile(tile),
                "cross": self.compile(cross, static_argnums=(4,)), "whole": self.compile(whole)}

    def _remember(self, H: Any) -> Any:
        """Hook for asynchronous backends (JAX keeps a weak reference for :meth:`sync`)."""
        return H

    def generic_jacobian_gram(self, model: Any, params: Any, X1: Any, X2: Any | None = None, *,
                              implementation: str = "auto", block_size: int | str | None = None,
                              trace: bool = False) -> Any:
        """The NTK of any differentiable model by automatic differentiation (backends with
        ``autodiff``: their ``autodiff.py``); this backend has none."""
        raise TypeError(
            f"the {self.name} backend has no automatic differentiation, so it can only compute the NTK of ntkframe "
            f"models (TwoLayerNet, MLP); for {type(model).__name__} use the torch or jax backend"
        )


# -- the public functions ----------------------------------------------------------------------

def list_backends(devices: bool = False) -> dict[str, dict[str, Any]]:
    """Backend name -> {"available", "reason", "plugin"} for every registered backend.

    ``availability`` only looks for the framework (no import); ``devices=True`` also imports each
    available framework to list its devices (as ``ntkframe plugins`` does).
    """
    from ..plugins import registry

    out = {}
    for entry in registry("backends"):
        cls = entry.obj
        try:
            ok, reason = cls.availability()
            found = (cls.devices() if ok else []) if devices else None
        except Exception as exc:  # noqa: BLE001 - a broken probe must not hide the others
            ok, reason, found = False, f"{type(exc).__name__}: {exc}", []
        out[entry.name] = {"available": ok, "reason": reason, "plugin": entry.plugin}
        if devices:
            out[entry.name]["devices"] = found
    return out


def _describe_available() -> str:
    parts = []
    for name, info in list_backends().items():
        parts.append(name if info["available"] else f"{name} (unavailable: {info['reason']})")
    return ", ".join(parts) or "(none)"


def get_backend(name: str | Backend = "numpy", device: str | None = None, dtype: Any = "float64",
                **options: Any) -> Backend:
    """Build the backend ``name`` on ``device`` ("cpu", "cuda", "cuda:N") with ``dtype``.

    ``options`` go to the backend class (e.g. ``blas="numpy"`` for the NumPy backend).  An unknown
    name raises an error listing every registered backend and why an unavailable one is.
    """
    if isinstance(name, Backend):
        return name
    from ..plugins import registry

    reg = registry("backends")
    if name not in reg:
        raise UnknownNameError(f"unknown backend {name!r}; available: {_describe_available()}")
    cls = reg.get(name)
    return cls(device=device, dtype=dtype, **options)


def backend_for(x: Any) -> type[Backend] | None:
    """The registered backend class whose framework owns array ``x`` (NumPy arrays: numpy)."""
    from ..plugins import registry

    for entry in registry("backends"):
        try:
            if entry.obj.owns(x):
                return entry.obj
        except Exception:  # noqa: BLE001
            continue
    return None


def to_numpy(x: Any) -> np.ndarray:
    """Bring an array of any registered backend (or a dict of them) back to the host as NumPy."""
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return x
    cls = backend_for(x)
    if cls is not None:
        return cls.array_to_numpy(x)
    return np.asarray(x)


def infer_backend(x: Any) -> Backend:
    """A backend instance matching array ``x``'s framework, device and dtype."""
    cls = backend_for(x)
    if cls is None:
        raise TypeError(
            f"cannot tell which backend owns an object of type {type(x).__module__}.{type(x).__name__}; "
            "pass backend=nf.get_backend(...)"
        )
    return cls.from_array(x)


def resolve_backend(backend: Backend | str | None, params: Any = None) -> Backend:
    """The backend to compute on: ``backend`` itself, the registered one of that name, the one owning
    the first array of ``params`` (a dict), or NumPy."""
    if isinstance(backend, Backend):
        return backend
    if backend is not None:
        return get_backend(backend)
    if isinstance(params, dict) and params:
        from .validation import backend_of_params

        return backend_of_params(params, infer_backend)
    return get_backend("numpy")
