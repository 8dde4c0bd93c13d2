"""Measurement of ``drift``: the tasks, and one gradient-flow run per (m, N, seed) recorded at every time."""

from __future__ import annotations

import time
from typing import Any

from ....flow.losses import MSE
from ....flow.simulate import simulate
from ...sweep import Task, task_seed
from ..base import ExperimentPart, model_from_config
from ..flow import build_integrator, kernel_function, make_data

#: the quantities a task records at every time, with their symbols
METRICS = {
    "kernel_drift": "‖H(t) − H(0)‖₂",
    "kernel_drift_fro": "‖H(t) − H(0)‖_F",
    "kernel_drift_rel": "‖H(t) − H(0)‖₂ / ‖H(0)‖₂",
    "param_drift": "‖θ(t) − θ(0)‖",
    "param_drift_neuron_max": "max_r ‖θ_r(t) − θ_r(0)‖",
}
#: (fit name, metric, axis, the bound's slope or None, what the bound says)


def close(a: float, b: float) -> bool:
    """a = b up to rounding (record times come from TOML and from the integrator)."""
    return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))


def fit_points(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The fit points with defaults filled in: n0 (N of the width/time fits), m_t, m_n, t_w, t_n."""
    ec = config["experiment"]
    t_w = ec["t_for_width_fit"] if ec["t_for_width_fit"] is not None else ec["times"][-1]
    return {"n0": ec["n_for_width_fit"] or min(ec["ns"]),
            "m_t": ec["m_for_time_fit"] or max(ec["widths"]),
            "m_n": ec["m_for_n_fit"] or max(ec["widths"]),
            "t_w": t_w, "t_n": ec["t_for_n_fit"] if ec["t_for_n_fit"] is not None else t_w}


def pairs(config: dict[str, dict[str, Any]]) -> list[tuple[int, int]]:
    """The (m, N) pairs run: widths at n0 and Ns at m_n, or every pair with ``full_grid``."""
    ec, r = config["experiment"], fit_points(config)
    if ec["full_grid"]:
        return sorted((m, n) for m in ec["widths"] for n in ec["ns"])
    return sorted({(m, r["n0"]) for m in ec["widths"]} | {(r["m_n"], n) for n in ec["ns"]})


class DriftMeasure(ExperimentPart):
    """The tasks of ``drift`` and what one task measures (the Experiment's ``tasks`` and ``run_task``)."""

    def tasks(self) -> list[Task]:
        seeds = self.config["experiment"]["seeds"]
        return [Task(f"m={m}/N={n}/seed={s}", {"m": m, "n": n, "replicate": s})
                for m, n in pairs(self.config) for s in range(seeds)]

    def run_task(self, task: Task) -> dict[str, Any]:
        """One gradient-flow run at (m, N, replicate), recorded at every configured time."""
        ec, dc = self.config["experiment"], self.config["data"]
        m, n, rep = task.params["m"], task.params["n"], task.params["replicate"]
        be = self.backend
        data_seed = dc["seed"] + rep if ec["resample_data"] else dc["seed"]
        X, y = make_data(dc, n, data_seed)
        model = model_from_config(self.config, m)
        seed = task_seed(ec["seed"], task.key)
        params = model.init(be, seed=seed)
        kernel = kernel_function(self.config.get("kernel"), model, be)
        integ, info = build_integrator(self.config["integrator"], model, params, X, be, kernel=kernel)
        t0 = time.perf_counter()
        traj = simulate(model, MSE(), integ, X, y, ec["times"], backend=be, params=params,
                        record=["loss", "param_drift", "kernel_drift", "kernel_eigs"], progress=False, kernel=kernel)
        out = {"m": m, "n": n, "replicate": rep, "seed": seed, "data_seed": data_seed,
               "h": info["h"], "h_stable": info["h_stable"], "lambda_max0": info["lambda_max0"],
               "gradient_evaluations": traj.meta.get("gradient_evaluations"), "seconds": time.perf_counter() - t0,
               "times": [float(t) for t in traj.times]}
        for k in (*METRICS, "loss", "lambda_min", "lambda_max"):
            if k in traj.arrays:  # the per-neuron drift exists for the two-layer net only
                out[k] = [float(v) for v in traj.arrays[k]]
        return out
