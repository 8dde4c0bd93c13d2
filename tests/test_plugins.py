"""The plugin system: registries, duplicates, failure isolation, check_pending, NTKFRAME_LOAD_PLUGINS."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

import ntkframe as nf
from ntkframe import plugins
from ntkframe.errors import PluginError


def _plugin(**hooks):
    mod = types.ModuleType("fake_plugin")
    for name, fn in hooks.items():
        setattr(mod, name, nf.hookimpl(fn))
    return mod


def test_builtins_are_registered_by_their_plugins():
    reg = plugins.registry("activations")
    assert {"relu", "softplus", "tanh", "erf", "sigmoid", "gelu", "identity"} <= set(reg.names())
    assert reg.entries["softplus"].plugin == "core"
    assert plugins.registry("backends").entries["numpy"].plugin == "numpy"
    assert set(plugins.BUILTIN_PLUGINS) == {"core", "numpy", "torch", "jax", "cupy"}


def test_load_plugins_is_idempotent():
    before = {k: plugins.registry(k).names() for k in plugins.KINDS}
    plugins.load_plugins()
    plugins.load_plugins()
    assert {k: plugins.registry(k).names() for k in plugins.KINDS} == before


def test_register_plugin_in_process_and_unregister():
    act = nf.Activation("cube", lambda be, z: z ** 3, lambda be, z: 3 * z ** 2)
    plugins.register_plugin(_plugin(register_activations=lambda register: register("cube", act)), name="cubes")
    try:
        assert nf.get_activation("cube") is act
        assert plugins.registry("activations").entries["cube"].plugin == "cubes"
        model = nf.TwoLayerNet(d=2, m=4, activation="cube")
        assert model.apply(model.init("numpy"), [[1.0, 0.0]]).shape == (1,)
    finally:
        plugins.unregister_plugin("cubes")
    with pytest.raises(nf.UnknownNameError):
        nf.get_activation("cube")


def test_duplicate_name_is_an_error_naming_both_plugins():
    with pytest.raises(PluginError, match=r"activation name 'relu' registered twice: by plugin 'core' and by plugin 'dupes'"):
        plugins.register_plugin(_plugin(register_activations=lambda register: register("relu", None)), name="dupes")
    plugins.unregister_plugin("dupes")


def test_check_pending_rejects_misspelt_hooks():
    bad = _plugin(register_activation=lambda register: None)  # missing "s"
    plugins.pm.register(bad, name="typo")
    try:
        with pytest.raises(Exception, match="register_activation"):
            plugins.check_pending()
    finally:
        plugins.pm.unregister(name="typo")


def test_unknown_backend_lists_what_exists_and_why():
    with pytest.raises(nf.UnknownNameError, match=r"unknown backend 'pytorch'; available: .*numpy"):
        nf.get_backend("pytorch")


def test_unavailable_backend_is_listed_with_reason_and_refused():
    class Missing(nf.Backend):
        name = "missing"

        @classmethod
        def availability(cls):
            return False, "missingframework not installed"

    plugins.register_plugin(_plugin(register_backends=lambda register: register("missing", Missing)), name="miss")
    try:
        info = nf.list_backends()["missing"]
        assert info == {"available": False, "reason": "missingframework not installed", "plugin": "miss"}
        with pytest.raises(nf.BackendUnavailableError, match="missingframework not installed"):
            nf.get_backend("missing")
        with pytest.raises(nf.UnknownNameError, match=r"missing \(unavailable: missingframework not installed\)"):
            nf.get_backend("nope")
    finally:
        plugins.unregister_plugin("miss")


def _run(code: str, env_extra: dict, tmp_path) -> str:
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "NTKFRAME_LOAD_PLUGINS"}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _fake_dist(tmp_path, name: str, module: str, source: str) -> None:
    """A plugin module plus a .dist-info whose entry point names it (what pip install would leave)."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ntkframe]\n{name} = {module}\n")


def test_failing_plugin_is_reported_and_the_rest_keep_working(tmp_path):
    _fake_dist(tmp_path, "broken", "broken_plugin", "raise RuntimeError('boom at import')\n")
    out = _run("""
        import ntkframe as nf
        from ntkframe.plugins import failed_plugins
        print(failed_plugins()["broken"])
        print(nf.get_backend("numpy").name)
    """, {}, tmp_path)
    assert "RuntimeError: boom at import" in out and out.strip().endswith("numpy")


def test_env_variable_restricts_which_plugins_load(tmp_path):
    _fake_dist(tmp_path, "extra", "extra_plugin", """
        import ntkframe
        @ntkframe.hookimpl
        def register_activations(register):
            register("extra_act", ntkframe.Activation("extra_act", lambda be, z: z, lambda be, z: 0 * z + 1))
    """)
    code = """
        from ntkframe.plugins import registry
        print("extra_act" in registry("activations"), "numpy" in registry("backends"))
    """
    assert _run(code, {}, tmp_path).split() == ["True", "True"]
    assert _run(code, {"NTKFRAME_LOAD_PLUGINS": "numpy"}, tmp_path).split() == ["False", "True"]
    assert _run(code, {"NTKFRAME_LOAD_PLUGINS": "extra"}, tmp_path).split() == ["True", "False"]
