"""``correct()``: the practitioner's path from a trained classifier, its training data and the flagged samples to
a corrected copy of the model and a report of what changed."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..config import default_val_size
from ..data import stratified_split
from ..evaluation import defense_effectiveness, evaluate, predict
from ..experiment import TaskData, make_task
from ..inputs import TrainingData, as_images_labels, check_float_scale, check_model, flagged_indices, training_data
from ..methods import METHODS, needs_flagged, reads_reserve
from ..reserve import DEFAULT_FRACTION, split_validation
from ..runtime import Runtime, Stopwatch
from ..selection import DEFAULT_MAX_VAL_DROP
from ..suspects import rank_suspects
from ..training import Recipe, default_recipe
from .auto import candidate_settings, run_auto


@dataclass
class CorrectionReport(Mapping):
    """What :func:`correct` says about its run (rendered by :func:`..fix.report.write_report`, and ``record.json``).
    Typed fields, and also a read-only mapping of them (``report["method_notes"]``, ``{**report}``, ``report.get``)
    as the report was a dict before; ``benchmark`` is a key only where there is one (a benchmark run's data)."""

    requested_method: str  # "auto" or the method asked for
    method: str  # the method that ran (auto: the chosen candidate)
    hparams: dict  # its resolved hyperparameters
    method_notes: dict  # what it says about its run
    candidates: list | None  # auto: every candidate with its scores
    skipped_candidates: list | None  # auto: candidates that could not run, and why
    max_val_drop: float | None  # auto: the guard's allowed drop of validation accuracy, in points
    seconds: float
    data: str  # the training data, in words
    num_classes: int  # the model's outputs
    flagged: int  # samples the user flagged
    deletion_set: int  # samples unlearned (flagged + suspects added)
    suspects: dict | None  # expand: which suspects were added and why
    validation: dict  # {size, source}, and clean_reserve: the reserve's size where a defence trained on one
    original_scores: dict  # the selection scores of the model before (val_acc, deletion_change)
    before: dict  # accuracies of the original model (see ``_comparison``)
    after: dict  # the same of the corrected model
    flipped: dict  # every training sample whose prediction changed
    benchmark: dict | None = None  # a benchmark run's data: the benchmark's metrics before and after

    def _keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if f.name != "benchmark" or self.benchmark is not None]

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


@dataclass
class Correction:
    """What :func:`correct` returns: the corrected model and the report (:class:`CorrectionReport`; see
    :func:`..fix.report.write_report` for its rendering). Unpacks as ``model, report = correct(...)``."""

    model: nn.Module
    report: CorrectionReport = field(repr=False)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.report))


