"""Last-k variants: the reference's layer numbering, and frozen blocks that do not move at all."""
from __future__ import annotations

import pytest
import torch

from corrective_unlearning.methods import METHODS
from corrective_unlearning.models import create_model, split_last_k
from helpers import deletion_task


def _ids(modules):
    return [id(m) for m in modules]


def test_resnet9_numbering_is_the_references():
    model = create_model("resnet9", 10)  # [conv1, conv2, res1, conv3, res2, conv4, pool, flatten, fc]
    conv1, conv2, res1, conv3, res2, conv4, fc = model[0], model[1], model[2], model[3], model[4], model[5], model[8]
    assert _ids(split_last_k(model, 2)[1]) == _ids([conv4, fc])
    assert _ids(split_last_k(model, 4)[1]) == _ids([res2, conv4, fc])
    assert _ids(split_last_k(model, 4)[0]) == _ids([conv1, conv2, res1, conv3])
    assert _ids(split_last_k(model, 8)[1]) == _ids([conv2, res1, conv3, res2, conv4, fc])
    assert split_last_k(model, "all")[0] == []
    with pytest.raises(ValueError, match=r"one of \[1, 2, 4, 5, 7, 8, 9\]; got 3"):
        split_last_k(model, 3)


def test_wrn_numbering_is_the_references():
    model = create_model("wrn28x10", 100)
    conv1, stage1, stage2, stage3, head = model
    assert _ids(split_last_k(model, 1)[1]) == _ids([head.linear])  # the final batch norm stays frozen
    assert _ids(split_last_k(model, 5)[1]) == _ids([stage3[2], stage3[3], head.bn, head.linear])
    assert _ids(split_last_k(model, 9)[1]) == _ids([*stage3, head.bn, head.linear])
    assert _ids(split_last_k(model, 13)[1]) == _ids([stage2[2], stage2[3], *stage3, head.bn, head.linear])
    assert _ids(split_last_k(model, 25)[0]) == _ids([conv1])


@pytest.fixture(scope="module")
def task(poisoned, runtime):
    return deletion_task(poisoned, 0.5, runtime)


@pytest.mark.parametrize("name", ["eu", "cf"])
def test_frozen_blocks_keep_weights_and_batch_norm_statistics_bit_identical(task, name):
    # small_cnn: [block1, block2, conv3, conv4, fc], one layer each: k = 2 trains conv4 and fc.
    model = METHODS.get(name)(task, {"last_k": 2, "steps": 6}).model
    old, new = task.original.state_dict(), model.state_dict()
    frozen = [k for k in old if k.split(".")[0] in ("0", "1", "2")]
    trainable = [k for k in old if k.split(".")[0] in ("3", "6")]
    assert any("running_mean" in k for k in frozen) and any("num_batches_tracked" in k for k in frozen)
    assert all(torch.equal(old[k], new[k]) for k in frozen), [k for k in frozen if not torch.equal(old[k], new[k])]
    assert not any(torch.equal(old[k], new[k]) for k in trainable if "num_batches" not in k)
    assert all(p.requires_grad for p in model.parameters())  # freezing is undone after training


def test_the_paper_grids_include_the_last_k_variants():
    assert METHODS.get("eu").grid == {"last_k": ["all", 2, 4]}
    assert METHODS.get("cf").grid == {"last_k": ["all", 2, 4]}
