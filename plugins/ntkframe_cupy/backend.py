"""The CuPy backend: CUDA devices, array conversion, device memory budget, sync; its hot path is :mod:`.gram`.

CuPy mirrors NumPy's API, so this backend is the core's :class:`~ntkframe.core.hostarrays.NumpyLikeArrays`
(array conversion, dtype handling) plus what differs on a GPU: device selection, ``.get()`` back
to the host, device synchronisation, free device memory for ``block_size="auto"``.

Nothing here imports cupy at module level: availability is ``importlib.util.find_spec("cupy")``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ntkframe.core import tuning
from ntkframe.core.host import framework_availability
from ntkframe.core.hostarrays import NumpyLikeArrays
from ntkframe.errors import BackendUnavailableError

from .gram import CupyGram

__all__ = ["CupyBackend"]


class CupyBackend(CupyGram, NumpyLikeArrays):
    """Backend on CuPy, on CUDA device "cuda" (= "cuda:0") or "cuda:N"; ``erf`` from cupyx.

    NumPy input moves to the backend's GPU; a cupy array on another GPU, or an array of another
    framework, raises ``TypeError`` (never a silent copy).  TF32 is off: the float32 GEMM compute
    type is set to CuPy's default (full float32), whatever ``CUPY_TF32`` says — a process-wide
    setting of CuPy's, as it has only one.
    """

    name = "cupy"
    framework = "cupy"
    devices_allowed = ("cuda",)

    def __init__(self, device: str | None = None, dtype: Any = "float64"):
        if device is not None and str(device).strip().lower().partition(":")[0] == "cpu":
            raise ValueError(
                f"the cupy backend runs on CUDA GPUs only; got device {device!r}: use the numpy backend "
                "for the CPU (nf.get_backend('numpy')), or device 'cuda' / 'cuda:N'"
            )
        super().__init__(device=device, dtype=dtype)

    # -- availability and devices ----------------------------------------------------------
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return framework_availability("cupy", "cupy not installed",
                                      ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x", "cupy"))

    @classmethod
    def devices(cls) -> list[str]:
        """["cuda:0", ...]: imports cupy (``list_backends(devices=True)`` only); [] without a GPU."""
        import cupy

        try:
            return [f"cuda:{i}" for i in range(cupy.cuda.runtime.getDeviceCount())]
        except Exception:  # noqa: BLE001 - no driver: no devices
            return []

    @classmethod
    def owns(cls, x: Any) -> bool:
        return type(x).__module__.startswith("cupy")

    @staticmethod
    def array_to_numpy(x: Any) -> np.ndarray:
        get = getattr(x, "get", None)
        return get() if callable(get) else np.asarray(x)

    @classmethod
    def from_array(cls, x: Any) -> "CupyBackend":
        dev = getattr(getattr(x, "device", None), "id", 0)
        return cls(device=f"cuda:{dev}", dtype=str(x.dtype))

    def _load(self) -> Any:
        import cupy

        try:
            count = int(cupy.cuda.runtime.getDeviceCount())
        except Exception as exc:  # noqa: BLE001 - CUDARuntimeError without a driver, ...
            raise BackendUnavailableError(
                f"cupy is installed but CUDA is not usable ({type(exc).__name__}: {exc}); "
                "the cupy backend needs an NVIDIA GPU and driver — use the numpy backend on the CPU"
            ) from exc
        if count == 0:
            raise BackendUnavailableError("cupy is installed but no CUDA device is present; use the numpy backend")
        if self.device_index >= count:
            raise BackendUnavailableError(
                f"cupy has no device {self.device!r}: {count} CUDA device(s) present "
                f"(cuda:0{'' if count == 1 else f' .. cuda:{count - 1}'})"
            )
        self._cuda_device = cupy.cuda.Device(self.device_index)
        self._cuda_device.use()
        _disable_tf32(cupy)
        from cupyx.scipy import special

        self._erf = special.erf
        return cupy

    # -- arrays ----------------------------------------------------------------------------
    def asarray(self, x: Any, name: str = "array") -> Any:
        """``x`` on this backend's GPU in its dtype; refuses a cupy array on another GPU."""
        if isinstance(x, self.xp.ndarray):
            where = getattr(getattr(x, "device", None), "id", self.device_index)
            if where != self.device_index:
                raise TypeError(
                    f"{name} is a cupy array on cuda:{where} but the cupy backend runs on {self.device}; move it "
                    "explicitly (with cupy.cuda.Device(N): cupy.asarray(x)) — ntkframe never copies between "
                    "devices silently"
                )
        with self._cuda_device:
            return super().asarray(x, name=name)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        """Allocated on the GPU (the base class would build it on the host and copy it over)."""
        with self._cuda_device:
            return self.xp.zeros(shape, dtype=self.np_dtype)

    @property
    def device_object(self) -> Any:
        """The ``cupy.cuda.Device`` this backend computes on."""
        return self._cuda_device

    def sync(self, x: Any = None) -> Any:
        """Wait for the kernels queued on this backend's GPU; returns ``x``."""
        self._cuda_device.synchronize()
        return x

    def blas_info(self) -> dict[str, Any]:
        """cuBLAS, through CuPy's ``@`` (the core's combine: no ctypes path on the GPU)."""
        try:
            version = self.xp.cuda.cublas.getVersion(self.xp.cuda.device.get_cublas_handle())
        except Exception:  # noqa: BLE001 - an older CuPy, or a fake one in tests
            version = None
        return {"path": "cupy-matmul", "library": "cuBLAS" + (f" {version}" if version else "")}

    def memory_budget(self) -> int:
        """A fraction of the GPU's free memory, counting blocks CuPy's pool holds but does not use."""
        free, _total = self.xp.cuda.runtime.memGetInfo()
        try:
            free += self.xp.get_default_memory_pool().free_bytes()
        except AttributeError:  # pragma: no cover - a cupy without the default pool
            pass
        return int(tuning.MEMORY_FRACTION * free)


def _disable_tf32(cupy: Any) -> None:
    """Make float32 GEMMs full float32 (CuPy's default compute type) even if ``CUPY_TF32=1``."""
    try:
        from cupy._core import _routines_linalg as linalg

        linalg.set_compute_type(np.float32, getattr(linalg, "COMPUTE_TYPE_DEFAULT", 1))
    except Exception as exc:  # noqa: BLE001 - a private API of CuPy's: warn rather than fail
        import os

        if os.environ.get("CUPY_TF32", "0") not in ("", "0"):
            warnings.warn(f"CUPY_TF32 is set and ntkframe could not turn TF32 off ({exc}); float32 GEMMs may lose "
                          "~3 digits", RuntimeWarning, stacklevel=3)
