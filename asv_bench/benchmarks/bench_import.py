"""Benchmarks of start-up cost: ``import ntkframe`` and listing its plugins, each in a fresh interpreter.

asv's ``timeraw_`` benchmarks return code that asv runs and times in a new process, so the module
cache of the benchmark process (which has imported ntkframe already) cannot hide the cost.
``import ntkframe`` must not import torch, jax or cupy (tests/test_imports.py checks it); listing
backends only looks for the frameworks.  With ``devices=True`` (what ``ntkframe plugins`` shows)
every available framework is imported to list its devices: that is the expensive case.
"""

from __future__ import annotations


def timeraw_import_ntkframe() -> str:
    return "import ntkframe"


def timeraw_list_backends() -> str:
    return "import ntkframe as nf; nf.list_backends()"


def timeraw_list_backends_with_devices() -> str:
    return "import ntkframe as nf; nf.list_backends(devices=True)"


timeraw_list_backends_with_devices.timeout = 300
