"""Decode audio files or bytes into mono float32 waves at a chosen sample rate.

Describe-then-load: :func:`probe_audio` reads only the header (cheap, for manifests such as the
``tracks`` table); :func:`load_audio` decodes, optionally just a window of the file.

Decoding goes through libsndfile (``soundfile``: wav, flac, ogg/vorbis, opus, mp3, aiff, ...).
Other containers (m4a/aac, wma, ...) fall back to pydub, which needs ``ffmpeg`` on PATH; their
header is read with ``ffprobe`` (shipped with ffmpeg), so probing a 5-hour m4a decodes nothing.
Resampling uses soxr (high quality).

Examples
--------
>>> wave = load_audio("song.flac", sr=22050, offset_s=60.0, duration_s=10.0)  # doctest: +SKIP
>>> wave.dtype, wave.ndim
(dtype('float32'), 1)
"""

from __future__ import annotations

import io
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
import soxr

from soundalike.errors import AudioDecodeError, ParameterError

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview]

#: Largest sample magnitude accepted (full scale is 1.0; float files may overshoot, but by +80 dB
#: no real recording does, and values like 1e30 turn every spectrum into NaN).
MAX_SAMPLE_MAGNITUDE = 1e4

#: Formats libsndfile decodes itself; anything else is tried through ffmpeg.
LIBSNDFILE_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "au", "caf", "w64", "rf64"}
)


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, without decoding it.

    Attributes
    ----------
    sample_rate_hz : int
    channels : int
    frames : int
        Samples per channel (may be an estimate for mp3/ogg).
    duration_s : float
    format : str
        Lower-case container name, e.g. ``"wav"``, ``"flac"``, ``"mp3"``, ``"m4a"``.
    """

    sample_rate_hz: int
    channels: int
    frames: int
    duration_s: float
    format: str


def describe_source(source: AudioSource) -> str:
    """A short human name for ``source`` to put in error messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(source)


def probe_audio(source: AudioSource) -> AudioInfo:
    """Read the header of ``source`` and return its :class:`AudioInfo`.

    Raises
    ------
    AudioDecodeError
        If the source is missing, empty or not audio.
    """
    _check_source(source)
    try:
        info = sf.info(_as_soundfile_input(source))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        if _ffmpeg_may_help(source):
            return _ffprobe(source)
        raise AudioDecodeError(describe_source(source), _libsndfile_reason(exc, source)) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioDecodeError(describe_source(source), "the file holds no audio samples")
    return AudioInfo(
        sample_rate_hz=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        duration_s=info.frames / float(info.samplerate),
        format=(info.format or "").lower() or (_extension(source) or "unknown"),
    )


