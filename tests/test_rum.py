"""RUM as a method: the refinement of S_f, the sequence of steps, the shuffle control, RUM^F, the notes, and a run
inside a grid (synthetic source)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import yaml

from corrective_unlearning import correct
from corrective_unlearning.config import ConfigError
from corrective_unlearning.experiment import train_original
from corrective_unlearning.runner import deletion_set, expand_cells, load_grid_config, make_task, run_grid
from corrective_unlearning.methods import METHODS, Method, Unlearned, rum
from corrective_unlearning.models import create_model
from corrective_unlearning.proxies import entanglement_score
from grid_helpers import small_grid, write_grid
from helpers import RECIPE, same, state  # RECIPE: 960 samples, every training index seen


@pytest.fixture(scope="module")
def task(poisoned_setting, runtime):
    setting = poisoned_setting
    # not cached: a module fixture runs outside the per-test cache folder, and training records the confidence
    original, info = train_original(setting, "small_cnn", RECIPE, runtime, use_cache=False)
    return make_task(setting, original, deletion_set(setting, 1.0), RECIPE, runtime, info)


def _fresh(task, **changes):
    """The module's task with an empty shared cache (and ``changes``)."""
    return dataclasses.replace(task, cache={}, **changes)


def _scores(task, seed=1):
    """Hand-made memorization scores over the training split, unrelated to the indices' order."""
    scores = torch.randn(len(task.labels), generator=torch.Generator().manual_seed(seed))
    return _fresh(task, memorization=lambda name, params: scores), scores


@pytest.fixture
def spy(monkeypatch):
    """A registered method that records the task it is given and returns a changed copy of its original."""
    calls = []

    def run(step_task, hp):
        calls.append({"task": step_task, "original": step_task.original, "state": state(step_task.original),
                      "forget": step_task.forget_idx.clone(), "retain": step_task.retain_idx.clone(), "hp": hp})
        model = step_task.copy_original()
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        calls[-1]["output"] = model
        return Unlearned(model, {"call": len(calls)})

    monkeypatch.setitem(METHODS._entries, "spy", Method("spy", run, {"tag": 0}, {}, "records its task"))
    return calls


# ------------------------------------------------------------------------------------------------ refinement
def test_refinement_of_hand_made_scores_gives_exact_subsets():
    forget = torch.tensor([40, 10, 30, 20, 90, 50, 80, 70, 60])
    scores = torch.tensor([0.5, 0.9, 0.1, 0.3, 0.2, 0.8, 0.4, 0.6, 0.7])  # aligned with forget
    low, medium, high = rum.refine(forget, scores, 3)
    assert low.tolist() == [20, 30, 90]  # scores 0.3, 0.1, 0.2
    assert medium.tolist() == [40, 70, 80]  # 0.5, 0.6, 0.4
    assert high.tolist() == [10, 50, 60]  # 0.9, 0.8, 0.7


@pytest.mark.parametrize("n, sizes", [(9, [3, 3, 3]), (10, [3, 4, 3]), (11, [4, 3, 4]), (2, [1, 0, 1]),
                                      (1, [0, 1, 0])])
def test_three_subsets_are_symmetric_and_the_medium_one_is_centred_on_the_median(n, sizes):
    forget = torch.arange(100, 100 + n)
    scores = torch.linspace(0, 1, n).flip(0)  # index order reversed: the rule must follow the scores
    subsets = rum.refine(forget, scores, 3)
    assert [len(s) for s in subsets] == sizes
    assert sorted(torch.cat(subsets).tolist()) == forget.tolist()  # disjoint and covering
    ranked = forget.flip(0).tolist()  # ascending score
    if sizes[1]:
        positions = [ranked.index(i) for i in subsets[1].tolist()]
        assert (min(positions) + max(positions)) / 2 == pytest.approx((n - 1) / 2)  # centred on the median rank


