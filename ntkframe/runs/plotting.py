"""Figures: log-log plots with the fitted power law and the theory's slope, and the rules every figure follows.

The rules (issue 16), applied here so that no experiment has to remember them:

- every panel has an x and a y label that names the quantity and its norm (``"‖H(t) − H(0)‖₂"``,
  ``"width m"``);
- an axis that holds integers (widths m, numbers of inputs N) is ticked at the measured values with
  plain integer labels (:func:`integer_ticks`: never 2×10¹);
- a log axis whose range is short gets plain labels (:func:`plain_short_log_axes`, applied to every
  axis by :func:`save`: never 2.2×10⁰ … 3.4×10⁰), a long one labels the powers of ten only;
- legends sit where they cover no data: inside (``loc="best"``) when they are short, below the panel
  when they are long (:func:`legend`);
- one naming style for the setting: ``σ = relu, train = hidden, a ~ sign`` (:func:`setting_title`).

:data:`SAVE_HOOKS` are called with (figure, path) just before a figure is written: tests inspect
the matplotlib Figure objects there instead of parsing PNGs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

#: callables (figure, path) run by :func:`save` before the figure is written and closed
SAVE_HOOKS: list[Callable[[Any, Path], None]] = []

#: legends with more entries than this go below the panel (``loc="best"`` cannot avoid the data)
LEGEND_INSIDE_MAX = 3

#: log axes spanning fewer decades than this get plain labels at 1, 2, 5 × 10ᵏ (see plain_short_log_axes)
PLAIN_DECADES = 2.0


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; a clear error when the ``plot`` extra is missing."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - exercised without matplotlib
        raise ImportError("figures need matplotlib: pip install 'ntkframe[plot]'") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def setting_title(model: dict[str, Any]) -> str:
    """"σ = softplus, train = both, a ~ gaussian": the one way every figure names the network's setting."""
    if "activation" not in model:  # a network without one σ (kind = "torch", "jax" or a plugin's)
        return f"{model.get('kind')} network" + (f" {model['factory']}" if model.get("factory") else "")
    parts = [f"σ = {model['activation']}"] + ([f"train = {model['train']}"] if model.get("train") else [])
    if model.get("output_init"):
        parts.append(f"a ~ {model['output_init']}")
    return ", ".join(parts)


def legend(ax: Any, fontsize: float = 7.5) -> Any:
    """A legend off the data: inside at ``loc="best"`` when short, below the axes (under the x label) when long."""
    from matplotlib.transforms import ScaledTranslation

    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    if len(handles) <= LEGEND_INSIDE_MAX:
        return ax.legend(loc="best", fontsize=fontsize, framealpha=0.85)
    below = ax.transAxes + ScaledTranslation(0, -38 / 72, ax.figure.dpi_scale_trans)
    ncol = 1 if max(len(lab) for lab in labels) > 40 else 2  # long labels side by side overflow the panel
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below, ncol=ncol,
                     fontsize=fontsize, frameon=False)


def integer_ticks(ax: Any, values: Sequence, axis: str = "x") -> None:
    """Tick ``axis`` at the measured integer ``values`` only, labelled as plain integers (no minor ticks)."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter, NullLocator

    vals = sorted({float(v) for v in values})
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(FixedLocator(vals))
    a.set_major_formatter(FixedFormatter([f"{int(round(v))}" for v in vals]))
    a.set_minor_locator(NullLocator())
    a.set_minor_formatter(NullFormatter())
    ax.__dict__.setdefault("_ntkframe_integer_axes", set()).add(axis)


def data_ticks(ax: Any, values: Sequence) -> None:
    """Label a log x axis at the measured (integer) values only (:func:`integer_ticks` on x)."""
    integer_ticks(ax, values, "x")


def plain_short_log_axes(ax: Any) -> None:
    """Log-axis labels without mantissas (never 2×10¹ or 2.2×10⁰).

    A log axis spanning under a decade is labelled at evenly spaced plain values ("2.2", "2.6", "3"),
    one under :data:`PLAIN_DECADES` decades at 1, 2 and 5 × 10ᵏ in plain numbers ("0.02", "0.05",
    "0.1"), a longer one at the powers of ten only; minor ticks are unlabelled.
    Axes ticked by :func:`integer_ticks` keep their integer labels.
    """
    from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, LogLocator, MaxNLocator, NullFormatter

    for name, a, lim in (("x", ax.xaxis, ax.get_xlim()), ("y", ax.yaxis, ax.get_ylim())):
        if a.get_scale() != "log" or name in ax.__dict__.get("_ntkframe_integer_axes", ()):
            continue
        lo, hi = sorted(lim)
        if not lo > 0:
            continue
        span = math.log10(hi) - math.log10(lo)
        if span < PLAIN_DECADES:
            # under a decade even 1-2-5 may leave one tick: evenly spaced plain values instead
            a.set_major_locator(MaxNLocator(nbins=5) if span < 1 else LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            a.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
        else:
            a.set_major_locator(LogLocator(base=10))
            a.set_major_formatter(LogFormatterSciNotation(base=10, labelOnlyBase=True))
        a.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
        a.set_minor_formatter(NullFormatter())


def loglog_with_fit(ax: Any, x: Sequence[float], Y: Any, fit: dict | None, *, theory_slope: float | None = None,
                    label: str = "measured", color: str = "C0", integer_x: bool = True) -> None:
    """Mean ± standard error over seeds (columns of Y), the fitted line and the theory's slope, on log-log axes.

    One legend entry per series (the fitted line, with its slope and 95% interval; the points when
    there is no fit) and one for the theory's slope.  ``integer_x``: x holds integers (m, N), ticked
    at the measured values.  The caller sets the labels and calls :func:`legend` once per panel.
    """
    import numpy as np

    x = np.asarray(x, dtype=float)
    Y = np.asarray(Y, dtype=float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    mean = Y.mean(axis=1)
    err = Y.std(axis=1, ddof=1) / np.sqrt(Y.shape[1]) if Y.shape[1] > 1 else None
    ax.errorbar(x, mean, yerr=err, fmt="o", color=color, label=None if fit is not None else label, capsize=3)
    xs = np.geomspace(x.min(), x.max(), 50)
    if fit is not None:
        lo, hi = fit["ci"]
        ax.plot(xs, fit["prefactor"] * xs ** fit["exponent"], "-", color=color,
                label=f"{label}: slope {fit['exponent']:.2f} [{lo:.2f}, {hi:.2f}]")
    if theory_slope is not None:
        # anchored at the first measured point so only the slope is compared
        ax.plot(xs, mean[0] * (xs / x[0]) ** theory_slope, "--", color="gray", label=f"theory: slope {theory_slope:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    if integer_x:
        integer_ticks(ax, x, "x")


def save(fig: Any, path: str | Path) -> Path:
    """Apply the short-log-axis rule to every panel, run :data:`SAVE_HOOKS`, write the PNG and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        plain_short_log_axes(ax)
    fig.tight_layout()
    for hook in list(SAVE_HOOKS):
        hook(fig, path)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path
