"""Report of ``concentration``: the table, the four-panel figure and report.md, from the config and the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...fitting import complete_seeds
from ..base import ExperimentPart, format_table
from ..verdicts import intervals_note, is_quick, judge, measured, summary_header, terminal_line
from .analyse import ABSOLUTE, CROSSING_SLOPE, M_SLOPE, bound_shape, grid
from .measure import METRICS

def growth_verdict(fit: dict[str, Any], theory: float, what: str = "the error", quick: bool = False) -> str:
    """Verdict on a measured growth exponent (in n) next to an upper bound's: :func:`fitting.verdict` with
    ``bound=True`` (at or below is consistent), worded by :func:`verdicts.judge`; says what grows slower."""
    v = judge(fit, theory, bound=True, quick=quick)
    if v["verdict"] == "consistent" and fit["ci"][1] < theory:
        return v["text"] + f" ({what} grows more slowly than the bound allows)"
    if v["verdict"] == "NOT consistent":
        return v["text"] + f" ({what} grows faster than the bound allows)"
    return v["text"]


def _fmt_fit(fit: dict[str, Any] | None, theory: float | None = None, bound: bool = False) -> str:
    """"p [lo, hi]", followed by the verdict's word against θ = ``theory`` (none when theory is None)."""
    if not fit:
        return "—"
    word = "" if theory is None else " " + judge(fit, theory, bound=bound)["verdict"]
    return f"{fit['exponent']:.3f} [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]{word}"



