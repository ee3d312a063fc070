"""Hyperparameter selection without peeking at the manipulation (paper 1, SPEC section 8).

Records are grouped by (dataset, model, manipulation variant, size, rate or forget set, seed, method); each group
holds one record per hyperparameter setting. Two rules pick a setting per group without test data, and a third, the
oracle, peeks:

* **paper rule** (``selected``, the default for reproduction recipes): the best equal-weight average of deletion
  change on S_f and validation accuracy (a held-out split of the training data, never the test set).
* **guarded rule** (``guarded``): the paper rule restricted to the settings whose validation accuracy is at most
  ``max_val_drop`` points (default 2, inclusive) below the original model's (the ``original`` record of the same
  dataset, model, manipulation variant, size and seed). The paper rule happily picks collapsed models: a model
  at chance flips all of S_f (deletion change 100), which outweighs a validation accuracy near chance. Each
  member of a group gets ``guard``, which says how the guarded choice was made:

  - ``"within"``: some setting is within the drop; the guarded pick is the best paper score among them.
  - ``"fallback"``: no setting is within the drop; the guarded pick is the setting with the highest validation
    accuracy (the one that kept most of the model), and the report says so.
  - ``"no reference"``: the original's validation accuracy is unknown (no finished ``original`` record, or its
    val_acc is null), so no drop can be measured and **no** setting of the group is marked ``guarded``; the
    report shows n/a for it and says so.

* **oracle** (``oracle``): the best clean-label accuracy on the affected test domain. It peeks at test data: an
  upper bound, never a result.

A setting whose val_acc is null ranks last in both rules and is never within the drop.

Ties, in both rules: equal scores go to the higher validation accuracy, then to the setting that comes first in
the method's grid (``setting_index``), never to file or record order. Records written before ``setting_index``
existed fall back to their order in the list given (:func:`corrective_unlearning.report.build.build_report`
first restores the grid order from the run's ``config.yaml`` where it can).

Without validation data (``dataset.val_size=0``) every paper score is -inf and a pick would be arbitrary, so
:func:`mark_selection` refuses with :class:`NoValidationDataError` instead of choosing silently.
"""
from __future__ import annotations

import math
from collections import defaultdict

from .records import upgrade

ORIGINAL = "original"  # the method name of the original model's records (as in grid.ORIGINAL)
# forget_set: a forget set's label (grid key forget_sets, rate 1.0); "" for rate-based cells and older records
# expand: the top-K suspects added to S_f (grid key expand); 0 for cells without and for older records
GROUP_KEYS = ("dataset", "model", "manipulation_variant", "n", "rate", "forget_set", "expand", "seed", "method")
DEFAULT_MAX_VAL_DROP = 2.0

WITHIN, FALLBACK, NO_REFERENCE = "within", "fallback", "no reference"


class NoValidationDataError(ValueError):
    """A group of settings has no validation accuracy, so no setting can be selected without test data."""

    def __init__(self, group: dict, count: int, groups: int):
        self.group = group
        others = f" (and {groups - 1} more group(s) like it)" if groups > 1 else ""
        super().__init__(
            f"no hyperparameter selection is possible for {group_label(group)}{others}: none of its {count} "
            f"setting(s) has a validation accuracy (val_acc is null), and selection scores settings on validation "
            f"data, never on test data. Run the grid with a validation split: dataset.val_size must be > 0.")


def manipulation_variant(record: dict) -> str | None:
    """The manipulation with its params (e.g. ``poison {"target":3}``) of an upgraded record
    (:func:`~corrective_unlearning.records.upgrade` gives older records, which only name the manipulation, one)."""
    return record["manipulation_variant"]


def group_key(record: dict) -> tuple:
    """The selection group of an upgraded record (see :data:`GROUP_KEYS`)."""
    return tuple(record.get(k) for k in GROUP_KEYS)


def group_label(group: dict) -> str:
    return (f"{group.get('dataset')} / {group.get('model')} / {group.get('manipulation_variant')}, "
            f"n = {group.get('n')}, seed {group.get('seed')}, "
            + (f"forget set {group['forget_set']}" if group.get("forget_set") else f"rate {group.get('rate')}")
            + f", method {group.get('method')}")


def _number(value) -> float:
    """Records store NaN as null; both rank last."""
    return -math.inf if value is None or math.isnan(value) else float(value)


def _has(value) -> bool:
    return value is not None and not math.isnan(value)


def selection_score(metrics: dict) -> float:
    return (_number(metrics.get("deletion_change")) + _number(metrics.get("val_acc"))) / 2


