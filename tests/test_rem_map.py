"""REM's regularity x discovery map in the report (report/rem_map.py), from hand-built records with known values,
and the REM recipes (configs/rem)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from corrective_unlearning.runner import expand_cells, load_grid_config
from corrective_unlearning.manipulations import MANIPULATIONS
from corrective_unlearning.report.build import build_report

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "rem"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS, RATES, ALPHAS = [0, 1], [0.5, 1.0], [1, 2]
# config.yaml order (deliberately random_labels first: rows must still follow REM's regularity order)
MANIPULATIONS_ = ["random_labels", "poison", "interclass"]
OFFSET = {"poison": 0.0, "interclass": 5.0, "random_labels": 10.0}


def _metrics(manipulation: str, method: str, alpha: int, rate: float, seed: int) -> dict:
    """Alpha 1 always wins the paper rule (higher deletion change, same val. acc.); alpha 2's validation accuracy
    is 10 points below the original's, so the guarded rule also takes alpha 1 ... except for cf, where alpha 1
    drops validation accuracy by 10 points and the guarded rule takes alpha 2."""
    off = OFFSET[manipulation] + (20.0 if method == "cf" else 0.0)
    val = 90.0 if (alpha == 1) != (method == "cf") else 80.0
    return {"manipulated_acc": 40 + 40 * rate + off + seed - alpha,
            "affected_acc": 30 + 20 * rate + off + 2 * seed - alpha,
            "utility_acc": 90 - off - seed - 3 * alpha,
            "val_acc": val, "deletion_change": 70.0 if alpha == 1 else 40.0, "test_acc": 85.0}


def _original(manipulation: str, seed: int) -> dict:
    off = OFFSET[manipulation]
    return {"manipulated_acc": 10.0 + off + seed, "affected_acc": 12.0 + off + seed, "utility_acc": 91.0 - seed,
            "val_acc": 90.0, "test_acc": 88.0}


def _record(manipulation, seed, rate, method, hparams, metrics, index=0) -> dict:
    cell = f"{manipulation}-n600-seed{seed}-rate{rate:.2f}-{method}-{json.dumps(hparams, sort_keys=True)}"
    return {"cell": cell.replace('"', "").replace(" ", ""), "status": "ok", "dataset": "fashion-mnist",
            "model": "small_cnn", "manipulation": manipulation, "manipulation_variant": manipulation, "n": 600,
            "seed": seed, "rate": rate, "method": method, "hparams": hparams, "setting_index": index,
            "setting": {}, "index_hashes": {}, "environment": {}, "metrics": metrics,
            "timings": {"method_seconds": 1.0, "eval_seconds": 0.1}}


def _records(manipulations) -> list[dict]:
    records = []
    for manipulation in manipulations:
        for seed in SEEDS:
            records.append(_record(manipulation, seed, 0.0, "original", {}, _original(manipulation, seed)))
            for rate in RATES:
                for method in ("ssd", "cf"):
                    for i, alpha in enumerate(ALPHAS):
                        records.append(_record(manipulation, seed, rate, method, {"alpha": alpha},
                                               _metrics(manipulation, method, alpha, rate, seed), i))
    return records


def _build(root: Path, manipulations) -> tuple[Path, dict]:
    (root / "records").mkdir(parents=True)
    for record in _records(manipulations):
        (root / "records" / f"{record['cell']}.json").write_text(json.dumps(record))
    (root / "config.yaml").write_text("methods:\n  ssd: null\n  cf: {}\n")
    return root, build_report(root)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("rem"), MANIPULATIONS_)


def _map_tables(summary: str, heading: str) -> dict[str, dict[str, list[str]]]:
    """quantity label -> manipulation -> cells (the mean of each entry; its std and 95% interval are checked in
    test_seeds.py), under ``#### heading`` of the map section."""
    part = next(s for s in summary.split("\n## ") if s.startswith("Regularity x discovery map"))
    block = part.split(f"#### {heading}\n")[1].split("\n#### ")[0].split("\n### ")[0]
    tables = {}
    for chunk in block.strip().split("\n\n"):
        if chunk.startswith("_Seeds: "):
            assert chunk == "_Seeds: 2 seeds per entry: mean ± sample standard deviation [95% confidence interval " \
                            "of the mean, Student's t, n-1 df]._"
        elif chunk.endswith(":"):
            label = chunk[:-1]
        elif chunk.startswith("|"):
            rows = [[c.strip() for c in line.strip("|").split("|")] for line in chunk.splitlines()]
            assert rows[0] == ["manipulation", "0%", "50%", "100%"]
            tables[label] = {row[0]: [c.split(" ± ")[0] for c in row[1:]] for row in rows[2:]}
    return tables


