"""SSD's importances see all of S_f, with one batch size for both passes (SPEC 5 and 9.8)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from corrective_unlearning.methods import METHODS
from corrective_unlearning.methods.ssd import importance, importance_pool
from helpers import deletion_task


@pytest.fixture(scope="module")
def task(poisoned, runtime):
    return deletion_task(poisoned, 0.55, runtime)  # |S_f| = 22


def _slow_importance(task, indices: list[int], batch_size: int) -> list[torch.Tensor]:
    """Independent path: each sample's own gradient, averaged into its batch's mean gradient, squared, and
    weighted by the batch's share of the samples."""
    model = task.original.eval()
    params = list(model.parameters())
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    totals = [torch.zeros_like(p) for p in params]
    for batch in batches:
        per_sample = []
        for i in batch:
            index = torch.tensor([i])
            loss = F.cross_entropy(model(task.inputs(index)), task.labels[index])
            per_sample.append(torch.autograd.grad(loss, params))
        for total, grads in zip(totals, zip(*per_sample)):
            total += len(batch) * (sum(grads) / len(batch)) ** 2
    return [t / len(indices) for t in totals]


def _close(a, b, rtol=1e-4):
    return all(torch.allclose(x, y, rtol=rtol, atol=1e-10) for x, y in zip(a, b))


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_importance_matches_a_per_sample_computation_with_the_partial_batch_weighted(task):
    forget = task.forget_idx.tolist()
    assert len(forget) % 8 != 0  # 22 = 8 + 8 + 6: the last batch is partial
    assert _close(importance(task, task.original, task.forget_idx, 8), _slow_importance(task, sorted(forget), 8))


def test_importance_does_not_depend_on_the_order_of_S_f(task):
    shuffled = task.forget_idx[torch.randperm(len(task.forget_idx), generator=torch.Generator().manual_seed(1))]
    assert not torch.equal(shuffled, task.forget_idx)
    assert _equal(importance(task, task.original, shuffled, 8), importance(task, task.original, task.forget_idx, 8))


def test_the_sample_placed_last_counts(task):
    forget = torch.sort(task.forget_idx).values
    without_last = importance(task, task.original, forget[:-1], 7)  # 21 = 3 x 7: the last one alone in a batch
    assert not _close(without_last, importance(task, task.original, forget, 7), rtol=1e-3)


def test_duplicating_every_sample_leaves_importance_unchanged(task):
    twice = torch.cat([task.forget_idx, task.forget_idx])
    assert _equal(importance(task, task.original, twice, 8), importance(task, task.original, task.forget_idx, 8))


def test_data_importance_uses_the_whole_retain_set_unless_a_subsample_is_asked_for(task):
    hp = METHODS.get("ssd").resolve({})
    assert hp["importance_samples"] is None
    assert torch.equal(importance_pool(task, hp), task.retain_idx)
    sample = importance_pool(task, {**hp, "importance_samples": 50})
    assert len(sample) == len(set(sample.tolist())) == 50 and set(sample.tolist()) <= set(task.retain_idx.tolist())
    assert torch.equal(importance_pool(task, {**hp, "importance_data": "train"}), task.train_idx)


def test_one_batch_size_for_both_passes_whatever_the_size_of_S_f(task, monkeypatch):
    from corrective_unlearning.methods import ssd

    sizes = []
    monkeypatch.setattr(ssd, "importance", lambda task, model, indices, batch_size: sizes.append(batch_size) or
                        [torch.ones_like(p) for p in model.parameters()])
    task.cache.clear()
    METHODS.get("ssd")(task, {"batch_size": 512})  # |S_f| = 22 < 512: the batch size stays 512 for both
    assert sizes == [512, 512]
    task.cache.clear()


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"batch_size": 2.5}, {"importance_samples": 0}])
def test_bad_importance_settings_are_refused(task, bad):
    task.cache.clear()
    with pytest.raises(ValueError, match="ssd.*(batch_size|importance_samples)"):
        METHODS.get("ssd")(task, bad)


# -- dampened_weights counts the weights SSD changed -----------------------------------------------------------------

def _linear(weight):
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight))
    return model


