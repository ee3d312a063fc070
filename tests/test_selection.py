"""Hyperparameter selection: the paper's rule, the guarded rule, ties and the refusal without validation data.
Every expected pick below is worked out by hand in the comments."""
from __future__ import annotations

import pytest

from corrective_unlearning.selection import NoValidationDataError, mark_selection


def _record(dc, val, affected=0.0, index=None, method="ssd", rate=0.5, variant="poison", seed=0, **extra):
    record = {"status": "ok", "dataset": "d", "model": "m", "manipulation": "poison", "n": 10, "rate": rate,
              "seed": seed, "method": method, "hparams": {"i": index},
              "metrics": {"deletion_change": dc, "val_acc": val, "affected_acc": affected}, **extra}
    if index is not None:
        record["setting_index"] = index
    if variant is not None:
        record["manipulation_variant"] = variant
    return record


def _original(val, variant="poison", seed=0):
    record = _record(None, val, method="original", rate=0.0, variant=variant, seed=seed, index=0)
    record["hparams"] = {}
    return record


def _flags(marked, flag):
    return [r["hparams"]["i"] for r in marked if r["method"] != "original" and r[flag]]


def test_selection_rule_and_oracle():
    marked = mark_selection([_record(90, 50, 10, 0), _record(60, 90, 30, 1), _record(None, 99, 99, 2),
                             {"status": "failed"}])
    assert len(marked) == 3
    assert [r["selected"] for r in marked] == [False, True, False]  # (60 + 90)/2 > (90 + 50)/2; null ranks last
    assert [r["oracle"] for r in marked] == [False, False, True]
    assert [r["selection_score"] for r in marked][:2] == [70.0, 75.0]


def test_selection_tie_goes_to_higher_validation_accuracy_then_grid_order():
    # All three score 63.25; 84.75 beats 26.5; of the two at 84.75, setting 1 comes first in the grid.
    collapsed, healed, healed_again = _record(100, 26.5, index=0), _record(41.75, 84.75, index=1), \
        _record(41.75, 84.75, index=2)
    assert _flags(mark_selection([collapsed, healed, healed_again]), "selected") == [1]
    # Record order (e.g. file-name order) does not matter, only the grid position.
    assert _flags(mark_selection([healed_again, collapsed, healed]), "selected") == [1]
    assert _flags(mark_selection([healed_again, healed, collapsed]), "selected") == [1]


def test_records_without_setting_index_fall_back_to_record_order():
    first, second = _record(50, 80), _record(50, 80)
    first["hparams"], second["hparams"] = {"i": "a"}, {"i": "b"}
    assert [r["selected"] for r in mark_selection([second, first])] == [True, False]


def test_selection_without_validation_data_is_refused_with_the_group_named():
    records = [_original(None), _record(100, None, index=0), _record(40, None, index=1)]
    with pytest.raises(NoValidationDataError) as info:
        mark_selection(records)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "dataset.val_size must be > 0" in message
    for part in ("ssd", "poison", "n = 10", "seed 0", "rate 0.5"):
        assert part in message, part


def test_original_cells_alone_need_no_validation_data():
    (original,) = mark_selection([_original(None)])
    assert original["selected"] and original["guarded"] and original["oracle"]


def test_guarded_rule_keeps_the_validation_accuracy_within_the_drop():
    # Original validation accuracy 90, drop 2: eligible are settings with val_acc >= 88 (inclusive).
    #   0: (100 + 30) / 2   = 65     val 30   -> collapsed, not eligible
    #   1: (40 + 88.5) / 2  = 64.25  val 88.5 -> eligible
    #   2: (41 + 88) / 2    = 64.5   val 88   -> eligible (on the boundary), the best eligible score
    #   3: (60 + 87.9) / 2  = 73.95  val 87.9 -> best paper score, not eligible
    settings = [_record(100, 30, index=0), _record(40, 88.5, index=1), _record(41, 88, index=2),
                _record(60, 87.9, index=3)]
    marked = mark_selection([_original(90), *settings])
    assert _flags(marked, "selected") == [3]
    assert _flags(marked, "guarded") == [2]
    assert [r["guard"] for r in marked if r["method"] == "ssd"] == ["within"] * 4
    original = next(r for r in marked if r["method"] == "original")
    assert original["selected"] and original["guarded"] and original["guard"] is None
    # The default drop is 2 points; 10 points admits setting 3, the paper's pick.
    assert _flags(mark_selection([_original(90), *settings], max_val_drop=10), "guarded") == [3]


