"""REM's ViT (``vit_small``): shapes on every registered dataset, last-k numbering, spare hidden units in the MLP
blocks (same function with spare units off, narrow back, per-example masks), REM end to end."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import RECIPE
from safetensors.torch import save_file

from corrective_unlearning.capacity import narrow, widen
from corrective_unlearning.data import SOURCES
from corrective_unlearning.experiment import build_setting
from corrective_unlearning.inputs import load_model
from corrective_unlearning.methods import METHODS
from corrective_unlearning.models import create_model, split_last_k
from corrective_unlearning.runner import (
    deletion_set,
    expand_cells,
    load_grid_config,
    make_task,
)
from corrective_unlearning.training import default_recipe

TINY = {"dim": 32, "depth": 2, "heads": 2, "head_dim": 8, "mlp_dim": 48}
SHAPES = {"synthetic": (3, 16), "fashion-mnist": (1, 28), "cifar10": (3, 32), "cifar100": (3, 32), "svhn": (3, 32)}
USER_SHAPED = {"tensors"}  # a user's own arrays: any shape
ATOL = 1e-5  # float32: fc2 sums over hidden + spare inputs, the spare ones exactly zero


def test_every_registered_dataset_has_a_shape_here():
    assert set(SOURCES.names()) - USER_SHAPED <= set(SHAPES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shapes_on_every_registered_dataset(name):
    channels, size = SHAPES[name]
    model = create_model("vit_small", 10, channels, image_size=size, **TINY).eval()
    assert model[0].patch == size // 4  # 8 on 32 px, 7 on 28 px, 4 on 16 px: a 4 x 4 grid
    with torch.no_grad():
        assert model(torch.rand(2, channels, size, size)).shape == (2, 10)
    assert isinstance(model[-1].linear, torch.nn.Linear)
    assert [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1] is model[-1].linear


def test_reference_sizes():
    model = create_model("vit_small", 10, 3)
    block = model[1]
    assert len(model) == 6 and model[0].proj.out_features == 512
    assert block.attn.heads == 8 and block.attn.head_dim == 64 and block.ff.fc1.out_features == 1536
    assert model[0].patch == 8 and model[0].pos_embedding.shape == (1, 17, 512)


def test_last_k_numbering():
    model = create_model("vit_small", 10, 3, **TINY)  # depth 2: head 1, blocks 4 each, embedding 1
    assert [len(split_last_k(model, k)[1]) for k in (1, 5, 9, 10)] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"\[1, 5, 9, 10\]"):
        split_last_k(model, 2)


def test_recipe_is_adam_at_1e_4():
    r = default_recipe("cifar10", "vit_small")
    assert (r.optimizer, r.lr, r.schedule, r.batch_size) == ("adam", 1e-4, "constant", 2048)
    assert default_recipe("cifar10") == default_recipe("cifar10", "resnet9")  # other models unchanged


def _trained_like(seed=0):
    torch.manual_seed(seed)
    model = create_model("vit_small", 10, 3, image_size=16, **TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_widened_vit_with_spare_off_computes_the_original_function_and_narrows_back():
    model = _trained_like()
    x = torch.rand(5, 3, 16, 16)
    wide = widen(model, spare_fraction=1.0).eval()
    assert wide.net[1].ff.fc1.out_features == 96 and len(wide.spare_masks) == 2
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(wide(x), ref, atol=ATOL, rtol=0)
        with wide.spare_all():  # fresh spare units: zero read-out, same function even when on
            assert torch.allclose(wide(x), ref, atol=ATOL, rtol=0)
        # as if REM had trained the spare read-out: on, it changes the output; off, it is ignored
        wide.net[1].ff.fc2.weight[:, 48:] = torch.randn(32, 48)
        with wide.spare_all():
            assert not torch.allclose(wide(x), ref, atol=1e-3)
        assert torch.allclose(wide(x), ref, atol=ATOL, rtol=0)
    small = narrow(wide)
    fresh = create_model("vit_small", 10, 3, image_size=16, **TINY)
    fresh.load_state_dict(small.state_dict(), strict=True)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), ref, atol=ATOL, rtol=0)


def test_masks_are_per_example_over_hidden_units_and_shared_for_identified_indices():
    model = _trained_like()
    wide = widen(model).eval()
    seen = []
    wide.net[1].ff.act.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    x = torch.rand(1, 3, 16, 16).expand(4, -1, -1, -1)
    wide.shared_mask_for([7, 9])
    with torch.no_grad(), wide.masks(torch.tensor([3, 5, 7, 9])):
        wide(x)
    spare = seen[0][:, :, 48:]
    on = spare != 0
    assert torch.equal(on.any(dim=1), on.all(dim=1))  # the same units for all tokens of an example
    assert not torch.equal(on[0], on[1]) and torch.equal(on[2], on[3])  # own masks differ; shared equal


def test_rem_runs_end_to_end_on_a_tiny_vit(synthetic, runtime):
    setting = build_setting(synthetic, "poison", 40, 0, runtime, val_size=16)
    torch.manual_seed(0)
    original = create_model("vit_small", setting.dataset.num_classes, setting.dataset.in_channels,
                            image_size=setting.dataset.image_size, **TINY)
    task = make_task(setting, original, deletion_set(setting, 0.5), RECIPE, runtime)
    result = METHODS.get("rem")(task, {"steps": 4, "max_flush_passes": 2})
    fresh = create_model("vit_small", setting.dataset.num_classes, setting.dataset.in_channels,
                         image_size=setting.dataset.image_size, **TINY)
    fresh.load_state_dict(result.model.state_dict(), strict=True)
    assert result.notes["steps"] == 4 and result.notes["rounds"] >= 1


@pytest.mark.parametrize("name", ["cifar10-vit", "fashion-mnist-vit"])
def test_vit_configs_load_and_expand(name):
    config = load_grid_config(str(Path(__file__).resolve().parents[1] / "configs" / "rem" / f"{name}.yaml"), [])
    recipe = config.resolved_recipe()
    assert recipe.optimizer == "adam" and config.model_name.startswith("vit_")
    assert expand_cells(config)


def test_the_command_line_builds_the_vit_for_the_data_s_image_size(tmp_path):
    """``--arch vit_small`` on 28-pixel data loads weights of a 28-pixel ViT (patch 7): the loader passes the data's
    side on, so the position embedding's shape matches."""
    tiny = {"dim": 32, "depth": 1, "heads": 2, "head_dim": 16, "mlp_dim": 48}
    model = create_model("vit_small", 10, 1, image_size=28, **tiny)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    loaded = load_model(tmp_path / "m.safetensors", "vit_small", 10, 1, tiny, image_size=28)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
