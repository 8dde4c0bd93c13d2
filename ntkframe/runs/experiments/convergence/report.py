"""Report of ``convergence``: the table, the two figures and report.md, from the config and the results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..base import ExperimentPart, format_table
from ..verdicts import intervals_note, is_quick, judge, measured, summary_header, terminal_line
from .analyse import THEORY_SLOPE_LAMBDA


class ConvergenceReport(ExperimentPart):
    """The Experiment's ``table``, ``figures`` and ``report`` for ``convergence`` (no backend needed)."""

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
        text += "\n" + summary_header(self, [dev["fit"]])
        text += "\n" + terminal_line(f"|λ_min(H(0)) − λ_min(H*)|/λ_min(H*) vs m (bound: at most {THEORY_SLOPE_LAMBDA:g})",
                                     dev["fit"], THEORY_SLOPE_LAMBDA, bound=True, quick=is_quick(self),
                                     error=dev["error"])
        return text

    def figures(self, results: dict[str, Any], run_dir: Path) -> list[Path]:
        from ...plotting import integer_ticks, legend, loglog_with_fit, pyplot, save, setting_title

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
            legend(ax)
        fig.suptitle(f"Training residual and its envelopes: {setting_title(self.config['model'])}")
        paths = [save(fig, Path(run_dir) / "convergence.png")]

        fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
        for i, m in enumerate(widths):
            for j, r in enumerate(r for r in results["runs"] if r["m"] == m):
                axes[0].semilogy(r["times"], r["ratio_moving"], color=f"C{i}", lw=1, label=f"m = {m}" if j == 0 else None)
        axes[0].axhline(1.0, color="k", lw=1)
        axes[0].set_xlabel("time t")
        axes[0].set_ylabel("‖r(t)‖² / moving envelope")
        axes[0].set_title("the moving-kernel envelope holds where the ratio ≤ 1", fontsize=9)
        legend(axes[0])
        dev = results["lambda_deviation"]
        if dev["Y"] is not None and len(dev["x"]) >= 2:
            loglog_with_fit(axes[1], dev["x"], dev["Y"], dev["fit"], theory_slope=dev["theory_slope"],
                            label="relative deviation")
            legend(axes[1])
        else:
            axes[1].text(0.5, 0.5, f"not measured: {dev['error']}", ha="center", va="center",
                         transform=axes[1].transAxes, fontsize=8)
        axes[1].set_xlabel("width m")
        axes[1].set_ylabel("|λ_min(H(0)) − λ_min(H*)| / λ_min(H*)")
        axes[1].set_title("λ_min(H(0)) against λ_min(H*) (bound: slope ≤ −1/2)", fontsize=9)
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
        if ms:
            integer_ticks(axes[2], ms, "x")
        axes[2].set_xlabel("width m")
        axes[2].set_ylabel("rate κ of ‖r(t)‖² ≈ C e^(−κt)  (1 / time)")
        axes[2].set_title("linear-convergence rate", fontsize=9)
        axes[2].grid(True, which="both", alpha=0.3)
        legend(axes[2])
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
                 + (f", t_max = {runs[0]['t_max']:.4g}" if runs else "") + ".", "",
                 intervals_note(self, [results["lambda_deviation"]["fit"]]), ""]
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
                  "**Measured**: the largest ratio ‖r(t)‖²/envelope over the record times t > 0 (at t = 0 it is 1 "
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
            v = judge(f, THEORY_SLOPE_LAMBDA, bound=True, quick=is_quick(self))
            lines.append(f"**Measured** {measured(f)} for |λ_min(H(0)) − λ_min(H*)|/λ_min(H*) against m. "
                         f"**Verdict**: {v['text']}.")
            lines += ["", {"consistent": "So λ_min(H(0)) approaches λ_min(H*) at least as fast as the bound's m^(−1/2) "
                                         "(within the verdict's tolerance).",
                           "NOT consistent": "So λ_min(H(0)) approaches λ_min(H*) more slowly than the bound allows "
                                             "at these widths.",
                           "undecided": "So the data show λ_min(H(0)) approaching λ_min(H*), but cannot yet tell "
                                        "whether at the bound's rate m^(−1/2) or more slowly."}[v["verdict"]]]
        else:
            lines.append(f"Not measured: {dev['error']}.")
        failed = results.get("failed_tasks") or []
        if failed:
            lines += ["", f"**{len(failed)} task(s) failed** and are left out: "
                      + "; ".join(f"{f['key']}: {f['error']}" for f in failed[:5])]
        lines += ["", "```", self.table(results), "```", "", "![convergence](convergence.png)", "",
                  "![checks](convergence_checks.png)"]
        return "\n".join(lines) + "\n"


def _opt(v: Any) -> Any:
    return "—" if v is None else v


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)
