"""Verdict wording shared by every experiment's report.md and terminal summary, all through :func:`fitting.verdict`.

One fit, one sentence: a measured exponent's interval next to the theory's exponent θ is

- **consistent** / **NOT consistent** / **undecided** (with the estimated seeds needed) — the three
  outcomes of :func:`ntkframe.runs.fitting.verdict` (tolerance 1/4 on the exponent);
- **reported** — when the theory makes no claim about that exponent (the interval is given, nothing
  is tested).

The report states the interval method once (:func:`intervals_note`), so the sentences here leave it
out; report.md and the terminal summary use the same sentence for the same fit.  A run with fewer
seeds than its experiment's default is a *quick* run: its undecided verdicts say so.
"""

from __future__ import annotations

from typing import Any

from ..fitting import TOLERANCE, verdict

WORDS = ("consistent", "NOT consistent", "undecided", "reported")


def judge(fit: dict[str, Any], theory: float | None, *, bound: bool = True, quick: bool = False) -> dict[str, Any]:
    """{"verdict", "text", "seeds_needed"} of ``fit`` against θ = ``theory`` (None: no claim, "reported").

    ``bound=True``: the theory says p ≤ θ (an upper bound); ``bound=False``: p = θ.  The text is
    :func:`fitting.verdict`'s without the interval method; with ``quick`` an undecided verdict says it
    comes from a quick run, whose intervals are too wide to decide.
    """
    lo, hi = fit["ci"]
    if theory is None:
        return {"verdict": "reported", "seeds_needed": None,
                "text": f"reported (no claim is tested): the {fit['level']:.0%} interval [{lo:.3f}, {hi:.3f}]"}
    v = verdict({k: x for k, x in fit.items() if k != "method"}, theory, bound, tol=TOLERANCE)
    if quick and v["verdict"] == "undecided":
        v = {**v, "text": "undecided — a quick run (under half the default seeds): " + v["text"][len("undecided — "):]}
    return v


def sentence(fit: dict[str, Any] | None, theory: float | None, *, bound: bool = True, quick: bool = False,
             error: str | None = None) -> str:
    """The verdict sentence of one fit (or "no fit (why)")."""
    if not fit:
        return f"no fit ({error})" if error else "no fit"
    return judge(fit, theory, bound=bound, quick=quick)["text"]


def measured(fit: dict[str, Any]) -> str:
    """"slope p, 95% CI [lo, hi]" — the numbers a report line gives before its verdict."""
    return f"slope {fit['exponent']:.3f}, {fit['level']:.0%} CI [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]"


def terminal_line(label: str, fit: dict[str, Any] | None, theory: float | None, *, bound: bool = True,
                  quick: bool = False, error: str | None = None) -> str:
    """One line of the terminal summary: the label, the slope and the same verdict sentence as report.md."""
    if not fit:
        return f"  {label}: {sentence(fit, theory, error=error)}"
    return f"  {label}: slope {fit['exponent']:.3f}; {sentence(fit, theory, bound=bound, quick=quick)}"


def default_seeds(part: Any) -> int | None:
    """The default of ``[experiment] seeds`` in the experiment's schema (None when it has no such key)."""
    for f in getattr(type(part), "schema", {}).get("experiment", []):
        if f.name == "seeds":
            return f.default
    return None


def is_quick(part: Any) -> bool:
    """A run with fewer than half its experiment's default seeds (a ``--quick`` or test-sized run: the
    quickstart's 5 of drift's 6 is not one; docs/make_figures.py --quick's 2 of 6 is)."""
    default = default_seeds(part)
    return default is not None and 2 * part.config["experiment"].get("seeds", default) < default


def method_of(fits: list[dict[str, Any] | None]) -> str | None:
    """The interval method of the first fit that has one (the same for every fit of one run)."""
    return next((f["method"] for f in fits if f and f.get("method")), None)


def intervals_note(part: Any, fits: list[dict[str, Any] | None]) -> str:
    """The paragraph every report.md has: how many seeds, which interval method, what the verdicts mean."""
    seeds = part.config["experiment"].get("seeds")
    method = method_of(fits) or "no fit"
    text = (f"**Intervals**: {seeds} seeds; every fitted exponent carries a 95% interval: {method} "
            "(`ntkframe.runs.fitting`: each seed's own log-log slope, and a Student-t interval over the seeds, "
            "calibrated by measured coverage). A verdict is *consistent* when the interval lies within "
            f"{TOLERANCE:g} of the theory's exponent (or below an upper bound), *NOT consistent* when it excludes "
            "it, and *undecided* when it contains the theory's exponent and also values more than "
            f"{TOLERANCE:g} from it — with the estimated number of seeds that would decide.")
    if is_quick(part):
        text += (f" This is a **quick run** ({seeds} seeds against the default {default_seeds(part)}): its intervals "
                 "are too wide to decide, so expect undecided verdicts.")
    return text


def summary_header(part: Any, fits: list[dict[str, Any] | None]) -> str:
    """The terminal summary's header line over the fitted exponents."""
    method = method_of(fits) or "no fit"
    quick = " — a quick run: intervals too wide to decide" if is_quick(part) else ""
    return f"fitted exponents (95% intervals: {method}){quick}:"
