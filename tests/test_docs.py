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
