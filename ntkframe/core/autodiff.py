"""The generic (autodiff) Jacobian-Gram shared by every autodiff backend: checks, the cost model of ``"auto"``, tiles.

A backend with automatic differentiation (torch, jax) reduces a model to a :class:`Problem` (k
outputs, P parameters, the flops F of one sample's forward pass, the activation bytes A of one
sample) and gives, per implementation, a row function and a tile function for the tile engine
(:mod:`ntkframe.core.tiles`); this module does the rest, identically on every backend.

**The cost model** (the one meaning of ``implementation="auto"``; Novak, Sohl-Dickstein &
Schoenholz 2022, "Fast finite width NTK").  N1, N2 inputs (a symmetric kernel: N2 = N1, and
N1(N1+1)/2 pairs), k outputs, k_eff = k for the full (N1, N2, k, k) kernel and 1 for one output
or ``trace``, s the itemsize; a backward pass costs about 2F:

    implementation          flops                                          bytes per row (tiles)
    jacobian_contraction    rows·k·3F + 2·pairs·k·k_eff·P                  2·k·P·s + A
    ntk_vector_products     N2·k·3F + N1·N2·k·3F                           k·(P·s + A)

with rows = N1 (+ N2 if not symmetric).  ``"auto"`` takes ``ntk_vector_products`` when the
Jacobians of the rows alive at once (all rows, or 2b with tiles of b) do not fit the memory
budget, or when ``block_size="auto"`` leaves tiles smaller than ``tuning.MIN_AUTO_TILE`` rows;
otherwise the one with fewer estimated flops (ties: ``jacobian_contraction``, one large GEMM).
In words: the contraction wins with few outputs or ``trace`` (its GEMM is at the machine's
peak), the vector products win with many outputs of a dense net (k > 3: no k² term) and when
memory is short.

**A backend's own structured path** for a model it can factor layer by layer (torch's per-layer
rules for an ``nn.Module``, :mod:`ntkframe_torch.layers`) enters the same model as a third
candidate, ``"structured"``, with its own estimate (:attr:`Problem.structured`: flops per row R,
per row pair Q, bytes per row B): rows·R + pairs·Q flops, B bytes per row.  ``"auto"`` then
takes the cheapest of the three among those whose rows fit (ties: structured, then the
contraction); ``implementation="structured"`` takes it outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import tiles, tuning
from .kernels import IMPLEMENTATIONS, check_implementation
from ..errors import InvalidOptionError

GENERIC = ("jacobian_contraction", "ntk_vector_products")
#: the order "auto" breaks ties in (equal estimated flops)
PREFERENCE = ("structured",) + GENERIC


@dataclass
class Problem:
    """A model reduced to sizes: k outputs per input, P parameters, F forward flops and A activation
    bytes per sample (F ≤ 0 when unknown: 2P, a dense net's, is used).  ``structured``: the
    estimate of a backend's own structured path for this model (an object with ``flops_per_row``,
    ``flops_per_pair`` and ``bytes_per_row``), None when it has none."""

    k: int
    n_params: int
    forward_flops: float
    act_bytes: int
    structured: Any = None

    @property
    def flops(self) -> float:
        return self.forward_flops if self.forward_flops > 0 else 2.0 * self.n_params


def row_bytes(implementation: str, prob: Problem, itemsize: int) -> int:
    """Bytes one input row costs in a tile of ``implementation`` (module docstring)."""
    if implementation == "structured":
        return int(prob.structured.bytes_per_row)
    if implementation == "jacobian_contraction":
        return 2 * prob.k * prob.n_params * itemsize + prob.act_bytes
    return prob.k * (prob.n_params * itemsize + prob.act_bytes)


def estimated_flops(prob: Problem, n1: int, n2: int, symmetric: bool, trace: bool) -> dict[str, float]:
    """The flops of each implementation (module docstring); "structured" only with ``prob.structured``."""
    k, P, F = prob.k, prob.n_params, prob.flops
    k_eff = 1 if (trace or k == 1) else k
    pairs = n1 * (n1 + 1) / 2 if symmetric else n1 * n2
    rows = n1 if symmetric else n1 + n2
    out = {"jacobian_contraction": rows * k * 3 * F + 2 * pairs * k * k_eff * P,
           "ntk_vector_products": n2 * k * 3 * F + n1 * n2 * k * 3 * F}
    if prob.structured is not None:
        out["structured"] = rows * prob.structured.flops_per_row + pairs * prob.structured.flops_per_pair
    return out


def choose(be: Any, prob: Problem, n1: int, n2: int, symmetric: bool, trace: bool, b: int | None,
           block_size: Any, plan: Callable[[str], int | None] | None = None) -> str:
    """The ``"auto"`` rule of the module docstring, for tiles of b rows (None: one tile; ``plan(impl)``,
    if given, gives each implementation's own tile edge instead)."""
    budget = be.memory_budget()
    cost = estimated_flops(prob, n1, n2, symmetric, trace)

    def fits(impl: str) -> bool:
        if impl == "ntk_vector_products":  # its columns are chunked to the budget
            return True
        bi = b if plan is None else plan(impl)
        if block_size == "auto" and bi is not None and bi < min(n1, n2, tuning.MIN_AUTO_TILE):
            return False
        alive = (n1 if symmetric else n1 + n2) if bi is None else min(2 * bi, n1 + n2)
        return alive * row_bytes(impl, prob, be.itemsize) <= budget

    return min((i for i in PREFERENCE if i in cost and fits(i)), key=lambda i: (cost[i], PREFERENCE.index(i)))


def structured_or_none(be: Any, model: Any, params: Any, X1: Any, X2: Any, *, implementation: Any,
                       block_size: Any, trace: Any, layered: bool = False) -> Any:
    """Check the options (one error type per misuse on every backend); the structured kernel when
    ``model`` is a structured ntkframe Model and ``implementation`` allows it, else None.
    ``layered``: the backend has its own structured path for ``model`` (``"structured"`` is allowed)."""
    from .models import Model

    check_implementation(implementation)
    tiles.check_trace(trace)
    tiles.check_block_size(block_size)
    structured = isinstance(model, Model) and model.structured
    if structured and implementation in ("auto", "structured"):
        return be.jacobian_gram(model, params, X1, X2, block_size=block_size, trace=trace)
    if implementation == "structured" and not layered:
        raise InvalidOptionError(
            f"implementation='structured' needs an ntkframe Model with Jacobian factors; got {type(model).__name__}; "
            f"allowed for it: {', '.join(i for i in IMPLEMENTATIONS if i != 'structured')}")
    return None


def generic_gram(be: Any, prob: Problem, X1: Any, X2: Any | None, *, implementation: str, block_size: Any,
                 trace: bool, pieces: Callable[[str], dict[str, Any]]) -> Any:
    """The kernel by ``implementation`` (``"auto"``: :func:`choose`) through the tile engine.

    ``pieces(implementation)`` gives ``rows(X, i0, b)`` (per-row data of rows i0:i0+b of X),
    ``tile(R1, R2|None)``, and optionally ``whole(X1, X2|None)`` (the kernel in one piece) and
    ``cross(R1, X, j0, b)`` (``tile(R1, rows(X, j0, b))`` in one compiled piece).
    """
    if prob.n_params == 0:
        raise ValueError("the model has no trainable parameters: its NTK is identically zero")
    symmetric = X2 is None
    X2c = X1 if symmetric else X2
    n1, n2 = int(X1.shape[0]), int(X2c.shape[0])
    k_out = 1 if (trace or prob.k == 1) else prob.k

    def plan(impl: str) -> int | None:
        return tiles.plan_block(be, row_bytes(impl, prob, be.itemsize), n1, n2, k=k_out, block_size=block_size)

    if implementation == "structured" and prob.structured is None:
        raise InvalidOptionError("implementation='structured': this backend has no structured path for the model")
    if implementation == "auto":
        implementation = choose(be, prob, n1, n2, symmetric, trace, plan("jacobian_contraction"), block_size, plan)
    b = plan(implementation)
    fns = pieces(implementation)
    whole, cross = fns.get("whole"), fns.get("cross")
    return tiles.gram(be, n1, n2, b, k=k_out, symmetric=symmetric,
                      rows1=lambda i0, bi: fns["rows"](X1, i0, bi), rows2=lambda j0, bj: fns["rows"](X2c, j0, bj),
                      tile=fns["tile"], whole=None if whole is None else (lambda: whole(X1, None if symmetric else X2c)),
                      cross=None if cross is None else (lambda R, j0, bj: cross(R, X2c, j0, bj)))
