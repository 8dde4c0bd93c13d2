"""scripts/gpu_check.sh's measuring half (scripts/gpu_bench.py) rehearsed at the tiniest sizes, so it cannot rot.

The GPU run itself needs a GPU; what is pinned here is that its Python part runs end to end on the
CPU (the Gram table, the moonshot through both sinks, the report files) and that its agreement
check catches a wrong kernel.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", os.path.join(ROOT, "scripts", "gpu_bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rehearsal_writes_the_gram_table_and_a_correct_moonshot(gpu_bench, tmp_path):
    rc = gpu_bench.main(["--rehearse", "--backends", "numpy", "--sizes", "48", "--d", "4", "--m", "32",
                         "--gemm", "32", "--moonshot", "100", "--moonshot-block", "40",
                         "--moonshot-backend", "numpy", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [(r["dtype"], r["n"]) for r in res["gram"]] == [("float32", 48), ("float64", 48)]
    assert all(r["gram_s"] > 0 and r["gram_flops_s"] > 0 and r["gemm_flops_s"] > 0 for r in res["gram"])
    moons = {r["dtype"]: r for r in res["moonshot"]}
    assert moons["float32"]["sink"] == "file" and moons["float64"]["sink"] == "memory"
    for r in moons.values():  # 100 rows in 40-row tiles: ragged last tiles, mirrored off-diagonal ones
        assert "error" not in r and r["max_rel_diff"] <= r["tolerance"]
    assert not list(tmp_path.glob("moonshot_*.npy")), "the moonshot's kernel file is removed after the check"
    table = (tmp_path / "table.md").read_text()
    assert "| numpy | cpu | float64 | 48 |" in table and "| numpy | cpu | float32 | 100 | 40 | file |" in table


def test_moonshot_check_flags_a_wrong_kernel(gpu_bench, tmp_path, capsys, monkeypatch):
    real = gpu_bench.stream_to_memory

    def corrupted(*args, **kwargs):
        K, split = real(*args, **kwargs)
        K[-1, :] += 1e-3 * np.abs(K).max()  # one wrong row, in the last (ragged) tile
        K[:, -1] = K[-1, :]
        return K, split

    monkeypatch.setattr(gpu_bench, "stream_to_memory", corrupted)
    monkeypatch.setattr(gpu_bench, "SAMPLE", 30)
    gpu_bench.moonshot_worker("numpy", "cpu", "float64", 30, 4, 16, 16, "memory", str(tmp_path))
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["max_rel_diff"] > row["tolerance"] and "differs from the CPU" in row["error"]
