"""Config values of the wrong type are refused with a message naming the key, the expected type and the value."""
from __future__ import annotations

import pytest
import yaml

from corrective_unlearning.cli import main
from corrective_unlearning.config import ConfigError, TrainConfig, default_val_size, from_dict
from corrective_unlearning.experiment import build_setting
from corrective_unlearning.runner import load_grid_config
from corrective_unlearning.manipulations import check_params
from corrective_unlearning.methods import METHODS


# ------------------------------------------------------------------------------------------------ from_dict
@pytest.mark.parametrize("data, message", [
    ({"seed": "1"}, "config.seed: expected int, got str '1'"),
    ({"seed": True}, "config.seed: expected int, got bool True"),
    ({"seed": 1.5}, "config.seed: expected int, got float 1.5"),
    ({"dataset": {"download": "yes"}}, "config.dataset.download: expected bool, got str 'yes'"),
    ({"dataset": {"download": 1}}, "config.dataset.download: expected bool, got int 1"),
    ({"dataset": {"val_size": "5%"}}, "config.dataset.val_size: expected int or null, got str '5%'"),
    ({"dataset": 5}, "config.dataset: expected a mapping, got int 5"),
    ({"recipe": [1]}, "config.recipe: expected dict, got list [1]"),
    ({"model": 3}, "config.model: expected str or null, got int 3"),
    ({"compile": 3}, "config.compile: expected bool or str, got int 3"),
    ({"manipulation": {"n": "600"}}, "config.manipulation.n: expected int, got str '600'"),
    ({"manipulation": {"params": [1]}}, "config.manipulation.params: expected dict, got list [1]"),
])
def test_from_dict_refuses_values_of_the_wrong_type(data, message):
    with pytest.raises(ConfigError) as error:
        from_dict(TrainConfig, data)
    assert str(error.value) == message


def test_from_dict_accepts_values_of_the_right_type():
    config = from_dict(TrainConfig, {"seed": 3, "model": None, "compile": False, "dataset": {"val_size": None}})
    assert config.seed == 3 and config.model is None and config.compile is False
    assert from_dict(TrainConfig, {"compile": "max-autotune"}).compile == "max-autotune"
    assert from_dict(TrainConfig, {"dataset": {"val_size": 0}}).dataset.val_size == 0


def test_from_dict_refuses_unknown_manipulation_params():
    with pytest.raises(ConfigError, match=r"manipulation.params: unknown param\(s\) \['tagret'\] for manipulation "
                                          r"poison; accepted: target, patch_size, position, value, pattern"):
        from_dict(TrainConfig, {"manipulation": {"name": "poison", "params": {"tagret": 3}}})


# ------------------------------------------------------------------------------------------------ recipe
def test_recipe_overrides_are_type_checked():
    def recipe(**overrides):
        return from_dict(TrainConfig, {"dataset": {"name": "synthetic"}, "recipe": overrides}).resolved_recipe()

    with pytest.raises(ConfigError) as error:
        recipe(steps="100")
    assert str(error.value) == "recipe.steps: expected int, got str '100'"
    with pytest.raises(ConfigError) as error:
        recipe(flip=1)
    assert str(error.value) == "recipe.flip: expected bool, got int 1"
    with pytest.raises(ConfigError) as error:
        recipe(lr="fast")
    assert str(error.value) == "recipe.lr: expected float, got str 'fast'"
    with pytest.raises(ConfigError, match="steps >= 1"):  # the recipe's own checks are config errors too
        recipe(steps=0)
    assert recipe(lr=1).lr == 1 and recipe(steps=7).steps == 7  # an int is a float


# ------------------------------------------------------------------------------------------------ methods
def test_method_hyperparameters_take_the_type_of_their_default():
    ssd, badt = METHODS.get("ssd"), METHODS.get("badt")
    with pytest.raises(ConfigError) as error:
        ssd.resolve({"alpha": "10"})
    assert str(error.value) == "method ssd: hyperparameter 'alpha': expected float, got str '10'"
    with pytest.raises(ConfigError, match="'batch_size': expected int, got float 16.0"):
        ssd.resolve({"batch_size": 16.0})
    with pytest.raises(ConfigError, match="'batch_size': expected int, got bool True"):
        ssd.resolve({"batch_size": True})
    with pytest.raises(ConfigError, match="'variant': expected str, got int 3"):
        badt.resolve({"variant": 3})
    assert ssd.resolve({"alpha": 10})["alpha"] == 10  # an int is a float
    assert ssd.resolve({"lambda": 0.5})["lambda"] == 0.5  # a None default takes anything
    assert ssd.resolve({"importance_samples": None})["importance_samples"] is None  # null: unset (all samples)


