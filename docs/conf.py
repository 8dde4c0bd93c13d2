"""Sphinx configuration of the ntkframe documentation (MyST Markdown, furo, autodoc + napoleon)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

project = "ntkframe"
author = "the ntkframe developers"
copyright = "2026, the ntkframe developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax 3 from the sphinx-mathjax-offline package, copied into _static/mathjax: formulas render
    # with no network (it sets mathjax_path to the bundled tex-chtml.js)
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "ntkframe_docgen",
]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = "ntkframe"
# wide figures (class "ntk-wide"): the six-panel PNGs use the page's full width, and every scaled
# figure links to its full-size PNG (Sphinx's html_scaled_image_link) for zooming
html_static_path = ["_static"]
html_css_files = ["ntkframe.css"]
smartquotes = False  # keep --out, "float64" and 'a' as typed
# figures/<variant>/summary.md and report.md are outputs of make_figures.py: the tutorials
# {include} the summaries; neither is a page of its own
exclude_patterns = ["_build", "_ext", "figures"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports = ["torch", "jax", "jaxlib", "cupy", "cupyx", "distributed", "dask", "zarr"]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
suppress_warnings = ["myst.header"]
nitpicky = False
