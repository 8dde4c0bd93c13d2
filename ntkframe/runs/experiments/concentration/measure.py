"""Measurement of ``concentration``: one empirical kernel per (m, n, seed), compared with H*."""

from __future__ import annotations

from typing import Any

import numpy as np

from ....core.backend import to_numpy
from ....core.kernels import empirical_ntk
from ....theory.analytic import analytic_ntk
from ...data import unit_sphere
from ...sweep import Task, task_seed
from ..base import ExperimentPart, model_from_config

#: the measured norms of H(0) − H*, with their symbols
METRICS = {
    "spectral": "‖H(0) − H*‖₂",
    "frobenius": "‖H(0) − H*‖_F",
    "rel_spectral": "‖H(0) − H*‖₂ / ‖H*‖₂",
    "rel_frobenius": "‖H(0) − H*‖_F / ‖H*‖_F",
}

_HSTAR_CACHE: dict[tuple, dict[str, Any]] = {}


def inputs(config: dict[str, dict[str, Any]], n: int) -> np.ndarray:
    """The first n of max(ns) points drawn uniformly on the unit sphere (nested in n)."""
    dc = config["data"]
    return unit_sphere(max(config["experiment"]["ns"]), dc["d"], dc["seed"])[:n]


def hstar(config: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """H* on the first n inputs with its norms (cached per process: every width and seed shares it)."""
    mc, dc = config["model"], config["data"]
    key = (mc["activation"], mc["train"], mc["output_init"], dc["d"], dc["seed"], max(config["experiment"]["ns"]), n)
    if key not in _HSTAR_CACHE:
        H = analytic_ntk(model_from_config(config, 1), inputs(config, n))
        lam = np.linalg.eigvalsh(H)
        _HSTAR_CACHE[key] = {"H": H, "spectral": float(max(abs(lam[0]), abs(lam[-1]))),
                             "frobenius": float(np.linalg.norm(H)), "lambda_min": float(lam[0])}
    return _HSTAR_CACHE[key]


class ConcentrationMeasure(ExperimentPart):
    """The tasks of ``concentration`` and what one task measures (the Experiment's ``tasks`` and ``run_task``)."""

    def tasks(self) -> list[Task]:
        ec = self.config["experiment"]
        return [Task(f"m={m}/n={n}/seed={s}", {"m": m, "n": n, "replicate": s})
                for m in sorted(ec["widths"]) for n in sorted(ec["ns"]) for s in range(ec["seeds"])]

    def run_task(self, task: Task) -> dict[str, Any]:
        """One (m, n, replicate): the norms of H(0) − H* for a network drawn from the key's seed."""
        ec = self.config["experiment"]
        m, n, s = task.params["m"], task.params["n"], task.params["replicate"]
        seed = task_seed(ec["seed"], f"m={m}/seed={s}", "network")
        model = model_from_config(self.config, m)
        be = self.backend
        X = inputs(self.config, n)
        H = np.asarray(to_numpy(empirical_ntk(model, model.init(be, seed=seed), X, backend=be)), dtype=np.float64)
        ref = hstar(self.config, n)
        D = H - ref["H"]
        lam = np.linalg.eigvalsh(0.5 * (D + D.T))
        spectral = float(max(abs(lam[0]), abs(lam[-1])))
        frob = float(np.linalg.norm(D))
        return {"m": m, "n": n, "replicate": s, "seed": seed, "spectral": spectral, "frobenius": frob,
                "rel_spectral": spectral / ref["spectral"], "rel_frobenius": frob / ref["frobenius"],
                "max_entry": float(np.abs(D).max()), "hstar_spectral": ref["spectral"],
                "hstar_frobenius": ref["frobenius"], "hstar_lambda_min": ref["lambda_min"]}
