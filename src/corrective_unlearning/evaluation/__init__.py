from .metrics import Predictions, accuracy, collect_predictions, compute_metrics
from .predict import logits, predict

__all__ = ["Predictions", "accuracy", "collect_predictions", "compute_metrics", "logits", "predict"]
