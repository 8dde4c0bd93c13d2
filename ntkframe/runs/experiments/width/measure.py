"""Measurement of ``width``: per seed, a wide reference kernel and the kernel at every width, on one data set."""

from __future__ import annotations

from typing import Any

import numpy as np

from ....core.backend import to_numpy
from ...data import unit_sphere
from ...sweep import Task, task_seed
from ..base import ExperimentPart, model_from_config
from ..flow import kernel_function


class WidthMeasure(ExperimentPart):
    """The tasks of ``width`` and what one task measures (the Experiment's ``tasks`` and ``run_task``)."""

    def tasks(self) -> list[Task]:
        return [Task(f"seed={s}", {"replicate": s}) for s in range(self.config["experiment"]["seeds"])]

    def run_task(self, task: Task) -> dict[str, Any]:
        """One replicate: a reference kernel and one kernel per width, seeds derived from the key."""
        ec, dc, kc = self.config["experiment"], self.config["data"], self.config.get("kernel")
        be = self.backend
        X = unit_sphere(dc["n"], dc["d"], dc["seed"])
        ref_seed = task_seed(ec["seed"], task.key, "reference")
        ref = model_from_config(self.config, ec["reference_width"])
        H_ref = to_numpy(kernel_function(kc, ref, be)(ref.init(be, seed=ref_seed), X)).astype(np.float64)
        out = {"reference_seed": ref_seed, "widths": [], "seeds": [], "rel_fro": [], "rel_spectral": []}
        for m in sorted(ec["widths"]):
            seed = task_seed(ec["seed"], task.key, f"width={m}")
            model = model_from_config(self.config, m)
            H = to_numpy(kernel_function(kc, model, be)(model.init(be, seed=seed), X)).astype(np.float64)
            out["widths"].append(m)
            out["seeds"].append(seed)
            out["rel_fro"].append(np.linalg.norm(H - H_ref) / np.linalg.norm(H_ref))
            out["rel_spectral"].append(np.linalg.norm(H - H_ref, 2) / np.linalg.norm(H_ref, 2))
        return out
