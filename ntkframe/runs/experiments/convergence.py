"""Experiment ``convergence``: the training residual against the linear-convergence envelopes of docs/theory.md §4.

For MSE, ℓ = ½(f − y)², with r(t) = f(X, t) − y on the N training inputs, gradient flow on the mean
loss gives d‖r‖²/dt = −(2/N) rᵀH(t)r along *any* trajectory, hence

    ‖r(t)‖² ≤ exp(−(2/N) ∫₀ᵗ λ_min(H(s)) ds) ‖r(0)‖²                       (the moving-kernel envelope)

— checkable from a recorded trajectory, at every record time (the integral by the trapezoidal rule over
the records).  Beside it the run draws the envelopes of a frozen kernel,

    exp(−2λ_min(H(0)) t/N) ‖r(0)‖²   and   exp(−2λ_min(H*) t/N) ‖r(0)‖²,

exact bounds for the linearised model on H(0) or H*, and only approximate for the network (its kernel
moves), and Du et al.'s guarantee for wide networks, exp(−λ_min(H*) t/N) ‖r(0)‖² in this mean-loss time
(their exp(−λ₀t) for the sum loss, with λ_min(H(t)) ≥ λ₀/2).  It fits the late-time linear-convergence
rate κ of ‖r(t)‖² ≈ C e^(−κt) and compares it with 2λ_min/N, and fits the deviation
|λ_min(H(0)) − λ_min(H*)|/λ_min(H*) against m (Weyl's inequality and the concentration of H(0):
at most O(m^(−1/2))).

Tasks: one per (width m, seed replicate), key ``m=<m>/seed=<s>``, on one fixed data set.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...theory.analytic import analytic_ntk
from ..config import Field
from ..fitting import consistent, fit_power_law
from ...flow.losses import MSE
from ...core.models import TwoLayerNet
from ...flow.simulate import simulate
from ..sweep import Task, task_seed
from .base import MODEL_TABLE, Experiment, format_table
from .flow import activation_smooth, build_integrator, data_fields, integrator_table, make_data, require

THEORY_SLOPE_LAMBDA = -0.5


def _fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else "must lie in [0, 1)"


def envelopes(times: Any, r2: Any, lam_min: Any, n: int, lam0: float, lam_star: float | None) -> dict[str, Any]:
    """The envelopes of docs/theory.md §4 on the record times, and the ratios ‖r(t)‖²/envelope.

    ``moving``: ‖r(0)‖² exp(−(2/N) ∫₀ᵗ λ_min(H(s)) ds), the integral by the trapezoidal rule over the
    records (times[0] must be 0); ``frozen``: ‖r(0)‖² exp(−2λ_min(H(0)) t/N); ``star``: the same with
    λ_min(H*); ``du``: ‖r(0)‖² exp(−λ_min(H*) t/N) (Du et al.'s rate λ₀ in mean-loss time).
    """
    t = np.asarray(times, dtype=float)
    r2 = np.asarray(r2, dtype=float)
    lam = np.asarray(lam_min, dtype=float)
    if t[0] != 0.0:
        raise ValueError(f"the envelopes start from r(0): the first record time must be 0, not {t[0]}")
    integral = np.concatenate([[0.0], np.cumsum(0.5 * (lam[1:] + lam[:-1]) * np.diff(t))])
    out: dict[str, Any] = {"integral_lambda_min": integral, "moving": r2[0] * np.exp(-(2.0 / n) * integral),
                           "frozen": r2[0] * np.exp(-2.0 * lam0 * t / n)}
    if lam_star is not None:
        out["star"] = r2[0] * np.exp(-2.0 * lam_star * t / n)
        out["du"] = r2[0] * np.exp(-lam_star * t / n)
    for k in ("moving", "frozen", "star", "du"):
        if k in out:
            out[f"ratio_{k}"] = r2 / out[k]
    return out


def late_rate(times: Any, r2: Any, start: float) -> float | None:
    """κ of ‖r(t)‖² ≈ C e^(−κt): least squares of log ‖r(t)‖² on t over the records with t ≥ start."""
    t = np.asarray(times, dtype=float)
    r2 = np.asarray(r2, dtype=float)
    keep = (t >= start) & (r2 > 0)
    if keep.sum() < 2:
        return None
    slope = np.polyfit(t[keep], np.log(r2[keep]), 1)[0]
    return float(-slope)


class ResidualConvergence(Experiment):
    name = "convergence"
    description = "training residual ‖r(t)‖² against the linear-convergence envelopes of docs/theory.md §4"
    schema = {
        "experiment": [
            Field("kind", str, "convergence", "experiment to run"),
            Field("widths", list, [128, 512, 2048], "widths m", item_type=int, positive=True),
            Field("seeds", int, 4, "independent network initialisations per width", positive=True),
            Field("seed", int, 0, "base seed; network seeds derive from it and the task key"),
            Field("t_max", float, None, "last record time; default: efolds / (2λ_min(H*)/N)", positive=True,
                  nullable=True),
            Field("efolds", float, 3.0, "with t_max unset: e-folds of the H* envelope to simulate", positive=True),
            Field("n_times", int, 81, "record times, evenly spaced on [0, t_max] (the integral of λ_min uses them)",
                  positive=True),
            Field("tolerance", float, 1e-6, "numerical tolerance of the envelope check: ratio ≤ 1 + tolerance",
                  positive=True),
            Field("rate_fit_from", float, 0.5, "the late-time rate is fitted on t ≥ rate_fit_from · t_max",
                  check=_fraction),
            Field("analytic", bool, True, "compute H* (analytic_ntk) for its envelope and λ_min deviation"),
            Field("analytic_order", int, None, "Gauss–Hermite order of H* (default: chosen from the input norms)",
                  positive=True, nullable=True),
        ],
        "model": MODEL_TABLE,
        "data": data_fields(n=True, n_default=16, d_default=16),
        "integrator": integrator_table(),
    }

    @classmethod
    def check_config(cls, cfg: dict[str, dict[str, Any]], source: str = "<config>") -> None:
        ec = cfg["experiment"]
        require(ec["t_max"] is not None or ec["analytic"], source, "experiment", "t_max", ec["t_max"],
                "must be set when analytic = false (the default horizon comes from λ_min(H*))")
        require(ec["n_times"] >= 3, source, "experiment", "n_times", ec["n_times"], "needs at least 3 record times")
        require(len(set(ec["widths"])) == len(ec["widths"]), source, "experiment", "widths", ec["widths"],
                "entries must be distinct")

    def _model(self, m: int) -> TwoLayerNet:
        mc, dc = self.config["model"], self.config["data"]
        return TwoLayerNet(d=dc["d"], m=m, activation=mc["activation"], train=mc["train"],
                           output_init=mc["output_init"], parameterization=mc["parameterization"])

    def tasks(self) -> list[Task]:
        ec = self.config["experiment"]
        return [Task(f"m={m}/seed={s}", {"m": m, "replicate": s}) for m in sorted(ec["widths"])
                for s in range(ec["seeds"])]

    def run_task(self, task: Task) -> dict[str, Any]:
        """One gradient-flow run at width m, recorded at n_times evenly spaced times from 0."""
        ec, dc = self.config["experiment"], self.config["data"]
        m, rep = task.params["m"], task.params["replicate"]
        be = self.backend
        X, y = make_data(dc, dc["n"], dc["seed"])
        n = X.shape[0]
        model = self._model(m)
        lam_star = lam_star_max = None
        if ec["analytic"]:
            ev = np.linalg.eigvalsh(analytic_ntk(model, X, order=ec["analytic_order"]))
            lam_star, lam_star_max = float(ev[0]), float(ev[-1])
        t_max = ec["t_max"]
        if t_max is None:
            if not lam_star or lam_star <= 0:
                raise ValueError(f"λ_min(H*) = {lam_star:.3g} ≤ 0: there is no linear convergence to size t_max from; "
                                 "set [experiment] t_max")
            t_max = ec["efolds"] * n / (2.0 * lam_star)
        times = np.linspace(0.0, t_max, ec["n_times"])
        seed = task_seed(ec["seed"], task.key)
        params = model.init(be, seed=seed)
        integ, info = build_integrator(self.config["integrator"], model, params, X, be)
        t0 = time.perf_counter()
        traj = simulate(model, MSE(), integ, X, y, times, backend=be, params=params,
                        record=["loss", "outputs", "kernel_eigs"], progress=False)
        r = np.asarray(traj.outputs, dtype=float) - np.asarray(y, dtype=float)[None, :]
        return {"m": m, "replicate": rep, "seed": seed, "n": int(n), "t_max": float(t_max),
                "times": [float(t) for t in traj.times], "r2": [float(v) for v in (r * r).sum(axis=1)],
                "lambda_min": [float(v) for v in traj.lambda_min], "lambda_max": [float(v) for v in traj.lambda_max],
                "lambda_star_min": lam_star, "lambda_star_max": lam_star_max, "h": info["h"],
                "h_stable": info["h_stable"], "gradient_evaluations": traj.meta.get("gradient_evaluations"),
                "seconds": time.perf_counter() - t0}

    def summarise(self, records: list[dict[str, Any]], ctx: Any) -> dict[str, Any]:
        ec, mc = self.config["experiment"], self.config["model"]
        tol = ec["tolerance"]
        runs = []
        for rec in records:
            r = dict(rec["result"])
            n = r["n"]
            env = envelopes(r["times"], r["r2"], r["lambda_min"], n, r["lambda_min"][0], r["lambda_star_min"])
            for k, v in env.items():
                r[k] = np.asarray(v).tolist()
            # every ratio is 1 at t = 0 by construction: report the largest over t > 0
            ratio = np.asarray(env["ratio_moving"])[1:]
            worst = int(np.argmax(ratio))
            r["max_ratio_moving"] = float(ratio[worst])
            r["t_max_ratio_moving"] = float(r["times"][worst + 1])
            r["envelope_holds"] = bool(ratio[worst] <= 1.0 + tol)
            for k in ("frozen", "star", "du"):
                if f"ratio_{k}" in env:
                    r[f"max_ratio_{k}"] = float(np.max(env[f"ratio_{k}"][1:]))
            start = ec["rate_fit_from"] * r["t_max"]
            r["rate"] = late_rate(r["times"], r["r2"], start)
            window = np.asarray(r["times"]) >= start
            r["rate_frozen"] = 2.0 * r["lambda_min"][0] / n
            r["rate_moving_avg"] = 2.0 * float(np.mean(np.asarray(r["lambda_min"])[window])) / n
            r["rate_star"] = None if r["lambda_star_min"] is None else 2.0 * r["lambda_star_min"] / n
            if r["lambda_star_min"]:
                r["lambda_min_deviation"] = abs(r["lambda_min"][0] - r["lambda_star_min"]) / r["lambda_star_min"]
            runs.append(r)
        widths = sorted(ec["widths"])
        by_width = []
        for m in widths:
            rs = [r for r in runs if r["m"] == m]
            if not rs:
                continue
            rates = [r["rate"] for r in rs if r["rate"] is not None]
            by_width.append({
                "m": m, "seeds": len(rs), "max_ratio_moving": max(r["max_ratio_moving"] for r in rs),
                "envelope_holds": all(r["envelope_holds"] for r in rs),
                "max_ratio_frozen": max(r["max_ratio_frozen"] for r in rs),
                "max_ratio_star": max((r["max_ratio_star"] for r in rs if "max_ratio_star" in r), default=None),
                "max_ratio_du": max((r["max_ratio_du"] for r in rs if "max_ratio_du" in r), default=None),
                "rate_mean": float(np.mean(rates)) if rates else None,
                "rate_ci": _mean_ci(rates),
                "rate_frozen_mean": float(np.mean([r["rate_frozen"] for r in rs])),
                "rate_moving_avg_mean": float(np.mean([r["rate_moving_avg"] for r in rs])),
                "rate_star": rs[0]["rate_star"],
                "lambda_min0_mean": float(np.mean([r["lambda_min"][0] for r in rs])),
                "lambda_star_min": rs[0]["lambda_star_min"],
            })
        fit = error = None
        x, Y = [], None
        have = [m for m in widths if any(r["m"] == m and "lambda_min_deviation" in r for r in runs)]
        if ec["analytic"] and len(have) >= 2:
            reps = sorted(set.intersection(*({r["replicate"] for r in runs if r["m"] == m} for m in have)))
            idx = {(r["m"], r["replicate"]): r for r in runs}
            x = have
            Y = [[idx[(m, s)]["lambda_min_deviation"] for s in reps] for m in have]
            try:
                fit = fit_power_law(x, Y)
            except ValueError as exc:
                error = str(exc)
        else:
            error = "needs analytic = true and at least two widths"
        ctx.save_arrays("arrays", widths=np.array(widths),
                        **{f"r2_m{r['m']}_seed{r['replicate']}": np.array(r["r2"]) for r in runs},
                        **{f"lambda_min_m{r['m']}_seed{r['replicate']}": np.array(r["lambda_min"]) for r in runs})
        return {"runs": runs, "widths": widths, "by_width": by_width, "tolerance": tol,
                "envelope_holds": all(r["envelope_holds"] for r in runs) if runs else None,
                "max_ratio_moving": max((r["max_ratio_moving"] for r in runs), default=None),
                "lambda_deviation": {"x": x, "Y": Y, "fit": fit, "error": error, "theory_slope": THEORY_SLOPE_LAMBDA},
                "activation": mc["activation"], "train": mc["train"], "output_init": mc["output_init"],
                "activation_smooth": activation_smooth(mc["activation"])}

    # -- output ---------------------------------------------------------------------------------------
    def table(self, results: dict[str, Any]) -> str:
        rows = []
        for b in results["by_width"]:
            rows.append([b["m"], b["max_ratio_moving"], "yes" if b["envelope_holds"] else "NO", b["max_ratio_frozen"],
                         _opt(b["max_ratio_star"]), _opt(b["rate_mean"]), b["rate_frozen_mean"], _opt(b["rate_star"]),
                         b["seeds"]])
        text = (f"{results['activation']}, train={results['train']}: ‖r(t)‖² against the envelopes "
                f"(ratio = ‖r(t)‖²/envelope, max over t > 0 and seeds)\n")
        text += format_table(["width m", "ratio moving", f"≤1+{results['tolerance']:g}", "ratio H(0)", "ratio H*",
                              "rate κ", "2λmin(H0)/N", "2λmin(H*)/N", "seeds"], rows)
        dev = results["lambda_deviation"]
        if dev["fit"]:
            f = dev["fit"]
            text += (f"\n|λ_min(H(0)) − λ_min(H*)|/λ_min(H*) vs m: slope {f['exponent']:.3f} "
                     f"[{f['ci'][0]:.3f}, {f['ci'][1]:.3f}] (bound: ≤ −0.5)")
        return text

    def figures(self, results: dict[str, Any], run_dir: Path) -> list[Path]:
        from ..plotting import loglog_with_fit, pyplot, save

        plt = pyplot()
        widths = [b["m"] for b in results["by_width"]]
        ncol = min(3, max(1, len(widths)))
        nrow = math.ceil(len(widths) / ncol) if widths else 1
        fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.2 * nrow), squeeze=False)
        for ax in axes.flat[len(widths):]:
            ax.set_visible(False)
        for ax, m in zip(axes.flat, widths):
            rs = sorted((r for r in results["runs"] if r["m"] == m), key=lambda r: r["replicate"])
            for r in rs[1:]:
                ax.semilogy(r["times"], r["r2"], color="0.75", lw=0.8)
            r = rs[0]
            t = np.asarray(r["times"])
            ax.semilogy(t, r["r2"], "k-", lw=2, label="‖r(t)‖² (seed 0; others grey)")
            ax.semilogy(t, r["moving"], "C1-", label="exp(−(2/N)∫λ_min(H(s))ds)‖r(0)‖²")
            ax.semilogy(t, r["frozen"], "C2--", label="exp(−2λ_min(H(0))t/N)‖r(0)‖²")
            if "star" in r:
                ax.semilogy(t, r["star"], "C3:", lw=2, label="exp(−2λ_min(H*)t/N)‖r(0)‖²")
                ax.semilogy(t, r["du"], "C4-.", label="exp(−λ_min(H*)t/N)‖r(0)‖² (Du et al.)")
            ax.set_xlabel("time t")
            ax.set_ylabel("‖r(t)‖²")
            ax.set_title(f"m = {m}: max ratio to the moving envelope {max(x['max_ratio_moving'] for x in rs):.4f}",
                         fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"Training residual and its envelopes: {results['activation']}, train={results['train']}")
        paths = [save(fig, Path(run_dir) / "convergence.png")]

        fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
        for i, m in enumerate(widths):
            for j, r in enumerate(r for r in results["runs"] if r["m"] == m):
                axes[0].semilogy(r["times"], r["ratio_moving"], color=f"C{i}", lw=1, label=f"m={m}" if j == 0 else None)
        axes[0].axhline(1.0, color="k", lw=1)
        axes[0].set_xlabel("time t")
        axes[0].set_ylabel("‖r(t)‖² / moving envelope")
        axes[0].set_title("the moving-kernel envelope holds where the ratio ≤ 1", fontsize=9)
        axes[0].legend(fontsize=8)
        dev = results["lambda_deviation"]
        if dev["Y"] is not None and len(dev["x"]) >= 2:
            loglog_with_fit(axes[1], dev["x"], dev["Y"], dev["fit"], theory_slope=dev["theory_slope"],
                            label="|λ_min(H(0)) − λ_min(H*)| / λ_min(H*)")
            axes[1].set_xlabel("width m")
        else:
            axes[1].text(0.5, 0.5, f"not measured: {dev['error']}", ha="center", va="center",
                         transform=axes[1].transAxes, fontsize=8)
        axes[1].set_title("λ_min(H(0)) approaches λ_min(H*)", fontsize=9)
        bw = results["by_width"]
        ms = [b["m"] for b in bw]
        rate = [b["rate_mean"] if b["rate_mean"] is not None else np.nan for b in bw]
        lo = [b["rate_mean"] - b["rate_ci"][0] if b["rate_ci"] else 0.0 for b in bw]
        hi = [b["rate_ci"][1] - b["rate_mean"] if b["rate_ci"] else 0.0 for b in bw]
        axes[2].errorbar(ms, rate, yerr=[lo, hi], fmt="o-", capsize=3, label="measured late-time rate κ")
        axes[2].plot(ms, [b["rate_frozen_mean"] for b in bw], "s--", label="2λ_min(H(0))/N")
        axes[2].plot(ms, [b["rate_moving_avg_mean"] for b in bw], "^:", label="(2/N)·mean λ_min(H(t)) (fit window)")
        if bw and bw[0]["rate_star"] is not None:
            axes[2].axhline(bw[0]["rate_star"], color="C3", ls=":", label="2λ_min(H*)/N")
        axes[2].set_xscale("log")
        for ax in axes[1:]:
            if ms:
                ax.set_xticks(ms, [str(m) for m in ms], minor=False)
                ax.set_xticks([], minor=True)
        axes[2].set_xlabel("width m")
        axes[2].set_ylabel("rate")
        axes[2].set_title("linear-convergence rate", fontsize=9)
        axes[2].grid(True, which="both", alpha=0.3)
        axes[2].legend(fontsize=7)
        paths.append(save(fig, Path(run_dir) / "convergence_checks.png"))
        return paths

    def report(self, results: dict[str, Any]) -> str:
        ec, dc = self.config["experiment"], self.config["data"]
        tol = results["tolerance"]
        runs = results["runs"]
        lines = ["# Training residual against the convergence envelopes", "",
                 f"Two-layer network, σ = {results['activation']}, train = {results['train']}, a initialised "
                 f"{results['output_init']}; {dc['kind']} labels, N = {dc['n']} unit-sphere inputs in d = {dc['d']}; "
                 f"mean MSE; integrator {self.config['integrator']['kind']}"
                 + (f", h = {runs[0]['h']:.4g}" if runs and runs[0].get("h") else "")
                 + f"; {ec['seeds']} seeds per width; {ec['n_times']} record times on [0, t_max]"
                 + (f", t_max = {runs[0]['t_max']:.4g}" if runs else "") + ".", ""]
        if results.get("activation_smooth") is False:
            lines += [f"σ = {results['activation']} has a discontinuous σ': the envelope identity "
                      "d‖r‖²/dt = −(2/N)rᵀH(t)r still holds along the flow (H is defined almost everywhere), "
                      "but the lazy-training bounds behind the frozen-kernel envelopes assume σ' and σ'' bounded.", ""]
        verdict = ("holds at every record time of every run" if results["envelope_holds"] else
                   "is EXCEEDED beyond the tolerance in at least one run")
        worst = max(runs, key=lambda r: r["max_ratio_moving"]) if runs else None
        lines += ["## 1. The moving-kernel envelope (a theorem about every trajectory)", "",
                  "**Claim** (docs/theory.md §4): d‖r‖²/dt = −(2/N) rᵀH(t)r ≤ −(2/N) λ_min(H(t))‖r‖², so "
                  "‖r(t)‖² ≤ exp(−(2/N)∫₀ᵗ λ_min(H(s))ds)‖r(0)‖² at every t.", "",
                  f"**Measured**: the largest ratio ‖r(t)‖²/envelope over the record times t > 0 (at t = 0 it is 1 "
                  "by construction) and over all runs is "
                  + (f"{worst['max_ratio_moving']:.8f} (m = {worst['m']}, seed {worst['replicate']}, "
                     f"t = {worst['t_max_ratio_moving']:.4g})" if worst else "—")
                  + f"; the integral of λ_min uses the trapezoidal rule over the {ec['n_times']} records, so the "
                  f"check allows a numerical tolerance of {tol:g}.", "",
                  f"**Verdict**: the envelope {verdict}.", ""]
        lines += ["## 2. Frozen-kernel envelopes", "",
                  "**Claim**: for the linearised model on a fixed kernel K the residual obeys "
                  "‖r(t)‖² ≤ exp(−2λ_min(K)t/N)‖r(0)‖²; the network's kernel moves by O(m^(−1/2)) or less "
                  "(lazy training), so for the network these envelopes hold only approximately, better as m grows. "
                  "Du et al. guarantee exp(−λ₀t) for the sum loss with λ₀ = λ_min(H*) (they use λ_min(H(t)) ≥ λ₀/2), "
                  "which is exp(−λ_min(H*)t/N) in this mean-loss time.", "",
                  "| m | max ratio to exp(−2λ_min(H(0))t/N) | to exp(−2λ_min(H*)t/N) | to exp(−λ_min(H*)t/N) |",
                  "|---|---|---|---|"]
        for b in results["by_width"]:
            lines.append(f"| {b['m']} | {b['max_ratio_frozen']:.6f} | {_fmt(b['max_ratio_star'], '.6f')} | "
                         f"{_fmt(b['max_ratio_du'], '.6f')} |")
        lines += ["", "Ratios are the largest over t > 0. A ratio above 1 means the residual fell more slowly than that envelope at some time: the "
                  "kernel moved (or λ_min(H(0)) differs from λ_min(H*) at this width), and the envelope is not a "
                  "guarantee for the network there.", ""]
        lines += ["## 3. Linear-convergence rate", "",
                  f"**Measured**: κ from a least-squares fit of log ‖r(t)‖² on t over t ≥ {ec['rate_fit_from']:g}·t_max, "
                  "beside 2λ_min/N. The envelope bounds the average rate from below; the local rate approaches "
                  "2λ_min/N only once r(t) has aligned with the eigenvector of the smallest eigenvalue, so a measured "
                  "κ above 2λ_min/N is expected over a finite window.", "",
                  "| m | κ (mean, 95% CI over seeds) | 2λ_min(H(0))/N | (2/N) mean λ_min(H(t)) in the window | 2λ_min(H*)/N | κ / (2λ_min(H*)/N) |",
                  "|---|---|---|---|---|---|"]
        for b in results["by_width"]:
            ci = f" [{b['rate_ci'][0]:.4g}, {b['rate_ci'][1]:.4g}]" if b["rate_ci"] else ""
            ratio = (b["rate_mean"] / b["rate_star"]) if (b["rate_mean"] and b["rate_star"]) else None
            lines.append(f"| {b['m']} | {_fmt(b['rate_mean'], '.4g')}{ci} | {b['rate_frozen_mean']:.4g} | "
                         f"{b['rate_moving_avg_mean']:.4g} | {_fmt(b['rate_star'], '.4g')} | {_fmt(ratio, '.3f')} |")
        dev = results["lambda_deviation"]
        lines += ["", "## 4. λ_min(H(0)) against λ_min(H*)", "",
                  "**Claim**: |λ_min(H(0)) − λ_min(H*)| ≤ ‖H(0) − H*‖₂ (Weyl) = O(m^(−1/2)) (docs/theory.md §4, claim 2): "
                  "slope ≤ −1/2 in m (an upper bound).", ""]
        if dev["fit"]:
            f = dev["fit"]
            lines.append(f"**Measured** slope of |λ_min(H(0)) − λ_min(H*)|/λ_min(H*) against m: {f['exponent']:.3f}, "
                         f"95% CI [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}] ({f['method']}). **Verdict**: "
                         + consistent(f, THEORY_SLOPE_LAMBDA, bound=True) + ".")
        else:
            lines.append(f"Not measured: {dev['error']}.")
        failed = results.get("failed_tasks") or []
        if failed:
            lines += ["", f"**{len(failed)} task(s) failed** and are left out: "
                      + "; ".join(f"{f['key']}: {f['error']}" for f in failed[:5])]
        lines += ["", "```", self.table(results), "```", "", "![convergence](convergence.png)", "",
                  "![checks](convergence_checks.png)"]
        return "\n".join(lines) + "\n"


def _mean_ci(values: list[float], level: float = 0.95) -> list[float] | None:
    """t-interval of the mean (None with fewer than two values)."""
    if len(values) < 2:
        return None
    from scipy import stats

    v = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return [float(v.mean() - half), float(v.mean() + half)]


def _opt(v: Any) -> Any:
    return "—" if v is None else v


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)
