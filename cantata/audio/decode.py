"""Decode user-supplied audio (cover / repaint inputs) into the pipeline's float32 stereo.

The format is found from the bytes, never a file name: libsndfile first (WAV, FLAC, Ogg
Vorbis, MP3, AIFF, ...), then FFmpeg through PyAV for the rest (M4A/AAC, Opus, WebM, ...).
FFmpeg may only use plain audio/media containers, so an uploaded playlist (ffconcat, HLS) or
SDP file cannot make it read server files or the network. Sample rates outside 8-384 kHz are
refused.

Every failure is an :class:`AudioDecodeError` whose ``code`` is one of:

* ``invalidAudioEmpty`` — zero bytes, or a valid file holding no samples;
* ``invalidAudioFormat`` — not audio, unsupported, or too corrupt to decode;
* ``invalidAudioTooLong`` — longer than ``max_seconds``.

Channel policy: mono is duplicated to both sides. More than two channels are decoded by
FFmpeg, which orders every codec's layout front-left, front-right first; those two stay the
left and right, and the mean of the remaining channels (centre, LFE, surrounds) is mixed into
both at -3 dB, the sum scaled by 1/(1 + 1/sqrt(2)) so the downmix can never clip.
"""

from __future__ import annotations

import io
import math

import av
import numpy as np
import soundfile as sf
import soxr

from ..errors import CantataError

INVALID_AUDIO_EMPTY = "invalidAudioEmpty"
INVALID_AUDIO_FORMAT = "invalidAudioFormat"
INVALID_AUDIO_TOO_LONG = "invalidAudioTooLong"

# Demuxers FFmpeg may pick (it matches any name of a multi-name demuxer such as
# "mov,mp4,m4a,3gp,3g2,mj2"); playlist, SDP and image demuxers are thereby excluded.
_FFMPEG_CONTAINERS = "wav,w64,aiff,caf,flac,ogg,mp3,aac,mov,matroska,asf"
# Declared durations can be estimates (ADTS AAC, MP3 without a Xing header): they reject only
# files clearly too long, and the decoded length decides the rest.
_DECLARED_SLACK = 1.05
_READ_BLOCK = 1 << 16
# A header claiming 1 Hz would make resampling to 48 kHz blow a small file up 48000-fold.
_INPUT_RATES = range(8000, 384001)
_SURROUND_GAIN = 1 / math.sqrt(2)


class AudioDecodeError(CantataError, ValueError):
    """User audio that cannot be used; ``code`` is one of the ``INVALID_AUDIO_*`` constants."""


def decode_audio(
    data: bytes, *, target_sample_rate: int = 48000, max_seconds: float | None = None
) -> np.ndarray:
    """Decode ``data`` to float32 ``[2, samples]`` at ``target_sample_rate``, clamped to [-1, 1]."""
    if target_sample_rate <= 0:
        raise ValueError(f"invalid target sample rate {target_sample_rate}")
    if not data:
        raise AudioDecodeError(INVALID_AUDIO_EMPTY, "audio is empty (0 bytes)")
    try:
        audio, rate = _decode(bytes(data), max_seconds)
        if audio.shape[1] == 0:
            raise AudioDecodeError(INVALID_AUDIO_EMPTY, "audio contains no samples")
        if rate not in _INPUT_RATES:
            raise AudioDecodeError(INVALID_AUDIO_FORMAT, f"unsupported sample rate {rate} Hz")
        audio = _to_stereo(audio)
        if rate != target_sample_rate:
            audio = soxr.resample(np.ascontiguousarray(audio.T), rate, target_sample_rate).T
        return np.ascontiguousarray(np.clip(np.nan_to_num(audio), -1.0, 1.0), dtype=np.float32)
    except AudioDecodeError:
        raise
    except Exception as exc:  # any library failure on hostile input is the caller's bad file
        raise AudioDecodeError(INVALID_AUDIO_FORMAT, f"could not decode audio: {exc}") from exc