def test_dampen_counts_the_weights_it_changed_not_the_selected_ones():
    from corrective_unlearning.methods.ssd import dampen

    i_f, i_d = [torch.tensor([[1.0, 5.0], [4.0, 0.5]])], [torch.tensor([[2.0, 1.0], [1.0, 1.0]])]
    # alpha 0.1 selects all four (I_f > 0.1 I_D); lambda 1: factors min(I_D / I_f, 1) = 1, 0.2, 0.25, 1. The
    # first and last keep their value (factor 1), the third is a zero weight (0 * 0.25 = 0): one weight changed.
    model = _linear([[1.0, 2.0], [0.0, 3.0]])
    assert dampen(model, i_f, i_d, alpha=0.1, lam=1.0) == 1
    assert torch.equal(model.weight, torch.tensor([[1.0, 0.4], [0.0, 3.0]]))
    # lambda below alpha: alpha 1 selects (0, 1) and (1, 0); factors 0.5 / 5 and 0.5 / 4; the zero stays zero
    model = _linear([[1.0, 2.0], [0.0, 3.0]])
    assert dampen(model, i_f, i_d, alpha=1.0, lam=0.5) == 1
    assert torch.equal(model.weight, torch.tensor([[1.0, 2.0 * (0.5 / 5.0)], [0.0, 3.0]]))


def test_ssd_notes_count_exactly_the_weights_that_differ_from_the_original(task):
    from corrective_unlearning.methods.ssd import importances

    task.cache.clear()
    hp = {"alpha": 0.1, "lambda": 1.0}  # the setting: lambda above alpha
    result = METHODS.get("ssd")(task, hp)
    model = result.model
    differ = sum(int((a != b).sum()) for a, b in zip(model.parameters(), task.original.parameters()))
    forget_imp, data_imp = importances(task, METHODS.get("ssd").resolve(hp))
    selected = sum(int((f > 0.1 * d).sum()) for f, d in zip(forget_imp, data_imp))
    assert result.notes["dampened_weights"] == differ
    assert 0 < differ < selected  # the old count (selected) was larger than what changed


# -- settings that give the same model ------------------------------------------------------------------------------

def _paper_keys():
    from corrective_unlearning.methods.ssd import ALPHAS, LAMBDA_RATIOS, equivalence_key

    spec = METHODS.get("ssd")
    return {(a, r): equivalence_key(spec.resolve({"alpha": a, "lambda_ratio": r}))
            for a in ALPHAS for r in LAMBDA_RATIOS}


def test_paper_grid_settings_with_lambda_at_least_alpha_group_by_lambda():
    keys = _paper_keys()
    assert all(keys[(a, r)] is None for (a, r) in keys if r < 1)  # alpha above lambda: both matter
    groups = {}
    for setting, key in keys.items():
        if key is not None:
            groups.setdefault(key, []).append(setting)
    shared = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    assert shared == [[(0.1, 10), (1, 1)], [(1, 10), (10, 1)], [(10, 5), (50, 1)], [(10, 10), (100, 1)],
                      [(50, 10), (100, 5), (500, 1)], [(100, 10), (1000.0, 1)], [(500, 10), (1000.0, 5)],
                      [(1000.0, 10), (10000.0, 1)], [(10000.0, 10), (100000.0, 1)], [(100000.0, 10), (1000000.0, 1)]]
    assert sum(len(g) - 1 for g in groups.values()) == 11  # of 50 settings per deletion set


@pytest.mark.parametrize("scale", ["absolute", "relative"])
def test_equivalent_settings_give_bit_identical_models_on_real_importances(task, scale):
    keys = _paper_keys()
    task.cache.clear()
    models, notes = {}, {}
    for (a, r), key in keys.items():
        if key is None:
            continue
        result = METHODS.get("ssd")(task, {"alpha": a, "lambda_ratio": r, "alpha_scale": scale})
        models[(a, r)], notes[(a, r)] = result.model, result.notes
    groups = {}
    for setting in models:
        groups.setdefault(keys[setting], []).append(setting)
    changed = 0
    for group in groups.values():
        first = group[0]
        for other in group[1:]:
            assert all(torch.equal(x, y) for x, y in zip(models[first].state_dict().values(),
                                                          models[other].state_dict().values())), (first, other)
            assert notes[first] == notes[other]
        changed += notes[first]["dampened_weights"] > 0
    assert changed >= 2  # the comparison covers models that were dampened, not only untouched copies
    task.cache.clear()


