"""The architecture holds: layers import one way, no import cycles (function-level imports
included), every module imports on its own, and no module grows past the size a reader can hold.

The layers, bottom to top (docs/architecture.md draws them):

    frame   ntkframe.errors, .hookspecs, .plugins          errors, hooks, registries
    core    ntkframe.core                                  interfaces and the hot path
    flow    ntkframe.flow                                  gradient flow
    theory  ntkframe.theory                                infinite-width theory
    runs    ntkframe.runs                                  config, sweeps, experiments, CLI
    top     ntkframe (package), ntkframe.builtin, ntkframe.testing

A module may import its own layer and the layers below it, never one above — not even inside a
function, where a cycle would only be hidden, not removed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ntkframe"
LAYERS = {
    "frame": 0, "core": 1, "flow": 2, "theory": 3, "runs": 4, "top": 5,
}
FRAME_MODULES = {"ntkframe.errors", "ntkframe.hookspecs", "ntkframe.plugins", "ntkframe._version"}
#: a module longer than this is due to become a package (DESIGN.md: "past ~400 lines")
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str:
    if module in FRAME_MODULES:
        return "frame"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("core", "flow", "theory", "runs"):
        return parts[1]
    return "top"


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every ntkframe module ``module`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        # the longest prefix that is a module of ours
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            cand = ".".join(parts[:i])
            if cand in known:
                return cand
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ntkframe":
                    target = resolve(alias.name)
                    if target:
                        found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != "ntkframe":
                continue
            for alias in node.names:  # "from .core import backend" imports a submodule
                sub = f"{name}.{alias.name}"
                if sub in known:
                    found.add(sub)
                    continue
                target = resolve(name)
                if target:
                    found.add(target)
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def test_layers_import_only_downwards():
    wrong = []
    for module, targets in _graph().items():
        for t in targets:
            if t == "ntkframe" and _layer(module) != "top":
                wrong.append(f"{module} imports the ntkframe package itself (import from the defining module)")
            elif LAYERS[_layer(t)] > LAYERS[_layer(module)]:
                wrong.append(f"{module} ({_layer(module)}) imports {t} ({_layer(t)})")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_function_level_included():
    # the top package re-exports everything: edges into it are layering errors (tested above),
    # so cycles are looked for among the modules below it
    graph = {m: {t for t in ts if t != "ntkframe"} for m, ts in _graph().items() if m != "ntkframe"}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_detector_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_every_module_imports_on_its_own():
    mods = [m for m in _modules() if m != "ntkframe.testing.plugin"]
    code = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {mods!r}:\n"
        "    for key in [k for k in sys.modules if k == 'ntkframe' or k.startswith('ntkframe.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("folder", ["ntkframe", "plugins"])
def test_no_module_is_longer_than_a_reader_can_hold(folder):
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / folder).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them into a package): {long}"


def test_architecture_page_names_every_layer():
    page = (ROOT / "docs" / "architecture.md").read_text()
    for folder in ("ntkframe/core", "ntkframe/flow", "ntkframe/theory", "ntkframe/runs", "plugins/"):
        assert folder in page, f"docs/architecture.md does not mention {folder}"
