"""The backend contract: the four backend packages have the same files and the same public methods.

The rule (docs/backends.md, keras 3's one file per concern per backend):

* every package has ``__init__.py`` (plugin hooks only, and the import of its Backend class),
  ``backend.py`` (the Backend subclass: arrays, devices, dtypes, memory budget, compile, sync) and
  ``gram.py`` (the hot path: the activation pass and the combine);
* a backend whose framework has automatic differentiation (``Backend.autodiff``) adds
  ``autodiff.py`` (the generic paths), one without has none;
* any other module is a private helper (``_name.py``, e.g. NumPy's ctypes BLAS) or an extension
  that the package's ``__init__`` names (in its docstring, e.g. torch's ``layers/`` package, or in a hook
  that registers it).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from ntkframe.core.backend import Backend

ROOT = Path(__file__).resolve().parent.parent / "plugins"
PACKAGES = {"numpy": ("ntkframe_numpy", "NumpyBackend"), "cupy": ("ntkframe_cupy", "CupyBackend"),
            "torch": ("ntkframe_torch", "TorchBackend"), "jax": ("ntkframe_jax", "JaxBackend")}
CONTRACT = ("__init__.py", "backend.py", "gram.py")


def _backend_class(name: str) -> type:
    package, cls = PACKAGES[name]
    return getattr(importlib.import_module(f"{package}.backend"), cls)  # imports no framework


def _public_methods(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None))
            or isinstance(getattr(cls, n, None), property) and not n.startswith("_")}


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_package_has_the_contract_files(name):
    package = ROOT / PACKAGES[name][0]
    files = {p.name for p in package.glob("*.py")}
    cls = _backend_class(name)
    expected = set(CONTRACT) | ({"autodiff.py"} if cls.autodiff else set())
    assert expected <= files, f"{package.name} lacks {sorted(expected - files)}"
    if not cls.autodiff:
        assert "autodiff.py" not in files, f"{package.name} has autodiff.py but its backend says autodiff=False"
    init = (package / "__init__.py").read_text()
    subpackages = {p.parent.name + "/" for p in package.glob("*/__init__.py")}
    for extra in sorted((files - expected) | subpackages):
        assert extra.startswith("_") or f".{extra[:-3] if extra.endswith('.py') else extra[:-1]}" in init, (
            f"{package.name}/{extra} is neither a contract file, a private helper nor an extension named in "
            "the package's __init__")


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_init_holds_only_hooks(name):
    """``__init__.py``: imports, the Backend class from .backend, ``__all__`` and ``@hookimpl`` hooks — nothing else."""
    tree = ast.parse((ROOT / PACKAGES[name][0] / "__init__.py").read_text())
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert "register_backends" in [d.name for d in defs]
    for d in defs:
        assert isinstance(d, ast.FunctionDef) and d.name.startswith("register_"), d.name
        assert [ast.unparse(x) for x in d.decorator_list] == ["hookimpl"], d.name
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 1]
    assert [(n.module, [a.name for a in n.names]) for n in imports] == [("backend", [PACKAGES[name][1]])]


def test_backend_classes_have_the_same_public_methods():
    sets = {name: _public_methods(_backend_class(name)) for name in PACKAGES}
    base = _public_methods(Backend)
    for name, methods in sets.items():
        assert methods == base, (f"{name}: extra public methods {sorted(methods - base)} (add them to the "
                                 f"Backend interface or make them private); missing {sorted(base - methods)}")


def test_hot_path_methods_live_in_gram_py():
    """The kernels a backend specialises for the hot path are defined in its gram.py (one hop from __init__)."""
    hot = {"activation_joint", "combine", "gram", "map_rows", "mul_into", "add_into", "erf", "relu"}
    for name in PACKAGES:
        cls = _backend_class(name)
        for meth in hot:
            owner = next(k for k in cls.__mro__ if meth in vars(k))
            if owner is not Backend:
                assert owner.__module__ == f"{PACKAGES[name][0]}.gram", (name, meth, owner.__module__)
