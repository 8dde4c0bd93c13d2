"""Benchmarks of the empirical NTK of the user's own torch modules: ntkframe's structured per-layer
path against the torch.func recipes (vmap(jacrev) + contraction, NTK-vector products).

The modules and the two recipes are those of ``asv_bench/measure_torch_modules.py`` (the PyTorch
NTK tutorial's CNN, a small ResNet with BatchNorm in eval mode, a 3-layer MLP; k = 10 outputs);
``structured`` is ``nf.empirical_ntk(module, None, X, implementation="structured")`` on the torch
CPU backend, the path a user gets.  ``time_`` and ``peakmem_`` (host memory) per case; a case
skips (NotImplementedError) when torch is not installed.  ``NTKFRAME_ASV_QUICK=1``: one tiny case
per model.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .common import grid

MODELS = ["cnn", "resnet", "mlp"]
RECIPES = ["structured", "jacobian_contraction", "ntk_vector_products"]
SIZES = grid([32, 128], [4])
KERNELS = grid(["full", "trace"], ["trace"])
DTYPES = grid(["float64", "float32"], ["float64"])


def _recipes() -> Any:
    """``measure_torch_modules`` (imported here, so that discovering the benchmarks imports no torch)."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise NotImplementedError(f"torch is not installed: {exc}") from None
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if here not in sys.path:
        sys.path.insert(0, here)
    import measure_torch_modules

    return measure_torch_modules


class Modules:
    """H(X, X) of a module with 10 outputs (full (N, N, 10, 10) or trace (N, N)), by each recipe."""

    params = [MODELS, RECIPES, SIZES, KERNELS, DTYPES]
    param_names = ["model", "recipe", "N", "kernel", "dtype"]
    timeout = 900

    def setup(self, model: str, recipe: str, n: int, kernel: str, dtype: str) -> None:
        mtm = _recipes()
        import torch

        import ntkframe as nf

        if recipe == "jacobian_contraction" and model == "cnn" and n > 64 and kernel == "full":
            raise NotImplementedError("the tutorial CNN's per-sample Jacobians at N > 64 take several GB")
        self.net, self.X = mtm.make(model, getattr(torch, dtype), n)
        self.trace = kernel == "trace"
        if recipe == "structured":
            be = nf.get_backend("torch", dtype=dtype)
            self.run = lambda X: nf.empirical_ntk(self.net, None, X, backend=be, implementation="structured",
                                                  trace=self.trace)
        else:
            fn = getattr(mtm, recipe)
            self.run = lambda X: fn(self.net, X, self.trace)
        self.run(self.X[:2])  # warm-up: imports, torch.func decompositions, the allocator

    def time_ntk(self, model: str, recipe: str, n: int, kernel: str, dtype: str) -> None:
        self.run(self.X)

    def peakmem_ntk(self, model: str, recipe: str, n: int, kernel: str, dtype: str) -> None:
        self.run(self.X)
