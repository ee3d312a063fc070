from .metrics import (Predictions, accuracy, backdoor_metrics, collect_predictions, compute_metrics,
                      defense_effectiveness, evaluate)
from .predict import logits, predict

__all__ = ["Predictions", "accuracy", "backdoor_metrics", "collect_predictions", "compute_metrics",
           "defense_effectiveness", "evaluate", "logits", "predict"]
