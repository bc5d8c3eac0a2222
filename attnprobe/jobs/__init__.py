"""Jobs over many utterances (or checkpoints): what ``--audio`` names (a file, a folder, a list, a
manifest) with ids that are safe file names; checks before any model loads; running a job in one
process or sharded over ``torchrun``'s ranks, resumably, with per-item outputs written atomically
as each finishes and a summary merged at the end; progress; writing files so that an error or an
interrupt never leaves a partial one behind."""

from .distributed import JobGroup
from .engine import Inspection, ItemOutput, Job, JobReport, run_job, run_to_terminal
from .files import PendingFiles, check_writable, replace_file, replace_folder, write_file_atomically
from .ids import safe_id, unique_ids
from .items import InputItem, collect_inputs, names_collection, read_text_argument
from .progress import BatchSummary, Outcome, run_items
from .sharding import balanced_shards
from .state import JobFolder
from .validation import (
    InputPaths,
    check_output_place,
    load_model_or_explain,
    model_window_seconds,
)

__all__ = [
    "BatchSummary",
    "InputItem",
    "InputPaths",
    "Inspection",
    "ItemOutput",
    "Job",
    "JobFolder",
    "JobGroup",
    "JobReport",
    "Outcome",
    "PendingFiles",
    "balanced_shards",
    "check_output_place",
    "check_writable",
    "collect_inputs",
    "load_model_or_explain",
    "model_window_seconds",
    "names_collection",
    "read_text_argument",
    "replace_file",
    "replace_folder",
    "run_items",
    "run_job",
    "run_to_terminal",
    "safe_id",
    "unique_ids",
    "write_file_atomically",
]
