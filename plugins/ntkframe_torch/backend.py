"""The torch backend: devices, dtypes, array conversion, memory budget, sync; the hot path is in :mod:`.gram`.

torch is imported when a :class:`TorchBackend` is built (``_load``), never when the plugin is
imported or listed.  Devices are ``"cpu"``, ``"cuda"`` (= ``"cuda:0"``) and ``"cuda:N"``.

Threads on the CPU: small work on one thread, large GEMMs on every core, chosen per call size
(:mod:`.threads`; the backend option ``threads=`` or ``NTKFRAME_TORCH_THREADS`` sets the count for
large work; :meth:`TorchBackend.blas_info` records the settings for provenance).

Numerics: building a torch backend sets ``torch.backends.cuda.matmul.allow_tf32 = False`` and
``torch.backends.cudnn.allow_tf32 = False``.  These are **process-wide** torch flags: float32
matmuls and convolutions then round like IEEE float32 (TF32 keeps only 10 mantissa bits, which
would break the 1e-4 float32 agreement ntkframe claims).  Code sharing the process that wants TF32
back must set the flags again after building the backend.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ntkframe.core import tuning
from ntkframe.core.backend import Backend
from ntkframe.core.host import available_memory_bytes, framework_availability
from ntkframe.errors import BackendUnavailableError

from .gram import TorchGram
from .threads import ThreadPolicy

#: arrays of these frameworks are refused by ``asarray`` (no silent copies between frameworks)
FOREIGN_FRAMEWORKS = ("jax", "jaxlib", "cupy", "tensorflow", "mxnet", "paddle")
class TorchBackend(TorchGram, Backend):
    """Backend on torch tensors, CPU or CUDA, float32 (TF32 off) or float64.

    ``xp`` is the ``torch`` module itself: the models' array code (``xp.exp``, ``xp.where``,
    ``X @ W.T``...) runs unchanged on tensors.  The structured hot path
    :meth:`~ntkframe.core.backend.Backend.jacobian_gram` is the base class's, on this backend's
    kernels (:class:`~ntkframe_torch.gram.TorchGram`), with no Python loop over samples;
    :meth:`generic_jacobian_gram` adds the NTK of any torch model by automatic differentiation
    (``torch.func``, :mod:`ntkframe_torch.autodiff`).
    """

    name = "torch"
    framework = "torch"
    devices_allowed = ("cpu", "cuda")
    autodiff = True

    def __init__(self, device: str | None = None, dtype: Any = "float64", threads: int | None = None):
        self._threads_option = threads
        super().__init__(device=device, dtype=dtype)

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
        # thread counts per call size on the CPU (module docstring); None on CUDA
        self.threads = ThreadPolicy(torch, self._threads_option) if self.device_kind == "cpu" else None
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

    @property
    def device_object(self) -> Any:
        """The ``torch.device`` this backend computes on."""
        return self.torch_device

    def sync(self, x: Any = None) -> Any:
        """Wait for queued CUDA work (no-op on the CPU); call before reading a timer.  Returns ``x``."""
        if self.device_kind == "cuda":
            self.xp.cuda.synchronize(self.torch_device)
        return x

    def memory_budget(self) -> int:
        """``tuning.MEMORY_FRACTION`` of the free device memory (``torch.cuda.mem_get_info``), or of free host memory."""
        if self.device_kind == "cuda":
            free, _total = self.xp.cuda.mem_get_info(self.torch_device)
            return int(tuning.MEMORY_FRACTION * free)
        return int(tuning.MEMORY_FRACTION * available_memory_bytes())

    def compile(self, fn: Any, static_argnums: tuple[int, ...] = ()) -> Any:
        """On the CPU ``fn`` as one thread scope (:meth:`.threads.ThreadPolicy.scoped`: its GEMMs
        choose the thread count by size, the caller's count is restored on return); else ``fn``."""
        return self.threads.scoped(fn) if self.threads is not None else fn

    def blas_info(self) -> dict[str, Any]:
        """torch's own GEMM library: cuBLAS on CUDA; on the CPU MKL, or the BLAS named in
        ``torch.__config__.show()``, and the thread settings (:meth:`.threads.ThreadPolicy.settings`)."""
        torch = self.xp
        if self.device_kind == "cuda":
            return {"path": "torch-matmul", "library": f"cuBLAS (CUDA {torch.version.cuda})"}
        shown = torch.__config__.show()
        if torch.backends.mkl.is_available():
            found = re.search(r"Math Kernel Library Version ([\w.]+)", shown)
            library = "MKL" + (f" {found.group(1)}" if found else "")
        else:
            found = re.search(r"BLAS_INFO=([\w.-]+)", shown)
            library = found.group(1) if found else "unknown"
        return {"path": "torch-matmul", "library": library, "threads": self.threads.settings()}

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
        * ``"auto"``: the one with fewer estimated flops among those whose memory fits
          (:mod:`ntkframe.core.autodiff`, the same rule on every autodiff backend).
        * ``"structured"``: an ntkframe Model's factors — best by far for TwoLayerNet and MLP.

        Details: :func:`ntkframe_torch.autodiff.generic_jacobian_gram`.
        """
        from .autodiff import generic_jacobian_gram

        if self.threads is None:
            return generic_jacobian_gram(self, model, params, X1, X2, implementation=implementation,
                                         block_size=block_size, trace=trace)
        with self.threads.for_elements(_rows(X1) * _n_params(self.xp, model, params)):
            return generic_jacobian_gram(self, model, params, X1, X2, implementation=implementation,
                                         block_size=block_size, trace=trace)


def _rows(X: Any) -> int:
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape else 1


def _n_params(torch: Any, model: Any, params: Any) -> int:
    """P for the thread choice: the module's parameters, or the leaves of ``params`` (0 if unknown)."""
    if params is None and isinstance(model, torch.nn.Module):
        return sum(p.numel() for p in model.parameters())
    leaves = params.values() if isinstance(params, dict) else ()
    return sum(int(np.prod(getattr(v, "shape", ()))) for v in leaves)
