"""The command line: plugins listing, run from a config (with --backend), report, config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import types

import numpy as np
import pytest

import ntkframe as nf
from ntkframe import plugins
from ntkframe.runs.cli import main

ROOT = Path(__file__).resolve().parent.parent

TINY = """
[backend]
name = "numpy"
[experiment]
kind = "width"
widths = [16, 64]
reference_width = 256
seeds = 3
[model]
activation = "{act}"
[data]
n = 10
d = 3
"""


def _cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_plugins_command_lists_plugins_backends_and_registrations(capsys):
    out, _ = _capture(["plugins"], capsys)
    core = next(l for l in out.splitlines() if l.startswith("  core "))
    assert core.split()[:4] == ["core", "ntkframe", nf.__version__, "built-in"]
    assert "activations: erf, gelu, identity, relu, sigmoid, softplus, tanh" in out
    numpy_row = next(l for l in out.splitlines() if l.startswith("  numpy ") and "available" in l)
    assert numpy_row.split()[:3] == ["numpy", "available", "numpy"]
    data = json.loads(_capture(["plugins", "--json"], capsys)[0])
    assert data["backends"]["numpy"]["available"] is True
    assert "two_layer" in data["plugins"]["core"]["registered"]["models"]
    assert data["plugins"]["numpy"]["builtin"] is True and data["plugins"]["numpy"]["distribution"] == "ntkframe"


def test_plugins_columns_stay_aligned_with_a_long_backend_name(capsys):
    class Long(nf.Backend):
        name = "a_rather_long_backend_name"

        @classmethod
        def availability(cls):
            return False, "not really a backend"

    plugin = types.SimpleNamespace(register_backends=nf.hookimpl(lambda register: register(Long.name, Long)))
    plugins.register_plugin(plugin, name="long-name-plugin")
    try:
        out, _ = _capture(["plugins"], capsys)
    finally:
        plugins.unregister_plugin("long-name-plugin")
    section = out.split("Backends:")[1].split("\n\n")[0].splitlines()[1:]
    rows = [l for l in section if l.startswith("  ") and not l.strip().startswith(("-", "("))]
    assert any(r.startswith("  a_rather_long_backend_name") for r in rows)
    status_col = {len(r) - len(r[2:].split(None, 1)[1]) for r in rows}  # where the second column starts
    assert len(status_col) == 1, rows
    assert "long-name-plugin" in out and "registered in process" not in out.split("Backends:")[1]


def test_plugins_imports_no_framework_unless_devices_are_asked_for():
    code = ("import sys\nfrom ntkframe.runs.cli import main\ntry:\n    main(['plugins'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'jax', 'cupy') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_plugins_devices_lists_each_available_backends_devices(capsys):
    out, _ = _capture(["plugins", "--devices"], capsys)
    header = next(l for l in out.split("Backends:")[1].splitlines() if l.strip().startswith("backend"))
    assert header.split() == ["backend", "status", "plugin", "devices", "details"]
    numpy_row = next(l for l in out.split("Backends:")[1].splitlines() if l.startswith("  numpy "))
    assert numpy_row.split()[3] == "cpu"


def test_plugins_details_prints_the_docstring_and_config_fields(capsys):
    out, _ = _capture(["plugins", "--details", "two_layer"], capsys)
    assert out.startswith("two_layer: model registered by plugin 'core'")
    assert "ntkframe.core.models.TwoLayerNet" in out and "H = (1/m)" in out
    from ntkframe.runs.config import Field

    class WithFields:
        """A documented test class: x ↦ 2x."""

        config_fields = [Field("scale", float, 2.0, "the factor")]

    plugins.register_plugin(types.SimpleNamespace(register_losses=nf.hookimpl(
        lambda register: register("doubling", WithFields))), name="fields-plugin")
    try:
        out, _ = _capture(["plugins", "--details", "DOUBLING"], capsys)
    finally:
        plugins.unregister_plugin("fields-plugin")
    assert "A documented test class: x ↦ 2x." in out and "Config fields:" in out
    row = next(l for l in out.splitlines() if l.strip().startswith("scale"))
    assert row.split()[:3] == ["scale", "number", "2.0"] and "the factor" in row
    code, _, err = _cli(["plugins", "--details", "nope"], capsys)
    assert code == 2 and "no plugin registered a name 'nope'; registered:" in err and "two_layer" in err


def test_help_shows_every_command_description_in_full(capsys):
    out, _ = _capture(["--help"], capsys)
    flat = " ".join(out.split())
    assert ("plugins List every plugin (version, distribution, what it registered, its commands), backend "
            "availability and failed plugins with the reason.") in flat
    assert "Run the experiment described by CONFIG (a TOML file) and write its run folder." in flat
    assert "..." not in out.split("Commands:")[1]


def _capture(args, capsys):
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    out = capsys.readouterr()
    return out.out, out.err


def test_run_writes_the_run_folder_with_results_provenance_and_plot(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.format(act="softplus"))
    out, _ = _capture(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"], capsys)
    run = tmp_path / "run"
    assert "width m" in out and "fitted exponents" in out and "slope" in out and "undecided" in out
    res = json.loads((run / "results.json").read_text())
    assert len(res["points"]) == 2 * 3
    assert all(p["rel_fro"] > 0 for p in res["points"])
    prov = res["provenance"]
    assert prov["backend"] == {"name": "numpy", "device": "cpu", "dtype": "float64"}
    assert prov["versions"]["numpy"] == np.__version__ and "blas" in prov and "git_commit" in prov
    assert (run / "width.png").stat().st_size > 1000
    assert (run / "report.md").read_text().startswith("# Width convergence")
    assert json.loads((run / "config.json").read_text())["experiment"]["widths"] == [16, 64]
    arrays = np.load(run / "arrays.npz")
    assert arrays["rel_fro"].shape == (2, 3)
    (run / "width.png").unlink()
    (run / "report.md").unlink()
    _capture(["report", str(run)], capsys)
    assert (run / "width.png").exists() and (run / "report.md").exists()


def test_backend_option_overrides_the_config(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.format(act="tanh"))
    _capture(["run", str(cfg), "--out", str(tmp_path / "r32"), "--dtype", "float32", "--no-progress"], capsys)
    res = json.loads((tmp_path / "r32" / "results.json").read_text())
    assert res["provenance"]["backend"]["dtype"] == "float32"
    code, _, err = _cli(["run", str(cfg), "--backend", "nope", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown backend 'nope'; available:" in err and "numpy" in err


@pytest.mark.parametrize("text,match", [
    ('[experiment]\nkind = "width"\nwidthz = [1]\n', r"unknown key 'widthz' in \[experiment\]; allowed: .*widths"),
    ('[experiment]\nkind = "width"\nwidths = [0, 4]\n', r"'widths' = \[0, 4\]: every entry must be > 0"),
    ('[experiment]\nkind = "width"\nseeds = "two"\n', r"'seeds' = 'two' \(str\); expected a integer"),
    ('[experiment]\nkind = "nope"\n', r"unknown experiment kind 'nope'; available: .*width"),
    ('[backend]\ndtype = "float16"\n[experiment]\nkind = "width"\n', r"'dtype' = 'float16'; allowed: 'float64', 'float32'"),
    ('[model]\nactivation = "relu7"\n[experiment]\nkind = "width"\n', r"unknown activation; allowed: erf"),
    ('[modle]\n[experiment]\nkind = "width"\n', r"unknown table \[modle\]"),
    ('[experiment]\nkind = "width"\nwidths = [', r"invalid TOML"),
])
def test_config_errors_name_the_file_key_and_what_is_allowed(tmp_path, capsys, text, match):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    code, _, err = _cli(["run", str(cfg), "--out", str(tmp_path / "x")], capsys)
    assert code == 2
    import re
    assert re.search(match, err), err
    assert "bad.toml" in err


def test_console_script_runs_quickstart_from_a_subprocess(tmp_path):
    """The README's main job, exactly as a user types it (module form, so it needs no install)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-m", "ntkframe.runs.cli", "run", str(ROOT / "examples" / "quickstart.toml"),
                          "--out", str(tmp_path / "qs")], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert "‖H(t) − H(0)‖₂ vs m" in res.stdout and "2048" in res.stdout
    assert json.loads((tmp_path / "qs" / "results.json").read_text())["widths"] == [32, 64, 128, 256, 512, 1024, 2048]
    assert (tmp_path / "qs" / "drift.png").exists()
