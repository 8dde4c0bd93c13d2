"""The one tile engine: a Gram H(X1, X2) = R(X1) ⊗ R(X2) filled tile by tile from one memory formula.

Every path that computes a kernel — the structured factors, per-sample Jacobians and NTK-vector
products of the autodiff backends, and the out-of-core writer with its executor tasks — is two
functions and this engine:

``rows(i0, b)``
    what rows i0 … i0+b−1 of an input set contribute (their Jacobian factors, their per-sample
    Jacobians, or just the inputs), computed once per row block of X1 and once per tile for X2;
``tile(R1, R2)``
    the b1 × b2 (× k × k) tile from two such row blocks; ``tile(R1, None)`` is the symmetric
    diagonal tile R1 ⊗ R1 (a backend may use syrk there).

**Tile size.** One tile of b rows keeps the row data of 2b inputs (``row_bytes`` each: the one
bytes-per-row estimate the caller gives) and ``TILE_TEMPORARIES`` b × b × k × k arrays of itemsize s,
so with a budget B the largest tile edge solves

    c·s·k²·b² + 2·r·b ≤ B   ⇒   b = ⌊(−2r + √(4r² + 4·c·s·k²·B)) / (2·c·s·k²)⌋      (c = TILE_TEMPORARIES)

(:func:`block_for_budget`).  In memory, B is the backend's :meth:`memory_budget` less the N1 × N2
result itself; for a file it is the whole budget shared by the workers (:func:`plan_block`).

**Symmetry.** For H(X1, X1) only tiles with j ≥ i are computed; each off-diagonal one is also
written mirrored (transposed; output axes swapped for k > 1): ⌈N/b⌉(⌈N/b⌉+1)/2 tiles, not ⌈N/b⌉².

**Fixed shapes.** A compiling backend (``Backend.fixed_tile_shape``, JAX) gets tiles of one shape:
the last block of an axis starts at N − b and overlaps the previous one (:func:`block_starts`),
rewriting a few entries with the same values, so each compiled piece compiles once.

**Sinks.** :func:`fill` writes into a backend array through ``Backend.set_block`` (in place, or
functionally on JAX); :func:`tile_grid` lists the tiles for a file writer or executor tasks
(:mod:`ntkframe.core.outofcore`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import tuning
from ..errors import InvalidOptionError


def check_block_size(block_size: Any, *, none_means: str = "no tiling") -> int | str | None:
    """``block_size`` as given, after checking it is None, ``"auto"`` or a positive int."""
    if block_size is None or block_size == "auto":
        return block_size
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size <= 0:
        raise InvalidOptionError(f"block_size={block_size!r}; allowed: None ({none_means}), a positive int, "
                                 "or 'auto' (tiles from the memory budget)")
    return int(block_size)


def check_trace(trace: Any) -> bool:
    """``trace`` as a bool; anything but True/False is refused (never a silent ``bool(x)``)."""
    if not isinstance(trace, (bool, np.bool_)):
        raise InvalidOptionError(f"trace={trace!r}; allowed: True (the mean of the k diagonal kernels) or False")
    return bool(trace)


def block_for_budget(row_bytes: float, budget: float, itemsize: int, k: int = 1) -> int:
    """The largest tile edge b with c·s·k²·b² + 2·r·b ≤ B (module docstring); 0 if none fits."""
    a = tuning.TILE_TEMPORARIES * itemsize * k * k
    r = float(row_bytes)
    if budget <= 0:
        return 0
    return int((-2 * r + math.sqrt(4 * r * r + 4 * a * budget)) // (2 * a))


def plan_block(be: Any, row_bytes: float, n1: int, n2: int, *, k: int = 1, block_size: Any = None,
               in_memory: bool = True, memory_budget: Any = None, workers: int = 1) -> int | None:
    """The tile edge b for an n1 × n2 (× k × k) kernel, or None for one tile (the whole kernel).

    ``block_size``: an int fixes b; ``"auto"`` picks it from the budget (:func:`block_for_budget`);
    None means one tile in memory, and "from the budget" for a file (``in_memory=False``).
    In memory the budget is :meth:`Backend.memory_budget` less the result (a result larger than
    the budget raises ``MemoryError``: compute it into a file); for a file it is ``memory_budget``
    (bytes, all ``workers`` together) or the backend's.  The result is capped at max(n1, n2).
    """
    block_size = check_block_size(block_size, none_means="one tile" if in_memory else "from the budget")
    if memory_budget is not None:
        if block_size not in (None, "auto"):
            raise InvalidOptionError("give block_size or memory_budget, not both (block_size fixes the tile, "
                                     "memory_budget picks it)")
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float, np.integer, np.floating)) \
                or not memory_budget > 0:
            raise InvalidOptionError(f"memory_budget={memory_budget!r}; allowed: a positive number of bytes")
    if isinstance(block_size, int):
        return min(block_size, max(n1, n2))
    if block_size is None and in_memory:
        return None
    budget = float(be.memory_budget() if memory_budget is None else memory_budget) / max(1, workers)
    s = be.itemsize
    if in_memory:
        out_bytes = n1 * n2 * k * k * s
        if out_bytes > budget:
            raise MemoryError(f"the {n1} x {n2} kernel needs {out_bytes / 2**30:.1f} GiB but the memory budget is "
                              f"{budget / 2**30:.1f} GiB; compute it tile by tile into a file instead")
        b = max(1, block_for_budget(row_bytes, budget - out_bytes, s, k))
        return None if b >= max(n1, n2) else b
    b = block_for_budget(row_bytes, budget, s, k)
    if b < 1:
        raise MemoryError(f"memory_budget={memory_budget!r} bytes ({budget:.0f} per worker) is too small for even "
                          f"one row: a tile of b rows needs 2·b·{row_bytes:.0f} + "
                          f"{tuning.TILE_TEMPORARIES * s * k * k}·b² bytes")
    return min(b, max(n1, n2))


def block_starts(n: int, b: int, fixed: bool = False) -> list[int]:
    """Starts of the row blocks covering 0 … n−1: 0, b, 2b, …; with ``fixed`` the last one is n − b
    (every block has b rows; it overlaps the previous one)."""
    starts = list(range(0, n, b))
    if fixed and starts[-1] + b > n:
        starts[-1] = max(0, n - b)
    return starts


@dataclass(frozen=True)
class Tile:
    """Tile (i, j) of the grid: rows r0:r1 of the first input set against rows c0:c1 of the second."""

    i: int
    j: int
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def diagonal(self) -> bool:
        return self.i == self.j


def tile_grid(n1: int, n2: int, b: int, symmetric: bool) -> list[Tile]:
    """The tiles to compute, row-major; symmetric: only j ≥ i (the others are their mirror images)."""
    return [Tile(i, j, i * b, min((i + 1) * b, n1), j * b, min((j + 1) * b, n2))
            for i in range(-(-n1 // b)) for j in range(-(-n2 // b)) if not symmetric or j >= i]


def fill(be: Any, n1: int, n2: int, b: int, *, k: int, symmetric: bool,
         rows1: Callable[[int, int], Any], rows2: Callable[[int, int], Any],
         tile: Callable[[Any, Any], Any], cross: Callable[[Any, int, int], Any] | None = None) -> Any:
    """The (n1, n2) or (n1, n2, k, k) kernel assembled from b × b tiles into ``be.zeros``.

    ``rows1(i0, bi)`` is computed once per row block and kept for its row of tiles; ``rows2(j0, bj)``
    once per tile (so only the row data of 2b inputs is alive); with ``symmetric`` only j ≥ i, each
    off-diagonal tile also written mirrored (``be.set_block(..., mirror=True)``).  ``cross(R, j0, bj)``,
    if given, is ``tile(R, rows2(j0, bj))`` in one piece (a compiling backend fuses the column rows
    into the contraction: one dispatch, no row data crossing the compiled boundary).
    """
    fixed = bool(getattr(be, "fixed_tile_shape", False))
    bi, bj = min(b, n1), min(b, n2)
    out = be.zeros((n1, n2) if k == 1 else (n1, n2, k, k))
    for i0 in block_starts(n1, bi, fixed):
        ni = min(bi, n1 - i0)
        R = rows1(i0, ni)
        for j0 in block_starts(n2, bj, fixed):
            if symmetric and j0 < i0:
                continue
            if symmetric and j0 == i0:
                out = be.set_block(out, i0, j0, tile(R, None), mirror=False)
            else:
                nj = min(bj, n2 - j0)
                T = cross(R, j0, nj) if cross is not None else tile(R, rows2(j0, nj))
                out = be.set_block(out, i0, j0, T, mirror=symmetric)
    return out


def gram(be: Any, n1: int, n2: int, b: int | None, *, k: int, symmetric: bool,
         rows1: Callable[[int, int], Any], rows2: Callable[[int, int], Any],
         tile: Callable[[Any, Any], Any], whole: Callable[[], Any] | None = None,
         cross: Callable[[Any, int, int], Any] | None = None) -> Any:
    """The kernel in one tile (``b`` None or ≥ both sizes: ``whole()``, else ``tile(rows1, rows2)``)
    or by :func:`fill`."""
    if b is None or (b >= n1 and b >= n2):
        if whole is not None:
            return whole()
        return tile(rows1(0, n1), None if symmetric else rows2(0, n2))
    return fill(be, n1, n2, b, k=k, symmetric=symmetric, rows1=rows1, rows2=rows2, tile=tile, cross=cross)
