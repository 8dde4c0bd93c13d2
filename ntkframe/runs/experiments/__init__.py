"""The theory's claims as runnable experiments: one package per experiment, on the interface in :mod:`.base`.

Each built-in experiment (``drift``, ``concentration``, ``linearisation``, ``convergence``, ``train``,
``width``) is a package of four modules: ``__init__`` (the Experiment class and its config schema),
``measure`` (the tasks: the only part that needs a backend), ``analyse`` (the fits) and ``report``
(table, figures, report.md).  The driver that runs them, :mod:`ntkframe.runs.driver`, is re-exported
here for the import sites that know it as ``ntkframe.runs.experiments.run_experiment``.
"""

from __future__ import annotations

from ..driver import experiment_class, rebuild_report, resolve_config, run_experiment
from .base import Experiment, format_table, model_from_config

__all__ = ["Experiment", "format_table", "model_from_config", "experiment_class", "resolve_config",
           "run_experiment", "rebuild_report"]
