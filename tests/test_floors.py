"""asv_bench/measure_floors.py (the issue-18 table of docs/benchmarks.md) rehearsed at tiny sizes.

What is pinned: every row carries the floor's pieces and the implementation's own stages, the
floor is the sum of its pieces' best candidates times their counts, the tables are printed, and
a floor that counted a piece twice would be caught by the arithmetic check.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def measure_floors():
    sys.path.insert(0, os.path.join(ROOT, "asv_bench"))
    spec = importlib.util.spec_from_file_location("measure_floors", os.path.join(ROOT, "asv_bench", "measure_floors.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_reports_floor_pieces_and_stages(measure_floors, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert measure_floors.main(["--quick", "--sizes", "q1", "--backends", "numpy", "--repeats", "3",
                                "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    (gram,) = data["gram"]
    (flow,) = data["flow"]
    for row, stages in ((gram, {"X Wᵀ", "activation", "combine"}), (flow, {"F(θ)", "X Wᵀ", "activation"})):
        assert set(row["stages"]) == stages and all(t > 0 for t in row["stages"].values())
        total = sum(p["count"] * p["seconds"] for p in row["pieces"].values())
        assert row["floor_s"] == pytest.approx(total, rel=1e-12)
        assert row["fraction"] == pytest.approx(row["floor_s"] / row["time_s"], rel=1e-12)
        for p in row["pieces"].values():  # the best candidate is the fastest one
            assert p["seconds"] == min(p["candidates"].values())
    assert gram["pieces"]["S Sᵀ and D Dᵀ (N × m)"]["count"] == 2  # each symmetric product once
    assert set(gram["pieces"]["S Sᵀ and D Dᵀ (N × m)"]["candidates"]) == {"half-output GEMM", "syrk (A @ A.T)"}
    assert flow["pieces"]["X Wᵀ"]["count"] == 4 and flow["pieces"]["Gᵀ X"]["count"] == 4
    assert "Where the time goes" in printed and "| q1 | float64 | numpy |" in printed
    assert "| numpy | " in printed.split("One RK4 step")[1]
    # the symmetric product's ceiling: floor / (floor + 2 × (own − best)), NumPy's own being syrk
    sym = gram["pieces"]["S Sᵀ and D Dᵀ (N × m)"]
    own = sym["candidates"]["syrk (A @ A.T)"]
    ceiling = gram["floor_s"] / (gram["floor_s"] + 2 * max(0.0, own - sym["seconds"]))
    assert f"| {ceiling:.2f} |" in printed.split("Where the time goes")[1].split("One RK4")[0]
    # --from-json prints the same tables again without measuring
    assert measure_floors.main(["--from-json", str(out)]) == 0
    again = capsys.readouterr().out
    assert again.split("Two-layer softplus", 1)[1].strip() == printed.split("Two-layer softplus", 1)[1].strip()


def test_flops_count_symmetric_products_once(measure_floors):
    import floors

    n, d, m = 1024, 64, 4096
    flops = floors.gram_flops(n, d, m)
    # X Wᵀ: 2Ndm; S Sᵀ and D Dᵀ: N²m each (half of a full 2N²m GEMM); X Xᵀ: N²d
    assert flops == {"X Wᵀ": 2 * n * d * m, "S Sᵀ, D Dᵀ": 2 * n * n * m, "X Xᵀ": n * n * d}
