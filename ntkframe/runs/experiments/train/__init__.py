"""Experiment ``train``: one gradient-flow run from a config, recorded as a Trajectory with plots.

``ntkframe run examples/train.toml`` trains a model (TwoLayerNet or MLP) on a data set with a loss
(MSE, logistic, cross-entropy) and an integrator (RK4, Euler = gradient descent, Dormand–Prince, or
KernelFlow = the exact linearised model), by gradient flow dθ/dt = −∇θL(θ), L = (1/N) Σ_i ℓ(f_θ(x_i), y_i)
(docs/theory.md §1), and records at the configured times what docs/theory.md §4 asks to watch: the loss,
‖θ(t) − θ(0)‖, ‖H(t) − H(0)‖₂ (and Frobenius, relative), λ_min/λ_max of H(t) and the gap to the
linearised model f_lin.  It shows a progress bar over simulated time and writes the run folder:
``results.json`` + ``trajectory.npz`` (:meth:`ntkframe.Trajectory.save`, so
``nf.Trajectory.load(RUN_DIR)`` reads the run back), ``data.npz`` (the inputs and labels), and PNG
plots of loss, kernel drift and parameter drift against t.  With ``checkpoint = true`` the state is
saved at every record time, and ``ntkframe run --resume RUN_DIR`` continues an interrupted run.

The package: :mod:`.measure` (the run itself: data, model, loss, integrator, simulate), :mod:`.analyse`
(the summary of the trajectory), :mod:`.report` (table, figures, report.md).
"""

from __future__ import annotations

from typing import Any

from ....flow.simulate import DEFAULT_RECORD, RECORDABLE
from ...config import Field
from ...data import DIGIT_LABELS, LABEL_KINDS
from ..base import Experiment, model_table, require, task_sizes
from ..flow import integrator_table, kernel_table, loss_table
from .measure import SPACINGS, TRAIN_DATA_KINDS, TrainMeasure
from .report import TrainReport

__all__ = ["Train", "SPACINGS", "TRAIN_DATA_KINDS"]

SCHEMA = {
    "experiment": [
        Field("t_max", float, 100.0, "last record time (flow time; Euler: steps × h)", positive=True),
        Field("n_times", int, 40, "number of record times", positive=True),
        Field("spacing", str, "geometric", "record times geometric (from t_min) or linear", choices=SPACINGS),
        Field("t_min", float, None, "first record time; default t_max/1000 (geometric), t_max/n_times (linear)",
              positive=True, nullable=True),
        Field("times", list, None, "explicit record times (override t_max, n_times, spacing)", item_type=float,
              nullable=True, minimum=0, increasing=True),
        Field("seed", int, 0, "seed of the network initialisation"),
        Field("record", list, list(DEFAULT_RECORD) + ["linearised"], "what to record at each time",
              item_type=str, choices=tuple(RECORDABLE)),
        Field("checkpoint", bool, True, "save the state at every record time (ntkframe run --resume continues)"),
    ],
    "model": model_table(provided=("d",), sweeps_width=False, common=(
        Field("outputs", int, None, "outputs k (default: from the labels' shape)", positive=True, nullable=True),)),
    "data": [
        Field("kind", str, "teacher", "data set (ntkframe.runs.data)", choices=TRAIN_DATA_KINDS),
        Field("n", int, 64, "number of training inputs N", positive=True),
        Field("n_test", int, 0, "number of test inputs (outputs and linearised gap recorded there too)",
              minimum=0),
        Field("d", int, 8, "input dimension d (digits: 64; file: the file's)", positive=True),
        Field("seed", int, 0, "seed of the data set"),
        Field("teacher_width", int, 16, "width of the teacher network (teacher)", positive=True),
        Field("teacher_activation", str, "tanh", "activation of the teacher (teacher)",
              choices_from="activations"),
        Field("noise", float, 0.0, "label noise (teacher, regression_1d, two_spirals)"),
        Field("label_kind", str, "gaussian", "random labels: gaussian or sign (random)", choices=LABEL_KINDS),
        Field("digit_labels", str, "onehot", "digits labels: onehot, int or sign (digits)",
              choices=DIGIT_LABELS),
        Field("path", str, None, "inputs (.npy/.npz/.csv) (file)", nullable=True),
        Field("y_path", str, None, "labels (.npy/.csv) (file)", nullable=True),
        Field("normalize", bool, True, "put file inputs on the unit sphere (file)"),
    ],
    "loss": loss_table(),
    "integrator": integrator_table(network=False),
    "kernel": kernel_table(),
}


def check_config(cfg: dict[str, dict[str, Any]], source: str = "<config>") -> None:
    ec, mc, dc = cfg["experiment"], cfg["model"], cfg["data"]
    if ec["t_min"] is not None:
        require(ec["t_min"] < ec["t_max"], source, "experiment", "t_min", ec["t_min"], "must be < t_max")
    if dc["kind"] == "file":
        require(dc["path"] is not None, source, "data", "path", dc["path"], "data kind 'file' needs a path")
    if dc["kind"] == "digits":
        require(dc["d"] == 64, source, "data", "d", dc["d"], "the digits have d = 64 features")


class Train(TrainMeasure, TrainReport, Experiment):
    name = "train"
    description = "one gradient-flow run: loss, kernel drift, parameter drift against t (a Trajectory)"
    schema = SCHEMA
    check_config = staticmethod(check_config)

    @classmethod
    def memory_estimate(cls, config: dict[str, dict[str, Any]]) -> int:
        """The default estimate, plus the trajectory (outputs and linearised outputs, N × k per record
        time) and an mlp's hidden-to-hidden weights with their integrator stages (8 · depth · m²)."""
        n, m, _d, k, s = task_sizes(config)
        ec, mc = config["experiment"], config["model"]
        records = len(ec["times"]) if ec.get("times") else ec["n_times"]
        deep = 8 * mc["depth"] * m * m if mc.get("kind") == "mlp" else 0
        return super().memory_estimate(config) + int(s * (2 * records * n * k + deep))
