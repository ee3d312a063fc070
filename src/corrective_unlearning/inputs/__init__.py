"""What the practitioner's paths read: training data in any of its forms, the flagged indices, a model file.

Every reader checks its input at the boundary and raises a ValueError (or FileNotFoundError) that says what was
expected and what was received, so a bad file or argument fails before any work is done.

Both ``corrective fix`` (:mod:`.fix`) and the suspects ranking (:mod:`.suspects`) read these inputs, so they live
below both: neither has to reach into the other to parse what the practitioner hands it.

One module per input: :mod:`.data` (training data in any form, ``.npz`` archives, ``corrective train`` run folders),
:mod:`.flagged` (flagged indices and files of them), :mod:`.models` (model files and the model check), :mod:`.arch`
(registry names and the practitioner's own ``module.path:callable``), :mod:`.folders` (image folders of class
subfolders and flagged files listing image paths)."""
from .arch import build_arch, is_user_arch, parse_arch_kwargs, rebuild_note
from .data import TrainingData, as_images_labels, check_float_scale, from_run, training_data, training_data_from_tensors
from .folders import (ImageFolder, flagged_from_paths, image_size, is_image_folder, is_path_list, read_image_folder,
                      write_file_list)
from .flagged import FLAGGED_COLUMNS, flagged_indices, read_flagged
from .models import PREFIXES, check_model, check_model_file, load_model, state_dict_mismatch

__all__ = ["FLAGGED_COLUMNS", "ImageFolder", "PREFIXES", "TrainingData", "as_images_labels", "build_arch",
           "check_float_scale", "check_model", "check_model_file", "flagged_from_paths", "flagged_indices",
           "from_run", "image_size", "is_image_folder", "is_path_list", "is_user_arch", "load_model",
           "parse_arch_kwargs", "read_flagged", "read_image_folder", "rebuild_note", "state_dict_mismatch",
           "training_data", "training_data_from_tensors", "write_file_list"]