def test_ties_go_by_index_and_skewed_scores_keep_equal_thirds():
    forget = torch.tensor([5, 3, 1, 4, 2, 0])
    tied = rum.refine(forget, torch.zeros(6), 3)
    assert [s.tolist() for s in tied] == [[0, 1], [2, 3], [4, 5]]
    # Skewed: four scores near 0 and two far out. The two closest to the median by score would be two of the
    # near-zero ones (overlapping the lowest third); by rank, medium is the middle pair.
    skewed = torch.tensor([0.0, 0.01, 0.02, 0.03, 5.0, 9.0])
    low, medium, high = rum.refine(torch.arange(6), skewed, 3)
    assert (low.tolist(), medium.tolist(), high.tolist()) == ([0, 1], [2, 3], [4, 5])


def test_k_subsets_are_equal_quantile_bins():
    forget = torch.arange(10)
    subsets = rum.refine(forget, forget.float(), 4)
    assert [s.tolist() for s in subsets] == [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9]]  # edges 0, 3, 5, 8, 10
    assert rum.bin_bounds(10, 4) == [0, 3, 5, 8, 10]


def test_shuffle_gives_equal_random_subsets_independent_of_the_scores(task):
    first, scores = _scores(task, seed=1)
    second, _ = _scores(task, seed=2)
    hp = {"order": "shuffle", "steps": ["none"] * 3}
    a, b = (METHODS.get("rum")(t, hp).notes["steps"] for t in (first, second))
    sets = [first.cache[("rum-shuffle", 3, task.seed)], second.cache[("rum-shuffle", 3, task.seed)]]
    assert [s.tolist() for s in sets[0]] == [s.tolist() for s in sets[1]]  # the scores play no part
    assert [s["size"] for s in a] == [s["size"] for s in b] == [13, 14, 13]
    assert sorted(torch.cat(sets[0]).tolist()) == task.forget_idx.tolist()
    refined = rum.refine(task.forget_idx, scores[task.forget_idx], 3)
    assert any(r.tolist() != s.tolist() for r, s in zip(refined, sets[0]))  # random, not by score
    assert [s["subset"] for s in a] == ["random 1/3", "random 2/3", "random 3/3"]
    assert a[0]["proxy"]["min"] != b[0]["proxy"]["min"]  # the notes still describe each subset by the proxy
    other = rum.shuffle_subsets(task.forget_idx, 3, task.seed + rum.SHUFFLE_SEED + 1)
    assert any(o.tolist() != s.tolist() for o, s in zip(other, sets[0]))  # seeded


def test_shuffle_needs_no_memorization_but_the_memorization_order_says_how_to_provide_it(task):
    bare = _fresh(task, memorization=None)
    notes = METHODS.get("rum")(bare, {"order": "shuffle", "steps": ["none"] * 3}).notes
    assert [s["proxy"] for s in notes["steps"]] == [None] * 3
    with pytest.raises(ValueError, match=r"proxy 'curvature'.*Task\(memorization=\.\.\.\)"):
        METHODS.get("rum")(_fresh(task, memorization=None), {"proxy": "curvature"})


