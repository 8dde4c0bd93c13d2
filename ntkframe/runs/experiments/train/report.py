"""Report of ``train``: the table, the loss / kernel / parameter figures and report.md, read from the run folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ....flow.simulate import Trajectory
from ..base import ExperimentPart, format_table


class TrainReport(ExperimentPart):
    """The Experiment's ``table``, ``figures`` and ``report`` for ``train`` (no backend needed)."""

    def table(self, results: dict[str, Any]) -> str:
        traj = self._load(results)
        if traj is None:
            return "(no trajectory)"
        a = traj.arrays
        R = len(a["times"])
        pick = sorted(set(np.linspace(0, R - 1, min(R, 10)).round().astype(int).tolist()))
        cols = [("times", "t"), ("loss", "loss"), ("kernel_drift_rel", "‖ΔH‖₂/‖H(0)‖₂"), ("param_drift", "‖Δθ‖"),
                ("lambda_min", "λ_min(H)"), ("linearised_gap", "‖f − f_lin‖")]
        cols = [(k, h) for k, h in cols if k in a]
        rows = [[float(a[k][i]) for k, _ in cols] for i in pick]
        s = results.get("summary", {})
        text = format_table([h for _, h in cols], rows)
        integ = s.get("integrator", {})
        if integ.get("h"):
            bound = f" (stability bound βN/λ_max(H(0)) = {integ['h_stable']:.4g})" if integ.get("h_stable") else ""
            text += (f"\nintegrator {integ['kind']}, h = {integ['h']:.4g}{bound}; "
                     f"{results.get('gradient_evaluations')} gradient evaluations")
        return text

    def _load(self, results: dict[str, Any], run_dir: Path | None = None) -> Trajectory | None:
        run_dir = run_dir or getattr(self, "_run_dir", None)
        if run_dir is None:
            return None
        try:
            return Trajectory.load(run_dir)
        except (FileNotFoundError, ValueError):
            return None

    def figures(self, results: dict[str, Any], run_dir: Path) -> list[Path]:
        from ...plotting import legend, pyplot, save

        self._run_dir = Path(run_dir)
        traj = self._load(results, Path(run_dir))
        if traj is None:
            return []
        plt = pyplot()
        a = traj.arrays
        t = a["times"]
        logx = t[0] > 0 and t[-1] / t[0] >= 100
        title = self._title()
        paths = []

        def style(ax: Any, ylabel: str, logy: bool = True) -> None:
            if logx:
                ax.set_xscale("log")
            if logy:
                ax.set_yscale("log")
            ax.set_xlabel("time t")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)

        lin = "outputs_lin" in a
        fig, axes = plt.subplots(1, 2 if lin else 1, figsize=(11 if lin else 5.5, 4), squeeze=False)
        ax = axes[0, 0]
        ax.plot(t, a["loss"], "o-", ms=3, label="network L(θ(t))")
        if lin:
            y = np.load(Path(run_dir) / "data.npz")["y"] if (Path(run_dir) / "data.npz").exists() else None
            if y is not None and self.config["loss"]["kind"] == "mse":
                r = a["outputs_lin"] - y.reshape((1,) + a["outputs_lin"].shape[1:])
                ax.plot(t, 0.5 * (r * r).reshape(len(t), -1).sum(1) / r.shape[1], "--", label="linearised model")
            axes[0, 1].plot(t, np.maximum(a["linearised_gap"], 1e-300), "o-", ms=3, label="train")
            if "linearised_gap_test" in a:
                axes[0, 1].plot(t, np.maximum(a["linearised_gap_test"], 1e-300), "s-", ms=3, label="test")
            style(axes[0, 1], "‖f(X, t) − f_lin(X, t)‖₂")
            legend(axes[0, 1])
            axes[0, 1].set_title("gap to the linearised model", fontsize=10)
        style(ax, "training loss")
        legend(ax)
        ax.set_title(title, fontsize=10)
        paths.append(save(fig, Path(run_dir) / "loss.png"))

        if "kernel_drift" in a or "lambda_min" in a:
            fig, axes = plt.subplots(1, 2, figsize=(11, 4))
            if "kernel_drift" in a:
                axes[0].plot(t, np.maximum(a["kernel_drift_rel"], 1e-300), "o-", ms=3, label="‖ΔH‖₂ / ‖H(0)‖₂")
                axes[0].plot(t, np.maximum(a["kernel_drift_fro"], 1e-300) / max(a["kernel_drift_fro"].max(), 1e-300)
                             * a["kernel_drift_rel"].max(), ":", label="‖ΔH‖_F (rescaled to the same maximum)")
                style(axes[0], "kernel drift")
                legend(axes[0])
                axes[0].set_title(f"‖H(t) − H(0)‖: {title}", fontsize=10)
            if "lambda_min" in a:
                axes[1].plot(t, a["lambda_min"], "o-", ms=3, label="λ_min(H(t))")
                axes[1].plot(t, a["lambda_max"], "s-", ms=3, label="λ_max(H(t))")
                style(axes[1], "eigenvalues of H(t)", logy=bool(np.min(a["lambda_min"]) > 0))
                legend(axes[1])
            save_path = save(fig, Path(run_dir) / "kernel_drift.png")
            paths.append(save_path)

        if "param_drift" in a:
            fig, ax = plt.subplots(figsize=(5.5, 4))
            ax.plot(t, np.maximum(a["param_drift"], 1e-300), "o-", ms=3, label="‖θ(t) − θ(0)‖")
            if "param_drift_neuron_max" in a:
                ax.plot(t, np.maximum(a["param_drift_neuron_max"], 1e-300), "s-", ms=3,
                        label="max_r ‖θ_r(t) − θ_r(0)‖")
            style(ax, "parameter drift")
            legend(ax)
            ax.set_title(title, fontsize=10)
            paths.append(save(fig, Path(run_dir) / "param_drift.png"))
        return paths

    def _title(self) -> str:
        mc = self.config["model"]
        named = {"two_layer": f"two-layer m={mc.get('m')}", "mlp": f"mlp {mc.get('depth')}×{mc.get('m')}"}
        net = named.get(mc["kind"], mc["kind"] + (f" m={mc['m']}" if mc.get("m") else ""))
        act = f"{mc['activation']}, " if mc.get("activation") else ""
        return f"{net}, {act}{self.config['integrator']['kind']}"

    def report(self, results: dict[str, Any]) -> str:
        s = results.get("summary", {})
        dc = self.config["data"]
        lines = ["# Gradient-flow run", "",
                 f"{self._title()}; {dc['kind']} data, N = {dc['n']}"
                 + (f" (+ {dc['n_test']} test)" if dc["n_test"] else "")
                 + f"; loss {self.config['loss']['kind']} (mean over N); "
                 f"{(results.get('arrays', {}).get('times') or ['?'])[0]} record times.", "",
                 f"Loss {_g(s.get('loss0'))} → {_g(s.get('loss_final'))} at t = {_g(s.get('t_final'))}."]
        if "kernel_drift_rel_final" in s:
            lines.append(f"Kernel drift ‖H(t) − H(0)‖₂/‖H(0)‖₂ at the end: {_g(s['kernel_drift_rel_final'])}; "
                         f"parameter drift ‖θ(t) − θ(0)‖: {_g(s.get('param_drift_final'))}.")
        if "linearised_gap_final" in s:
            lines.append(f"Gap to the linearised model ‖f − f_lin‖₂ at the end: {_g(s['linearised_gap_final'])}.")
        if s.get("test_loss_final") is not None:
            lines.append(f"Test loss at the end: {_g(s['test_loss_final'])}.")
        lines += ["", "The trajectory is in trajectory.npz (`nf.Trajectory.load(RUN_DIR)` reads it).", "",
                  "```", self.table(results), "```", "",
                  "![loss](loss.png)", "", "![kernel drift](kernel_drift.png)", "", "![parameter drift](param_drift.png)"]
        return "\n".join(lines) + "\n"


def _g(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4g}"
