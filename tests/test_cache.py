"""The original-model cache: keys include everything (the seed above all); damage is detected, never used."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from corrective_unlearning.cache import ModelCache, cache_key
from corrective_unlearning.experiment import build_setting, original_spec, train_original
from corrective_unlearning.models import create_model
from corrective_unlearning.training import Recipe

RECIPE = Recipe(steps=10, batch_size=32, crop_padding=1, flip=False)


def _setting(synthetic, runtime, seed=0, manipulation="poison", n=20, **params):
    return build_setting(synthetic, manipulation, n, seed=seed, runtime=runtime, val_size=24, **params)


def _equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------------- keys
def test_cache_key_requires_the_seed():
    with pytest.raises(ValueError, match="seed"):
        cache_key({"dataset": "synthetic", "model": "small_cnn"})
    assert cache_key({"seed": 0, "a": 1}) == cache_key({"a": 1, "seed": 0})  # canonical: order-independent
    assert cache_key({"seed": 0}) != cache_key({"seed": 1})


def test_cache_key_covers_everything_the_model_depends_on(synthetic, runtime):
    base = _setting(synthetic, runtime)
    key = cache_key(original_spec(base, "small_cnn", RECIPE))
    assert key == cache_key(original_spec(_setting(synthetic, runtime), "small_cnn", RECIPE))
    variants = [
        original_spec(_setting(synthetic, runtime, seed=1), "small_cnn", RECIPE),
        original_spec(_setting(synthetic, runtime, target=1), "small_cnn", RECIPE),
        original_spec(_setting(synthetic, runtime, patch_size=2), "small_cnn", RECIPE),
        original_spec(_setting(synthetic, runtime, n=21), "small_cnn", RECIPE),
        original_spec(_setting(synthetic, runtime, manipulation="random_labels"), "small_cnn", RECIPE),
        original_spec(build_setting(synthetic, "poison", 20, seed=0, runtime=runtime, val_size=0), "small_cnn",
                      RECIPE),
        original_spec(base, "resnet9", RECIPE),
        original_spec(base, "small_cnn", RECIPE.replace(steps=11)),
        original_spec(base, "small_cnn", RECIPE.replace(lr=0.05)),
        original_spec(base, "small_cnn", RECIPE.replace(checkpoint="val")),
        {**original_spec(base, "small_cnn", RECIPE), "dataset_checksum": "0" * 64},
    ]
    keys = [cache_key(spec) for spec in variants]
    assert key not in keys and len(set(keys)) == len(keys)


# ------------------------------------------------------------------------------------------- train_original
def test_second_call_is_a_hit_with_identical_weights(synthetic, runtime, isolated_cache):
    setting = _setting(synthetic, runtime)
    first, info = train_original(setting, "small_cnn", RECIPE, runtime)
    assert info["cache"] == "miss" and info["train_seconds"] > 0
    weights = isolated_cache / "originals" / f"{info['cache_key']}.safetensors"
    sidecar = weights.with_suffix(".json")
    assert weights.is_file() and sidecar.is_file()
    meta = json.loads(sidecar.read_text())
    assert meta["key"] == info["cache_key"] and meta["spec"]["seed"] == 0

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean hit warns about nothing
        second, info2 = train_original(setting, "small_cnn", RECIPE, runtime)
    assert info2["cache"] == "hit" and info2["cache_key"] == info["cache_key"]
    assert info2["train_seconds"] == pytest.approx(info["train_seconds"])
    assert _equal(first, second)


def test_use_cache_false_neither_reads_nor_writes(synthetic, runtime, isolated_cache):
    setting = _setting(synthetic, runtime)
    _, info = train_original(setting, "small_cnn", RECIPE, runtime, use_cache=False)
    assert info["cache"] == "miss"
    assert not (isolated_cache / "originals").exists()


def _retrains_with_a_warning(setting, runtime, reference):
    with pytest.warns(UserWarning, match="corrupt or mismatched"):
        model, info = train_original(setting, "small_cnn", RECIPE, runtime)
    assert info["cache"] == "miss"
    assert _equal(model, reference)  # retrained (deterministically), not loaded from the damaged entry
    # and the entry was rewritten: the next call is a clean hit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, again = train_original(setting, "small_cnn", RECIPE, runtime)
    assert again["cache"] == "hit"


def test_corrupted_weights_are_detected_and_retrained(synthetic, runtime, isolated_cache):
    setting = _setting(synthetic, runtime)
    reference, info = train_original(setting, "small_cnn", RECIPE, runtime)
    weights = isolated_cache / "originals" / f"{info['cache_key']}.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside a tensor: still a loadable file, wrong weights
    weights.write_bytes(bytes(data))
    _retrains_with_a_warning(setting, runtime, reference)


def test_truncated_weights_are_detected_and_retrained(synthetic, runtime, isolated_cache):
    setting = _setting(synthetic, runtime)
    reference, info = train_original(setting, "small_cnn", RECIPE, runtime)
    weights = isolated_cache / "originals" / f"{info['cache_key']}.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    _retrains_with_a_warning(setting, runtime, reference)


def test_sidecar_with_another_key_is_detected_and_retrained(synthetic, runtime, isolated_cache):
    setting = _setting(synthetic, runtime)
    reference, info = train_original(setting, "small_cnn", RECIPE, runtime)
    sidecar = isolated_cache / "originals" / f"{info['cache_key']}.json"
    meta = json.loads(sidecar.read_text())
    meta["key"] = "0" * 24
    sidecar.write_text(json.dumps(meta))
    _retrains_with_a_warning(setting, runtime, reference)


def test_missing_sidecar_is_detected_and_retrained(synthetic, runtime, isolated_cache):
    setting = _setting(synthetic, runtime)
    reference, info = train_original(setting, "small_cnn", RECIPE, runtime)
    (isolated_cache / "originals" / f"{info['cache_key']}.json").unlink()
    _retrains_with_a_warning(setting, runtime, reference)


def test_weights_of_another_architecture_are_rejected(synthetic, runtime, isolated_cache, tmp_path):
    """A consistent entry (matching key and checksum) whose tensors do not fit the model: strict load fails."""
    setting = _setting(synthetic, runtime)
    reference, info = train_original(setting, "small_cnn", RECIPE, runtime)
    key = info["cache_key"]
    cache = ModelCache(isolated_cache / "originals")
    torch.manual_seed(0)
    cache.save(key, create_model("small_cnn", 4, 3, width=8), {"spec": {}, "train_seconds": 1.0})
    _retrains_with_a_warning(setting, runtime, reference)


def test_model_cache_absent_entry_is_silent(tmp_path):
    model = create_model("small_cnn", 4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ModelCache(tmp_path / "nothing").load("abc", model) is None


def test_different_seeds_never_share_an_entry(synthetic, runtime, isolated_cache):
    a, info_a = train_original(_setting(synthetic, runtime, seed=0), "small_cnn", RECIPE, runtime)
    b, info_b = train_original(_setting(synthetic, runtime, seed=1), "small_cnn", RECIPE, runtime)
    assert info_a["cache"] == "miss" and info_b["cache"] == "miss"
    assert info_a["cache_key"] != info_b["cache_key"]
    assert not _equal(a, b)
    assert len(list((isolated_cache / "originals").glob("*.safetensors"))) == 2
    again, info = train_original(_setting(synthetic, runtime, seed=1), "small_cnn", RECIPE, runtime)
    assert info["cache"] == "hit" and _equal(again, b)
