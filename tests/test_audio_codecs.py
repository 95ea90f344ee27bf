"""Real encode/decode round trips for cantata.audio (no mocks: libsndfile, FFmpeg, soxr)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf

from cantata.audio.codecs import (
    ALLOWED_SAMPLE_RATES,
    FILE_EXTENSIONS,
    MIME_TYPES,
    AudioEncodeError,
    bitrate_window,
    default_bitrate,
    encode,
    mp3_cbr_kbps,
)
from cantata.audio.decode import (
    INVALID_AUDIO_EMPTY,
    INVALID_AUDIO_FORMAT,
    INVALID_AUDIO_TOO_LONG,
    AudioDecodeError,
    decode_audio,
    probe_duration,
)

SR = 48000
SECONDS = 3.0


def tones(seconds: float = SECONDS, rate: int = SR) -> np.ndarray:
    """Different content per side so channel mix-ups show: 440 Hz left, 660 Hz right."""
    t = np.arange(int(seconds * rate)) / rate
    sides = [0.4 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]
    return np.stack(sides).astype(np.float32)


def best_corr(ref: np.ndarray, out: np.ndarray, max_lag: int = 0) -> float:
    """Correlation of ``out`` with ``ref`` at the best lag in [0, max_lag] (codec priming)."""
    n = min(len(ref), len(out) - max_lag) - 2 * max_lag
    lag = max(range(max_lag + 1), key=lambda k: float(np.dot(out[k : k + n], ref[:n])))
    return float(np.corrcoef(ref[:n], out[lag : lag + n])[0, 1])


def ffmpeg_file(container: str, codec: str, audio: np.ndarray, rate: int = SR) -> bytes:
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[audio.shape[0]]
    out = io.BytesIO()
    with av.open(out, "w", format=container) as c:
        stream = c.add_stream(codec, rate=rate, layout=layout)
        stream.format = stream.codec_context.codec.audio_formats[0].name
        frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)
    return out.getvalue()


def wav_bytes(audio: np.ndarray, rate: int = SR) -> bytes:
    out = io.BytesIO()
    sf.write(out, audio.T, rate, format="WAV", subtype="FLOAT")
    return out.getvalue()


_MPEG1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_frames(data: bytes) -> list[tuple[int, int]]:
    """``(kbps, bytes)`` of every frame, walking header to header; the file must be frames only."""
    frames, pos = [], 0
    while pos < len(data):
        header = int.from_bytes(data[pos : pos + 4], "big")
        assert header >> 21 == 0x7FF, f"lost MP3 frame sync at byte {pos}"
        version = (header >> 19) & 3
        kbps = (_MPEG1 if version == 3 else _MPEG2)[(header >> 12) & 15]
        rate = _MPEG_RATES[version][(header >> 10) & 3]
        size = (144 if version == 3 else 72) * kbps * 1000 // rate + ((header >> 9) & 1)
        frames.append((kbps, size))
        pos += size
    assert pos == len(data)
    return frames


# -- encode → decode round trips -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["MP3", "WAV", "FLAC", "OGG"])
def test_round_trip_keeps_rate_channels_duration_and_signal(fmt):
    source = tones()
    data = encode(source, SR, fmt.lower())
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels) == (SR, 2)
    assert info.frames == pytest.approx(source.shape[1], abs=1152 if fmt == "MP3" else 0)

    decoded = decode_audio(data)
    assert decoded.dtype == np.float32 and decoded.shape[0] == 2
    assert abs(decoded.shape[1] - source.shape[1]) <= (1152 if fmt == "MP3" else 0)
    for side in (0, 1):
        corr = best_corr(source[side], decoded[side])
        assert corr > (0.9999 if fmt in ("WAV", "FLAC") else 0.95), (side, corr)
    if fmt in ("WAV", "FLAC"):
        assert np.abs(decoded - source).max() <= 1.5 / 32768  # 16-bit quantisation only


def test_wav_float_is_bit_exact():
    source = tones()
    data = encode(source, SR, "WAV", wav_subtype="float")
    assert sf.info(io.BytesIO(data)).subtype == "FLOAT"
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == SR
    np.testing.assert_array_equal(decoded.T, source)


def test_mp3_trims_encoder_delay_exactly():
    """The LAME/Info header lets decoders drop delay and padding: same length, no time shift."""
    noise = (np.random.default_rng(0).standard_normal((2, 100_001)) * 0.1).astype(np.float32)
    decoded = decode_audio(encode(noise, SR, "MP3", bitrate_kbps=320))
    assert decoded.shape == noise.shape
    n, edge = noise.shape[1], 2000
    lags = list(range(-1500, 1501))
    scores = [np.dot(decoded[0, edge + k : n - edge + k], noise[0, edge : n - edge]) for k in lags]
    assert lags[int(np.argmax(scores))] == 0


@pytest.mark.parametrize(
    ("rate", "channels", "kbps"),
    [
        (48000, 2, 192),
        (48000, 1, 128),
        (44100, 2, 320),
        (32000, 2, 32),
        (22050, 2, 64),
        (16000, 1, 8),
        (8000, 1, 64),
    ],
)
def test_mp3_is_exact_cbr(rate, channels, kbps):
    data = encode(tones(), SR, "MP3", out_sample_rate=rate, channels=channels, bitrate_kbps=kbps)
    info_frame, *audio_frames = mp3_frames(data)
    assert b"Info" in data[: info_frame[1]]  # gapless header; may use a wider frame to fit
    assert {k for k, _ in audio_frames} == {kbps}
    frame_bytes = (1152 if rate >= 32000 else 576) * kbps * 125 / rate
    # Audio bytes = bitrate x duration, plus only the encoder delay and padding frames.
    assert 0 <= sum(n for _, n in audio_frames) - kbps * 125 * SECONDS <= 3 * frame_bytes
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels) == (rate, channels)
    assert info.duration == pytest.approx(SECONDS, abs=1e-3)


def test_mp3_snaps_non_standard_bitrates_to_legal_ones():
    assert mp3_cbr_kbps(48000, 192) == 192
    assert mp3_cbr_kbps(48000, 100) == 96
    assert mp3_cbr_kbps(48000, 144) == 128  # tie: the lower one
    assert mp3_cbr_kbps(22050, 144) == 144  # legal in MPEG-2
    assert {k for k, _ in mp3_frames(encode(tones(1.0), SR, "MP3", bitrate_kbps=100))[1:]} == {96}


@pytest.mark.parametrize("fmt", ["MP3", "WAV", "FLAC", "OGG"])
def test_mono_output_is_the_channel_average(fmt):
    source = tones()
    data = encode(source, SR, fmt, channels=1)
    assert sf.info(io.BytesIO(data)).channels == 1
    decoded = decode_audio(data)
    np.testing.assert_array_equal(decoded[0], decoded[1])
    assert best_corr(source.mean(axis=0), decoded[0]) > 0.95


def test_mono_input_can_be_written_as_stereo():
    mono = tones()[:1]
    data = encode(mono, SR, "FLAC", channels=2)
    decoded, _ = sf.read(io.BytesIO(data), dtype="float32")
    assert decoded.shape == (mono.shape[1], 2)
    np.testing.assert_array_equal(decoded[:, 0], decoded[:, 1])


@pytest.mark.parametrize(
    ("fmt", "rate"), [("WAV", 22050), ("MP3", 22050), ("OGG", 16000), ("FLAC", 16000)]
)
def test_resampled_output(fmt, rate):
    source = tones()
    data = encode(source, SR, fmt, out_sample_rate=rate)
    info = sf.info(io.BytesIO(data))
    assert info.samplerate == rate
    assert info.duration == pytest.approx(SECONDS, abs=0.002)
    decoded = decode_audio(data)  # back to 48 kHz
    assert decoded.shape[1] == pytest.approx(source.shape[1], abs=48)
    assert best_corr(source[1], decoded[1]) > 0.95


def test_clipping_and_non_finite_input_are_contained():
    loud = np.full((2, 4800), 3.0, dtype=np.float32)
    loud[0, :10] = np.nan
    decoded, _ = sf.read(io.BytesIO(encode(loud, SR, "WAV")), dtype="float32")
    assert np.isfinite(decoded).all() and decoded.max() <= 1.0
    assert decoded[100, 0] == pytest.approx(1.0, abs=1e-4)  # saturated
    floats, _ = sf.read(io.BytesIO(encode(loud, SR, "WAV", wav_subtype="FLOAT")), dtype="float32")
    assert np.isfinite(floats).all() and np.abs(floats).max() == 1.0


def test_ogg_bitrate_tracks_the_request():
    """Vorbis is VBR: the request picks a quality; achieved bitrate is a ballpark, monotonic."""
    rng = np.random.default_rng(1)
    music = tones(2.0) + (rng.standard_normal((2, 2 * SR)) * 0.05).astype(np.float32)
    achieved = {
        kbps: len(encode(music, SR, "OGG", bitrate_kbps=kbps)) * 8 / 2.0 / 1000
        for kbps in (64, 192, 500)
    }
    assert achieved[64] < achieved[192] < achieved[500]
    assert 0.5 * 192 < achieved[192] < 1.6 * 192, achieved


# -- limits and errors --------------------------------------------------------------------------


def test_bitrate_windows_and_defaults():
    assert bitrate_window("mp3", 11025, 2) == (8, 64)
    assert bitrate_window("MP3", 24000, 1) == (8, 160)
    assert bitrate_window("MP3", 44100, 2) == (32, 320)
    assert bitrate_window("OGG", 8000, 1) == (8, 40)
    assert bitrate_window("OGG", 12000, 1) == (16, 48)
    assert bitrate_window("OGG", 16000, 1) == (16, 96)
    assert bitrate_window("WAV", 48000, 2) is None and default_bitrate("FLAC", 48000, 2) is None
    assert default_bitrate("MP3", 48000, 2) == 192 and default_bitrate("OGG", 48000, 2) == 192
    for fmt in ("MP3", "OGG"):
        for rate in ALLOWED_SAMPLE_RATES[fmt]:
            for channels in (1, 2):
                low, high = bitrate_window(fmt, rate, channels)
                assert low <= default_bitrate(fmt, rate, channels) <= high
    assert 11025 not in ALLOWED_SAMPLE_RATES["OGG"] and 22050 not in ALLOWED_SAMPLE_RATES["OGG"]
    assert MIME_TYPES["MP3"] == "audio/mpeg" and FILE_EXTENSIONS["OGG"] == ".ogg"


@pytest.mark.parametrize(
    ("fmt", "kwargs", "match"),
    [
        ("MP3", {"bitrate_kbps": 16}, "outside 32-320"),
        ("MP3", {"out_sample_rate": 8000, "bitrate_kbps": 96}, "outside 8-64"),
        ("OGG", {"bitrate_kbps": 600}, "outside 64-500"),
        ("OGG", {"out_sample_rate": 22050}, "22050 Hz"),
        ("MP3", {"out_sample_rate": 96000}, "96000 Hz"),
        ("AAC", {}, "unsupported output format"),
        ("WAV", {"channels": 3}, "channel count"),
        ("WAV", {"wav_subtype": "PCM_8"}, "WAV subtype"),
    ],
)
def test_encode_rejects_bad_requests(fmt, kwargs, match):
    with pytest.raises(AudioEncodeError, match=match):
        encode(tones(0.1), SR, fmt, **kwargs)


def test_encode_rejects_bad_audio_shapes():
    assert issubclass(AudioEncodeError, ValueError)
    for shape in ((3, 100), (2, 0), (1, 2, 3)):
        with pytest.raises(AudioEncodeError, match="shape"):
            encode(np.zeros(shape, np.float32), SR, "WAV")


def _code(data: bytes, **kwargs) -> str:
    with pytest.raises(AudioDecodeError) as err:
        decode_audio(data, **kwargs)
    return err.value.code


def test_decode_error_codes():
    assert _code(b"") == INVALID_AUDIO_EMPTY
    assert _code(wav_bytes(np.zeros((2, 0), np.float32))) == INVALID_AUDIO_EMPTY
    assert _code(b"this is a text file, not audio\n" * 20) == INVALID_AUDIO_FORMAT
    assert _code(b"\x89PNG\r\n\x1a\n" + bytes(64)) == INVALID_AUDIO_FORMAT
    assert _code(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60") == INVALID_AUDIO_FORMAT  # MIDI
    assert _code(encode(tones(), SR, "FLAC")[:40]) == INVALID_AUDIO_FORMAT  # truncated header
    assert _code(wav_bytes(tones(0.1), rate=1000)) == INVALID_AUDIO_FORMAT  # absurd sample rate
    assert _code(wav_bytes(tones()), max_seconds=1.0) == INVALID_AUDIO_TOO_LONG
    assert _code(ffmpeg_file("ipod", "aac", tones()), max_seconds=2.5) == INVALID_AUDIO_TOO_LONG
    assert decode_audio(wav_bytes(tones()), max_seconds=3.0).shape == (2, 144_000)  # at the limit


def test_playlists_cannot_read_server_files(tmp_path, monkeypatch):
    """Unrestricted FFmpeg would follow an uploaded ffconcat list and decode a local file."""
    (tmp_path / "secret.wav").write_bytes(wav_bytes(tones(0.5)))
    monkeypatch.chdir(tmp_path)
    assert _code(b"ffconcat version 1.0\nfile secret.wav\n") == INVALID_AUDIO_FORMAT


def test_decode_survives_garbage():
    rng = np.random.default_rng(7)
    samples = [rng.bytes(int(n)) for n in rng.integers(1, 4000, size=40)]
    valid = [encode(tones(0.5), SR, fmt) for fmt in ("MP3", "WAV", "FLAC", "OGG")]
    valid.append(ffmpeg_file("ipod", "aac", tones(0.5)))
    for data in valid:
        samples.append(data[: len(data) // 3])
        mutated = bytearray(data)
        for pos in rng.integers(0, len(mutated), size=20):
            mutated[pos] = int(rng.integers(0, 256))
        samples.append(bytes(mutated))
    for data in samples:
        try:
            audio = decode_audio(data, max_seconds=5)
        except AudioDecodeError as err:
            assert err.code in (INVALID_AUDIO_EMPTY, INVALID_AUDIO_FORMAT, INVALID_AUDIO_TOO_LONG)
        else:
            assert audio.shape[0] == 2 and np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


# -- decoding formats FFmpeg handles ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [
        ("ipod", "aac", 44100),
        ("adts", "aac", 48000),
        ("ogg", "libopus", 48000),
        ("webm", "libopus", 48000),
    ],
)
def test_decodes_aac_and_opus(container, codec, rate):
    source = tones(rate=rate)
    decoded = decode_audio(ffmpeg_file(container, codec, source, rate))
    assert decoded.shape[0] == 2
    # AAC keeps its 1024-sample priming (FFmpeg does not trim it here): allow a frame or two.
    assert decoded.shape[1] == pytest.approx(SR * SECONDS, abs=2048 * SR / rate)
    reference = tones()
    for side in (0, 1):
        assert best_corr(reference[side], decoded[side], max_lag=1200) > 0.95


def test_probe_duration():
    assert probe_duration(encode(tones(), SR, "OGG")) == pytest.approx(SECONDS, abs=1e-3)
    assert probe_duration(encode(tones(), SR, "MP3")) == pytest.approx(SECONDS, abs=0.03)
    webm = ffmpeg_file("webm", "libopus", tones())
    assert probe_duration(webm) == pytest.approx(SECONDS, abs=0.03)
    with pytest.raises(AudioDecodeError) as err:
        probe_duration(b"not audio at all")
    assert err.value.code == INVALID_AUDIO_FORMAT


def test_mono_input_is_duplicated_and_resampled():
    mono = tones(rate=16000)[:1]
    decoded = decode_audio(wav_bytes(mono, rate=16000))
    assert decoded.shape == (2, SR * 3)
    np.testing.assert_array_equal(decoded[0], decoded[1])
    assert best_corr(tones()[0], decoded[0]) > 0.999


def test_surround_keeps_front_pair_and_mixes_the_rest():
    front = tones()
    centre = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(front.shape[1]) / SR).astype(np.float32)
    surround = np.zeros((6, front.shape[1]), np.float32)
    surround[:2] = front
    surround[2] = centre
    for data in (wav_bytes(surround), ffmpeg_file("ipod", "aac", surround)):
        decoded = decode_audio(data)
        assert decoded.shape[0] == 2
        spectrum = np.abs(np.fft.rfft(decoded[:, : SR // 2 * 4], axis=1))  # 2 s: 0.5 Hz bins
        peak = lambda side, hz: spectrum[side, int(hz * 2)]  # noqa: E731
        # The front pair stays put; the centre reaches both sides.
        assert peak(0, 440) > 10 * peak(0, 660) and peak(1, 660) > 10 * peak(1, 440)
        assert peak(0, 1000) > 0.1 * peak(0, 440) and peak(1, 1000) > 0.1 * peak(1, 660)


def test_many_channels_decode_without_crashing():
    """PyAV 18 reads past planar frames of 8+ channels; the decoder must not go there."""
    wide = np.tile(tones(0.5), (5, 1)) * 0.5
    for data in (wav_bytes(wide), encode(tones(0.5), SR, "OGG")):
        assert decode_audio(data).shape == (2, SR // 2)
    out = io.BytesIO()
    sf.write(out, wide.T, SR, format="OGG", subtype="VORBIS")  # 10-channel Vorbis is planar
    assert decode_audio(out.getvalue()).shape == (2, SR // 2)