def test_guarded_rule_without_a_setting_within_the_drop_takes_the_highest_validation_accuracy():
    # Drop 0.5: eligible would need val_acc >= 89.5; none is, so the highest val_acc (88.5, setting 1) is taken.
    settings = [_record(100, 30, index=0), _record(40, 88.5, index=1), _record(60, 87.9, index=2)]
    marked = mark_selection([_original(90), *settings], max_val_drop=0.5)
    assert _flags(marked, "guarded") == [1]
    assert [r["guard"] for r in marked if r["method"] == "ssd"] == ["fallback"] * 3
    assert _flags(marked, "selected") == [2]  # (60 + 87.9) / 2 = 73.95 is the best paper score


def test_guarded_rule_ties_go_to_validation_accuracy_then_grid_order():
    # Both score 64.5 and are within 2 of 90: 89 beats 88; then equal copies go to the first in the grid.
    a, b, c = _record(40, 89, index=2), _record(41, 88, index=0), _record(40, 89, index=1)
    assert _flags(mark_selection([_original(90), a, b, c]), "guarded") == [1]


def test_guarded_rule_without_the_originals_validation_accuracy_picks_nothing():
    settings = [_record(100, 30, index=0), _record(40, 88.5, index=1)]
    for original in ([], [_original(None)], [{**_original(90), "status": "failed"}]):
        marked = mark_selection([*original, *settings])
        assert _flags(marked, "guarded") == []
        assert [r["guard"] for r in marked if r["method"] == "ssd"] == ["no reference"] * 2
        assert _flags(marked, "selected") == [0]  # the paper rule does not need the original: 65 > 64.25


def test_manipulation_variants_are_separate_groups():
    # Same manipulation, two variants. poison: original val 90 -> guarded needs >= 88 -> setting 1.
    # poison {"target":3}: original val 40 -> guarded needs >= 38 -> setting 0 (val 39, score 69.5) beats 1 (38.5).
    target = 'poison {"target":3}'
    records = [_original(90), _record(100, 30, index=0), _record(40, 89, index=1),
               _original(40, variant=target), _record(100, 39, index=0, variant=target),
               _record(39, 38, index=1, variant=target)]
    marked = mark_selection(records)
    by_variant = {v: [r for r in marked if r["manipulation_variant"] == v and r["method"] == "ssd"]
                  for v in ("poison", target)}
    assert [r["selected"] for r in by_variant["poison"]] == [True, False]  # 65 > 64.5
    assert [r["guarded"] for r in by_variant["poison"]] == [False, True]
    assert [r["selected"] for r in by_variant[target]] == [True, False]  # 69.5 > 38.5
    assert [r["guarded"] for r in by_variant[target]] == [True, False]


def test_records_without_a_variant_fall_back_to_the_manipulation():
    records = [_original(90, variant=None), _record(100, 30, index=0, variant=None),
               _record(40, 89, index=1, variant=None)]
    assert _flags(mark_selection(records), "guarded") == [1]


@pytest.mark.parametrize("drop", [-1, float("nan"), float("inf")])
def test_max_val_drop_must_be_a_finite_non_negative_number(drop):
    with pytest.raises(ValueError, match="max_val_drop"):
        mark_selection([_original(90)], max_val_drop=drop)