def load_audio(
    source: AudioSource,
    sr: int,
    *,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    resample=None,
) -> np.ndarray:
    """Decode ``source`` to a mono float32 wave at ``sr`` Hz.

    Parameters
    ----------
    source : path or bytes
        A file path, or the encoded file's bytes.
    sr : int
        Target sample rate in Hz; the audio is resampled with soxr when it differs.
    offset_s : float
        Start reading this many seconds into the file. Only that window is decoded, so reading
        10 s of a two-hour file costs 10 s of decoding.
    duration_s : float or None
        Read at most this many seconds; ``None`` reads to the end.
    resample : callable or None
        ``resample(wave, native_sr, sr) -> wave`` used instead of soxr when the rates differ
        (:class:`soundalike.resample.DeviceResampler` on the GPU embed path).

    Returns
    -------
    wave : np.ndarray [shape=(n,), dtype=float32]
        Channels averaged to mono, values nominally in [-1, 1].

    Raises
    ------
    AudioDecodeError
        Unreadable, empty, truncated or non-audio input, a window past the end of the file, or
        samples that are NaN, infinite or beyond ±:data:`MAX_SAMPLE_MAGNITUDE`.
    ParameterError
        ``sr`` not positive, negative ``offset_s`` or non-positive ``duration_s``.
    """
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ParameterError(f"sr must be a positive integer sample rate in Hz, got {sr!r}")
    if not math.isfinite(offset_s) or offset_s < 0:
        raise ParameterError(f"the start offset (offset_s) must be a finite number of seconds >= 0, got {offset_s!r}")
    if duration_s is not None and (not math.isfinite(duration_s) or duration_s <= 0):
        raise ParameterError(f"the duration (duration_s) must be a finite number of seconds > 0, got {duration_s!r}")
    _check_source(source)

    try:
        data, native_sr = _read_libsndfile(source, offset_s, duration_s)
    except (_Truncated, _PastTheEnd) as exc:
        raise AudioDecodeError(describe_source(source), str(exc)) from None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        if not _ffmpeg_may_help(source) or _libsndfile_opens(source):
            # libsndfile read the header, so the format is its own and the stream is broken
            # (a truncated FLAC "loses sync"): ffmpeg would only decode the part before the damage.
            raise AudioDecodeError(describe_source(source), _libsndfile_reason(exc, source)) from None
        if offset_s > 0:  # the header's length first: a start past the end is named as such
            info = _ffprobe(source)
            if offset_s >= info.duration_s + TRUNCATION_TOLERANCE_S:
                raise AudioDecodeError(describe_source(source), _past_the_end(offset_s, info.duration_s))
        if duration_s is not None and duration_s > 1e7:
            duration_s = None  # to the end: ffmpeg refuses a -t of 1e308 s
        try:
            segment = _pydub_segment(source, offset_s=offset_s, duration_s=duration_s)
        except AudioDecodeError:
            _ffprobe(source)  # a clearer reason (no audio stream, not media) than pydub's, when there is one
            raise
        data = _segment_to_array(segment)
        native_sr = int(segment.frame_rate)

    if data.size == 0:
        where = f" after offset {offset_s:g} s" if offset_s else ""
        raise AudioDecodeError(describe_source(source), f"no audio samples{where}")
    # Two passes without a copy; NaN anywhere makes max() NaN. Checked before the downmix, whose
    # sums could overflow (or cancel: +1e30 and -1e30 average to silence).
    peak = max(float(data.max()), -float(data.min()))
    if not math.isfinite(peak):
        raise AudioDecodeError(describe_source(source), "decoded samples contain NaN or infinity")
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise AudioDecodeError(
            describe_source(source),
            f"decoded samples reach {peak:.3g}; audio lies in [-1, 1] (float files up to "
            f"±{MAX_SAMPLE_MAGNITUDE:g} are accepted), so this float file holds garbage, not sound",
        )
    wave = _downmix(data) if data.ndim == 2 else data.astype(np.float32)
    if native_sr != sr:
        if resample is not None:
            wave = resample(wave, native_sr, sr)
        else:
            wave = soxr.resample(wave, native_sr, sr, quality="HQ").astype(np.float32, copy=False)
        if wave.shape[0] == 0:  # e.g. one sample at 22.05 kHz is no sample at 8 kHz
            raise AudioDecodeError(
                describe_source(source), f"{data.shape[0]} sample(s) at {native_sr} Hz leave no audio at {sr} Hz"
            )
    return np.ascontiguousarray(wave)


