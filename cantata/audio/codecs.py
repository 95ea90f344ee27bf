"""Encode generated audio (float32 ``[channels, samples]``) into the delivery formats.

The sample-rate and bitrate limits live here so that the encoder and the API validator share
one source of truth (Runware's audioInference windows). MP3 is exact constant bitrate. OGG is
Vorbis through libsndfile, which steers the encoder only by a VBR quality level, so an OGG
bitrate is a *target* for VBR, never exact: it picks the quality whose libvorbis nominal
bitrate matches, and real files land around it by content (measured on synthetic mixes and
noise: 0.6x-1.5x; 150-232 kbps for the 192 kbps default at 48 kHz stereo).
"""

from __future__ import annotations

import io

import av
import numpy as np
import soundfile as sf
import soxr

from ..errors import CantataError


class AudioEncodeError(CantataError, ValueError):
    """The request cannot be encoded as asked (format, sample rate, channels or bitrate). Task
    validation keeps such requests out, so for a client this is a failed generation."""

    def __init__(self, message: str) -> None:
        super().__init__("inferenceError", message)


FORMATS = ("MP3", "WAV", "FLAC", "OGG")
MIME_TYPES = {"MP3": "audio/mpeg", "WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg"}
FILE_EXTENSIONS = {"MP3": ".mp3", "WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg"}

_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# Runware lists rates for the lossy formats; WAV and FLAC are given the same nine.
ALLOWED_SAMPLE_RATES: dict[str, tuple[int, ...]] = {
    "MP3": _RATES,
    "WAV": _RATES,
    "FLAC": _RATES,
    "OGG": (8000, 12000, 16000, 24000, 32000, 44100, 48000),  # no 11.025/22.05 kHz
}
ALLOWED_CHANNELS = (1, 2)
WAV_SUBTYPES = ("PCM_16", "FLOAT")

# MP3 bitrate window (kbps) per sample rate, the same for mono and stereo.
_MP3_WINDOWS = {
    **dict.fromkeys((8000, 11025, 12000), (8, 64)),
    **dict.fromkeys((16000, 22050, 24000), (8, 160)),
    **dict.fromkeys((32000, 44100, 48000), (32, 320)),
}
# The only bitrates an MP3 frame header can signal: MPEG-1 Layer III (32-48 kHz) and
# MPEG-2/2.5 Layer III (8-24 kHz).
_MPEG1_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_KBPS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)

# OGG bitrate window (kbps) per (sample rate, channels). The three mono rows at 8-16 kHz are
# Runware's documented ones. Every other row is measured: libvorbis 1.3.7's nominal bitrate
# (through libsndfile 1.2.2) at its lowest and highest quality, rounded. Requests under a
# documented minimum still get quality 0, whose files are larger (e.g. ~16-20 kbps at 8 kHz).
_OGG_WINDOWS = {
    (8000, 1): (8, 40),
    (12000, 1): (16, 48),
    (16000, 1): (16, 96),
    # measured
    (8000, 2): (18, 64),
    (12000, 2): (26, 88),
    (16000, 2): (35, 172),
    (24000, 1): (24, 90),
    (24000, 2): (37, 172),
    (32000, 1): (42, 190),
    (32000, 2): (56, 380),
    (44100, 1): (48, 240),
    (44100, 2): (64, 500),
    (48000, 1): (48, 240),
    (48000, 2): (64, 500),
}

