"""Analysis of ``drift``: the power-law fits of each drift against m, t and N, from the task records."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import ExperimentPart
from ...fitting import fit_power_law
from ..flow import activation_note, activation_smooth
from .measure import METRICS, close, fit_points

FITS = [
    ("kernel_drift_vs_m", "kernel_drift", "m", -0.5, "the bound on ‖H(t) − H(0)‖₂ falls like m^(−1/2): slope ≤ −1/2 in m"),
    ("kernel_drift_fro_vs_m", "kernel_drift_fro", "m", -0.5, "the same bound in Frobenius norm (‖·‖_F ≤ √N‖·‖₂)"),
    ("kernel_drift_rel_vs_m", "kernel_drift_rel", "m", -0.5, "‖H(0)‖₂ = O(1) in m, so the relative drift has the same bound"),
    ("param_drift_vs_m", "param_drift", "m", 0.0, "‖θ(t) − θ(0)‖ = O(1): slope ≤ 0 in m"),
    ("param_drift_neuron_max_vs_m", "param_drift_neuron_max", "m", -0.5,
     "each neuron moves O(1/√m): slope ≤ −1/2 in m (the max over m neurons may add a √log m)"),
    ("kernel_drift_vs_t", "kernel_drift", "t", 1.0, "the bound is linear in t: slope ≤ 1 in t"),
    ("param_drift_vs_t", "param_drift", "t", None, "no claim (reported)"),
    ("kernel_drift_vs_n", "kernel_drift", "N", None, "derivations give N² to N³ (docs/theory.md §4): the exponent is reported"),
    ("kernel_drift_rel_vs_n", "kernel_drift_rel", "N", None, "‖H(0)‖₂ grows like N, so one power less than the absolute drift"),
]
N_BOUND_SLOPES = (2.0, 3.0)

#: the theorem behind each setting's bounds (docs/theory.md §4.1)
SMOOTH_THEOREM = ("the perturbation bound of docs/theory.md §4.1 (‖H(t) − H(0)‖₂ ≤ O(t N³/√m))",
                  "σ' and σ'' bounded, inputs on the unit sphere, gradient flow on the MSE")
DU_THEOREM = ("Du et al. 2019, Lemmas 3.2–3.3 (docs/theory.md §4.1): ‖H(t) − H(0)‖₂ = O(N³/(√m λ₀ δ)) "
              "uniformly in t, and every ‖w_r(t) − w_r(0)‖ = O(√N/(√m λ₀))",
              "σ = relu, only W trained, a_r = ±1 fixed, inputs on the unit sphere, λ₀ = λ_min(H*) > 0, "
              "with probability 1 − δ once m = Ω(N⁶/(λ₀⁴δ³))")


def drift_setting(model: dict[str, Any]) -> dict[str, Any]:
    """Which theorem bounds the drift for the ``[model]`` table, its assumptions, and the bounds' slopes.

    Returns {"kind": "smooth" | "du" | "none", "theorem", "assumptions", "note", "slopes": {fit name:
    θ or None}, "n_bounds": the N exponents the growth is compared with}.  Smooth σ (σ', σ'' bounded):
    the bound of docs/theory.md §4.1, linear in t, N² to N³.  relu with only W trained and a = ±1
    (``output_init = "sign"``): Du et al.'s lemmas, the same m^(−1/2) in m but uniform in t (no claim
    on the slope in t) and N³ (times 1/λ₀, which itself falls with N).  Any other relu-like setting
    (σ' discontinuous and a trained, or Gaussian a): no proven bound; the slopes are reported.
    """
    base = {name: theory for name, _, _, theory, _ in FITS}
    if model.get("kind", "two_layer") != "two_layer":
        return {"kind": "none", "theorem": None, "assumptions": None,
                "note": (f"[model] kind = {model['kind']!r}: the drift theorems (docs/theory.md §4.1, Du et al.) are "
                         "about the two-layer net, so no bound covers this network: the slopes are reported, with "
                         "the two-layer smooth case's exponents beside them for comparison."),
                "slopes": dict.fromkeys(base), "n_bounds": ()}
    act, train, init = model["activation"], model["train"], model["output_init"]
    smooth = activation_smooth(act)
    if smooth is True:
        return {"kind": "smooth", "theorem": SMOOTH_THEOREM[0], "assumptions": SMOOTH_THEOREM[1],
                "note": activation_note(act), "slopes": base, "n_bounds": N_BOUND_SLOPES}
    if act == "relu" and train == "hidden" and init == "sign":
        return {"kind": "du", "theorem": DU_THEOREM[0], "assumptions": DU_THEOREM[1],
                "note": ("σ = relu with only W trained and a = ±1 fixed is Du et al.'s setting: their Lemmas 3.2–3.3 "
                         "bound the kernel drift by O(N³/(√m λ₀ δ)) at every t, so the slopes in m are tested "
                         "against m^(−1/2) as for a smooth σ; the bound does not grow with t, so the slope in t is "
                         "reported, not tested."),
                "slopes": {**base, "kernel_drift_vs_t": None}, "n_bounds": (3.0,),
                "claims": {"kernel_drift_vs_t": "Du et al.'s bound is uniform in t: no claim on the slope (reported)",
                           "kernel_drift_vs_n": "Du et al.'s bound grows like N³/λ₀ (λ₀ = λ_min(H*) itself falls with "
                                                "N): compared with N³"}}
    why = (f"σ = {act} has a discontinuous σ'" if smooth is False else
           f"σ = {act} is not a built-in activation, so its smoothness cannot be checked")
    return {"kind": "none", "theorem": None, "assumptions": None,
            "note": (f"{why}, and with train = {train}, a ~ {init} no theorem covers it (docs/theory.md §4.1: the "
                     "smooth bound needs σ', σ'' bounded; Du et al.'s needs relu, only W trained and a = ±1): the "
                     "slopes are reported, with the smooth case's exponents beside them for comparison."),
            "slopes": dict.fromkeys(base), "n_bounds": ()}


def index_runs(runs: list[dict]) -> dict[tuple[int, int], dict[int, dict]]:
    """The runs by (m, N), then by replicate."""
    idx: dict[tuple[int, int], dict[int, dict]] = {}
    for r in runs:
        idx.setdefault((r["m"], r["n"]), {})[r["replicate"]] = r
    return idx


def time_index(times: list[float], t: float) -> int:
    """The position of ``t`` among the record times."""
    for i, s in enumerate(times):
        if close(s, t):
            return i
    raise ValueError(f"time {t} is not among the record times {times}")


class DriftAnalysis(ExperimentPart):
    """The Experiment's ``summarise`` for ``drift``: every fit in :data:`FITS`, and the arrays."""

    # -- summary --------------------------------------------------------------------------------------
    def summarise(self, records: list[dict[str, Any]], ctx: Any) -> dict[str, Any]:
        ec, mc = self.config["experiment"], self.config["model"]
        res = fit_points(self.config)
        runs = [rec["result"] for rec in records]
        times = list(ec["times"])
        results: dict[str, Any] = {
            "runs": runs, "times": times, "widths": sorted(ec["widths"]), "ns": sorted(ec["ns"]),
            "resolved": res, "model_kind": mc.get("kind", "two_layer"), "activation": mc.get("activation"),
            "train": mc.get("train"), "output_init": mc.get("output_init"),
            "activation_smooth": activation_smooth(mc["activation"]) if mc.get("activation") else None,
            "metrics": METRICS, "fits": {},
        }
        setting = drift_setting(mc)
        results["activation_note"] = setting["note"]
        results["setting"] = {k: v for k, v in setting.items() if k not in ("slopes", "claims")}
        fits = results["fits"]
        claims = setting.get("claims", {})
        for name, metric, axis, _, claim in FITS:
            fits[name] = self._series(runs, metric, axis, res, times, setting["slopes"][name], claims.get(name, claim))
        # the width exponent of the kernel drift at every record time
        by_time = []
        for t in times:
            s = self._series(runs, "kernel_drift", "m", {**res, "t_w": t}, times, -0.5, "")
            if s["fit"]:
                by_time.append({"t": t, "exponent": s["fit"]["exponent"], "ci": s["fit"]["ci"]})
        results["width_exponent_by_time"] = by_time
        ctx.save_arrays("arrays", **self._grid(runs, times))
        return results

    def _series(self, runs: list[dict], metric: str, axis: str, res: dict, times: list[float],
                theory: float | None, claim: str) -> dict[str, Any]:
        """x, Y (points × replicates present at every point) and the power-law fit of one relation."""
        idx = index_runs(runs)
        if axis == "m":
            fixed = {"N": res["n0"], "t": res["t_w"]}
            keys = [(m, res["n0"]) for m in sorted(self.config["experiment"]["widths"])]
            ti = [time_index(times, res["t_w"])] * len(keys)
            x = [k[0] for k in keys]
        elif axis == "N":
            fixed = {"m": res["m_n"], "t": res["t_n"]}
            keys = [(res["m_n"], n) for n in sorted(self.config["experiment"]["ns"])]
            ti = [time_index(times, res["t_n"])] * len(keys)
            x = [k[1] for k in keys]
        else:
            fixed = {"m": res["m_t"], "N": res["n0"]}
            keys = [(res["m_t"], res["n0"])] * len(times)
            ti = list(range(len(times)))
            x = list(times)
        present = [k for k in keys if k in idx]
        reps = sorted(set.intersection(*(set(idx[k]) for k in present))) if present and len(present) == len(keys) else []
        out: dict[str, Any] = {"metric": metric, "symbol": METRICS[metric], "axis": axis, "fixed": fixed, "x": x,
                               "replicates": reps, "Y": None, "fit": None, "error": None,
                               "theory_slope": theory, "claim": claim}
        if not reps:
            out["error"] = "no replicate finished at every point"
            return out
        if any(metric not in idx[k][rep] for k in keys for rep in reps):
            out["error"] = f"{metric} is not recorded for this model (the per-neuron drift is the two-layer net's)"
            return out
        Y = np.array([[idx[k][rep][metric][i] for rep in reps] for k, i in zip(keys, ti)], dtype=float)
        out["Y"] = Y.tolist()
        if len(set(x)) < 2:
            out["error"] = f"one {axis} value only: nothing to fit"
            return out
        zeros = int(np.sum(Y <= 0))
        if zeros:
            out["error"] = f"{zeros} of {Y.size} values are exactly 0, and a log-log fit needs positive values"
            mc = self.config["model"]
            if mc.get("activation") and activation_smooth(mc["activation"]) is False and mc.get("train") == "hidden" \
                    and metric.startswith("kernel"):
                out["error"] += (f" ({mc['activation']} with only W trained: H depends on W only through the "
                                 "activation pattern 1[w_rᵀx > 0], so the kernel does not move at all until a pattern "
                                 "flips)")
            return out
        try:
            out["fit"] = fit_power_law(x, Y)
        except ValueError as exc:
            out["error"] = str(exc)
        return out

    def _grid(self, runs: list[dict], times: list[float]) -> dict[str, np.ndarray]:
        """Every metric as an array (widths, ns, times, replicates), NaN where no task ran."""
        ec = self.config["experiment"]
        widths, ns = sorted(ec["widths"]), sorted(ec["ns"])
        reps = ec["seeds"]
        arrays: dict[str, np.ndarray] = {"widths": np.array(widths), "ns": np.array(ns), "times": np.array(times)}
        for metric in (*METRICS, "loss", "lambda_min", "lambda_max"):
            A = np.full((len(widths), len(ns), len(times), reps), np.nan)
            for r in (r for r in runs if metric in r):  # NaN for a metric the model does not record
                A[widths.index(r["m"]), ns.index(r["n"]), :, r["replicate"]] = r[metric]
            arrays[metric] = A
        return arrays
