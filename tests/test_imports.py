"""Importing ntkframe and listing plugins imports no heavy framework (einops / array-api-compat style)."""

from __future__ import annotations

import subprocess
import sys


def test_import_and_listing_plugins_import_no_framework():
    code = (
        "import sys, ntkframe as nf\n"
        "nf.load_plugins(); nf.list_backends()\n"
        "from ntkframe.plugins import registry\n"
        "[registry(k).names() for k in ('backends','models','activations','experiments')]\n"
        "heavy = [m for m in ('torch','jax','jaxlib','cupy','matplotlib','dask','distributed','zarr') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported at import time: {out.stdout.strip()}"
