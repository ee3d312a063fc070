from .metrics import (Predictions, accuracy, backdoor_metrics, collect_predictions, compute_metrics,
                      defense_effectiveness)
from .predict import logits, predict

__all__ = ["Predictions", "accuracy", "backdoor_metrics", "collect_predictions", "compute_metrics",
           "defense_effectiveness", "logits", "predict"]
