"""Each backend's fraction of its honest floor (asv ``track_``): the two-layer Gram and one RK4 step.

The floors are :mod:`floors`'s (``asv_bench/floors.py``, also behind ``asv_bench/measure_floors.py``
and the table of docs/benchmarks.md): the structured formula's GEMMs with symmetric products
counted once, timed in the backend's own library on matrices of those shapes, plus its unavoidable
elementwise passes at the library's measured rate; measured in this process, interleaved with the
ntkframe call (median of 3 rounds).  1.0 = as fast as the pieces no implementation can avoid.
Sizes C, D, E of issue 18 (``NTKFRAME_ASV_QUICK=1``: one tiny size, float64).
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import floors  # noqa: E402 - asv_bench/floors.py

from .common import BackendBenchmark, grid, parse_size, select_backends  # noqa: E402

SIZES = grid(["x".join(map(str, s)) for s in floors.SIZES.values()], ["64x8x256"])
FLOW_SIZES = grid(["x".join(map(str, floors.FLOW_SIZE))], ["64x8x256"])
DTYPES = grid(list(floors.DTYPES), ["float64"])
#: interleaved rounds per measurement (the median is reported)
ROUNDS = 3


class GramFloorFraction(BackendBenchmark):
    """floor / time of ``nf.empirical_ntk`` (two-layer softplus, train="both", symmetric H(X, X))."""

    params = [select_backends(), SIZES, DTYPES]
    param_names = ["backend", "size", "dtype"]
    unit = "fraction of floor"

    def setup(self, backend: str, size: str, dtype: str) -> None:
        self.setup_backend(backend, dtype)
        self.case = floors.GramFloor(self.be, *parse_size(size))
        self.case.stages = {}  # the per-stage breakdown is measure_floors.py's; asv tracks the fraction only
        self.case.warm_up()

    def track_gram_floor_fraction(self, backend: str, size: str, dtype: str) -> float:
        return self.case.measure(ROUNDS)["fraction"]


class RK4FloorFraction(BackendBenchmark):
    """floor / time of one RK4 step of gradient flow (MSE), float64 (issue 18's target: ≥ 1/1.5)."""

    params = [select_backends(), FLOW_SIZES]
    param_names = ["backend", "size"]
    unit = "fraction of floor"

    def setup(self, backend: str, size: str) -> None:
        self.setup_backend(backend, "float64")
        self.case = floors.FlowFloor(self.be, *parse_size(size))
        self.case.stages = {}
        self.case.warm_up()

    def track_rk4_floor_fraction(self, backend: str, size: str) -> Any:
        return self.case.measure(ROUNDS)["fraction"]
