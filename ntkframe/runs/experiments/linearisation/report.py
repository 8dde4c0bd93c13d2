"""Report of ``linearisation``: the table, the four-panel figure and report.md, from the config and the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...fitting import complete_seeds
from ..base import ExperimentPart, format_table
from ..verdicts import intervals_note, is_quick, judge, measured, summary_header, terminal_line
from .analyse import grid
from .measure import GAPS


class LinearisationReport(ExperimentPart):
    """The Experiment's ``table``, ``figures`` and ``report`` for ``linearisation`` (no backend needed)."""

    def table(self, results: dict[str, Any]) -> str:
        widths, times = results["widths"], results["times"]
        cols = ["gap_net_lin_train", "gap_net_lin_test", "gap_lin_hstar_test", "gap_lin_mean_test", "test_mse_net",
                "test_mse_lin", "test_mse_hstar"]
        G = {k: grid(results, k) for k in cols}
        R = grid(results, "kernel_rel_error")
        rows = [[m, *(float(np.nanmean(G[k][j])) for k in cols), float(np.nanmean(R[j]))] for j, m in enumerate(widths)]
        text = format_table(["width m", "net−lin train", "net−lin test", "lin−H* test", "lin−f̄H* test",
                             "MSE net", "MSE lin", "MSE H*", "‖H0−H*‖_F rel"], rows)
        lines = [f"(RMS distances and test MSE at t = {times[-1]:g}; mean over seeds; f̄H*: H* flow from f ≡ 0)", text, ""]
        keys = ("gap_net_lin_train", "gap_net_lin_test", "gap_lin_hstar_test")
        lines.append(summary_header(self, [results["fits"][k][-1] for k in keys]))
        for k in keys:
            sym, slope, bound = GAPS[k]
            lines.append(terminal_line(f"{sym} vs m at t = {times[-1]:g} (theory: {'at most ' if bound else ''}{slope:g})",
                                       results["fits"][k][-1], slope, bound=bound, quick=is_quick(self)))
        lines.append("kernel regression with H* (t = ∞, f ≡ 0 at init): test MSE "
                     f"{results['data']['test_mse_kernel_regression']:.4g}")
        warn = self._conditioning_warning(results)
        if warn:
            lines.append("WARNING: " + warn)
        return "\n".join(lines)

    def figures(self, results: dict[str, Any], run_dir: Path) -> list[Path]:
        from ...plotting import legend, loglog_with_fit, pyplot, save, setting_title

        plt = pyplot()
        widths, times = results["widths"], results["times"]
        mc = self.config["model"]
        fig, axes = plt.subplots(2, 2, figsize=(12, 9.5))
        for ax, keys, title in ((axes[0, 0], ("gap_net_lin_train", "gap_net_lin_test"), "network vs its linearisation"),
                                (axes[0, 1], ("gap_lin_hstar_train", "gap_lin_hstar_test", "gap_lin_mean_test"),
                                 "linearisation vs the H* flow")):
            for c, k in enumerate(keys):
                Y = complete_seeds(grid(results, k))
                if Y.shape[1] and np.all(Y > 0):
                    loglog_with_fit(ax, widths, Y, results["fits"][k][-1], label=GAPS[k][0], color=f"C{c}",
                                    theory_slope=-0.5 if c == 0 else None)
            ax.set_xlabel("width m")
            ax.set_ylabel(f"RMS distance ‖a − b‖₂/√points at t = {times[-1]:g}")
            ax.set_title(title)
            legend(ax)
        data = results["data"]
        show = len(times) // 2  # the middle time: partly trained, so the predictors still differ
        for ax, key in ((axes[1, 0], str(widths[0])), (axes[1, 1], str(widths[-1]))):
            cv = results["curves"].get(key)
            if cv is None:
                ax.set_visible(False)
                continue
            t_shown = times[show] if np.ndim(cv["net"]) == 2 else times[-1]  # (runs that kept the final time only)
            cv = {k: (np.asarray(v)[show] if np.ndim(v) == 2 else np.asarray(v)) for k, v in cv.items()}
            if data["t_test"] is not None:
                x = np.asarray(data["t_test"])
                ax.plot(x, data["y_test"], "-", color="black", lw=1, label="target")
                ax.plot(data["t"], data["y"], "o", color="black", ms=4, label="training points")
                ax.plot(x, cv["init"], ":", color="gray", lw=1, label="f(·, 0)")
                ax.plot(x, cv["net"], "-", color="C0", lw=2, label="network f_net")
                ax.plot(x, cv["lin"], "--", color="C1", lw=1.5, label="linearised f_lin (H(0))")
                ax.plot(x, cv["hstar"], "-.", color="C2", lw=1.5, label="H* flow, same f(·, 0)")
                ax.plot(x, cv["hstar_mean"], ":", color="C3", lw=1.5, label="H* flow from f ≡ 0")
                ax.set_xlabel("angle t (radians)")
                ax.set_ylabel("prediction f(x)")
            else:  # teacher data: predictions against the H* flow, point by point
                ref = np.asarray(cv["hstar"])
                for c, (k, lab) in enumerate((("net", "network"), ("lin", "linearised"), ("hstar_mean", "H* from f ≡ 0"))):
                    ax.plot(ref, cv[k], "o", ms=3, color=f"C{c}", label=lab)
                lim = [float(ref.min()), float(ref.max())]
                ax.plot(lim, lim, "-", color="gray", lw=1)
                ax.set_xlabel("H* flow from the same f(·, 0): f_H*(x) at the test inputs")
                ax.set_ylabel("prediction f(x)")
            ax.set_title(f"m = {key}, seed replicate {int(cv['replicate'])}, t = {t_shown:g}")
            ax.grid(True, alpha=0.3)
            legend(ax)
        fig.suptitle(f"Network vs linearisation vs H*: {setting_title(mc)}, data = {data['dataset']}")
        return [save(fig, Path(run_dir) / "linearisation.png")]

    def report(self, results: dict[str, Any]) -> str:
        widths, times = results["widths"], results["times"]
        mc, ic = self.config["model"], self.config["integrator"]
        dc = self.config["data"]
        what = (f"regression_1d (N = {dc['n']} angles, y = sin({dc['frequency']}t) + cos(t)/2, lift ℓ = {dc['lift']:g}, "
                f"{dc['n_test']} test angles)" if dc["dataset"] == "regression_1d"
                else f"teacher labels on S^{dc['d'] - 1} (N = {dc['n']}, {dc['n_test']} test points)")
        lines = ["# Network, linearisation and H* kernel regression", "",
                 f"σ = {mc['activation']}, train = {mc['train']}, output_init = {mc['output_init']}; data: {what}; "
                 f"integrator {ic['kind']}; {results['seeds']} seeds per width; times t = "
                 f"{', '.join(f'{t:g}' for t in times)} (mean-loss gradient-flow time).", "",
                 "**Claims** (docs/theory.md §4, Linearisation; Lee et al. 2019): a wide network trained by gradient flow "
                 "tracks its linearisation f_lin (the exact flow with the frozen kernel H(0)) with a gap that shrinks "
                 "as m grows, typically like m^(−1/2) (an upper bound); and f_lin differs from the same flow with H* by "
                 "a term first order in H(0) − H* = O(m^(−1/2)). Distances are root-mean-square over the points.", ""]
        lines += [intervals_note(self, [f for k in GAPS for f in results["fits"][k]]), ""]
        warn = self._conditioning_warning(results)
        if warn:
            lines += [f"**Warning: the claim cannot be tested on this data.** {warn}", ""]
        quick = is_quick(self)

        def fmt(f: dict | None, slope: float | None, bound: bool) -> str:
            if not f:
                return "—"
            return (f"{f['exponent']:.3f} [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}] "
                    + judge(f, slope, bound=bound, quick=quick)["verdict"])

        lines += ["| distance | theory | " + " | ".join(f"t = {t:g}" for t in times) + " |",
                  "|---|---|" + "---|" * len(times)]
        for k, (sym, slope, bound) in GAPS.items():
            th = "no claim" if slope is None else (f"≤ {slope:g}" if bound else f"{slope:g}")
            lines.append(f"| {sym} | {th} | " + " | ".join(fmt(f, slope, bound) for f in results["fits"][k]) + " |")
        lines.append("")
        for k in ("gap_net_lin_test", "gap_net_lin_train"):
            for t, f in zip(times, results["fits"][k]):
                if f:
                    lines.append(f"- **Measured** {measured(f)} for {GAPS[k][0]} at t = {t:g}. **Verdict**: "
                                 + judge(f, -0.5, bound=True, quick=quick)["text"] + ".")
        for t, f in zip(times, results["fits"]["gap_lin_hstar_test"]):
            if f:
                lines.append(f"- **Measured** {measured(f)} for ‖f_lin − f_H*‖ (test) at t = {t:g}. **Verdict**: "
                             + judge(f, -0.5, bound=False, quick=quick)["text"] + ".")
        G = grid(results, "gap_net_lin_test")
        means = np.nanmean(G, axis=1)
        if len(widths) >= 3 and np.all(means > 0):
            local = np.diff(np.log(means)) / np.diff(np.log(widths))
            lines.append(f"- Local slopes of the mean ‖f_net − f_lin‖ (test) at t = {times[-1]:g} between consecutive "
                         "widths: " + ", ".join(f"{a}→{b}: {v:.2f}" for a, b, v in zip(widths, widths[1:], local))
                         + " (a slope that steepens with m means the largest widths are only entering the asymptotic "
                         "regime at this t).")
        steep = [t for t, f in zip(times, results["fits"]["gap_net_lin_test"]) if f and f["ci"][1] < -0.5]
        if steep:
            lines.append(f"- Steeper than −1/2 at t = {', '.join(f'{t:g}' for t in steep)}: the bound is not tight there. "
                         "The second-order term of f_net − f_lin sums m per-neuron terms whose sign follows a_r "
                         "(odd in a, E[a_r³] = 0), which cancel to O(1/m) rather than O(m^(−1/2)) while the kernel "
                         "barely moves; the m^(−1/2) bound is what survives in the worst case.")
        lines.append("")
        f = results["fit_kernel_rel_error"]
        if f:
            lines += [f"For reference, ‖H(0) − H*‖_F/‖H*‖_F on the training inputs falls with slope {f['exponent']:.3f} "
                      f"[{f['ci'][0]:.3f}, {f['ci'][1]:.3f}] (theory −1/2).", ""]
        d = results["data"]
        if "hstar_lambda_min" in d:
            n = self.config["data"]["n"]
            below = ", ".join(f"m = {m}: {d['hstar_eigs_below_fluctuation'][str(m)]} (‖H(0) − H*‖₂ ≈ "
                              f"{d['kernel_error_spectral'][str(m)]:.3g})" for m in widths)
            lines += [f"**Conditioning.** λ_min(H*) = {d['hstar_lambda_min']:.3g} (λ_min(H*)/N = "
                      f"{d['hstar_lambda_min'] / n:.3g}), λ_max(H*)/N = "
                      f"{d['hstar_lambda_max'] / n:.3g}. Lee et al.'s uniform-in-time bound assumes λ_min(H*) > 0 and "
                      "its constant grows as λ_min(H*) → 0. Eigenvalues of H* below the kernel's fluctuation "
                      f"‖H(0) − H*‖₂, out of N = {n}: {below}. In those directions H(0)'s spectrum is set by the "
                      "finite-width fluctuation, and they are learnt at times t ≳ N/λ: once t reaches them, the gap "
                      "at fixed t can leave its m^(−1/2) regime (or be non-monotone in m) until m is large enough "
                      "that the fluctuation falls below the eigenvalues the flow has reached.", ""]
        f = results["fits"]["gap_lin_mean_test"][-1]
        lines += ["‖f_lin − f̄_H*‖ compares with the H* flow started from f ≡ 0 (the mean over initialisations of the "
                  "infinite-width network; kernel regression with H* at t = ∞). No claim is tested"
                  + (f" (measured slope {f['exponent']:.3f} [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}] at t = {times[-1]:g})"
                     if f else "")
                  + ": the initial function f(·, 0) is an O(1) draw from the NNGP at every width, which training "
                  "removes on the training inputs and, off them, only as far as the training inputs determine the "
                  "function (nearly completely on a circle, whose smooth kernels are nearly band-limited; not on a "
                  "high-dimensional sphere). A single network is close to the H* flow *from its own initial "
                  "function*.", "",
                  "```", self.table(results), "```", "", "![linearisation](linearisation.png)"]
        return "\n".join(lines) + "\n"

    def _conditioning_warning(self, results: dict[str, Any]) -> str | None:
        """Why the claim cannot be tested at the largest width, or None: λ_min(H*) at or below the kernel's
        finite-width fluctuation ‖H(0) − H*‖₂ there, so the slowest directions are set by the fluctuation."""
        d = results["data"]
        if "hstar_lambda_min" not in d or not results["widths"]:
            return None
        m = str(results["widths"][-1])
        lam, fl = d["hstar_lambda_min"], d["kernel_error_spectral"].get(m)
        if fl is None or not np.isfinite(fl) or lam > fl:
            return None
        below = d["hstar_eigs_below_fluctuation"][m]
        return (f"λ_min(H*) = {lam:.3g} (λ_min(H*)/N = {lam / self.config['data']['n']:.3g}) lies below the kernel's "
                f"finite-width fluctuation ‖H(0) − H*‖₂ ≈ {fl:.3g} even at the largest width m = {m} ({below} of "
                f"N = {self.config['data']['n']} eigenvalues of H* do): in those directions H(0)'s spectrum is the "
                "fluctuation's, so the gaps at late times say more about the data's conditioning than about the "
                "theory. Use better-conditioned data (e.g. dataset = \"teacher\" with d large against N) or wider "
                "networks.")
