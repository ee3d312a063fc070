"""REM's capacity-restricted original training (recipe.spare_capacity): the spare half is held at zero in training,
the deployed original is the narrow network, and REM switches the trained spare channels on."""
from __future__ import annotations

import pytest
import torch

from corrective_unlearning.capacity import WideModel, restricted_model, trained_spare
from corrective_unlearning.experiment import train_original
from corrective_unlearning.runner import deletion_set, make_task
from corrective_unlearning.methods import METHODS
from corrective_unlearning.methods import rem as rem_module
from corrective_unlearning.models import create_model
from corrective_unlearning.training import Recipe
from helpers import RECIPE as METHOD_RECIPE

RECIPE = METHOD_RECIPE.replace(spare_capacity=1.0)  # the method tests' recipe, trained with spare channels


@pytest.fixture(scope="module")
def setting(poisoned_setting):
    return poisoned_setting  # conftest's: 40 poisoned samples, seed 0


@pytest.fixture(scope="module")
def trained(setting, runtime):
    return train_original(setting, "small_cnn", RECIPE, runtime)


def _decay_only_factor(recipe: Recipe) -> float:
    """What SGD with momentum and weight decay does to a weight whose gradient is always zero: w_T = w_0 * a_T,
    a scalar recurrence (momentum buffer starts at the first step's decay term, as torch.optim.SGD's does)."""
    w, buf = 1.0, None
    for step in range(recipe.steps):
        d = recipe.weight_decay * w
        buf = d if buf is None else recipe.momentum * buf + d
        w -= recipe.lr_at(step) * buf
    return w


def test_the_deployed_original_is_narrow_and_equals_the_wide_network_with_spare_off(trained, setting):
    original, info = trained
    wide = trained_spare(original)
    assert isinstance(wide, WideModel) and info["recipe"]["spare_capacity"] == 1.0
    fresh = create_model("small_cnn", setting.dataset.num_classes, setting.dataset.in_channels)
    fresh.load_state_dict(original.state_dict(), strict=True)  # the original architecture's shapes
    x = setting.train_bank.batch(setting.train_idx[:32], False, 0, False, None)
    with torch.no_grad():
        assert torch.equal(original.eval()(x), wide.eval()(x))


def test_spare_weights_keep_their_initialisation_shrunk_only_by_weight_decay(trained, setting):
    wide = trained_spare(trained[0])
    torch.manual_seed(0)
    initial = restricted_model(create_model("small_cnn", setting.dataset.num_classes, 3), 1.0, setting.seed)
    factor = _decay_only_factor(RECIPE)
    assert 0.5 < factor < 1.0
    first_conv = next(m for m in wide.modules() if isinstance(m, torch.nn.Conv2d))
    init_conv = next(m for m in initial.modules() if isinstance(m, torch.nn.Conv2d))
    n = first_conv.out_channels // 2
    torch.testing.assert_close(first_conv.weight[n:], init_conv.weight[n:] * factor, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(first_conv.weight[:n], init_conv.weight[:n] * factor)  # the used half trained
    fc, init_fc = wide.net[-1], initial.net[-1]
    k = fc.in_features // 2
    torch.testing.assert_close(fc.weight[:, k:], init_fc.weight[:, k:] * factor, rtol=1e-5, atol=1e-7)
    assert fc.weight[:, k:].abs().max() > 0  # initialised as a whole, unlike spare capacity added at unlearning


def test_a_cache_hit_returns_the_same_wide_network(setting, runtime):
    first, _ = train_original(setting, "small_cnn", RECIPE, runtime)
    again, info = train_original(setting, "small_cnn", RECIPE, runtime)
    assert info["cache"] == "hit"
    a, b = trained_spare(first).state_dict(), trained_spare(again).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_plain_recipes_keep_their_recorded_fields_and_cache_keys():
    assert "spare_capacity" not in Recipe().to_dict()
    assert Recipe(spare_capacity=0.5).to_dict()["spare_capacity"] == 0.5
    with pytest.raises(ValueError, match="spare_capacity"):
        Recipe(spare_capacity=-1.0)


def test_rem_switches_the_trained_spare_channels_on_instead_of_adding_new_ones(trained, setting, runtime):
    original, info = trained
    task = make_task(setting, original, deletion_set(setting, 0.5), RECIPE, runtime, info)
    hp = METHODS.get("rem").resolve({"steps": 4, "max_flush_passes": 2, "p_on": 0.3, "spare_fraction": 0.25})
    wide, origin = rem_module.spare_capacity(task, hp)
    trained_wide = trained_spare(original)
    assert wide is not trained_wide and wide.state is not trained_wide.state
    assert wide.state.p_on == 0.3 and wide.state.seed == task.seed
    assert all(torch.equal(a, b) for a, b in zip(wide.state_dict().values(), trained_wide.state_dict().values()))
    assert "trained" in origin

    before = {k: v.clone() for k, v in trained_wide.state_dict().items()}
    model = METHODS.get("rem")(task, {"steps": 4, "max_flush_passes": 2}).model
    fresh = create_model("small_cnn", setting.dataset.num_classes, 3)
    fresh.load_state_dict(model.state_dict(), strict=True)  # deployable in the original shapes
    after = trained_spare(original).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # REM worked on a copy
