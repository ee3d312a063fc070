"""The confidence proxy (SPEC 7a; RUM's ``learning_events.py``): the softmax probability of the given label,
averaged over every training step that saw the example, from the training-mode logits the training loop already
computes (no extra forward pass).

Orientation: high confidence = low memorization, so the proxy's score is ``1 - mean confidence`` (higher = more
memorized). The raw mean confidence is what is recorded and stored (``mean_confidence``).

Cost (``benchmarks/proxy_overhead.py``, Fashion-MNIST small_cnn recipe on a shared 2-core CPU, 1 thread): the
recorder alone takes about 27 us per step, 0.08% of a ~35 ms training step; end to end, with/without ratios of
0.93 to 1.07 over three alternating runs, i.e. within the machine's noise.
"""
from __future__ import annotations

import torch
from torch import nn

from . import proxy
from .store import MissingProxyError, load_stored, remember, remembered

RECORDED = "mean_confidence"  # the name the recorded mean is stored under


class ConfidenceRecorder:
    """An ``observe`` callable for :func:`~corrective_unlearning.training.train`: accumulates, per training
    index, the sum and the count of ``softmax(logits)[given label]`` on the device (no sync per step).

    ``size`` is the length of the label tensor the indices point into (the whole training split).
    """

    def __init__(self, size: int, device: torch.device | str = "cpu") -> None:
        self.total = torch.zeros(size, dtype=torch.float32, device=device)
        self.count = torch.zeros(size, dtype=torch.float32, device=device)

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        given = logits.float().softmax(1).gather(1, labels.view(-1, 1)).view(-1)
        # index_add_ accumulates repeated indices (a batch that straddles two epochs may hold one twice)
        self.total.index_add_(0, indices, given)
        self.count.index_add_(0, indices, torch.ones_like(given))

    def mean(self) -> torch.Tensor:
        """Per-index mean confidence (float32, CPU); NaN for indices never seen."""
        total, count = self.total.cpu(), self.count.cpu()
        return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def remember_confidence(model: nn.Module, mean_confidence: torch.Tensor) -> None:
    """Attach the recorded mean confidence to ``model`` (what :func:`recorded_confidence` reads first)."""
    remember(model, RECORDED, mean_confidence)


def recorded_confidence(original: nn.Module, info: dict) -> torch.Tensor:
    """The mean confidence recorded while ``original`` was trained: from memory (trained in this process) or
    from beside its cache entry. Raises :class:`MissingProxyError` when there is none."""
    mean = remembered(original, RECORDED)
    if mean is None:
        mean = load_stored(info, RECORDED)
    if mean is None:
        key = info.get("cache_key", "?")
        if info.get("confidence") in ("recorded", "stored"):
            raise MissingProxyError(
                f"the confidence recorded for original model {key} is kept with the model object train_original "
                f"returned (and beside its cache entry when it was cached): pass that object, not a copy")
        raise MissingProxyError(
            f"no recorded confidence for original model {key}: it comes from a cache entry written before "
            f"confidence was recorded during training. Retrain it: run with cache=false (--no-cache) to record "
            f"it for that run, or delete the entry (originals/{key}.* in the cache dir) so that the next run "
            f"retrains and stores it")
    return mean


@proxy("confidence", recorded=True,
       summary="1 - mean softmax probability of the given label over training (recorded by the training loop)")
def confidence_scores(original: nn.Module, setting, runtime, info: dict) -> torch.Tensor:
    """``1 - mean confidence`` per training index (higher = more memorized); NaN where never trained on."""
    del setting, runtime  # recorded during training: nothing to compute
    return 1.0 - recorded_confidence(original, info)


__all__ = ["ConfidenceRecorder", "RECORDED", "confidence_scores", "recorded_confidence", "remember_confidence"]
