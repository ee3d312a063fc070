"""The report (tidy table, summary.md, figures) built from synthetic grid records with hand-computable values."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import sys
from collections import defaultdict
from typing import NamedTuple

import pytest

from corrective_unlearning.report.build import (
    FIXED_COLUMNS,
    build_report,
    print_summary,
)
from corrective_unlearning.report.tables import markdown_table

SIZES, SEEDS, RATES, ALPHAS = [100, 500], [0, 1], [0.2, 0.5, 1.0], [1, 2]
METHODS = ["ssd", "cf"]  # config.yaml order, deliberately not alphabetical
CLASSES = ["zebra", "ant"]  # class order, deliberately not alphabetical
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(method: str, alpha: int, rate: float, seed: int, n: int) -> dict:
    # Selection score: alpha 1 -> (30 rate + 80) / 2, alpha 2 -> (60 rate + 70) / 2, so alpha 1 wins at rate 0.2
    # and alpha 2 at 0.5 and 1.0. The oracle (best affected_acc) always picks alpha 1.
    offset = 10.0 if method == "ssd" else 0.0
    metrics = {
        "test_acc": 90.0 - alpha, "utility_acc": 88.0 - alpha - offset,
        "affected_acc": 40 + 30 * rate - 5 * alpha + 3 * seed + n / 100 + offset,
        "affected_nontarget_acc": 55.0, "attack_success": 40.0 - 30 * rate,
        "manipulated_acc": 50 + 30 * rate + seed, "val_acc": 90.0 - 10 * alpha,
        "deletion_change": 30 * rate * alpha, "forget_acc": 70.0, "undiscovered_acc": 20.0,
        **{f"class_acc/{c}": 80.0 + i for i, c in enumerate(CLASSES)},
    }
    if method == "ssd" and alpha == 1 and n == 500 and rate == 0.2:
        metrics["manipulated_acc"] = None  # NaN in every seed of a selected cell
    if method == "cf" and alpha == 1 and n == 500 and rate == 1.0 and seed == 0:
        metrics["deletion_change"] = None  # an unscorable candidate ranks last
    return metrics


class Cell(NamedTuple):
    """A grid cell as the report sees it through its record (the grid's own Cell is not needed here)."""
    manipulation: str
    n: int
    seed: int
    rate: float
    method: str
    hparams: dict

    @property
    def id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.hparams, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.manipulation}-n{self.n}-seed{self.seed}-rate{self.rate:.2f}-{self.method}-{digest}"


def _record(cell: Cell, **fields) -> dict:
    return {"cell": cell.id, "status": "ok", "dataset": "fashion-mnist", "model": "small_cnn",
            "manipulation": cell.manipulation, "manipulation_variant": cell.manipulation, "n": cell.n,
            "seed": cell.seed, "rate": cell.rate, "method": cell.method, "hparams": cell.hparams,
            "setting_index": ALPHAS.index(cell.hparams["alpha"]) if "alpha" in cell.hparams else 0, "setting": {},
            "index_hashes": {}, "environment": {}, **fields}


def _records() -> list[dict]:
    records = []
    for n in SIZES:
        for seed in SEEDS:
            original = _metrics("cf", 0, 0.0, seed, n)
            for key in ("forget_acc", "undiscovered_acc", "deletion_change"):
                del original[key]
            original["affected_acc"] = 10.0 + seed
            records.append(_record(Cell("poison", n, seed, 0.0, "original", {}), metrics=original,
                                   timings={"method_seconds": 30.0 + seed, "eval_seconds": 1.0}))
            for rate in RATES:
                for method in METHODS:
                    for alpha in ALPHAS:
                        records.append(_record(
                            Cell("poison", n, seed, rate, method, {"alpha": alpha}),
                            forget_size=round(rate * n), metrics=_metrics(method, alpha, rate, seed, n),
                            timings={"method_seconds": 2.0 if method == "cf" else 0.5, "eval_seconds": 0.1}))
    failed = Cell("poison", 100, 0, 0.5, "scrub", {})
    records.append({**_record(failed), "status": "failed", "error": "RuntimeError: boom\nmore detail"})
    return records


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    (results / "records").mkdir()
    for record in _records():
        (results / "records" / f"{record['cell']}.json").write_text(json.dumps(record))
    (results / "config.yaml").write_text("methods:\n  ssd: null\n  cf: {}\n")
    return results, build_report(results)