class ConcentrationReport(ExperimentPart):
    """The Experiment's ``table``, ``figures`` and ``report`` for ``concentration`` (no backend needed)."""

    def table(self, results: dict[str, Any]) -> str:
        widths, ns = results["widths"], results["ns"]
        E = {k: grid(results, k) for k in ("spectral", "frobenius", "rel_spectral")}
        prob = results["probability"]
        P = prob.get("P")
        rows = []
        for i, n in enumerate(ns):
            for j, m in enumerate(widths):
                sp = E["spectral"][i, j]
                rows.append([n, m, float(np.nanmean(sp)), float(np.nanstd(sp)), float(np.nanmean(E["frobenius"][i, j])),
                             float(np.nanmean(E["rel_spectral"][i, j])), float(P[i][j]) if P else "—"])
        eps = prob.get("epsilon")
        p_head = f"P(≤ε={eps:.3g})" if eps is not None else "P(≤ε)"
        text = format_table(["n", "width m", "‖ΔH‖₂ mean", "std", "‖ΔH‖_F mean", "‖ΔH‖₂/‖H*‖₂", p_head], rows)
        lines = [text, ""]
        lines.append("slope of ‖H(0) − H*‖₂ against m (theory −1/2), verdict at each n: " +
                     ", ".join(f"n={n}: {_fmt_fit(results['fits_vs_m']['spectral'][str(n)], M_SLOPE)}" for n in ns))
        tn = results["theory_slope_n"].get("spectral")
        if tn is not None:
            lines.append(f"slope of ‖H(0) − H*‖₂ against n (bound: at most {tn:.3f}), verdict at each m: " +
                         ", ".join(f"m={m}: {_fmt_fit(results['fits_vs_n']['spectral'][str(m)], tn, True)}"
                                   for m in widths))
        quick = is_quick(self)
        lines.append(summary_header(self, [results["fit_vs_m"], results["fit_vs_n"]]))
        lines.append(terminal_line(f"‖H(0) − H*‖₂ vs m at n = {ns[-1]} (theory: -0.5, asymptotically)", results["fit_vs_m"],
                                   M_SLOPE, bound=False, quick=quick))
        if tn is not None and results["fit_vs_n"]:
            lines.append(f"  ‖H(0) − H*‖₂ vs n at m = {widths[-1]} (bound: at most {tn:.3f}, the shape n√log(n/δ)): "
                         f"slope {results['fit_vs_n']['exponent']:.3f}; "
                         + growth_verdict(results["fit_vs_n"], tn, quick=quick))
        cr = prob.get("crossing")
        if cr:
            ms = ", ".join(f"n={n}: {('%.4g' % v) if v is not None else st}" for n, v, st in
                           zip(ns, cr["m_star"], cr["status"]))
            lines.append(f"crossing width m* (P ≥ {1 - prob['delta']:g}, {prob['metric']} ≤ {eps:.3g}): {ms}")
            if cr["fit"]:
                lines.append(terminal_line("m* against n²log(n/δ)/ε² (bound: at most 1)", cr["fit"],
                                           CROSSING_SLOPE, bound=True, quick=quick))
        return "\n".join(lines)

    def figures(self, results: dict[str, Any], run_dir: Path) -> list[Path]:
        from ...plotting import data_ticks, legend, loglog_with_fit, pyplot, save, setting_title

        plt = pyplot()
        widths, ns = results["widths"], results["ns"]
        E = grid(results, "spectral")
        mc = self.config["model"]
        fig, axes = plt.subplots(2, 2, figsize=(12, 9.5))
        # (a) against m, one series per n
        ax = axes[0, 0]
        for i, n in enumerate(ns):
            Y = complete_seeds(E[i])
            if Y.shape[1]:
                loglog_with_fit(ax, widths, Y, results["fits_vs_m"]["spectral"][str(n)],
                                theory_slope=M_SLOPE if i == len(ns) - 1 else None, label=f"n = {n}",
                                color=f"C{i}")
        ax.set_xlabel("width m")
        ax.set_ylabel("‖H(0) − H*‖₂")
        ax.set_title("against width (mean ± s.e. over seeds)")
        legend(ax)
        # (b) against n, one series per width (at most 4, spread over the range)
        ax = axes[0, 1]
        picks = sorted(set(np.linspace(0, len(widths) - 1, min(4, len(widths))).round().astype(int).tolist()))
        for c, j in enumerate(picks):
            Y = complete_seeds(E[:, j])
            if Y.shape[1] and len(ns) >= 1:
                loglog_with_fit(ax, ns, Y, results["fits_vs_n"]["spectral"][str(widths[j])], label=f"m = {widths[j]}",
                                color=f"C{c}")
                if c == len(picks) - 1 and len(ns) >= 2:
                    shape = bound_shape(ns, results["probability"]["delta"])
                    tn = results["theory_slope_n"]["spectral"]
                    ax.plot(ns, Y.mean(axis=1)[0] * shape / shape[0], "--", color="gray",
                            label=f"bound's shape n√log(n/δ) (slope ≈ {tn:.2f})")
        ax.set_xlabel("number of inputs n")
        ax.set_ylabel("‖H(0) − H*‖₂")
        ax.set_title("against n (fixed network, nested inputs)")
        legend(ax)
        # (c) probability against m
        prob = results["probability"]
        ax = axes[1, 0]
        cr = prob.get("crossing")
        if prob.get("P") is not None:
            P = np.asarray(prob["P"])
            for i, n in enumerate(ns):
                ax.plot(widths, P[i], "o-", color=f"C{i}", label=f"n = {n}")
                if cr and cr["constant"] is not None:
                    ax.axvline(cr["constant"] * cr["x"][i], color=f"C{i}", ls=":", alpha=0.8)
            ax.axhline(1 - prob["delta"], color="gray", ls="--", label=f"1 − δ = {1 - prob['delta']:g}")
            ax.set_xscale("log")
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("width m")
            ax.set_ylabel(f"P̂({METRICS[prob['metric']]} ≤ ε)")
            ax.set_title(f"ε = {prob['epsilon']:.3g}; dotted: C·n²log(n/δ)/ε² (C fitted)")
            ax.grid(True, which="both", alpha=0.3)
            legend(ax)
        # (d) crossing width against the bound's shape
        ax = axes[1, 1]
        if cr and cr["constant"] is not None:
            x, ms = np.asarray(cr["x"]), np.asarray(cr["m_star"], dtype=float)
            ok = np.isfinite(ms)
            ax.loglog(x[ok], ms[ok], "o", color="C0", label="measured m* (P̂ reaches 1 − δ)")
            for xi, n, st in zip(x, ns, cr["status"]):
                if st != "ok":
                    edge = widths[0] if st == "below" else widths[-1]
                    ax.loglog([xi], [edge], "v" if st == "below" else "^", color="C3", mfc="none",
                              label=f"censored (m* {'≤' if st == 'below' else '>'} {edge})")
            xs = np.geomspace(x.min(), x.max(), 50)
            ax.loglog(xs, cr["constant"] * xs, "--", color="gray", label=f"bound's shape, slope 1 (C = {cr['constant']:.3g})")
            if cr["fit"]:
                f = cr["fit"]
                ax.loglog(xs, f["prefactor"] * xs ** f["exponent"], "-", color="C0",
                          label=f"fit: slope {f['exponent']:.3f} [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]")
            for xi, mi, n in zip(x[ok], ms[ok], np.asarray(ns)[ok]):
                ax.annotate(f"n={n}", (xi, mi), textcoords="offset points", xytext=(5, -10), fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
            legend(ax)
        ax.set_xlabel("n² log(n/δ) / ε²")
        ax.set_ylabel("crossing width m*")
        ax.set_title("width needed for P̂ ≥ 1 − δ, against the bound")
        data_ticks(axes[0, 0], widths)
        data_ticks(axes[0, 1], ns)
        data_ticks(axes[1, 0], widths)
        fig.suptitle(f"Concentration of the NTK at initialisation: {setting_title(mc)}, d = {self.config['data']['d']}")
        return [save(fig, Path(run_dir) / "concentration.png")]

    def report(self, results: dict[str, Any]) -> str:
        ns, widths = results["ns"], results["widths"]
        mc = self.config["model"]
        prob = results["probability"]
        delta = prob["delta"]
        lines = ["# Concentration of the NTK at initialisation", "",
                 f"σ = {mc['activation']}, train = {mc['train']}, output_init = {mc['output_init']}, inputs uniform on "
                 f"S^{self.config['data']['d'] - 1} (nested in n), {results['seeds']} seeds per (m, n).", "",
                 "**Claim** (docs/theory.md §4, claim 2; Du et al. 2019): if m = Ω(ε⁻² n² log(n/δ)) then "
                 "P(‖H(0) − H*‖ ≤ ε) ≥ 1 − δ. Equivalently, at confidence 1 − δ the error is at most of order "
                 "n·√(log(n/δ)/m): it falls like m^(−1/2) and grows at most like n√log(n/δ). H(0) is a mean of m "
                 "i.i.d. matrices with mean H*, so the root-mean-square Frobenius error √E‖H(0) − H*‖²_F equals "
                 "c/√m exactly, at every m; the mean spectral norm E‖H(0) − H*‖₂ (and the mean Frobenius norm) "
                 "follow m^(−1/2) only asymptotically, once m is large against n (for small m the spectral norm of "
                 "the fluctuation carries extra terms). The growth in n is an upper bound.", "",
                 intervals_note(self, [results["fit_vs_m"], results["fit_vs_n"]]), ""]
        act_note = self._assumption_note()
        lines += [act_note, ""]
        # against m
        lines += ["## Error against width m", "", "| norm | " + " | ".join(f"n = {n}" for n in ns) + " |",
                  "|---|" + "---|" * len(ns)]
        for k, sym in ABSOLUTE.items():
            lines.append(f"| {sym} | " + " | ".join(_fmt_fit(results["fits_vs_m"][k][str(n)], M_SLOPE) for n in ns) + " |")
        lines.append("")
        fit = results["fit_vs_m"]
        if fit:
            lines += [f"**Measured** {measured(fit)} for ‖H(0) − H*‖₂ against m at n = {ns[-1]} (the asymptotic rate "
                      "of the mean spectral norm is −1/2). **Verdict**: "
                      + judge(fit, M_SLOPE, bound=False, quick=is_quick(self))["text"] + ".", ""]
            misses = [(k, n) for k in ABSOLUTE for n in ns
                      if results["fits_vs_m"][k][str(n)] and not
                      results["fits_vs_m"][k][str(n)]["ci"][0] <= M_SLOPE <= results["fits_vs_m"][k][str(n)]["ci"][1]]
            total = sum(1 for k in ABSOLUTE for n in ns if results["fits_vs_m"][k][str(n)])
            lines += [f"Of the {total} fits in the table, {total - len(misses)} have an interval containing −1/2"
                      + (": " + ", ".join(f"{METRICS[k]} at n = {n}" for k, n in misses) + " do not." if misses else ".")
                      + " (‖H*‖ does not depend on m, so the relative norms have the same slopes; results.json has "
                      "them.) At a 95% level about one interval in twenty misses by chance.", ""]
        # against n
        if len(ns) >= 2:
            lines += ["## Error against the number of inputs n", "",
                      f"The bound's shape n√log(n/δ) (δ = {delta:g}) has effective exponent "
                      f"{results['theory_slope_n']['spectral']:.3f} over n = {ns[0]}..{ns[-1]}; for the relative norms "
                      "the bound's shape divided by the measured ‖H*‖ (which itself grows with n).", "",
                      "| norm | bound's exponent | " + " | ".join(f"m = {m}" for m in widths) + " |",
                      "|---|---|" + "---|" * len(widths)]
            for k, sym in METRICS.items():
                tn = results["theory_slope_n"].get(k)
                lines.append(f"| {sym} | {tn:.3f} | " if tn is not None else f"| {sym} | — | ")
                lines[-1] += " | ".join(_fmt_fit(results["fits_vs_n"][k][str(m)], tn, True) for m in widths) + " |"
            lines.append("")
            fit = results["fit_vs_n"]
            tn = results["theory_slope_n"]["spectral"]
            if fit:
                lines += [f"**Measured** {measured(fit)} for ‖H(0) − H*‖₂ against n at m = {widths[-1]}, beside the "
                          f"bound's {tn:.3f}. **Verdict**: " + growth_verdict(fit, tn, "the error", is_quick(self)) + ".", ""]
                hs = results["hstar"]
                lam = ", ".join(f"n={n}: {hs[str(n)]['spectral']:.3g}" for n in ns if str(n) in hs)
                lines += [f"‖H*‖₂ grows with n too ({lam}): its top eigenvector is the near-constant direction, "
                          "where the fluctuation of H(0) is largest, so the relative error changes much less with n "
                          "than the absolute one.", ""]
        # probability
        cr = prob.get("crossing")
        if prob.get("P") is not None:
            lines += ["## Probability of the event ‖H(0) − H*‖ ≤ ε", "",
                      f"ε = {prob['epsilon']:.4g} in the norm {METRICS[prob['metric']]} ({prob['epsilon_source']}); "
                      f"δ = {delta:g}; P̂ over {prob['seeds_used']} seeds"
                      + ("" if prob["epsilon_source"] == "config" else
                         " (so, by construction, P̂ reaches 1 − δ there: m* at that n is at most that width)")
                      + ".", "",
                      "| n | " + " | ".join(f"m={m}" for m in widths) + " | m* | C_n = m*/(n²log(n/δ)/ε²) |",
                      "|---|" + "---|" * (len(widths) + 2)]
            for i, n in enumerate(ns):
                ms, st, cn = cr["m_star"][i], cr["status"][i], cr["constant_per_n"][i]
                mtxt = f"{ms:.4g}" if ms is not None else ("≤ " + str(widths[0]) if st == "below" else "> " + str(widths[-1]))
                ctxt = f"{cn:.3g}" if cn is not None else "—"
                lines.append(f"| {n} | " + " | ".join(f"{v:.2f}" for v in prob["P"][i]) + f" | {mtxt} | {ctxt} |")
            lines.append("")
            if cr["fit"]:
                f = cr["fit"]
                v = judge(f, CROSSING_SLOPE, bound=True, quick=is_quick(self))["text"]
                if f["ci"][1] < CROSSING_SLOPE:
                    v += " (the width needed grows more slowly than n² log(n/δ): the bound is conservative in n)"
                lines += [f"**Measured** {measured(f)} for log m* against log(n² log(n/δ)/ε²) ({f['method']}; "
                          f"C ≈ {cr['constant']:.3g}); the bound's shape has slope 1. **Verdict**: {v}.", ""]
            else:
                lines += ["Too few crossings inside the sweep to fit the crossing width against the bound "
                          f"(status per n: {', '.join(f'{n}: {s}' for n, s in zip(ns, cr['status']))}); widen the "
                          "widths or set epsilon.", ""]
        lines += ["```", self.table(results), "```", "", "![concentration](concentration.png)"]
        return "\n".join(lines) + "\n"

    def _assumption_note(self) -> str:
        mc = self.config["model"]
        if mc["activation"] == "relu" and mc["train"] == "hidden" and mc["output_init"] == "sign":
            return ("This is Du et al.'s setting exactly (σ = relu, a = ±1 fixed, unit inputs): every entry of each "
                    "neuron's contribution is bounded by 1, and Hoeffding's inequality gives the bound as stated.")
        return ("Du et al.'s bound is proved for σ = relu, a = ±1 fixed and only W trained, where each neuron's "
                f"contribution is bounded. Here (σ = {mc['activation']}, train = {mc['train']}, a ~ "
                f"{mc['output_init']}) the entries are sub-exponential instead: the same m^(−1/2) rate follows with "
                "different logarithmic factors, so the bound's shape is compared, not its constant.")
