"""Analysis of ``linearisation``: power laws of each distance against m, and how well H* is conditioned."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import ExperimentPart
from ....theory.predict import kernel_regression
from ...fitting import fit_complete_seeds
from .measure import EXTRA, GAPS, data_sets, hstar


def grid(results: dict[str, Any], key: str, i_time: int = -1) -> np.ndarray:
    """One recorded quantity as a (width, seed) array at record time ``i_time``, NaN where missing."""
    widths, S = results["widths"], results["seeds"]
    Y = np.full((len(widths), S), np.nan)
    for p in results["points"]:
        v = p[key] if np.ndim(p[key]) == 0 else p[key][i_time]
        Y[widths.index(p["m"]), p["replicate"]] = np.nan if v is None else v
    return Y


class LinearisationAnalysis(ExperimentPart):
    """The Experiment's ``summarise`` for ``linearisation``."""

    def summarise(self, records: list[dict[str, Any]], ctx: Any) -> dict[str, Any]:
        ec = self.config["experiment"]
        widths, times, S = sorted(ec["widths"]), list(ec["times"]), ec["seeds"]
        keys = (*GAPS, *EXTRA)
        A = {k: np.full((len(times), len(widths), S), np.nan) for k in keys}
        rel = np.full((len(widths), S), np.nan)
        points, curves = [], {}
        for rec in sorted(records, key=lambda r: (r["result"]["m"], r["result"]["replicate"])):
            r = rec["result"]
            j, s = widths.index(r["m"]), r["replicate"]
            for k in keys:
                A[k][:, j, s] = r[k]
            rel[j, s] = r["kernel_rel_error"]
            points.append({k: v for k, v in r.items() if k != "curves"})
            if r["m"] in (widths[0], widths[-1]) and str(r["m"]) not in curves:
                curves[str(r["m"])] = {"replicate": s, **r["curves"]}
        ctx.save_arrays("arrays", widths=np.array(widths), times=np.array(times), kernel_rel_error=rel, **A)
        fits = {k: [fit_complete_seeds(widths, A[k][i]) for i in range(len(times))] for k in GAPS}
        rel_fit = fit_complete_seeds(widths, rel)
        data = data_sets(self.config)
        Hs, Hst = hstar(self.config, data)
        kr = kernel_regression(Hs, Hst, data["y"]).mean
        lam = np.linalg.eigvalsh(Hs)
        fluct = grid({"widths": widths, "seeds": S, "points": points}, "kernel_error_spectral")
        below = {str(m): int(np.sum(lam < float(np.nanmean(fluct[j])))) for j, m in enumerate(widths)}
        info = {"hstar_lambda_min": float(lam[0]), "hstar_lambda_max": float(lam[-1]), "hstar_eigs_below_fluctuation": below,
                "kernel_error_spectral": {str(m): float(np.nanmean(fluct[j])) for j, m in enumerate(widths)},
                "dataset": self.config["data"]["dataset"], "y": data["y"].tolist(), "y_test": data["y_test"].tolist(),
                "t": data["t"].tolist() if "t" in data else None,
                "t_test": data["t_test"].tolist() if "t_test" in data else None,
                "test_mse_kernel_regression": float(np.mean((kr - data["y_test"]) ** 2))}
        return {"points": points, "widths": widths, "times": times, "seeds": S, "gaps": {k: v[0] for k, v in GAPS.items()},
                "fits": fits, "fit_kernel_rel_error": rel_fit, "theory_slope": -0.5,
                "fit_net_lin_test": fits["gap_net_lin_test"][-1], "fit_lin_hstar_test": fits["gap_lin_hstar_test"][-1],
                "curves": curves, "data": info}