# libvorbis 1.3.7's nominal bitrate (kbps) at libsndfile Vorbis quality 0.0, 0.1, ..., 1.0
# (oggenc -q 0..10), read from the identification headers of real encodes. A requested bitrate
# becomes the quality whose nominal bitrate matches it, interpolating linearly between steps.
_VORBIS_QUALITIES = np.linspace(0.0, 1.0, 11)
_VORBIS_NOMINAL_KBPS = {
    (8000, 1): (14.0, 16.8, 19.6, 22.4, 25.2, 28.0, 30.8, 33.6, 36.4, 39.2, 42.0),
    (8000, 2): (18.0, 22.6, 27.2, 31.8, 36.4, 41.0, 45.6, 50.2, 54.8, 59.4, 64.0),
    (12000, 1): (20.0, 23.0, 26.0, 29.0, 32.0, 35.0, 38.0, 41.0, 44.0, 47.0, 50.0),
    (12000, 2): (26.0, 32.2, 38.4, 44.6, 50.8, 57.0, 63.2, 69.4, 75.6, 81.8, 88.0),
    (16000, 1): (24.0, 32.0, 40.0, 48.0, 56.0, 64.0, 71.2, 78.4, 85.6, 92.8, 100.0),
    (16000, 2): (34.7, 45.3, 56.0, 66.7, 77.3, 88.0, 104.8, 121.6, 138.4, 155.2, 172.0),
    (24000, 1): (24.0, 30.4, 35.3, 40.2, 45.1, 50.0, 58.0, 66.0, 74.0, 82.0, 90.0),
    (24000, 2): (36.7, 45.3, 56.0, 66.7, 77.3, 88.0, 104.8, 121.6, 138.4, 155.2, 172.0),
    (32000, 1): (42.0, 52.0, 64.0, 72.0, 78.0, 86.0, 92.0, 110.0, 120.0, 140.0, 190.0),
    (32000, 2): (56.0, 70.0, 90.0, 112.0, 120.0, 150.0, 180.0, 200.0, 230.0, 300.0, 380.0),
    (44100, 1): (48.0, 60.0, 70.0, 80.0, 86.0, 96.0, 110.0, 120.0, 140.0, 160.0, 240.0),
    (44100, 2): (64.0, 80.0, 96.0, 112.0, 128.0, 160.0, 192.0, 224.0, 256.0, 320.0, 500.0),
    (48000, 1): (48.0, 60.0, 70.0, 80.0, 86.0, 96.0, 110.0, 120.0, 140.0, 160.0, 240.0),
    (48000, 2): (64.0, 80.0, 96.0, 112.0, 128.0, 160.0, 192.0, 224.0, 256.0, 320.0, 500.0),
}
# OGG defaults to quality 0.6 (oggenc -q 6): 192 kbps at 44.1/48 kHz stereo, matching MP3.
_DEFAULT_VORBIS_STEP = 6

# libsndfile 1.2.2's Vorbis writer segfaults when handed a few million frames in one call.
_WRITE_BLOCK = 1 << 16


def _format(fmt: str) -> str:
    name = str(fmt).upper()
    if name not in FORMATS:
        expected = ", ".join(FORMATS)
        raise AudioEncodeError(f"unsupported output format {fmt!r}; expected one of {expected}")
    return name


def _check_layout(fmt: str, sample_rate: int, channels: int) -> None:
    if sample_rate not in ALLOWED_SAMPLE_RATES[fmt]:
        allowed = ", ".join(map(str, ALLOWED_SAMPLE_RATES[fmt]))
        raise AudioEncodeError(f"{fmt} does not support {sample_rate} Hz; allowed: {allowed}")
    if channels not in ALLOWED_CHANNELS:
        raise AudioEncodeError(f"unsupported channel count {channels}; expected 1 or 2")


def bitrate_window(fmt: str, sample_rate: int, channels: int) -> tuple[int, int] | None:
    """Allowed ``(min, max)`` kbps for a lossy format, or None for lossless ones (no bitrate)."""
    fmt = _format(fmt)
    _check_layout(fmt, sample_rate, channels)
    if fmt == "MP3":
        return _MP3_WINDOWS[sample_rate]
    if fmt == "OGG":
        return _OGG_WINDOWS[(sample_rate, channels)]
    return None


def default_bitrate(fmt: str, sample_rate: int, channels: int) -> int | None:
    """Bitrate (kbps) used when a request names none; None for lossless formats."""
    fmt = _format(fmt)
    _check_layout(fmt, sample_rate, channels)
    if fmt == "MP3":
        return 192 if sample_rate >= 32000 else 128 if sample_rate >= 16000 else 64
    if fmt == "OGG":
        return round(_VORBIS_NOMINAL_KBPS[(sample_rate, channels)][_DEFAULT_VORBIS_STEP])
    return None


def mp3_cbr_kbps(sample_rate: int, kbps: float) -> int:
    """The constant bitrate an MP3 will carry for a request: the request itself when it is a
    standard MPEG bitrate, otherwise the nearest one (frame headers can signal no other)."""
    table = _MPEG1_KBPS if sample_rate >= 32000 else _MPEG2_KBPS
    return min(table, key=lambda b: (abs(b - kbps), b))