def probe_duration(data: bytes) -> float:
    """Duration in seconds, from the header where the file declares one (no decode), else by
    decoding. Declared durations of ADTS AAC or header-less MP3 are estimates."""
    if not data:
        raise AudioDecodeError(INVALID_AUDIO_EMPTY, "audio is empty (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.frames > 0:
                return f.frames / f.samplerate
    except Exception:
        pass
    try:
        with _open_ffmpeg(data) as container:
            seconds = _declared_seconds(container, _audio_stream(container))
    except AudioDecodeError:
        raise
    except Exception as exc:
        raise AudioDecodeError(INVALID_AUDIO_FORMAT, f"could not read audio header: {exc}") from exc
    if seconds is not None:
        return seconds
    return decode_audio(data).shape[1] / 48000


def _decode(data: bytes, max_seconds: float | None) -> tuple[np.ndarray, int]:
    try:
        decoded = _read_soundfile(data, max_seconds)
    except AudioDecodeError:
        raise
    except Exception:  # not a libsndfile format, or corrupt past its header: FFmpeg may cope
        decoded = None
    return decoded if decoded is not None else _read_ffmpeg(data, max_seconds)


def _read_soundfile(data: bytes, max_seconds: float | None) -> tuple[np.ndarray, int] | None:
    """Decode with libsndfile; None hands the file to FFmpeg (multichannel, Opus, no samples).

    libsndfile 1.2.2 garbles the start of FFmpeg-muxed Ogg Opus when read in blocks, hence Opus
    goes to FFmpeg."""
    with sf.SoundFile(io.BytesIO(data)) as f:
        if f.channels > 2 or f.subtype == "OPUS":
            return None
        _check_declared(f.frames / f.samplerate, max_seconds)
        blocks, total = [], 0
        # Block reads bound memory by what the file holds, not by a possibly bogus header count.
        while len(block := f.read(_READ_BLOCK, dtype="float32", always_2d=True)):
            blocks.append(block.T)
            total += len(block)
            _check_decoded(total, f.samplerate, max_seconds)
        if not blocks:
            return None
        return np.concatenate(blocks, axis=1), f.samplerate


def _read_ffmpeg(data: bytes, max_seconds: float | None) -> tuple[np.ndarray, int]:
    with _open_ffmpeg(data) as container:
        stream = _audio_stream(container)
        declared = _declared_seconds(container, stream)
        if declared is not None:
            _check_declared(declared, max_seconds)
        # Packed float, same layout and rate: PyAV 18 reads past planar frames of 8+ channels.
        resampler = av.AudioResampler(format="flt")
        chunks, total, rate, bad_packets = [], 0, stream.rate, 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:  # skip a damaged packet, as ffmpeg itself does
                bad_packets += 1
                continue
            for frame in frames:
                rate = frame.sample_rate
                for out in resampler.resample(frame):
                    chunks.append(_planar(out))
                    total += out.samples
                    _check_decoded(total, rate, max_seconds)
        chunks.extend(_planar(out) for out in resampler.resample(None))
    if not chunks:
        if bad_packets:
            raise AudioDecodeError(INVALID_AUDIO_FORMAT, "audio stream could not be decoded")
        raise AudioDecodeError(INVALID_AUDIO_EMPTY, "audio contains no samples")
    return np.concatenate(chunks, axis=1), rate


def _planar(frame: av.AudioFrame) -> np.ndarray:
    """``[channels, samples]`` from a packed float frame (reshape fails loudly on a bad frame)."""
    return frame.to_ndarray().reshape(frame.samples, frame.layout.nb_channels).T


def _open_ffmpeg(data: bytes) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(data), options={"format_whitelist": _FFMPEG_CONTAINERS})
    except Exception as exc:
        raise AudioDecodeError(INVALID_AUDIO_FORMAT, "not a recognised audio format") from exc


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise AudioDecodeError(INVALID_AUDIO_FORMAT, "file has no audio stream")
    return container.streams.audio[0]


def _declared_seconds(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _check_declared(seconds: float, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds > max_seconds * _DECLARED_SLACK:
        message = f"audio is {seconds:.1f} s long; the limit is {max_seconds:g} s"
        raise AudioDecodeError(INVALID_AUDIO_TOO_LONG, message)


def _check_decoded(samples: int, rate: int, max_seconds: float | None) -> None:
    if max_seconds is not None and samples > max_seconds * rate:
        message = f"audio is longer than the limit of {max_seconds:g} s"
        raise AudioDecodeError(INVALID_AUDIO_TOO_LONG, message)


def _to_stereo(audio: np.ndarray) -> np.ndarray:
    if audio.shape[0] == 1:
        return np.repeat(audio, 2, axis=0)
    if audio.shape[0] == 2:
        return audio
    rest = _SURROUND_GAIN * audio[2:].mean(axis=0)
    return (audio[:2] + rest) / (1 + _SURROUND_GAIN)
