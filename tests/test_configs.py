"""The configs shipped in configs/ load, expand and name only known models, manipulations and hyperparameters."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from corrective_unlearning.config import TrainConfig, from_dict, read_yaml
from corrective_unlearning.runner import expand_cells, load_grid_config
from corrective_unlearning.manipulations import MANIPULATIONS
from corrective_unlearning.models import MODELS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GRIDS = sorted((CONFIGS / "paper1").glob("*.yaml"))


def _check_manipulation(name: str, params: dict) -> None:
    inspect.signature(MANIPULATIONS.get(name)).bind_partial(None, None, 1, 0, **params)  # raises on unknown keys


@pytest.mark.parametrize("path", GRIDS, ids=[p.stem for p in GRIDS])
def test_paper_grid_configs_load_and_expand(path):
    config = load_grid_config(str(path), [])
    assert config.model_name in MODELS.names()
    config.resolved_recipe()
    for grid in config.manipulation_grids():
        _check_manipulation(grid.name, grid.params)
    cells = expand_cells(config)  # validates every hyperparameter setting against its method
    assert len({c.id for c in cells}) == len(cells), "cell ids must be unique (one record per cell)"


def test_cifar10_poison_grid_is_the_papers():
    config = load_grid_config(str(CONFIGS / "paper1" / "cifar10-poison.yaml"), [])
    per_rate = {name: len(config.method_settings(name)) for name in config.methods}
    # EU and CF: last_k in {all, 2, 4}; SSD: 10 alphas x 5 lambda ratios; SCRUB: 8 alphas
    assert per_rate == {"eu": 3, "cf": 3, "ssd": 50, "badt": 1, "scrub": 8}
    # 3 sizes x 3 seeds x (the original + 10 rates x 65 settings)
    assert len(expand_cells(config)) == 9 * (1 + 10 * 65)


def test_fashion_mnist_recipe_is_cpu_sized():
    config = load_grid_config(str(CONFIGS / "paper1" / "fashion-mnist-poison.yaml"), [])
    assert config.manipulation_grids()[0].params == {"pattern": "checkerboard"}
    # the original, then per rate: EU 3 (last_k all, 2, 4), CF 3, SSD 5 x 2, BadT, SCRUB 2
    assert len(expand_cells(config)) == 1 + 5 * (3 + 3 + 10 + 1 + 2)


def test_demo_config_loads():
    config = from_dict(TrainConfig, read_yaml(CONFIGS / "demo.yaml"))
    assert config.model_name in MODELS.names()
    _check_manipulation(config.manipulation.name, config.manipulation.params)
