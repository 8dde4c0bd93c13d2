#!/usr/bin/env python
"""Regenerate the documentation's figures and measured-exponent tables from real runs.

For every *variant* (an example config with a few overrides) this script writes a temporary TOML,
runs it with :func:`ntkframe.runs.experiments.run_experiment`, and copies into ``docs/figures/<variant>/``

- the run's PNG figures, unchanged;
- ``summary.md``: a small Markdown table of the fitted exponents (with their 95 % t intervals over
  per-seed slopes) beside the theory's value and the verdict, read from the run's ``results.json``;
  the tutorials include it;
- ``report.md``: the experiment's own full report of the run.

Nothing in ``docs/figures/`` is drawn by hand: rerun this script to refresh it.

    python docs/make_figures.py                     # full size, into docs/figures/ (10-20 min on 2 cores)
    python docs/make_figures.py --only drift        # the four drift variants (a kind or a variant name)
    python docs/make_figures.py --quick --out /tmp/figs   # tiny sizes, for a test (seconds)

The run folders themselves go to ``--runs`` (default ``runs/docs/`` at full size, ``OUT/_runs``
with ``--quick``).  Full-size runs spread their tasks over ``--workers`` processes
(``executor="processes"``); ``--quick`` runs serially by default, since spawning workers would
cost more than its tiny sweeps.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("MPLBACKEND", "Agg")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
EXAMPLES = ROOT / "examples"

#: the ``[model]`` overrides of the two training modes every theory experiment is run in
HIDDEN_SIGN = {"train": "hidden", "output_init": "sign"}
BOTH = {"train": "both", "output_init": "gaussian"}


def _variants() -> dict[str, tuple[str, dict[str, dict[str, Any]]]]:
    """variant name -> (example config, {table: {key: value}} overrides)."""
    out: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}
    for kind in ("drift", "concentration"):
        for act in ("softplus", "relu"):
            for train, model in (("hidden", HIDDEN_SIGN), ("both", BOTH)):
                out[f"{kind}-{act}-{train}"] = (f"{kind}.toml", {"model": {"activation": act, **model}})
    out["linearisation"] = ("linearisation.toml", {})
    out["convergence"] = ("convergence.toml", {})
    out["train"] = ("train.toml", {})
    return out


VARIANTS = _variants()

#: tiny sizes per experiment kind (``--quick``): every code path, in seconds
QUICK: dict[str, dict[str, dict[str, Any]]] = {
    "drift": {"experiment": {"widths": [16, 32, 64], "ns": [8, 16], "seeds": 2, "times": [1.0, 5.0, 10.0],
                             "t_for_width_fit": 10.0, "n_for_width_fit": 8, "m_for_time_fit": 64,
                             "m_for_n_fit": 64}},
    "concentration": {"experiment": {"widths": [16, 32, 64], "ns": [8, 16], "seeds": 4}},
    "linearisation": {"experiment": {"widths": [16, 64], "seeds": 2, "times": [1.0, 10.0]},
                      "data": {"n": 8, "n_test": 16}},
    "convergence": {"experiment": {"widths": [32, 64], "seeds": 2, "n_times": 11}, "data": {"n": 8}},
    "train": {"experiment": {"t_max": 10.0, "n_times": 6}, "model": {"m": 64}, "data": {"n": 16, "n_test": 8}},
}


# -- TOML -----------------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as a TOML value")


def dump_toml(doc: dict[str, dict[str, Any]]) -> str:
    """A config (one level of tables of scalars and lists) as TOML text."""
    lines = []
    for table, body in doc.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in body.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


def merge(base: dict[str, dict[str, Any]], *overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = copy.deepcopy(base)
    for ov in overrides:
        for table, body in ov.items():
            out.setdefault(table, {}).update(body)
    return out


# -- summaries --------------------------------------------------------------------------------------
def _num(v: Any, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return format(v, spec)


def _ci(fit: dict[str, Any] | None) -> str:
    return "—" if not fit else f"[{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]"


def _exp(fit: dict[str, Any] | None) -> str:
    return "no fit" if not fit else f"{fit['exponent']:.3f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _no_fits(items: list[tuple[str, str | None]]) -> list[str]:
    """Footnotes: why a row has no fit."""
    return ["", *(f"No fit for {what}: {why}." for what, why in items)] if items else []


def _word(fit: dict[str, Any] | None, theory: float | None, bound: bool = True) -> str:
    """The verdict's word (consistent / NOT consistent / undecided (K seeds) / reported), as the reports give it."""
    from ntkframe.runs.experiments.verdicts import judge

    if not fit:
        return "—"
    v = judge(fit, theory, bound=bound)
    return v["verdict"] + (f" (seeds needed ≈ {v['seeds_needed']})" if v["verdict"] == "undecided" and v["seeds_needed"]
                           else "")


