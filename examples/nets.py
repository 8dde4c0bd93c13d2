"""Small networks for the example configs, built by factories that ``[model] factory`` names.

``examples/cnn_drift.toml`` runs ``factory = "nets:small_cnn"`` with ``path = "examples"`` (run it from the
repository root: ``path`` is put on sys.path before the factory is imported).  Every layer is in the NTK
parameterisation (docs/theory.md §5): weights N(0, 1) and the factor 1/√fan_in in the forward pass, so
the kernel has a limit as the width grows, as for the two-layer net.

    small_cnn:  8 × 8 image → conv3×3(1 → w) → softplus → conv3×3(w → w) → softplus → mean over positions
                → linear(w → 1),   f(x) = (1/√w) vᵀ mean_p σ(z₂(x)_p)

``two_layer_jax`` is the two-layer net f(x) = (1/√m) Σ_r a_r softplus(w_rᵀx) as a pure JAX function, for
``[model] kind = "jax"`` (a factory taking ``seed`` draws the parameters of each run's seed).
"""

from __future__ import annotations

import math

import numpy as np


def small_cnn(width: int = 16, side: int = 8):
    """A two-convolution CNN of ``width`` channels on ``side`` × ``side`` single-channel images given as
    rows of side² pixels (the digits' 64 features); one output."""
    import torch
    from torch import nn

    class NTKConv(nn.Module):
        def __init__(self, c_in: int, c_out: int):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
            self.scale = 1.0 / math.sqrt(9 * c_in)

        def forward(self, x):
            return nn.functional.conv2d(x, self.weight, padding=1) * self.scale

    class NTKLinear(nn.Module):
        def __init__(self, n_in: int):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(1, n_in))
            self.scale = 1.0 / math.sqrt(n_in)

        def forward(self, x):
            return x @ self.weight.T * self.scale

    return nn.Sequential(nn.Unflatten(1, (1, side, side)), NTKConv(1, width), nn.Softplus(),
                         NTKConv(width, width), nn.Softplus(), nn.Flatten(2), _Mean(), NTKLinear(width))


def _Mean():  # noqa: N802 - a module factory: the mean over the last axis (global average pooling)
    from torch import nn

    class Mean(nn.Module):
        def forward(self, x):
            return x.mean(-1)

    return Mean()


def two_layer_jax(m: int = 64, d: int = 8, seed: int = 0):
    """(apply, params) of f(x) = (1/√m) Σ_r a_r softplus(w_rᵀx), W ~ N(0, I), a ~ N(0, 1) from ``seed``."""
    import jax

    rng = np.random.default_rng(seed)
    params = {"W": rng.standard_normal((m, d)), "a": rng.standard_normal(m)}

    def apply(p, X):
        return jax.nn.softplus(X @ p["W"].T) @ p["a"] / math.sqrt(p["a"].shape[0])

    return apply, params
