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


def test_builtins_are_the_entry_points_of_the_ntkframe_distribution_itself():
    """One list of built-ins: pyproject.toml's entry points (no second list to keep in sync)."""
    import tomllib
    from pathlib import Path

    table = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert plugins.builtin_plugins() == table["project"]["entry-points"]["ntkframe"]
    assert {"core", "numpy", "torch", "jax", "cupy"} <= set(plugins.builtin_plugins())
    infos = plugins.plugin_info()
    assert infos["core"].builtin and infos["numpy"].builtin and infos["core"].distribution == "ntkframe"


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


def test_register_plugin_is_all_or_nothing():
    """A plugin whose second hook fails leaves nothing of its first hook behind, and can be fixed and retried."""
    act = nf.Activation("half_done", lambda be, z: z, lambda be, z: 0 * z + 1)

    def boom(register):
        raise RuntimeError("loss hook broke")

    bad = _plugin(register_activations=lambda register: register("half_done", act), register_losses=boom)
    with pytest.raises(PluginError, match=r"register_losses failed: RuntimeError: loss hook broke"):
        plugins.register_plugin(bad, name="halfway")
    assert "half_done" not in plugins.registry("activations")
    assert plugins.pm.get_plugin("halfway") is None and "halfway" not in plugins.plugin_info()
    plugins.register_plugin(_plugin(register_activations=lambda register: register("half_done", act)), name="halfway")
    try:
        assert nf.get_activation("half_done") is act
    finally:
        plugins.unregister_plugin("halfway")


def test_register_plugin_rejects_a_misspelt_hook_and_a_case_insensitive_clash():
    with pytest.raises(PluginError, match=r"hook validation failed: .*unknown hook 'register_activation'"):
        plugins.register_plugin(_plugin(register_activation=lambda register: None), name="typo2")
    assert plugins.pm.get_plugin("typo2") is None
    with pytest.raises(PluginError, match=r"activation name 'SoftPlus' registered twice: by plugin 'core' "
                                          r"\(as 'softplus'; names are case-insensitive\) and by plugin 'shout'"):
        plugins.register_plugin(_plugin(register_activations=lambda register: register("SoftPlus", None)), name="shout")
    assert plugins.registry("activations").entries["softplus"].plugin == "core"


def test_keyboard_interrupt_during_a_plugin_import_is_not_swallowed():
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        plugins._load_one("ctrl_c", interrupted, plugins.PluginInfo("ctrl_c", None, None, False, "test"))
    assert plugins.pm.get_plugin("ctrl_c") is None


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


# -- faulty third-party plugins, installed as real dist-infos (issue 14's findings) ------------------

def _act_hook(name: str) -> str:
    """Plugin source registering the identity activation under ``name``."""
    return (f"\n@ntkframe.hookimpl\ndef register_activations(register):\n"
            f"    register({name!r}, ntkframe.Activation({name!r}, lambda be, z: z, lambda be, z: 0 * z + 1))\n")


def _source(*parts: str) -> str:
    return "import click\nimport ntkframe\n" + "".join(textwrap.dedent(p) for p in parts)


FAULTY = {
    # a backend named like a built-in; it also registers an activation first, which must be rolled back
    "clash": _source(_act_hook("clash_act"), """
        from ntkframe_numpy import NumpyBackend

        @ntkframe.hookimpl
        def register_backends(register):
            register("numpy", NumpyBackend)
    """),
    "softclash": _source(_act_hook("SoftPlus")),
    "typo": _source("""
        @ntkframe.hookimpl
        def register_activation(register):
            pass

        @ntkframe.hookimpl
        def register_losses(register):
            register("typo_loss", ntkframe.MSE)
    """),
    "badcmd": _source(_act_hook("badcmd_act"), """
        @ntkframe.hookimpl
        def register_commands(cli):
            @cli.command(name="half-added")
            def half_added():
                pass
            raise RuntimeError("command hook broke")
    """),
    "exiter": "import sys\nsys.exit(3)\n",
    "good": _source(_act_hook("good_act"), """
        @ntkframe.hookimpl
        def register_commands(cli):
            @cli.command(name="good-cmd")
            def good_cmd():
                \"\"\"A command from the good plugin whose description is longer than forty-five characters.\"\"\"
                click.echo("good plugin command ran")
    """),
}


