"""Synthesised speech whose word timings are known exactly, for checking alignments.

Speech synthesisers decide where every phone goes, so their word boundaries are ground truth, not
estimates. :func:`build_corpus` speaks built-in sentences (:data:`SENTENCES`) with several flite
and festival voices and writes a folder of 16 kHz wavs plus ``manifest.json``::

    manifest = build_corpus("data/timed", n_utterances=120, seed=0)
    for utterance in manifest.utterances:
        audio, rate = read_wav(manifest.wav_path(utterance))     # (samples,), 16000
        utterance.words[0]                                        # WordTiming('the', 0.18, 0.26)

Rebuilding with the same arguments reuses the utterances already on disk.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import ModuleType

from . import festival, flite
from .manifest import (
    SAMPLE_RATE,
    Manifest,
    SynthesizedSpeech,
    Utterance,
    WordTiming,
    read_finished_utterance,
    read_wav,
    write_utterance,
)
from .sentences import SENTENCES

ENGINES: tuple[ModuleType, ...] = (flite, festival)
"""Synthesiser modules; each has ``ENGINE``, ``VOICES``, ``INSTALL_HINT``, ``is_available()`` and
``synthesize(text, voice) -> SynthesizedSpeech``."""

DEFAULT_VOICES: tuple[str, ...] = tuple(voice for engine in ENGINES for voice in engine.VOICES)


def _installed_voices(engine: ModuleType) -> tuple[str, ...]:
    if not engine.is_available():
        return ()
    listed = getattr(engine, "available_voices", None)
    return listed() if listed is not None else engine.VOICES


def available_voices() -> dict[str, ModuleType]:
    """Every installed voice, mapped to the engine module that speaks it."""
    return {voice: engine for engine in ENGINES for voice in _installed_voices(engine)}


def _choose_voices(voices: tuple[str, ...] | None) -> dict[str, ModuleType]:
    installed = available_voices()
    hints = "; ".join(f"{engine.ENGINE}: `{engine.INSTALL_HINT}`" for engine in ENGINES)
    if voices is None:
        chosen = {voice: installed[voice] for voice in DEFAULT_VOICES if voice in installed}
        if not chosen:
            raise FileNotFoundError(f"no speech synthesiser is installed; install one ({hints})")
        return chosen
    missing = [voice for voice in voices if voice not in installed]
    if missing:
        raise ValueError(
            f"voices {missing} are not installed (installed: {', '.join(installed) or 'none'}); "
            f"install their engine ({hints}) or choose installed voices"
        )
    return {voice: installed[voice] for voice in voices}


def plan_sentences(n_utterances: int, seed: int, sentences: tuple[str, ...] = SENTENCES) -> list[str]:
    """``n_utterances`` sentences in a seeded random order; all distinct while ``n_utterances`` is
    at most ``len(sentences)``, then the list starts over in a new order."""
    generator = random.Random(seed)
    planned: list[str] = []
    while len(planned) < n_utterances:
        order = list(sentences)
        generator.shuffle(order)
        planned.extend(order[: n_utterances - len(planned)])
    return planned


def build_corpus(out_dir: str | Path, n_utterances: int, voices: tuple[str, ...] | None = None,
                 seed: int = 0, sentences: tuple[str, ...] = SENTENCES) -> Manifest:
    """Synthesise a corpus with exact word timings and write it with its ``manifest.json``.

    Utterance ``i`` is spoken by ``voices[i % len(voices)]``, so every voice gets an equal share.

    Args:
        out_dir: folder for ``<id>.wav`` (16 kHz mono int16), ``<id>.json`` and ``manifest.json``.
        n_utterances: how many utterances.
        voices: voice names of any engine (flite: ``slt kal awb rms kal16``; festival:
            ``kal_diphone cmu_us_slt_arctic_hts``); ``None`` uses every installed one of those.
        seed: picks the sentence order.
        sentences: lowercase sentences of plain words to choose from.

    Returns:
        The manifest, also saved as ``out_dir/manifest.json``.
    """
    if n_utterances < 1:
        raise ValueError(f"n_utterances must be at least 1, got {n_utterances}")
    chosen = _choose_voices(voices)
    voice_names = list(chosen)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(folder)
    for index, text in enumerate(plan_sentences(n_utterances, seed, sentences)):
        voice = voice_names[index % len(voice_names)]
        utterance_id = f"{index:04d}-{voice}"
        utterance = read_finished_utterance(folder, utterance_id, text, voice)
        if utterance is None:
            engine = chosen[voice]
            utterance = write_utterance(folder, utterance_id, text, voice, engine.ENGINE,
                                        engine.synthesize(text, voice))
        manifest.utterances.append(utterance)
    manifest.save()
    return manifest


__all__ = [
    "DEFAULT_VOICES",
    "ENGINES",
    "SAMPLE_RATE",
    "SENTENCES",
    "Manifest",
    "SynthesizedSpeech",
    "Utterance",
    "WordTiming",
    "available_voices",
    "build_corpus",
    "plan_sentences",
    "read_wav",
]
