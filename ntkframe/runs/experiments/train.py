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
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Field
from ..data import LABEL_KINDS, make_dataset
from ...core.models import MLP, TwoLayerNet
from ..rundir import atomic_save_npz
from ...flow.simulate import DEFAULT_RECORD, RECORDABLE, Trajectory, simulate
from .base import MODEL_TABLE, Experiment, format_table
from .flow import build_integrator, integrator_table, make_data, require

TRAIN_DATA_KINDS = ("teacher", "random", "regression_1d", "two_spirals", "digits", "file")
SPACINGS = ("geometric", "linear")


def _known(kind: str) -> Any:
    def check(name: str) -> str | None:
        from ...plugins import registry

        reg = registry(kind)
        return None if name in reg else f"unknown {kind[:-1]}; allowed: {', '.join(reg.names())}"
    return check


def _records(value: list[str]) -> str | None:
    bad = [v for v in value if v not in RECORDABLE]
    return f"unknown record {bad}; allowed: {', '.join(RECORDABLE)}" if bad else None


def _nonneg(value: int) -> str | None:
    return None if value >= 0 else "must be >= 0"


class Train(Experiment):
    name = "train"
    description = "one gradient-flow run: loss, kernel drift, parameter drift against t (a Trajectory)"
    schema = {
        "experiment": [
            Field("kind", str, "train", "experiment to run"),
            Field("t_max", float, 100.0, "last record time (flow time; Euler: steps × h)", positive=True),
            Field("n_times", int, 40, "number of record times", positive=True),
            Field("spacing", str, "geometric", "record times geometric (from t_min) or linear", choices=SPACINGS),
            Field("t_min", float, None, "first record time; default t_max/1000 (geometric), t_max/n_times (linear)",
                  positive=True, nullable=True),
            Field("times", list, None, "explicit record times (override t_max, n_times, spacing)", item_type=float,
                  nullable=True),
            Field("seed", int, 0, "seed of the network initialisation"),
            Field("record", list, list(DEFAULT_RECORD) + ["linearised"], "what to record at each time",
                  item_type=str, check=_records),
            Field("checkpoint", bool, True, "save the state at every record time (ntkframe run --resume continues)"),
        ],
        "model": [
            Field("kind", str, "two_layer", "network: two_layer (docs/theory.md §2) or mlp (deep, Jacot et al.)",
                  choices=("two_layer", "mlp")),
            Field("m", int, 1024, "width m (mlp: of every hidden layer)", positive=True),
            Field("depth", int, 2, "hidden layers of the mlp", positive=True),
            Field("outputs", int, None, "outputs k (default: from the labels' shape)", positive=True, nullable=True),
            *MODEL_TABLE,
        ],
        "data": [
            Field("kind", str, "teacher", "data set (ntkframe.runs.data)", choices=TRAIN_DATA_KINDS),
            Field("n", int, 64, "number of training inputs N", positive=True),
            Field("n_test", int, 0, "number of test inputs (outputs and linearised gap recorded there too)",
                  check=_nonneg),
            Field("d", int, 8, "input dimension d (digits: 64; file: the file's)", positive=True),
            Field("seed", int, 0, "seed of the data set"),
            Field("teacher_width", int, 16, "width of the teacher network (teacher)", positive=True),
            Field("teacher_activation", str, "tanh", "activation of the teacher (teacher)",
                  check=_known("activations")),
            Field("noise", float, 0.0, "label noise (teacher, regression_1d, two_spirals)"),
            Field("label_kind", str, "gaussian", "random labels: gaussian or sign (random)", choices=LABEL_KINDS),
            Field("digit_labels", str, "onehot", "digits labels: onehot, int or sign (digits)",
                  choices=("onehot", "int", "sign")),
            Field("path", str, None, "inputs (.npy/.npz/.csv) (file)", nullable=True),
            Field("y_path", str, None, "labels (.npy/.csv) (file)", nullable=True),
            Field("normalize", bool, True, "put file inputs on the unit sphere (file)"),
        ],
        "loss": [Field("kind", str, "mse", "training loss (mse, logistic, cross_entropy, or a plugin's)",
                       check=_known("losses"))],
        "integrator": integrator_table(kinds=("rk4", "dormand_prince", "euler", "kernel_flow")),
    }

    @classmethod
    def check_config(cls, cfg: dict[str, dict[str, Any]], source: str = "<config>") -> None:
        ec, mc, dc = cfg["experiment"], cfg["model"], cfg["data"]
        if ec["times"] is not None:
            t = ec["times"]
            require(len(t) > 0 and all(v >= 0 for v in t) and all(b > a for a, b in zip(t, t[1:])), source,
                    "experiment", "times", t, "must be a non-empty, strictly increasing list of times >= 0")
        if ec["t_min"] is not None:
            require(ec["t_min"] < ec["t_max"], source, "experiment", "t_min", ec["t_min"], "must be < t_max")
        if mc["kind"] == "mlp":
            require(mc["train"] == "both", source, "model", "train", mc["train"],
                    "the mlp trains every layer; allowed for mlp: 'both'")
            require(mc["output_init"] == "gaussian", source, "model", "output_init", mc["output_init"],
                    "the mlp draws every weight N(0, 1); allowed for mlp: 'gaussian'")
        if dc["kind"] == "file":
            require(dc["path"] is not None, source, "data", "path", dc["path"], "data kind 'file' needs a path")
        if dc["kind"] == "digits":
            require(dc["d"] == 64, source, "data", "d", dc["d"], "the digits have d = 64 features")

    # -- building blocks ------------------------------------------------------------------------------
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

    def model(self, d: int, outputs: int) -> TwoLayerNet | MLP:
        mc = self.config["model"]
        if mc["kind"] == "mlp":
            return MLP(d, [mc["m"]] * mc["depth"], mc["activation"], outputs=outputs,
                       parameterization=mc["parameterization"])
        return TwoLayerNet(d, mc["m"], mc["activation"], train=mc["train"], output_init=mc["output_init"],
                           parameterization=mc["parameterization"], outputs=outputs)

    def loss(self) -> Any:
        from ...plugins import registry

        return registry("losses").get(self.config["loss"]["kind"])()

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
        integ, info = build_integrator(self.config["integrator"], model, params, X, be,
                                       curvature=getattr(loss, "curvature", 1.0))
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
                            progress=ctx.progress_enabled)
            traj.save(ctx.dir)
        doc = json.loads((Path(ctx.dir) / "results.json").read_text())
        doc["summary"] = self._summary(traj, loss, y, yt, info)
        doc["failed_tasks"] = []
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

    @staticmethod
    def _summary(traj: Trajectory, loss: Any, y: np.ndarray, yt: np.ndarray | None, info: dict) -> dict[str, Any]:
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

    # -- output ---------------------------------------------------------------------------------------
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
            text += (f"\nintegrator {integ['kind']}, h = {integ['h']:.4g} (stability bound βN/λ_max(H(0)) = "
                     f"{integ['h_stable']:.4g}); {results.get('gradient_evaluations')} gradient evaluations")
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
        from ..plotting import pyplot, save

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
            axes[0, 1].legend(fontsize=8)
            axes[0, 1].set_title("gap to the linearised model", fontsize=10)
        style(ax, "training loss")
        ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        paths.append(save(fig, Path(run_dir) / "loss.png"))

        if "kernel_drift" in a or "lambda_min" in a:
            fig, axes = plt.subplots(1, 2, figsize=(11, 4))
            if "kernel_drift" in a:
                axes[0].plot(t, np.maximum(a["kernel_drift_rel"], 1e-300), "o-", ms=3, label="‖ΔH‖₂ / ‖H(0)‖₂")
                axes[0].plot(t, np.maximum(a["kernel_drift_fro"], 1e-300) / max(a["kernel_drift_fro"].max(), 1e-300)
                             * a["kernel_drift_rel"].max(), ":", label="‖ΔH‖_F (rescaled to the same maximum)")
                style(axes[0], "kernel drift")
                axes[0].legend(fontsize=8)
                axes[0].set_title(f"‖H(t) − H(0)‖: {title}", fontsize=10)
            if "lambda_min" in a:
                axes[1].plot(t, a["lambda_min"], "o-", ms=3, label="λ_min(H(t))")
                axes[1].plot(t, a["lambda_max"], "s-", ms=3, label="λ_max(H(t))")
                style(axes[1], "eigenvalues of H(t)", logy=bool(np.min(a["lambda_min"]) > 0))
                axes[1].legend(fontsize=8)
            save_path = save(fig, Path(run_dir) / "kernel_drift.png")
            paths.append(save_path)

        if "param_drift" in a:
            fig, ax = plt.subplots(figsize=(5.5, 4))
            ax.plot(t, np.maximum(a["param_drift"], 1e-300), "o-", ms=3, label="‖θ(t) − θ(0)‖")
            if "param_drift_neuron_max" in a:
                ax.plot(t, np.maximum(a["param_drift_neuron_max"], 1e-300), "s-", ms=3,
                        label="max_r ‖θ_r(t) − θ_r(0)‖")
            style(ax, "parameter drift")
            ax.legend(fontsize=8)
            ax.set_title(title, fontsize=10)
            paths.append(save(fig, Path(run_dir) / "param_drift.png"))
        return paths

    def _title(self) -> str:
        mc = self.config["model"]
        net = f"two-layer m={mc['m']}" if mc["kind"] == "two_layer" else f"mlp {mc['depth']}×{mc['m']}"
        return f"{net}, {mc['activation']}, {self.config['integrator']['kind']}"

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
