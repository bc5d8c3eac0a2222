"""Character labels of attnprobe's own Conformer checkpoints: blank, end of sentence, space,
apostrophe, a-z.

Usage::

    CHARACTER_LABELS.encode("the dog")         # [23, 11, 8, 2, 7, 18, 10]: no end symbol
    CHARACTER_LABELS.decode([23, 11, 8, 1])    # 'the': stops at end of sentence (1)
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from attnprobe.models.config import BLANK_INDEX, END_OF_SENTENCE_INDEX, FIRST_REAL_LABEL


@dataclass(frozen=True)
class CharacterLabels:
    """Character labels: 0 = blank/padding, 1 = end of sentence, then space, apostrophe, a-z.

    Matches the model convention of attnprobe's Conformer AED (padding index 0, end-of-sentence
    index 1). Space separates words, so word boundaries survive in the label sequence.
    """

    symbols: tuple[str, ...] = (" ", "'", *string.ascii_lowercase)
    blank_index: int = BLANK_INDEX
    end_of_sentence_index: int = END_OF_SENTENCE_INDEX

    @property
    def vocab_size(self) -> int:
        """Number of output classes including blank and end of sentence (30)."""
        return len(self.symbols) + FIRST_REAL_LABEL

    def encode(self, text: str) -> list[int]:
        """Label indices of ``text`` (no end-of-sentence symbol appended)."""
        indices = []
        for character in text:
            if character not in self.symbols:
                raise ValueError(
                    f"character {character!r} in {text!r} has no label; the label set is "
                    "lowercase a-z, apostrophe and space: lowercase the text and drop punctuation"
                )
            indices.append(self.symbols.index(character) + FIRST_REAL_LABEL)
        return indices

    def decode(self, indices: list[int]) -> str:
        """Text of label indices; stops at end of sentence and skips blanks."""
        characters = []
        for index in indices:
            if index == self.end_of_sentence_index:
                break
            if index != self.blank_index:
                characters.append(self.symbols[index - FIRST_REAL_LABEL])
        return "".join(characters)


CHARACTER_LABELS = CharacterLabels()
