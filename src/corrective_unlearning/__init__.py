"""Corrective machine unlearning: remove a manipulation's effect from a trained classifier when only part of
the manipulated training data has been identified, and measure how well that worked.

    from corrective_unlearning import correct, suspects
"""
__version__ = "0.1.0"

_LAZY = {"correct": "fix", "Correction": "fix", "write_report": "fix", "suspects": "suspects"}


def __getattr__(name: str):
    # torch loads only when the API is used: `corrective --help` and `--version` stay fast
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
