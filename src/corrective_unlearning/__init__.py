"""Corrective machine unlearning: remove a manipulation's effect from a trained classifier when only part of
the manipulated training data has been identified, and measure how well that worked."""
__version__ = "0.1.0"
