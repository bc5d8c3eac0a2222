"""The command line as a hostile user drives it: damaged headers, odd rates, channel counts,
lengths and encodings, undecodable transcripts, path names and ids that try to escape, outputs
aimed at the inputs, silence and noise. Every run keeps the contract of :func:`abuse.checked_run`
(documented exit code, one error line and no traceback, inputs byte-identical, nothing outside
``--out``); each case also checks what it is about."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from abuse import checked_run
from cli_fixtures import (
    CLIP_TEXT,
    shipped_words,
    tiny_checkpoint,
    tiny_wav2vec2_ctc_folder,
    write_clip,
)
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from attnprobe.audio import SAMPLE_RATES, SHIPPED_UTTERANCE, SHORTEST_SECONDS

NINE_WORDS = " ".join(word["word"] for word in shipped_words())
FIXTURE = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("abuse-model") / "tiny").parent


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path


def wav_bytes(format_tag: int, channels: int, rate: int, bits: int, payload: bytes,
              data_size: int | None = None) -> bytes:
    """A RIFF WAVE file whose header says whatever it is told."""
    block = max(1, channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, (rate * block) & 0xFFFFFFFF,
                      block, bits)
    size = len(payload) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", size & 0xFFFFFFFF) + payload
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


def speech_pcm16(seconds: float, rate: int) -> bytes:
    import soundfile

    samples, source_rate = soundfile.read(str(SHIPPED_UTTERANCE), dtype="int16")
    count = int(seconds * rate)
    positions = np.minimum((np.arange(count) * source_rate / rate).astype(int), len(samples) - 1)
    return samples[positions].astype("<i2").tobytes()


# ----------------------------------------------------------------------------- the reported cases


def test_a_header_claiming_a_megahertz_rate_is_refused_before_reading(
        model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = root / "huge.wav"
    audio.write_bytes(wav_bytes(1, 1, 1_092_676, 16, speech_pcm16(0.8, 16000)))
    run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                      CLIP_TEXT)
    assert run.code == 2 and "1092676 Hz" in run.err and "header is damaged" in run.err


def test_a_rate_coprime_with_the_models_is_resampled_and_aligned(
        model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = root / "odd.wav"
    audio.write_bytes(wav_bytes(1, 1, 16_001, 16, speech_pcm16(0.8, 16_001)))
    run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                      CLIP_TEXT, "--format", "json")
    assert run.code == 0
    # 0.8 s of audio gives 78 log-mel frames of 10 ms, as at 16 kHz.
    assert json.loads(run.out)["duration_s"] == pytest.approx(0.78, abs=0.011)


def test_out_equal_to_the_input_recording_is_refused(
        model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = write_clip(root / "x.wav")
    run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                      CLIP_TEXT, "--out", audio)
    assert run.code == 2 and "one of the inputs" in run.err


@pytest.mark.parametrize("command", ["align", "report"])
def test_out_equal_to_the_input_folder_is_refused(
        command: str, model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = root / "corpus"
    for name in ("a", "b"):
        write_clip(folder / f"{name}.wav")
        (folder / f"{name}.txt").write_text(CLIP_TEXT)
    run = checked_run(capsys, root, command, "--model", model, "--audio", folder, "--out",
                      folder)
    assert run.code == 2 and "folder the inputs are in" in run.err


def test_an_output_that_would_replace_a_folder_of_inputs_is_refused(
        model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The item "data" would get the report folder out/data, which is where its audio lives.
    write_clip(root / "data" / "clip.wav")
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps([{"id": "data", "audio": "data/clip.wav",
                                     "text": CLIP_TEXT}]))
    run = checked_run(capsys, root, "report", "--model", model, "--audio", manifest, "--out",
                      root)
    assert run.code == 2 and "--out" in run.err


def test_an_existing_out_file_is_kept_unless_overwrite(
        model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = write_clip(root / "in" / "clip.wav")
    notes = root / "out" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("precious")
    run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                      CLIP_TEXT, "--out", notes, out=notes)
    assert run.code == 2 and "--overwrite" in run.err and notes.read_text() == "precious"
    run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                      CLIP_TEXT, "--out", notes, "--overwrite", out=notes)
    assert run.code == 0 and notes.read_text().startswith("clip: gradient_viterbi")


def test_an_input_named_like_a_summary_file_gets_its_own_name(
        model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("summary", "report"):
        write_clip(root / "in" / f"{name}.wav", sidecar_text=CLIP_TEXT)
    out = root / "out"
    run = checked_run(capsys, root, "align", "--model", model, "--audio", root / "in",
                      "--format", "json", "--out", out, out=out)
    assert run.code == 0
    assert json.loads((out / "summary-2.json").read_text())["id"] == "summary-2"
    assert json.loads((out / "summary.json").read_text())["succeeded"] == 2


def test_a_text_file_that_is_not_utf8_is_one_error(
        model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = write_clip(root / "clip.wav")
    transcript = root / "clip-text.txt"
    transcript.write_bytes("my br\xf6ther".encode("latin-1"))
    run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                      transcript)
    assert run.code == 2 and "not UTF-8" in run.err and "0xf6" in run.err


def test_a_sidecar_that_is_not_utf8_fails_its_file_alone(
        model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = root / "in"
    for name in ("a", "b", "c"):
        write_clip(folder / f"{name}.wav")
        (folder / f"{name}.txt").write_text(CLIP_TEXT)
    (folder / "b.txt").write_bytes("my br\xf6ther".encode("latin-1"))
    out = root / "out"
    run = checked_run(capsys, root, "align", "--model", model, "--audio", folder, "--out", out,
                      out=out, codes=(1,))
    assert "1 of 3 files failed" in run.err and "not UTF-8" in run.err
    assert (out / "a.txt").is_file() and (out / "c.txt").is_file() and not (out / "b.txt").exists()


def test_a_mistyped_text_path_is_not_aligned_as_the_transcript(
        model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = write_clip(root / "clip.wav")
    run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                      "transcrpt.txt")
    assert run.code == 2 and "no such file" in run.err


@pytest.mark.parametrize("sound", ["silence", "noise"])
def test_silence_and_noise_carry_a_warning_in_every_format(
        sound: str, model: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile

    samples = np.zeros(48_000, np.float32) if sound == "silence" else \
        np.random.default_rng(0).uniform(-1, 1, 48_000).astype(np.float32)
    audio = root / f"{sound}.wav"
    soundfile.write(str(audio), samples, 16_000)
    outputs = {}
    for output_format in ("json", "table", "textgrid", "ctm"):
        out = root / f"aligned.{output_format}"
        run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                          NINE_WORDS, "--format", output_format, "--out", out, out=out)
        assert run.code == 0 and "attnprobe: warning:" in run.err and "no speech" in run.err
        outputs[output_format] = out.read_text()
    assert any("no speech" in warning for warning in json.loads(outputs["json"])["warnings"])
    assert "warning: no speech" in outputs["table"]
    assert 'name = "warnings"' in outputs["textgrid"]
    assert outputs["ctm"].startswith(f";; {sound} warning: no speech")
    run = checked_run(capsys, root, "report", "--model", model, "--audio", audio, "--text",
                      NINE_WORDS, "--projections", "1", "--max-frames", "8",
                      "--out", root / "report", out=root / "report")
    report = json.loads((root / "report" / "report.json").read_text())
    assert run.code == 0 and any("no speech" in warning for warning in report["warnings"])
    assert "Warning: no speech" in (root / "report" / "report.html").read_text()


def test_a_damaged_hugging_face_folder_is_one_error(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    folder = tiny_wav2vec2_ctc_folder(root / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    audio = write_clip(root / "clip.wav")
    run = checked_run(capsys, root, "report", "--model", folder, "--audio", audio)
    assert run.code == 2 and "damaged or incomplete" in run.err


def test_audio_longer_than_whispers_window_is_refused_before_the_model_loads(
        root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import soundfile

    import attnprobe.jobs.validation as validation

    def never(*arguments: object, **options: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(validation, "load_model", never)
    audio = root / "long.wav"
    soundfile.write(str(audio), np.zeros(16_000 * 31, np.float32), 16_000)
    for command in (["align", "--method", "cross-attention", "--text", "hello there"],
                    ["report"]):
        run = checked_run(capsys, root, *command, "--audio", audio)
        assert run.code == 2 and "31.0 s" in run.err and "at most 30 s" in run.err, run.err
        assert "the model was loaded" not in run.err
    assert "--method gradient" in checked_run(
        capsys, root, "align", "--method", "ctc", "--text", "hello there", "--audio", audio).err
    # Gradient alignment reads any length, window by window: the check lets it through.
    run = checked_run(capsys, root, "align", "--audio", audio, "--text", "hello there")
    assert "the model was loaded" in run.err, run.err


def test_debug_shows_the_traceback_and_an_unforeseen_failure_is_one_line(
        model: Path, root: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import attnprobe.reporting.alignments as alignments

    audio = write_clip(root / "clip.wav")

    def broken(*arguments: object) -> None:
        raise RuntimeError("something attnprobe did not foresee")

    monkeypatch.setattr(alignments, "read_audio", broken)
    run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                      CLIP_TEXT, codes=(3,))
    (line,) = run.err.strip().splitlines()
    assert "unexpected RuntimeError" in line and "--debug" in line
    from cli_fixtures import run_cli

    debugged = run_cli(capsys, "--debug", "align", "--model", model, "--audio", audio,
                       "--text", CLIP_TEXT)
    assert debugged.code == 3 and "Traceback" in debugged.err
    assert debugged.err.strip().splitlines()[-1] == line


@pytest.mark.parametrize("arguments", [["align", "--audio"], ["align", "--nonsense"],
                                       ["report", "--audio", "x.wav", "--timeout", "nan"],
                                       ["align", "--audio", "x.wav", "--blank", "nan"]])
def test_a_malformed_command_line_is_one_line(arguments: list[str], root: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        checked_run(capsys, root, *arguments)
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("attnprobe: error: ") and "--help" in line


# ----------------------------------------------------------------------------- generated cases


HEADER_FIELDS = {
    "format_tag": st.sampled_from([3, 6, 7, 0xFFFE, 0, 2, 0x55, 0xFFFF]),
    "channels": st.one_of(st.sampled_from([0, 2, 64, 65, 65535]), st.integers(0, 0xFFFF)),
    "rate": st.one_of(st.sampled_from([0, 1, 3999, 4000, 8000, 16001, 44100, 384000, 384001,
                                       1_092_676, 0xFFFFFFFF]), st.integers(0, 0xFFFFFFFF)),
    "bits": st.sampled_from([0, 1, 8, 12, 24, 32, 64, 65535]),
    "payload": st.sampled_from(["empty", "junk", "short"]),
    "data_size": st.one_of(st.sampled_from([0, 1, 2**31, 0xFFFFFFFF]), st.integers(0, 2**32 - 1)),
}


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE)
@given(changes=st.lists(st.sampled_from(sorted(HEADER_FIELDS)), max_size=3, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({name: HEADER_FIELDS[name] for name in names})))
def test_any_wav_header_gives_an_alignment_or_one_error(
        model: Path, capsys: pytest.CaptureFixture[str], changes: dict) -> None:
    """A valid 16 kHz mono 16-bit header with up to three fields set to anything."""
    fields = {"format_tag": 1, "channels": 1, "rate": 16000, "bits": 16, "payload": "speech",
              "data_size": None, **changes}
    content = {"speech": speech_pcm16(0.8, 16000), "empty": b"", "short": b"\x01\x02\x03",
               "junk": bytes(range(256)) * 40}[fields.pop("payload")]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        audio = root / "header.wav"
        audio.write_bytes(wav_bytes(**fields, payload=content))
        out = root / "out.json"
        run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                          CLIP_TEXT, "--format", "json", "--out", out, out=out)
        event(f"exit code {run.code}")
        low, high = SAMPLE_RATES
        if not low <= fields["rate"] <= high:
            assert run.code == 2
        assert out.exists() == (run.code == 0)


ENCODINGS = ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW", "PCM_U8"]


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE)
@given(rate=st.one_of(st.sampled_from([3999, 4000, 8000, 11025, 22050, 44100, 48000, 96000,
                                       384000, 384001]), st.integers(2000, 400_000)),
       channels=st.integers(1, 3), seconds=st.floats(0.02, 1.0),
       encoding=st.sampled_from(ENCODINGS), container=st.sampled_from(["wav", "flac"]))
def test_any_rate_channel_count_length_and_encoding_gives_an_alignment_or_one_error(
        model: Path, capsys: pytest.CaptureFixture[str], rate: int, channels: int,
        seconds: float, encoding: str, container: str) -> None:
    import soundfile

    assume(soundfile.check_format(container.upper(), encoding))
    frames = max(1, int(seconds * rate))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        audio = root / f"clip.{container}"
        signal = np.sin(2 * np.pi * 220 * np.arange(frames) / rate) * 0.3
        try:
            soundfile.write(str(audio), np.repeat(signal[:, None], channels, axis=1), rate,
                            subtype=encoding)
        except (RuntimeError, ValueError):
            assume(False)  # soundfile cannot write this combination (FLAC above 655 kHz, ...)
        run = checked_run(capsys, root, "align", "--model", model, "--audio", audio, "--text",
                          "my", "--format", "json")
        event(f"exit code {run.code}")
        low, high = SAMPLE_RATES
        if not low <= rate <= high or frames / rate < SHORTEST_SECONDS:
            assert run.code == 2
        if run.code == 0:
            # The valid 10 ms log-mel frames: up to 25 ms short of the audio.
            assert json.loads(run.out)["duration_s"] == pytest.approx(frames / rate, abs=0.03)


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURE)
@given(text=st.one_of(st.text(alphabet="my brothe ", min_size=1, max_size=12),
                     st.text(alphabet="my brothé\u00a0\u2019", min_size=1, max_size=12),
                     st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]),
       where=st.sampled_from(["sidecar", "text-file", "argument"]))
def test_any_transcript_in_any_encoding_gives_an_alignment_or_one_error(
        model: Path, capsys: pytest.CaptureFixture[str], text: str, encoding: str,
        where: str) -> None:
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        assume(False)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        audio = write_clip(root / "clip.wav")
        arguments: list[object] = ["align", "--model", model, "--audio", audio,
                                   "--format", "json"]
        if where == "sidecar":
            (root / "clip.txt").write_bytes(data)
        elif where == "text-file":
            (root / "transcript.txt").write_bytes(data)
            arguments += ["--text", root / "transcript.txt"]
        else:
            # What a shell hands over for bytes that are not UTF-8: surrogate escapes.
            arguments += ["--text", data.decode("utf-8", errors="surrogateescape")]
        run = checked_run(capsys, root, *arguments)
        event(f"exit code {run.code}")
        if run.code == 0:
            assert json.loads(run.out)["text"].split() == text.split()


NAME_CHARACTERS = st.characters(codec="utf-8", exclude_characters="/\x00")


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURE)
@given(names=st.lists(st.text(NAME_CHARACTERS, min_size=1, max_size=20), min_size=1,
                      max_size=3, unique=True),
       ids=st.lists(st.one_of(st.text(max_size=30), st.sampled_from(
           ["..", "../escaped", "/tmp/absolute", "a/../../b", ".hidden", "summary",
            "SUMMARY", "report.html", "~", "-rf", "con", "x" * 300])), min_size=3, max_size=3))
def test_any_file_names_and_ids_stay_inside_out(
        model: Path, capsys: pytest.CaptureFixture[str], names: list[str], ids: list[str]
        ) -> None:
    assume(all(name not in (".", "..") for name in names))
    assume(len({name.casefold() for name in names}) == len(names))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        entries = []
        for index, name in enumerate(names):
            try:
                audio = write_clip(root / "in" / f"{name}.wav")
            except OSError:
                assume(False)  # a name longer than the file system allows
            entries.append({"id": ids[index % len(ids)], "audio": audio.name, "text": CLIP_TEXT})
        manifest = root / "in" / "manifest.jsonl"
        manifest.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
        out = root / "out"
        run = checked_run(capsys, root, "align", "--model", model, f"--audio={manifest}",
                          "--format", "json", f"--out={out}", out=out, codes=(0,))
        written = sorted(path.name for path in out.iterdir() if path.name != ".attnprobe")
        assert len(written) == len(entries) + 1 and "summary.json" in written
        assert all(not name.startswith(".") for name in written)
        assert run.code == 0
