"""Monte-Carlo estimate of the NTK at initialisation: the mean of empirical kernels over seeds.

docs/theory.md §3: Ĥ = (1/S) Σ_s H(θ_s) over S independent initialisations θ_s, with the standard error
SE = std_s(H(θ_s)) / √S (entrywise, ddof = 1).  For the two-layer net E[H_m] = H* at every width m
(an unbiased estimate, SE ∝ 1/√(S·m)); for deeper nets E[H_m] = H* + O(1/m).

Each initialisation is ``model.init(backend, seed=s)`` with the seeds s derived from ``seed`` by
``numpy.random.SeedSequence(seed).generate_state(samples)`` — the first S seeds are the same for
every S, so estimates with more samples extend those with fewer.  The kernels are computed by
``nf.empirical_ntk`` on any backend and accumulated on its device (Welford's running mean and sum of
squared deviations, in the backend's dtype); the result comes back as float64 NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.backend import Backend, get_backend, to_numpy
from ..core.fields import Field
from ..core.kernels import KernelEstimator, empirical_ntk
from ..core.models import Model, TwoLayerNet


@dataclass
class MonteCarloResult:
    """A Monte-Carlo kernel estimate: ``mean`` and its entrywise standard error ``stderr``.

    Both are float64 NumPy arrays of the kernel's shape.  ``stderr`` is std/√samples over the
    individual kernels (``batch=1``) or over the ``samples/batch`` batch means (``batch>1``); it is
    NaN when fewer than two of those exist.  Unpacks as ``mean, stderr = result``.
    """

    mean: np.ndarray
    stderr: np.ndarray
    samples: int
    seeds: list[int] = field(default_factory=list)

    def __iter__(self):
        return iter((self.mean, self.stderr))


def derive_seeds(seed: int, samples: int) -> list[int]:
    """The ``samples`` initialisation seeds derived from ``seed`` (a prefix-stable sequence)."""
    return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(int(samples), dtype=np.uint32)]


class MonteCarloNTK(KernelEstimator):
    """Mean of empirical NTKs over ``samples`` independent initialisations, with its standard error.

    ``MonteCarloNTK(model, samples, backend=None, seed=0, batch=1)``; ``estimate(X1, X2)`` returns a
    :class:`MonteCarloResult` (mean and standard error); ``compute`` / calling the estimator returns
    the mean only (a float64 NumPy array, (N1, N2) or (N1, N2, k, k) as ``empirical_ntk``).

    ``batch > 1`` (TwoLayerNet only) evaluates ``batch`` initialisations in one call as a single net of
    width batch·m with their weights stacked: its kernel (1/(batch·m)) Σ over all neurons is exactly
    the mean of the ``batch`` kernels (divided by ``batch`` again in the standard parameterisation,
    where no 1/m sits in the forward pass) — far fewer, larger GEMMs, which is what a GPU wants.
    Then ``samples`` must be a multiple of ``batch`` and the standard error comes from the batch
    means.  ``block_size`` and ``trace`` pass to ``empirical_ntk``.
    """

    name = "monte_carlo"
    config_fields = [
        Field("samples", int, 100, "initialisations S averaged", positive=True),
        Field("seed", int, 0, "seed the S initialisation seeds derive from"),
        Field("batch", int, 1, "initialisations per call (TwoLayerNet: one wide net; samples a multiple of it)",
              positive=True),
    ]

    def __init__(self, model: Model, samples: int, backend: Backend | str | None = None, seed: int = 0,
                 batch: int = 1, *, trace: bool = False, block_size: int | str | None = None):
        if not isinstance(model, Model):
            raise TypeError(f"MonteCarloNTK needs an ntkframe Model (with init); got {type(model).__name__}")
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise ValueError(f"samples must be a positive integer; got {samples!r}")
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive integer; got {batch!r}")
        if batch > 1 and not isinstance(model, TwoLayerNet):
            raise ValueError(f"batch={batch} needs a TwoLayerNet (only there is a wide net's kernel the mean of its "
                             f"slices); use batch=1 for {type(model).__name__}")
        if samples % batch:
            raise ValueError(f"samples ({samples}) must be a multiple of batch ({batch})")
        self.model, self.samples, self.seed, self.batch = model, int(samples), int(seed), int(batch)
        self.backend = backend if isinstance(backend, Backend) else get_backend(backend or "numpy")
        self.trace, self.block_size = trace, block_size

    def __repr__(self) -> str:
        return (f"MonteCarloNTK({self.model!r}, samples={self.samples}, backend={self.backend.name!r}, "
                f"seed={self.seed}, batch={self.batch})")

    def _params(self, seeds: list[int]) -> tuple[Model, dict]:
        """The model and parameters whose kernel is the mean of the kernels of ``seeds``."""
        be = self.backend
        if len(seeds) == 1:
            return self.model, self.model.init(be, seed=seeds[0])
        m = self.model
        host = [m.init(get_backend("numpy"), seed=s) for s in seeds]
        wide = TwoLayerNet(m.d, m.m * len(seeds), m.activation, train=m.train, output_init=m.output_init,
                           parameterization=m.parameterization, outputs=m.outputs)
        params = {k: be.asarray(np.concatenate([p[k] for p in host], axis=0), name=k) for k in ("W", "a")}
        return wide, params

    def estimate(self, X1: Any, X2: Any | None = None) -> MonteCarloResult:
        """Mean and standard error of H(X1, X2; θ_s) over the seeds (float64 NumPy)."""
        be = self.backend
        seeds = derive_seeds(self.seed, self.samples)
        groups = [seeds[i:i + self.batch] for i in range(0, len(seeds), self.batch)]
        sp_factor = 1.0 / self.batch if (self.batch > 1 and self.model.parameterization == "standard") else 1.0
        mean = m2 = None
        for count, group in enumerate(groups, start=1):
            model, params = self._params(group)
            K = empirical_ntk(model, params, X1, X2, backend=be, block_size=self.block_size, trace=self.trace)
            if sp_factor != 1.0:
                K = K * sp_factor
            if mean is None:
                mean, m2 = K, K * 0.0
                continue
            delta = K - mean
            mean = mean + delta / count
            m2 = m2 + delta * (K - mean)
        n = len(groups)
        mean_np = np.asarray(to_numpy(mean), dtype=np.float64)
        if n > 1:
            stderr = np.sqrt(np.maximum(np.asarray(to_numpy(m2), dtype=np.float64), 0.0) / (n - 1) / n)
        else:
            stderr = np.full_like(mean_np, math.nan)
        return MonteCarloResult(mean_np, stderr, self.samples, seeds)

    def compute(self, X1: Any, X2: Any | None = None) -> np.ndarray:
        return self.estimate(X1, X2).mean


def monte_carlo_ntk(model: Model, X1: Any, X2: Any | None = None, *, samples: int = 100,
                    backend: Backend | str | None = None, seed: int = 0, batch: int = 1,
                    trace: bool = False, block_size: int | str | None = None) -> MonteCarloResult:
    """Functional form of :class:`MonteCarloNTK`: ``mean, stderr = nf.monte_carlo_ntk(model, X, samples=…)``."""
    return MonteCarloNTK(model, samples, backend, seed, batch, trace=trace, block_size=block_size).estimate(X1, X2)
