"""SPEC section 8 metrics, computed from index-keyed predictions (never from a shuffled loader).

One batched pass per view: the clean test set, the triggered test set (poison only), and the training samples
that metrics need (S_m, scored as the model saw them: with their trigger; and the validation split).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..triggers import attack_labels
from ..runtime import Runtime
from .predict import predict


@dataclass(frozen=True)
class Predictions:
    """Per-sample predictions. ``train[i]`` is -1 for training samples that were not evaluated."""

    test_clean: torch.Tensor
    test_triggered: torch.Tensor | None
    train: torch.Tensor


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Percent correct; NaN for an empty set (so an empty view is visible, not silently 0 or 100)."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * float((predicted == labels).double().mean())


def backdoor_metrics(triggered_predictions: torch.Tensor, test_labels: torch.Tensor, nontarget: torch.Tensor,
                     target: int | str, num_classes: int) -> dict[str, float]:
    """The backdoor field's ASR and RA over the triggered test images outside the target class (all of them for
    an all-to-all attack): ASR predicted as the attack's label for them (the target, or y + 1 mod C), RA predicted
    as their true label. ``attack_success`` is ASR's earlier name, kept for the records already written."""
    wanted = attack_labels(test_labels[nontarget], target, num_classes)
    predicted = triggered_predictions[nontarget]
    asr = accuracy(predicted, wanted)
    return {"attack_success": asr, "asr": asr, "ra": accuracy(predicted, test_labels[nontarget])}


def defense_effectiveness(before: dict, after: dict) -> float:
    """BackdoorBench's DER = [max(0, ASR_before - ASR_after) - max(0, C-Acc_before - C-Acc_after) + 1] / 2, from
    percentages: 1 = the attack removed at no accuracy cost, 0.5 = nothing changed, 0 = worst."""
    asr_drop = max(0.0, (before["asr"] - after["asr"]) / 100.0)
    acc_drop = max(0.0, (before["c_acc"] - after["c_acc"]) / 100.0)
    return (asr_drop - acc_drop + 1.0) / 2.0


def collect_predictions(model: nn.Module, setting, runtime: Runtime) -> Predictions:
    """``setting`` is an :class:`~corrective_unlearning.experiment.Setting` with its device banks."""
    manipulated = setting.manipulated
    all_test = torch.arange(len(setting.dataset.test_labels))
    test_clean = predict(model, setting.test_bank, all_test, runtime)
    test_triggered = None
    if manipulated.trigger is not None:
        test_triggered = predict(model, setting.test_bank, all_test, runtime, stamp=True)
    wanted = torch.cat([manipulated.manipulated, setting.val_idx])
    train = torch.full((len(manipulated.labels),), -1, dtype=torch.int64)
    if len(wanted):
        train[wanted] = predict(model, setting.train_bank, wanted, runtime, stamp=manipulated.triggered[wanted])
    return Predictions(test_clean, test_triggered, train)


def compute_metrics(setting, predictions: Predictions, forget: torch.Tensor | None = None) -> dict[str, float]:
    """All metrics of SPEC section 8 that the predictions determine; with ``forget`` (S_f) also the
    deletion-set metrics. Accuracies are in percent and always against clean labels, except
    ``deletion_change``, which is measured against the given (possibly corrupted) labels."""
    m = setting.manipulated
    test_labels = setting.dataset.test_labels
    metrics: dict[str, float] = {"test_acc": accuracy(predictions.test_clean, test_labels)}
    for name, view in m.test_views.items():
        preds = predictions.test_triggered if view.triggered else predictions.test_clean
        metrics[f"{name}_acc"] = accuracy(preds[view.indices], test_labels[view.indices])
    if m.trigger is not None:
        nontarget = m.test_views["affected_nontarget"].indices
        metrics.update(backdoor_metrics(predictions.test_triggered, test_labels, nontarget, m.params["target"],
                                        setting.dataset.num_classes))
        metrics["c_acc"] = metrics["test_acc"]
    for c, name in enumerate(setting.dataset.classes):
        in_class = test_labels == c
        metrics[f"class_acc/{name}"] = accuracy(predictions.test_clean[in_class], test_labels[in_class])
    train, clean = predictions.train, m.clean_labels
    metrics["manipulated_acc"] = accuracy(train[m.manipulated], clean[m.manipulated])
    metrics["val_acc"] = accuracy(train[setting.val_idx], clean[setting.val_idx])
    if forget is not None:
        undiscovered = m.manipulated[~torch.isin(m.manipulated, forget)]
        metrics["forget_acc"] = accuracy(train[forget], clean[forget])
        metrics["undiscovered_acc"] = accuracy(train[undiscovered], clean[undiscovered])
        metrics["deletion_change"] = 100.0 - accuracy(train[forget], m.labels[forget])
    return metrics


def evaluate(model: nn.Module, setting, runtime: Runtime, forget: torch.Tensor | None = None) -> dict[str, float]:
    """The one way to evaluate a model on a setting: SPEC 8's metrics (:func:`compute_metrics`) of
    :func:`collect_predictions`. Those cover S_m and the validation split; a forget set chosen outside S_m (grid
    keys ``forget_sets``/``expand``, or ``correct(expand=...)``) is predicted too, so its deletion change and forget
    accuracy are measured, never read from unset entries. Predicted in a second pass, not folded into the first:
    the first pass's batches (and so its floating-point results) stay what they always were."""
    predictions = collect_predictions(model, setting, runtime)
    if forget is not None:
        forget = forget.cpu()
        missing = forget[predictions.train[forget] < 0]
        if len(missing):
            predictions.train[missing] = predict(model, setting.train_bank, missing, runtime,
                                                 stamp=setting.manipulated.triggered[missing]).cpu()
    return compute_metrics(setting, predictions, forget)
