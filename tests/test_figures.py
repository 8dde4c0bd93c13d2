"""Every experiment's figures follow the rules of ntkframe.runs.plotting: labelled axes, integer ticks on
integer axes, no mantissa (a×10ᵇ) tick labels, one naming style — checked on the matplotlib Figure objects
that plotting.save hands to its hooks, for every experiment run at tiny size."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("matplotlib")

from test_experiments_flow import DRIFT_TINY  # noqa: E402 - the experiment tests' tiny configs
from test_experiments_theory import CONCENTRATION, LINEARISATION  # noqa: E402

from ntkframe.runs import plotting  # noqa: E402
from ntkframe.runs.driver import run_experiment  # noqa: E402

QUIET = {"echo": lambda *a, **k: None, "progress": False}

#: tiny configs, one per experiment (the experiment tests' own, where they have one), and the
#: settings whose figures differ (relu with only W trained; the circle data of linearisation)
TINY = {
    "drift-softplus": DRIFT_TINY.format(act="softplus", train="both", init="gaussian"),
    "drift-relu-hidden": """
[experiment]
kind = "drift"
widths = [8, 32]
ns = [4, 8]
seeds = 2
times = [0.5, 2.0]
[model]
activation = "relu"
train = "hidden"
output_init = "sign"
[data]
d = 3
""",
    "concentration": CONCENTRATION.format(act="softplus", train="both", init="gaussian", extra=""),
    "linearisation": LINEARISATION.format(dataset="teacher", integrator="rk4"),
    "linearisation-circle": LINEARISATION.format(dataset="regression_1d", integrator="dormand_prince"),
    "convergence": """
[experiment]
kind = "convergence"
widths = [16, 64]
seeds = 2
efolds = 1.0
n_times = 11
[data]
n = 6
d = 4
""",
    "train": """
[experiment]
kind = "train"
t_max = 5.0
n_times = 5
checkpoint = false
[model]
m = 32
[data]
n = 8
n_test = 4
d = 3
""",
    "width": """
[experiment]
kind = "width"
widths = [16, 64]
reference_width = 256
seeds = 2
[data]
n = 8
d = 3
""",
}

#: x/y labels of axes that hold integers (widths m, numbers of inputs N or n)
INTEGER_LABEL = re.compile(r"^(width m|number of inputs [Nn])")


def _labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]


def check_figure(fig, path) -> list[str]:
    """The rule violations of one figure (empty when it follows every rule)."""
    fig.canvas.draw()
    problems = []
    title = fig._suptitle.get_text() if fig._suptitle else ""
    if "init=" in title or "init =" in title:
        problems.append(f"{path.name}: title {title!r} names the output init as 'init=' (use 'a ~ ...')")
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or not (ax.lines or ax.collections or ax.patches):
            continue
        where = f"{path.name} panel {i} ({ax.get_title()!r})"
        for name, axis, label in (("x", ax.xaxis, ax.get_xlabel()), ("y", ax.yaxis, ax.get_ylabel())):
            if not label.strip():
                problems.append(f"{where}: no {name} label")
            texts = _labels(axis)
            bad = [t for t in texts if "times" in t or "×" in t]
            if bad:
                problems.append(f"{where}: {name} tick labels with a mantissa: {bad}")
            if INTEGER_LABEL.match(label):
                not_int = [t for t in texts if not re.fullmatch(r"\d+", t.replace("−", "-"))]
                if not_int:
                    problems.append(f"{where}: integer {name} axis ({label!r}) has labels {not_int}")
    return problems


@pytest.fixture
def captured(monkeypatch):
    seen: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(plotting, "SAVE_HOOKS", [lambda fig, path: seen.append((path.name, check_figure(fig, path)))])
    return seen


@pytest.mark.parametrize("name", list(TINY))
def test_every_figure_has_labels_and_integer_ticks(tmp_path, captured, name):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(TINY[name])
    run_experiment(cfg, out=tmp_path / "run", **QUIET)
    assert captured, f"{name}: no figure went through plotting.save"
    problems = [p for _, ps in captured for p in ps]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_missing_label_and_a_mantissa_tick(tmp_path):
    """The rules can fail: an unlabelled panel with 2×10¹-style ticks on an integer axis is reported."""
    plt = plotting.pyplot()
    fig, ax = plt.subplots()
    ax.loglog([20, 30, 40], [2.2, 2.8, 3.4], "o")
    ax.set_xlabel("width m")
    problems = check_figure(fig, tmp_path / "bad.png")
    plt.close(fig)
    assert any("no y label" in p for p in problems)
    assert any("mantissa" in p or "integer x axis" in p for p in problems)
    fig, ax = plt.subplots()
    plotting.loglog_with_fit(ax, [20, 30, 40], [2.2, 2.8, 3.4], None, label="y")
    ax.set_xlabel("width m")
    ax.set_ylabel("y")
    plotting.plain_short_log_axes(ax)
    assert check_figure(fig, tmp_path / "good.png") == []
    plt.close(fig)
