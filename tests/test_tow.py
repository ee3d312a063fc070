"""ToW (RUM, SPEC 7) against the retrained model and the clean oracle: the arithmetic, the references, the grid
option ``tow`` and the report's ToW sections."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from corrective_unlearning import references as references_module
from corrective_unlearning.cache import cache_key
from corrective_unlearning.config import ConfigError
from corrective_unlearning.evaluation.tow import retain_sample, tug_of_war
from corrective_unlearning.experiment import build_setting, original_spec, train_original
from corrective_unlearning.runner import load_grid_config, load_records, run_grid
from corrective_unlearning.references import clean_oracle_spec, tow_metrics, train_clean_oracle
from corrective_unlearning.report.build import build_report
from grid_helpers import small_grid, write_grid

GRID = small_grid(
    # eu with last_k all and no steps of its own: the retrained reference's own recipe and seed
    {"eu": {"grid": {"last_k": ["all"]}}, "cf": {"grid": {"last_k": ["all"]}, "params": {"steps": 5}}},
    rates=[0.5, 1.0], tow={"references": ["retrain", "clean"], "retain_samples": 100})
TOW_METRICS = {"tow_retrain", "tow_retrain_sfclean", "tow_clean", "tow_clean_sfclean", "original_tow_retrain",
               "original_tow_retrain_sfclean", "original_tow_clean", "original_tow_clean_sfclean"}


def _config(tmp_path, **changes):
    return load_grid_config(str(write_grid(tmp_path, GRID, **changes)), [])


# -- the arithmetic ----------------------------------------------------------------------------------------------

def test_tow_formula_against_a_hand_computation():
    u = {"forget_given": 30.0, "forget_clean": 60.0, "retain_given": 95.0, "test": 90.0}
    r = {"forget_given": 10.0, "forget_clean": 90.0, "retain_given": 97.0, "test": 85.0}
    # (1 - 20/100) (1 - 2/100) (1 - 5/100) = 0.8 * 0.98 * 0.95 = 0.7448, in percent
    assert tug_of_war(u, r) == pytest.approx(74.48, abs=1e-9)
    assert tug_of_war(r, u) == pytest.approx(74.48, abs=1e-9)  # symmetric
    # A_f on S_f's clean labels: (1 - 30/100) * 0.98 * 0.95 = 0.6517
    assert tug_of_war(u, r, forget="forget_clean") == pytest.approx(65.17, abs=1e-9)
    assert tug_of_war(u, u) == 100.0 and tug_of_war(u, u, forget="forget_clean") == 100.0
    assert math.isnan(tug_of_war({**u, "forget_given": float("nan")}, r))  # an empty S_f: undefined, not 100
    with pytest.raises(ValueError, match="forget"):
        tug_of_war(u, r, forget="retain_given")
    named = tow_metrics(u, {"retrain": r, "clean": u}, prefix="original_")
    assert named == {"original_tow_retrain": pytest.approx(74.48), "original_tow_retrain_sfclean": pytest.approx(65.17),
                     "original_tow_clean": 100.0, "original_tow_clean_sfclean": 100.0}


def test_retain_sample_is_a_seeded_sorted_subset():
    retain = torch.randperm(1000)[:600]
    a, b = retain_sample(retain, 100, seed=0), retain_sample(retain, 100, seed=0)
    assert torch.equal(a, b) and len(a) == 100 and len(set(a.tolist())) == 100
    assert set(a.tolist()) <= set(retain.tolist()) and torch.equal(a, torch.sort(a).values)
    assert not torch.equal(a, retain_sample(retain, 100, seed=1))
    assert torch.equal(retain_sample(retain, None, seed=0), torch.sort(retain).values)
    assert torch.equal(retain_sample(retain, 5000, seed=0), torch.sort(retain).values)


# -- the clean oracle ---------------------------------------------------------------------------------------------

def test_clean_oracle_trains_on_clean_labels_without_triggers(synthetic, runtime, tiny_recipe, monkeypatch,
                                                               poisoned_setting):
    setting = poisoned_setting
    m = setting.manipulated
    seen = []
    real_train = references_module.train

    def spy(model, bank, labels, indices, recipe, **kwargs):
        seen.append((labels.clone(), indices.clone(), kwargs.get("triggered")))
        return real_train(model, bank, labels, indices, recipe, **kwargs)

    monkeypatch.setattr(references_module, "train", spy)
    oracle, info = train_clean_oracle(setting, "small_cnn", tiny_recipe, runtime)
    assert info["cache"] == "miss" and len(seen) == 1
    labels, indices, triggered = seen[0]
    assert torch.equal(labels, m.clean_labels) and torch.equal(indices, setting.train_idx)
    assert not torch.equal(labels[m.manipulated], m.labels[m.manipulated])  # the poison labels are undone
    assert triggered is None or not triggered.any()  # and no trigger is stamped
    assert m.triggered.any()  # (the manipulated setting does stamp some)

    # Its cache key differs from the original's; the poisoned original is another model.
    original, original_info = train_original(setting, "small_cnn", tiny_recipe, runtime)
    assert info["cache_key"] != original_info["cache_key"]
    assert cache_key(clean_oracle_spec(setting, "small_cnn", tiny_recipe)) != cache_key(
        original_spec(setting, "small_cnn", tiny_recipe))
    assert clean_oracle_spec(setting, "small_cnn", tiny_recipe)["reference"] == "clean_oracle"
    assert any(not torch.equal(a, b) for a, b in zip(oracle.state_dict().values(), original.state_dict().values()))

    # Undoing any manipulation leaves the same training set: another manipulation of the same seed shares it
    # (a cache hit, no training); another seed does not.
    other = build_setting(synthetic, "random_labels", 40, 0, runtime, val_size=16)
    again, again_info = train_clean_oracle(other, "small_cnn", tiny_recipe, runtime)
    assert again_info["cache"] == "hit" and again_info["cache_key"] == info["cache_key"] and len(seen) == 1
    assert all(torch.equal(a, b) for a, b in zip(oracle.state_dict().values(), again.state_dict().values()))
    seed1 = build_setting(synthetic, "poison", 40, 1, runtime, val_size=16)
    assert cache_key(clean_oracle_spec(seed1, "small_cnn", tiny_recipe)) != info["cache_key"]
    # Within one run a memo hands the same model back.
    memo = {}
    first, _ = train_clean_oracle(setting, "small_cnn", tiny_recipe, runtime, memo=memo)
    second, second_info = train_clean_oracle(other, "small_cnn", tiny_recipe, runtime, memo=memo)
    assert second is first and second_info["cache"] == "reused"


# -- the grid ----------------------------------------------------------------------------------------------------

def _counting(monkeypatch):
    """Count the references obtained (with their cache flags) and the clean-oracle trainings."""
    counts = {"retrain": [], "clean_trainings": 0}
    real_retrained, real_train = references_module.train_retrained, references_module.train

    def retrained(*args, **kwargs):
        model, info = real_retrained(*args, **kwargs)
        counts["retrain"].append(info["cache"])
        return model, info

    def train(*args, **kwargs):
        counts["clean_trainings"] += 1
        return real_train(*args, **kwargs)

    monkeypatch.setattr(references_module, "train_retrained", retrained)
    monkeypatch.setattr(references_module, "train", train)
    return counts


def test_references_are_computed_once_per_deletion_set_and_cached(tmp_path, monkeypatch):
    config = _config(tmp_path)
    counts = _counting(monkeypatch)
    first = run_grid(config, tmp_path / "out", progress=False)
    assert all(r["status"] == "ok" for r in first) and len(first) == 1 + 2 * 2
    # One retrained reference per deletion set, one clean oracle for the (variant, n, seed), all trained now.
    assert counts == {"retrain": ["miss", "miss"], "clean_trainings": 1}
    files = sorted(p.name for p in (tmp_path / "out" / "references").glob("*.json"))
    assert files == ["poison-n40-seed0-rate0.50.json", "poison-n40-seed0-rate1.00.json"]
    blocks = {json.loads((tmp_path / "out" / "references" / f).read_text())["deletion_set"]: json.loads(
        (tmp_path / "out" / "references" / f).read_text()) for f in files}
    assert [b["retrain"]["cache"] for b in blocks.values()] == ["miss", "miss"]
    assert [b["clean"]["cache"] for b in blocks.values()] == ["miss", "reused"]  # its cost is recorded once
    assert blocks["poison-n40-seed0-rate1.00"]["clean"]["seconds_this_run"] == 0.0
    assert all(b["retain_scored"] == 100 and b["retain_size"] > 100 for b in blocks.values())
    methods = [r for r in first if r["method"] != "original"]
    for record in methods:  # every record of a deletion set carries the same block, the reference accuracies
        block = blocks[record["cell"].rsplit("-", 2)[0]]
        assert {k: v for k, v in record["references"].items()} == {
            k: v for k, v in block.items() if k not in ("deletion_set", "written", "retain_samples",
                                                        "original_cache_key")}
        assert set(record["references"]["retrain"]["accuracies"]) == {"forget_given", "forget_clean",
                                                                       "retain_given", "test"}
        assert TOW_METRICS <= set(record["metrics"])
        assert all(0.0 <= record["metrics"][k] <= 100.0 for k in TOW_METRICS)
        assert set(record["tow"]["accuracies"]) == {"forget_given", "forget_clean", "retain_given", "test"}
        assert record["tow"]["accuracies"]["test"] == record["metrics"]["test_acc"]
        assert "tow_eval_seconds" in record["timings"]
    original = next(r for r in first if r["method"] == "original")
    assert not TOW_METRICS & set(original["metrics"]) and "references" not in original  # no deletion set

    # A second grid in a new out dir trains nothing: every reference comes from the cache, with equal ToW.
    counts.update(retrain=[], clean_trainings=0)
    second = run_grid(config, tmp_path / "again", progress=False)
    assert counts == {"retrain": ["hit", "hit"], "clean_trainings": 0}
    again = {r["cell"]: r for r in second}
    for record in methods:
        assert {k: again[record["cell"]]["metrics"][k] for k in TOW_METRICS} == {
            k: record["metrics"][k] for k in TOW_METRICS}
        assert again[record["cell"]]["references"]["clean"]["cache"] in ("hit", "reused")


def test_tow_of_the_retrained_reference_against_itself_is_exactly_100(tmp_path):
    """An eu cell (last_k all, the recipe's steps, the setting's seed) is the retrained reference: the whole path
    (task, training, cache, index-keyed predictions, subsample, arithmetic) must give exactly 100."""
    config = _config(tmp_path, methods={"eu": {"grid": {"last_k": ["all"]}}})
    records = run_grid(config, tmp_path / "out", progress=False)
    eu = [r for r in records if r["method"] == "eu"]
    assert len(eu) == 2 and all(r["status"] == "ok" for r in eu)
    for record in eu:
        assert record["metrics"]["tow_retrain"] == 100.0 and record["metrics"]["tow_retrain_sfclean"] == 100.0
        assert record["tow"]["accuracies"] == record["references"]["retrain"]["accuracies"]
        assert record["metrics"]["tow_clean"] < 100.0  # the clean oracle is another model

    # The report: ToW columns in cells.csv, two summary sections, the original row per deletion set.
    paths = build_report(tmp_path / "out")
    with paths["cells.csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert TOW_METRICS <= set(rows[0])
    assert {float(r["tow_retrain"]) for r in rows if r["method"] == "eu"} == {100.0}
    summary = paths["summary.md"].read_text()
    for title, metric in (("ToW against the retrained model", "tow_retrain"),
                          ("ToW against the clean oracle", "tow_clean")):
        section = next(s for s in summary.split("\n## ") if title in s)
        assert section.startswith("Paper rule") and f"(`{metric}`, %)" in section
        table = {line.split(" | ")[0].strip("| "): line.strip("|").split(" | ")[1:]
                 for line in section.splitlines() if line.startswith("| ") and "---" not in line}
        expected = [f"{r['metrics']['original_' + metric]:.2f}" for r in sorted(eu, key=lambda r: r["rate"])]
        assert [cell.strip(" |") for cell in table["original"]] == expected
        if metric == "tow_retrain":
            assert [cell.strip(" |") for cell in table["eu"]] == ["100.00", "100.00"]
    assert not [p for p in paths if "tow" in p]  # no ToW figures


def test_tow_null_trains_no_reference_and_writes_no_tow(tmp_path, monkeypatch, isolated_cache):
    def refuse(*args, **kwargs):
        raise AssertionError("a reference was trained with tow: null")

    monkeypatch.setattr(references_module, "train_retrained", refuse)
    monkeypatch.setattr(references_module, "train_clean_oracle", refuse)
    monkeypatch.setattr("corrective_unlearning.runner.cells.train_clean_oracle", refuse)
    config = _config(tmp_path, tow=None)
    assert config.tow is None and config.tow_options() is None
    records = run_grid(config, tmp_path / "out", progress=False)
    assert records and all(r["status"] == "ok" for r in records)
    for record in records:
        assert not {k for k in record["metrics"] if "tow" in k}
        assert "references" not in record and "tow" not in record and "tow_eval_seconds" not in record["timings"]
    assert not (tmp_path / "out" / "references").exists() and not (isolated_cache / "references").exists()
    summary = build_report(tmp_path / "out")["summary.md"].read_text()
    assert "ToW" not in summary
    assert load_records(tmp_path / "out")


def test_tow_config_is_validated(tmp_path):
    assert _config(tmp_path, tow={}).tow_options().references == ["retrain", "clean"]
    assert _config(tmp_path, tow={}).tow_options().retain_samples == 5000
    assert _config(tmp_path, tow={"references": ["clean"], "retain_samples": None}).tow_options().retain_samples is None
    for bad, message in (({"references": ["nope"]}, "tow.references"), ({"references": []}, "tow.references"),
                         ({"references": ["clean", "clean"]}, "tow.references"),
                         ({"retain_samples": 0}, "tow.retain_samples"), ({"retain": 5}, "unknown key"),
                         (True, "tow")):
        with pytest.raises(ConfigError, match=message):
            _config(tmp_path, tow=bad)


def test_one_reference_only(tmp_path, monkeypatch):
    counts = _counting(monkeypatch)
    config = _config(tmp_path, tow={"references": ["clean"], "retain_samples": 50},
                     methods={"cf": {"grid": {"last_k": ["all"]}, "params": {"steps": 5}}}, rates=[1.0])
    records = [r for r in run_grid(config, tmp_path / "out", progress=False) if r["method"] == "cf"]
    assert counts == {"retrain": [], "clean_trainings": 1}
    metrics = records[0]["metrics"]
    assert {"tow_clean", "tow_clean_sfclean", "original_tow_clean"} <= set(metrics)
    assert not {k for k in metrics if "retrain" in k} and "retrain" not in records[0]["references"]
