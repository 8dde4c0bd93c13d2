"""Report of ``drift``: the table, the six-panel figure and report.md, from the config and the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import ExperimentPart, format_table
from ..verdicts import intervals_note, is_quick, judge, measured, summary_header
from .analyse import FITS, N_BOUND_SLOPES, drift_setting, index_runs, time_index


def verdict(series: dict[str, Any], setting: dict[str, Any], quick: bool = False) -> str:
    """Plain-language verdict of one fit next to the bound of the run's setting (upper bounds: steeper is consistent).

    Every sentence comes from :func:`verdicts.judge` (so from :func:`fitting.verdict`); against N the
    growth is compared with each of the setting's N exponents; where no theorem covers the setting
    the verdict is "reported", with the smooth case's exponents beside it for comparison.
    """
    fit = series.get("fit")
    if not fit:
        return f"no fit ({series.get('error')})"
    if series["axis"] == "N" and series["metric"] == "kernel_drift":
        if setting["kind"] == "none":
            return judge(fit, None)["text"] + " (no theorem covers this setting; " + "; ".join(
                _compare(fit, p) for p in N_BOUND_SLOPES) + ")"
        return "; ".join(f"against N^{p:g}: " + growth_verdict(fit, p, quick) for p in setting["n_bounds"])
    if series["axis"] == "N" and series["metric"] == "kernel_drift_rel":
        return judge(fit, None)["text"] + (f" (‖H(0)‖₂ ∝ N, so compare with the absolute drift's bound minus 1: "
                                           f"{N_BOUND_SLOPES[0] - 1:g} to {N_BOUND_SLOPES[1] - 1:g})")
    theory = series["theory_slope"]
    if setting["kind"] == "none" and theory is None:
        smooth = dict((name, th) for name, _, _, th, _ in FITS).get(_name(series))
        extra = f" (no theorem covers this setting; {_compare(fit, smooth)})" if smooth is not None else ""
        return judge(fit, None)["text"] + extra
    return judge(fit, theory, bound=True, quick=quick)["text"]


def _name(series: dict[str, Any]) -> str:
    """The FITS name of a series (its metric and axis)."""
    return f"{series['metric']}_vs_{series['axis'].lower()}"


def bound_words(series: dict[str, Any], setting: dict[str, Any]) -> str:
    """What the run's setting bounds this exponent by, in words (for the terminal summary)."""
    if series["axis"] == "N" and series["metric"] == "kernel_drift" and setting["kind"] == "smooth":
        return "grows at most like N² or N³, depending on the derivation"
    if series["axis"] == "N" and series["metric"] == "kernel_drift" and setting["kind"] == "du":
        return "grows at most like N³/λ₀ (Du et al.)"
    if series["theory_slope"] is None:
        return "no claim"
    return f"at most {series['theory_slope']:g}"



def network(mc: dict[str, Any]) -> str:
    """The ``[model]`` table in words: the two-layer net's σ, training mode and a, or the network's kind and factory."""
    if mc.get("kind", "two_layer") == "two_layer":
        return f"Two-layer network, σ = {mc['activation']}, train = {mc['train']}, a initialised {mc['output_init']}"
    return f"[model] kind = {mc['kind']!r}" + (f" ({mc['factory']}, width argument {mc.get('width_arg')!r})"
                                                if mc.get("factory") else "")


