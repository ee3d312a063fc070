"""Configs written before triggers were a registry keep their cell ids and original-model cache keys: a finished
grid resumes and a cached original is found. The expected values were computed by tests/data/legacy_keys.py with
the code of commit 3651791 (before the trigger registry)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"


def test_old_configs_keep_their_cell_ids_and_cache_keys():
    sys.path.insert(0, str(DATA))
    try:
        from legacy_keys import legacy_keys
    finally:
        sys.path.remove(str(DATA))
    expected = json.loads((DATA / "legacy_keys.json").read_text())
    root = Path(__file__).resolve().parents[1]
    assert legacy_keys([root / path for path in expected]) == expected
