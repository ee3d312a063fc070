"""The practitioner's inputs, read by both ``corrective fix`` and the suspects ranking, now live in
:mod:`corrective_unlearning.inputs` (below both); their public names stay importable from here."""
from ..inputs import (FLAGGED_COLUMNS, PREFIXES, TrainingData, as_images_labels, check_float_scale, check_model,
                      check_model_file, flagged_indices, from_run, training_data_from_tensors, load_model, read_flagged,
                      state_dict_mismatch, training_data)

__all__ = ["FLAGGED_COLUMNS", "PREFIXES", "TrainingData", "as_images_labels", "check_float_scale", "check_model",
           "check_model_file", "flagged_indices", "from_run", "load_model", "read_flagged", "state_dict_mismatch",
           "training_data", "training_data_from_tensors"]
