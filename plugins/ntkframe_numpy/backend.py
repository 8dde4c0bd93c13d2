"""The NumPy backend: the reference CPU backend (arrays, dtypes, memory budget, BLAS switch); its hot path is :mod:`.gram`.

The GEMMs go to NumPy's own BLAS: by default through ctypes (syrk/gemm with β = 1, see
:mod:`ntkframe_numpy._blas`), or through NumPy's ``@`` only with ``blas="numpy"`` (the backend
option, ``nf.get_backend("numpy", blas="numpy")``) or the environment variable
``NTKFRAME_NUMPY_BLAS=numpy``; :meth:`NumpyBackend.blas_info` says which path runs, on which library.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ntkframe.core import tuning
from ntkframe.core.hostarrays import NumpyLikeArrays
from ntkframe.errors import InvalidOptionError

from .gram import NumpyGram


class NumpyBackend(NumpyGram, NumpyLikeArrays):
    """Backend on NumPy (CPU); ``erf`` from ``scipy.special``."""

    name = "numpy"
    framework = "numpy"
    devices_allowed = ("cpu",)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return True, f"numpy {np.__version__}"

    @classmethod
    def owns(cls, x: Any) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    def _load(self) -> Any:
        from scipy import special

        self._erf = special.erf
        return np

    def __init__(self, device: str | None = None, dtype: Any = "float64", blas: str | None = None):
        chosen = blas if blas is not None else (os.environ.get("NTKFRAME_NUMPY_BLAS", "").strip().lower()
                                                or tuning.NUMPY_BLAS)
        if chosen not in tuning.NUMPY_BLAS_CHOICES:
            source = "blas" if blas is not None else "NTKFRAME_NUMPY_BLAS"
            raise InvalidOptionError(f"{source}={chosen!r}; allowed: {', '.join(tuning.NUMPY_BLAS_CHOICES)} "
                                     "(ctypes: syrk/gemm into NumPy's own BLAS; numpy: NumPy's @ only)")
        self.blas = chosen
        super().__init__(device=device, dtype=dtype)

    def blas_info(self) -> dict[str, Any]:
        """``{"path": "ctypes-syrk" | "numpy", "library": ...}``: the path the symmetric combine takes
        (``"numpy"`` also when the ctypes BLAS cannot be reached) and NumPy's BLAS from its build
        configuration, with the OpenBLAS variables that change its kernels."""
        from ._blas import syrk_function

        path = "ctypes-syrk" if self.blas == "ctypes" and syrk_function(self.dtype_name) is not None else "numpy"
        try:
            blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
            library = " ".join(str(v) for v in (blas.get("name"), blas.get("version")) if v) or "unknown"
        except Exception:  # noqa: BLE001 - NumPy < 1.26 has no mode="dicts"
            library = "unknown"
        return {"path": path, "library": library, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}
