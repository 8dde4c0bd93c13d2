"""The CuPy hot path: the core's structured Jacobian-Gram on cuBLAS, with CuPy's elementwise kernels.

The structured path is :meth:`ntkframe.core.backend.Backend.jacobian_gram` unchanged (tiles from
:mod:`ntkframe.core.tiles`, the contraction :func:`ntkframe.core.gram.combine_blocks`): every GEMM
is CuPy's ``@`` (cuBLAS), and the elementwise activation passes run as single GPU kernels (the
base ``map_rows``: no thread pool on a GPU).  What CuPy adds is its special functions.
"""

from __future__ import annotations

from typing import Any


class CupyGram:
    """The hot-path kernels of :class:`~ntkframe_cupy.backend.CupyBackend` (mixed in before ``Backend``)."""

    def erf(self, z: Any) -> Any:
        """erf from ``cupyx.scipy.special`` (loaded with the backend)."""
        return self._erf(z)

    def relu(self, z: Any) -> Any:
        return self.xp.maximum(z, 0.0)
