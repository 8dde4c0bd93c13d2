"""Measurement of ``linearisation``: one network trained by gradient flow, beside its linearisation and the H* flows."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ....core.backend import to_numpy
from ....core.kernels import empirical_ntk
from ....flow.integrators import RK4, DormandPrince, Euler, Integrator
from ....flow.losses import MSE
from ....flow.simulate import simulate
from ....theory.analytic import analytic_ntk
from ....theory.predict import gradient_descent_mse
from ...data import lifted_circle, regression_1d, teacher_labels, unit_sphere
from ...sweep import Task, task_seed
from ..base import ExperimentPart, model_from_config

DATASETS = ("regression_1d", "teacher")
INTEGRATORS = ("dormand_prince", "rk4", "euler")
#: the distances a task records at every time: (key, symbol, the theory's slope in m, is it an upper bound)
GAPS = {
    "gap_net_lin_train": ("‖f_net − f_lin‖ (train)", -0.5, True),
    "gap_net_lin_test": ("‖f_net − f_lin‖ (test)", -0.5, True),
    "gap_lin_hstar_train": ("‖f_lin − f_H*‖ (train)", -0.5, False),
    "gap_lin_hstar_test": ("‖f_lin − f_H*‖ (test)", -0.5, False),
    "gap_net_hstar_train": ("‖f_net − f_H*‖ (train)", -0.5, True),
    "gap_net_hstar_test": ("‖f_net − f_H*‖ (test)", -0.5, True),
    "gap_lin_mean_test": ("‖f_lin − f̄_H*‖ (test; H* flow from f ≡ 0)", None, False),  # no claim: see the module docstring
}
#: the other per-time quantities
EXTRA = ("loss_net", "loss_lin", "test_mse_net", "test_mse_lin", "test_mse_hstar", "test_mse_hstar_mean")

_HSTAR_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

def _rms(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Root-mean-square distance over points, per time (rows)."""
    D = np.asarray(A, dtype=np.float64) - np.asarray(B, dtype=np.float64)
    return np.sqrt(np.mean(D.reshape(D.shape[0], -1) ** 2, axis=1))



