"""Config fields: each declared constraint rejects a bad value with an error naming the key and what is
allowed, accepts the good ones, shows in the generated reference; registry choices see plugins' names."""

from __future__ import annotations

import tomllib
import types

import pytest

import ntkframe as nf
from ntkframe import plugins
from ntkframe.errors import ConfigError
from ntkframe.runs.config import Field, KindTable, reference_markdown, validate
from ntkframe.runs.driver import resolve_config
from ntkframe.runs.experiments import model_from_config

WHERE = "cfg.toml [experiment]"


def _reject(field: Field, value, *fragments: str) -> str:
    with pytest.raises(ConfigError) as exc:
        field.validate(value, WHERE)
    text = str(exc.value)
    assert text.startswith(f"{WHERE}: key {field.name!r} = {value!r}"), text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


@pytest.mark.parametrize("field,bad,good,fragments", [
    (Field("atol", float, 0.0, "h", minimum=0), -1e-3, [0.0, 2.5], ["must be >= 0"]),
    (Field("n_times", int, 5, "h", minimum=3), 2, [3, 80], ["must be >= 3"]),
    (Field("delta", float, 0.1, "h", open_interval=(0, 1)), 1.0, [1e-9, 0.5, 0.999],
     ["must lie strictly between 0 and 1"]),
    (Field("delta", float, 0.1, "h", open_interval=(0, 1)), 0.0, [], ["must lie strictly between 0 and 1"]),
    (Field("start", float, 0.5, "h", interval="[0, 1)"), 1.0, [0.0, 0.99], ["must lie in [0, 1)"]),
    (Field("start", float, 0.5, "h", interval="[0, 1)"), -0.5, [], ["must lie in [0, 1)"]),
    (Field("eps", float, 1.0, "h", positive=True), 0.0, [1e-12], ["must be > 0"]),
    (Field("widths", list, [1], "h", item_type=int, positive=True), [4, 0], [[4, 1]], ["every entry must be > 0"]),
    (Field("times", list, [0.0], "h", item_type=float, minimum=0), [1.0, -2.0], [[0.0, 3.0]],
     ["every entry must be >= 0"]),
    (Field("ns", list, [1], "h", item_type=int, unique=True), [8, 16, 8], [[16, 8]],
     ["entries must be distinct", "repeated: 8"]),
    (Field("times", list, [1.0], "h", item_type=float, increasing=True), [1.0, 3.0, 3.0], [[1.0, 2.0, 3.5]],
     ["times must be strictly increasing"]),
    (Field("record", list, ["a"], "h", item_type=str, choices=("loss", "outputs")), ["loss", "nope"],
     [["outputs", "loss"]], ["unknown 'nope'", "allowed: 'loss', 'outputs'"]),
    (Field("metric", str, "a", "h", choices=("spectral", "frobenius")), "nuclear", ["frobenius"],
     ["allowed: 'spectral', 'frobenius'"]),
    (Field("activation", str, "relu", "h", choices_from="activations"), "cube_test", ["relu", "softplus"],
     ["unknown activation; allowed: erf, gelu,", "relu", "tanh"]),
    (Field("loss", str, "mse", "h", choices_from="losses"), "hinge", ["mse"], ["unknown loss; allowed:", "mse"]),
])
def test_each_constraint_rejects_a_bad_value_naming_the_key_and_what_is_allowed(field, bad, good, fragments):
    _reject(field, bad, *fragments)
    for value in good:
        assert field.validate(value, WHERE) == value


def test_a_plugin_registered_activation_is_accepted_through_choices_from():
    field = Field("activation", str, "softplus", "h", choices_from="activations")
    _reject(field, "cube_test", "unknown activation")
    act = nf.Activation("cube_test", lambda be, z: z ** 3, lambda be, z: 3 * z ** 2)
    plugin = types.ModuleType("cube_plugin")
    plugin.register_activations = nf.hookimpl(lambda register: register("cube_test", act))
    plugins.register_plugin(plugin, name="cube_test_plugin")
    try:
        assert field.validate("cube_test", WHERE) == "cube_test"
        assert "'cube_test'" in field.describe_type()
        # and through a whole experiment config, whose [model] activation uses the same field type
        _, cfg = resolve_config(tomllib.loads('[experiment]\nkind = "width"\n[model]\nactivation = "cube_test"\n'),
                                "cfg.toml")
        assert cfg["model"]["activation"] == "cube_test"
    finally:
        plugins.unregister_plugin("cube_test_plugin")
    _reject(field, "cube_test", "unknown activation")


