"""Cost estimates of the structured module NTK and of the two torch.func recipes, per row and per
row pair, for ``implementation="auto"`` (:mod:`ntkframe.core.autodiff`) and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .factors import _prepare
from .rules import _choose, _path_costs, _shape_of


@dataclass
class Cost:
    """Estimated cost of one Jacobian-Gram recipe: flops per row (forming factors) and per row pair
    (the Gram), and bytes kept per row.  ``total(n1, n2)`` = (n1 + n2)·row + n1·n2·pair flops."""

    flops_per_row: float
    flops_per_pair: float
    bytes_per_row: float

    def total(self, n1: int, n2: int | None = None) -> float:
        n2 = n1 if n2 is None else n2
        return (n1 + n2) * self.flops_per_row + n1 * n2 * self.flops_per_pair


def module_cost(module: Any, params: Any, X: Any, k: int | None = None, *, trace: bool = False) -> dict:
    """Estimated costs of the three recipes for ``module`` on batches like ``X``:
    {"structured", "jacobian_contraction", "ntk_vector_products"} -> :class:`Cost`.

    With F = forward flops per sample (the matrix products of one row's forward pass as torch's
    ``FlopCounterMode`` counts them, raw-parameter products included; if it cannot run, 2·T·p·q·g
    summed over the Linear/Conv calls; elementwise work ignored), k outputs (``k=None``: probed), k_eff = 1 with ``trace`` else k, P the
    parameters differentiated, itemsize b:

    * structured: per row F + k·F (the forward and the k cotangent passes, input gradients only)
      + each layer's formation cost on its chosen path (module docstring) + 3·F·k per generic
      parameter row; per pair Σ_layers the chosen path's pair cost + 2·k·k_eff·P_generic; bytes:
      b·(k·(activations) + kept factors + k·P_generic).
    * jacobian_contraction (vmap(jacrev) then Σ_p J1_p J2_pᵀ): per row F + 2·k·F (k backward
      passes, input and weight gradients); per pair 2·k·k_eff·P; bytes b·k·P (+ activations).
    * ntk_vector_products (for each of the N2·k columns a VJP on one row, then a JVP on the N1
      rows): per row 3·k·F (the VJPs); per pair 3·k·F (a JVP costs ~3 forward passes, one per
      column (j, c') for every row i); bytes b·(P + 3·activations) per column in flight.
    """
    torch, spec, X, kp, shapes, records, acts = _prepare(module, params, X)
    k = kp if k is None else int(k)
    n = X.shape[0]
    kk = 1 if (trace or k == 1) else k
    b = torch.empty((), dtype=spec.dtype).element_size()
    fwd = _counted_flops(torch, spec, X[:1])
    if fwd <= 0:
        for name, (mod, rule) in spec.modules.items():
            if records.get(name) and rule in ("linear", "conv1d", "conv2d"):
                fwd += _shape_of(mod, rule, records[name], {"weight": 1}).fwd
    P = sum(v.numel() for v in spec.diff.values())
    P_gen = P - sum(spec.diff[pn].numel() for pn in spec.covered_names())
    row, pair, kept = fwd + k * fwd, 0.0, k * acts
    for s in shapes.values():
        costs = _path_costs(s, k, kk)
        r, pp, e = costs[_choose(costs, n)]
        row, pair, kept = row + r, pair + pp, kept + e
    if P_gen:
        row += 3 * k * fwd
        pair += 2 * k * kk * P_gen
        kept += k * P_gen
    return {
        "structured": Cost(row, pair, b * kept),
        "jacobian_contraction": Cost(fwd + 2 * k * fwd, 2 * k * kk * P, b * (k * P + acts)),
        "ntk_vector_products": Cost(3 * k * fwd, 3 * k * fwd, b * (P + 3 * acts)),
    }


def _counted_flops(torch: Any, spec: Any, x1: Any) -> float:
    """Matrix-product flops of one row's forward pass (torch's FlopCounterMode); 0 if it cannot run."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            spec.call(x1)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - an estimate only: the caller sums the covered layers instead
        return 0.0
