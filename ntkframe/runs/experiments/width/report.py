"""Report of ``width``: the table, the figure and report.md, from the config and the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import ExperimentPart, format_table
from ..verdicts import intervals_note, is_quick, judge, measured, summary_header, terminal_line
from .analyse import THEORY_SLOPE


class WidthReport(ExperimentPart):
    """The Experiment's ``table``, ``figures`` and ``report`` for ``width`` (no backend needed)."""


    def table(self, results: dict[str, Any]) -> str:
        rows = []
        for m in results["widths"]:
            d = [p["rel_fro"] for p in results["points"] if p["width"] == m]
            s = [p["rel_spectral"] for p in results["points"] if p["width"] == m]
            rows.append([m, float(np.mean(d)), float(np.std(d)), float(np.mean(s))])
        text = format_table(["width m", "‖H_m−H_ref‖_F/‖H_ref‖_F", "std over seeds", "spectral (rel)"], rows)
        fits = [results.get("fit_rel_fro"), results.get("fit_rel_fro_effective")]
        text += "\n" + summary_header(self, fits)
        for fit, what in zip(fits, ("against m", "against m_eff = (1/m + 1/M)⁻¹")):
            if fit:
                text += "\n" + terminal_line(f"distance {what} (theory: -0.5)", fit, THEORY_SLOPE, bound=False,
                                             quick=is_quick(self))
        return text

    def figures(self, results: dict[str, Any], run_dir: Path) -> list[Path]:
        from ...plotting import legend, loglog_with_fit, pyplot, save, setting_title

        plt = pyplot()
        widths = results["widths"]
        Y = np.array([[p["rel_fro"] for p in results["points"] if p["width"] == m] for m in widths])
        fig, ax = plt.subplots(figsize=(5.5, 4))
        loglog_with_fit(ax, widths, Y, results.get("fit_rel_fro"), theory_slope=results["theory_slope"],
                        label="distance")
        ax.set_xlabel("width m")
        ax.set_ylabel("‖H_m − H_ref‖_F / ‖H_ref‖_F")
        ref = self.config["experiment"]["reference_width"]
        ax.set_title(f"NTK at init vs a width-{ref} reference\n{setting_title(self.config['model'])}", fontsize=9)
        legend(ax)
        return [save(fig, Path(run_dir) / "width.png")]

    def report(self, results: dict[str, Any]) -> str:
        fit = results.get("fit_rel_fro")
        lines = ["# Width convergence of the empirical NTK", "",
                 "**Claim** (docs/theory.md §3–4): at initialisation the empirical NTK fluctuates around H* by "
                 "O(m^(−1/2)), so its distance to a much wider network's kernel falls with slope −1/2 in "
                 "log-log, until it reaches the reference's own fluctuation.", ""]
        eff = results.get("fit_rel_fro_effective")
        if fit:
            lines += [intervals_note(self, [fit, eff]), "",
                      f"**Measured** {measured(fit)} against m. **Verdict**: "
                      + judge(fit, THEORY_SLOPE, bound=False, quick=is_quick(self))["text"] + ".",
                      "", "The reference network fluctuates too, so the raw slope flattens as m approaches M. "
                      "Both kernels fluctuate independently around H*, so E‖H_m − H_ref‖² ∝ 1/m + 1/M: against "
                      "the harmonic width m_eff = (1/m + 1/M)⁻¹ the floor disappears.", ""]
        if eff:
            lines += [f"**Measured** {measured(eff)} against m_eff. **Verdict**: "
                      + judge(eff, THEORY_SLOPE, bound=False, quick=is_quick(self))["text"] + ".", ""]
        lines += ["```", self.table(results), "```", "", "![width](width.png)"]
        return "\n".join(lines) + "\n"
