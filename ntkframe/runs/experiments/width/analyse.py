"""Analysis of ``width``: the distance to the reference against m, and against the harmonic width m_eff."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import ExperimentPart
from ...fitting import fit_power_law

THEORY_SLOPE = -0.5


class WidthAnalysis(ExperimentPart):
    """The Experiment's ``summarise`` for ``width``."""

    def summarise(self, records: list[dict[str, Any]], ctx: Any) -> dict[str, Any]:
        ec = self.config["experiment"]
        widths = sorted(ec["widths"])
        points = []
        for rec in records:
            r = rec["result"]
            for m, seed, f, sp in zip(r["widths"], r["seeds"], r["rel_fro"], r["rel_spectral"]):
                points.append({"width": m, "replicate": rec["key"], "seed": seed, "reference_seed": r["reference_seed"],
                               "rel_fro": f, "rel_spectral": sp})
        dist = np.array([[p["rel_fro"] for p in points if p["width"] == m] for m in widths])
        spec = np.array([[p["rel_spectral"] for p in points if p["width"] == m] for m in widths])
        ctx.save_arrays("arrays", widths=np.array(widths), rel_fro=dist, rel_spectral=spec)
        ok = len(widths) >= 2 and dist.size > 0
        fit = fit_power_law(widths, dist) if ok else None
        # both kernels fluctuate independently around H*: E‖H_m − H_ref‖² ∝ 1/m + 1/M, so against the
        # harmonic width m_eff = (1/m + 1/M)⁻¹ the distance has slope −1/2 with no floor
        M = ec["reference_width"]
        m_eff = [1.0 / (1.0 / m + 1.0 / M) for m in widths]
        fit_eff = fit_power_law(m_eff, dist) if ok else None
        return {"points": points, "widths": widths, "fit_rel_fro": fit, "effective_widths": m_eff,
                "fit_rel_fro_effective": fit_eff, "theory_slope": THEORY_SLOPE}