def decode_once(source: AudioSource, *, max_seconds: float | None = None) -> AudioSource:
    """``source`` itself if libsndfile reads it, else its first ``max_seconds`` decoded by ffmpeg
    once, as float WAV bytes at the native rate.

    For callers that read one recording several times (a query: clips, then landmarks): each
    :func:`load_audio` of an m4a runs ffmpeg over it again, a WAV is read in place.

    Raises
    ------
    AudioDecodeError
        As :func:`load_audio`.
    """
    _check_source(source)
    if not _ffmpeg_may_help(source) or _libsndfile_opens(source):
        return source
    info = _ffprobe(source)
    segment = _pydub_segment(source, offset_s=0.0, duration_s=max_seconds if max_seconds is None or
                             max_seconds < info.duration_s + TRUNCATION_TOLERANCE_S else None)
    buffer = io.BytesIO()
    sf.write(buffer, _segment_to_array(segment), int(segment.frame_rate), format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _downmix(data: np.ndarray) -> np.ndarray:
    """Mono float32 [n] from [n, channels]: the channels' mean.

    The values of ``data.mean(axis=1, dtype=np.float32)``, summed channel by channel: a mean
    over a 2-wide axis walks the interleaved samples one row at a time, about 10 times slower.
    """
    out = data[:, 0].astype(np.float32)  # a copy, in the order the sums need
    for c in range(1, data.shape[1]):
        out += data[:, c]
    if data.shape[1] > 1:
        out /= np.float32(data.shape[1])
    return out


# --------------------------------------------------------------------------- libsndfile path


def _read_libsndfile(
    source: AudioSource, offset_s: float, duration_s: float | None
) -> tuple[np.ndarray, int]:
    with sf.SoundFile(_as_soundfile_input(source)) as f:
        native_sr = int(f.samplerate)
        if f.frames > 0 and offset_s * native_sr >= f.frames:
            # Also keeps int() away from an offset such as 1e308 s, whose sample index overflows.
            raise _PastTheEnd(_past_the_end(offset_s, f.frames / native_sr))
        start = int(round(offset_s * native_sr))
        if start:
            if f.seekable():
                f.seek(min(start, f.frames) if f.frames > 0 else start)
            else:  # pragma: no cover - every libsndfile format we read is seekable
                f.read(start, dtype="float32", always_2d=True)
        # A duration past the end reads to the end (and never turns 1e308 s into an int).
        frames = -1 if duration_s is None or duration_s * native_sr >= 2**62 else int(round(duration_s * native_sr))
        data = f.read(frames, dtype="float32", always_2d=True)
        promised = max(0, f.frames - start) if frames < 0 else min(frames, max(0, f.frames - start))
        if f.format == "WAV":
            _check_wav_length(source, native_sr * f.channels * _WAV_SAMPLE_BYTES.get(f.subtype, 2))
    short = promised - data.shape[0]
    if f.frames > 0 and short > max(TRUNCATION_TOLERANCE_S * native_sr, TRUNCATION_TOLERANCE * promised):
        raise _Truncated(
            f"truncated: the header promises {promised / native_sr:.2f} s from {offset_s:g} s, "
            f"but only {data.shape[0] / native_sr:.2f} s can be decoded"
        )
    return data, native_sr


#: A decode this much shorter than the header promises (seconds, and fraction) is a truncated file.
TRUNCATION_TOLERANCE_S = 1.0
TRUNCATION_TOLERANCE = 0.05


class _PastTheEnd(Exception):
    """The asked-for start lies at or after the end of the file."""


def _past_the_end(offset_s: float, length_s: float) -> str:
    return (f"no audio samples after offset {offset_s:g} s: the file is {length_s:.2f} s long; "
            "start inside it")


class _Truncated(Exception):
    """The file ends long before its header says (an interrupted copy or download)."""


_WAV_SAMPLE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                     "ULAW": 1, "ALAW": 1}