def _expected(manipulation, method, alpha, metric) -> list[str]:
    def value(m: dict) -> float:
        if metric == "product":
            return m["manipulated_acc"] * m["utility_acc"] / 100
        return m[metric]

    original = np.mean([value(_original(manipulation, s)) for s in SEEDS])
    rates = [np.mean([value(_metrics(manipulation, method, alpha, r, s)) for s in SEEDS]) for r in RATES]
    return [f"{v:.2f}" for v in [original, *rates]]


LABELS = {"Healed (train)": "manipulated_acc", "Healed (test)": "affected_acc", "Utility (test)": "utility_acc",
          "Healed (train) x utility / 100": "product"}


@pytest.mark.parametrize("method,flag,alpha", [("ssd", "paper rule", 1), ("cf", "paper rule", 1),
                                               ("ssd", "guarded rule", 1), ("cf", "guarded rule", 2)])
def test_map_tables_hold_seed_means_of_the_chosen_settings(report, method, flag, alpha):
    _, paths = report
    tables = _map_tables(paths["summary.md"].read_text(), f"{method} ({flag})")
    assert set(tables) == set(LABELS)
    for label, metric in LABELS.items():
        assert list(tables[label]) == ["poison", "interclass", "random_labels"]  # REM's order, high -> low
        for manipulation in MANIPULATIONS_:
            assert tables[label][manipulation] == _expected(manipulation, method, alpha, metric), (label,
                                                                                                   manipulation)


def test_product_is_train_healed_times_test_utility(report):
    _, paths = report
    tables = _map_tables(paths["summary.md"].read_text(), "cf (paper rule)")
    # seed 0/1 at 100%, interclass, cf alpha 1: healed (train) 40 + 40 + 25 + s - 1, utility 90 - 25 - s - 3
    by_hand = np.mean([(104 + s) * (62 - s) / 100 for s in SEEDS])
    assert tables["Healed (train) x utility / 100"]["interclass"][2] == f"{by_hand:.2f}"
    # the 0% column is the original's: (20 + s) * (91 - s) / 100 for random labels
    assert tables["Healed (train) x utility / 100"]["random_labels"][0] == \
        f"{np.mean([(20 + s) * (91 - s) / 100 for s in SEEDS]):.2f}"


def test_zero_column_is_the_original_for_every_method(report):
    _, paths = report
    summary = paths["summary.md"].read_text()
    for heading in ("ssd (paper rule)", "cf (paper rule)", "ssd (guarded rule)", "cf (guarded rule)"):
        healed = _map_tables(summary, heading)["Healed (train)"]
        assert {m: row[0] for m, row in healed.items()} == {
            m: f"{np.mean([_original(m, s)['manipulated_acc'] for s in SEEDS]):.2f}" for m in MANIPULATIONS_}


def test_heatmaps_are_written_and_listed(report):
    root, paths = report
    summary = paths["summary.md"].read_text()
    names = [f"figures/rem-map-n600-{q}{s}.png" for q in ("healed-train", "healed-test", "utility",
                                                          "healed-x-utility") for s in ("", "-guarded")]
    for name in names:
        assert name in paths, name
        assert paths[name].read_bytes()[:8] == PNG_MAGIC
        figures = summary.split("\n## Figures\n")[1]
        assert f"]({name})" in figures
    # the paper-1 sections are still there, before the map
    assert summary.index("## Paper rule:") < summary.index("## Regularity x discovery map")


def test_single_manipulation_grid_gets_no_map(tmp_path):
    _, paths = _build(tmp_path / "one", ["poison"])
    summary = paths["summary.md"].read_text()
    assert "Regularity x discovery map" not in summary
    assert not any("rem-map" in name for name in paths)
    assert "## Paper rule:" in summary


def test_two_manipulations_qualify(tmp_path):
    _, paths = _build(tmp_path / "two", ["random_labels", "poison"])
    tables = _map_tables(paths["summary.md"].read_text(), "ssd (paper rule)")
    assert list(tables["Utility (test)"]) == ["poison", "random_labels"]


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10"])
def test_rem_recipes_load_and_expand(name):
    config = load_grid_config(str(CONFIGS / f"{name}.yaml"), [])
    grids = config.manipulation_grids()
    assert [g.name for g in grids] == ["poison", "interclass", "random_labels"]
    for grid in grids:
        MANIPULATIONS.get(grid.name)  # a known manipulation
    cells = expand_cells(config)
    assert len({c.id for c in cells}) == len(cells)
    settings = sum(len(config.method_settings(m)) for m in config.methods)
    if name == "fashion-mnist":
        assert config.rates == [0.1, 0.25, 0.5, 1.0] and {g.sizes[0] for g in grids} == {600}
        assert set(config.methods) == {"eu", "cf", "ssd", "npo", "potion", "neggrad+", "rem"}
    else:
        assert config.rates == [round(0.1 * i, 1) for i in range(1, 11)] and {g.sizes[0] for g in grids} == {1000}
        assert grids[1].params["pair"] == ["cat", "dog"] and config.model_name == "resnet9"
    assert len(cells) == 3 * len(config.seeds) * (1 + len(config.rates) * settings)
