"""The Backend interface, ``get_backend()`` and the structured Jacobian-Gram contraction.

A backend owns execution: its array namespace ``xp``, device, dtype, conversion from and to NumPy,
and the hot path :meth:`Backend.jacobian_gram`, which evaluates the neural tangent kernel

    H(x, x') = ∇θf(x)ᵀ ∇θf(x')  =  Σ_blocks  scale · (L₁L₂ᵀ) ⊙ (R₁R₂ᵀ)

from the Jacobian *factors* a structured model provides (docs/theory.md §2), with GEMMs only and
without forming the N × P Jacobian.  Backends for other frameworks subclass :class:`Backend` and
override what their framework does differently (array conversion, devices, erf, in-place tiles).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import BackendUnavailableError, UnknownNameError

if TYPE_CHECKING:  # pragma: no cover
    from .models import GramBlock, Model

DTYPES = ("float32", "float64")
#: fraction of free memory that ``block_size="auto"`` may use
MEMORY_FRACTION = 0.5


def parse_dtype(dtype: Any) -> str:
    """Normalise ``"float64"``, ``np.float64``, ``np.dtype("float32")``... to ``"float32"``/``"float64"``."""
    try:
        name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype.strip().lower()
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    return name


def parse_device(device: str | None, allowed: tuple[str, ...] = ("cpu", "cuda")) -> tuple[str, int]:
    """Split ``"cpu"``, ``"cuda"``, ``"cuda:1"`` into (kind, index); ``None`` means the default."""
    if device is None:
        return allowed[0], 0
    text = str(device).strip().lower()
    kind, _, index = text.partition(":")
    if kind == "gpu":
        kind = "cuda"
    if kind not in allowed:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(a + (':N' if a == 'cuda' else '') for a in allowed)}")
    if index == "":
        return kind, 0
    if not index.isdigit():
        raise ValueError(f"bad device index in {device!r}: expected '{kind}:N' with N = 0, 1, ...")
    if kind == "cpu" and int(index) != 0:
        raise ValueError(f"device {device!r}: the CPU has only index 0")
    return kind, int(index)


def framework_availability(module: str, missing: str, dists: tuple[str, ...] = ()) -> tuple[bool, str]:
    """(available, reason) for a backend's framework, found with ``importlib.util.find_spec`` only
    (no import): the version of the first installed distribution of ``dists`` (default: ``module``),
    or ``missing`` as the reason when the module is absent.  Never raises."""
    import importlib.util
    from importlib import metadata

    try:
        if importlib.util.find_spec(module) is None:
            return False, missing
    except (ImportError, ValueError) as exc:
        return False, f"{module} cannot be found: {exc}"
    for dist in dists or (module,):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001 - a broken dist-info must not hide the backend
            break
        return True, f"{module} {version}" + (f" ({dist})" if dist != module else "")
    return True, f"{module} (version unknown)"


def cpu_threads() -> int:
    """Threads ntkframe's own CPU work may use: ``NTKFRAME_NUM_THREADS``, else the CPUs this process may run on."""
    env = os.environ.get("NTKFRAME_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def available_memory_bytes() -> int:
    """Free host memory (MemAvailable), or a conservative 2 GiB if it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30


class Backend:
    """Execution engine for one array framework on one device and dtype.

    Subclasses set ``name`` and ``framework`` and implement ``_load`` (import the framework and
    return its namespace), ``asarray`` checks, ``array_to_numpy`` and ``owns``.
    """

    name: ClassVar[str] = "base"
    framework: ClassVar[str] = ""
    devices_allowed: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(self, device: str | None = None, dtype: Any = "float64"):
        self.dtype_name = parse_dtype(dtype)
        self.device_kind, self.device_index = parse_device(device, self.devices_allowed)
        ok, reason = type(self).availability()
        if not ok:
            raise BackendUnavailableError(f"backend {self.name!r} is unavailable: {reason}")
        self.xp = self._load()

    # -- identity --------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return "cpu" if self.device_kind == "cpu" else f"{self.device_kind}:{self.device_index}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} device={self.device!r} dtype={self.dtype_name!r}>"

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "device": self.device, "dtype": self.dtype_name}

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

    def astype(self, x: Any, dtype: Any) -> Any:
        return x.astype(dtype)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.asarray(np.zeros(shape))

    def sync(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""

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

    def compile(self, fn: Any) -> Any:
        """``fn`` compiled for this backend where that pays (JAX: ``jax.jit``); else ``fn`` itself.
        ``fn`` must be a pure function of its array (pytree) arguments."""
        return fn

    def activation_joint(self, act: Any, z: Any, dscale: Any | None = None,
                         overwrite: bool = False) -> tuple[Any, Any]:
        """(σ(z), σ'(z)·dscale) elementwise; ``dscale`` (a row vector, e.g. the output weights a)
        is folded into the derivative so the hot path needs no extra pass over the N × m matrix.
        ``overwrite=True`` says the caller no longer needs ``z``: a backend may then return σ(z)
        in ``z``'s memory (NumPy does; the default ignores it)."""
        S, D = self.map_rows(lambda t: act.value_and_derivative(self, t), z, 2)
        return S, (D if dscale is None else D * dscale)

    def gram(self, A: Any, B: Any | None = None) -> Any:
        """A Bᵀ, or the symmetric A Aᵀ when ``B`` is None."""
        return A @ (A if B is None else B).T

    def combine(self, F1: list["GramBlock"], F2: list["GramBlock"] | None, k: int, trace: bool) -> Any:
        """The kernel from Jacobian factors: :func:`combine_blocks` (a backend may specialise it,
        e.g. NumPy accumulates the symmetric products into one triangle with BLAS ``syrk``)."""
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

    def set_block(self, out: Any, rows: slice, cols: slice, value: Any) -> Any:
        out[rows, cols] = value
        return out

    def memory_budget(self) -> int:
        """Bytes that ``block_size="auto"`` may use for factors and tiles."""
        return int(MEMORY_FRACTION * available_memory_bytes())

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype_name == "float32" else 8

    # -- hot path --------------------------------------------------------------------------
    def jacobian_gram(self, model: "Model", params: dict, X1: Any, X2: Any | None = None, *,
                      block_size: int | str | None = None, trace: bool = False) -> Any:
        """The empirical NTK H(X1, X2) of a structured model, from its Jacobian factors.

        Shapes: X1 (N1, d), X2 (N2, d) or None (then H(X1, X1), computed with symmetric GEMMs).
        Returns (N1, N2) for one output or ``trace=True`` (mean of the k diagonal kernels), else
        (N1, N2, k, k).  ``block_size=b`` fills the result in b × b tiles so that only the factors
        of 2b inputs are alive at once; ``"auto"`` picks b from :meth:`memory_budget`.
        """
        X1 = model.check_inputs(self, X1, "X1")
        symmetric = X2 is None
        X2c = X1 if symmetric else model.check_inputs(self, X2, "X2")
        n1, n2 = X1.shape[0], X2c.shape[0]
        k = 1 if trace else model.outputs
        b = self.resolve_block_size(model, block_size, n1, n2, k)
        if b is None or (b >= n1 and b >= n2):
            F1 = model.jacobian_factors(params, X1, self, trace=trace)
            F2 = None if symmetric else model.jacobian_factors(params, X2c, self, trace=trace)
            return self.combine(F1, F2, model.outputs, trace)
        shape = (n1, n2) if k == 1 else (n1, n2, k, k)
        out = self.zeros(shape)
        for i0 in range(0, n1, b):
            ri = slice(i0, min(i0 + b, n1))
            Fi = model.jacobian_factors(params, X1[ri], self, trace=trace)
            for j0 in range(0, n2, b):
                if symmetric and j0 < i0:
                    continue
                rj = slice(j0, min(j0 + b, n2))
                if symmetric and j0 == i0:
                    tile = self.combine(Fi, None, model.outputs, trace)
                else:
                    Fj = model.jacobian_factors(params, X2c[rj], self, trace=trace)
                    tile = self.combine(Fi, Fj, model.outputs, trace)
                out = self.set_block(out, ri, rj, tile)
                if symmetric and j0 != i0:
                    out = self.set_block(out, rj, ri, tile.T if k == 1 else self.permute(tile, (1, 0, 3, 2)))
        return out

    def resolve_block_size(self, model: "Model", block_size: int | str | None, n1: int, n2: int,
                           k: int) -> int | None:
        if block_size is None:
            return None
        if isinstance(block_size, str):
            if block_size != "auto":
                raise ValueError(f"block_size={block_size!r}; allowed: None, a positive int, or 'auto'")
            budget = self.memory_budget()
            out_bytes = n1 * n2 * k * k * self.itemsize
            if out_bytes > budget:
                raise MemoryError(
                    f"the {n1} x {n2} kernel needs {out_bytes / 2**30:.1f} GiB but the memory budget is "
                    f"{budget / 2**30:.1f} GiB; compute it tile by tile into a file instead"
                )
            row = model.factor_bytes_per_row(self.itemsize, k)
            # two sets of factors for b rows plus two b x b x k x k temporaries
            free = budget - out_bytes
            b = int(free // (2 * row + 1))
            b2 = int(math.sqrt(max(free, 0) / (2 * k * k * self.itemsize)))
            b = max(1, min(b, b2))
            return None if b >= max(n1, n2) else b
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size <= 0:
            raise ValueError(f"block_size={block_size!r}; allowed: None, a positive int, or 'auto'")
        return int(block_size)


def combine_blocks(be: Backend, F1: list["GramBlock"], F2: list["GramBlock"] | None,
                   k: int, trace: bool) -> Any:
    """Σ_blocks scale · (L₁L₂ᵀ) ⊙ (R₁R₂ᵀ), the NTK from Jacobian factors (docs/theory.md §2).

    A block's ``left`` is (N, p) when ``diagonal`` (it contributes δ_cc' L₁L₂ᵀ: last-layer
    weights), else (N, k', p) with k' = k outputs, or k' = 1 when the model already reduced it.
    With ``trace`` (or k = 1) the result is (N1, N2), else (N1, N2, k, k).
    """
    symmetric = F2 is None
    F2 = F1 if F2 is None else F2
    H = None
    full = (not trace) and k > 1
    for b1, b2 in zip(F1, F2):
        L1, L2 = b1.left, b2.left
        n1, n2 = L1.shape[0], L2.shape[0]
        if b1.diagonal:
            G = be.gram(L1, None if symmetric else L2)
        elif not full:
            G = be.gram(L1.reshape(n1, -1), None if symmetric else L2.reshape(n2, -1))
        else:
            kk = L1.shape[1]
            G = be.gram(L1.reshape(n1 * kk, -1), None if symmetric else L2.reshape(n2 * kk, -1))
            G = G.reshape(n1, kk, n2, kk)
            G = be.permute(G, (0, 2, 1, 3))
        # G is a fresh product from be.gram from here on, so the backend may update it in place
        if not b1.diagonal and not full and L1.shape[1] > 1:  # mean over the k' outputs
            G = be.mul_into(G, 1.0 / L1.shape[1])
        if b1.right is not None:
            R = be.gram(b1.right, None if symmetric else b2.right)
            G = be.mul_into(G, R if G.ndim == 2 else R[:, :, None, None])
        if b1.scale != 1.0:
            G = be.mul_into(G, b1.scale)
        if full and b1.diagonal:
            eye = be.asarray(np.eye(k))
            G = G[:, :, None, None] * eye
        H = G if H is None else be.add_into(H, G)
    if H is None:
        raise ValueError("the model has no trainable parameters: its NTK is identically zero")
    return H


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


def get_backend(name: str | Backend = "numpy", device: str | None = None, dtype: Any = "float64") -> Backend:
    """Build the backend ``name`` on ``device`` ("cpu", "cuda", "cuda:N") with ``dtype``.

    An unknown name raises an error listing every registered backend and why an unavailable one is.
    """
    if isinstance(name, Backend):
        return name
    from ..plugins import registry

    reg = registry("backends")
    if name not in reg:
        raise UnknownNameError(f"unknown backend {name!r}; available: {_describe_available()}")
    cls = reg.get(name)
    return cls(device=device, dtype=dtype)


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
