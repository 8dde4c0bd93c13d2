"""Measurement of ``convergence``: one gradient-flow run per (m, seed), with the residual and λ_min(H(t)) recorded."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ....flow.losses import MSE
from ....flow.simulate import simulate
from ....theory.analytic import analytic_ntk
from ...sweep import Task, task_seed
from ..base import ExperimentPart, model_from_config
from ..flow import build_integrator, kernel_function, make_data


class ConvergenceMeasure(ExperimentPart):
    """The tasks of ``convergence`` and what one task measures (the Experiment's ``tasks`` and ``run_task``)."""

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
        model = model_from_config(self.config, m)
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
        kernel = kernel_function(self.config.get("kernel"), model, be)
        integ, info = build_integrator(self.config["integrator"], model, params, X, be, kernel=kernel)
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