# ------------------------------------------------------------------------------------------------ the sequence
def test_steps_run_low_to_high_from_the_previous_model_with_the_processed_subsets_out_of_retain(task, spy):
    scored, scores = _scores(task)
    result = METHODS.get("rum")(scored, {"steps": ["spy"] * 3, "step_hparams": [{"tag": 1}, {"tag": 2}, {}]})
    model = result.model
    subsets = rum.refine(task.forget_idx, scores[task.forget_idx], 3)
    train = set(task.train_idx.tolist())
    assert len(spy) == 3
    assert spy[0]["original"] is task.original
    assert spy[1]["original"] is not task.original and model is not task.original
    for i, call in enumerate(spy):
        assert call["forget"].tolist() == subsets[i].tolist()
        processed = set(torch.cat(subsets[: i + 1]).tolist())
        assert set(call["retain"].tolist()) == train - processed  # later subsets stay in the retain set
        assert call["hp"] == {"tag": [1, 2, 0][i]}
        assert call["task"].cache is not scored.cache and call["task"].cache == {}
    # the output of step i is the start of step i + 1, unchanged, and the last output is returned
    assert spy[1]["original"] is spy[0]["output"] and spy[2]["original"] is spy[1]["output"]
    assert same(spy[1]["state"], state(spy[0]["output"])) and same(spy[2]["state"], state(spy[1]["output"]))
    assert model is spy[2]["output"]
    steps = result.notes["steps"]
    assert [s["subset"] for s in steps] == ["low", "medium", "high"]
    assert steps[0]["proxy"]["max"] <= steps[1]["proxy"]["min"] and steps[1]["proxy"]["max"] <= steps[2]["proxy"]["min"]
    assert [s["notes"] for s in steps] == [{"call": 1}, {"call": 2}, {"call": 3}]


def test_none_steps_leave_the_model_bit_identical(task, spy):
    before = state(task.original)
    scored, _ = _scores(task)
    model = METHODS.get("rum")(scored, {"steps": ["none", "spy", "none"]}).model
    assert len(spy) == 1 and spy[0]["original"] is task.original and same(spy[0]["state"], before)
    assert model is spy[0]["output"]  # the last step left step 2's output as it was
    nothing = METHODS.get("rum")(_scores(task)[0], {"steps": ["none"] * 3}).model
    assert nothing is not task.original and same(state(nothing), before)
    assert same(state(task.original), before)


def test_rum_f_runs_one_method_on_every_subset(task, spy):
    scored, _ = _scores(task)
    notes = METHODS.get("rum")(scored, {"method": "spy", "step_hparams": {"tag": 7}}).notes
    assert len(spy) == 3 and all(c["hp"] == {"tag": 7} for c in spy)
    assert [s["method"] for s in notes["steps"]] == ["spy"] * 3
    assert sum(len(c["forget"]) for c in spy) == len(task.forget_idx)


def test_notes_carry_sizes_proxy_ranges_es_and_seconds_and_the_original_is_untouched(task, monkeypatch):
    before = state(task.original)
    fresh = _fresh(task)
    monkeypatch.setattr(rum, "ES_RETAIN_SAMPLES", 50)  # the retain side of the ES is subsampled (seeded)
    result = METHODS.get("rum")(fresh, {"step_hparams": [{}, {"steps": 2}, {"steps": 2}]})
    model, notes = result.model, result.notes
    assert same(state(task.original), before) and model is not task.original
    assert notes["proxy"] == "confidence" and notes["order"] == "memorization"
    assert notes["subset_sizes"] == [13, 14, 13] and "5000" not in notes["es_note"]
    steps = notes["steps"]
    assert [s["method"] for s in steps] == ["none", "cf", "salun"]
    assert steps[1]["hparams"] == METHODS.get("cf").resolve({"steps": 2})
    assert [s["size"] for s in steps] == [13, 14, 13]
    assert [s["retain_size"] for s in steps] == [len(task.train_idx) - k for k in (13, 27, 40)]
    for step in steps:
        assert 0 <= step["proxy"]["min"] <= step["proxy"]["mean"] <= step["proxy"]["max"] <= 1
        assert math.isfinite(step["es"]) and step["es"] > 0 and step["es_retain_samples"] == 50
        assert step["seconds"] >= 0 and step["es_seconds"] > 0
    assert steps[0]["seconds"] == 0.0 and steps[1]["seconds"] > 0 and steps[2]["seconds"] > 0
    assert "kept_fraction" in steps[2]["notes"]  # SalUn's own notes
    assert steps[2]["shared_paid"]  # SalUn's saliency, paid inside its step (a fresh cache per step)
    # the proxy scores and the refinement are shared work of the deletion set: paid once, then reused
    assert {"rum-proxy/confidence/{}", "rum-refine/confidence/{}/3"} <= set(result.shared.paid)
    again = METHODS.get("rum")(fresh, {"steps": ["none"] * 3})
    assert set(again.shared.reused) == {"rum-proxy/confidence/{}", "rum-refine/confidence/{}/3"}
    # the first step's ES: the low subset against a seeded subsample of its retain set, in the original
    low = rum.refine(task.forget_idx, task.memorization_scores("confidence")[task.forget_idx], 3)[0]
    retain = task.train_idx[~torch.isin(task.train_idx, low)]
    order = torch.randperm(len(retain), generator=torch.Generator().manual_seed(task.seed))
    sample = torch.sort(retain[order[:50]]).values
    expected = entanglement_score(task.embeddings(task.original, sample), task.embeddings(task.original, low))
    assert steps[0]["es"] == pytest.approx(expected)


