"""The command line and the config layer."""
from __future__ import annotations

import json

import pytest
import yaml

from corrective_unlearning.cli import main
from corrective_unlearning.config import (ConfigError, DatasetConfig, TrainConfig, apply_overrides, from_dict,
                                          read_yaml)
from corrective_unlearning.data import load_dataset
from corrective_unlearning.experiment import build_setting

RUN = "train-synthetic-small_cnn-poison-n20-seed0"


def _train(out, *extra):
    return main(["train", "--dataset", "synthetic", "--n", "20", "--out", str(out), "--quiet", "recipe.steps=10",
                 *extra])


# ------------------------------------------------------------------------------------------------- train
def test_train_writes_record_and_config(tmp_path, capsys, runtime):
    assert _train(tmp_path) == 0
    printed = capsys.readouterr().out
    assert "clean test accuracy" in printed and "record:" in printed
    folder = tmp_path / RUN
    record = json.loads((folder / "record.json").read_text())
    config = yaml.safe_load((folder / "config.yaml").read_text())

    assert config["dataset"]["name"] == "synthetic" and config["model"] == "small_cnn"
    assert config["manipulation"] == {"name": "poison", "n": 20, "params": {}}
    assert config["recipe"]["steps"] == 10 and config["recipe"]["batch_size"] == 64  # synthetic default recipe
    assert config["seed"] == 0 and config["out"] == str(tmp_path)
    assert record["config"] == config

    assert record["kind"] == "original"
    metrics = record["metrics"]
    for key in ("test_acc", "affected_acc", "affected_nontarget_acc", "utility_acc", "attack_success",
                "manipulated_acc", "val_acc", "class_acc/class0"):
        assert isinstance(metrics[key], float) and 0 <= metrics[key] <= 100, key
    assert record["setting"]["n"] == 20 and record["setting"]["val_size"] == round(0.05 * 384)
    assert record["setting"]["manipulation_params"]["target"] == 0
    assert record["training"]["cache"] == "miss" and len(record["training"]["cache_key"]) == 24
    assert set(record["timings"]) == {"train_seconds", "eval_seconds", "total_seconds"}
    env = record["environment"]
    for key in ("python", "torch", "numpy", "platform", "corrective_unlearning", "device"):
        assert env[key], key
    assert env["device"] in ("cpu", "cuda", "cuda:0")

    # the recorded index hashes are those of the setting the run used (seeded: rebuilt identically here)
    setting = build_setting(load_dataset("synthetic"), "poison", 20, seed=0, runtime=runtime, val_size=19)
    assert record["index_hashes"] == setting.index_hashes()
    assert all(len(h) == 16 for h in record["index_hashes"].values())

    # a second run loads the cached original model and reproduces the metrics
    assert _train(tmp_path) == 0
    again = json.loads((folder / "record.json").read_text())
    assert again["training"]["cache"] == "hit" and again["metrics"] == metrics
    assert "cached" in capsys.readouterr().out


def test_config_file_flags_and_overrides_in_order(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"name": "synthetic", "val_size": 0}, "seed": 3,
                                      "manipulation": {"name": "interclass", "n": 8, "params": {"pair": [0, 2]}},
                                      "recipe": {"steps": 5}}))
    # the flag beats the file; a trailing key=value beats the flag
    assert main(["train", "--config", str(config), "--seed", "1", "--n", "6", "--out", str(tmp_path), "--quiet",
                 "--no-cache", "manipulation.n=4"]) == 0
    record = json.loads((tmp_path / "train-synthetic-small_cnn-interclass-n4-seed1" / "record.json").read_text())
    assert record["config"]["seed"] == 1 and record["setting"]["n"] == 4
    assert record["setting"]["manipulation_params"]["pair"] == [0, 2]
    assert record["config"]["recipe"]["steps"] == 5 and record["config"]["cache"] is False
    assert record["metrics"]["val_acc"] is None  # no validation split: NaN is written as null


