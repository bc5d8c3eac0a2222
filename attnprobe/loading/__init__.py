"""Loading models with what they need to read audio and text: checkpoint formats (attnprobe's
Conformer runs, CTranslate2 Whisper, Hugging Face folders, torchaudio weights) and tokenizers.

Usage::

    from attnprobe.loading import load_model
    loaded = load_model("whisper-tiny.en")                  # offline Whisper tiny.en
    batch = loaded.batch(samples_16khz, loaded.transcript("the birch canoe"))
    attnprobe.reversal_report(loaded.model, batch)

Loading is not adapting: which modules are sites and how to run a batch is the business of
:mod:`attnprobe.adapters`; a :class:`LoadedModel` carries the adapter it was paired with.
"""

from .conformer_checkpoint import (
    ConformerCheckpoint,
    load_conformer,
    read_conformer_checkpoint,
    save_conformer_checkpoint,
)
from .load import DEFAULT_MODEL, load_model
from .loaded_model import LoadedModel
from .transcripts import CharacterTokenizer, HuggingFaceTokenizer, TextTokenizer, Transcript
from .whisper_ctranslate2 import load_whisper_ct2, transcribe_greedy

__all__ = [
    "DEFAULT_MODEL",
    "CharacterTokenizer",
    "ConformerCheckpoint",
    "HuggingFaceTokenizer",
    "LoadedModel",
    "TextTokenizer",
    "Transcript",
    "load_conformer",
    "load_model",
    "load_whisper_ct2",
    "read_conformer_checkpoint",
    "save_conformer_checkpoint",
    "transcribe_greedy",
]