def _check_wav_length(source: AudioSource, bytes_per_s: int) -> None:
    """Raise :class:`_Truncated` when a RIFF header declares far more audio than the file holds.

    libsndfile quietly reads what is there; a header that overstates its data means a cut-off
    copy. Streaming writers' "unknown" sizes (0 or 0xFFFFFFFF) are accepted.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        head, total = bytes(source[:65536]), len(source)
    else:
        with open(source, "rb") as fh:
            head = fh.read(65536)
        total = os.path.getsize(source)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            available = total - (pos + 8)
            if size in (0, 0xFFFFFFFF) or size <= available:
                return
            if size - available > max(TRUNCATION_TOLERANCE_S * bytes_per_s, TRUNCATION_TOLERANCE * size):
                raise _Truncated(
                    f"truncated: the WAV header declares {size / bytes_per_s:.2f} s of audio, "
                    f"the file holds {max(available, 0) / bytes_per_s:.2f} s"
                )
            return
        pos += 8 + size + (size & 1)


def _libsndfile_opens(source: AudioSource) -> bool:
    try:
        sf.info(_as_soundfile_input(source))
    except Exception:  # noqa: BLE001 - any failure means "not libsndfile's"
        return False
    return True


def _as_soundfile_input(source: AudioSource) -> Union[str, bytes, BinaryIO]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    if os.name == "nt":  # soundfile opens str paths with the wide-character API there
        return os.fspath(source)
    # The file system's own bytes: soundfile encodes a str path as strict UTF-8, which fails for
    # a name that is not valid UTF-8 (Python holds its bytes as surrogate escapes).
    return os.fsencode(source)


def _libsndfile_reason(exc: Exception, source: AudioSource | None = None) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    # libsndfile prefixes its messages with "Error opening <repr>: "; the source is named already.
    if ": " in text and text.startswith("Error opening"):
        text = text.split(": ", 1)[1]
    if text.startswith("File does not exist or is not a regular file"):
        # libsndfile's words when its mp3 decoder finds no frame; the file exists (checked before).
        ext = _extension(source) if source is not None else None
        text = f"its contents are not {'.' + ext + ' ' if ext else ''}audio in any format libsndfile knows"
    return f"not a readable audio file ({text})"


def _check_source(source: AudioSource) -> None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioDecodeError(describe_source(source), "input is empty (0 bytes)")
        return
    if not isinstance(source, (str, os.PathLike)):
        raise ParameterError(
            f"audio source must be a path or bytes, got {type(source).__name__}"
        )
    path = Path(source)
    if not path.exists():
        raise AudioDecodeError(str(path), "file does not exist")
    if path.is_dir():
        raise AudioDecodeError(str(path), "is a directory, not an audio file")
    if not path.is_file():  # opening a FIFO or a device would block or never end
        raise AudioDecodeError(str(path), "is not a regular file (a FIFO, socket or device)")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(str(path), "permission denied")
    if path.stat().st_size == 0:
        raise AudioDecodeError(str(path), "file is empty (0 bytes)")


# --------------------------------------------------------------------------- ffmpeg fallback


def _extension(source: AudioSource) -> str | None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None
    suffix = Path(source).suffix.lower().lstrip(".")
    return suffix or None


def _ffmpeg_may_help(source: AudioSource) -> bool:
    """Whether to try ffmpeg after libsndfile refused ``source``.

    Files with an extension libsndfile owns (a broken .mp3, say) are not retried: ffmpeg would
    only produce a second, vaguer error. Bytes and other extensions are.
    """
    ext = _extension(source)
    return ext is None or ext not in LIBSNDFILE_EXTENSIONS


def _ffmpeg_input(source: AudioSource) -> tuple[str, bytes | None]:
    """The ``-i`` argument for ffmpeg/ffprobe and the bytes to send on stdin (``None`` for a path).

    A path goes as ``file:<path>`` (a name such as ``-x.m4a`` or ``http:x.m4a`` is a file name,
    never an option or a protocol); bytes go through ``pipe:0``, read front to back (an m4a whose
    index, the ``moov`` atom, follows the audio is still described: ``cache:pipe:0`` would try to
    seek to the end first, which a pipe cannot).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "pipe:0", bytes(source)
    return "file:" + os.fspath(Path(source).resolve()), None


