"""Jobs over many utterances: what ``--audio`` names (a file, a folder, a list, a manifest), running
a function over each item with progress and per-item failures, and writing outputs so that an
error never leaves a partial file behind."""

from .files import PendingFiles, check_writable, write_file_atomically
from .items import InputItem, collect_inputs, read_text_argument
from .progress import BatchSummary, Outcome, run_items

__all__ = [
    "BatchSummary",
    "InputItem",
    "Outcome",
    "PendingFiles",
    "check_writable",
    "collect_inputs",
    "read_text_argument",
    "run_items",
    "write_file_atomically",
]
