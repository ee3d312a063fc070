"""Aggregation over seeds: mean, sample standard deviation and the 95% confidence interval of the mean (Student's t
with n - 1 degrees of freedom), and how many seeds an entry holds. With one seed the standard deviation and the
interval are undefined (NaN, shown as such), never zero."""
from __future__ import annotations

import math
from dataclasses import dataclass

# t_{0.975, df}: the two-sided 95% quantile of Student's t (no SciPy needed). Between tabulated df the next lower
# one is used (a slightly wider, conservative interval); above 120, the normal quantile.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
Z975 = 1.960


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    if df > 120:
        return Z975
    return T975[max(d for d in T975 if d <= df)]


@dataclass(frozen=True)
class SeedStats:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof 1); NaN for one seed
    lo: float  # 95% CI of the mean; NaN for one seed
    hi: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def seed_stats(values: list[float]) -> SeedStats:
    """Mean, sample std and 95% t-interval of ``values`` (one per seed, all finite)."""
    n = len(values)
    if n == 0:
        raise ValueError("seed_stats: no values")
    mean = math.fsum(values) / n
    if n == 1:
        return SeedStats(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * std / math.sqrt(n)
    return SeedStats(n, mean, std, mean - half, mean + half)


def format_entry(values: list[float] | None, seeds: int | None = None) -> str:
    """One table entry: ``mean ± std [lo, hi]`` (one seed: its value); ``(n=k)`` when it holds fewer seeds than
    ``seeds``, its table's count; "" for a cell not in the grid, n/a for no value."""
    if values is None:
        return ""
    if not values:
        return "n/a"
    s = seed_stats(values)
    text = f"{s.mean:.2f}" if s.n == 1 else f"{s.mean:.2f} ± {s.std:.2f} [{s.lo:.2f}, {s.hi:.2f}]"
    return text + (f" (n={s.n})" if seeds is not None and s.n < seeds else "")


def seeds_note(groups: list[list[float] | None]) -> str:
    """The line under a table saying how many seeds its entries hold and what an entry is."""
    counts = sorted({len(v) for v in groups if v})
    if not counts:
        return "_Seeds: none (no values)._"
    most = counts[-1]
    held = f"{most} seed{'s' if most > 1 else ''}" if len(counts) == 1 else \
        f"{counts[0]}-{most} seeds ((n=k) marks an entry with fewer than {most})"
    if most == 1:
        return f"_Seeds: {held} per entry: its value; standard deviation and confidence interval undefined._"
    return (f"_Seeds: {held} per entry: mean ± sample standard deviation [95% confidence interval of the mean, "
            f"Student's t, n-1 df]" + ("; an entry from one seed shows its value, its interval undefined" if
                                       counts[0] == 1 else "") + "._")


def seeds_phrase(groups: list[list[float] | None]) -> str:
    """A figure's line: how many seeds its points hold and what the band is."""
    counts = sorted({len(v) for v in groups if v})
    if not counts:
        return "no seeds"
    held = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    if counts[-1] == 1:
        return f"line: {held} seed, no interval"
    return f"line: mean over {held} seeds; band: 95% CI of the mean (t)"
