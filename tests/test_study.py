"""RUM's own study: the clean manipulation ``none``, forget sets chosen from the original by memorization and
entanglement (grid key ``forget_sets``), a forget-set grid end to end, its report, and the shipped recipes."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from corrective_unlearning import forget_sets as fs
from corrective_unlearning.config import ConfigError
from corrective_unlearning.experiment import build_setting
from corrective_unlearning.runner import Cell, expand_cells, load_grid_config, load_records, run_grid
from corrective_unlearning.manipulations import manipulate
from corrective_unlearning.methods import hparams_key
from corrective_unlearning.report.build import build_report, rum_label

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# re-exports a function of the same name

STUDY = {
    "dataset": {"name": "synthetic", "val_size": 16},
    "recipe": {"steps": 15, "batch_size": 32},
    "manipulations": [{"name": "none", "sizes": [0]}],
    "seeds": [0],
    "forget_sets": [{"by": "confidence", "level": "low", "size": 30},
                    {"by": "confidence", "level": "high", "size": 30},
                    {"by": "confidence", "level": "mixed", "size": 30},
                    {"by": "entanglement", "level": "high", "size": 30},
                    {"by": "random", "size": 30}],
    "tow": {"references": ["retrain"], "retain_samples": 100},
    "methods": {"cf": {"grid": {"last_k": ["all"]}, "params": {"steps": 4}},
                "rum": {"grid": {"method": [None, "cf"], "order": ["memorization"]},
                        "params": {"step_hparams": {"steps": 2}}}},
}


def _config(tmp_path, **changes):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **changes}))
    return load_grid_config(str(path), [])


# -- the clean manipulation --------------------------------------------------------------------------------------

def test_none_leaves_labels_unchanged_and_s_m_empty(synthetic, runtime):
    setting = build_setting(synthetic, "none", 0, 0, runtime, val_size=16)
    m = setting.manipulated
    assert torch.equal(m.labels, synthetic.train_labels) and torch.equal(m.clean_labels, synthetic.train_labels)
    assert m.labels is not synthetic.train_labels  # a copy, never the dataset's own tensor
    assert m.size == 0 and len(m.manipulated) == 0
    assert not m.triggered.any() and m.trigger is None
    every = torch.arange(len(synthetic.test_labels))
    assert set(m.test_views) == {"affected", "utility"}
    assert all(torch.equal(view.indices, every) and not view.triggered for view in m.test_views.values())
    with pytest.raises(ValueError, match="n must be 0"):
        manipulate("none", synthetic, setting.train_idx, 5, seed=0)


def test_none_needs_size_zero_and_forget_sets(tmp_path):
    with pytest.raises(ConfigError, match="only size is 0"):
        _config(tmp_path, manipulations=[{"name": "none", "sizes": [600]}])
    with pytest.raises(ConfigError, match="forget_sets"):
        _config(tmp_path, forget_sets=None)
    with pytest.raises(ConfigError, match="level"):
        _config(tmp_path, forget_sets=[{"by": "entanglement", "level": "medium", "size": 3}])
    with pytest.raises(ConfigError, match="by"):
        _config(tmp_path, forget_sets=[{"by": "loss", "level": "high", "size": 3}])
    with pytest.raises(ConfigError, match="more than once"):
        _config(tmp_path, forget_sets=[{"by": "random", "size": 3}, {"by": "random", "size": 3}])
    with pytest.raises(ConfigError, match="size"):
        _config(tmp_path, forget_sets=[{"by": "random", "size": 0}])


# -- the selection rules -----------------------------------------------------------------------------------------

# Candidates 0..9 with these scores (median of the candidates: (3 + 5) / 2 = 4); 10 and 11 are not candidates
# (the validation split) and carry the most extreme scores, so picking one would show.
SCORES = torch.tensor([5, 1, 9, 3, 3, 7, 0, 8, 2, 6, 100, -100], dtype=torch.float32)
CANDIDATES = torch.arange(10)


@pytest.mark.parametrize("level, size, expected", [
    ("low", 3, [1, 6, 8]),  # scores 0, 1, 2
    ("low", 4, [1, 3, 6, 8]),  # then 3 (indices 3 and 4 tie): the lower index
    ("high", 3, [2, 5, 7]),  # scores 9, 8, 7
    ("medium", 3, [0, 3, 4]),  # |score - 4| = 1
    ("medium", 4, [0, 3, 4, 8]),  # then |score - 4| = 2 (indices 8 and 9 tie): the lower index
    ("mixed", 6, [0, 1, 2, 3, 6, 7]),  # high 2 (9, 8), low 2 (0, 1), medium 2 of the rest (indices 0, 3)
])
def test_memorization_levels_of_hand_made_scores(level, size, expected):
    assert fs.by_memorization(SCORES, CANDIDATES, level, size).tolist() == expected


def test_undefined_scores_are_no_candidates_and_sizes_are_checked():
    scores = SCORES.clone()
    scores[2] = float("nan")
    assert fs.by_memorization(scores, CANDIDATES, "high", 2).tolist() == [5, 7]
    with pytest.raises(ValueError, match="size 10"):
        fs.by_memorization(scores, CANDIDATES, "low", 10)  # 9 candidates left


def _train_setting(synthetic, runtime):
    return build_setting(synthetic, "none", 0, 0, runtime, val_size=16)


MODEL = torch.nn.Linear(1, 1)  # stands for an original whose proxies and embeddings the tests hand-make


def test_select_forget_set_reads_the_proxy_and_never_the_validation_split(synthetic, runtime, monkeypatch):
    setting = _train_setting(synthetic, runtime)
    # Distinct scores unrelated to the index order; the validation split gets the most extreme ones.
    scores = torch.randperm(len(setting.manipulated.labels), generator=torch.Generator().manual_seed(3)).float()
    scores[setting.val_idx[::2]] = 1e6
    scores[setting.val_idx[1::2]] = -1e6
    asked = []

    def fake(name, setting_, original, info, runtime_, **params):
        asked.append(name)
        return scores.clone()

    monkeypatch.setattr(fs, "memorization_scores", fake)  # the name forget_sets reads
    train = sorted(setting.train_idx.tolist())
    by_score = sorted(train, key=lambda i: (scores[i].item(), i))
    middle = [scores[i].item() for i in by_score[(len(by_score) - 1) // 2: len(by_score) // 2 + 1]]
    median = sum(middle) / len(middle)  # an even count: the mean of the middle two
    by_median = sorted(train, key=lambda i: (abs(scores[i].item() - median), i))
    expected = {"low": sorted(by_score[:12]), "high": sorted(by_score[-12:]), "medium": sorted(by_median[:12]),
                "mixed": sorted(by_score[-4:] + by_score[:4] + by_median[:4])}
    val = set(setting.val_idx.tolist())
    for level, want in expected.items():
        got = fs.select_forget_set(setting, MODEL, {}, runtime, {"by": "heldout", "level": level, "size": 12}, 0)
        assert got.tolist() == want, level
        assert not val & set(got.tolist())
    assert asked == ["heldout"] * 4


def test_entanglement_sets_are_the_closest_and_farthest_from_the_centroid(synthetic, runtime, monkeypatch):
    embeddings = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [5.0, 0.0]])
    # centroid (1, 0.6): distances 1.17, 0.6, 2.09, 2.6, 4.04
    candidates = torch.tensor([10, 11, 12, 13, 14])
    assert fs.by_distance_to_centroid(embeddings, candidates, "high", 2).tolist() == [10, 11]
    assert fs.by_distance_to_centroid(embeddings, candidates, "low", 2).tolist() == [13, 14]

    setting = _train_setting(synthetic, runtime)
    train = sorted(setting.train_idx.tolist())

    def fake(model, bank, indices, runtime_, stamp=False, batch_size=None):  # one coordinate: the index itself
        return torch.stack([indices.float(), torch.zeros(len(indices))], 1)

    monkeypatch.setattr(fs, "penultimate_embeddings", fake)  # the name forget_sets reads
    centre = sum(train) / len(train)
    by_distance = sorted(train, key=lambda i: (abs(i - centre), i))
    high = fs.select_forget_set(setting, MODEL, {}, runtime, {"by": "entanglement", "level": "high", "size": 20}, 0)
    low = fs.select_forget_set(setting, MODEL, {}, runtime, {"by": "entanglement", "level": "low", "size": 20}, 0)
    assert high.tolist() == sorted(by_distance[:20]) and low.tolist() == sorted(by_distance[-20:])
    assert not set(setting.val_idx.tolist()) & set(high.tolist() + low.tolist())
    info = fs.describe_forget_set(setting, MODEL, {}, runtime, {"by": "entanglement", "level": "high", "size": 20},
                                  high, 0)
    assert info["label"] == "entanglement-high-20" and info["es"] > 0 and info["selected"] == 20
    assert info["proxy"]["name"] == "confidence" and "error" in info["proxy"]  # no recorded confidence here


def test_without_entanglement_sets_a_description_embeds_only_the_set_and_its_es_sample(synthetic, runtime,
                                                                                       monkeypatch):
    setting = _train_setting(synthetic, runtime)
    sizes = []

    def fake(model, bank, indices, runtime_, stamp=False, batch_size=None):
        sizes.append(len(indices))
        return torch.stack([indices.float(), (indices % 7).float()], 1)

    monkeypatch.setattr(fs, "penultimate_embeddings", fake)  # the name forget_sets reads
    selector = fs.ForgetSetSelector(setting, MODEL, {}, runtime, full_embeddings=False)
    spec = fs.ForgetSetSpec("random", None, 40)
    forget = selector.select(spec, 0)
    info = selector.describe(spec, forget, 0, retain_samples=100)
    assert sorted(sizes) == [40, 100] and info["distance"] is None and info["es"] > 0
    full = fs.ForgetSetSelector(setting, MODEL, {}, runtime).describe(spec, forget, 0, retain_samples=100)
    assert sizes[-1] == len(setting.train_idx) and full["distance"]["mean"] > 0
    assert full["es"] == pytest.approx(info["es"])  # the same samples, embedded either way


def test_random_sets_are_seeded_uniform_choices_of_the_training_split(synthetic, runtime):
    setting = _train_setting(synthetic, runtime)
    spec = {"by": "random", "size": 50}
    first = fs.select_forget_set(setting, MODEL, {}, runtime, spec, 0)
    assert torch.equal(first, fs.select_forget_set(setting, MODEL, {}, runtime, spec, 0))
    assert not torch.equal(first, fs.select_forget_set(setting, MODEL, {}, runtime, spec, 1))
    assert len(set(first.tolist())) == 50 and set(first.tolist()) <= set(setting.train_idx.tolist())


# -- the grid ----------------------------------------------------------------------------------------------------

def test_rate_based_cell_ids_are_unchanged():
    hparams = {"last_k": "all", "steps": 5}
    digest = hashlib.sha256(hparams_key(hparams).encode()).hexdigest()[:8]
    cell = Cell("poison", "", 40, 0, 0.5, "cf", hparams)
    assert cell.id == f"poison-n40-seed0-rate0.50-cf-{digest}"  # as before forget sets existed
    study = Cell("none", "", 0, 0, 1.0, "cf", hparams, 0, "confidence-high-30")
    assert study.id == f"none-n0-seed0-confidence-high-30-cf-{digest}"


def test_forget_sets_replace_the_rates(tmp_path):
    cells = expand_cells(_config(tmp_path, rates=[0.5, 1.0]))
    # the original, then per forget set: cf 1 + rum 2
    assert len(cells) == 1 + 5 * 3 and len({c.id for c in cells}) == len(cells)
    assert [c.forget_set for c in cells[1:4]] == ["confidence-low-30"] * 3
    assert {c.rate for c in cells[1:]} == {1.0} and cells[0].forget_set == ""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    path = out / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    config = load_grid_config(str(path), [])
    records = run_grid(config, out / "results", progress=False)
    return config, records, out / "results"


def test_a_forget_set_grid_runs_end_to_end(study):
    config, records, results = study
    assert len(records) == len(expand_cells(config)) == 16
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    assert len({r["cell"] for r in records}) == len(records)
    labels = [fs.ForgetSetSpec(**entry).label for entry in STUDY["forget_sets"]]
    cells = [r for r in records if r["method"] != "original"]
    assert sorted({r["forget_set"] for r in cells}) == sorted(labels)
    assert [r["forget_set"] for r in records if r["method"] == "original"] == [""]
    for record in cells:
        info = record["forget_set_info"]
        assert info["label"] == record["forget_set"] and record["rate"] == 1.0 and record["forget_size"] == 30
        assert info["es"] > 0 and info["proxy"]["name"] == "confidence" and "min" in info["proxy"]
        metrics = record["metrics"]
        # S_f lies outside S_m (empty here): it is still predicted, so the deletion change is measured
        assert metrics["forget_acc"] == pytest.approx(100.0 - metrics["deletion_change"])
        assert 0.0 <= metrics["tow_retrain"] <= 100.0 and metrics["affected_acc"] == metrics["test_acc"]
    assert sorted(p.stem for p in (results / "forget_sets").glob("*.json")) == sorted(
        f"none-n0-seed0-{label}" for label in labels)
    assert len(list((results / "references").glob("*.json"))) == len(labels)
    assert run_grid(config, results, progress=False) == []  # resumes: nothing left to run


def test_selection_groups_forget_sets_separately(study):
    from corrective_unlearning.selection import mark_selection

    _, records, _ = study
    marked = mark_selection(records)
    chosen = [r["forget_set"] for r in marked if r["method"] == "cf" and r["selected"]]
    assert sorted(chosen) == sorted({r["forget_set"] for r in marked if r["method"] == "cf"})  # one per set


def test_the_study_report_has_tow_by_forget_set_and_the_level_figure(study, tmp_path):
    _, _, results = study
    paths = build_report(results, tmp_path / "report")
    summary = paths["summary.md"].read_text()
    assert "## ToW by forget set" in summary and "## Forget sets" in summary
    assert summary.split("\n## ")[1].startswith("ToW by forget set")  # what `corrective report` prints
    assert "Paper rule" not in summary  # no empty rate tables
    header = next(line for line in summary.splitlines() if line.startswith("| method | confidence-low-30"))
    assert header.split(" | ")[1:] == ["confidence-low-30", "confidence-high-30", "confidence-mixed-30",
                                       "entanglement-high-30", "random-30 |"]
    for row in ("| original |", "| cf |", "| rum none>cf>salun |", "| rum^F cf |", "| retrain (reference) |"):
        assert row in summary, row
    figure = tmp_path / "report" / "figures" / "none-n0-tow-retrain-by-confidence-level-30.png"
    assert figure.exists() and figure.stat().st_size > 0
    assert "figures/none-n0-tow-retrain-by-confidence-level-30.png" in summary
    with (tmp_path / "report" / "cells.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["forget_set"] for r in rows} == {""} | {r["forget_set"] for r in load_records(results)}


def test_rum_rows_are_named_by_variant():
    assert rum_label({}) == "rum none>cf>salun"
    assert rum_label({"method": "neggrad+"}) == "rum^F neggrad+"
    assert rum_label({"order": "shuffle"}) == "rum none>cf>salun (shuffle)"
    assert rum_label({"method": "cf", "proxy": "heldout"}) == "rum^F cf [heldout]"


# -- the shipped recipes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fashion-mnist-memorization", "cifar10-memorization"])
def test_rum_recipes_load_and_expand(name):
    config = load_grid_config(str(CONFIGS / "rum" / f"{name}.yaml"), [])
    cells = expand_cells(config)
    assert len({c.id for c in cells}) == len(cells)
    labels = [spec.label for spec in config.forget_set_specs()]
    assert {spec.level for spec in config.forget_set_specs() if spec.by == "confidence"} == {
        "low", "medium", "high", "mixed"}
    assert {spec.level for spec in config.forget_set_specs() if spec.by == "entanglement"} == {"low", "high"}
    assert config.manipulation_grids()[0].name == "none" and config.tow_options().references == ["retrain"]
    rum = [json.loads(hparams_key(c.hparams)) for c in cells if c.method == "rum" and c.forget_set == labels[0]]
    names = sorted(rum_label(hp) for hp in rum)
    assert "rum none>cf>salun" in names and "rum none>cf>salun (shuffle)" in names
    assert {"rum^F " + m for m in config.methods if m != "rum"} <= set(names)