def correct(
    model: nn.Module,
    train,
    flagged: Sequence[int] | torch.Tensor,
    *,
    method: str = "auto",
    validation=None,
    hparams: dict | None = None,
    expand: int | str = 0,
    ranking: str = "combined",
    recipe: Recipe | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    val_size: int | None = None,
    augment: bool = False,
    max_val_drop: float = DEFAULT_MAX_VAL_DROP,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    clean_reserve: float | None = None,
) -> Correction:
    """Return a corrected copy of ``model`` (left untouched) and a report.

    ``train``: the training data as the model was trained on it: a ``torch.utils.data.Dataset`` of (image, label)
    items, a pair (images, labels), a registered dataset name, an ``.npz`` file or a ``corrective train`` run
    folder. Images are uint8 ``[N, C, H, W]`` (normalised with ``mean``/``std``, computed from the images when not
    given) or float, exactly as the model reads them. ``flagged``: indices of the samples found to be bad, or a
    boolean mask of length N. ``method``: a registered method or ``"auto"`` (candidates scored on validation data,
    :mod:`.auto`). ``validation``: held-out data in the same form as ``train``; by default ``val_size`` (5%)
    unflagged samples are held out. ``hparams``: the method's hyperparameters; for ``auto``, a mapping from
    candidate to fixed hyperparameters. ``expand``: add the ``expand`` unflagged samples that most resemble the
    flagged ones (:func:`corrective_unlearning.suspects`, ranking ``ranking``) before unlearning; ``"auto"``:
    as many as :func:`corrective_unlearning.suspects.auto.choose_k` estimates from the scores (none when the
    ranking's self-check says it cannot tell; the report's ``suspects.auto`` says why). ``recipe``: the
    training recipe of methods that train (default: the registered dataset's, else recipe A's optimiser without
    augmentation unless ``augment``). ``clean_reserve``: the fraction of the validation data that a clean-data
    defence (ft_clean, nad, anp, i-bau, ft_after) trains on; the rest scores the result (default: half for those
    methods, none otherwise). A defence needs no flagged sample: ``flagged`` may then be empty.
    """
    if not (expand == "auto" or (isinstance(expand, int) and not isinstance(expand, bool) and expand >= 0)):
        raise ValueError(f"expand: expected a number of suspects >= 0 or 'auto', got {expand!r}")
    check_max_val_drop(max_val_drop)
    check_hparams(method, hparams)
    runtime = dataclasses.replace(Runtime.create(device, progress=progress), channels_last=False)
    data = training_data(train, mean=mean, std=std, runtime=runtime)
    if method != "auto" and not needs_flagged(method) and not _any_flagged(flagged):  # a defence: none needed
        flagged = torch.empty(0, dtype=torch.int64)
    else:
        flagged = flagged_indices(flagged, len(data.labels))
    not_trained = flagged[~torch.isin(flagged, data.train_idx)]
    if len(not_trained):
        raise ValueError(f"flagged: {len(not_trained)} index(es) are not training samples of {data.description} "
                         f"(e.g. {not_trained[:5].tolist()}: its validation split)")
    data, val_idx, val_source = _with_validation(data, validation, flagged, val_size, seed, mean, std)
    bank = data.bank(runtime)
    outputs = check_model(model, bank, max(data.num_classes, int(data.val_labels.max()) + 1))

    original = runtime.prepare(copy.deepcopy(model)).eval()
    triggered = data.triggered if data.triggered is not None else torch.zeros(len(data.labels), dtype=torch.bool)
    stamp = triggered.to(runtime.device)
    suspects_report, added = None, torch.empty(0, dtype=torch.int64)
    if expand:
        added, suspects_report = _expand(original, data, bank, flagged, expand, ranking, runtime)
    user_flagged, flagged = flagged, torch.sort(torch.cat([flagged, added])).values

    labels = data.labels.clone()
    labels[val_idx] = data.val_labels  # the validation part of the bank carries its own labels
    # clean reserve (corrective_unlearning.reserve): carved from the validation data; the rest scores the result
    clean_idx, val_idx, val_labels = _carve_reserve(method, clean_reserve, val_idx, data.val_labels, seed)
    source = TaskData(bank=bank, labels=labels, train_idx=data.train_idx, val_idx=val_idx,
                      val_labels=val_labels, num_classes=outputs, seed=seed, triggered=stamp, clean_idx=clean_idx)
    # a method that needs no flagged sample (a clean-data defence) runs on an empty S_f: forget None says so
    empty = len(flagged) == 0 and method != "auto" and not needs_flagged(method)
    task = make_task(source, original, None if empty else flagged, recipe or _default_recipe(data, augment),
                     runtime)

    def scores(m: nn.Module) -> dict:
        return {"val_acc": 100.0 * task.accuracy(m, val_idx),  # percent, as the benchmark's records
                "deletion_change": 100.0 * (1.0 - task.accuracy(m, flagged)) if len(flagged) else None}

    original_scores = scores(original)
    candidates, skipped = None, None
    with Stopwatch(runtime) as clock:
        if method == "auto":
            corrected, chosen, candidates, skipped = run_auto(task, scores, original_scores, hparams, max_val_drop,
                                                              progress)
            chosen_method, chosen_hparams, notes = chosen["method"], chosen["hparams"], chosen["method_notes"]
        else:
            result = METHODS.get(method)(task, hparams)
            corrected, notes = result.model, dict(result.notes)
            chosen_method, chosen_hparams = method, METHODS.get(method).resolve(hparams)
    benchmark = None
    if data.setting is not None:
        deleted = flagged if len(flagged) else None  # an empty S_f (a defence) has no deletion-set metrics
        benchmark = {"before": evaluate(original, data.setting, runtime, deleted),
                     "after": evaluate(corrected, data.setting, runtime, deleted)}
        benchmark.update(_backdoor_summary(benchmark, data.setting.manipulated.params))
    report = CorrectionReport(
        requested_method=method, method=chosen_method, hparams=chosen_hparams, method_notes=notes,
        candidates=candidates, skipped_candidates=skipped, max_val_drop=max_val_drop if method == "auto" else None,
        seconds=clock.seconds, data=data.description, num_classes=outputs, flagged=len(user_flagged),
        deletion_set=len(flagged), suspects=suspects_report,
        validation={"size": len(val_idx), "source": val_source,
                    **({"clean_reserve": len(clean_idx)} if clean_idx is not None else {})},
        original_scores=original_scores,
        **_comparison(original, corrected, data, bank, user_flagged, added, val_idx, stamp, runtime, outputs),
        benchmark=benchmark)
    return Correction(corrected.eval(), report)


