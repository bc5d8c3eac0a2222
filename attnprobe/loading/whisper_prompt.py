"""Whisper's decoder prompt: which language is spoken and which task the decoder performs.

English-only checkpoints (tiny.en) start with ``<|startoftranscript|><|notimestamps|>``;
multilingual ones (base, small, ...) need the language and the task in between, e.g.
``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>``, or they read the transcript as
another language and score it badly. :func:`set_whisper_prompt` writes the prompt into the
runner; every position derived from it (the decoder row that predicts the first label,
``runner.first_label_position``) follows.
"""

from __future__ import annotations

from typing import Any

from attnprobe.errors import InputError

TASKS = ("transcribe", "translate")
DEFAULT_LANGUAGE = "en"
"""The language a multilingual Whisper is told when none is given."""


def is_multilingual(model: Any) -> bool:
    """Whisper's own rule: multilingual checkpoints have 51865 tokens or more."""
    return int(model.config.vocab_size) >= 51865


def whisper_prompt(tokenizer: Any, model: Any, language: str | None = None,
                   task: str | None = None) -> list[int]:
    """The prompt ids for ``language`` (a code such as ``"en"``) and ``task``.

    Raises:
        InputError: an unknown language or task, or either asked of an English-only model.
    """
    if task is not None and task not in TASKS:
        raise InputError(f"--task {task!r}; use one of {', '.join(TASKS)}")
    start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    if not is_multilingual(model):
        if language not in (None, "en") or task not in (None, "transcribe"):
            raise InputError(f"this Whisper model is English-only: it takes no --language "
                             f"{language or ''} --task {task or ''}; leave them out, or load a "
                             f"multilingual checkpoint".replace("  ", " "))
        return [start, no_timestamps]
    code = (language or DEFAULT_LANGUAGE).strip().lower()
    language_id = _special_id(tokenizer, f"<|{code}|>")
    if language_id is None:
        raise InputError(f"--language {language!r} is not one of this Whisper's languages; give "
                         f"a code such as en, de, fr, es, zh")
    task_id = _special_id(tokenizer, f"<|{task or 'transcribe'}|>")
    if task_id is None:
        raise InputError(f"this Whisper's vocabulary has no <|{task}|> token")
    return [start, language_id, task_id, no_timestamps]


def set_whisper_prompt(runner: Any, tokenizer: Any, language: str | None = None,
                       task: str | None = None) -> None:
    """Write the prompt into ``runner.prompt_ids``."""
    runner.prompt_ids = whisper_prompt(tokenizer, runner.model, language, task)


def _special_id(tokenizer: Any, token: str) -> int | None:
    label = tokenizer.convert_tokens_to_ids(token)
    if label is None or label == tokenizer.unk_token_id:
        return None
    return int(label)