def test_flag_values_are_taken_literally(tmp_path):
    """Regression: flag values were re-parsed as YAML, so '--out "runs #2"' wrote to 'runs'."""
    out = tmp_path / "runs #2"
    assert _train(out) == 0
    assert (out / RUN / "record.json").is_file()
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------- errors: names
@pytest.mark.parametrize(
    "flag, value, kind, known",
    [
        ("--manipulation", "blend", "manipulation", ["interclass", "poison", "random_labels"]),
        ("--model", "vgg11", "model", ["resnet9", "small_cnn", "wrn28x10"]),
        ("--dataset", "imagenet", "dataset", ["cifar10", "cifar100", "fashion-mnist", "synthetic", "tensors"]),
    ],
)
def test_unknown_names_exit_2_listing_the_known_ones(tmp_path, capsys, flag, value, kind, known):
    args = ["train", "--dataset", "synthetic", "--n", "4", "--out", str(tmp_path), "--quiet", "recipe.steps=2"]
    assert main(args + [flag, value]) == 2
    err = capsys.readouterr().err
    assert f"unknown {kind} '{value}'" in err
    for name in known:
        assert name in err
    assert not list(tmp_path.glob("*/record.json"))


def test_unknown_config_keys_exit_2_naming_the_key(tmp_path, capsys):
    assert _train(tmp_path, "recipe.stepz=3") == 2
    assert "stepz" in capsys.readouterr().err
    assert _train(tmp_path, "bogus=1") == 2
    assert "bogus" in capsys.readouterr().err


def test_missing_data_exits_2_with_the_search_list(tmp_path, capsys):
    assert main(["train", "--dataset", "cifar100", "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "d" / "cifar-100-python") in err and "--download" in err


def test_datasets_command_lists_sources(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("cifar10", "cifar100", "fashion-mnist", "synthetic", "tensors"):
        assert name in out


# -------------------------------------------------------------------------------------------------- config
def test_apply_overrides_parses_values_as_yaml():
    data = {"recipe": {"steps": 100}, "seed": 0}
    out = apply_overrides(data, ["recipe.steps=1000", "recipe.lr=0.1", "recipe.flip=false", "dataset.val_size=null",
                                 "manipulation.params.pair=[47, 53]", "out=a=b", "model=resnet9", "seed=7"])
    assert out is data
    assert data == {
        "recipe": {"steps": 1000, "lr": 0.1, "flip": False},
        "seed": 7,
        "dataset": {"val_size": None},
        "manipulation": {"params": {"pair": [47, 53]}},
        "out": "a=b",
        "model": "resnet9",
    }


def test_apply_overrides_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["recipe.steps"])
    with pytest.raises(ConfigError, match="'seed' is not a mapping"):
        apply_overrides({"seed": 0}, ["seed.x=1"])


def test_from_dict_rejects_unknown_keys_naming_them():
    config = from_dict(TrainConfig, {"dataset": {"name": "synthetic", "val_size": 0}, "seed": 2,
                                     "manipulation": {"name": "interclass", "n": 4}})
    assert isinstance(config.dataset, DatasetConfig) and config.dataset.val_size == 0
    assert config.manipulation.name == "interclass" and config.seed == 2 and config.model_name == "small_cnn"
    with pytest.raises(ConfigError, match=r"config: unknown key\(s\) \['bogus'\]"):
        from_dict(TrainConfig, {"bogus": 1})
    with pytest.raises(ConfigError, match=r"config.dataset: unknown key\(s\) \['colour'\]"):
        from_dict(TrainConfig, {"dataset": {"colour": "red"}})
    with pytest.raises(ConfigError, match=r"config.manipulation: expected a mapping"):
        from_dict(TrainConfig, {"manipulation": "poison"})
    with pytest.raises(ConfigError, match="recipe: .*'stepz'.*known keys: steps"):
        from_dict(TrainConfig, {"recipe": {"stepz": 3}}).resolved_recipe()


def test_resolved_recipe_and_val_size():
    config = from_dict(TrainConfig, {"dataset": {"name": "synthetic"}, "recipe": {"steps": 7}})
    recipe = config.resolved_recipe()
    assert recipe.steps == 7 and recipe.batch_size == 64  # the rest from the dataset's default recipe
    assert config.dataset.resolved_val_size(1000) == 50
    assert DatasetConfig(val_size=0).resolved_val_size(1000) == 0


def test_read_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        read_yaml(listing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml(empty) == {}
