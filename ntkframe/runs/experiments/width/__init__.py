"""Experiment ``width``: the empirical NTK at initialisation approaches a wide reference kernel as m grows.

For each seed, H_m(X, X) at several widths m is compared with the kernel of an independent
network of width ``reference_width``: ‖H_m − H_ref‖_F/‖H_ref‖_F.  docs/theory.md §3–4: the fluctuation of
H_m around H* is O(m^(−1/2)), so the distance falls with slope −1/2 until it reaches the reference's
own fluctuation (~ reference_width^(−1/2)).

The package: :mod:`.measure` (tasks: one reference and one kernel per width, per seed),
:mod:`.analyse` (the fits against m and m_eff), :mod:`.report` (table, figure, report.md).
"""

from __future__ import annotations

from typing import Any

from ...config import Field
from ..base import DATA_TABLE, MODEL_TABLE, Experiment, check_model, widths_field
from ..flow import kernel_table
from .analyse import THEORY_SLOPE, WidthAnalysis
from .measure import WidthMeasure
from .report import WidthReport

__all__ = ["WidthConvergence", "THEORY_SLOPE"]

SCHEMA = {
    "experiment": [
        widths_field([64, 256, 1024, 4096]),
        Field("reference_width", int, 16384, "width of the reference kernel", positive=True),
        Field("seeds", int, 4, "independent initialisations per width", positive=True),
        Field("seed", int, 0, "base seed; network seeds derive from it"),
    ],
    "model": MODEL_TABLE,
    "data": DATA_TABLE,
    "kernel": kernel_table(),
}


def check_config(cfg: dict[str, dict[str, Any]], source: str = "<config>") -> None:
    check_model(cfg, source)


class WidthConvergence(WidthMeasure, WidthAnalysis, WidthReport, Experiment):
    name = "width"
    description = "distance of the width-m empirical NTK to a wide reference kernel, against m"
    schema = SCHEMA
    check_config = staticmethod(check_config)
