"""Recipe A: the schedule, the device-resident image bank, and the one training loop."""
from .bank import ImageBank
from .recipe import DEFAULT_MODELS, Recipe, default_recipe
from .trainer import Batch, DivergenceError, Loop, LossFn, Reference, TrainLog, cross_entropy, train

__all__ = ["ImageBank", "Recipe", "DEFAULT_MODELS", "default_recipe", "Batch", "DivergenceError", "Loop", "LossFn",
           "Reference", "TrainLog", "cross_entropy", "train"]
