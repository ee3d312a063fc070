"""The attacks recipe: its grid loads, a method's own ``expand`` grows only that method's deletion sets, and the
cells of configs written without it are unchanged (tests/test_legacy_keys.py pins those)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from corrective_unlearning.config import ConfigError
from corrective_unlearning.runner import expand_cells, load_grid_config


def test_the_attacks_recipe_loads_with_every_trigger():
    config = load_grid_config(str(Path(__file__).resolve().parents[1] / "configs/attacks/fashion-mnist.yaml"), [])
    triggers = {(m.params.get("trigger") or {"name": "patch"})["name"] for m in config.manipulation_grids()}
    assert triggers == {"patch", "blend", "sig", "wanet", "ftrojan", "bpp", "lc"}
    cells = expand_cells(config)
    expanded = Counter(c.method for c in cells if c.expand)
    assert expanded == {"eu": 8 * 2}  # 8 attacks x 2 rates, EU only


def test_a_methods_own_expand_applies_to_it_alone():
    overrides = ["manipulations=[{name: poison, sizes: [20]}]", "rates=[0.5]",
                 "methods={eu: {grid: {last_k: [all]}, expand: [0, 5]}, cf: {grid: {last_k: [all]}}}"]
    cells = expand_cells(load_grid_config(None, overrides))
    assert sorted((c.method, c.expand) for c in cells if c.method != "original") == [("cf", 0), ("eu", 0),
                                                                                       ("eu", 5)]
    # the grid-wide expand still applies to every method without its own
    cells = expand_cells(load_grid_config(None, [*overrides[:2], "expand=[0, 3]",
                                                 "methods={eu: {expand: [0, 5]}, cf: {}}"]))
    assert sorted({(c.method, c.expand) for c in cells if c.method != "original"}) == [
        ("cf", 0), ("cf", 3), ("eu", 0), ("eu", 5)]


def test_a_bad_method_expand_is_refused_naming_the_method():
    with pytest.raises(ConfigError, match=r"methods.eu.expand: expected a non-empty list of distinct integers"):
        load_grid_config(None, ["manipulations=[{name: poison, sizes: [20]}]", "methods={eu: {expand: [-1]}}"])


def test_the_size_check_before_a_run_never_trains_a_surrogate(monkeypatch):
    """The driver's check of n against the candidates draws the poisoned samples but stops where the
    label-consistent trigger asks for its surrogate model (training one would be a whole original's cost)."""
    from corrective_unlearning import experiment
    from corrective_unlearning.runner.run import check_sizes

    monkeypatch.setattr(experiment, "train_original", lambda *a, **k: pytest.fail("trained a model"))
    lc = "{name: poison, sizes: [%d], params: {trigger: {name: lc}, clean_label: true, target: 1}}"
    check_sizes(load_grid_config(None, ["dataset={name: synthetic}", f"manipulations=[{lc % 10}]"]))
    with pytest.raises(ConfigError, match=r"poison \(clean-label: of target class 1\): n must be in \[0, 9"):
        check_sizes(load_grid_config(None, ["dataset={name: synthetic}", f"manipulations=[{lc % 200}]"]))


def test_the_label_consistent_surrogate_trains_with_the_settings_recipe(monkeypatch, synthetic, runtime):
    """The surrogate is trained (or loaded) with the recipe the original uses, so a grid, `corrective train` and
    `fix` on its run folder all craft the same perturbations."""
    from torch import nn

    from corrective_unlearning import experiment
    from corrective_unlearning.training import Recipe

    seen = []

    def fake_train_original(setting, model_name, recipe, runtime, use_cache=True):
        seen.append(recipe)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)), {}

    monkeypatch.setattr(experiment, "train_original", fake_train_original)
    recipe = Recipe(steps=3, batch_size=16)
    experiment.build_setting(synthetic, "poison", 8, 0, runtime, 24, recipe, target=1, clean_label=True,
                             trigger={"name": "lc", "steps": 2})
    assert seen == [recipe]
