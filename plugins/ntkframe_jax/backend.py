"""The JAX backend: devices, array conversion and the jitted structured Jacobian-Gram hot path.

Nothing here imports jax at module level: :meth:`JaxBackend.availability` only looks for the
package (``importlib.util.find_spec``), and jax is imported when a backend is built.

Hot path.  For a structured ntkframe model (TwoLayerNet, MLP) the NTK is contracted from the
model's Jacobian factors (docs/theory.md §2),

    H = Σ_blocks scale · (L₁L₂ᵀ) ⊙ (R₁R₂ᵀ),

exactly as :func:`ntkframe.core.backend.combine_blocks` does on every backend, but the factor
computation and the contraction of a tile run inside one ``jax.jit``: XLA fuses the elementwise
activation passes and the Hadamard products around the GEMMs, and a tile costs one dispatch.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from ntkframe.core.backend import MEMORY_FRACTION, Backend, combine_blocks, framework_availability
from ntkframe.errors import BackendUnavailableError

#: frameworks whose arrays the JAX backend refuses (never a silent copy between frameworks)
FOREIGN_FRAMEWORKS = ("torch", "cupy", "cupyx", "tensorflow", "mxnet", "dask")
#: how many compiled functions one backend keeps (least recently used dropped first)
JIT_CACHE_SIZE = 64

_PYTREE = {"registered": False}


def _register_gram_block(jax: Any) -> None:
    """Make :class:`ntkframe.core.models.GramBlock` a JAX pytree (arrays: left, right; static: the rest),
    so that lists of factors can cross a ``jax.jit`` boundary.  Done once per process."""
    if _PYTREE["registered"]:
        return
    from ntkframe.core.models import GramBlock

    try:
        jax.tree_util.register_dataclass(GramBlock, data_fields=["left", "right"],
                                         meta_fields=["name", "scale", "diagonal"])
    except ValueError:  # already registered (e.g. a reloaded plugin module)
        pass
    _PYTREE["registered"] = True


def _freeze(value: Any) -> Any:
    """A hashable copy of a model's ``config()`` (dicts and lists become sorted tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    hash(value)
    return value


def model_key(model: Any) -> tuple:
    """Identify a model's traced computation: its class, its frozen ``config()`` and its
    activation object (two custom activations with one name must not share a compiled function).
    Models whose config cannot be frozen are keyed by the object itself."""
    try:
        return (type(model), _freeze(model.config()), getattr(model, "activation", None))
    except Exception:  # noqa: BLE001 - any un-hashable or unimplemented config falls back to identity
        pass
    try:
        hash(model)
        return (type(model), "object", model)  # holds the model, so its id cannot be reused
    except TypeError:
        return (type(model), "id", id(model))


def _framework_of(x: Any) -> str:
    return type(x).__module__.split(".")[0]


