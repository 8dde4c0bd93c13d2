"""The torch backend: devices, dtypes, array conversion and the GEMM kernels of the hot path.

torch is imported when a :class:`TorchBackend` is built (``_load``), never when the plugin is
imported or listed.  Devices are ``"cpu"``, ``"cuda"`` (= ``"cuda:0"``) and ``"cuda:N"``.

Numerics: building a torch backend sets ``torch.backends.cuda.matmul.allow_tf32 = False`` and
``torch.backends.cudnn.allow_tf32 = False``.  These are **process-wide** torch flags: float32
matmuls and convolutions then round like IEEE float32 (TF32 keeps only 10 mantissa bits, which
would break the 1e-4 float32 agreement ntkframe claims).  Code sharing the process that wants TF32
back must set the flags again after building the backend.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ntkframe.core.backend import MEMORY_FRACTION, Backend, available_memory_bytes, framework_availability
from ntkframe.errors import BackendUnavailableError

#: arrays of these frameworks are refused by ``asarray`` (no silent copies between frameworks)
FOREIGN_FRAMEWORKS = ("jax", "jaxlib", "cupy", "tensorflow", "mxnet", "paddle")
#: symmetric Grams A Aᵀ with at least this many rows use the triangular tiling (see ``gram``)
SYMMETRIC_TILE_MIN_ROWS = 1024
#: on the CPU, ``map_rows`` runs elementwise chains on flat chunks of this many elements (below
#: torch's parallel grain size of 32768, so the ops of a chunk do not open OpenMP regions)
MAP_CHUNK = 1 << 14

_pools: dict[int, ThreadPoolExecutor] = {}


def _get_pool(nthreads: int) -> ThreadPoolExecutor:
    """The thread pool of ``map_rows``, one per thread count (torch's may change at run time)."""
    if nthreads not in _pools:
        _pools[nthreads] = ThreadPoolExecutor(max_workers=nthreads, thread_name_prefix="ntkframe-torch")
    return _pools[nthreads]


def _fits_in_place(torch: Any, x: Any, y: Any) -> bool:
    if not isinstance(x, torch.Tensor) or x.requires_grad:
        return False
    if isinstance(y, (int, float)):
        return True
    return (isinstance(y, torch.Tensor) and y.device == x.device
            and torch.broadcast_shapes(x.shape, y.shape) == x.shape
            and torch.result_type(x, y) == x.dtype)


class TorchBackend(Backend):
    """Backend on torch tensors, CPU or CUDA, float32 (TF32 off) or float64.

    ``xp`` is the ``torch`` module itself: the models' array code (``xp.exp``, ``xp.where``,
    ``X @ W.T``...) runs unchanged on tensors.  The structured hot path
    :meth:`~ntkframe.core.backend.Backend.jacobian_gram` is the base class's, on this backend's GEMMs,
    with no Python loop over samples; :meth:`generic_jacobian_gram` adds the NTK of any torch
    model by automatic differentiation (``torch.func``).
    """

    name = "torch"
    framework = "torch"
    devices_allowed = ("cpu", "cuda")

    # -- identity and devices --------------------------------------------------------------
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """Looks for torch with ``importlib.util.find_spec`` only (no import)."""
        return framework_availability(
            "torch", "torch is not installed (pip install 'ntkframe[torch]', which pins torch==2.13.0)")

    @classmethod
    def devices(cls) -> list[str]:
        """``"cpu"`` and ``"cuda:N"`` for every GPU torch sees (imports torch)."""
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return ["cpu"] + [f"cuda:{i}" for i in range(n)]

    @classmethod
    def owns(cls, x: Any) -> bool:
        """A torch tensor (checked by the type's module, so torch is not imported)."""
        return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "device") and hasattr(x, "dtype")

    @staticmethod
    def array_to_numpy(x: Any) -> np.ndarray:
        if hasattr(x, "detach"):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    @classmethod
    def from_array(cls, x: Any) -> "TorchBackend":
        """A torch backend on tensor ``x``'s device with its dtype (float32 or float64)."""
        return cls(device=str(x.device), dtype=str(x.dtype).replace("torch.", ""))

    def _load(self) -> Any:
        import torch

        if self.device_kind == "cuda":
            found = type(self).devices()
            n = len(found) - 1
            if self.device_index >= n:
                raise BackendUnavailableError(
                    f"torch has no CUDA device {self.device_index}; devices: {', '.join(found)}"
                    + ("" if n else f" (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})")
                )
        # TF32 off: float32 accuracy is claimed (module docstring: these flags are process-wide)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.torch_device = torch.device(self.device)
        self.torch_dtype = torch.float32 if self.dtype_name == "float32" else torch.float64
        return torch

    # -- arrays ----------------------------------------------------------------------------
    def asarray(self, x: Any, name: str = "array") -> Any:
        """NumPy arrays, lists and scalars become tensors of this dtype on this device.

        A torch tensor on this device is returned as is (cast when its dtype differs); one on
        another device, or an array of another framework (jax, cupy...), raises ``TypeError``
        naming both: ntkframe never copies between devices or frameworks silently.
        """
        torch = self.xp
        if isinstance(x, torch.Tensor):
            if x.device != self.torch_device:
                raise TypeError(
                    f"{name} is a torch tensor on {x.device} but this torch backend runs on {self.device}; "
                    f"move it explicitly (x.to({self.device!r})) or build the backend on {x.device}: "
                    "ntkframe never copies between devices silently"
                )
            return x if x.dtype == self.torch_dtype else x.to(self.torch_dtype)
        mod = type(x).__module__.split(".")[0]
        if mod in FOREIGN_FRAMEWORKS:
            raise TypeError(
                f"{name} is a {mod} array ({type(x).__name__}); the torch backend on {self.device} takes NumPy "
                f"arrays or torch tensors on {self.device}. Convert it explicitly (nf.to_numpy(x)) or use the "
                f"{'jax' if mod == 'jaxlib' else mod} backend: ntkframe never copies between frameworks silently"
            )
        arr = np.asarray(x, dtype=self.dtype_name)
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            arr = np.array(arr, order="C")  # torch cannot wrap read-only or negatively strided arrays
        # on the CPU this shares memory with a C-contiguous NumPy array of the same dtype (no copy)
        return torch.as_tensor(arr, device=self.torch_device)

    def astype(self, x: Any, dtype: Any) -> Any:
        return x.to(dtype)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.xp.zeros(tuple(shape), dtype=self.torch_dtype, device=self.torch_device)

    def sync(self) -> None:
        """Wait for queued CUDA work (no-op on the CPU); call before reading a timer."""
        if self.device_kind == "cuda":
            self.xp.cuda.synchronize(self.torch_device)

    def memory_budget(self) -> int:
        """``MEMORY_FRACTION`` of the free device memory (``torch.cuda.mem_get_info``), or of free host memory."""
        if self.device_kind == "cuda":
            free, _total = self.xp.cuda.mem_get_info(self.torch_device)
            return int(MEMORY_FRACTION * free)
        return int(MEMORY_FRACTION * available_memory_bytes())

    # -- elementwise -----------------------------------------------------------------------
    def erf(self, z: Any) -> Any:
        return self.xp.special.erf(z)

    def relu(self, z: Any) -> Any:
        return self.xp.clamp_min(z, 0)

    def map_rows(self, fn: Any, z: Any, n_out: int) -> tuple[Any, ...]:
        """Apply the elementwise ``fn(z) -> tuple`` of ``n_out`` arrays; on the CPU in small chunks.

        An activation and its derivative are a chain of ~10 elementwise torch ops, each a full
        pass over the N × m pre-activations.  On the CPU the chain runs on flat chunks of
        ``MAP_CHUNK`` elements: below torch's parallel grain size, so each op runs on its calling
        thread and the chunk stays in cache between ops, and the chunks are spread over a pool of
        ``torch.get_num_threads()`` threads (torch releases the GIL inside ops).  Measured at
        N=2048, m=8192 (softplus, float64, 2 cores shared with other jobs): 0.45 s against 2.5 s
        for whole-array ops, and against 0.9 s for 64K-element chunks whose ops still open
        OpenMP regions (which stall when the cores are oversubscribed).  The loop is over chunks of
        a fixed size, not over samples.  On CUDA, for small or non-contiguous arrays, and for
        tensors inside ``torch.func`` transforms or autograd, ``fn`` runs on the whole array.
        """
        torch = self.xp
        if (z.device.type != "cpu" or z.numel() < 8 * MAP_CHUNK or not z.is_contiguous() or z.requires_grad
                or torch._C._functorch.is_functorch_wrapped_tensor(z)):
            out = fn(z)
            return out if isinstance(out, tuple) else (out,)
        flat = z.reshape(-1)
        n = flat.shape[0]
        first = fn(flat[:MAP_CHUNK])
        first = first if isinstance(first, tuple) else (first,)
        outs = tuple(torch.empty(n, dtype=r.dtype, device=r.device) for r in first)
        for o, r in zip(outs, first):
            o[:MAP_CHUNK] = r

        def work(i: int) -> None:
            res = fn(flat[i:i + MAP_CHUNK])
            for o, r in zip(outs, res if isinstance(res, tuple) else (res,)):
                o[i:i + MAP_CHUNK] = r

        starts = range(MAP_CHUNK, n, MAP_CHUNK)
        nthreads = torch.get_num_threads()
        if nthreads > 1:
            list(_get_pool(nthreads).map(work, starts))
        else:
            for i in starts:
                work(i)
        return tuple(o.reshape(z.shape) for o in outs)

    def permute(self, x: Any, axes: tuple[int, ...]) -> Any:
        return x.permute(*axes)

    # -- GEMMs -----------------------------------------------------------------------------
    def gram(self, A: Any, B: Any | None = None) -> Any:
        """A Bᵀ; the symmetric A Aᵀ (``B=None``) by triangular tiles on the CPU.

        torch has no symmetric rank-k GEMM (``A @ A.T`` is a full GEMM), so on the CPU, for N ≥
        ``SYMMETRIC_TILE_MIN_ROWS`` rows, A is cut into T ≈ 8 row panels A_i and only the panels of
        the upper triangle, A_i [A_i; A_{i+1}; ...]ᵀ, are multiplied; the strictly lower part is
        mirrored.  That is (T+1)/(2T) ≈ 56% of the flops (measured with asv_bench/measure_torch.py:
        about 1.5-2x faster than ``A @ A.T`` at N=2048, m=8192 on a 2-core CPU; slower below
        ~1000 rows, hence the threshold).  The result is symmetric to rounding, not bitwise.  On
        CUDA the plain ``A @ A.T`` is kept until the tiling is measured there.
        """
        if B is not None:
            return A @ B.T
        n = A.shape[0]
        if A.ndim != 2 or n < SYMMETRIC_TILE_MIN_ROWS or A.device.type != "cpu":
            return A @ A.T
        t = max(256, math.ceil(n / 8))
        out = self.xp.empty((n, n), dtype=A.dtype, device=A.device)
        for i in range(0, n, t):
            e = min(i + t, n)
            panel = A[i:e] @ A[i:].T  # rows i:e, columns i:n
            out[i:e, i:] = panel
            if e < n:
                out[e:, i:e] = panel[:, e - i:].T
        return out

    def mul_into(self, x: Any, y: Any) -> Any:
        """x ⊙ y written into x (``mul_``) when y broadcasts to x without changing its dtype:
        no second N × N buffer on the hot path (on CUDA: less peak device memory)."""
        return x.mul_(y) if _fits_in_place(self.xp, x, y) else x * y

    def add_into(self, x: Any, y: Any) -> Any:
        return x.add_(y) if _fits_in_place(self.xp, x, y) else x + y

    # -- generic autodiff path -------------------------------------------------------------
    def generic_jacobian_gram(self, model: Any, params: Any, X1: Any, X2: Any | None = None, *,
                              implementation: str = "auto", block_size: int | str | None = None,
                              trace: bool = False) -> Any:
        """The empirical NTK H(X1, X2) = J(X1) J(X2)ᵀ of any torch model, by ``torch.func``.

        ``model``: a torch ``nn.Module`` (``params=None``: all its parameters, through
        ``torch.func.functional_call``), a pure function ``f(params, X)`` with ``params`` a dict of
        tensors, or an ntkframe Model (``model.apply``).  Returns (N1, N2) for scalar outputs or
        ``trace=True``, else (N1, N2, k, k); ``block_size`` tiles the result so that only b
        samples' Jacobians are alive at once.

        ``implementation`` — when each wins:

        * ``"jacobian_contraction"``: per-sample Jacobians (``vmap(jacrev)``), contracted per
          parameter with GEMMs.  Memory N·k·P numbers (b·k·P per tile); fastest when that fits.
        * ``"ntk_vector_products"``: H e = J1 (J2ᵀ e) per identity column by a VJP then a JVP, the
          columns vmapped in chunks.  No N·P Jacobian: it trades memory for compute (N1·N2·k
          forward-mode passes of one sample).
        * ``"auto"``: jacobian_contraction when the Jacobians of the rows alive at once fit in
          :meth:`memory_budget`, else ntk_vector_products.
        * ``"structured"``: an ntkframe Model's factors — best by far for TwoLayerNet and MLP.

        Details: :func:`ntkframe_torch.generic.generic_jacobian_gram`.
        """
        from .generic import generic_jacobian_gram

        return generic_jacobian_gram(self, model, params, X1, X2, implementation=implementation,
                                     block_size=block_size, trace=trace)
