"""Every hook is documented in docs/plugins.md (datasette's docs test)."""

from __future__ import annotations

import re
from pathlib import Path

from ntkframe import hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def test_every_hook_has_a_section_in_the_plugin_docs():
    hooks = sorted(n for n in dir(hookspecs) if n.startswith("register_"))
    assert len(hooks) == 8
    sections = set(re.findall(r"^### (\w+)", DOCS.read_text(), flags=re.M))
    missing = [h for h in hooks if h not in sections]
    assert not missing, f"docs/plugins.md lacks a section for: {missing}"


ROOT = DOCS.parent.parent
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "tutorials").glob("*.md")])


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.M | re.S)


def test_the_docs_have_python_examples():
    assert sum(len(_python_blocks(p)) for p in DOC_FILES) >= 5


import pytest  # noqa: E402


@pytest.mark.parametrize("path", [p for p in DOC_FILES if _python_blocks(p)], ids=lambda p: p.name)
def test_every_python_example_in_the_docs_runs(path, tmp_path, monkeypatch):
    """Each page's ```python blocks run in order in one namespace, in a scratch folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for i, block in enumerate(_python_blocks(path)):
        code = compile(block, f"{path.name}[block {i}]", "exec")
        exec(code, namespace)  # noqa: S102 - the docs' own examples


def test_make_figures_quick_writes_figures_and_summaries(tmp_path):
    """docs/make_figures.py, at tiny sizes, writes each variant's PNG, summary.md and report.md."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "figures"
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "make_figures.py"), "--quick", "--only", "drift",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    variants = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert variants == ["drift-relu-both", "drift-relu-hidden", "drift-softplus-both", "drift-softplus-hidden"]
    for v in variants:
        assert (out / v / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        summary = (out / v / "summary.md").read_text()
        assert "| quantity |" in summary and "measured slope" in summary
        assert (out / v / "report.md").exists()
