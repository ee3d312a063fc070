"""Each attack's original model against the clean model: C-Acc, ASR and RA, and whether the attack meets the bar
the attacks recipe sets (ASR >= 90%, C-Acc within 2 points of the clean model's). The clean model's RA on the same
triggered images is the ceiling a healed model can reach: a trigger that destroys image content (SIG's strong
sinusoid, BPP's two levels, the label-consistent attack's large corners) lowers it. Attack parameters are tuned
with this script alone, on the originals, never on any method's result.

    PYTHONPATH=src python benchmarks/attack_originals.py                        # configs/attacks/fashion-mnist.yaml
    PYTHONPATH=src python benchmarks/attack_originals.py --config ... recipe.steps=5   # any grid config + overrides

The originals are trained with the grid's recipe and validation split and cached, so `corrective run` on the same
config loads them instead of training them again.
"""
from __future__ import annotations

import argparse
import time

from corrective_unlearning.data import load_dataset
from corrective_unlearning.experiment import build_setting, evaluate, train_original
from corrective_unlearning.report.attacks import attack_label
from corrective_unlearning.runner import load_grid_config
from corrective_unlearning.methods import hparams_key
from corrective_unlearning.runtime import Runtime

ASR_BAR, ACC_GAP = 90.0, 2.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/attacks/fashion-mnist.yaml")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    config = load_grid_config(args.config, args.overrides)
    runtime = Runtime.create(args.device)
    data = load_dataset(config.dataset.name, **config.dataset.loader_options())
    val_size = config.dataset.resolved_val_size(len(data.train_labels))
    recipe = config.resolved_recipe()
    rows = []
    for seed in config.seeds:
        clean = build_setting(data, "none", 0, seed, runtime, val_size)
        clean_model = train_original(clean, config.model_name, recipe, runtime)[0]
        clean_acc = evaluate(clean_model, clean, runtime)["test_acc"]
        print(f"seed {seed}: clean model C-Acc {clean_acc:.2f}", flush=True)
        for m in config.manipulation_grids():
            for n in m.sizes:
                start = time.perf_counter()
                setting = build_setting(data, m.name, n, seed, runtime, val_size, recipe, **m.params)
                model, info = train_original(setting, config.model_name, recipe, runtime)
                metrics = evaluate(model, setting, runtime)
                clean_ra = evaluate(clean_model, setting, runtime).get("ra", float("nan"))
                variant = f"{m.name} {hparams_key(m.params)}" if m.params else m.name
                label = attack_label({"manipulation_variant": variant}) if m.name == "poison" else variant
                ok = metrics.get("asr", 100.0) >= ASR_BAR and clean_acc - metrics["test_acc"] <= ACC_GAP
                rows.append((seed, label, n, metrics["test_acc"], metrics.get("asr", float("nan")),
                             metrics.get("ra", float("nan")), clean_ra, clean_acc - metrics["test_acc"], info["cache"],
                             time.perf_counter() - start, "yes" if ok else "NO"))
                print("  " + " | ".join(str(v) if not isinstance(v, float) else f"{v:.2f}" for v in rows[-1]),
                      flush=True)
    header = ["seed", "attack", "n", "C-Acc", "ASR", "RA", "clean model's RA", "C-Acc loss", "cache", "seconds",
              "meets bar"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
