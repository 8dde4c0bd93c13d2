"""Array conversion shared by the NumPy-like backends (NumPy itself, and CuPy, whose API mirrors it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import Backend


class NumpyLikeArrays(Backend):
    """``asarray`` for a backend whose namespace ``xp`` is NumPy or mirrors it (CuPy): arrays of ``xp``
    are cast to the backend's dtype, NumPy input and lists are converted, arrays of another framework
    are refused with an error naming both (ntkframe never copies between frameworks silently)."""

    def asarray(self, x: Any, name: str = "array") -> Any:
        xp = self.xp
        if isinstance(x, xp.ndarray):
            return x if x.dtype == self.np_dtype else x.astype(self.np_dtype)
        mod = type(x).__module__.split(".")[0]
        if mod in ("torch", "jax", "jaxlib", "cupy", "tensorflow") and mod != xp.__name__:
            raise TypeError(
                f"{name} is a {mod} array ({type(x).__name__}); the {self.name} backend on {self.device} takes "
                f"NumPy arrays{' or cupy arrays' if self.name == 'cupy' else ''}. Convert it explicitly "
                "(nf.to_numpy(x)) or use the matching backend; ntkframe never copies between frameworks silently."
            )
        return xp.asarray(np.asarray(x, dtype=self.np_dtype))