def _grid_position(record: dict, position: int) -> tuple[int, int]:
    """The setting's place in the method's grid; without ``setting_index`` (older records), the record order."""
    index = record.get("setting_index")
    return (0, int(index), position) if index is not None else (1, position, position)


def _selection_key(item: tuple[int, dict]) -> tuple:
    """The score, then validation accuracy, then grid order (earlier wins, hence the minus): on a tie, a model
    that wrecked its utility to flip S_f (deletion change 100, validation 26.5) loses to one that flipped part of
    S_f and kept its utility (41.7, 84.8). Both score 63.25; this tie happened on the Fashion-MNIST SSD grid."""
    position, record = item
    return (record["selection_score"], _number(record["metrics"].get("val_acc")),
            tuple(-p for p in _grid_position(record, position)))


def _fallback_key(item: tuple[int, dict]) -> tuple:
    position, record = item
    return (_number(record["metrics"].get("val_acc")), record["selection_score"],
            tuple(-p for p in _grid_position(record, position)))


def _oracle_key(item: tuple[int, dict]) -> tuple:
    position, record = item
    return _number(record["metrics"].get("affected_acc")), tuple(-p for p in _grid_position(record, position))


def _check_drop(max_val_drop: float) -> float:
    try:
        drop = float(max_val_drop)
    except (TypeError, ValueError):
        drop = math.nan
    if not (math.isfinite(drop) and drop >= 0):
        raise ValueError(f"max_val_drop must be a finite number of accuracy points >= 0, got {max_val_drop!r}")
    return drop


def original_val_acc(records: list[dict]) -> dict[tuple, float]:
    """(dataset, model, manipulation variant, n, seed) -> the original model's validation accuracy, where known."""
    reference = {}
    for record in records:
        if record.get("method") == ORIGINAL and _has((record.get("metrics") or {}).get("val_acc")):
            reference[_setting_seed(record)] = float(record["metrics"]["val_acc"])
    return reference


def _setting_seed(record: dict) -> tuple:
    return (record.get("dataset"), record.get("model"), manipulation_variant(record), record.get("n"),
            record.get("seed"))


def mark_selection(records: list[dict], max_val_drop: float = DEFAULT_MAX_VAL_DROP) -> list[dict]:
    """Return copies of the ok records, each with its ``selection_score``, the flags ``selected`` (paper rule),
    ``guarded`` (guarded rule) and ``oracle``, and ``guard`` (how the guarded choice was made; None for the
    original). See the module docstring for the rules and ties.

    Original-model records are always selected, guarded and oracle (they have no hyperparameters) and need no
    validation data. Raises :class:`NoValidationDataError` (a ValueError) when a method's group has no
    validation accuracy at all, and ValueError for a negative or non-finite ``max_val_drop``.
    """
    drop = _check_drop(max_val_drop)
    ok = [upgrade(r) for r in records if r.get("status") == "ok"]  # copies, in the current record version
    for record in ok:
        record["metrics"] = record.get("metrics") or {}
    groups: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)
    for position, record in enumerate(ok):
        groups[group_key(record)].append((position, record))
    blind = [(key, members) for key, members in groups.items() if key[-1] != ORIGINAL
             and not any(_has(r["metrics"].get("val_acc")) for _, r in members)]
    if blind:
        key, members = blind[0]
        raise NoValidationDataError(dict(zip(GROUP_KEYS, key)), len(members), len(blind))
    reference = original_val_acc(ok)
    for key, members in groups.items():
        for _, record in members:
            record["selection_score"] = selection_score(record["metrics"])
            record["selected"] = record["oracle"] = record["guarded"] = False
            record["guard"] = None
        if key[-1] == ORIGINAL:
            for _, record in members:
                record["selected"] = record["oracle"] = record["guarded"] = True
            continue
        max(members, key=_selection_key)[1]["selected"] = True
        max(members, key=_oracle_key)[1]["oracle"] = True
        floor = reference.get(_setting_seed(members[0][1]))
        if floor is None:
            guard, pick = NO_REFERENCE, None
        else:
            floor -= drop + 1e-9  # inclusive; accuracies are printed with two decimals
            eligible = [m for m in members if _number(m[1]["metrics"].get("val_acc")) >= floor]
            guard = WITHIN if eligible else FALLBACK
            pick = max(eligible, key=_selection_key) if eligible else max(members, key=_fallback_key)
        for _, record in members:
            record["guard"] = guard
        if pick is not None:
            pick[1]["guarded"] = True
    return ok