class DriftReport(ExperimentPart):
    """The Experiment's ``table``, ``figures`` and ``report`` for ``drift`` (no backend needed)."""

    def table(self, results: dict[str, Any]) -> str:
        res, runs = results["resolved"], results["runs"]
        idx = index_runs(runs)
        times = results["times"]
        tw = time_index(times, res["t_w"])
        rows = []
        for m in results["widths"]:
            reps = idx.get((m, res["n0"]), {})
            if not reps:
                continue
            v = lambda k: float(np.mean([r[k][tw] if k in r else np.nan for r in reps.values()]))  # noqa: E731
            rows.append([m, v("kernel_drift"), v("kernel_drift_rel"), v("param_drift"), v("param_drift_neuron_max"),
                         v("loss"), len(reps)])
        text = (f"{network(self.config['model'])}: drift at t={res['t_w']:g}, N={res['n0']}\n")
        text += format_table(["width m", "‖ΔH‖₂", "‖ΔH‖₂/‖H(0)‖₂", "‖Δθ‖", "max_r ‖Δθ_r‖", "loss", "seeds"], rows)
        tn = time_index(times, res["t_n"])
        rows_n = []
        for n in results["ns"]:
            reps = idx.get((res["m_n"], n), {})
            if reps:
                rows_n.append([n, float(np.mean([r["kernel_drift"][tn] for r in reps.values()])),
                               float(np.mean([r["kernel_drift_rel"][tn] for r in reps.values()])), len(reps)])
        if len(rows_n) > 1:
            text += f"\n\ndrift against N at m={res['m_n']}, t={res['t_n']:g}\n"
            text += format_table(["N", "‖ΔH‖₂", "‖ΔH‖₂/‖H(0)‖₂", "seeds"], rows_n)
        setting = drift_setting(self.config["model"])
        fits = list(results["fits"].values())
        text += "\n\n" + summary_header(self, [s["fit"] for s in fits])
        for s in fits:
            label = f"{s['symbol']} vs {s['axis']} (bound: {bound_words(s, setting)})"
            text += (f"\n  {label}: slope {s['fit']['exponent']:.3f}; {verdict(s, setting, is_quick(self))}"
                     if s["fit"] else f"\n  {label}: no fit ({s['error']})")
        return text

    def figures(self, results: dict[str, Any], run_dir: Path) -> list[Path]:
        from ...plotting import legend, loglog_with_fit, pyplot, save, setting_title

        plt = pyplot()
        fits, res = results["fits"], results["resolved"]
        setting = drift_setting(self.config["model"])
        fig, axes = plt.subplots(2, 3, figsize=(16, 10))
        label_x = {"m": "width m", "t": "time t", "N": "number of inputs N"}

        def panel(ax: Any, names: list[str], title: str, ylabel: str) -> None:
            drawn = False
            for j, name in enumerate(names):
                s = fits.get(name)
                if not s or s["Y"] is None or len(set(s["x"])) < 2:
                    continue
                theory = s["theory_slope"] if not drawn else None
                n_bounds = setting["n_bounds"] or N_BOUND_SLOPES
                if s["axis"] == "N" and not drawn:
                    theory = n_bounds[-1]
                loglog_with_fit(ax, s["x"], s["Y"], s["fit"], theory_slope=theory, label=s["symbol"], color=f"C{j}",
                                integer_x=s["axis"] != "t")
                if s["axis"] == "N" and not drawn and len(n_bounds) > 1:
                    x = np.asarray(s["x"], float)
                    y0 = float(np.mean(s["Y"][0]))
                    xs = np.geomspace(x.min(), x.max(), 50)
                    ax.plot(xs, y0 * (xs / x[0]) ** n_bounds[0], ":", color="gray",
                            label=f"theory: slope {n_bounds[0]:g}")
                drawn = True
                ax.set_xlabel(label_x[s["axis"]])
            if not drawn:
                ax.text(0.5, 0.5, "not measured\n(needs at least two values)", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_xlabel(label_x[fits[names[0]]["axis"]] if names[0] in fits else "")
            ax.set_ylabel(ylabel)
            ax.set_title(title, fontsize=10)
            legend(ax)

        panel(axes[0, 0], ["kernel_drift_vs_m", "kernel_drift_fro_vs_m"],
              f"kernel drift vs m (t = {res['t_w']:g}, N = {res['n0']})", "‖H(t) − H(0)‖ (spectral ₂, Frobenius F)")
        panel(axes[0, 1], ["kernel_drift_vs_t"], f"kernel drift vs t (m = {res['m_t']}, N = {res['n0']})",
              "‖H(t) − H(0)‖₂")
        panel(axes[0, 2], ["kernel_drift_vs_n", "kernel_drift_rel_vs_n"],
              f"kernel drift vs N (m = {res['m_n']}, t = {res['t_n']:g})", "‖H(t) − H(0)‖₂ and ‖H(t) − H(0)‖₂ / ‖H(0)‖₂")
        panel(axes[1, 0], ["param_drift_vs_m"], f"parameter drift vs m (t = {res['t_w']:g}, N = {res['n0']})",
              "‖θ(t) − θ(0)‖₂")
        panel(axes[1, 1], ["param_drift_neuron_max_vs_m"], f"largest per-neuron drift vs m (t = {res['t_w']:g})",
              "max_r ‖θ_r(t) − θ_r(0)‖₂")
        self._freezing_panel(axes[1, 2], results)
        bound = {"smooth": "bound: docs/theory.md §4.1", "du": "bound: Du et al. 2019, Lemmas 3.2–3.3",
                 "none": "no theorem covers this setting"}[setting["kind"]]
        fig.suptitle(f"Lazy training: {setting_title(self.config['model'])}  ({bound})", fontsize=12)
        return [save(fig, Path(run_dir) / "drift.png")]

    def _freezing_panel(self, ax: Any, results: dict[str, Any]) -> None:
        """‖H(t) − H(0)‖₂/‖H(0)‖₂ against t, one curve per width (mean over seeds): the kernel freezing."""
        import matplotlib

        from ...plotting import legend

        res = results["resolved"]
        idx = index_runs(results["runs"])
        widths = [m for m in results["widths"] if (m, res["n0"]) in idx]
        cmap = matplotlib.colormaps["viridis"]
        for i, m in enumerate(widths):
            reps = idx[(m, res["n0"])].values()
            mean = np.mean([r["kernel_drift_rel"] for r in reps], axis=0)
            ax.plot(results["times"], np.where(mean > 0, mean, np.nan), "o-", ms=3, color=cmap(i / max(1, len(widths) - 1)),
                    label=f"m = {m}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("time t")
        ax.set_ylabel("‖H(t) − H(0)‖₂ / ‖H(0)‖₂")
        ax.set_title(f"the kernel freezes as m grows (N = {res['n0']})", fontsize=10)
        legend(ax)

    def report(self, results: dict[str, Any]) -> str:
        fits = results["fits"]
        setting = drift_setting(self.config["model"])
        quick = is_quick(self)
        ic = self.config["integrator"]
        hs = sorted({round(r["h"], 12) for r in results["runs"] if r.get("h") is not None})
        step = (f"{ic['kind']}, h = {hs[0]:.4g}" + (f" … {hs[-1]:.4g}" if len(hs) > 1 else "")
                if hs else f"{ic['kind']} (rtol {ic['rtol']:g}, atol {ic['atol']:g})")
        ratio = [r["h"] / r["h_stable"] for r in results["runs"] if r.get("h") and r.get("h_stable")]
        dc = self.config["data"]
        lines = [
            "# Lazy training: kernel and parameter drift along gradient flow", "",
            f"{network(self.config['model'])}; {dc['kind']} labels on unit-sphere inputs in d = {dc['d']}; mean MSE; "
            f"integrator {step}" + (f" (at most {max(ratio):.2f} × the stability bound βN/λ_max(H(0)))" if ratio else "")
            + f"; {self.config['experiment']['seeds']} seeds; times {results['times']}.", "",
            setting["note"], "",
            self._claim(setting), "",
            intervals_note(self, [s["fit"] for s in fits.values()]), "",
        ]
        sections = [
            ("Kernel drift against width", ["kernel_drift_vs_m", "kernel_drift_fro_vs_m", "kernel_drift_rel_vs_m"]),
            ("Parameter drift against width", ["param_drift_vs_m", "param_drift_neuron_max_vs_m"]),
            ("Drift against time", ["kernel_drift_vs_t", "param_drift_vs_t"]),
            ("Kernel drift against N", ["kernel_drift_vs_n", "kernel_drift_rel_vs_n"]),
        ]
        for title, names in sections:
            lines += [f"## {title}", ""]
            for name in names:
                s = fits[name]
                fixed = ", ".join(f"{k} = {v:g}" for k, v in s["fixed"].items())
                head = f"- **{s['symbol']} vs {s['axis']}** ({fixed}). Bound: {s['claim']}."
                if s["fit"]:
                    f = s["fit"]
                    head += f" **Measured** {measured(f)}. **Verdict**: {verdict(s, setting, quick)}."
                else:
                    head += f" Not measured: {s['error']}."
                lines.append(head)
            lines.append("")
            if title == "Kernel drift against width" and fits["kernel_drift_vs_m"]["fit"]:
                p = fits["kernel_drift_vs_m"]["fit"]["exponent"]
                if p < -0.5:
                    lines += [f"The measured decay (slope {p:.2f}) is steeper than the bound's m^(−1/2): the bound "
                              "is not tight here, which it does not claim to be. A likely reason: with symmetric "
                              "output weights (E[a³] = 0) the O(1/√m) contributions of the single neurons to dH/dt "
                              "have mean zero and partly cancel, leaving a drift closer to O(1/m).", ""]
            if title == "Parameter drift against width" and fits["param_drift_neuron_max_vs_m"]["fit"]:
                x = fits["param_drift_neuron_max_vs_m"]["x"]
                c = max_log_correction(x)
                lines += [f"If each neuron moves about c/√m with a Gaussian-like spread over neurons, the largest of "
                          f"the m moves about c√(2 log m)/√m: over widths {min(x)}…{max(x)} that factor alone turns "
                          f"the slope −1/2 into about {-0.5 + c:.3f}. The claim is about a single weight; the "
                          "maximum over all m of them is the strict reading.", ""]
            if title == "Drift against time" and setting["kind"] == "du":
                lines += ["Du et al.'s bound holds at every t with the same O(N³/(√m λ₀ δ)): the drift may grow with t "
                          "only up to it, so no slope in t is claimed; the measured one is reported.", ""]
            elif title == "Drift against time":
                lines += ["The bound grows linearly in t for as long as the flow runs, while the kernel moves only "
                          "while the residual is non-zero (dθ/dt = −∇θL): the drift levels off as the residual decays, "
                          "so over a long time range a slope below 1 is expected. The slope is fitted over all the "
                          "record times.", ""]
            if title == "Kernel drift against N":
                lines += ["How the bound depends on N depends on the derivation and on the loss convention (the "
                          "papers' sum loss against this mean loss rescales time by N): derivations give N² to N³. "
                          "The measured exponent is reported beside both, not forced toward either.", ""]
        by_time = results.get("width_exponent_by_time") or []
        if by_time:
            lines += ["## Width exponent of ‖H(t) − H(0)‖₂ at each time", "",
                      "| t | slope in m | 95% CI |", "|---|---|---|"]
            lines += [f"| {b['t']:g} | {b['exponent']:.3f} | [{b['ci'][0]:.3f}, {b['ci'][1]:.3f}] |" for b in by_time]
            lines.append("")
        failed = results.get("failed_tasks") or []
        if failed:
            lines += [f"**{len(failed)} task(s) failed** and are left out: "
                      + "; ".join(f"{f['key']}: {f['error']}" for f in failed[:5]), ""]
        lines += ["```", self.table(results), "```", "", "![drift](drift.png)"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _claim(setting: dict[str, Any]) -> str:
        """The claim paragraph: the theorem that bounds this setting and its assumptions (or that none does)."""
        if setting["kind"] == "none":
            return ("**Claim**: none. No theorem bounds the drift in this setting (docs/theory.md §4.1); the exponents "
                    "are measured and reported, with where their intervals lie relative to the smooth case's bounds.")
        return (f"**Claim** ({setting['theorem']}; assumptions: {setting['assumptions']}): at fixed t and N the kernel "
                "drift falls like m^(−1/2) or faster, ‖θ(t) − θ(0)‖ = O(1) and each neuron moves O(1/√m). These are "
                "upper bounds with loose constants: a measured decay steeper than the bound's is consistent with it, "
                "and the measured exponents are reported as measured.")



def growth_verdict(fit: dict[str, Any], bound: float, quick: bool = False) -> str:
    """Verdict on a measured growth exponent next to an upper bound's (a smaller exponent is consistent):
    :func:`fitting.verdict` with ``bound=True``, worded by :func:`verdicts.judge`."""
    return judge(fit, bound, bound=True, quick=quick)["text"]


def _compare(fit: dict[str, Any], slope: float) -> str:
    """Where the interval lies relative to a slope, with no verdict (for activations no bound covers)."""
    lo, hi = fit["ci"]
    where = "lies below" if hi < slope else ("lies above" if lo > slope else "contains")
    return f"the interval [{lo:.3f}, {hi:.3f}] {where} {slope:g}"


def max_log_correction(widths: list[int]) -> float:
    """The log-log slope in m of √(2 log m) over ``widths``: how much the max over m neurons flattens −1/2."""
    lm = np.log(np.asarray(widths, dtype=float))
    return float(np.polyfit(lm, 0.5 * np.log(2 * lm), 1)[0])