def _ffmpeg_message(stderr: bytes) -> str:
    """ffmpeg's last error line without its ``[demuxer @ 0x...]`` prefix."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return "no error message"
    line = lines[-1]
    if line.startswith("[") and "] " in line:
        line = line.split("] ", 1)[1]
    if line.startswith(("file:", "pipe:0")) and ": " in line:
        line = line.split(": ", 1)[1]  # "<input>: Invalid data ..." - the source is named already
    return line[:200]


def _ffprobe(source: AudioSource) -> AudioInfo:
    """What ffprobe reads from the container header of ``source``, without decoding the audio.

    Raises
    ------
    AudioDecodeError
        ffprobe is missing, the input is not a media file, or it holds no (usable) audio stream.
    """
    name = describe_source(source)
    if shutil.which("ffprobe") is None:
        raise AudioDecodeError(name, _no_ffmpeg_reason(source, "ffprobe"))
    answer = _run_ffprobe(source, ["-show_entries",
                                   "stream=codec_type,sample_rate,channels,duration:format=duration,format_name"])
    streams = [s for s in answer.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        others = sorted({str(s.get("codec_type")) for s in answer.get("streams", []) if s.get("codec_type")})
        others = ["video or images" if o == "video" else o for o in others]
        held = f" (it holds {' and '.join(others)} only)" if others else ""
        raise AudioDecodeError(name, f"no audio stream{held}; not an audio file")
    stream = streams[0]
    sr = _number(stream.get("sample_rate"))
    channels = int(_number(stream.get("channels")) or 0)
    if not sr or sr <= 0 or channels <= 0:
        raise AudioDecodeError(name, f"the audio stream has {channels} channel(s) at {sr or 0:g} Hz; not playable audio")
    duration_s = _number(stream.get("duration")) or _number(answer.get("format", {}).get("duration"))
    if str(answer.get("format", {}).get("format_name", "")).split(",")[0] == "aac":
        # A raw ADTS stream has no length in its header: ffprobe's guess from the first frames'
        # bitrate was 31x off on a 300 s file. Counting its packets (1024 samples each) reads the
        # stream without decoding it.
        duration_s = _aac_packets(source) * 1024.0 / sr
    if duration_s is None or not duration_s > 0:
        # No length in the header (some raw streams): only a decode can tell.
        segment = _pydub_segment(source, offset_s=0.0, duration_s=None)
        duration_s = segment.frame_count() / float(segment.frame_rate)
        if duration_s <= 0:
            raise AudioDecodeError(name, "the file holds no audio samples")
    return AudioInfo(
        sample_rate_hz=int(sr),
        channels=channels,
        frames=int(round(duration_s * sr)),
        duration_s=float(duration_s),
        format=_extension(source) or str(answer.get("format", {}).get("format_name", "unknown")).split(",")[0],
    )


def _run_ffprobe(source: AudioSource, entries: list[str]) -> dict:
    """ffprobe's JSON answer about ``source`` for ``entries`` (its arguments before ``-of``).

    Raises
    ------
    AudioDecodeError
        ffprobe failed (its last error line is the reason) or gave no JSON.
    """
    import json
    import subprocess

    target, data = _ffmpeg_input(source)
    cmd = ["ffprobe", "-v", "error", *entries, "-of", "json", "-i", target]
    done = subprocess.run(cmd, input=data, capture_output=True, stdin=None if data is not None else subprocess.DEVNULL)
    if done.returncode != 0:
        raise AudioDecodeError(describe_source(source), f"not a readable audio file ({_ffmpeg_message(done.stderr)})")
    try:
        return json.loads(done.stdout or b"{}")
    except ValueError:
        raise AudioDecodeError(describe_source(source), "not a readable audio file (ffprobe could not describe it)") from None


def _aac_packets(source: AudioSource) -> int:
    """How many packets ffprobe's demuxer reads from the first audio stream (nothing decoded)."""
    answer = _run_ffprobe(source, ["-count_packets", "-select_streams", "a:0", "-show_entries", "stream=nb_read_packets"])
    try:
        return int(answer["streams"][0]["nb_read_packets"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise AudioDecodeError(describe_source(source), "not a readable audio file (ffprobe counted no audio packets)") from None


def _number(value) -> float | None:
    """A finite float from ffprobe's JSON (numbers arrive as strings, "N/A" when unknown), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _no_ffmpeg_reason(source: AudioSource, tool: str) -> str:
    ext = _extension(source)
    what = f".{ext} files" if ext else "this input"
    missing = "ffmpeg is not on PATH" + ("" if tool == "ffmpeg" else f" ({tool} is missing)")
    return (f"libsndfile cannot read {what} and {missing}; "
            "install ffmpeg (e.g. `apt-get install ffmpeg`, which brings ffprobe) to decode m4a/aac/wma")


def _pydub_segment(source: AudioSource, *, offset_s: float, duration_s: float | None):
    name = describe_source(source)
    if shutil.which("ffmpeg") is None:
        raise AudioDecodeError(name, _no_ffmpeg_reason(source, "ffmpeg"))
    from pydub import AudioSegment  # imported lazily: only this fallback needs it
    from pydub.exceptions import CouldntDecodeError

    handle = (
        io.BytesIO(bytes(source))
        if isinstance(source, (bytes, bytearray, memoryview))
        else os.fspath(source)
    )
    try:
        kwargs = {"start_second": offset_s} if offset_s else {}
        if duration_s is not None:
            kwargs["duration"] = duration_s
        return AudioSegment.from_file(handle, **kwargs)
    except (CouldntDecodeError, IndexError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AudioDecodeError(name, f"not a readable audio file (ffmpeg: {first_line[:200]})") from None


def _segment_to_array(segment) -> np.ndarray:
    samples = np.array(segment.get_array_of_samples(), dtype=np.float32)
    full_scale = float(1 << (8 * segment.sample_width - 1))
    return (samples / full_scale).reshape(-1, segment.channels)
