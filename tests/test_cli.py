"""The command line: plugins listing, run from a config (with --backend), report, config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
    assert "core" in out and "activations: erf, gelu, identity, relu, sigmoid, softplus, tanh" in out
    assert "numpy    available" in out
    data = json.loads(_capture(["plugins", "--json"], capsys)[0])
    assert data["backends"]["numpy"]["available"] is True
    assert "two_layer" in data["plugins"]["core"]["registered"]["models"]


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
    assert "width m" in out and "fitted slope" in out
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
