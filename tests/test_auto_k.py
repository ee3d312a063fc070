"""``k: auto``: the number of suspects chosen from the scores alone, on synthetic scores with a known mixture; and
its plumbing (rank_features' flagged scores, correct(expand="auto"), the grid's expand: [auto])."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from corrective_unlearning.cli import _expand_arg
from corrective_unlearning.methods import METHODS, Method, Unlearned
from corrective_unlearning.suspects import Features, rank_features
from corrective_unlearning.suspects.auto import choose_k, f1_against


def _mixture(separation, hidden=300, clean=6000, flagged=60, seed=0):
    rng = np.random.default_rng(seed)
    candidates = np.concatenate([rng.normal(size=clean), rng.normal(separation, 1, size=hidden)])
    truth = np.r_[np.zeros(clean, bool), np.ones(hidden, bool)]
    return candidates, truth, rng.normal(separation, 1, size=flagged)


def _f1(candidates, truth, k):
    top = np.argsort(-candidates, kind="stable")[:k]
    return 2 * truth[top].sum() / (k + truth.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_recovers_the_hidden_count_of_a_separated_mixture(seed):
    candidates, truth, flagged = _mixture(6.0, seed=seed)
    choice = choose_k(candidates, flagged)
    assert choice["self_check"] > 0.95  # the hidden 5% of the candidates score like the flagged
    # 60 flagged samples: their quantiles, and so the estimate, vary by about 12% (one sd)
    assert 0.75 * 300 <= choice["k"] <= 1.33 * 300
    assert _f1(candidates, truth, choice["k"]) >= 0.85
    assert choice["threshold"] == pytest.approx(np.sort(candidates)[::-1][choice["k"] - 1])
    assert "hidden" in choice["reason"]


def test_auto_f1_stays_high_where_the_self_check_exceeds_0_9():
    for separation in (3.5, 4.0, 5.0):
        candidates, truth, flagged = _mixture(separation, seed=3)
        choice = choose_k(candidates, flagged)
        assert choice["self_check"] > 0.9
        assert _f1(candidates, truth, choice["k"]) >= 0.8, separation


def test_auto_adds_nothing_when_the_ranking_cannot_tell_and_says_so():
    candidates, _, _ = _mixture(3.0)
    flagged = np.random.default_rng(5).normal(size=60)  # the flagged score like clean samples
    choice = choose_k(candidates, flagged)
    assert choice["k"] == 0 and choice["self_check"] < 0.7 and "adding none" in choice["reason"]
    assert choose_k(candidates, flagged, min_auc=0.0)["k"] > 0  # the gate, not the estimate, said no
    assert choose_k(candidates, [])["k"] == 0


def test_f1_against_counts_the_undiscovered_only():
    out = f1_against([5, 6, 7, 100], manipulated=[1, 2, 5, 6, 7, 8], flagged=[1, 2])
    assert out == {"k": 4, "found": 3, "undiscovered": 4, "precision": 0.75, "recall": 0.75, "f1": 0.75}


def test_rank_features_gives_the_flagged_scores_on_the_candidates_scale():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 4))
    z[:40] += 5.0
    labels = np.zeros(300, dtype=int)
    labels[150:] = 1
    labels[:40] = 0
    features = Features(torch.tensor(z, dtype=torch.float32), torch.tensor(rng.normal(size=(300, 2)),
                        dtype=torch.float32), torch.tensor(labels), 2)
    flagged = torch.zeros(300, dtype=torch.bool)
    flagged[:10] = True
    single = rank_features(features, torch.arange(300), flagged, ranking="spectral_flagged")
    full = single.per_ranking["spectral_flagged"]  # candidates' scores; the flagged ones are their own
    assert torch.equal(single.flagged_indices, torch.arange(10)) and len(single.flagged_scores) == 10
    combined = rank_features(features, torch.arange(300), flagged,
                             params={"combined": {"rankings": ["spectral_flagged", "embedding"]}})
    # a flagged score on the combined scale: its weighted percentile among the candidates
    assert combined.flagged_scores.min() > np.quantile(combined.scores.numpy(), 0.8)
    choice = combined.auto_k()
    assert 15 <= choice["k"] <= 45  # 30 hidden; 10 flagged samples make a rough estimate
    with pytest.raises(ValueError, match="every candidate"):
        combined.top(5).auto_k()
    assert full.shape == single.scores.shape


GRID = {
    "dataset": {"name": "synthetic", "val_size": 16},
    "recipe": {"steps": 15, "batch_size": 32},
    "manipulations": [{"name": "poison", "sizes": [40]}],
    "rates": [0.5],
    "seeds": [0],
    "methods": {"ssd": {"grid": {"alpha": [1], "lambda_ratio": [1]}}},
}


def test_grid_expand_auto_records_the_k_chosen_and_its_f1(tmp_path):
    from corrective_unlearning.runner import expand_cells, load_grid_config, run_grid

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(GRID))
    config = load_grid_config(str(path), ["expand=[auto, 0, 10]", "expand_ranking=embedding"])
    cells = expand_cells(config)
    assert [c.expand for c in cells if c.method == "ssd"] == [0, 10, "auto"]
    assert any(c.id.endswith(c.id[-8:]) and "-expandauto-embedding-ssd-" in c.id for c in cells)
    records = run_grid(config, tmp_path / "out", progress=False)
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    auto = next(r for r in records if r.get("expand") == "auto")
    block = auto["suspects"]
    assert block["k"] == block["k_chosen"] == block["auto"]["k"] and auto["forget_size"] == 20 + block["k"]
    assert block["f1"] == pytest.approx(2 * block["found"] / (block["k"] + block["undiscovered"]))
    assert "self_check" in block["auto"] and block["auto"]["reason"]
    fixed = next(r for r in records if r.get("expand") == 10)
    assert "f1" not in fixed["suspects"] and "auto" not in fixed["suspects"]  # numeric K: the block as before
    from corrective_unlearning.report.build import build_report

    build_report(tmp_path / "out")  # the auto variant sorts after the numeric ones
    from corrective_unlearning.config import ConfigError

    with pytest.raises(ConfigError, match="auto"):
        load_grid_config(str(path), ["expand=[automatic]"])


def test_correct_expand_auto_adds_the_chosen_number_and_reports_why(monkeypatch):
    from torch import nn

    from corrective_unlearning import correct
    seen = {}

    def run(task, hp):
        seen["forget"] = task.forget_idx.clone()
        return Unlearned(task.copy_original())

    monkeypatch.setitem(METHODS._entries, "probe", Method("probe", run, {}, {}, "records its task"))
    g = torch.Generator().manual_seed(0)
    images = torch.randn(160, 3, 8, 8, generator=g) * 0.3
    labels = torch.arange(160) % 4
    images[:24, :, :3, :3] += 4.0  # a "trigger" on 24 samples, all labelled 0
    labels[:24] = 0
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 4))
    flagged = list(range(8))
    _, report = correct(model, (images, labels), flagged, method="probe", expand="auto", ranking="embedding",
                        device="cpu")
    block = report["suspects"]
    assert block["k"] == block["auto"]["k"] == block["added"] == len(seen["forget"]) - 8
    assert block["auto"]["reason"]
    with pytest.raises(ValueError, match="or 'auto'"):
        correct(model, (images, labels), flagged, method="probe", expand="all", device="cpu")
    assert _expand_arg("auto") == "auto" and _expand_arg("7") == 7
    with pytest.raises(ValueError, match="--expand"):
        _expand_arg("-1")