def test_constraints_apply_after_type_coercion_and_null_passes_a_nullable_field():
    f = Field("times", list, None, "h", item_type=float, minimum=0, increasing=True, nullable=True)
    assert f.validate(None, WHERE) is None
    assert f.validate([0, 1, 2.5], WHERE) == [0.0, 1.0, 2.5]
    with pytest.raises(ConfigError, match=r"key 'times'\[1\] = 'x' \(str\); expected a number"):
        f.validate([0, "x"], WHERE)
    with pytest.raises(ConfigError, match="must not be empty"):
        f.validate([], WHERE)


@pytest.mark.parametrize("kwargs,match", [
    ({"positive": True, "minimum": 0}, "at most one of"),
    ({"open_interval": (0, 1), "interval": "[0, 1)"}, "at most one of"),
    ({"unique": True}, "lists only"),
    ({"interval": "0 to 1"}, "is not like"),
    ({"interval": "[1, 0]"}, "is not like"),
])
def test_a_contradictory_or_malformed_declaration_fails_when_the_schema_is_written(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Field("x", float, 0.5, "h", **kwargs)


def test_choices_from_an_unknown_registry_names_the_registries():
    with pytest.raises(ValueError, match=r"unknown plugin registry 'activation'; allowed: .*activations"):
        Field("a", str, "relu", "h", choices_from="activation").validate("relu", WHERE)


def test_the_reference_shows_every_constraint():
    schema = {"experiment": [
        Field("widths", list, [8], "widths m", item_type=int, positive=True, unique=True),
        Field("times", list, [1.0], "record times", item_type=float, minimum=0, increasing=True),
        Field("delta", float, 0.1, "failure probability", open_interval=(0, 1)),
        Field("start", float, 0.5, "fit window", interval="[0, 1)"),
        Field("activation", str, "relu", "σ", choices_from="activations"),
    ]}
    text = reference_markdown({"Test": schema}, cell=lambda s: s.replace("|", "\\|"))
    rows = {line.split("|")[2].strip(" `"): line for line in text.splitlines() if line.startswith("| [experiment]")}
    assert "list of integers, each > 0, distinct" in rows["widths"]
    assert "list of numbers, each >= 0, strictly increasing" in rows["times"]
    assert "number in (0, 1)" in rows["delta"] and "number in [0, 1)" in rows["start"]
    assert "a registered activation: 'erf' \\| 'gelu'" in rows["activation"]


def test_the_experiments_share_the_schema_pieces():
    """widths are distinct task keys everywhere, σ comes from the registry, and [experiment] kind is the name."""
    from ntkframe.plugins import registry

    for entry in registry("experiments"):
        table = {f.name: f for f in entry.obj.schema["experiment"]}
        assert table["kind"].default == entry.name
        if "widths" in table:
            assert table["widths"].unique and table["widths"].positive, entry.name
        model = entry.obj.schema.get("model")
        for kind in model.available() if isinstance(model, KindTable) else []:
            fields = {f.name: f for f in model.fields(kind)}
            if "activation" in fields:
                assert fields["activation"].choices_from == "activations", (entry.name, kind)
    with pytest.raises(ConfigError, match=r"'widths' = \[64, 64\]: entries must be distinct"):
        resolve_config(tomllib.loads('[experiment]\nkind = "convergence"\nwidths = [64, 64]\n'), "cfg.toml")


def test_validate_names_the_file_table_and_key():
    schema = {"data": [Field("noise", float, 0.0, "σ", minimum=0)]}
    with pytest.raises(ConfigError, match=r"^run.toml \[data\]: key 'noise' = -0.1: must be >= 0$"):
        validate({"data": {"noise": -0.1}}, schema, "run.toml")


def test_model_from_config_builds_the_configured_network():
    cfg = {"model": {"activation": "tanh", "train": "hidden", "output_init": "sign", "parameterization": "standard"},
           "data": {"d": 5}}
    net = model_from_config(cfg, 32)
    assert isinstance(net, nf.TwoLayerNet) and (net.d, net.m, net.train) == (5, 32, "hidden")
    assert net.activation.name == "tanh" and net.output_init == "sign" and net.parameterization == "standard"
    theory = model_from_config({"model": {k: v for k, v in cfg["model"].items() if k != "parameterization"},
                                "data": {"d": 5}}, 8)
    assert theory.parameterization == "ntk" and theory.m == 8
    mlp = model_from_config({"model": {"kind": "mlp", "m": 16, "depth": 3, "activation": "relu",
                                       "parameterization": "ntk"}, "data": {"d": 4}}, d=7, outputs=2)
    assert isinstance(mlp, nf.MLP) and mlp.d == 7 and mlp.outputs == 2 and len(mlp.widths) == 3
