"""ResNet-18 (RUM's CIFAR variant) and PreAct-ResNet18 (BackdoorBench's): shapes on every registered dataset's
image shape, and the last-k numbering their docstrings give."""
from __future__ import annotations

import pytest
import torch

from corrective_unlearning.data import SOURCES, load_dataset
from corrective_unlearning.models import MODELS, create_model, fold_batchnorm, split_last_k

NAMES = ["resnet18", "preact_resnet18"]
# Every registered image source's (channels, size, classes), built from shapes: no data files are read.
SHAPES = {"synthetic": (3, 16, 4), "fashion-mnist": (1, 28, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100),
          "svhn": (3, 32, 10)}
SHAPELESS = {"tensors"}  # arrays the user supplies: any shape


def test_both_models_are_registered_and_every_dataset_shape_is_listed():
    assert set(NAMES) <= set(MODELS.names())
    assert set(SOURCES.names()) - SHAPELESS <= set(SHAPES), "a new dataset needs its shape here"
    data = load_dataset("synthetic")  # generated, no file: checks the listed shape is the real one
    assert (data.train_images.shape[1], data.train_images.shape[-1], data.num_classes) == SHAPES["synthetic"]


@pytest.mark.parametrize("dataset", list(SHAPES))
@pytest.mark.parametrize("name", NAMES)
def test_shape_on_every_registered_dataset(name, dataset):
    channels, size, classes = SHAPES[dataset]
    model = create_model(name, classes, in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_is_the_usual_11_m(name):
    n = sum(p.numel() for p in create_model(name, 10).parameters())
    assert 11_100_000 < n < 11_200_000


@pytest.mark.parametrize("name", NAMES)
def test_last_k_numbering_is_the_documented_one(name):
    model = create_model(name, 10)  # [stem, layer1..layer4, pool, flatten, linear]
    stem, *stages, _, _, linear = model
    blocks = [b for stage in stages for b in stage]
    assert len(blocks) == 8
    ids = lambda ms: [id(m) for m in ms]  # noqa: E731
    assert ids(split_last_k(model, 1)[1]) == ids([linear])
    assert ids(split_last_k(model, 3)[1]) == ids([blocks[7], linear])
    assert ids(split_last_k(model, 5)[1]) == ids([blocks[6], blocks[7], linear])  # the last stage
    for j in range(9):
        frozen, trainable = split_last_k(model, 2 * j + 1)
        assert ids(trainable) == ids([*blocks[8 - j:], linear])
        assert ids(frozen) == ids([stem, *blocks[:8 - j]])
    assert ids(split_last_k(model, 18)[1]) == ids([stem, *blocks, linear])
    assert split_last_k(model, 18)[0] == []
    valid = sorted({2 * j + 1 for j in range(9)} | {18})
    with pytest.raises(ValueError, match=rf"one of {valid}; got 4".replace("[", r"\[").replace("]", r"\]")):
        split_last_k(model, 4)


@pytest.mark.parametrize("name, folds", [("resnet18", 4), ("preact_resnet18", 0)])
def test_fold_batchnorm_keeps_the_function(name, folds):
    """Frozen teachers fold Conv -> BN pairs held in a Sequential (ResNet-18's stem and its three projection
    shortcuts; PreAct-ResNet18 has none): eval outputs are unchanged."""
    torch.manual_seed(0)
    model = create_model(name, 10)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5), torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    folded = fold_batchnorm(model)
    count = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    assert count(model) - count(folded) == folds
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), model.eval()(x), atol=1e-4, rtol=1e-4)