def _csv(paths) -> tuple[list[str], list[dict]]:
    with paths["cells.csv"].open(newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _table(summary: str, section: str, heading: str) -> dict[str, list[str]]:
    """method -> cells of the Markdown table under ``### heading`` in the ``## section...`` section, each as
    ``mean ± std`` (the 95% interval after it is checked in test_seeds.py)."""
    part = next(s for s in summary.split("\n## ") if s.startswith(section))
    block = part.split(f"### {heading}\n")[1].strip().split("\n\n")[0]
    rows = [[c.strip().split(" [")[0] for c in line.strip("|").split("|")] for line in block.splitlines()]
    return {row[0]: row[1:] for row in rows[2:]}


def test_csv_has_one_row_per_record_and_every_metric(report):
    _, paths = report
    columns, rows = _csv(paths)
    assert len(rows) == len(SIZES) * len(SEEDS) * (1 + len(RATES) * len(METHODS) * len(ALPHAS)) + 1
    assert columns[:len(FIXED_COLUMNS)] == FIXED_COLUMNS
    assert len(columns) == len(FIXED_COLUMNS) + 12
    assert columns[-2:] == [f"class_acc/{c}" for c in CLASSES]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"].startswith("RuntimeError: boom")
    assert failed[0]["selected"] == "" and failed[0]["affected_acc"] == ""


def test_selected_flags_follow_the_non_peeking_rule(report):
    _, paths = report
    _, rows = _csv(paths)
    groups = defaultdict(list)
    for row in rows:
        if row["status"] == "ok" and row["method"] != "original":
            groups[(row["n"], row["seed"], row["rate"], row["method"])].append(row)
    assert len(groups) == len(SIZES) * len(SEEDS) * len(RATES) * len(METHODS)

    def score(row):
        if not row["deletion_change"]:
            return -math.inf
        return (float(row["deletion_change"]) + float(row["val_acc"])) / 2

    for (n, seed, rate, method), members in groups.items():
        selected = [r for r in members if r["selected"] == "True"]
        assert len(selected) == 1
        assert score(selected[0]) == max(score(r) for r in members)
        assert json.loads(selected[0]["hparams"]) == {"alpha": 1 if float(rate) < 1 / 3 else 2}
        assert [json.loads(r["hparams"]) for r in members if r["oracle"] == "True"] == [{"alpha": 1}]
    assert all(r["selected"] == "True" for r in rows if r["method"] == "original")


def test_summary_tables_hold_seed_means_of_the_chosen_cells(report):
    _, paths = report
    summary = paths["summary.md"].read_text()
    selected = _table(summary, "Paper rule: clean-label accuracy on the affected", "poison, n = 100")
    assert list(selected) == ["original", "ssd", "cf"]
    # cf, n=100, rate 0.5 selects alpha 2: 40 + 15 - 10 + 1 + 3 seed -> 46, 49.
    assert selected["cf"][1] == "47.50 ± 2.12"
    assert selected["original"] == ["10.50 ± 0.71"] * len(RATES)
    oracle = _table(summary, "Oracle (peeks at test data: an upper bound", "poison, n = 100")
    assert oracle["cf"][1] == "52.50 ± 2.12"  # alpha 1: 51, 54
    manipulated = _table(summary, "Paper rule: clean-label accuracy on the manipulated", "poison, n = 500")
    assert manipulated["ssd"][0] == "n/a"
    assert "| original (training) | 4 | 30.50 |" in summary
    assert "| cf | 24 | 2.00 |" in summary
    assert re.search(r"`poison-n100-seed0-rate0\.50-scrub-\w+`: RuntimeError: boom$", summary, re.M)


def test_figures_are_written_as_png(report):
    _, paths = report
    for view in ("affected", "manipulated", "utility", "affected-oracle"):
        png = paths[f"figures/poison-{view}.png"]
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert png.stat().st_size > 5_000


def test_parquet_round_trips_the_rows(report):
    pq = pytest.importorskip("pyarrow.parquet")
    _, paths = report
    columns, rows = _csv(paths)
    table = pq.read_table(paths["cells.parquet"])
    assert table.num_rows == len(rows) and table.column_names == columns


def test_without_pyarrow_parquet_is_skipped_with_a_note(report, tmp_path, monkeypatch, capsys):
    results, _ = report
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` raise ImportError
    paths = build_report(results, tmp_path / "report")
    assert "cells.parquet" not in paths and not (tmp_path / "report" / "cells.parquet").exists()
    assert "pyarrow is not installed" in capsys.readouterr().err


def test_print_summary_shows_files_and_headline_table(report):
    _, paths = report
    out = io.StringIO()
    text = print_summary(paths, file=out)
    assert out.getvalue().strip() == text.strip()
    assert str(paths["summary.md"]) in text and "47.50 ± 2.12" in text and "Oracle" not in text


def test_empty_results_dir_is_a_clear_error(tmp_path):
    (tmp_path / "records").mkdir()
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        build_report(tmp_path)


# -- the guarded rule, on the main fixture -----------------------------------------------------------------------
# The original's val_acc is 90 (alpha 0); alpha 1 has 80, alpha 2 has 70. With the default drop of 2 points no
# setting is within, so every group falls back to the highest validation accuracy: alpha 1.

def test_guarded_tables_sit_beside_the_paper_rule(report):
    _, paths = report
    summary = paths["summary.md"].read_text()
    guarded = _table(summary, "Guarded rule", "poison, n = 100")
    # cf, n=100, alpha 1: 40 + 30 rate - 5 + 1 + 3 seed -> rate 0.2: 42, 45; 0.5: 51, 54; 1.0: 66, 69.
    assert guarded["cf"] == ["43.50 ± 2.12", "52.50 ± 2.12", "67.50 ± 2.12"]
    assert guarded["original"] == ["10.50 ± 0.71"] * len(RATES)
    utility = _table(summary, "Guarded rule (validation accuracy at most 2 points below the original's): utility",
                     "poison, n = 100")
    assert utility["cf"] == ["87.00 ± 0.00"] * len(RATES)  # 88 - alpha 1
    guarded_part = next(s for s in summary.split("\n## ") if s.startswith("Guarded rule"))
    assert "in 24 of 24 groups (ssd 12, cf 12)" in guarded_part
    assert "highest validation accuracy" in guarded_part
    paper = _table(summary, "Paper rule: clean-label accuracy on the affected", "poison, n = 100")
    assert paper["cf"] == ["43.50 ± 2.12", "47.50 ± 2.12", "62.50 ± 2.12"]  # alpha 1, 2, 2
    # Order: the paper rule's three views, the guarded rule's three, the oracle.
    titles = [s.split(" (`")[0].split(":")[0] for s in summary.split("\n## ")[1:8]]
    assert [t.split(" (")[0] for t in titles] == ["Paper rule"] * 3 + ["Guarded rule"] * 3 + ["Oracle"]


def test_csv_has_the_guarded_flag_and_the_new_columns(report):
    _, paths = report
    columns, rows = _csv(paths)
    for column in ("manipulation_variant", "setting_index", "guarded", "guard", "shared_seconds"):
        assert column in FIXED_COLUMNS and column in columns, column
    ok = [r for r in rows if r["status"] == "ok" and r["method"] != "original"]
    assert {json.loads(r["hparams"])["alpha"] for r in ok if r["guarded"] == "True"} == {1}
    assert len([r for r in ok if r["guarded"] == "True"]) == 24
    assert {r["guard"] for r in ok} == {"fallback"}
    assert all(r["guarded"] == "True" for r in rows if r["method"] == "original")
    assert {r["manipulation_variant"] for r in rows} == {"poison"}


def test_guarded_figures_are_written(report):
    _, paths = report
    for view in ("affected-guarded", "manipulated-guarded", "utility-guarded"):
        assert paths[f"figures/poison-{view}.png"].read_bytes()[:8] == PNG_MAGIC


def test_cli_report_takes_max_val_drop(report, tmp_path, capsys):
    from corrective_unlearning.cli import main

    results, _ = report
    # 25 points: alpha 1 (80) and alpha 2 (70) are both within 90 - 25 = 65, so the guarded rule agrees with the
    # paper rule (alpha 1 at rate 0.2, alpha 2 at 0.5 and 1.0).
    assert main(["report", str(results), "--out", str(tmp_path / "r"), "--max-val-drop", "25"]) == 0
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert _table(summary, "Guarded rule", "poison, n = 100")["cf"] == ["43.50 ± 2.12", "47.50 ± 2.12",
                                                                       "62.50 ± 2.12"]
    assert "at most 25 points below" in summary and "of 24 groups" not in summary
    capsys.readouterr()
    assert main(["report", str(results), "--out", str(tmp_path / "r"), "--max-val-drop", "-1"]) == 2
    assert "max_val_drop" in capsys.readouterr().err


# -- manipulation variants, shared work, method notes, grid-order ties: a small hand-made grid ---------------------

VARIANT = 'poison {"target":3}'


def _small(cell, variant, rate, method, index, metrics, timings, notes=None) -> dict:
    record = {"cell": cell, "status": "ok", "dataset": "d", "model": "m", "manipulation": "poison",
              "manipulation_variant": variant, "n": 10, "seed": 0, "rate": rate, "method": method,
              "hparams": {} if method == "original" else {"alpha": index + 1}, "setting_index": index,
              "metrics": metrics, "timings": {"eval_seconds": 0.1, **timings}}
    if notes is not None:
        record["method_notes"] = notes
    return record


def _m(dc, val, affected, utility) -> dict:
    return {"deletion_change": dc, "val_acc": val, "affected_acc": affected, "utility_acc": utility,
            "manipulated_acc": affected}


def _paid(method_seconds, key, seconds):
    return {"method_seconds": method_seconds, "shared_seconds": seconds, "shared_paid": {key: seconds},
            "shared_reused": []}


def _reused(method_seconds, *keys):
    return {"method_seconds": method_seconds, "shared_seconds": 0.0, "shared_paid": {}, "shared_reused": list(keys)}


def _small_records() -> list[dict]:
    imp = "ssd-importances"
    return [
        _small("p-orig", "poison", 0.0, "original", 0, _m(None, 90, 10, 80), {"method_seconds": 20.0}),
        _small("t-orig", VARIANT, 0.0, "original", 0, _m(None, 40, 5, 70), {"method_seconds": 22.0}),
        # poison, rate 0.5: paper picks 0 ((100 + 30) / 2 = 65 > (40 + 89) / 2 = 64.5); guarded (>= 88) picks 1.
        _small("p-ssd-05-0", "poison", 0.5, "ssd", 0, _m(100, 30, 11, 25), _paid(5.0, imp, 4.0),
               {"dampened_weights": 0, "importance_ratio": 2.5}),
        _small("p-ssd-05-1", "poison", 0.5, "ssd", 1, _m(40, 89, 22, 79), _reused(1.0, imp, imp),
               {"dampened_weights": 120, "importance_ratio": 2.5}),
        _small("p-ssd-10-0", "poison", 1.0, "ssd", 0, _m(100, 30, 13, 26), _paid(3.0, imp, 2.0),
               {"dampened_weights": 0, "importance_ratio": 0.0}),
        _small("p-ssd-10-1", "poison", 1.0, "ssd", 1, _m(40, 89, 24, 78), _reused(1.5, imp),
               {"dampened_weights": 7, "importance_ratio": 4}),
        # target 3, rate 0.5: original val 40, both within 38; paper and guarded pick 0 (69.5 > 38.5).
        _small("t-ssd-05-0", VARIANT, 0.5, "ssd", 0, _m(100, 39, 33, 60), _paid(6.0, imp, 5.0),
               {"dampened_weights": 30, "importance_ratio": 1}),
        _small("t-ssd-05-1", VARIANT, 0.5, "ssd", 1, _m(39, 38, 44, 65), _reused(2.0, imp),
               {"dampened_weights": 0, "importance_ratio": 1}),
        # scrub reuses work whose paying cell has no record; val 85 is not within 2 of 90 -> guarded falls back.
        _small("p-scrub-05-0", "poison", 0.5, "scrub", 0, _m(50, 85, 50, 75), _reused(4.0, "scrub-teacher/x"),
               {"variant": "bench"}),
        # An exact tie: grid order (setting 0) wins although setting 1's file name sorts first.
        _small("a-cf-05-1", "poison", 0.5, "cf", 1, _m(50, 89, 60, 77), {"method_seconds": 2.0}),
        _small("z-cf-05-0", "poison", 0.5, "cf", 0, _m(50, 89, 60, 77), {"method_seconds": 2.0}),
    ]


def _write_results(root, records, config="methods:\n  ssd: null\n  scrub: null\n"):
    (root / "records").mkdir(parents=True)
    for record in records:
        (root / "records" / f"{record['cell']}.json").write_text(json.dumps(record))
    (root / "config.yaml").write_text(config)
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    results = _write_results(tmp_path_factory.mktemp("small"), _small_records())
    return build_report(results)


def test_manipulation_variants_are_separate_groups_tables_and_figures(small):
    summary = small["summary.md"].read_text()
    plain = _table(summary, "Paper rule: clean-label accuracy on the affected", "poison, n = 10")
    assert plain == {"original": ["10.00", "10.00"], "ssd": ["11.00", "13.00"], "scrub": ["50.00", ""],
                     "cf": ["60.00", ""]}
    target = _table(summary, "Paper rule: clean-label accuracy on the affected", f"{VARIANT}, n = 10")
    assert target == {"original": ["5.00"], "ssd": ["33.00"]}
    guarded = _table(summary, "Guarded rule", "poison, n = 10")
    assert guarded["ssd"] == ["22.00", "24.00"] and guarded["scrub"] == ["50.00", ""]
    assert _table(summary, "Guarded rule", f"{VARIANT}, n = 10")["ssd"] == ["33.00"]
    guarded_part = next(s for s in summary.split("\n## ") if s.startswith("Guarded rule"))
    assert "in 1 of 5 groups (scrub 1)" in guarded_part
    for stem in ("poison", "poison-target-3"):
        for view in ("affected", "affected-guarded", "utility", "affected-oracle"):
            assert small[f"figures/{stem}-{view}.png"].read_bytes()[:8] == PNG_MAGIC


def test_ties_go_to_grid_order_not_file_order(small):
    _, rows = _csv(small)
    cf = {r["setting_index"]: r for r in rows if r["method"] == "cf"}
    assert cf["0"]["selected"] == "True" and cf["1"]["selected"] == "False"
    assert cf["0"]["guarded"] == "True" and cf["1"]["guarded"] == "False"
    variants = {(r["manipulation_variant"], r["rate"]): r for r in rows if r["method"] == "ssd" and r["selected"] == "True"}
    assert {k: v["setting_index"] for k, v in variants.items()} == {
        ("poison", "0.5"): "0", ("poison", "1.0"): "0", (VARIANT, "0.5"): "0"}


def test_time_table_reports_one_complete_run_beside_the_amortised_cost(small):
    summary = small["summary.md"].read_text()
    # ssd, complete run = own (method - shared) + the paying cell's seconds for every key it used, per deletion set:
    #   5 - 4 + 4 = 5;  1 + 4 = 5;  3 - 2 + 2 = 3;  1.5 + 2 = 3.5;  6 - 5 + 5 = 6;  2 + 5 = 7  -> mean 29.5 / 6 = 4.92
    # shared part: 4, 4, 2, 2, 5, 5 -> 22 / 6 = 3.67; amortised: (5 + 1 + 3 + 1.5 + 6 + 2) / 6 = 3.08;
    # 4.9167 s = 0.08 min.
    assert "| ssd | 6 | 4.92 | 3.67 | 3.08 | 0.08 |" in summary
    assert "| original (training) | 2 | 21.00 | 0.00 | 21.00 | 0.35 |" in summary
    # scrub reused work whose paying cell is unknown: no complete run, and the summary says why.
    assert "| scrub | 1 | n/a | n/a | 4.00 | n/a |" in summary
    assert "1 scrub cell(s) reused shared work" in summary
    _, rows = _csv(small)
    shared = {r["cell"]: r["shared_seconds"] for r in rows}
    assert shared["p-ssd-05-0"] == "4.0" and shared["p-ssd-05-1"] == "0.0" and shared["p-orig"] == ""


def test_method_notes_get_a_line_per_method(small):
    summary = small["summary.md"].read_text()
    # dampened_weights 0, 120, 0, 7, 30, 0; importance_ratio 2.5, 2.5, 0, 4, 1, 1.
    assert ("- ssd: dampened nothing in 3 of 6 cells (dampened weights per cell: min 0, max 120); "
            "`importance_ratio` is 0 in 1 of 6 cells (min 0, max 4)") in summary.splitlines()
    assert "- scrub: `variant`: bench in 1 of 1 cells" in summary.splitlines()


def test_records_without_setting_index_take_the_grid_order_from_config(tmp_path):
    # Old records: no setting_index, no manipulation_variant. Both ssd settings tie exactly; the grid lists alpha 2
    # first, the file of alpha 1 sorts first.
    def old(cell, alpha):
        record = _small(cell, None, 0.5, "ssd", 0, _m(50, 80, 30 + alpha, 70), {"method_seconds": 1.0})
        del record["setting_index"], record["manipulation_variant"]
        return {**record, "hparams": {"alpha": alpha}}

    original = _small("orig", None, 0.0, "original", 0, _m(None, 81, 10, 80), {"method_seconds": 1.0})
    del original["manipulation_variant"]
    results = _write_results(tmp_path / "res", [original, old("a", 1), old("b", 2)],
                             config="methods:\n  ssd:\n    grid:\n      alpha: [2, 1]\n")
    _, rows = _csv(build_report(results))
    assert [json.loads(r["hparams"]) for r in rows if r["selected"] == "True" and r["method"] == "ssd"] == [
        {"alpha": 2}]
    assert [r["manipulation_variant"] for r in rows] == ["poison"] * 3


# -- without validation data no selection is possible ------------------------------------------------------------

def _blind_records() -> list[dict]:
    records = []
    for seed in (0, 1):
        original = _small(f"orig-{seed}", "poison", 0.0, "original", 0, _m(None, None, 5 + seed, 80 + seed),
                          {"method_seconds": 10.0})
        records.append({**original, "seed": seed})
        for rate in (0.5, 1.0):
            for index, alpha in enumerate((1, 2)):
                record = _small(f"ssd-{seed}-{rate}-{alpha}", "poison", rate, "ssd", index,
                                _m(50, None, 10 * alpha + 50 * rate + seed, 70 - 10 * alpha + seed),
                                {"method_seconds": 1.0})
                records.append({**record, "seed": seed})
    return records


def test_without_validation_data_the_report_shows_every_setting(tmp_path):
    results = _write_results(tmp_path / "res", _blind_records())
    paths = build_report(results)
    summary = paths["summary.md"].read_text()
    assert "No hyperparameter selection was possible" in summary and "dataset.val_size must be > 0" in summary
    affected = _table(summary, "No selection possible: every setting's clean-label accuracy on the affected",
                      "poison, n = 10: ssd")
    # alpha a, rate r, seed s: 10 a + 50 r + s; utility 70 - 10 a + s; the original: 5 + s and 80 + s.
    assert affected == {"original": ["5.50 ± 0.71"] * 2, '`{"alpha":1}`': ["35.50 ± 0.71", "60.50 ± 0.71"],
                        '`{"alpha":2}`': ["45.50 ± 0.71", "70.50 ± 0.71"]}
    utility = _table(summary, "No selection possible: every setting's utility", "poison, n = 10: ssd")
    assert utility == {"original": ["80.50 ± 0.71"] * 2, '`{"alpha":1}`': ["60.50 ± 0.71"] * 2,
                       '`{"alpha":2}`': ["50.50 ± 0.71"] * 2}
    assert "Paper rule" not in summary and "Guarded rule" not in summary
    assert not [p for p in paths if p.startswith("figures/")]
    _, rows = _csv(paths)
    assert len(rows) == 10 and {r["selected"] for r in rows} == {""} and {r["guarded"] for r in rows} == {""}
    text = print_summary(paths, file=io.StringIO())
    assert "dataset.val_size must be > 0" in text and "35.50 ± 0.71" in text


def test_markdown_table_pads_right_aligns_and_rounds_floats():
    assert markdown_table(["a", "bb"], [[1, 0.5], ["x", 2.25]]).split("\n") == [
        "| a |    bb |", "|---|-------|", "| 1 | 0.500 |", "| x | 2.250 |"]
