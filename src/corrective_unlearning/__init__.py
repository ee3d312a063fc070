"""Corrective machine unlearning: remove a manipulation's effect from a trained classifier when only part of
the manipulated training data has been identified, and measure how well that worked.

    from corrective_unlearning import correct, suspects
"""
__version__ = "0.1.0"

# Imported eagerly: the subpackage `suspects` would otherwise shadow the function of the same name once anything
# imports it (the import system binds a subpackage to its parent's attribute on first import, not again later).
from .fix import Correction, correct, write_report  # noqa: E402
from .suspects import Suspects, suspects  # noqa: E402

__all__ = ["Correction", "Suspects", "correct", "suspects", "write_report", "__version__"]