@pytest.fixture(scope="module")
def faulty_env(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("faulty")
    for name, source in FAULTY.items():
        _fake_dist(root, name, f"{name}_plugin", source)
    env = {k: v for k, v in os.environ.items() if k != "NTKFRAME_LOAD_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), *sys.path])
    return env


@pytest.fixture(scope="module")
def api_report(faulty_env):
    """What the Python API sees with every faulty plugin installed (one subprocess)."""
    import json
    import subprocess

    code = textwrap.dedent("""
        import json
        import ntkframe as nf
        from ntkframe import plugins
        out = {"numpy": nf.get_backend("numpy").name}
        plugins.load_plugins()
        plugins.load_plugins()
        out["failed"] = plugins.failed_plugins()
        out["numpy_owner"] = plugins.registry("backends").entries["numpy"].plugin
        out["activations"] = plugins.registry("activations").names()
        out["losses"] = plugins.registry("losses").names()
        out["softplus_owner"] = plugins.registry("activations").entries["softplus"].plugin
        out["third_party"] = plugins.third_party_plugins()
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-c", code], env=faulty_env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _cli_run(args, env):
    import subprocess

    return subprocess.run([sys.executable, "-m", "ntkframe.runs.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_clash_with_a_builtin_backend_fails_only_the_plugin_and_is_rolled_back(api_report):
    assert api_report["numpy"] == "numpy" and api_report["numpy_owner"] == "numpy"
    reason = api_report["failed"]["clash"]
    assert "backend name 'numpy' registered twice: by plugin 'numpy' and by plugin 'clash'" in reason
    assert "numpy" not in api_report["failed"]
    assert "clash_act" not in api_report["activations"]  # all or nothing: its other hook is undone


def test_a_case_insensitive_clash_blames_the_plugin_not_the_builtin(api_report):
    assert api_report["softplus_owner"] == "core"
    assert "by plugin 'core' (as 'softplus'; names are case-insensitive) and by plugin 'softclash'" in \
        api_report["failed"]["softclash"]


def test_loading_twice_reports_each_failure_once(api_report):
    import json

    assert "by plugin 'clash' and by plugin 'clash'" not in json.dumps(api_report)


def test_a_misspelt_hook_fails_its_plugin_only(api_report):
    assert "hook validation failed" in api_report["failed"]["typo"]
    assert "register_activation'" in api_report["failed"]["typo"]
    assert "typo_loss" not in api_report["losses"]


def test_sys_exit_at_import_does_not_end_the_program(api_report):
    assert api_report["failed"]["exiter"].startswith("import failed: SystemExit: 3")


def test_provenance_lists_the_loaded_third_party_plugins(api_report):
    # badcmd fails only where its command hook runs (the CLI); the API alone loads it
    assert api_report["third_party"] == [{"name": "badcmd", "distribution": "badcmd", "version": "0.1"},
                                         {"name": "good", "distribution": "good", "version": "0.1"}]


@pytest.mark.parametrize("args,expect", [
    (["--version"], "ntkframe 0.1.0"),
    (["--help"], "A command from the good plugin whose description is longer than forty-five characters."),
    (["good-cmd"], "good plugin command ran"),
])
def test_every_command_works_despite_a_raising_command_hook(faulty_env, args, expect):
    res = _cli_run(args, faulty_env)
    assert res.returncode == 0, res.stderr
    assert expect in " ".join(res.stdout.split())  # help text wraps
    assert "half-added" not in res.stdout


def test_help_lists_plugin_commands_under_their_plugin(faulty_env):
    out = _cli_run(["--help"], faulty_env).stdout
    core, section = out.split("Commands of plugin 'good' (good 0.1):")
    assert "good-cmd" in section and "good-cmd" not in core
    assert all(f"  {cmd} " in core for cmd in ("plugins", "report", "run"))


def test_plugins_command_shows_failed_plugins_with_reasons_and_commands(faulty_env):
    res = _cli_run(["plugins"], faulty_env)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "Failed plugins" in out
    for name, words in [("clash", "registered twice"), ("softclash", "case-insensitive"), ("typo", "register_activation"),
                        ("exiter", "SystemExit: 3"), ("badcmd", "register_commands failed: RuntimeError: command hook broke")]:
        line = next(l for l in out.splitlines() if l.startswith(f"  {name} (") and "failed" in l)
        assert words in line, line
    good = next(l for l in out.splitlines() if l.startswith("  good "))
    assert "good" in good and "0.1" in good and "loaded" in good
    assert "commands: good-cmd" in out and "badcmd_act" not in out


def test_run_works_despite_every_faulty_plugin(faulty_env, tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[experiment]\nkind = "width"\nwidths = [4, 8]\nreference_width = 16\nseeds = 2\n'
                   '[model]\nactivation = "good_act"\n[data]\nn = 4\nd = 2\n')
    res = _cli_run(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"], faulty_env)
    assert res.returncode == 0, res.stderr
    import json

    prov = json.loads((tmp_path / "run" / "results.json").read_text())["provenance"]
    assert prov["plugins"] == [{"name": "good", "distribution": "good", "version": "0.1"}]
