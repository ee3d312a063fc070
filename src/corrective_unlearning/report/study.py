"""RUM's study (grid key ``forget_sets``): tables by forget set (ToW, forget and test accuracy) and the forget sets'
measured ES and proxy ranges."""
from __future__ import annotations

import json
import zlib
from collections import Counter, defaultdict

from ..methods import METHODS, hparams_key
from ..runner.spec import ORIGINAL
from .rates import tow_intro
from .seeds import seeds_note
from .views import (TOW_BASELINES, Setting, finite, forget_set_of, mean_std, most_seeds, setting_label, setting_of,
                    setting_order, title)


LEVEL_ORDER = ("low", "medium", "high", "mixed")
RUM = "rum"


def rum_label(hparams: dict) -> str:
    """A row name for one RUM setting: ``rum none>cf>salun`` (full RUM, its steps low to high), ``rum^F cf``
    (one method for every subset), `` (shuffle)`` for the control, and the proxy or k where not the defaults."""
    try:
        hp = METHODS.get(RUM).resolve(hparams)
    except (KeyError, ValueError, TypeError):  # a stale record: its raw settings
        return f"{RUM} {hparams_key(hparams)}"
    name = f"{RUM}^F {hp['method']}" if hp["method"] else f"{RUM} " + ">".join(map(str, hp["steps"]))
    if hp["proxy"] != "confidence" or hp["proxy_params"]:
        name += f" [{hp['proxy']}{' ' + hparams_key(hp['proxy_params']) if hp['proxy_params'] else ''}]"
    if hp["subsets"] != 3:
        name += f" k={hp['subsets']}"
    return name + (" (shuffle)" if hp["order"] == "shuffle" else "")


def study_rows(study: list[dict], methods: list[str]) -> tuple[dict[int, str], list[str]]:
    """Which records are table rows, under which name, in which order. Every RUM setting is a row of its own (RUM,
    RUM^F and the shuffle control are different algorithms, not hyperparameters to choose among); other methods
    give one row: the paper rule's pick (without selection, a method's only setting). Returns record id -> row
    name and the row names in order (``methods``' order, RUM settings in grid order)."""
    settings = defaultdict(set)
    for record in study:
        settings[record["method"]].add(hparams_key(record.get("hparams") or {}))
    labels = {}
    for key in settings[RUM]:
        labels[key] = rum_label(json.loads(key))
    clashes = Counter(labels.values())
    labels = {k: v if clashes[v] == 1 else f"{v} #{zlib.crc32(k.encode()):08x}" for k, v in labels.items()}
    names, order = {}, {}
    for record in study:
        method = record["method"]
        if method == ORIGINAL:
            continue
        if method == RUM:
            name = labels[hparams_key(record.get("hparams") or {})]
        elif record.get("selected") or (record.get("selected") is None and len(settings[method]) == 1):
            name = method
        else:
            continue
        names[id(record)] = name
        index = record.get("setting_index")
        rank = methods.index(method) if method in methods else len(methods)
        order.setdefault(name, (rank, index if index is not None else 0, name))
    return names, sorted(order, key=order.get)


def forget_set_order(study: list[dict], setting: Setting, configured: list[str]) -> list[str]:
    """The forget sets of ``setting`` in the config's order (others after them, A-Z)."""
    found = {forget_set_of(r) for r in study if setting_of(r) == setting and forget_set_of(r)}
    rank = {label: i for i, label in enumerate(configured)}
    return sorted(found, key=lambda label: (rank.get(label, len(rank)), label))


def _reference_accuracy(record: dict, reference: str, key: str) -> float | None:
    block = (record.get("references") or {}).get(reference) or {}
    return finite((block.get("accuracies") or {}).get(key))


def study_metrics(study: list[dict]) -> list[tuple[str, str, object, list]]:
    """The tables of the study section, those the records can fill: ToW against each reference present, the
    accuracy on S_f with its given labels (A_f: 100 - deletion change), and the clean test accuracy. Each is
    (metric, heading, the value of a record, reference rows: [(row name, their value from a record)])."""
    tables = []
    for metric, reference in (("tow_retrain", "the retrained model (RUM's reference)"),
                              ("tow_clean", "the clean oracle")):
        if any(metric in r["metrics"] for r in study):
            baseline = TOW_BASELINES[metric]
            tables.append((metric, f"ToW against {reference} (`{metric}`, %)",
                           lambda r, m=metric: finite(r["metrics"].get(m)),
                           [(ORIGINAL, lambda r, b=baseline: finite(r["metrics"].get(b)))]))
    references = [(f"{name} (reference)", lambda r, n=name, k=key: _reference_accuracy(r, n, k))
                  for name in ("retrain", "clean") for key in ("forget_given",)
                  if any((r.get("references") or {}).get(name) for r in study)]
    tables.append(("forget_given", "accuracy on the forget set, its given labels (A_f = 100 - deletion change, %)",
                   lambda r: None if finite(r["metrics"].get("deletion_change")) is None
                   else 100.0 - r["metrics"]["deletion_change"],
                   [(ORIGINAL, lambda r: _reference_accuracy(r, "original", "forget_given")), *references]))
    test_refs = [(f"{name} (reference)", lambda r, n=name: _reference_accuracy(r, n, "test"))
                 for name in ("retrain", "clean") if any((r.get("references") or {}).get(name) for r in study)]
    tables.append(("test_acc", "clean test accuracy (`test_acc`, %)", lambda r: finite(r["metrics"].get("test_acc")),
                   [(ORIGINAL, lambda r: _reference_accuracy(r, "original", "test")), *test_refs]))
    return tables


