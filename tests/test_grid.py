"""The grid runner: cells, deletion sets, resumption after a kill, failing cells."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from corrective_unlearning.config import ConfigError
from corrective_unlearning.experiment import build_setting
from corrective_unlearning.runner import deletion_set, expand_cells, load_grid_config, load_records, run_grid
from grid_helpers import small_grid, write_grid

GRID = small_grid({"cf": {"grid": {"last_k": ["all"]}, "params": {"steps": 5}},
                   "ssd": {"grid": {"alpha": [1, 10], "lambda_ratio": [1]}}}, rates=[0.5, 1.0])

ALL_LAYERS = {"last_k": ["all"]}  # one setting each: the last-k variants are tested in test_last_k.py


def _config(tmp_path, **changes) -> Path:
    return write_grid(tmp_path, GRID, **changes)


def test_cells_are_unique_and_ordered(tmp_path):
    cells = expand_cells(load_grid_config(str(_config(tmp_path)), []))
    assert len(cells) == 1 + 2 * (1 + 2)
    assert len({c.id for c in cells}) == len(cells)
    assert cells[0].method == "original" and cells[0].rate == 0.0


def test_deletion_sets_are_seeded_nested_subsets(synthetic, runtime, poisoned_setting):
    setting = poisoned_setting
    sets = {rate: deletion_set(setting, rate) for rate in (0.1, 0.5, 1.0)}
    manipulated = set(setting.manipulated.manipulated.tolist())
    assert [len(s) for s in sets.values()] == [4, 20, 40]
    assert set(sets[0.1].tolist()) <= set(sets[0.5].tolist()) <= manipulated == set(sets[1.0].tolist())
    other = build_setting(synthetic, "poison", 40, 1, runtime, val_size=16)
    assert not torch.equal(deletion_set(other, 0.5), sets[0.5])


def test_bad_config_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        load_grid_config(str(_config(tmp_path, methods={"ssd": {"grid": {"alhpa": [1]}}})), [])
    with pytest.raises(KeyError, match="unknown method"):
        load_grid_config(str(_config(tmp_path, methods={"nope": {}})), [])
    with pytest.raises(ValueError, match="rates"):
        load_grid_config(str(_config(tmp_path)), ["rates=[1.5]"])


def test_rerun_skips_finished_cells(tmp_path):
    config = load_grid_config(str(_config(tmp_path)), [])
    first = run_grid(config, tmp_path / "out", progress=False)
    assert len(first) == 7 and all(r["status"] == "ok" for r in first)
    ssd_notes = [r["method_notes"] for r in first if r["method"] == "ssd"]
    assert len(ssd_notes) == 4 and all(n["dampened_weights"] >= 0 and n["importance_ratio"] > 0 for n in ssd_notes)
    assert all(r["method_notes"] == {} for r in first if r["method"] == "cf")  # not the last SSD cell's notes
    assert run_grid(config, tmp_path / "out", progress=False) == []
    assert len(load_records(tmp_path / "out")) == 7


def test_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path):
    # A learning rate of 1e12 passes every check at load time and diverges at run time.
    config = load_grid_config(str(_config(tmp_path, methods={"cf": {"grid": {"lr": [1e12, 0.01]},
                                                                       "params": {"steps": 3}}})), [])
    records = run_grid(config, tmp_path / "out", progress=False)
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 2 and "diverged" in failed[0]["error"]
    assert sum(r["status"] == "ok" for r in records) == 3
    # A re-run retries only the failed cells.
    assert len(run_grid(config, tmp_path / "out", progress=False)) == 2


def test_killed_run_resumes_with_exactly_one_record_per_cell(tmp_path):
    config_path = _config(tmp_path, rates=[0.25, 0.5, 0.75, 1.0],
                          methods={"eu": {"grid": ALL_LAYERS, "params": {"steps": 40}}, "cf": {"grid": ALL_LAYERS, "params": {"steps": 20}}})
    out = tmp_path / "out"
    command = [sys.executable, "-m", "corrective_unlearning", "run", str(config_path), "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "records").glob("*.json"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list((out / "records").glob("*.json")))
    total = len(expand_cells(load_grid_config(str(config_path), [])))
    assert 3 <= done_before < total, "the kill should land midway"

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{done_before} already done, {total - done_before} to run" in result.stdout
    files = sorted((out / "records").glob("*.json"))
    cells = {c.id for c in expand_cells(load_grid_config(str(config_path), []))}
    assert {f.stem for f in files} == cells
    assert all(json.loads(f.read_text())["status"] == "ok" for f in files)
    assert not list((out / "records").glob(".*.tmp"))


def test_two_variants_of_one_manipulation_are_separate_cells(tmp_path):
    variants = [{"name": "poison", "sizes": [40], "params": {"target": 0}},
                {"name": "poison", "sizes": [40], "params": {"target": 1}}]
    config = load_grid_config(str(_config(tmp_path, manipulations=variants, rates=[1.0],
                                          methods={"cf": {"grid": ALL_LAYERS, "params": {"steps": 2}}})), [])
    cells = expand_cells(config)
    assert len(cells) == len({c.id for c in cells}) == 4
    records = run_grid(config, tmp_path / "out", progress=False)
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    originals = [r for r in records if r["method"] == "original"]
    assert sorted(r["manipulation_variant"] for r in originals) == ['poison {"target":0}', 'poison {"target":1}']
    assert [r["setting"]["manipulation_params"]["target"] for r in originals] == [0, 1]
    assert originals[0]["original_cache_key"] != originals[1]["original_cache_key"]


def test_records_carry_grid_order_and_shared_work(tmp_path):
    records = run_grid(load_grid_config(str(_config(tmp_path)), []), tmp_path / "out", progress=False)
    ssd = [r for r in records if r["method"] == "ssd"]
    assert [r["setting_index"] for r in ssd] == [0, 1, 0, 1]
    for first, second in (ssd[:2], ssd[2:]):
        (key,) = first["timings"]["shared_paid"]
        assert 0 < first["timings"]["shared_seconds"] <= first["timings"]["method_seconds"]
        assert second["timings"]["shared_seconds"] == 0 and second["timings"]["shared_reused"] == [key]


def test_resume_refuses_a_changed_setting_and_accepts_more_methods(tmp_path):
    out = tmp_path / "out"
    run_grid(load_grid_config(str(_config(tmp_path, methods={"cf": {"grid": ALL_LAYERS, "params": {"steps": 2}}})), []), out,
             progress=False)
    for override, key in (("recipe.steps=16", "recipe.steps"), ("dataset.val_size=20", "dataset.val_size"),
                          ("model=resnet9", "model"),
                          ("manipulations=[{name: poison, sizes: [40], params: {target: 2}}]", "manipulations.poison")):
        with pytest.raises(ConfigError, match=f"{key} .*changed"):
            run_grid(load_grid_config(str(_config(tmp_path)), [override]), out, progress=False)
    more = run_grid(load_grid_config(str(_config(tmp_path)), ["rates=[0.5, 1.0, 0.25]"]), out, progress=False)
    assert {r["method"] for r in more} == {"cf", "ssd"} and not any(r["method"] == "original" for r in more)
    # Another manipulation may join (one device call per manipulation); the one already there may not change.
    other = run_grid(load_grid_config(str(_config(tmp_path)), ["manipulations=[{name: random_labels, sizes: [40]}]"]),
                     out, progress=False)
    assert {r["manipulation"] for r in other} == {"random_labels"}


def test_an_empty_deletion_set_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"rate 0.01 of poison n = 20 gives an empty deletion set"):
        load_grid_config(str(_config(tmp_path, rates=[0.01, 0.5],
                                     manipulations=[{"name": "poison", "sizes": [20]}])), [])
    command = [sys.executable, "-m", "corrective_unlearning", "run", str(_config(tmp_path)), "rates=[0.01]",
               "manipulations=[{name: poison, sizes: [20]}]", "--out", str(tmp_path / "out")]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "empty deletion set" in result.stderr and "Traceback" not in result.stderr
    assert time.time() - started < 60 and not (tmp_path / "out" / "records").exists()


def test_a_failing_original_fails_its_own_cells_and_the_grid_goes_on(tmp_path, monkeypatch):
    from corrective_unlearning.runner import cells as grid
    from corrective_unlearning.training import DivergenceError

    real = grid.train_original

    def diverge_on_target_1(setting, *args, **kwargs):
        if setting.manipulated.params.get("target") == 1:
            raise DivergenceError("training diverged: loss is nan at step 3")
        return real(setting, *args, **kwargs)

    monkeypatch.setattr(grid, "train_original", diverge_on_target_1)
    variants = [{"name": "poison", "sizes": [40], "params": {"target": 1}},
                {"name": "poison", "sizes": [40], "params": {"target": 0}}]
    records = run_grid(load_grid_config(str(_config(tmp_path, manipulations=variants)), []), tmp_path / "out",
                       progress=False)
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 7 and all(r["manipulation_variant"] == 'poison {"target":1}' for r in failed)
    assert all("original model: DivergenceError" in r["error"] for r in failed)
    assert sum(r["status"] == "ok" for r in records) == 7


@pytest.mark.parametrize("methods, where", [({"cf": 5}, "methods.cf: expected a mapping"),
                                            ({"cf": {"params": 5}}, "methods.cf.params: expected a mapping"),
                                            ({"cf": {"grid": [1]}}, "methods.cf.grid: expected a mapping")])
def test_malformed_method_entries_are_named(tmp_path, methods, where):
    with pytest.raises(ConfigError, match=where):
        load_grid_config(str(_config(tmp_path, methods=methods)), [])