def test_method_hyperparameters_that_default_to_the_recipes_take_the_recipes_type():
    cf = METHODS.get("cf")
    with pytest.raises(ConfigError, match="'steps': expected int, got str '100'"):
        cf.resolve({"steps": "100"})
    with pytest.raises(ConfigError, match="'lr': expected float, got str '0.1'"):
        cf.resolve({"lr": "0.1"})
    assert cf.resolve({"steps": 100, "lr": 1})["steps"] == 100


# ------------------------------------------------------------------------------------------------ manipulations
def test_check_params_names_the_unknown_and_the_accepted():
    with pytest.raises(ConfigError) as error:
        check_params("poison", {"tagret": 3, "patch_size": 2}, "manipulations[0].params")
    assert str(error.value) == ("manipulations[0].params: unknown param(s) ['tagret'] for manipulation poison; "
                                "accepted: target, patch_size, position, value, pattern, trigger, clean_label")
    with pytest.raises(ConfigError, match=r"unknown param\(s\) \['x'\] for manipulation random_labels; "
                                          r"accepted: \(none\)"):
        check_params("random_labels", {"x": 1})
    with pytest.raises(ConfigError, match="manipulation.params.target: expected int or 'all-to-all', got str '3'"):
        check_params("poison", {"target": "3"})
    with pytest.raises(ConfigError, match="manipulation.params: expected dict, got int 3"):
        check_params("poison", 3)
    with pytest.raises(ConfigError, match="unknown manipulation 'poisson'"):
        check_params("poisson", {})
    check_params("poison", {"target": 1, "pattern": "checkerboard"})
    check_params("interclass", {"pair": [2, 3]})  # unannotated: any value


# ------------------------------------------------------------------------------------------------ grid YAML
def _grid(tmp_path, **changes):
    data = {"dataset": {"name": "synthetic"}, "manipulations": [{"name": "poison", "sizes": [20]}],
            "rates": [0.5], "methods": {"cf": {}}}
    data.update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("changes, message", [
    ({"manipulations": [{"name": "poison", "sizes": 500}]},
     "manipulations[0].sizes: expected list of int, got int 500"),
    ({"manipulations": [{"name": "poison", "sizes": ["a"]}]},
     "manipulations[0].sizes[0]: expected int, got str 'a'"),
    ({"manipulations": [{"name": "poison", "sizes": [20], "params": {"tagret": 3}}]},
     "manipulations[0].params: unknown param(s) ['tagret'] for manipulation poison; "
     "accepted: target, patch_size, position, value, pattern, trigger, clean_label"),
    ({"methods": {"cf": {"params": {"steps": "100"}}}},
     "method cf: hyperparameter 'steps': expected int, got str '100'"),
    ({"seeds": 0}, "config.seeds: expected list, got int 0"),
])
def test_grid_yaml_values_of_the_wrong_type(tmp_path, changes, message):
    with pytest.raises(ConfigError) as error:
        load_grid_config(_grid(tmp_path, **changes), [])
    assert str(error.value) == message


def test_grid_recipe_overrides_are_checked_when_the_config_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"^recipe.steps: expected int, got str '100'$"):
        load_grid_config(_grid(tmp_path, recipe={"steps": "100"}), [])
    with pytest.raises(ConfigError, match=r"^recipe: unknown key\(s\) \['stepz'\]; known keys: steps, batch_size"):
        load_grid_config(_grid(tmp_path, recipe={"stepz": 100}), [])


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "synthetic", "recipe.steps='100'"], "recipe.steps: expected int, got str '100'"),
    (["train", "--dataset", "synthetic", "manipulation.params.tagret=3"], "unknown param(s) ['tagret']"),
    (["train", "--dataset", "synthetic", "seed=x"], "config.seed: expected int, got str 'x'"),
])
def test_cli_reports_config_errors_in_one_line(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    assert message in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_cli_run_reports_a_grid_type_error(tmp_path, capsys):
    path = _grid(tmp_path, manipulations=[{"name": "poison", "sizes": 500}])
    assert main(["run", path, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: manipulations[0].sizes: expected list of int, got int 500"


# ------------------------------------------------------------------------------------------------ val size
def test_one_default_validation_size():
    # 5% of the training set, rounded: 50000 -> 2500, 384 -> 19 (19.2), 390 -> 20 (19.5 rounds to even 20)
    assert default_val_size(50000) == 2500 and default_val_size(384) == 19 and default_val_size(390) == 20
    assert default_val_size(10) == 0  # 0.5 rounds to even 0
    assert from_dict(TrainConfig, {}).dataset.resolved_val_size(50000) == 2500


def test_build_setting_holds_out_the_default_validation_split(synthetic, runtime):
    setting = build_setting(synthetic, "poison", 20, 0, runtime)
    assert len(synthetic.train_labels) == 384 and len(setting.val_idx) == 19  # round(0.05 * 384)
    assert len(build_setting(synthetic, "poison", 20, 0, runtime, val_size=0).val_idx) == 0
