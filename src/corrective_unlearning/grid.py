"""Compatibility: the grid runner now lives in :mod:`corrective_unlearning.runner` (spec, store, cells,
executors, projection); this module re-exports its public names for existing imports."""
from .runner import *  # noqa: F401,F403
from .runner import __all__  # noqa: F401
