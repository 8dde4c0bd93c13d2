"""The JAX backend: devices, array conversion, memory budget, sync, and how JAX plugs into the tile engine.

Nothing here imports jax at module level: :meth:`JaxBackend.availability` only looks for the
package (``importlib.util.find_spec``), and jax is imported when a backend is built.

The structured hot path is the core's (:meth:`ntkframe.core.backend.Backend.jacobian_gram`, the
contraction :func:`ntkframe.core.gram.combine_blocks`, the tiles of :mod:`ntkframe.core.tiles`);
JAX plugs in through three methods: :meth:`~JaxBackend.compile` (``jax.jit``: the factors of a
row block, the contraction of a tile, and the whole kernel each run as one XLA program, which
fuses the elementwise activation passes and Hadamard products around the GEMMs),
:meth:`~JaxBackend.rows` (a traced start index: one executable for every tile position) and
:meth:`~JaxBackend.set_block` (a functional update into a donated buffer); ``fixed_tile_shape``
asks the engine for tiles of one shape, so each compiled piece compiles once.  The kernels
themselves (symmetric Gram, erf) are in :mod:`.gram`.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable

import numpy as np

from ntkframe.core import tuning
from ntkframe.core.backend import Backend, model_key  # noqa: F401 - model_key re-exported for the autodiff path
from ntkframe.core.host import framework_availability
from ntkframe.errors import BackendUnavailableError

from .gram import JaxGram

#: frameworks whose arrays the JAX backend refuses (never a silent copy between frameworks)
FOREIGN_FRAMEWORKS = ("torch", "cupy", "cupyx", "tensorflow", "mxnet", "dask")

_PYTREE = {"registered": False}


def _register_gram_block(jax: Any) -> None:
    """Make :class:`ntkframe.core.models.GramBlock` a JAX pytree (arrays: left, right; static: the rest),
    so that lists of factors can cross a ``jax.jit`` boundary.  Done once per process."""
    if _PYTREE["registered"]:
        return
    from ntkframe.core.gram import GramBlock

    try:
        jax.tree_util.register_dataclass(GramBlock, data_fields=["left", "right"],
                                         meta_fields=["name", "scale", "diagonal"])
    except ValueError:  # already registered (e.g. a reloaded plugin module)
        pass
    _PYTREE["registered"] = True


def _framework_of(x: Any) -> str:
    return type(x).__module__.split(".")[0]


class JaxBackend(JaxGram, Backend):
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
    autodiff = True
    compiles = True
    fixed_tile_shape = True

    def __init__(self, device: str | None = None, dtype: Any = "float64"):
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

    def set_block(self, out: Any, i0: int, j0: int, tile: Any, mirror: bool = False) -> Any:
        """``out`` with ``out[i0:, j0:] = tile`` (and with ``mirror`` the transposed tile at
        ``out[j0:, i0:]``), by one jitted ``dynamic_update_slice`` into the donated ``out``: the
        result is written in place and ``out`` must not be used afterwards."""
        return self._update(out, tile, i0, j0, bool(mirror))

    def compile(self, fn: Any, static_argnums: tuple[int, ...] = ()) -> Any:
        """``jax.jit(fn, static_argnums=...)``: one compiled XLA program per argument shapes."""
        return self._jax.jit(fn, static_argnums=static_argnums)

    def rows(self, X: Any, i0: Any, b: int) -> Any:
        """X[i0:i0+b] for a traced start i0 (``lax.dynamic_slice_in_dim``: one executable for every start)."""
        return rows_at(X, i0, b)

    def blas_info(self) -> dict[str, Any]:
        """XLA's own GEMMs: Eigen (XLA:CPU) on the CPU, cuBLAS on a GPU."""
        library = "Eigen (XLA:CPU)" if self.device_kind == "cpu" else "cuBLAS (XLA:GPU)"
        return {"path": "xla-dot", "library": f"{library}, jax {self._jax.__version__}"}

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
                return int(tuning.MEMORY_FRACTION * max(0, limit - stats.get("bytes_in_use", 0)))
        return super().memory_budget()

    def params_on_device(self, params: Any, name: str = "params") -> Any:
        """Every leaf of the pytree ``params`` through :meth:`asarray` (moved, cast, or refused)."""
        return self._jax.tree_util.tree_map(lambda a: self.asarray(a, name=f"a leaf of {name}"), params)

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
        - ``"auto"``: ``"structured"`` for a structured ntkframe model; otherwise the generic
          algorithm with fewer estimated flops among those whose memory fits (the cost model of
          :mod:`ntkframe.core.autodiff`, the same on every autodiff backend; F from XLA's cost analysis).

        ``block_size=b`` computes b × b tiles, so only the Jacobians (or tangents) of 2b inputs
        are alive at once; ``"auto"`` picks b from :meth:`memory_budget`.  Every piece is jitted
        and cached per (function, trace); a new lambda each call means a new compilation.
        """
        from .autodiff import generic_jacobian_gram

        return generic_jacobian_gram(self, model, params, X1, X2, implementation=implementation,
                                     block_size=block_size, trace=trace)

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