class JaxBackend(Backend):
    """Backend on JAX (``jax.numpy``), on the CPU or a CUDA GPU ("cpu", "cuda", "cuda:N").

    **Process-wide settings.**  JAX configures precision per process, not per array:

    - asking for ``dtype="float64"`` turns on ``jax_enable_x64`` for the whole process (JAX
      otherwise silently computes in float32).  It stays on: a float32 backend built afterwards
      still produces float32 arrays, since every array this backend creates gets its dtype
      explicitly; but other JAX code in the process now defaults to 64-bit types.
    - ``jax_default_matmul_precision`` is set to ``"highest"``, so float32 matmuls on recent
      NVIDIA GPUs never use TF32 (which JAX uses by default and which costs ~3 decimal digits).

    On a GPU, JAX preallocates 75 % of the device memory at first use; set
    ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` before importing jax when it shares the GPU.
    ``block_size="auto"`` reads the allocator's free bytes (``device.memory_stats()``).

    Arrays: NumPy input is moved with ``jax.device_put`` to the backend's device and dtype; a jax
    array on another device, or an array of another framework (torch, cupy, ...), raises
    ``TypeError`` naming both: ntkframe never copies across devices or frameworks silently.

    Asynchronous dispatch: JAX returns before the device finishes.  :meth:`sync` blocks on a given
    result (``jax.block_until_ready``) or, without an argument, on the last kernel this backend
    returned — what timing code must call before reading a clock.
    """

    name = "jax"
    framework = "jax"
    devices_allowed = ("cpu", "cuda")

    def __init__(self, device: str | None = None, dtype: Any = "float64"):
        self._jit_cache: OrderedDict[Any, Any] = OrderedDict()
        self._last: Callable[[], Any] | None = None
        super().__init__(device=device, dtype=dtype)

    # -- availability and devices ----------------------------------------------------------
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return framework_availability("jax", "jax not installed (pip install 'ntkframe[jax]')")

    @classmethod
    def devices(cls) -> list[str]:
        """["cpu", "cuda:0", ...]: imports jax (``list_backends(devices=True)`` only)."""
        import jax

        return ["cpu"] + [f"cuda:{i}" for i in range(len(_gpu_devices(jax)))]

    @classmethod
    def owns(cls, x: Any) -> bool:
        return type(x).__module__.startswith(("jax", "jaxlib"))

    @staticmethod
    def array_to_numpy(x: Any) -> np.ndarray:
        return np.asarray(x)

    @classmethod
    def from_array(cls, x: Any) -> "JaxBackend":
        """The backend on ``x``'s device with ``x``'s dtype."""
        import jax

        (dev,) = tuple(x.devices())
        device = "cpu" if dev.platform == "cpu" else f"cuda:{_gpu_devices(jax).index(dev)}"
        return cls(device=device, dtype=str(x.dtype))

    def _load(self) -> Any:
        import jax
        import jax.numpy as jnp
        import jax.scipy.special

        if self.dtype_name == "float64" and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)  # process-wide: see the class docstring
        jax.config.update("jax_default_matmul_precision", "highest")  # no TF32
        if self.device_kind == "cpu":
            self._device = jax.devices("cpu")[0]
        else:
            gpus = _gpu_devices(jax)
            if self.device_index >= len(gpus):
                present = _describe_devices([*jax.devices("cpu"), *gpus])
                hint = "" if gpus else " (install a CUDA build of jax: pip install 'jax[cuda12]')"
                raise BackendUnavailableError(
                    f"jax has no CUDA device {self.device!r}: it sees {len(gpus)} GPU(s); devices present: "
                    f"{present}{hint}"
                )
            self._device = gpus[self.device_index]
        self._jax = jax
        self._erf = jax.scipy.special.erf
        self._dtype = jnp.dtype(self.dtype_name)
        self._update = jax.jit(_update_tile, donate_argnums=0, static_argnums=4)
        _register_gram_block(jax)
        return jnp

    # -- arrays ----------------------------------------------------------------------------
    def asarray(self, x: Any, name: str = "array") -> Any:
        """``x`` as a jax array of this backend's dtype on its device.

        NumPy arrays, lists and scalars are moved; jax arrays on this device are cast if needed
        (a traced value inside ``jax.jit`` passes through); anything else raises ``TypeError``.
        """
        jax = self._jax
        if isinstance(x, jax.Array):
            if not isinstance(x, jax.core.Tracer):
                where = x.devices()
                if where != {self._device}:
                    raise TypeError(
                        f"{name} is a jax array on {_describe_devices(where)} but the jax backend runs on "
                        f"{self.device} ({self._device}); move it explicitly with "
                        f"jax.device_put(x, be.device_object) — ntkframe never copies between devices silently"
                    )
            return x if x.dtype == self._dtype else x.astype(self._dtype)
        mod = _framework_of(x)
        if mod in FOREIGN_FRAMEWORKS:
            raise TypeError(
                f"{name} is a {mod} array ({type(x).__name__}); the jax backend on {self.device} takes NumPy "
                f"arrays or jax arrays. Convert it explicitly (nf.to_numpy(x)) or use the {mod} backend; "
                "ntkframe never copies between frameworks silently."
            )
        return jax.device_put(np.asarray(x, dtype=self.dtype_name), self._device)

    @property
    def device_object(self) -> Any:
        """The ``jax.Device`` this backend computes on."""
        return self._device

    def astype(self, x: Any, dtype: Any) -> Any:
        return x.astype(dtype)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.xp.zeros(shape, dtype=self._dtype, device=self._device)

    def erf(self, z: Any) -> Any:
        return self._erf(z)

    def relu(self, z: Any) -> Any:
        return self.xp.maximum(z, 0.0)

    def permute(self, x: Any, axes: tuple[int, ...]) -> Any:
        return self.xp.transpose(x, axes)

    def gram(self, A: Any, B: Any | None = None) -> Any:
        """A Bᵀ; for the symmetric A Aᵀ only the blocks on and above the diagonal are multiplied.

        XLA has no symmetric rank-k update (BLAS syrk), so A Aᵀ would cost a full GEMM.  Split
        A = [A₁; A₂]: A Aᵀ = [[A₁A₁ᵀ, A₁A₂ᵀ], [(A₁A₂ᵀ)ᵀ, A₂A₂ᵀ]], recursively on the diagonal
        blocks while they have at least :data:`SYMMETRIC_MIN_ROWS` rows: 5/8 of the flops for
        N = 4·SYMMETRIC_MIN_ROWS, tending to 1/2.  Shapes are static under jit, so the recursion
        unrolls at trace time into plain GEMMs.
        """
        if B is not None:
            return A @ B.T
        return _symmetric_gram(self.xp, A)

    def set_block(self, out: Any, rows: slice, cols: slice, value: Any) -> Any:
        """A copy of ``out`` with ``out[rows, cols] = value`` (functional: ``out`` is unchanged)."""
        return out.at[rows, cols].set(value)

    def compile(self, fn: Any) -> Any:
        """``jax.jit(fn)``: gradient-flow evaluations run as one compiled XLA program."""
        import jax

        return jax.jit(fn)

    def sync(self, x: Any = None) -> Any:
        """Block until ``x`` (any pytree of arrays) — or, without it, the last kernel this backend
        returned — is computed (``jax.block_until_ready``); returns ``x``."""
        if x is None:
            x = self._last() if self._last is not None else None
            if x is None:
                return None
        return self._jax.block_until_ready(x)

    def _remember(self, H: Any) -> Any:
        try:
            self._last = weakref.ref(H)
        except TypeError:  # pragma: no cover - arrays that refuse weak references
            self._last = lambda: H
        return H

    def memory_budget(self) -> int:
        """Bytes ``block_size="auto"`` may use: a fraction of free host memory on the CPU, of the
        JAX allocator's free bytes (limit − in use) on a GPU."""
        if self.device_kind != "cpu":
            try:
                stats = self._device.memory_stats() or {}
            except Exception:  # noqa: BLE001 - some runtimes do not report memory
                stats = {}
            limit = stats.get("bytes_limit")
            if limit:
                return int(MEMORY_FRACTION * max(0, limit - stats.get("bytes_in_use", 0)))
        return super().memory_budget()

    # -- compiled-function cache -----------------------------------------------------------
    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """The compiled function(s) stored under ``key``, built by ``build()`` on first use.

        ``jax.jit`` keeps one executable per argument shape/dtype/structure inside each jitted
        function, so one entry here serves every (shapes, symmetric) combination of a key.
        """
        cache = self._jit_cache
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = build()
        cache[key] = value
        while len(cache) > JIT_CACHE_SIZE:
            cache.popitem(last=False)
        return value

    def params_on_device(self, params: Any, name: str = "params") -> Any:
        """Every leaf of the pytree ``params`` through :meth:`asarray` (moved, cast, or refused)."""
        return self._jax.tree_util.tree_map(lambda a: self.asarray(a, name=f"a leaf of {name}"), params)

    # -- hot path --------------------------------------------------------------------------
    def jacobian_gram(self, model: Any, params: dict, X1: Any, X2: Any | None = None, *,
                      block_size: int | str | None = None, trace: bool = False) -> Any:
        """The empirical NTK of a structured model, H = Σ scale·(L₁L₂ᵀ) ⊙ (R₁R₂ᵀ), jitted.

        Same contract as :meth:`ntkframe.core.backend.Backend.jacobian_gram`: X1 (N1, d), X2 (N2, d) or
        None (symmetric H(X1, X1)); result (N1, N2) for one output or ``trace=True``, else
        (N1, N2, k, k), a jax array on this backend's device.

        Without blocking, factors and contraction are one compiled function of (params, X1, X2).
        With ``block_size=b`` the result is filled in b × b tiles: the factors of a row block are
        computed once (one compiled call), each tile's column factors and contraction are another,
        and tiles are written in place (a donated buffer), so only the factors of 2b inputs and
        one tile are alive besides the result.  Compiled functions are cached per (model config,
        trace); JAX caches their executables per (shapes, symmetric).
        """
        X1 = model.check_inputs(self, X1, "X1")
        symmetric = X2 is None
        X2c = X1 if symmetric else model.check_inputs(self, X2, "X2")
        params = self.params_on_device(params)
        n1, n2 = X1.shape[0], X2c.shape[0]
        k = 1 if trace else model.outputs
        b = self.resolve_block_size(model, block_size, n1, n2, k)
        fns = self.cached(("structured", model_key(model), bool(trace)),
                          lambda: _structured_functions(self, model, bool(trace)))
        if b is None or (b >= n1 and b >= n2):
            H = fns["whole"](params, X1, None if symmetric else X2c)
        else:
            H = self.fill_tiles(
                n1, n2, b, symmetric, k,
                row=lambda i0, bi: fns["factors"](params, X1, i0, bi),
                tile=lambda Fi, j0, bj: fns["tile"](Fi, params, X2c, j0, bj),
                diag=lambda Fi: fns["combine"](Fi, None),
            )
        return self._remember(H)

    def generic_jacobian_gram(self, model: Any, params: Any, X1: Any, X2: Any | None = None, *,
                              implementation: str = "auto", block_size: int | str | None = None,
                              trace: bool = False) -> Any:
        """The empirical NTK H(X1, X2) = J(X1) J(X2)ᵀ of any JAX-traceable model, by autodiff.

        ``model`` is a pure function ``f(params, X)`` — ``params`` any pytree of floating arrays
        (every leaf is moved to this backend's device and cast to its dtype), ``X`` a batch
        (N, ...) — returning (N,) or (N, k) (more axes are flattened into k), treating samples
        independently (no batch statistics); or an ntkframe :class:`~ntkframe.core.models.Model`,
        differentiated through ``model.apply`` with respect to its ``trainable`` groups only.
        ``X2=None`` means H(X1, X1).  Result: (N1, N2) for one output or with ``trace=True``
        (the mean over outputs, (1/k) Σ_c J_c(X1) J_c(X2)ᵀ), else (N1, N2, k, k) with
        H[i, j, c, c'] = ∂f_c(x_i)/∂θ · ∂f_c'(x'_j)/∂θ; a jax array on this backend's device.

        ``implementation`` (``ntkframe.IMPLEMENTATIONS``):

        - ``"jacobian_contraction"``: per-sample Jacobians (``vmap(jacrev)``), then one GEMM per
          parameter leaf.  Time ≈ (N1+N2)·k·[FP] + N1·N2·k·P·(k, or 1 with ``trace``), memory
          2·b·k·P.  Wins with few outputs (or ``trace``), and when a sample's forward pass costs
          more than k·P flops (weight sharing: convolutions), since the contraction is one large,
          efficient GEMM.
        - ``"ntk_vector_products"``: VJPs of single inputs then JVPs over X1, ``vmap``-ed; never
          forms the Jacobian.  Time ≈ N1·N2·k·[FP], memory b·k·P + b²·k·(activations).  Wins
          when k·P exceeds [FP]: many outputs with the full (N1, N2, k, k) kernel of a dense net.
        - ``"structured"``: the model's Jacobian factors (:meth:`jacobian_gram`); ntkframe
          models only, and always the fastest for them.
        - ``"auto"``: ``"structured"`` for a structured ntkframe model; otherwise both generic
          algorithms are lowered for the (tile) shapes and XLA's cost analysis picks the one with
          fewer flops (ties: ``"jacobian_contraction"``).

        ``block_size=b`` computes b × b tiles, so only the Jacobians (or tangents) of 2b inputs
        are alive at once; ``"auto"`` picks b from :meth:`memory_budget`.  Every piece is jitted
        and cached per (function, trace); a new lambda each call means a new compilation.
        """
        from .generic import generic_jacobian_gram

        return generic_jacobian_gram(self, model, params, X1, X2, implementation=implementation,
                                     block_size=block_size, trace=trace)

    def fill_tiles(self, n1: int, n2: int, b: int, symmetric: bool, k: int, *,
                   row: Callable[[int, int], Any], tile: Callable[[Any, int, int], Any],
                   diag: Callable[[Any], Any]) -> Any:
        """Assemble an (N1, N2) or (N1, N2, k, k) kernel from tiles of bi × bj = min(b, N1) × min(b, N2).

        ``row(i0, bi)`` prepares what rows i0:i0+bi need (their factors or Jacobians, kept for
        the whole row of tiles); ``tile(R, j0, bj)`` is the tile against columns j0:j0+bj;
        ``diag(R)`` the symmetric diagonal tile.  All tiles have one shape, so each compiled
        piece compiles once: the last block of an axis starts at N − b and overlaps the one
        before (:func:`block_starts`), rewriting a few entries with the same values.  With
        ``symmetric`` only tiles j ≥ i are computed and each is also written mirrored (transposed;
        output axes swapped for k > 1).  Tiles go into a donated buffer: the result is never copied.
        """
        shape = (n1, n2) if k == 1 else (n1, n2, k, k)
        bi, bj = min(b, n1), min(b, n2)
        out = self.zeros(shape)
        for i0 in block_starts(n1, bi):
            R = row(i0, bi)
            for j0 in block_starts(n2, bj):
                if symmetric and j0 < i0:
                    continue
                T = diag(R) if symmetric and j0 == i0 else tile(R, j0, bj)
                out = self._update(out, T, i0, j0, symmetric)
        return out


