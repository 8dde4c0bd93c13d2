"""Measurement of ``train``: the data set, model, loss and integrator of the config, and the one simulation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ....core.models import Model
from ....flow.simulate import Trajectory, simulate
from ...data import make_dataset
from ...rundir import atomic_save_npz
from ..base import ExperimentPart, model_from_config, registered_names
from ..flow import build_integrator, from_table, kernel_function, make_data
from .analyse import summary

TRAIN_DATA_KINDS = ("teacher", "random", "regression_1d", "two_spirals", "digits", "file")
SPACINGS = ("geometric", "linear")


class TrainMeasure(ExperimentPart):
    """The run of ``train`` (it overrides :meth:`Experiment.run`: one simulation, not a sweep of tasks)."""

    def times(self) -> list[float]:
        """The record times: ``times`` if given, else n_times from t_min to t_max (geometric or linear)."""
        ec = self.config["experiment"]
        if ec["times"] is not None:
            return [float(t) for t in ec["times"]]
        n, t_max = ec["n_times"], ec["t_max"]
        if ec["spacing"] == "geometric":
            t_min = ec["t_min"] or t_max / 1000.0
            return np.geomspace(t_min, t_max, n).tolist() if n > 1 else [t_max]
        t_min = ec["t_min"] or t_max / n
        return np.linspace(t_min, t_max, n).tolist()

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(X, y, X_test, y_test): ``n`` training and ``n_test`` test points of the configured data set."""
        dc = self.config["data"]
        total = dc["n"] + dc["n_test"]
        kind = dc["kind"]
        if kind in ("teacher", "random"):
            ds = make_data(dc, total, dc["seed"])
        elif kind in ("regression_1d", "two_spirals"):
            ds = make_dataset(kind, n=total, d=dc["d"], seed=dc["seed"], noise=dc["noise"])
        elif kind == "digits":
            ds = make_dataset("digits", n=total, seed=dc["seed"], labels=dc["digit_labels"])
        else:
            ds = make_dataset("file", n=total, d=dc["d"], seed=dc["seed"], path=dc["path"], y_path=dc["y_path"],
                              normalize=dc["normalize"])
        X, y = np.asarray(ds.X, float), np.asarray(ds.y, float)
        if X.shape[0] < total:
            raise ValueError(f"the data set has {X.shape[0]} points; n + n_test = {total} were asked for")
        order = np.random.default_rng([dc["seed"], 7]).permutation(total)
        tr, te = order[:dc["n"]], order[dc["n"]:]
        if not dc["n_test"]:
            return X[np.sort(tr)], y[np.sort(tr)], None, None
        return X[np.sort(tr)], y[np.sort(tr)], X[np.sort(te)], y[np.sort(te)]

    def model(self, d: int, outputs: int) -> Model:
        return model_from_config(self.config, d=d, outputs=outputs)

    def loss(self) -> Any:
        """The ``[loss]`` kind (a registered loss) built from its config_fields."""
        return from_table("losses", self.config.get("loss"), "mse")

    # -- the run --------------------------------------------------------------------------------------
    def run(self, ctx: Any) -> dict[str, Any]:
        """Simulate once (resuming a checkpoint in the run folder if there is one) and save the Trajectory."""
        mc, ec = self.config["model"], self.config["experiment"]
        be = self.backend
        self._run_dir = Path(ctx.dir)
        X, y, Xt, yt = self.data()
        outputs = mc["outputs"] or (1 if y.ndim == 1 else int(y.shape[1]))
        model = self.model(X.shape[1], outputs)
        loss = self.loss()
        params = model.init(be, seed=ec["seed"])
        kernel = kernel_function(self.config.get("kernel"), model, be)
        integ, info = build_integrator(self.config["integrator"], model, params, X, be,
                                       curvature=getattr(loss, "curvature", 1.0), kernel=kernel)
        times = self.times()
        ckpt = Path(ctx.dir) / "checkpoint" if ec["checkpoint"] else None
        resume = ckpt if (ckpt is not None and (ckpt / "progress.json").exists()) else None
        arrays = {"X": X, "y": y} if Xt is None else {"X": X, "y": y, "X_test": Xt, "y_test": yt}
        atomic_save_npz(Path(ctx.dir) / "data.npz", **arrays)
        traj = self._finished(Path(ctx.dir), times) if resume is not None else None
        if traj is None:
            if resume is not None and json.loads((ckpt / "progress.json").read_text()).get("index") == len(times) - 1:
                # every time is in the checkpoint but the trajectory was not saved; simulate(resume=...) cannot
                # continue a run with no time left (it asks the integrator for zero output times), so rerun it
                shutil.rmtree(ckpt)
                resume = None
            traj = simulate(model, loss, integ, X, y, times, backend=be, params=None if resume else params,
                            seed=ec["seed"], record=ec["record"], X_test=Xt, checkpoint=ckpt, resume=resume,
                            progress=ctx.progress_enabled, kernel=kernel)
            traj.save(ctx.dir)
        doc = json.loads((Path(ctx.dir) / "results.json").read_text())
        doc["summary"] = summary(traj, loss, y, yt, info)
        doc["failed_tasks"] = []
        doc["registered"] = registered_names(self.config, be)
        return doc

    @staticmethod
    def _finished(run_dir: Path, times: list[float]) -> Trajectory | None:
        """The saved trajectory of a finished run in ``run_dir`` at these times, or None."""
        try:
            traj = Trajectory.load(run_dir)
        except (FileNotFoundError, ValueError):
            return None
        same = traj.times.shape == (len(times),) and np.allclose(traj.times, times, rtol=1e-12, atol=0)
        return traj if same else None
