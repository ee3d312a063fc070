"""The grid runner: a recipe -> cells (:mod:`.spec`) -> units of work on an executor (:mod:`.executors`, run by
:class:`.cells.Worker`) -> one atomic record per cell (:mod:`.store`), resumable (:mod:`.outdir`: the ``--out``
folder's lock and resume check); :mod:`.projection` projects the full grid's cost from measured cells."""
from ..experiment import (  # public API of the grid's deletion sets, defined there
           deletion_set,
           make_task,
)
from .cells import Worker
from .outdir import check_resume
from .projection import projection
from .run import run_grid
from .spec import (
           ORIGINAL,
           Cell,
           GridConfig,
           ManipulationGrid,
           TowConfig,
           expand_cells,
           load_grid_config,
           units,
)
from .store import ResultStore, format_status, grid_status, load_records

__all__ = ["ORIGINAL", "Cell", "GridConfig", "ManipulationGrid", "ResultStore", "TowConfig", "Worker",
           "check_resume", "deletion_set", "expand_cells", "format_status", "grid_status",
           "load_grid_config", "load_records", "make_task", "projection", "run_grid", "units"]
