"""records.upgrade: a record of any earlier version, as read from disk, comes out as the current version with the
values a reader expects; a current record comes out unchanged. The old records are written by hand below."""
from __future__ import annotations

import copy
import json

import yaml

from corrective_unlearning.records import RECORD_VERSION, upgrade
from corrective_unlearning.report.loading import grid_order, load_run

# A version-1 record as early grids wrote it: no version, no manipulation_variant, setting_index, forget_set or
# expand, and timings that say what shared work the cell paid but not its total.
OLD = {"cell": "poison-n40-seed0-rate0.50-ssd-457bf48e", "status": "ok", "dataset": "synthetic", "model": "small_cnn",
       "manipulation": "poison", "n": 40, "seed": 0, "rate": 0.5, "method": "ssd",
       "hparams": {"alpha": 10, "lambda_ratio": 0.1}, "metrics": {"val_acc": 80.0, "deletion_change": None},
       "timings": {"method_seconds": 3.0, "eval_seconds": 0.5, "shared_paid": {"importances": 1.25, "other": 0.5}}}


def test_an_old_record_comes_out_as_the_current_version():
    before = copy.deepcopy(OLD)
    record = upgrade(OLD)
    assert OLD == before  # the input is left as it was
    assert record["record_version"] == RECORD_VERSION == 2
    assert record["manipulation_variant"] == "poison"  # the manipulation had no params then
    assert record["forget_set"] == ""  # rate-based: forget sets did not exist
    assert record["expand"] == 0  # S_f as identified
    assert record["setting_index"] is None  # no grid order given: unknown
    assert record["timings"]["shared_seconds"] == 1.75  # 1.25 + 0.5, what it paid
    assert record["timings"]["method_seconds"] == 3.0 and record["metrics"] == OLD["metrics"]


def test_grid_order_restores_the_setting_index():
    def order(method: str, hparams: dict) -> int | None:
        return {"ssd": {10: 0, 20: 1}}.get(method, {}).get(hparams.get("alpha"))

    assert upgrade(OLD, order)["setting_index"] == 0
    assert upgrade({**OLD, "hparams": {"alpha": 20}}, order)["setting_index"] == 1
    assert upgrade({**OLD, "hparams": {"alpha": 45}}, order)["setting_index"] is None  # not in the grid
    assert upgrade({**OLD, "setting_index": 7}, order)["setting_index"] == 7  # a recorded index is kept


def test_a_current_record_is_unchanged_and_upgrading_twice_changes_nothing():
    current = {**OLD, "record_version": RECORD_VERSION, "manipulation_variant": 'poison {"target":3}',
               "forget_set": "", "expand": 8, "setting_index": 2,
               "timings": {**OLD["timings"], "shared_seconds": 0.0}}
    assert upgrade(current) == current
    assert upgrade(upgrade(OLD)) == upgrade(OLD)


def test_unpaid_shared_work_stays_unknown_and_a_failed_record_upgrades_too():
    no_shared = upgrade({**OLD, "timings": {"method_seconds": 3.0, "eval_seconds": 0.5}})
    assert "shared_seconds" not in no_shared["timings"]  # nothing measured: unknown, not 0
    failed = upgrade({"cell": "c", "status": "failed", "manipulation": "interclass", "n": 40, "seed": 1,
                      "rate": 0.0, "method": "original", "hparams": {}, "error": "worker died"})
    assert failed["manipulation_variant"] == "interclass" and failed["record_version"] == RECORD_VERSION


def test_the_report_loads_old_records_upgraded_with_the_run_configs_grid_order(tmp_path):
    (tmp_path / "records").mkdir()
    for alpha in (20, 10):
        record = {**OLD, "cell": f"old-ssd-{alpha}", "hparams": {"alpha": alpha, "lambda_ratio": 0.1}}
        (tmp_path / "records" / f"{record['cell']}.json").write_text(json.dumps(record))
    # a plain mapping, not a grid config: every record counts
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"methods": {"ssd": {"grid": {"alpha": [10, 20], "lambda_ratio": [0.1]}}}}))
    records = {r["cell"]: r for r in load_run(tmp_path)}
    assert records["old-ssd-10"]["setting_index"] == 0 and records["old-ssd-20"]["setting_index"] == 1
    assert all(r["record_version"] == RECORD_VERSION and r["forget_set"] == "" for r in records.values())
    assert grid_order(tmp_path / "absent")("ssd", {"alpha": 10}) is None  # no config: no order
