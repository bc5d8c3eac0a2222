"""Whisper's decoder prompt: language and task tokens for multilingual checkpoints, refused for
English-only ones, and every position derived from the prompt (the first label row) follows it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from attnprobe.errors import InputError
from attnprobe.loading.whisper_prompt import set_whisper_prompt, whisper_prompt

SPECIAL = {"<|startoftranscript|>": 50258, "<|en|>": 50259, "<|de|>": 50261,
           "<|translate|>": 50358, "<|transcribe|>": 50359, "<|notimestamps|>": 50363}
UNKNOWN = 50257


class SpecialTokens:
    """The part of a Hugging Face tokenizer the prompt reads: ids of special tokens."""

    unk_token_id = UNKNOWN

    def convert_tokens_to_ids(self, token: str) -> int:
        return SPECIAL.get(token, UNKNOWN)


def model_with(vocab_size: int) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(vocab_size=vocab_size))


MULTILINGUAL, ENGLISH_ONLY = model_with(51865), model_with(51864)


def test_multilingual_prompt_holds_language_and_task():
    tokens = SpecialTokens()
    assert whisper_prompt(tokens, MULTILINGUAL) == [50258, 50259, 50359, 50363]
    assert whisper_prompt(tokens, MULTILINGUAL, "DE", "translate") == [50258, 50261, 50358, 50363]


def test_english_only_prompt_refuses_other_languages_and_tasks():
    tokens = SpecialTokens()
    assert whisper_prompt(tokens, ENGLISH_ONLY) == [50258, 50363]
    assert whisper_prompt(tokens, ENGLISH_ONLY, "en", "transcribe") == [50258, 50363]
    with pytest.raises(InputError, match="English-only"):
        whisper_prompt(tokens, ENGLISH_ONLY, "de")
    with pytest.raises(InputError, match="English-only"):
        whisper_prompt(tokens, ENGLISH_ONLY, task="translate")


def test_unknown_language_or_task_names_the_option():
    with pytest.raises(InputError, match="--language 'xx'"):
        whisper_prompt(SpecialTokens(), MULTILINGUAL, "xx")
    with pytest.raises(InputError, match="--task"):
        whisper_prompt(SpecialTokens(), MULTILINGUAL, task="summarise")


def test_label_scores_and_first_label_row_follow_the_prompt():
    transformers = pytest.importorskip("transformers")
    from attnprobe.adapters.hf_whisper import WhisperRunner
    from attnprobe.batch import SpeechBatch

    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=51865, num_mel_bins=4, d_model=8, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
        decoder_ffn_dim=16, max_source_positions=8, max_target_positions=16, pad_token_id=0,
        bos_token_id=50258, eos_token_id=50257, decoder_start_token_id=50258)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    runner = WhisperRunner(model)
    set_whisper_prompt(runner, SpecialTokens(), "de", "translate")
    prompt = [50258, 50261, 50358, 50363]
    assert runner.prompt_ids == prompt and runner.first_label_position == 3
    labels = torch.tensor([[11, 12, 13]])
    batch = SpeechBatch(torch.randn(1, 12, 4), torch.tensor([12]), labels, torch.tensor([3]))
    with torch.no_grad():
        scored = runner.label_log_probs(batch)
        features = runner.encoder_inputs(batch)["input_features"]
        logits = model(input_features=features,
                       decoder_input_ids=torch.tensor([prompt + [11, 12]])).logits
    # Row 3 (the last prompt position) predicts the first label, row 4 the second, ...
    expected = logits.log_softmax(-1)[0, 3:].gather(-1, labels[0, :, None])[:, 0]
    torch.testing.assert_close(scored[0], expected, rtol=1e-5, atol=1e-5)
