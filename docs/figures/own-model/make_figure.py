"""Kernel drift against width of a small CNN trained by gradient flow: docs/tutorials/own-model.md's figure.

A CNN in the NTK parameterisation (weights N(0, 1), each layer's input scaled by 1/√fan-in, so the
layer rules of ntkframe_torch.layers see plain nn.Conv2d/nn.Linear calls) on 16 synthetic 8 × 8
images; for each width m and seed, nf.simulate trains it on the MSE by RK4 to t = T and records
‖H(T) − H(0)‖₂/‖H(0)‖₂, ‖θ(T) − θ(0)‖ and the gap to the linearised network; the slope of
log drift against log m is fitted (the two-layer theory, docs/theory.md §4.1, says −1/2).

Run:  python docs/figures/own-model/make_figure.py      (about 10 minutes on 2 busy cores)
Writes drift.png and numbers.md next to this file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import ntkframe as nf

HERE = Path(__file__).resolve().parent
WIDTHS = [8, 16, 32, 64, 128]
SEEDS = [0, 1]
STEPS = 60  # RK4 steps of h = 1.5/λ_max(H(0)) for the narrowest net; T fixed from it


class NTKCNN(nn.Module):
    """conv3×3(1→m) – relu – conv3×3 stride 2 (m→m) – relu – mean over positions – linear(m→1)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False)
        self.head = nn.Linear(width, 1, bias=False)
        for p in self.parameters():
            nn.init.normal_(p)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x * (8.0 / 3.0)).relu()  # unit-norm 8 × 8 images: 3 × 3 patches of norm ≈ 1
        h = self.conv2(h / (3.0 * self.width ** 0.5)).relu()
        return self.head(h.mean((2, 3)) / self.width ** 0.5)


def data(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n smooth random 8 × 8 images (sums of two Gaussian blobs), unit norm; targets from a fixed teacher."""
    rng = np.random.default_rng(seed)
    g = np.arange(8)
    X = np.zeros((n, 1, 8, 8))
    for i in range(n):
        for _ in range(2):
            cy, cx = rng.uniform(0, 7, 2)
            X[i, 0] += rng.choice([-1, 1]) * np.exp(-((g[:, None] - cy) ** 2 + (g[None, :] - cx) ** 2) / 4)
    X /= np.linalg.norm(X.reshape(n, -1), axis=1)[:, None, None, None]
    y = np.sin(3 * X.reshape(n, -1) @ rng.standard_normal(64))
    return X, y - y.mean()


def main() -> None:
    be = nf.get_backend("torch", dtype="float64")
    X, y = data()
    rows = []
    t0 = time.perf_counter()
    ref = nf.TorchModel(factory=NTKCNN, kwargs={"width": WIDTHS[0]})
    lam = np.linalg.eigvalsh(nf.to_numpy(nf.empirical_ntk(ref, ref.init(be, seed=0), X, backend=be)))[-1]
    T = STEPS * 1.5 / lam
    for m in WIDTHS:
        for seed in SEEDS:
            model = nf.TorchModel(factory=NTKCNN, kwargs={"width": m})
            p0 = model.init(be, seed=seed)
            H0 = nf.to_numpy(nf.empirical_ntk(model, p0, X, backend=be))
            h = T / max(STEPS, int(np.ceil(T * np.linalg.eigvalsh(H0)[-1] / 1.5)))  # h ≤ 1.5/λ_max: RK4 stable (§6)
            traj = nf.simulate(model, nf.MSE(), nf.RK4(h), X, y, times=[0.0, T], params=p0, backend=be, progress=False,
                               record=["loss", "kernel_drift", "param_drift", "linearised"])
            a = traj.arrays
            rows.append({"m": m, "seed": seed, "kernel_drift_rel": float(a["kernel_drift_rel"][-1]),
                         "param_drift": float(a["param_drift"][-1]), "linearised_gap": float(a["linearised_gap"][-1]),
                         "loss0": float(a["loss"][0]), "loss": float(a["loss"][-1]), "steps": int(round(T / h))})
            print(rows[-1], flush=True)
    wall = time.perf_counter() - t0
    ms = np.array(WIDTHS, float)
    mean = {key: np.array([np.mean([r[key] for r in rows if r["m"] == m]) for m in WIDTHS])
            for key in ("kernel_drift_rel", "linearised_gap", "param_drift")}
    slope = {key: float(np.polyfit(np.log(ms), np.log(v), 1)[0]) for key, v in mean.items()}

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for key, label, marker in (("kernel_drift_rel", "‖H(T) − H(0)‖₂ / ‖H(0)‖₂", "o"),
                               ("linearised_gap", "max |f(T) − f_lin(T)|", "s")):
        pts = [(r["m"], r[key]) for r in rows]
        line, = ax.loglog(ms, mean[key], marker=marker, label=f"{label}: slope {slope[key]:.2f}")
        ax.scatter(*zip(*pts), s=8, alpha=0.4, color=line.get_color())
    ref = mean["kernel_drift_rel"][0] * (ms / ms[0]) ** -0.5
    ax.loglog(ms, ref, "k--", lw=0.8, label="slope −1/2 (two-layer theory)")
    ax.set_xlabel("width m (channels)")
    ax.set_xticks(ms, [str(m) for m in WIDTHS])
    ax.set_ylabel(f"at t = T = {T:.3g}")
    ax.set_title("A small CNN trained by gradient flow (MSE, N = 16)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(HERE / "drift.png", dpi=130)
    lines = ["| m | kernel drift (rel.) | linearisation gap | ‖θ(T) − θ(0)‖ | loss at t = 0 → T |", "| --- | --- | --- | --- | --- |"]
    for m in WIDTHS:
        rs = [r for r in rows if r["m"] == m]
        lines.append(f"| {m} | {np.mean([r['kernel_drift_rel'] for r in rs]):.3g} | "
                     f"{np.mean([r['linearised_gap'] for r in rs]):.3g} | {np.mean([r['param_drift'] for r in rs]):.3g} | "
                     f"{np.mean([r['loss0'] for r in rs]):.3g} → {np.mean([r['loss'] for r in rs]):.3g} |")
    lines += ["", f"Fitted slopes of log(mean over {len(SEEDS)} seeds) against log m: "
              + ", ".join(f"{k} {v:.2f}" for k, v in slope.items()) + f". Wall time {wall:.0f} s "
              f"({torch.get_num_threads()} threads, shared machine)."]
    (HERE / "numbers.md").write_text("\n".join(lines) + "\n")
    (HERE / "runs.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