def _backdoor_summary(benchmark: dict, params: dict) -> dict:
    """For a backdoor: BackdoorBench's DER from the before/after ASR and C-Acc, and whether the attack was
    clean-label (then the flagged samples' given labels are their true labels)."""
    if "asr" not in benchmark["before"]:
        return {}
    return {"der": defense_effectiveness(benchmark["before"], benchmark["after"]),
            "clean_label": bool(params.get("clean_label"))}


def _any_flagged(flagged) -> bool:
    """Whether ``flagged`` names any sample (a boolean mask with a True, or any index)."""
    flagged = torch.as_tensor(flagged) if not isinstance(flagged, torch.Tensor) else flagged
    return bool(flagged.any()) if flagged.dtype == torch.bool else flagged.numel() > 0


def _carve_reserve(method: str, fraction: float | None, val_idx: torch.Tensor, val_labels: torch.Tensor,
                   seed: int) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(reserve or None, selection indices, their labels): ``fraction`` of the validation data (default half for
    a method that trains on the reserve, else none) set aside for training (clean reserve)."""
    if fraction is None:
        fraction = DEFAULT_FRACTION if method != "auto" and reads_reserve(method) else 0.0
    if not fraction:
        return None, val_idx, val_labels
    reserve, selection = split_validation(val_idx, val_labels, fraction, seed)
    kept = torch.isin(val_idx, selection)
    return reserve, val_idx[kept], val_labels[kept]


def check_max_val_drop(max_val_drop, name: str = "max_val_drop") -> float:
    """``max_val_drop`` as a float >= 0 (points of validation accuracy), else a ValueError naming ``name``."""
    try:
        value = float(max_val_drop)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(max_val_drop, bool) or not value >= 0:  # also refuses NaN
        shown = f"{max_val_drop:g}" if isinstance(max_val_drop, (int, float)) else repr(max_val_drop)
        raise ValueError(f"{name}: expected points of validation accuracy >= 0, got {shown}")
    return value


def check_hparams(method: str, hparams) -> None:
    """``method`` is known and the hyperparameters are ones it (or, for auto, each candidate) takes; checked before
    any work."""
    if method != "auto" and method not in METHODS:
        raise ValueError(f"method {method!r}: expected 'auto' or one of {', '.join(METHODS.names())}")
    if method == "auto":
        candidate_settings(hparams)
    elif method in METHODS:
        METHODS.get(method).resolve(hparams)


def _default_recipe(data: TrainingData, augment: bool) -> Recipe:
    if data.setting is not None:
        return default_recipe(data.setting.dataset.name)
    return Recipe() if augment else Recipe(crop_padding=0, flip=False)


def _with_validation(data: TrainingData, validation, flagged: torch.Tensor, val_size: int | None, seed: int,
                     mean=None, std=None) -> tuple[TrainingData, torch.Tensor, str]:
    """The data with its validation samples (appended to the images when given separately), their indices, and
    where they come from."""
    if validation is not None:
        if isinstance(validation, (str, Path)):  # a file or folder, as the training data may be
            validation = training_data(validation, like=data)  # an image folder: the training's classes, size
        images, labels = as_images_labels(validation, "validation")
        if images.shape[1:] != data.images.shape[1:] or images.dtype != data.images.dtype:
            raise ValueError(f"validation images: expected the training images' form {data.images.dtype} "
                             f"[M, {', '.join(map(str, data.images.shape[1:]))}], got {images.dtype} "
                             f"{tuple(images.shape)}")
        if mean is None or std is None:  # normalised as the training images: same scale expected
            check_float_scale(images, "validation")
        n = len(data.labels)
        val_idx = torch.arange(n, n + len(labels))
        data = dataclasses.replace(
            data, images=torch.cat([data.images, images.cpu()]), labels=torch.cat([data.labels, labels]),
            val_idx=val_idx, val_labels=labels,
            triggered=None if data.triggered is None else torch.cat([data.triggered, torch.zeros(len(labels),
                                                                                                  dtype=torch.bool)]),
            true_labels=None if data.true_labels is None else torch.cat([data.true_labels, labels]))
        return data, val_idx, f"given ({len(labels)} samples)"
    if data.val_idx is not None and len(data.val_idx):
        return data, data.val_idx, "the run's held-out validation split (clean labels)"
    unflagged = data.train_idx[~torch.isin(data.train_idx, flagged)]
    n, u = len(data.train_idx), len(unflagged)
    hint = "pass validation= (--validation) with held-out samples, or flag fewer samples"
    if u < 2:
        left = "none left unflagged" if u == 0 else "one left unflagged"
        raise ValueError(f"flagged: {n - u} of the {n} training samples are flagged, {left} to hold out a "
                         f"validation split: {hint}")
    if val_size is None:
        size = default_val_size(u)
        if size < 1:
            raise ValueError(f"flagged: {u} unflagged training samples are too few to hold out the default 5% "
                             f"validation split (it rounds to 0): {hint.replace(', or flag', ', val_size=K, or flag')}")
    else:
        size = val_size
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size < u:
            raise ValueError(f"val_size: expected 1 to {u - 1} held-out samples (of the {u} unflagged), got {size!r}")
    kept, held = stratified_split(data.labels[unflagged], size, seed)
    val_idx = unflagged[held]
    data = dataclasses.replace(data, train_idx=torch.sort(torch.cat([unflagged[kept], flagged])).values,
                               val_idx=val_idx, val_labels=data.labels[val_idx])
    return data, val_idx, f"held out: {size} unflagged training samples (given labels), not trained on here"


def _expand(original: nn.Module, data: TrainingData, bank, flagged: torch.Tensor, k: int | str, ranking: str,
            runtime: Runtime) -> tuple[torch.Tensor, dict]:
    """The original's top-``k`` suspects (``k`` "auto": as many as the scores suggest), and what the ranking says
    about itself."""
    auto = None
    found = rank_suspects(original, bank, data.labels, flagged, data.train_idx, runtime,
                          ranking=ranking, k=None if k == "auto" else k, stamp=data.triggered)
    if k == "auto":  # chosen from the scores of every candidate
        auto = found.auto_k()
        found, k = found.top(auto["k"]), auto["k"]
    added = found.indices.cpu()
    report = {"ranking": ranking, "k": k, **({"auto": auto} if auto is not None else {}),
              "added": len(added), "indices": added.tolist(),
              "scores": [float(s) for s in found.scores], "self_check": found.self_check,
              "weights": found.weights, "seconds": found.seconds}
    if data.true_labels is not None:  # a benchmark run: how many suspects really were manipulated
        report["manipulated_among_added"] = int((data.true_labels[added] != data.labels[added]).sum())
    return added, report


def _comparison(original: nn.Module, corrected: nn.Module, data: TrainingData, bank, flagged: torch.Tensor,
                added: torch.Tensor, val_idx: torch.Tensor, stamp: torch.Tensor, runtime: Runtime, num_classes: int
                ) -> dict:
    """Accuracies before and after (the flagged samples and the suspects ``added`` to them, each with given and,
    when known, true labels; validation overall and per class) and every training sample whose prediction
    changed."""
    train_idx = data.train_idx
    idx = torch.cat([train_idx, val_idx])
    before = predict(original, bank, idx, runtime, stamp[idx.to(stamp.device)])
    after = predict(corrected, bank, idx, runtime, stamp[idx.to(stamp.device)])
    n_train = len(train_idx)
    position = {int(i): p for p, i in enumerate(train_idx.tolist())}
    val_labels = data.labels[val_idx]

    def accuracies(pred: torch.Tensor, indices: torch.Tensor, name: str) -> dict:
        p = pred[torch.tensor([position[int(i)] for i in indices], dtype=torch.int64)]
        out = {f"{name}_acc_given": _pct(p == data.labels[indices])}
        if data.true_labels is not None:
            out[f"{name}_acc_true"] = _pct(p == data.true_labels[indices])
        return out

    def summary(pred: torch.Tensor) -> dict:
        vp = pred[n_train:]
        return {**accuracies(pred, flagged, "flagged"), **(accuracies(pred, added, "added") if len(added) else {}),
                "val_acc": _pct(vp == val_labels),
                "per_class_val_acc": [_pct(vp[val_labels == c] == c) if bool((val_labels == c).any()) else None
                                      for c in range(num_classes)]}

    changed = torch.nonzero(before[:n_train] != after[:n_train]).flatten()
    is_flagged = torch.isin(train_idx[changed], torch.cat([flagged, added]))
    flips = [{"index": int(train_idx[p]), "given_label": int(data.labels[train_idx[p]]),
              **({"true_label": int(data.true_labels[train_idx[p]])} if data.true_labels is not None else {}),
              "before": int(before[p]), "after": int(after[p]), "in_deletion_set": bool(f)}
             for p, f in zip(changed.tolist(), is_flagged.tolist())]
    return {"before": summary(before), "after": summary(after),
            "flipped": {"training_samples": len(flips), "in_deletion_set": int(is_flagged.sum()),
                        "outside": int((~is_flagged).sum()), "rows": flips}}


def _pct(hits: torch.Tensor) -> float | None:
    return 100.0 * float(hits.double().mean()) if len(hits) else None