def test_wrong_steps_are_refused_when_the_config_is_loaded(tmp_path):
    path = tmp_path / "grid.yaml"
    base = {"dataset": {"name": "synthetic", "val_size": 16}, "recipe": {"steps": 15, "batch_size": 32},
            "manipulations": [{"name": "poison", "sizes": [40]}], "rates": [1.0]}
    for params, match in [({"steps": ["none", "nope", "cf"]}, r"steps\[1\]: unknown method 'nope'"),
                          ({"steps": ["none", "cf"]}, "steps has 2 entries"),
                          ({"step_hparams": [{}, {"lr": "fast"}, {}]}, r"steps\[1\] \(cf\).*'lr'"),
                          ({"proxy": "vibes"}, "unknown proxy 'vibes'")]:
        path.write_text(yaml.safe_dump({**base, "methods": {"rum": {"grid": {}, "params": params}}}))
        with pytest.raises(ConfigError, match=match):
            load_grid_config(str(path), [])
    path.write_text(yaml.safe_dump({**base, "methods": {"rum": None}}))  # the paper grid
    cells = [c for c in expand_cells(load_grid_config(str(path), [])) if c.method == "rum"]
    assert [c.hparams for c in cells] == [{"method": m, "order": o} for m in (None, "neggrad+")
                                          for o in ("memorization", "shuffle")]


def test_rum_runs_in_a_grid(tmp_path):
    path = write_grid(tmp_path, small_grid(
        {"rum": {"grid": {"order": ["memorization", "shuffle"]}, "params": {"step_hparams": {"steps": 2}}}}))
    records = run_grid(load_grid_config(str(path), []), tmp_path / "out", progress=False)
    cells = [r for r in records if r["method"] == "rum"]
    assert len(cells) == 2 and all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    for record in cells:
        steps = record["method_notes"]["steps"]
        assert [s["method"] for s in steps] == ["none", "cf", "salun"]
        assert sum(s["size"] for s in steps) == record["forget_size"] == 20
        assert all(s["proxy"] is not None and s["es"] is not None and s["seconds"] >= 0 for s in steps)
    memorization, shuffle = cells
    assert "rum-proxy/confidence/{}" in memorization["timings"]["shared_paid"]
    assert "rum-proxy/confidence/{}" in shuffle["timings"]["shared_reused"]


def test_correct_runs_the_shuffle_control_and_names_the_missing_proxy(synthetic):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    args = (model, (synthetic.train_images, synthetic.train_labels), list(range(0, 60, 2)))
    fixed, report = correct(*args, method="rum", device="cpu",
                            hparams={"order": "shuffle", "steps": ["none", "cf", "cf"], "step_hparams": {"steps": 1}})
    assert [s["size"] for s in report["method_notes"]["steps"]] == [10, 10, 10]
    assert fixed is not model
    with pytest.raises(ValueError, match="proxy 'confidence'.*memorization"):
        correct(*args, method="rum", device="cpu")
