"""The practitioner's path: a trained classifier, its training data and the samples found to be bad in; a
corrected model and a report of what changed out (``corrective fix`` on the command line).

    from corrective_unlearning import correct
    model, report = correct(model, (x_train, y_train), flagged, method="auto")
"""
from ..inputs import TrainingData, flagged_indices, load_model, read_flagged, training_data
from .auto import CANDIDATES, candidate_settings
from .core import Correction, CorrectionReport, correct
from .report import write_report

__all__ = ["CANDIDATES", "Correction", "CorrectionReport", "TrainingData", "candidate_settings", "correct",
           "flagged_indices", "load_model", "read_flagged", "training_data", "write_report"]
