"""Figures: log-log plots with the fitted power law and the theory's slope (matplotlib, Agg, lazy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; a clear error when the ``plot`` extra is missing."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - exercised without matplotlib
        raise ImportError("figures need matplotlib: pip install 'ntkframe[plot]'") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def loglog_with_fit(ax: Any, x: Sequence[float], Y: Any, fit: dict | None, *, theory_slope: float | None = None,
                    label: str = "measured", color: str = "C0") -> None:
    """Mean ± standard error over seeds (columns of Y), the fitted line and the theory's slope."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    Y = np.asarray(Y, dtype=float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    mean = Y.mean(axis=1)
    err = Y.std(axis=1, ddof=1) / np.sqrt(Y.shape[1]) if Y.shape[1] > 1 else None
    ax.errorbar(x, mean, yerr=err, fmt="o", color=color, label=label, capsize=3)
    xs = np.geomspace(x.min(), x.max(), 50)
    if fit is not None:
        lo, hi = fit["ci"]
        ax.plot(xs, fit["prefactor"] * xs ** fit["exponent"], "-", color=color,
                label=f"fit: slope {fit['exponent']:.3f} [{lo:.3f}, {hi:.3f}]")
    if theory_slope is not None:
        # anchored at the first measured point so only the slope is compared
        ax.plot(xs, mean[0] * (xs / x[0]) ** theory_slope, "--", color="gray", label=f"theory: slope {theory_slope:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def data_ticks(ax: Any, values: Sequence) -> None:
    """Label a log x axis at the measured values only (minor labels overlap on short ranges)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator([float(v) for v in values]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticklabels([f"{v:g}" for v in values])