HEAD = ["quantity", "against", "at", "measured slope", "95% CI", "theory", "verdict"]


def summary_drift(res: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    from ntkframe.runs.experiments.drift.analyse import drift_setting

    setting = drift_setting(cfg["model"])
    rows = []
    for s in res["fits"].values():
        fixed = ", ".join(f"{k} = {v:g}" for k, v in s["fixed"].items())
        theory, word = "no claim", _word(s["fit"], None)
        if s["axis"] == "N" and s["metric"] == "kernel_drift" and setting["n_bounds"]:
            theory = " or ".join(f"≤ {p:g}" for p in setting["n_bounds"]) + " (bound)"
            word = "; ".join(f"N^{p:g}: {_word(s['fit'], p)}" for p in setting["n_bounds"])
        elif s["theory_slope"] is not None:
            theory, word = f"≤ {s['theory_slope']:g} (bound)", _word(s["fit"], s["theory_slope"])
        if setting["kind"] == "none":
            theory = f"none for {res['activation']}"
        rows.append([s["symbol"], s["axis"], fixed, _exp(s["fit"]), _ci(s["fit"]), theory, word])
    theorem = {"smooth": "the smooth bound of docs/theory.md §4.1", "du": "Du et al. 2019, Lemmas 3.2–3.3",
               "none": "no theorem covers this setting"}[setting["kind"]]
    return [f"Bound: {theorem}.", ""] + _table(HEAD, rows) + _no_fits(
        [(f"{s['symbol']} against {s['axis']}", s.get("error")) for s in res["fits"].values() if not s["fit"]])


def summary_concentration(res: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    ns, widths = res["ns"], res["widths"]
    rows = []
    for k in ("spectral", "frobenius"):
        for n in ns:
            f = res["fits_vs_m"][k][str(n)]
            rows.append([res["metrics"][k], "m", f"n = {n}", _exp(f), _ci(f), "-0.5 (asymptotic rate)",
                         _word(f, -0.5, bound=False)])
    for k in ("spectral", "frobenius"):
        tn = res["theory_slope_n"].get(k)
        f = res["fits_vs_n"][k][str(widths[-1])]
        rows.append([res["metrics"][k], "n", f"m = {widths[-1]}", _exp(f), _ci(f),
                     f"≤ {_num(tn)} (bound n√log(n/δ))", _word(f, tn) if tn is not None else "—"])
    prob = res["probability"]
    cr = prob.get("crossing") or {}
    f = cr.get("fit")
    rows.append(["crossing width m*", "n² log(n/δ)/ε²", f"ε = {_num(prob.get('epsilon'), '.3g')}, δ = {prob['delta']:g}",
                 _exp(f), _ci(f), "≤ 1 (bound)", _word(f, 1.0)])
    why = None if f else ("crossings per n: " + ", ".join(f"n = {n}: {st}" for n, st in zip(ns, cr.get("status", [])))
                          + " (ok: inside the sweep; below/above: censored at the smallest/largest width)")
    return _table(HEAD, rows) + _no_fits([("the crossing width", why)] if why else [])


def summary_linearisation(res: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    from ntkframe.runs.experiments.linearisation import GAPS

    times = res["times"]
    rows = []
    for k, (sym, slope, bound) in GAPS.items():
        theory = "no claim" if slope is None else (f"≤ {slope:g} (bound)" if bound else f"{slope:g}")
        for t, f in zip(times, res["fits"][k]):
            if t == times[-1] or k in ("gap_net_lin_test", "gap_lin_hstar_test"):
                rows.append([sym, f"t = {t:g}", _exp(f), _ci(f), theory, _word(f, slope, bound)])
    f = res.get("fit_kernel_rel_error")
    rows.append(["‖H(0) − H*‖_F / ‖H*‖_F (train)", "t = 0", _exp(f), _ci(f), "-0.5", _word(f, -0.5, bound=False)])
    d = res.get("data", {})
    head = []
    if "hstar_lambda_min" in d:
        n, m = cfg["data"]["n"], str(res["widths"][-1])
        head = [f"λ_min(H*)/N = {d['hstar_lambda_min'] / n:.3g}; ‖H(0) − H*‖₂ ≈ {d['kernel_error_spectral'][m]:.3g} at "
                f"m = {m}, against λ_min(H*) = {d['hstar_lambda_min']:.3g}; eigenvalues of H* below it: "
                f"{d['hstar_eigs_below_fluctuation'][m]} of {n}.", ""]
    return head + _table(["distance, against width m", "at", "measured slope", "95% CI", "theory", "verdict"], rows)


def summary_convergence(res: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    rows = [["max ‖r(t)‖² / moving envelope, all t > 0, all runs", _num(res.get("max_ratio_moving"), ".6f"), "—",
             f"≤ 1 (theorem; tolerance {res['tolerance']:g})",
             "holds" if res.get("envelope_holds") else "EXCEEDED"]]
    dev = res["lambda_deviation"]
    rows.append(["slope of the relative deviation of λ_min(H(0)) from λ_min(H*), against m", _exp(dev["fit"]), _ci(dev["fit"]),
                 f"≤ {dev['theory_slope']:g} (bound)", _word(dev["fit"], dev["theory_slope"])])
    for b in res["by_width"]:
        ci = "—" if not b["rate_ci"] else f"[{b['rate_ci'][0]:.4g}, {b['rate_ci'][1]:.4g}]"
        theory = ("—" if b["rate_star"] is None else
                  f"2λ_min(H*)/N = {b['rate_star']:.4g}; 2λ_min(H(0))/N = {b['rate_frozen_mean']:.4g}")
        rows.append([f"late-time rate κ of ‖r(t)‖² ≈ C e^(−κt), m = {b['m']}", _num(b["rate_mean"], ".4g"), ci, theory,
                     "reported"])
    for b in res["by_width"]:
        rows.append([f"max ratio to exp(−2λ_min(H(0))t/N)‖r(0)‖², m = {b['m']}", _num(b["max_ratio_frozen"], ".4f"),
                     "—", "≤ 1 for the linearised model only", "reported"])
    return _table(["quantity", "measured", "95% CI", "theory", "verdict"], rows)


def summary_train(res: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    s = res.get("summary", {})
    names = [("loss0", "training loss at t = 0"), ("loss_final", "training loss at the end"),
             ("test_loss_final", "test loss at the end"),
             ("kernel_drift_rel_final", "‖H(t) − H(0)‖₂ / ‖H(0)‖₂ at the end"),
             ("param_drift_final", "‖θ(t) − θ(0)‖ at the end"),
             ("param_drift_neuron_max_final", "max_r ‖θ_r(t) − θ_r(0)‖ at the end"),
             ("lambda_min_final", "λ_min(H(t)) at the end"), ("lambda_max_final", "λ_max(H(t)) at the end"),
             ("linearised_gap_final", "‖f(X, t) − f_lin(X, t)‖₂ at the end (train)"),
             ("linearised_gap_test_final", "‖f − f_lin‖₂ at the end (test)")]
    rows = [[label, _num(s.get(k), ".4g")] for k, label in names if k in s]
    rows.insert(0, ["final time t", _num(s.get("t_final"), ".4g")])
    return _table(["quantity", "value"], rows)


SUMMARIES: dict[str, Callable[[dict[str, Any], dict[str, Any]], list[str]]] = {
    "drift": summary_drift, "concentration": summary_concentration, "linearisation": summary_linearisation,
    "convergence": summary_convergence, "train": summary_train,
}


def _setting(kind: str, cfg: dict[str, Any]) -> str:
    mc, ec, dc = cfg["model"], cfg["experiment"], cfg["data"]
    parts = [f"σ = {mc['activation']}", f"train = {mc['train']}"]
    if "output_init" in mc:
        parts.append(f"a ~ {mc['output_init']}")
    if "widths" in ec:
        parts.append(f"widths {ec['widths'][0]}…{ec['widths'][-1]}")
    elif "m" in mc:
        parts.append(f"m = {mc['m']}")
    if "seeds" in ec:
        parts.append(f"{ec['seeds']} seeds")
    if "n" in dc:
        parts.append(f"N = {dc['n']}")
    if "ns" in ec:
        parts.append(f"{'n' if kind == 'concentration' else 'N'} in {ec['ns']}")
    return ", ".join(parts)


def write_summary(variant: str, run_dir: Path, dest: Path, seconds: float) -> Path:
    """``dest/summary.md`` from the run's results.json and config.json."""
    res = json.loads((run_dir / "results.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    kind = cfg["experiment"]["kind"]
    prov = res.get("provenance", {})
    be = prov.get("backend", {}) if isinstance(prov.get("backend"), dict) else {}
    versions = prov.get("versions", {}) if isinstance(prov.get("versions"), dict) else {}
    lines = [f"**{variant}** ({_setting(kind, cfg)}); "
             f"{be.get('name', cfg['backend']['name'])} backend, {be.get('dtype', cfg['backend']['dtype'])}"
             + (f", ntkframe {versions['ntkframe']}" if "ntkframe" in versions else "")
             + f"; sweep {res.get('wall_time_s', float('nan')):.0f} s, whole run {seconds:.0f} s "
             f"({res.get('executor', {}).get('kind', '?')} executor). Generated by `docs/make_figures.py`.", ""]
    lines += SUMMARIES[kind](res, cfg)
    failed = res.get("failed_tasks") or []
    if failed:
        lines += ["", f"{len(failed)} task(s) failed and are left out: "
                  + "; ".join(f"{f['key']}: {f['error']}" for f in failed[:3])]
    path = dest / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- driver -----------------------------------------------------------------------------------------
def select(only: list[str] | None) -> list[str]:
    if not only:
        return list(VARIANTS)
    names = []
    for item in only:
        for want in item.split(","):
            want = want.strip()
            hit = [v for v in VARIANTS if v == want or v.split("-")[0] == want]
            if not hit:
                raise SystemExit(f"--only {want!r}: no such variant or experiment; variants: {', '.join(VARIANTS)}")
            names += [v for v in hit if v not in names]
    return names


def make_variant(variant: str, out: Path, runs: Path, *, quick: bool, executor: str, workers: int) -> dict[str, Any]:
    from ntkframe.runs.config import load_toml
    from ntkframe.runs.experiments import run_experiment

    example, overrides = VARIANTS[variant]
    base = load_toml(EXAMPLES / example)
    kind = base["experiment"]["kind"]
    doc = merge(base, overrides, QUICK.get(kind, {}) if quick else {})
    doc.setdefault("output", {})["progress"] = False
    run_dir = runs / variant
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    toml_path = runs / f"{variant}.toml"
    toml_path.write_text(f"# {variant}: examples/{example} with the overrides of docs/make_figures.py"
                         + (" (--quick)" if quick else "") + "\n" + dump_toml(doc))
    t0 = time.perf_counter()
    run_experiment(toml_path, out=run_dir, executor=executor, workers=workers if executor != "serial" else None,
                   progress=False, echo=lambda *a, **k: None)
    seconds = time.perf_counter() - t0
    dest = out / variant
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    pngs = sorted(run_dir.glob("*.png"))
    for p in pngs:
        shutil.copyfile(p, dest / p.name)
    shutil.copyfile(run_dir / "report.md", dest / "report.md")
    write_summary(variant, run_dir, dest, seconds)
    return {"variant": variant, "seconds": seconds, "figures": [p.name for p in pngs], "dir": str(dest)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a test); needs --out")
    ap.add_argument("--out", type=Path, default=None, help="where the figure folders go (default docs/figures)")
    ap.add_argument("--runs", type=Path, default=None, help="where the run folders go")
    ap.add_argument("--only", action="append", default=None,
                    help=f"a variant or an experiment kind (repeatable, or comma-separated): {', '.join(VARIANTS)}")
    ap.add_argument("--executor", choices=("serial", "processes", "dask"), default=None,
                    help="executor of the runs (default: processes, serial with --quick)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = ap.parse_args(argv)
    if args.quick and args.out is None:
        ap.error("--quick writes tiny-size figures: give --out DIR (docs/figures holds the full-size ones)")
    out = (args.out or DOCS / "figures").resolve()
    runs = (args.runs or (out / "_runs" if args.quick else ROOT / "runs" / "docs")).resolve()
    executor = args.executor or ("serial" if args.quick else "processes")
    names = select(args.only)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = []
    for name in names:
        print(f"[{time.perf_counter() - t0:7.1f} s] {name} ...", flush=True)
        info = make_variant(name, out, runs, quick=args.quick, executor=executor, workers=args.workers)
        print(f"[{time.perf_counter() - t0:7.1f} s] {name}: {info['seconds']:.1f} s, "
              f"{', '.join(info['figures'])} -> {info['dir']}", flush=True)
        done.append(info)
    print(f"done: {len(done)} variant(s) in {time.perf_counter() - t0:.1f} s; figures in {out}; runs in {runs}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "plugins"))
    sys.exit(main())
