"""What the report shows and how it keys records: the views (metric x rule), the setting of a record, which records
the rate tables hold, and the seed aggregation behind every table and figure (mean, std and 95% CI over seeds)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..runner.spec import ORIGINAL
from .figures import Curve
from .seeds import format_entry, seed_stats


ORACLE_NOTE = "oracle (peeks at test data: an upper bound, not a result)"

# (metric, which choice of hyperparameters, figure file suffix, what the metric measures): each is one summary
# section and one figure per manipulation variant. Paper 1, Table 1: Figures 2/4, 5/6 and 3/7. The first is the
# headline (print_summary shows it).
VIEWS = [
    ("affected_acc", "selected", "affected", "clean-label accuracy on the affected test domain D_m"),
    ("manipulated_acc", "selected", "manipulated", "clean-label accuracy on the manipulated training samples S_m"),
    ("utility_acc", "selected", "utility", "utility (accuracy on the unaffected test domain)"),
    ("affected_acc", "guarded", "affected-guarded", "clean-label accuracy on the affected test domain D_m"),
    ("manipulated_acc", "guarded", "manipulated-guarded",
     "clean-label accuracy on the manipulated training samples S_m"),
    ("utility_acc", "guarded", "utility-guarded", "utility (accuracy on the unaffected test domain)"),
    ("affected_acc", "oracle", "affected-oracle", "clean-label accuracy on the affected test domain D_m"),
    # RUM's ToW (grid option ``tow``): sections only where the records have it, no figures (see TOW_BASELINES).
    ("tow_retrain", "selected", "tow-retrain",
     "ToW against the retrained model (RUM's reference; A_f on S_f's given labels)"),
    ("tow_clean", "selected", "tow-clean",
     "ToW against the clean oracle (every manipulation undone; A_f on S_f's given labels)"),
]
# Without validation data: every setting of the headline metric and of utility.
EVERY_SETTING_VIEWS = [VIEWS[0], VIEWS[2]]
# ToW metric -> the metric of the same deletion set's records that holds the *original* model's ToW there: unlike
# the other metrics it depends on the deletion set, so the original row of a ToW table shows it per rate.
TOW_BASELINES = {"tow_retrain": "original_tow_retrain", "tow_clean": "original_tow_clean"}

Setting = tuple  # (dataset, model, manipulation variant, n)
SeedValues = dict  # setting -> method -> rate -> finite values, one per seed


def rule_name(flag: str, max_val_drop: float) -> str:
    return {"selected": "paper rule",
            "guarded": f"guarded rule (validation accuracy at most {max_val_drop:g} points below the original's)",
            "oracle": ORACLE_NOTE}[flag]


def choice_line(flag: str, max_val_drop: float) -> str:
    """A figure's line saying how its hyperparameters were chosen."""
    return {"selected": "paper rule: hyperparameters selected without test data (best deletion change + val. acc.)",
            "guarded": f"guarded rule: the paper rule among settings within {max_val_drop:g} points of the "
                       f"original's validation accuracy (none within: the highest validation accuracy)",
            "oracle": "ORACLE hyperparameters, chosen on test data: an upper bound, not a result"}[flag]


def title(text: str) -> str:
    return text[0].upper() + text[1:]


def finite(value) -> float | None:
    """Records store NaN as null; tables and means treat both as missing."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


def setting_of(record: dict) -> Setting:
    return record.get("dataset"), record.get("model"), record["manipulation_variant"], record["n"]


def setting_order(setting: Setting) -> tuple:
    dataset, model, variant, n = setting
    return str(dataset), str(model), str(variant), n if n is not None else -1


def setting_label(setting: Setting, multi: bool) -> str:
    dataset, model, variant, n = setting
    return f"{variant}, n = {n}" + (f" ({dataset} / {model})" if multi else "")


def forget_set_of(record: dict) -> str:
    """The forget set's label of an (upgraded) record; "" for a rate-based cell."""
    return record["forget_set"]


def rate_based(marked: list[dict]) -> list[dict]:
    """The records of the rate tables: every record but those of forget-set cells (originals included)."""
    return [r for r in marked if not forget_set_of(r)]


def has_rate_cells(marked: list[dict]) -> bool:
    """Whether the rate tables have anything to show: any rate-based method cell, or no forget-set cell at all."""
    return (not any(forget_set_of(r) for r in marked)
            or any(r["method"] != ORIGINAL and not forget_set_of(r) for r in marked))


def rates_of(marked: list[dict], setting: Setting) -> list[float]:
    return sorted({r["rate"] for r in marked if setting_of(r) == setting and r["method"] != ORIGINAL})


def seed_values(marked: list[dict], flag: str, metric: str) -> SeedValues:
    """The ``flag`` (selected, guarded or oracle) cells' finite values of ``metric``, grouped by setting, method and
    rate. A rate whose cells have no chosen setting, or whose metric is missing, leaves an empty list, so the table
    shows n/a rather than nothing."""
    values: SeedValues = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in marked:
        bucket = values[setting_of(record)][record["method"]][record["rate"]]
        value = finite(record["metrics"].get(metric))
        if record.get(flag) and value is not None:
            bucket.append(value)
    return values


def rate_curve(by_rate: dict[float, list[float]]) -> Curve | None:
    points = sorted((rate, values) for rate, values in by_rate.items() if values)
    if not points:
        return None
    return seed_curve(np.array([rate for rate, _ in points]), [values for _, values in points])


def seed_curve(xs: np.ndarray, values: list[list[float]]) -> Curve:
    """Mean over seeds at each x, with the 95% confidence interval of the mean as its band (NaN: one seed)."""
    stats = [seed_stats(v) for v in values]
    return Curve(rates=xs, mean=np.array([s.mean for s in stats]), lo=np.array([s.lo for s in stats]),
                 hi=np.array([s.hi for s in stats]), seeds=np.array([s.n for s in stats]))


def mean_std(values: list[float] | None, seeds: int | None = None) -> str:
    """mean ± std [95% CI] over seeds (see :mod:`.seeds`); "" for a cell not in the grid, n/a for no value."""
    return format_entry(values, seeds)


def most_seeds(groups: list) -> int:
    return max((len(v) for v in groups if v), default=0)
