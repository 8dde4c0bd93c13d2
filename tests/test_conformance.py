"""The built-in backends, models and activations pass the conformance kit plugin authors run.

Each case runs ``python -m pytest --pyargs ntkframe.testing --ntkframe-…`` in a subprocess, exactly
as docs/plugins.md tells a plugin author to, and asserts that it passed with more than zero tests
(so the kit cannot rot unnoticed, and its checks are the ones the built-ins are held to).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import ntkframe as nf

REQUIRED = tuple(b.strip() for b in os.environ.get("NTKFRAME_TEST_BACKENDS", "").split(",") if b.strip())


def run_kit(args: list[str], env: dict | None = None, cwd=None) -> tuple[int, str]:
    """Run the kit in a subprocess; (number of passed tests, output), asserting nothing failed."""
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONPATH", os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "ntkframe.testing",
                          "-q", *args], capture_output=True, text=True, env=env, timeout=600, cwd=cwd)
    out = res.stdout + res.stderr
    assert "unrecognized arguments" not in out, "the kit's pytest plugin is not installed (pip install -e .)\n" + out
    assert res.returncode == 0, out
    summary = out.strip().splitlines()[-1]
    assert not re.search(r"\d+ (failed|error)", summary), out
    passed = re.search(r"(\d+) passed", summary)
    return (int(passed.group(1)) if passed else 0), out


def _require(name: str) -> None:
    info = nf.list_backends().get(name)
    if info is None or not info["available"]:
        reason = "not registered" if info is None else info["reason"]
        if name in REQUIRED:
            pytest.fail(f"backend {name!r} is required by NTKFRAME_TEST_BACKENDS but unavailable: {reason}")
        pytest.skip(f"backend {name!r} unavailable: {reason}")


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_builtin_backend_passes_the_kit(backend, tmp_path):
    _require(backend)
    passed, out = run_kit(["--ntkframe-backend", backend], cwd=tmp_path)
    assert passed > 0, out


def test_builtin_models_and_activations_pass_the_kit(tmp_path):
    acts = ",".join(nf.plugins.registry("activations").names())
    passed, out = run_kit(["--ntkframe-model", "two_layer,mlp", "--ntkframe-activation", acts], cwd=tmp_path)
    assert passed > 0, out


def test_with_nothing_selected_every_check_skips_and_says_how_to_select(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "ntkframe.testing",
                          "-q", "-rs"], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "passed" not in res.stdout.splitlines()[-1] and "skipped" in res.stdout.splitlines()[-1]
    assert "no backend selected: run pytest --pyargs ntkframe.testing --ntkframe-backend NAME" in res.stdout


def test_the_kit_catches_a_broken_backend(tmp_path):
    """A backend whose Gram is off by a factor fails the kit (the kit can fail)."""
    (tmp_path / "broken_backend.py").write_text(
        "import ntkframe\nfrom ntkframe_numpy import NumpyBackend\n\n"
        "class Broken(NumpyBackend):\n    name = 'broken'\n\n    def gram(self, A, B=None):\n"
        "        return 1.01 * super().gram(A, B)\n\n"
        "@ntkframe.hookimpl\ndef register_backends(register):\n    register('broken', Broken)\n")
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ntkframe]\nbroken = broken_backend\n")
    env = {k: v for k, v in os.environ.items() if k != "NTKFRAME_LOAD_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "ntkframe.testing",
                          "-q", "--ntkframe-backend", "broken", "-k", "structured_gram"], capture_output=True,
                         text=True, env=env, timeout=600, cwd=tmp_path)
    assert res.returncode == 1 and re.search(r"\d+ failed", res.stdout), res.stdout + res.stderr
    assert "max error" in res.stdout