def encode(
    audio: np.ndarray,
    sample_rate: int,
    fmt: str,
    *,
    out_sample_rate: int | None = None,
    channels: int | None = None,
    bitrate_kbps: float | None = None,
    wav_subtype: str = "PCM_16",
) -> bytes:
    """Encode ``audio`` (float32 ``[channels, samples]``, 1-D = mono) at ``sample_rate`` as ``fmt``.

    ``out_sample_rate`` / ``channels`` default to the input's. ``bitrate_kbps`` must lie in
    :func:`bitrate_window` for MP3 and OGG (default :func:`default_bitrate`); MP3 snaps it to a
    standard bitrate (:func:`mp3_cbr_kbps`), lossless formats ignore it. WAV is 16-bit PCM
    unless ``wav_subtype="FLOAT"``; FLAC is 16-bit.
    """
    fmt = _format(fmt)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[0] not in ALLOWED_CHANNELS or audio.shape[1] == 0:
        raise AudioEncodeError(f"audio must be [1 or 2 channels, samples], got shape {audio.shape}")
    if sample_rate <= 0:
        raise AudioEncodeError(f"invalid input sample rate {sample_rate}")
    rate = sample_rate if out_sample_rate is None else out_sample_rate
    channels = audio.shape[0] if channels is None else channels
    _check_layout(fmt, rate, channels)
    if fmt == "WAV" and (wav_subtype := str(wav_subtype).upper()) not in WAV_SUBTYPES:
        expected = ", ".join(WAV_SUBTYPES)
        raise AudioEncodeError(f"unsupported WAV subtype {wav_subtype!r}; expected {expected}")

    window = bitrate_window(fmt, rate, channels)
    kbps = bitrate_kbps
    if window is not None:
        if kbps is None:
            kbps = default_bitrate(fmt, rate, channels)
        elif not window[0] <= kbps <= window[1]:
            raise AudioEncodeError(
                f"{fmt} bitrate {kbps} kbps is outside {window[0]}-{window[1]} kbps "
                f"at {rate} Hz with {channels} channel(s)"
            )

    audio = _prepare(audio, sample_rate, rate, channels)
    if fmt == "MP3":
        return _encode_mp3(audio, rate, mp3_cbr_kbps(rate, kbps))
    if fmt == "OGG":
        quality = float(np.interp(kbps, _VORBIS_NOMINAL_KBPS[(rate, channels)], _VORBIS_QUALITIES))
        # libsndfile's compression level is the inverse of Vorbis quality.
        return _write_soundfile(audio, rate, "OGG", "VORBIS", compression_level=1.0 - quality)
    if fmt == "FLAC":
        return _write_soundfile(audio, rate, "FLAC", "PCM_16")
    return _write_soundfile(audio, rate, "WAV", wav_subtype)


def _prepare(audio: np.ndarray, rate_in: int, rate_out: int, channels: int) -> np.ndarray:
    """Match the channel count (before resampling: less work), resample, then sanitise: soxr
    can overshoot full scale, and float WAV, MP3 and Vorbis would carry overs or NaNs through."""
    if channels == 1 and audio.shape[0] == 2:
        audio = audio.mean(axis=0, keepdims=True)
    elif channels == 2 and audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    if rate_out != rate_in:
        audio = soxr.resample(np.ascontiguousarray(audio.T), rate_in, rate_out).T
    return np.ascontiguousarray(np.clip(np.nan_to_num(audio), -1.0, 1.0), dtype=np.float32)


def _encode_mp3(audio: np.ndarray, rate: int, kbps: int) -> bytes:
    """CBR MP3 through libmp3lame. FFmpeg's muxer writes a LAME/Info header carrying the
    encoder delay and padding, so decoders trim back to the exact input length (lameenc cannot);
    the ID3 tag is dropped since nothing would fill it."""
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    out = io.BytesIO()
    with av.open(out, "w", format="mp3", options={"id3v2_version": "0"}) as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout=layout)
        stream.bit_rate = kbps * 1000
        stream.format = "fltp"
        frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def _write_soundfile(
    audio: np.ndarray, rate: int, container: str, subtype: str, **options: float
) -> bytes:
    out = io.BytesIO()
    with sf.SoundFile(out, "w", rate, audio.shape[0], subtype, format=container, **options) as f:
        for start in range(0, audio.shape[1], _WRITE_BLOCK):
            f.write(np.ascontiguousarray(audio[:, start : start + _WRITE_BLOCK].T))
    return out.getvalue()
