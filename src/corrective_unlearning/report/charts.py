"""The report's figures: paper 1's Figures 2-7 (one per manipulation variant and view, a panel per size) and ToW per
memorization level (RUM's study)."""
from __future__ import annotations

import re
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..runner.spec import ORIGINAL
from ..selection import DEFAULT_MAX_VAL_DROP
from .figures import Curve, plot_levels, plot_metric
from .seeds import seeds_phrase
from .study import LEVEL_ORDER, study_metrics, study_rows, study_values
from .views import TOW_BASELINES, VIEWS, choice_line, forget_set_of, rate_curve, seed_curve, seed_values, setting_of


def file_stems(groups: list[tuple]) -> dict[tuple, str]:
    """A file-name stem per (dataset, model, manipulation variant): the variant with every run of other characters
    than letters, digits, ``_.=`` turned into ``-`` (``poison {"target":3}`` -> ``poison-target-3``), prefixed
    by dataset and model when there are several; a checksum is appended where two variants would collide."""
    multi = len({g[:2] for g in groups}) > 1

    def slug(text) -> str:
        return re.sub(r"[^A-Za-z0-9_.=]+", "-", str(text)).strip("-") or "manipulation"

    stems = {g: "-".join(slug(part) for part in (g if multi else g[2:])) for g in groups}
    clashes = Counter(stems.values())
    return {g: stem if clashes[stem] == 1 else f"{stem}-{zlib.crc32(str(g[2]).encode()):08x}"
            for g, stem in stems.items()}


def write_figures(marked: list[dict], methods: list[str], fig_dir: Path,
                  max_val_drop: float = DEFAULT_MAX_VAL_DROP) -> list[Path]:
    """One figure per manipulation variant and view, one panel per manipulation size."""
    groups = sorted({setting_of(r)[:3] for r in marked}, key=lambda g: tuple(map(str, g)))
    stems = file_stems(groups)
    values = [seed_values(marked, flag, metric) for metric, flag, _, _ in VIEWS]
    paths = []
    for group in groups:
        dataset, model, variant = group
        for (metric, flag, suffix, description), by_setting in zip(VIEWS, values):
            if metric in TOW_BASELINES:
                continue  # summary tables only: its original line would vary with the rate
            panels = {setting[3]: _panel(by_setting[setting], methods) for setting in by_setting
                      if setting[:3] == group}
            panels = {n: curves for n, curves in panels.items() if curves}
            if panels:
                plotted = [v for setting in by_setting if setting[:3] == group
                           for by_rate in by_setting[setting].values() for v in by_rate.values()]
                heading = (f"{dataset} / {model}, {variant}\n{description}\n{choice_line(flag, max_val_drop)}\n"
                           f"{seeds_phrase(plotted)}")
                paths.append(plot_metric(panels, fig_dir / f"{stems[group]}-{suffix}.png", heading))
    return paths


def _panel(by_method: dict, methods: list[str]) -> dict[str, Curve]:
    curves = {m: rate_curve(by_method[m]) for m in methods if m in by_method}
    return {m: c for m, c in curves.items() if c is not None}


def write_level_figures(marked: list[dict], methods: list[str], fig_dir: Path) -> list[Path]:
    """ToW per memorization level: per setting, memorization proxy and size, one figure per ToW metric present;
    x = the levels present (low, medium, high, mixed), one line per row of the study tables (the original
    dashed), mean over seeds with the 95% CI band."""
    study = [r for r in marked if forget_set_of(r) and r["method"] != ORIGINAL]
    levels = defaultdict(dict)  # (setting, by, size) -> level -> label
    for record in study:
        spec = record.get("forget_set_info") or {}
        if spec.get("kind") == "memorization" and spec.get("level") in LEVEL_ORDER:
            levels[(setting_of(record), spec["by"], spec.get("size"))][spec["level"]] = forget_set_of(record)
    if not levels:
        return []
    stems = file_stems(sorted({key[0][:3] for key in levels}, key=lambda g: tuple(map(str, g))))
    paths = []
    for metric, heading, value, references in study_metrics(study):
        if metric not in TOW_BASELINES:
            continue
        values = study_values(study, methods, value, references)
        _, rows = study_rows(study, methods)
        for (setting, by, size), found in sorted(levels.items(), key=lambda item: str(item[0])):
            present = [level for level in LEVEL_ORDER if level in found]
            curves, plotted = {}, []
            for name in [ORIGINAL, *rows]:
                points = [(x, values[setting][name].get(found[level], [])) for x, level in enumerate(present)]
                points = [(x, v) for x, v in points if v]
                if points:
                    curves[name] = seed_curve(np.array([x for x, _ in points], dtype=float), [v for _, v in points])
                    plotted += [v for _, v in points]
            if not curves:
                continue
            dataset, model, variant, n = setting
            title = (f"{dataset} / {model}, {variant} (n = {n}): {heading}\nforget sets of {size} samples by "
                     f"{by} memorization level; {seeds_phrase(plotted)}")
            name = f"{stems[setting[:3]]}-n{n}-{metric.replace('_', '-')}-by-{by}-level-{size}.png"
            paths.append(plot_levels(curves, present, fig_dir / name, title, ylabel=f"{metric} (%)"))
    return paths
