"""Finding the rest, side by side with the field's poison detectors: every suspects ranking x every manipulation.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/detectors.py --strip-n 2   # Fashion-MNIST, CPU: 43 min measured
    PYTHONPATH=src python benchmarks/detectors.py --config configs/detectors/cifar10.yaml ...   # gpu_detectors.sh

For each manipulation of ``--config`` (default configs/detectors/fashion-mnist.yaml: the eight trigger attacks,
interclass, random labels, class-dependent label noise; one seed), the original model (trained or read from the
cache) is ranked once per discovery rate of ``--rates`` (default 1% and 10%) by every registered ranking and by
three combinations: ``combined`` (the default: embedding, gradient, label_issues and the flag-aware
``spectral_flagged``, weighted by self-check), ``combined-3`` (the default before spectral_flagged existed: the
same without it) and ``combined_all`` (every ranking).
Per (manipulation, rate, ranking): the self-check (AUC of the flagged samples, scored leave-one-out, against the
candidates), the AUROC of the candidates' scores against the truth (the undiscovered S_m \\ S_f), the recall at
K = |S_m \\ S_f| (precision at that K is the same number), the K that ``k: auto`` chose and its F1, and the seconds
of the ranking (the forward pass that makes the features is counted once, apart).

The detectors (spectral, activation_clustering, scan, strip, outlier) and label_issues do not read the flagged
set: their scores are computed once per manipulation and reused at every rate (their seconds are those of that
one computation; STRIP draws its blend partners among the unflagged samples of the first rate). Results go to
``--out`` (results.json) and the tables to stdout and ``--doc`` (default docs/detectors.md, between markers).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from corrective_unlearning.config import read_yaml
from corrective_unlearning.data import load_dataset
from corrective_unlearning.experiment import build_setting, train_original
from corrective_unlearning.report.tables import markdown_table
from corrective_unlearning.runner import deletion_set, load_grid_config
from corrective_unlearning.runtime import Runtime
from corrective_unlearning.suspects import (
    COMBINED,
    DEFAULT_COMBINED,
    RANKINGS,
    features_of,
    rank_features,
    self_check,
)
from corrective_unlearning.suspects.auto import f1_against

FLAG_FREE = {"spectral", "activation_clustering", "scan", "strip", "outlier", "label_issues"}
BEGIN, END = "<!-- detectors table: begin -->", "<!-- detectors table: end -->"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/detectors/fashion-mnist.yaml")
    p.add_argument("--rates", default="0.01,0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated positions (0-based) in the config's manipulations")
    p.add_argument("--strip-n", type=int, default=4, help="STRIP's blends per sample (the paper: 100; its cost on "
                                                          "a shared CPU: n forward passes per sample)")
    p.add_argument("--out", default="results/detectors-fm")
    p.add_argument("--doc", default="docs/detectors.md", help="write the tables there between markers ('' = no)")
    p.add_argument("--n", type=int, default=0, help="every manipulation's size (smoke tests; 0 = the config's)")
    p.add_argument("--subsample", type=int, default=0,
                   help="rank S_m and this many other training samples only (smoke tests; 0 = every sample)")
    p.add_argument("--tables-only", action="store_true",
                   help="print (and write into --doc) the tables of an earlier run's --out/results.json")
    p.add_argument("--healing", default=None, metavar="RESULTS",
                   help="only print (and write into --doc) the healing table of a 'corrective run' of the config "
                        "(expand: [0, auto]) from its records, e.g. results/detectors-heal")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", help="grid overrides, e.g. recipe.steps=10")
    return p.parse_args()


class Memo:
    """Every ranking's scores computed once per (manipulation, flagged set), flag-free ones once per manipulation,
    with their seconds: the registry's entries are wrapped for this process (rank_features then reuses them for
    each single ranking and each combination)."""

    def __init__(self):
        self.key, self.cache, self.seconds = None, {}, {}
        for name, spec in RANKINGS.items():
            RANKINGS._entries[name] = dataclasses.replace(spec, score=self._wrap(name, spec.score))

    def _wrap(self, name, fn):
        def score(features, flagged, *, seed, notes, **params):
            key = (self.key, name, json.dumps(params, sort_keys=True),
                   None if name in FLAG_FREE else bytes(np.packbits(np.asarray(flagged, dtype=bool))))
            if key not in self.cache:
                start = time.perf_counter()
                self.cache[key] = fn(features, flagged, seed=seed, notes=notes, **params)
                self.seconds[(self.key, name)] = time.perf_counter() - start
                print(f"  {self.key}: {name} {self.seconds[(self.key, name)]:.1f} s", flush=True)
            return self.cache[key]
        return score


def label(m: dict) -> str:
    p = m.get("params") or {}
    if m["name"] == "poison":
        trigger = (p.get("trigger") or {}).get("name") or "patch"
        extra = " all-to-all" if p.get("target") == "all-to-all" else ""
        extra += " clean-label" if p.get("clean_label") else ""
        return f"{trigger}{extra}"
    return m["name"].replace("_", " ")


HEAL_BEGIN, HEAL_END = "<!-- detectors healing: begin -->", "<!-- detectors healing: end -->"


def healing(results_dir: str, doc: str | None) -> str:
    """Per manipulation and method at each rate: the guarded selection's healed accuracies without (K = 0) and with
    the top suspects (K auto), the K chosen and its precision / recall / F1 against S_m \\ S_f."""
    from corrective_unlearning.runner import load_records
    from corrective_unlearning.selection import mark_selection

    records = [r for r in mark_selection(load_records(results_dir)) if r.get("status") == "ok"]
    rows = []
    variants = list(dict.fromkeys(r.get("manipulation_variant") or r["manipulation"] for r in records))
    for variant in variants:
        mine = [r for r in records if (r.get("manipulation_variant") or r["manipulation"]) == variant]
        name, _, params = variant.partition(" ")
        title = label({"name": name, "params": json.loads(params) if params else {}})
        for r in [r for r in mine if r["method"] == "original"][:1]:
            m = r["metrics"]
            rows.append([title, "original", "", "", "", f"{m['affected_acc']:.1f} / {m['manipulated_acc']:.1f} / "
                                                       f"{m['utility_acc']:.1f}", "", ""])
        for method in dict.fromkeys(r["method"] for r in mine if r["method"] != "original"):
            for rate in sorted({r["rate"] for r in mine if r["method"] == method}):
                cells = {}
                for k in (0, "auto"):
                    chosen = [r for r in mine if r["method"] == method and r["rate"] == rate
                              and (r.get("expand") or 0) == k and r.get("guarded")]
                    cells[k] = chosen[0] if chosen else None
                plain, grown = cells[0], cells["auto"]
                fmt = (lambda r: "" if r is None else f"{r['metrics']['affected_acc']:.1f} / "  # noqa: E731
                       f"{r['metrics']['manipulated_acc']:.1f} / {r['metrics']['utility_acc']:.1f}")
                s_ = (grown or {}).get("suspects") or {}
                rows.append([title, method, f"{rate:.0%}", s_.get("k", ""),
                             "" if not s_ else f"{s_['precision']:.2f} / {s_['recall']:.2f} / {s_.get('f1', float('nan')):.2f}",
                             fmt(plain), fmt(grown), "" if not s_ else f"{s_['auto']['self_check']:.3f}"])
    text = ("#### healing: K = 0 against K auto (combined), guarded selection; healed test / healed S_m / utility, "
            "accuracies in % on clean labels\n\n" +
            markdown_table(["manipulation", "method", "rate", "auto K", "P / R / F1 of the K", "K = 0", "K auto",
                            "self-check"], rows))
    if doc:
        write_between(Path(doc), HEAL_BEGIN, HEAL_END, text, empty="")
    return text


def main() -> None:
    args = parse()
    if args.healing:
        print(healing(args.healing, args.doc or None))
        return
    if args.tables_only:
        results = json.loads((Path(args.out) / "results.json").read_text())
        rates = sorted({r["rate"] for r in results})
        names = list(dict.fromkeys(r["ranking"] for r in results))
        print(report(results, rates, names, args.doc or None))
        return
    raw = read_yaml(args.config)
    manipulations = raw["manipulations"]
    if args.only:
        manipulations = [manipulations[int(i)] for i in args.only.split(",")]
    if args.n:
        manipulations = [{**m, "sizes": [args.n]} for m in manipulations]
    rates = [float(r) for r in args.rates.split(",")]
    config = load_grid_config(args.config, [f"seeds=[{args.seed}]", f"device={args.device}", "expand=[0]",
                                            *args.overrides])  # the healing part is the grid config's own run
    runtime = Runtime.create(config.device, config.compile, progress=False)
    dataset = load_dataset(config.dataset.name, **config.dataset.loader_options())
    val_size = config.dataset.resolved_val_size(len(dataset.train_labels))
    recipe = config.resolved_recipe()
    print(f"{dataset.name} / {config.model_name}, rates {rates}, seed {args.seed}, device {runtime.device}, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    memo = Memo()
    singles = [n for n in RANKINGS.names()]
    combos = {"combined-3": ["embedding", "gradient", "label_issues"], COMBINED: list(DEFAULT_COMBINED),
              "combined_all": singles}
    params = {"strip": {"n": args.strip_n}}
    results = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for m in manipulations:
        start = time.perf_counter()
        setting = build_setting(dataset, m["name"], m["sizes"][0], args.seed, runtime, val_size, recipe,
                                **(m.get("params") or {}))
        original, info = train_original(setting, config.model_name, recipe, runtime, use_cache=config.cache)
        original.eval()
        rows = setting.train_idx.cpu()
        if args.subsample:  # smoke tests: S_m and a seeded sample of the others
            others = rows[~torch.isin(rows, setting.manipulated.manipulated.cpu())]
            pick = torch.randperm(len(others), generator=torch.Generator().manual_seed(args.seed))[: args.subsample]
            rows = torch.sort(torch.cat([setting.manipulated.manipulated.cpu(), others[pick]])).values
        t0 = time.perf_counter()
        features = features_of(original, setting.train_bank, setting.manipulated.labels, rows, runtime,
                               setting.manipulated.triggered.cpu()[rows])
        forward = time.perf_counter() - t0
        print(f"  {label(m)}: original {info.get('cache')} ({time.perf_counter() - start:.0f} s), features "
              f"{forward:.1f} s", flush=True)
        memo.key = label(m)
        s_m = setting.manipulated.manipulated.cpu()
        saved = {}  # every ranking's scores (candidates, most suspect first, with the truth; flagged): --out
        for rate in rates:
            forget = deletion_set(setting, rate).cpu()
            mask = torch.isin(rows, forget)
            truth = torch.isin(rows, s_m).numpy() & ~mask.numpy()
            undiscovered = int(truth.sum())
            for name in [*singles, *combos]:
                if name in combos:
                    p = {**params, COMBINED: {"rankings": combos[name]}}
                    ranked = rank_features(features, rows, mask, ranking=COMBINED, params=p, seed=args.seed)
                    seconds = sum(memo.seconds.get((memo.key, c), 0.0) for c in combos[name])
                else:
                    ranked = rank_features(features, rows, mask, ranking=name,
                                           params={name: params[name]} if name in params else None, seed=args.seed)
                    seconds = memo.seconds.get((memo.key, name), float("nan"))
                saved[f"{name}@{rate}/candidates"] = ranked.scores.numpy().astype(np.float32)
                saved[f"{name}@{rate}/hit"] = torch.isin(ranked.indices, s_m).numpy()
                saved[f"{name}@{rate}/flagged"] = ranked.flagged_scores.numpy().astype(np.float32)
                hit = torch.isin(ranked.indices, s_m).numpy()
                cand_truth = np.zeros(ranked.candidates, dtype=bool)
                cand_truth[:] = hit
                auroc = self_check(ranked.scores.numpy(), cand_truth)
                recall = float(hit[:undiscovered].sum() / undiscovered) if undiscovered else float("nan")
                auto = ranked.auto_k()
                chosen = f1_against(ranked.indices[: auto["k"]].numpy(), s_m.numpy(), forget.numpy())
                check = self_check(np.concatenate([ranked.flagged_scores.numpy(), ranked.scores.numpy()]),
                                   np.r_[np.ones(len(ranked.flagged_scores), bool), np.zeros(ranked.candidates, bool)])
                results.append({"manipulation": label(m), "n": m["sizes"][0], "rate": rate, "ranking": name,
                                "flagged": int(mask.sum()), "undiscovered": undiscovered,
                                "self_check": check, "auroc": auroc, "recall_at_k": recall,
                                "auto_k": auto["k"], "auto_f1": chosen["f1"], "auto_precision": chosen["precision"],
                                "auto_recall": chosen["recall"], "auto_reason": auto["reason"],
                                "seconds": seconds, "forward_seconds": forward,
                                "original": info.get("cache"), "weights": ranked.weights})
        timing = ", ".join(f"{n} {memo.seconds[(memo.key, n)]:.1f}" for n in singles if (memo.key, n) in memo.seconds)
        print(f"{label(m)} (n={m['sizes'][0]}): original {info.get('cache')}, features {forward:.1f} s, "
              f"{time.perf_counter() - start:.0f} s in all; seconds: {timing}", flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        np.savez_compressed(out / f"scores-{label(m).replace(' ', '_')}.npz", **saved)
        report(results, rates, [*singles, *combos], args.doc or None)  # each manipulation: a cut run keeps them
    text = report(results, rates, [*singles, *combos], args.doc or None)
    print("\n" + text)


def report(results: list[dict], rates: list[float], names: list[str], doc: str | None) -> str:
    short = {"activation_clustering": "AC", "label_issues": "label_issues", "spectral_flagged": "spectral_flagged"}
    manipulations = list(dict.fromkeys(r["manipulation"] for r in results))
    at = {(r["manipulation"], r["rate"], r["ranking"]): r for r in results}
    parts = []
    for metric, title in [("auroc", "AUROC of the candidates' scores against S_m \\ S_f"),
                          ("recall_at_k", "recall at K = |S_m \\ S_f| (= precision at that K)")]:
        for rate in rates:
            rows = []
            for m in manipulations:
                vals = [at.get((m, rate, n), {}).get(metric, float("nan")) for n in names]
                best = np.nanmax(vals) if not all(np.isnan(vals)) else float("nan")
                rows.append([m] + [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in vals])
            parts.append(f"#### {title}, {rate:.0%} discovery\n\n" + markdown_table(["manipulation"] + [short.get(n, n) for n in names], rows))
    for rate in rates:
        rows = []
        for m in manipulations:
            for n in (COMBINED, "combined-3", "embedding"):
                r = at.get((m, rate, n))
                if r:
                    rows.append([m, n, r["self_check"], r["undiscovered"], r["auto_k"], r["auto_precision"],
                                 r["auto_recall"], r["auto_f1"]])
        parts.append(f"#### k auto at {rate:.0%} discovery (true |S_m \\ S_f| beside the K chosen)\n\n" +
                     markdown_table(["manipulation", "ranking", "self-check", "hidden (S_m \\ S_f)", "auto K", "precision",
                            "recall", "F1"], rows))
    detectors = [n for n in names if n in FLAG_FREE - {"label_issues"}]
    ours = [n for n in names if n not in detectors and not n.startswith(COMBINED)]  # embedding .. label_issues
    rows = []
    for rate in rates:
        for m in manipulations:
            got = {n: at[(m, rate, n)] for n in names if (m, rate, n) in at}
            if not got:
                continue
            best_d = max(detectors, key=lambda n: got[n]["recall_at_k"]) if detectors else None
            best_o = max(ours, key=lambda n: got[n]["recall_at_k"])
            rows.append([m, f"{rate:.0%}", f"{best_d} {got[best_d]['recall_at_k']:.3f} / {got[best_d]['auroc']:.3f}",
                         f"{best_o} {got[best_o]['recall_at_k']:.3f} / {got[best_o]['auroc']:.3f}",
                         *[f"{got[n]['recall_at_k']:.3f} / {got[n]['auroc']:.3f}" for n in names if n.startswith(COMBINED)]])
    parts.append("#### who finds the rest: recall at K = |S_m \\ S_f| / AUROC of the best detector (no flagged set), of "
                 "the best single ranking of ours (embedding, gradient, label_issues, spectral_flagged), and of the combinations\n\n" +
                 markdown_table(["manipulation", "rate", "best detector", "best of ours (single)", *[n for n in names if n.startswith(COMBINED)]], rows))
    rows = []
    for m in manipulations:
        r0 = next(r for r in results if r["manipulation"] == m)
        rows.append([m, f"{r0['forward_seconds']:.1f}"] + [f"{at.get((m, rates[-1], n), {}).get('seconds', float('nan')):.1f}"
                                                           for n in names])
    parts.append("#### seconds per ranking (features' forward pass apart; flag-free rankings once per manipulation, "
                 f"the others at {rates[-1]:.0%})\n\n" + markdown_table(["manipulation", "forward"] + [short.get(n, n) for n in names], rows))
    text = "\n\n".join(parts)
    if doc:
        write_between(Path(doc), BEGIN, END, text, empty=f"# Detectors\n\n{BEGIN}\n{END}\n")
    return text


def write_between(path: Path, begin: str, end: str, text: str, empty: str) -> None:
    """``text`` between the markers ``begin`` and ``end`` of ``path`` (the rest kept), or appended with them;
    ``empty``: the file's text when it does not exist yet."""
    old = path.read_text() if path.exists() else empty
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        _, tail = rest.split(end, 1)
        path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")
    else:
        path.write_text(f"{old.rstrip()}\n\n{begin}\n{text}\n{end}\n")


if __name__ == "__main__":
    main()