def test_the_equivalence_holds_at_the_float_boundaries():
    """I_f placed on, just below and just above lambda * I_D (and alpha * I_D), subnormal and zero importances,
    NaN: (alpha, lambda) with alpha <= lambda gives the same bits as (lambda, lambda)."""
    from corrective_unlearning.methods.ssd import dampen

    g = torch.Generator().manual_seed(0)
    tiny = torch.finfo(torch.float32).tiny
    i_d = torch.cat([torch.rand(2000, generator=g) * 10 ** torch.randint(-40, 5, (2000,), generator=g).float(),
                     torch.tensor([0.0, tiny, tiny / 8, 1e-45, 3.0, float("nan"), 1e30])])
    for alpha, lam in [(0.1, 1.0), (10, 50), (3.0, 3.0000002), (0.0, 1e-3), (1e5, 1e6), (0.1 * 3, 0.9)]:
        p = lam * i_d
        q = alpha * i_d
        i_f = torch.cat([p, torch.nextafter(p, torch.tensor(0.0)), torch.nextafter(p, torch.tensor(float("inf"))),
                         q, torch.nextafter(q, torch.tensor(float("inf"))), torch.full_like(p, tiny / 4),
                         torch.zeros_like(p), torch.rand(len(p), generator=g) * p * 2])
        d = i_d.repeat(8)
        weights = torch.randn(len(d), generator=g)
        weights[::7] = 0.0
        a, b = torch.nn.Linear(len(d), 1, bias=False), torch.nn.Linear(len(d), 1, bias=False)
        with torch.no_grad():
            a.weight.copy_(weights)
            b.weight.copy_(weights)
        changed_a = dampen(a, [i_f.reshape(1, -1)], [d.reshape(1, -1)], alpha, lam)
        changed_b = dampen(b, [i_f.reshape(1, -1)], [d.reshape(1, -1)], lam, lam)
        assert torch.equal(a.weight, b.weight) and changed_a == changed_b, (alpha, lam)


def test_a_grid_runs_an_equivalent_setting_once_and_its_record_points_to_the_cell_that_ran(tmp_path, monkeypatch):
    import yaml

    from corrective_unlearning.report.build import build_report
    from corrective_unlearning.runner import cells as runner_cells
    from corrective_unlearning.runner import expand_cells, load_grid_config, run_grid

    grid = {"dataset": {"name": "synthetic", "val_size": 16}, "recipe": {"steps": 15, "batch_size": 32},
            "manipulations": [{"name": "poison", "sizes": [40]}], "rates": [0.5], "seeds": [0],
            "methods": {"ssd": {"grid": {"alpha": [1, 10], "lambda_ratio": [1, 10]}}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    config = load_grid_config(str(path), [])
    records = run_grid(config, tmp_path / "out", progress=False)
    assert {r["cell"] for r in records} == {c.id for c in expand_cells(config)}  # cell ids as before
    ssd = {(r["hparams"]["alpha"], r["hparams"]["lambda_ratio"]): r for r in records if r["method"] == "ssd"}
    source, shared = ssd[(1, 10)], ssd[(10, 1)]  # lambda 10 both, alpha <= lambda both
    assert [k for k, r in ssd.items() if r.get("shared_with")] == [(10, 1)]
    assert shared["status"] == "ok" and shared["shared_with"] == source["cell"]
    assert shared["metrics"] == source["metrics"] and shared["method_notes"] == source["method_notes"]
    assert shared["timings"]["method_seconds"] == 0 and shared["timings"]["eval_seconds"] == 0
    assert shared["timings"]["shared_model"]["cell"] == source["cell"]
    assert shared["timings"]["shared_model"]["method_seconds"] == source["timings"]["method_seconds"]

    # what the setting gives when it runs itself: the same record contents
    monkeypatch.setattr(runner_cells, "EQUIVALENT_SETTINGS", {})
    plain = {(r["hparams"]["alpha"], r["hparams"]["lambda_ratio"]): r
             for r in run_grid(config, tmp_path / "plain", progress=False) if r["method"] == "ssd"}
    assert not any(r.get("shared_with") for r in plain.values())
    assert plain[(10, 1)]["metrics"] == shared["metrics"]
    assert plain[(10, 1)]["method_notes"] == shared["method_notes"]

    summary = build_report(tmp_path / "out")["summary.md"].read_text()
    assert "1 of 4 ssd cells gave provably the same model as another setting" in summary