#: diagonal blocks of a symmetric Gram with fewer rows are multiplied in full (GEMM efficiency)
SYMMETRIC_MIN_ROWS = 256


def _symmetric_gram(jnp: Any, A: Any) -> Any:
    n = A.shape[0]
    if n < 2 * SYMMETRIC_MIN_ROWS:
        return A @ A.T
    h = (n // 2) // 8 * 8 or n // 2  # a multiple of 8 keeps GEMM tiles aligned
    A1, A2 = A[:h], A[h:]
    G12 = A1 @ A2.T
    return jnp.concatenate([jnp.concatenate([_symmetric_gram(jnp, A1), G12], axis=1),
                            jnp.concatenate([G12.T, _symmetric_gram(jnp, A2)], axis=1)], axis=0)


def block_starts(n: int, b: int) -> list[int]:
    """Starts of blocks of b ≤ n rows covering 0..n−1: 0, b, 2b, ..., and n − b last."""
    starts = list(range(0, n - b + 1, b))
    if starts[-1] + b < n:
        starts.append(n - b)
    return starts


def rows_at(X: Any, i0: Any, b: int) -> Any:
    """X[i0:i0+b] for a traced start i0 (one compiled tile for every position)."""
    from jax import lax

    return lax.dynamic_slice_in_dim(X, i0, b, axis=0)


def _update_tile(out: Any, tile: Any, i0: Any, j0: Any, mirror: bool) -> Any:
    """out[i0:, j0:] = tile, and with ``mirror`` also out[j0:, i0:] = tileᵀ (a diagonal tile of a
    symmetric kernel is its own mirror image); in place under jit with ``out`` donated."""
    from jax import lax

    zeros = (0,) * (out.ndim - 2)
    out = lax.dynamic_update_slice(out, tile, (i0, j0) + zeros)
    if mirror:
        axes = (1, 0) if tile.ndim == 2 else (1, 0, 3, 2)
        out = lax.dynamic_update_slice(out, tile.transpose(axes), (j0, i0) + zeros)
    return out


def _structured_functions(be: JaxBackend, model: Any, trace: bool) -> dict[str, Any]:
    """The jitted pieces of the structured hot path for one model and ``trace``.

    whole(params, X1, X2|None): factors of both sides and their contraction, one executable;
    factors(params, X, i0, b): the GramBlocks of rows i0:i0+b of X; tile(F1, params, X2, j0, b):
    precomputed row factors against the factors of rows j0:j0+b of X2; combine(F1, None): a
    symmetric tile.  Start indices are traced, block sizes static: one executable per tile shape.
    """
    jax = be._jax
    k = model.outputs

    def factors(params: dict, X: Any) -> list:
        return model.jacobian_factors(params, X, be, trace=trace)

    def whole(params: dict, X1: Any, X2: Any | None) -> Any:
        F1 = factors(params, X1)
        F2 = None if X2 is None else factors(params, X2)
        return combine_blocks(be, F1, F2, k, trace)

    def row(params: dict, X: Any, i0: Any, b: int) -> list:
        return factors(params, rows_at(X, i0, b))

    def tile(F1: list, params: dict, X2: Any, j0: Any, b: int) -> Any:
        return combine_blocks(be, F1, factors(params, rows_at(X2, j0, b)), k, trace)

    return {
        "whole": jax.jit(whole),
        "factors": jax.jit(row, static_argnums=3),
        "tile": jax.jit(tile, static_argnums=4),
        "combine": jax.jit(lambda F1, F2: combine_blocks(be, F1, F2, k, trace)),
    }


def _gpu_devices(jax: Any) -> list:
    for platform in ("cuda", "gpu"):
        try:
            found = jax.devices(platform)
        except RuntimeError:
            continue
        if found:
            return list(found)
    return []


def _describe_devices(devs: Any) -> str:
    """ntkframe's names for jax devices: "cpu:0", "cuda:1" (jax's platform "gpu" is CUDA here)."""
    names = [f"{'cpu' if d.platform == 'cpu' else 'cuda'}:{d.id}" for d in devs]
    return ", ".join(sorted(names))


def n_params(jax: Any, params: Any) -> int:
    """P, the number of scalars in a parameter pytree."""
    return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params)))
