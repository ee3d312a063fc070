"""The projected wall time of the full paper grid from measured cells."""
from __future__ import annotations

import numpy as np

from .spec import ORIGINAL, GridConfig


def projection(config: GridConfig, records: list[dict]) -> str:
    """Projected wall time of the full paper grid for this config's methods and grids, from measured cells."""
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return "projection: no finished cells to measure"
    p = {"sizes": 3, "rates": 10, "seeds": 1, **config.projection}
    lines = [f"measured mean seconds per cell (method + evaluation), and the projection for the full grid "
             f"({p['sizes']} sizes x {p['rates']} rates x {p['seeds']} seed(s) x each manipulation):"]
    total = 0.0
    manipulations = len(config.manipulation_grids())
    deletion_sets = len(config.forget_set_specs()) or p["rates"]
    if config.forget_sets:
        lines[0] = lines[0].replace(f"{p['rates']} rates", f"{deletion_sets} forget sets")
    for method in [ORIGINAL, *config.methods]:
        times = [r["timings"]["method_seconds"] + r["timings"]["eval_seconds"] for r in ok if r["method"] == method]
        if not times:
            continue
        per_cell = float(np.mean(times))
        count = manipulations * p["sizes"] * p["seeds"] * (
            1 if method == ORIGINAL else deletion_sets * len(config.method_settings(method)))
        total += per_cell * count
        lines.append(f"  {method:10s} {per_cell:8.2f} s/cell x {count:5d} cells = {per_cell * count / 60:7.1f} min")
    lines.append(f"  projected total: {total / 3600:.2f} h")
    return "\n".join(lines)
