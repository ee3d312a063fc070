"""A run's records in: read from ``<results>/records``, upgraded to the current record version
(:func:`~corrective_unlearning.records.upgrade`, with the grid order of the run's ``config.yaml``), each expanded
deletion set named as a method of its own; and what the run's config says about the report's order."""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import read_yaml
from ..forget_sets import parse_forget_sets
from ..methods import hparams_key
from ..records import Record, SettingIndex, upgrade
from ..runner.spec import ORIGINAL, GridConfig
from ..runner.store import read_records


def unmarked(records: list[dict]) -> list[dict]:
    """The ok records without any selection: flags unknown (empty in the CSV)."""
    return [{**r, "metrics": r.get("metrics") or {}, "selected": None, "guarded": None, "oracle": None,
             "guard": None, "selection_score": None} for r in records if r.get("status") == "ok"]


def expanded_as_method(record: dict) -> dict:
    """A cell whose deletion set was grown by K suspects (grid option expand) is its own line in every table and
    figure, ``<method> +K suspects``: averaging it with the plain cells of its rate would mix two deletion sets."""
    k = record.get("expand") or 0
    if not k or record.get("method") in (None, ORIGINAL):
        return record
    return {**record, "method": f"{record['method']} +{k} suspects", "base_method": record["method"]}


def _expand_order(variant: tuple) -> tuple:
    """Expanded variants of a method: fixed sizes ascending, then ``auto``."""
    expand, label = variant
    return ((1, 0) if expand == "auto" else (0, expand)), label


def method_order(records: list[dict], results_dir: Path) -> list[str]:
    """``original``, then the methods in the order of ``config.yaml`` (the grid's order), each followed by its
    expanded variants (``<method> +K suspects``, K ascending), then any others A-Z."""
    config = results_dir / "config.yaml"
    configured = list(read_yaml(config).get("methods") or []) if config.exists() else []
    present = {r.get("method") for r in records} - {None}
    variants = {}
    for r in records:
        if r.get("base_method"):
            variants.setdefault(r["base_method"], set()).add((r["expand"], r["method"]))
    listed = [ORIGINAL]
    for name in configured:
        listed += [name, *(label for _, label in sorted(variants.get(name, ()), key=_expand_order))]
    return [m for m in listed if m in present] + sorted(present - set(listed))


def load_run(results_dir: Path) -> list[Record]:
    """The records of the stored config's cells (the others are counted and said on stderr), upgraded, with each
    expanded deletion set as a method of its own; a ValueError when there are none."""
    loaded = read_records(results_dir, config_only=True)
    for note in loaded.notes(results_dir):
        print(note, file=sys.stderr)
    order = grid_order(results_dir)
    records = [expanded_as_method(upgrade(r, order)) for r in loaded.records]
    if not records:
        raise ValueError(f"no records in {results_dir / 'records'}"
                         + (f" of the cells of its config.yaml ({len(loaded.ignored)} of other cells ignored)"
                            if loaded.ignored else "") + f": run the grid with --out {results_dir} first")
    return records


def grid_order(results_dir: Path) -> SettingIndex:
    """The grid's order of each method's settings, from the run's ``config.yaml``: for records written before
    ``setting_index`` existed, so selection ties go to grid order, not to file-name order. A setting the config
    does not list (or a config that is absent or no longer parses) has no index: its ties fall back to record
    order. The config is read on first use: a run whose records all have their index never reads it."""
    config = results_dir / "config.yaml"
    methods: list[dict] = []
    orders: dict[str, dict[str, int]] = {}

    def index(method: str, hparams: dict) -> int | None:
        if not methods:
            methods.append(_configured_methods(config))
        if method not in orders:
            orders[method] = _setting_order(methods[0], method)
        return orders[method].get(hparams_key(hparams))

    return index


def _configured_methods(config: Path) -> dict:
    if not config.exists():
        return {}
    try:
        return dict(read_yaml(config).get("methods") or {})
    except (ValueError, TypeError, AttributeError):
        return {}


def _setting_order(methods: dict, name: str) -> dict[str, int]:
    """hparams key -> position of ``name``'s settings in the grid ({} for a method the grid does not have)."""
    if name == ORIGINAL or name not in methods:
        return {}
    try:
        settings = GridConfig(methods=methods).method_settings(name)
    except (ValueError, KeyError, TypeError, AttributeError):  # a stale or foreign config
        return {}
    return {hparams_key(s): i for i, s in enumerate(settings)}


def configured_forget_sets(results_dir: Path) -> list[str]:
    """The forget-set labels of the run's ``config.yaml``, in its order ([] without one, or when it is stale)."""
    config = results_dir / "config.yaml"
    try:
        entries = read_yaml(config).get("forget_sets") if config.exists() else None
        return [spec.label for spec in parse_forget_sets(entries)] if entries else []
    except (ValueError, TypeError, AttributeError):
        return []
