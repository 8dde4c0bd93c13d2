"""The pytest plugin of the conformance kit (entry point ``pytest11: ntkframe``): its options and fixtures.

``--ntkframe-backend NAME``, ``--ntkframe-model NAME`` and ``--ntkframe-activation NAME`` (each
repeatable, or comma-separated) choose what ``pytest --pyargs ntkframe.testing`` checks;
``--ntkframe-device`` the device backends are built on.  Only tests of this kit use the fixtures,
so the plugin changes nothing for other test suites.
"""

from __future__ import annotations

import pytest

KINDS = {"backend": "backends", "model": "models", "activation": "activations"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ntkframe", "ntkframe conformance kit (pytest --pyargs ntkframe.testing)")
    for what in KINDS:
        group.addoption(f"--ntkframe-{what}", action="append", default=[], metavar="NAME",
                        help=f"check the registered {what} NAME (repeatable, or comma-separated)")
    group.addoption("--ntkframe-device", default=None, metavar="DEVICE",
                    help="device the checked backends run on (cpu, cuda, cuda:N; default: the backend's)")


def selected(config: pytest.Config, what: str) -> list[str]:
    """The names given with ``--ntkframe-WHAT``."""
    return [n.strip() for v in config.getoption(f"ntkframe_{what}") for n in v.split(",") if n.strip()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for what in KINDS:
        if f"kit_{what}" in metafunc.fixturenames:
            names = selected(metafunc.config, what)
            metafunc.parametrize(f"kit_{what}", names or [None], ids=names or [f"no-{what}-selected"],
                                 indirect=True)
    if "kit_model_backend" in metafunc.fixturenames:  # models run on the selected backends, else numpy
        names = selected(metafunc.config, "backend") or ["numpy"]
        metafunc.parametrize("kit_model_backend", names, ids=[f"on-{n}" for n in names])


def _registered(request: pytest.FixtureRequest, what: str) -> str:
    from ntkframe.plugins import failed_plugins, registry

    name = request.param
    reg = registry(KINDS[what])
    if name is None:
        pytest.skip(f"no {what} selected: run pytest --pyargs ntkframe.testing --ntkframe-{what} NAME "
                    f"(registered: {', '.join(reg.names())})")
    if name not in reg:
        failed = "; ".join(f"{p}: {e}" for p, e in failed_plugins().items())
        pytest.fail(f"no {what} {name!r} is registered (registered: {', '.join(reg.names())})"
                    + (f"; failed plugins: {failed}" if failed else ""), pytrace=False)
    return name


@pytest.fixture
def kit_backend(request: pytest.FixtureRequest) -> str:
    """The name of a backend selected with --ntkframe-backend (it must be available)."""
    name = _registered(request, "backend")
    from ntkframe.core.backend import list_backends

    info = list_backends()[name]
    if not info["available"]:
        pytest.fail(f"backend {name!r} was selected but is unavailable: {info['reason']}", pytrace=False)
    return name


@pytest.fixture
def kit_model(request: pytest.FixtureRequest) -> str:
    """The name of a model kind selected with --ntkframe-model."""
    return _registered(request, "model")


@pytest.fixture
def kit_activation(request: pytest.FixtureRequest) -> str:
    """The name of an activation selected with --ntkframe-activation."""
    return _registered(request, "activation")


@pytest.fixture
def kit_device(request: pytest.FixtureRequest) -> str | None:
    return request.config.getoption("ntkframe_device")


@pytest.fixture
def make_backend(kit_device):
    """make_backend(name, dtype): the backend on the selected device."""
    import ntkframe as nf

    def make(name: str, dtype: str = "float64") -> "nf.Backend":
        return nf.get_backend(name, device=None if name == "numpy" else kit_device, dtype=dtype)

    return make