def data_sets(config: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """Training and test sets: X, y, X_test, y_test (and the angles for regression_1d)."""
    dc = config["data"]
    if dc["dataset"] == "regression_1d":
        k = dc["frequency"]
        target = lambda s: np.sin(k * s) + 0.5 * np.cos(s)  # noqa: E731
        train = regression_1d(dc["n"], 2, dc["seed"], target=target, noise=dc["noise"])
        test = regression_1d(dc["n_test"], 2, dc["seed"], target=target, grid=True)
        return {"X": lifted_circle(train.info["t"], dc["d"], dc["lift"]), "y": train.y,
                "X_test": lifted_circle(test.info["t"], dc["d"], dc["lift"]), "y_test": test.y,
                "t": train.info["t"], "t_test": test.info["t"]}
    X = unit_sphere(dc["n"], dc["d"], dc["seed"])
    Xt = unit_sphere(dc["n_test"], dc["d"], dc["seed"] + 1_000_003)
    y = teacher_labels(X, seed=dc["seed"] + 1, width=dc["teacher_width"], noise=dc["noise"])
    yt = teacher_labels(Xt, seed=dc["seed"] + 1, width=dc["teacher_width"])
    return {"X": X, "y": y, "X_test": Xt, "y_test": yt}


def hstar(config: dict[str, dict[str, Any]], data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """H*(X, X) and H*(X_test, X), cached per process."""
    mc = config["model"]
    key = (mc["activation"], mc["train"], mc["output_init"], data["X"].tobytes(), data["X_test"].tobytes())
    if key not in _HSTAR_CACHE:
        model = model_from_config(config, 1)
        _HSTAR_CACHE.clear()
        _HSTAR_CACHE[key] = (analytic_ntk(model, data["X"]), analytic_ntk(model, data["X_test"], data["X"]))
    return _HSTAR_CACHE[key]


def integrator(config: dict[str, dict[str, Any]], H0: np.ndarray, n: int) -> tuple[Integrator, dict[str, Any]]:
    """The [integrator] for a run whose kernel at θ(0) is H0; fixed steps default to a fraction of βN/λ_max."""
    ic = config["integrator"]
    if ic["kind"] == "dormand_prince":
        return DormandPrince(rtol=ic["rtol"], atol=ic["atol"]), {"h": None}
    cls = RK4 if ic["kind"] == "rk4" else Euler
    lam = float(np.linalg.eigvalsh(H0)[-1])
    h_stable = cls.stability_interval * n / lam
    h = float(ic["h"]) if ic["h"] is not None else ic["step_fraction"] * h_stable
    return cls(h), {"h": h, "h_stable": h_stable}


class LinearisationMeasure(ExperimentPart):
    """The tasks of ``linearisation`` and what one task measures (the Experiment's ``tasks`` and ``run_task``)."""

    def tasks(self) -> list[Task]:
        ec = self.config["experiment"]
        return [Task(f"m={m}/seed={s}", {"m": m, "replicate": s})
                for m in sorted(ec["widths"]) for s in range(ec["seeds"])]

    def run_task(self, task: Task) -> dict[str, Any]:
        """One network: gradient flow, its linearisation and the two H* flows, compared at every time."""
        ec = self.config["experiment"]
        m, s = task.params["m"], task.params["replicate"]
        seed = task_seed(ec["seed"], f"m={m}/seed={s}", "network")
        be = self.backend
        data = data_sets(self.config)
        X, y, Xt, yt = data["X"], data["y"], data["X_test"], data["y_test"]
        n = X.shape[0]
        model = model_from_config(self.config, m)
        params = model.init(be, seed=seed)
        H0 = np.asarray(to_numpy(empirical_ntk(model, params, X, backend=be)), dtype=np.float64)
        integ, info = integrator(self.config, H0, n)
        times = [0.0, *ec["times"]]
        started = time.perf_counter()
        traj = simulate(model, MSE(), integ, X, y, times, backend=be, params=params,
                        record=("loss", "outputs", "linearised"), X_test=Xt, progress=False)
        wall = time.perf_counter() - started
        net, net_t = traj.outputs, traj.outputs_test
        lin, lin_t = traj.outputs_lin, traj.outputs_lin_test
        Hs, Hst = hstar(self.config, data)
        flow = gradient_descent_mse(Hs, y)
        tt = np.asarray(times)
        hs, hs_t = flow(tt, net[0], net_t[0], Hst)
        bar, bar_t = flow(tt, 0.0, None, Hst)
        later = slice(1, None)
        mse = lambda F: np.mean((np.asarray(F) - yt[None, :]) ** 2, axis=1)[later].tolist()  # noqa: E731
        return {
            "m": m, "replicate": s, "seed": seed, "times": list(ec["times"]),
            "gap_net_lin_train": _rms(net, lin)[later].tolist(), "gap_net_lin_test": _rms(net_t, lin_t)[later].tolist(),
            "gap_lin_hstar_train": _rms(lin, hs)[later].tolist(), "gap_lin_hstar_test": _rms(lin_t, hs_t)[later].tolist(),
            "gap_net_hstar_train": _rms(net, hs)[later].tolist(), "gap_net_hstar_test": _rms(net_t, hs_t)[later].tolist(),
            "gap_lin_mean_test": _rms(lin_t, bar_t)[later].tolist(),
            "loss_net": np.asarray(traj.loss)[later].tolist(),
            "loss_lin": (0.5 * np.mean((lin - y[None, :]) ** 2, axis=1))[later].tolist(),
            "test_mse_net": mse(net_t), "test_mse_lin": mse(lin_t), "test_mse_hstar": mse(hs_t),
            "test_mse_hstar_mean": mse(bar_t),
            "kernel_rel_error": float(np.linalg.norm(H0 - Hs) / np.linalg.norm(Hs)),
            "kernel_error_spectral": float(np.abs(np.linalg.eigvalsh(0.5 * (H0 - Hs + (H0 - Hs).T))).max()),
            "integrator": {**integ.config(), **info}, "gradient_evaluations": traj.meta.get("gradient_evaluations"),
            "wall_s": wall,
            "curves": {"init": net_t[0].tolist(), "net": net_t[later].tolist(), "lin": lin_t[later].tolist(),
                       "hstar": hs_t[later].tolist(), "hstar_mean": bar_t[later].tolist()},
        }
