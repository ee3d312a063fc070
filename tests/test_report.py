"""The report (tidy table, summary.md, figures) built from synthetic grid records with hand-computable values."""
from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from collections import defaultdict

import pytest

from corrective_unlearning.grid import Cell
from corrective_unlearning.report.build import FIXED_COLUMNS, build_report, print_summary

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


def _record(cell: Cell, **fields) -> dict:
    return {"cell": cell.id, "status": "ok", "dataset": "fashion-mnist", "model": "small_cnn",
            "manipulation": cell.manipulation, "n": cell.n, "seed": cell.seed, "rate": cell.rate,
            "method": cell.method, "hparams": cell.hparams, "setting": {}, "index_hashes": {}, "environment": {},
            **fields}


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
    """method -> cells of the Markdown table under ``### heading`` in the ``## section...`` section."""
    part = next(s for s in summary.split("\n## ") if s.startswith(section))
    block = part.split(f"### {heading}\n")[1].strip().split("\n\n")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
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
    selected = _table(summary, "Clean-label accuracy on the affected", "poison, n = 100")
    assert list(selected) == ["original", "ssd", "cf"]
    # cf, n=100, rate 0.5 selects alpha 2: 40 + 15 - 10 + 1 + 3 seed -> 46, 49.
    assert selected["cf"][1] == "47.50 ± 2.12"
    assert selected["original"] == ["10.50 ± 0.71"] * len(RATES)
    oracle = _table(summary, "Oracle (peeks at test data: an upper bound", "poison, n = 100")
    assert oracle["cf"][1] == "52.50 ± 2.12"  # alpha 1: 51, 54
    manipulated = _table(summary, "Clean-label accuracy on the manipulated", "poison, n = 500")
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