def study_values(study: list[dict], methods: list[str], value, references: list) -> dict:
    """setting -> row name -> forget set -> values (one per seed): the rows of :func:`study_rows`, then the
    reference rows (each read once per forget set and seed, from any record of it)."""
    names, _ = study_rows(study, methods)
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    seen = set()
    for record in study:
        setting, label = setting_of(record), forget_set_of(record)
        if id(record) in names and (v := value(record)) is not None:
            values[setting][names[id(record)]][label].append(v)
        for name, read in references:
            key = (setting, label, record.get("seed"), name)
            if key not in seen and (v := read(record)) is not None:
                seen.add(key)
                values[setting][name][label].append(v)
    return values


def _describe_forget_sets(study: list[dict], setting: Setting, labels: list[str]) -> list[str]:
    """A table of the forget sets: rule, size, measured ES, a memorization proxy's range, distance to the
    centroid; means over seeds."""
    infos = defaultdict(dict)  # label -> seed -> forget_set_info
    for record in study:
        if setting_of(record) == setting and record.get("forget_set_info"):
            infos[forget_set_of(record)].setdefault(record.get("seed"), record["forget_set_info"])
    lines = ["| forget set | selected by | size | measured ES | proxy | proxy min | proxy mean | proxy max "
             "| distance to centroid (mean) |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for label in labels:
        seeds = list(infos.get(label, {}).values())
        if not seeds:
            lines.append(f"| {label} | n/a |  |  |  |  |  |  |  |")
            continue
        first = seeds[0]
        rule = first.get("kind", "?") + (f" ({first.get('by')})" if first.get("kind") == "memorization" else "")

        def mean(read) -> str:
            found = [v for info in seeds if (v := finite(read(info))) is not None]
            return mean_std(found) if found else "n/a"

        proxy = (first.get("proxy") or {}).get("name", "n/a")
        lines.append(f"| {label} | {rule} | {first.get('selected', first.get('size'))} | {mean(lambda i: i.get('es'))} "
                     f"| {proxy} | {mean(lambda i: (i.get('proxy') or {}).get('min'))} "
                     f"| {mean(lambda i: (i.get('proxy') or {}).get('mean'))} "
                     f"| {mean(lambda i: (i.get('proxy') or {}).get('max'))} "
                     f"| {mean(lambda i: (i.get('distance') or {}).get('mean'))} |")
    return lines


def study_sections(marked: list[dict], methods: list[str], multi: bool,
                   no_selection: Exception | None = None, configured: list[str] = ()) -> list[str]:
    """RUM's study (grid key ``forget_sets``): per setting, tables with one column per forget set (in the order of
    ``configured``, the config's labels); [] when no record has a forget set."""
    study = [r for r in marked if forget_set_of(r) and r["method"] != ORIGINAL]
    if not study:
        return []
    tables = study_metrics(study)
    _, rows = study_rows(study, methods)
    intro = ("Forget sets chosen from the trained original (grid key `forget_sets`): by a memorization proxy "
             "(low / medium / high / mixed), by entanglement (low / high) or at random; see the forget-set table "
             "below for each set's measured ES and proxy range. Rows: every RUM setting (`rum a>b>c`: full RUM, "
             "one method per subset from low to high memorization, `none` = left as it is; `rum^F m`: method m on "
             "every subset; `(shuffle)`: the random-subset control); for the other methods, the setting the paper "
             "rule picks (best (deletion change + validation accuracy) / 2; the method's only setting when it has "
             "one). `original`: the original model, doing nothing. Entries: mean ± sample standard deviation [95% "
             "confidence interval] over seeds (one seed: its value; each table says how many seeds it holds).")
    if no_selection is not None:
        intro += f" No hyperparameter selection was possible ({no_selection}); methods with several settings are " \
                 f"left out."
    lines = ["## ToW by forget set", "", intro, ""]
    for metric, heading, value, references in tables:
        values = study_values(study, methods, value, references)
        lines += [f"### {title(heading)}", ""]
        if metric in TOW_BASELINES:
            lines += tow_intro(study, metric)[:1] + [""]
        for setting in sorted(values, key=setting_order):
            labels = forget_set_order(study, setting, list(configured))
            if multi or len(values) > 1:
                lines += [f"#### {setting_label(setting, multi)}", ""]
            order = [ORIGINAL, *[n for n, _ in references if n != ORIGINAL], *rows]
            lines += ["| method | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
            names = [n for n in dict.fromkeys(order) if n in values[setting]]
            entries = [values[setting][name].get(label, []) for name in names for label in labels]
            seeds = most_seeds(entries)
            for name in names:
                lines.append(f"| {name} | " + " | ".join(mean_std(values[setting][name].get(label, []), seeds)
                                                       for label in labels) + " |")
            lines += ["", seeds_note(entries), ""]
    if not any(metric in TOW_BASELINES for metric, *_ in tables):
        lines += ["No ToW: the grid ran without `tow` (set `tow: {references: [retrain]}`).", ""]
    lines += ["## Forget sets", "",
              "How each forget set was chosen and what it is: measured ES = the entanglement score of the set "
              "against a seeded subsample of the other training samples in the original's penultimate space "
              "(higher = more entangled); proxy = a memorization proxy's range over the set (higher = more "
              "memorized; for entanglement and random sets the confidence proxy); distance = to the centroid of "
              "all training embeddings. Means over seeds.", ""]
    for setting in sorted({setting_of(r) for r in study}, key=setting_order):
        if multi or len({setting_of(r) for r in study}) > 1:
            lines += [f"### {setting_label(setting, multi)}", ""]
        lines += [*_describe_forget_sets(study, setting, forget_set_order(study, setting, list(configured))), ""]
    return lines
