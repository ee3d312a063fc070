"""Aggregation over seeds: mean, sample std and the 95% t-interval, by hand over three fake seeds; one seed leaves
the interval undefined; the report's tables, seeds.csv and figure titles carry them and say how many seeds."""
from __future__ import annotations

import csv
import json
import math

import pytest

from corrective_unlearning.report.build import build_report, seed_curve
from corrective_unlearning.report.seeds import format_entry, seed_stats, seeds_note, seeds_phrase, t975

# affected_acc of cf at rate 0.5 over seeds 0, 1, 2: mean 13, sample variance (9 + 1 + 16) / 2 = 13,
# half width t_{0.975, 2} * sqrt(13) / sqrt(3) = 4.303 * 2.081666 = 8.957409
AFFECTED = [10.0, 12.0, 17.0]
MEAN, STD, HALF = 13.0, math.sqrt(13.0), 4.303 * math.sqrt(13.0 / 3.0)


def test_three_seeds_by_hand():
    s = seed_stats(AFFECTED)
    assert (s.n, s.mean) == (3, MEAN)
    assert s.std == pytest.approx(3.605551, abs=1e-6)
    assert (s.lo, s.hi) == (pytest.approx(MEAN - 8.957409, abs=1e-5), pytest.approx(MEAN + 8.957409, abs=1e-5))
    assert format_entry(AFFECTED) == "13.00 ± 3.61 [4.04, 21.96]"
    assert format_entry(AFFECTED[:2], seeds=3) == "11.00 ± 1.41 [-1.71, 23.71] (n=2)"  # 12.706 * 2 / 2


def test_one_seed_has_no_interval_not_a_zero_one():
    s = seed_stats([5.0])
    assert s.n == 1 and s.mean == 5.0 and all(math.isnan(v) for v in (s.std, s.lo, s.hi))
    assert format_entry([5.0]) == "5.00" and format_entry([]) == "n/a" and format_entry(None) == ""
    assert "confidence interval undefined" in seeds_note([[5.0], [6.0]])
    assert seeds_note([AFFECTED, AFFECTED[:1]]).startswith("_Seeds: 1-3 seeds ((n=k) marks an entry with fewer")
    assert seeds_phrase([AFFECTED, [1.0]]) == "line: mean over 1-3 seeds; band: 95% CI of the mean (t)"
    assert seeds_phrase([[1.0]]) == "line: 1 seed, no interval"
    curve = seed_curve([0.5], [[5.0]])
    assert math.isnan(curve.lo[0]) and math.isnan(curve.hi[0]) and list(curve.seeds) == [1]


def test_t_quantiles():
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(30) == 2.042
    assert t975(35) == 2.042  # between tabulated df: the lower one (a slightly wider interval)
    assert t975(1000) == 1.96
    with pytest.raises(ValueError):
        t975(0)


def _record(seed: int, rate: float, method: str, affected: float) -> dict:
    metrics = {"test_acc": 90.0, "utility_acc": 85.0 + seed, "affected_acc": affected, "manipulated_acc": 50.0,
               "val_acc": 88.0, "deletion_change": 40.0, "forget_acc": 60.0, "undiscovered_acc": 20.0}
    cell = f"poison-n100-seed{seed}-rate{rate:.2f}-{method}"
    return {"cell": cell, "status": "ok", "dataset": "fashion-mnist", "model": "small_cnn", "manipulation": "poison",
            "manipulation_variant": "poison", "n": 100, "seed": seed, "rate": rate, "method": method,
            "hparams": {}, "setting_index": 0, "setting": {}, "index_hashes": {}, "environment": {},
            "metrics": metrics, "timings": {"method_seconds": 1.0, "eval_seconds": 0.1}}


def test_report_tables_csv_and_figures_over_three_seeds(tmp_path):
    results = tmp_path / "results"
    (results / "records").mkdir(parents=True)
    records = [_record(seed, 0.0, "original", 5.0) for seed in range(3)]
    records += [_record(seed, 0.5, "cf", AFFECTED[seed]) for seed in range(3)]
    records += [_record(seed, 1.0, "cf", 30.0) for seed in range(1)]  # rate 1.0 holds one seed only
    for record in records:
        (results / "records" / f"{record['cell']}.json").write_text(json.dumps(record))
    (results / "config.yaml").write_text("methods:\n  cf: {}\n")
    paths = build_report(results)
    summary = paths["summary.md"].read_text()
    part = next(s for s in summary.split("\n## ") if s.startswith("Paper rule: clean-label accuracy on the affected"))
    assert "| cf | 13.00 ± 3.61 [4.04, 21.96] | 30.00 (n=1) |" in part
    assert "| original | 5.00 ± 0.00 [5.00, 5.00] | 5.00 ± 0.00 [5.00, 5.00] |" in part
    assert "_Seeds: 1-3 seeds ((n=k) marks an entry with fewer than 3) per entry: mean ± sample standard deviation " \
           "[95% confidence interval of the mean, Student's t, n-1 df]; an entry from one seed shows its value, its " \
           "interval undefined._" in part
    with paths["seeds.csv"].open(newline="") as f:
        rows = list(csv.DictReader(f))
    cf = next(r for r in rows if r["method"] == "cf" and r["rule"] == "selected" and r["metric"] == "affected_acc"
              and r["rate"] == "0.5")
    assert cf["seeds"] == "3" and float(cf["mean"]) == MEAN and float(cf["std"]) == pytest.approx(STD)
    assert float(cf["ci95_low"]) == pytest.approx(MEAN - HALF) and float(cf["ci95_high"]) == pytest.approx(MEAN + HALF)
    single = next(r for r in rows if r["method"] == "cf" and r["rule"] == "selected" and r["metric"] == "affected_acc"
                  and r["rate"] == "1.0")
    assert single["seeds"] == "1" and single["std"] == single["ci95_low"] == single["ci95_high"] == ""
    assert any(name.startswith("figures/") for name in paths)
