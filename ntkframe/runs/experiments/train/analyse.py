"""Analysis of ``train``: the summary of one trajectory (first and last loss, final drifts and eigenvalues)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ....flow.simulate import Trajectory


def summary(traj: Trajectory, loss: Any, y: np.ndarray, yt: np.ndarray | None, info: dict) -> dict[str, Any]:
    """results["summary"]: loss at 0 and at the end, the final value of each recorded drift, the test loss."""
    a = traj.arrays
    out: dict[str, Any] = {"loss0": traj.meta.get("loss0"), "loss_final": float(a["loss"][-1]),
                           "t_final": float(a["times"][-1]), "integrator": info}
    for k in ("kernel_drift", "kernel_drift_rel", "kernel_drift_fro", "param_drift", "param_drift_neuron_max",
              "lambda_min", "lambda_max", "linearised_gap", "linearised_gap_test"):
        if k in a:
            out[f"{k}_final"] = float(a[k][-1])
    if "outputs_test" in a and yt is not None:
        try:
            out["test_loss_final"] = float(loss.value(a["outputs_test"][-1], loss.prepare_targets(
                yt, 1 if a["outputs_test"].ndim == 2 else a["outputs_test"].shape[-1], yt.shape[0])))
        except (ValueError, TypeError):
            out["test_loss_final"] = None
    return out
