"""The JAX hot path: the elementwise kernels and the symmetric Gram that the jitted tiles are made of.

The structured Jacobian-Gram is the core's (factors from the model, the contraction
:func:`ntkframe.core.gram.combine_blocks`, tiles from :mod:`ntkframe.core.tiles`), compiled with
``jax.jit`` through :meth:`ntkframe_jax.backend.JaxBackend.compile`; this mixin gives it JAX's
``erf``, ``relu``, ``permute`` and a symmetric Gram A Aᵀ by upper blocks (XLA has no syrk).
Constants: :mod:`ntkframe.core.tuning` (``SYMMETRIC_MIN_ROWS``).
"""

from __future__ import annotations

from typing import Any

from ntkframe.core import tuning


class JaxGram:
    """The hot-path kernels of :class:`~ntkframe_jax.backend.JaxBackend` (mixed in before ``Backend``)."""

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
        blocks while they have at least :data:`ntkframe.core.tuning.SYMMETRIC_MIN_ROWS` rows: 5/8 of the flops for
        N = 4·SYMMETRIC_MIN_ROWS, tending to 1/2.  Shapes are static under jit, so the recursion
        unrolls at trace time into plain GEMMs.
        """
        if B is not None:
            return A @ B.T
        return _symmetric_gram(self.xp, A)


def _symmetric_gram(jnp: Any, A: Any) -> Any:
    n = A.shape[0]
    if n < 2 * tuning.SYMMETRIC_MIN_ROWS:
        return A @ A.T
    h = (n // 2) // 8 * 8 or n // 2  # a multiple of 8 keeps GEMM tiles aligned
    A1, A2 = A[:h], A[h:]
    G12 = A1 @ A2.T
    return jnp.concatenate([jnp.concatenate([_symmetric_gram(jnp, A1), G12], axis=1),
                            jnp.concatenate([G12.T, _symmetric_gram(jnp, A2)], axis=1)], axis=0)
