"""When an answer means nothing: warnings that an alignment or a report carries in every output
format and that the command line repeats on stderr.

Two independent signs, each cheap:

- the audio holds no speech: digital silence, or sound without any voice-like periodicity
  (:func:`attnprobe.speech_presence.speech_presence`);
- the model finds the transcript very unlikely: the geometric mean of its teacher-forced label
  probabilities is below :data:`UNLIKELY_LABEL_PROBABILITY` (one forward pass). Whisper tiny.en
  gives the shipped utterance's own transcript 66% per label and the same words on silence or
  noise 0.05-0.14%; character decoders, whose labels are easy to guess from the text alone, stay
  above 1% on anything, so for them only the audio check speaks.

:func:`answer_warnings` is the one place that decides; an aligner that flags no speech itself
puts its reason in ``Alignment.warnings`` and it is kept.
"""

from __future__ import annotations

import math

import torch

from attnprobe.audio import Audio
from attnprobe.batch import SpeechBatch
from attnprobe.errors import CapabilityError
from attnprobe.loading import LoadedModel
from attnprobe.speech_presence import speech_presence

UNLIKELY_LABEL_PROBABILITY = 0.01


def answer_warnings(loaded: LoadedModel, audio: Audio, batch: SpeechBatch | None) -> list[str]:
    """Why an answer about ``audio`` (with the labels of ``batch``, if any) may mean nothing."""
    warnings = []
    silence = speech_presence(audio.samples, audio.sample_rate).verdict
    if silence is not None:
        warnings.append(f"no speech: {silence}; times and verdicts for it mean nothing")
    if batch is not None and batch.labels is not None:
        mean = mean_label_log_probability(loaded, batch)
        if mean is not None and mean < math.log(UNLIKELY_LABEL_PROBABILITY):
            warnings.append(
                f"the model finds the transcript very unlikely ({100 * math.exp(mean):.2g}% per "
                f"label, geometric mean): check that the text is what is spoken; the times may "
                f"mean nothing")
    return warnings


def mean_label_log_probability(loaded: LoadedModel, batch: SpeechBatch) -> float | None:
    """The teacher-forced mean log-probability per label of the first utterance of ``batch``
    (a CTC head: the CTC log-likelihood per label); ``None`` when the model has neither."""
    assert batch.label_lengths is not None and batch.labels is not None
    labels = int(batch.label_lengths[0])
    runner = loaded.adapter.runner
    with torch.no_grad():
        try:
            return float(runner.label_log_probs(batch)[0, :labels].mean())
        except CapabilityError:
            pass
        try:
            log_probs, lengths = runner.ctc_log_probs(batch)
        except CapabilityError:
            return None
        blank = loaded.ctc_blank if loaded.ctc_blank is not None else runner.ctc_blank
        if blank is None:
            return None
        loss = torch.nn.functional.ctc_loss(
            log_probs[:1].transpose(0, 1).float(), batch.labels[:1, :labels], lengths[:1],
            batch.label_lengths[:1], blank=blank, reduction="sum", zero_infinity=True)
        return -float(loss) / max(labels, 1)
