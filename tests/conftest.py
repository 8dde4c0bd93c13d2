"""Shared fixtures: the parametrised ``backend`` fixture (scipy's ``xp`` pattern).

Every numerical test that takes ``backend`` (float64) or ``backend32`` (float32) runs on every
backend.  A backend that is missing skips with its reason, unless it is named in
``NTKFRAME_TEST_BACKENDS=numpy,torch,jax`` (as .ci/run sets it): then it fails, so CI cannot
silently skip what it is meant to test.  ``NTKFRAME_TEST_DEVICE=cuda`` runs them on the GPU.
"""

from __future__ import annotations

import os
import sys

import pytest

# only the built-in plugins load in the test-suite: an installed third-party plugin must not leak in
os.environ.setdefault("NTKFRAME_LOAD_PLUGINS", "numpy,torch,jax,cupy")
sys.path.insert(0, os.path.dirname(__file__))

import ntkframe as nf  # noqa: E402

ALL_BACKENDS = ("numpy", "torch", "jax", "cupy")
REQUIRED = tuple(b.strip() for b in os.environ.get("NTKFRAME_TEST_BACKENDS", "").split(",") if b.strip())
DEVICE = os.environ.get("NTKFRAME_TEST_DEVICE") or None


def _make(name: str, dtype: str):
    info = nf.list_backends().get(name)
    device = DEVICE if name != "numpy" else None
    if name == "cupy":
        device = "cuda"
    if info is None or not info["available"]:
        reason = "not registered" if info is None else info["reason"]
        if name in REQUIRED:
            pytest.fail(f"backend {name!r} is required by NTKFRAME_TEST_BACKENDS but unavailable: {reason}")
        pytest.skip(f"backend {name!r} unavailable: {reason}")
    try:
        return nf.get_backend(name, device=device, dtype=dtype)
    except nf.BackendUnavailableError as exc:
        if name in REQUIRED:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Each available backend in float64."""
    return _make(request.param, "float64")


@pytest.fixture(params=ALL_BACKENDS)
def backend32(request):
    """Each available backend in float32 (TF32 off)."""
    return _make(request.param, "float32")


@pytest.fixture
def numpy_backend():
    return nf.get_backend("numpy")
