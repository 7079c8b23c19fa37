"""A deterministic, synthetic, music-like catalogue: the demo data and the test data of soundalike.

:func:`synthesize_track` renders one track of a style (drums, bass, chords from a key, an optional
lead melody) as a float32 wave; :func:`generate_catalogue` plans a whole catalogue (styles, tempos,
keys, alternate takes of shared motifs, silent and applause stretches), writes it in mixed formats
and sample rates, and writes a :data:`METADATA_FILENAME` sidecar that :func:`load_metadata` reads.

Everything is drawn from ``numpy.random.default_rng`` generators seeded per catalogue and per
track, so the same arguments give the same metadata and the same audio samples.

Examples
--------
>>> tracks = generate_catalogue("work/sample_catalogue", n_tracks=24, seed=0)  # doctest: +SKIP
>>> wave = synthesize_track("piano_arpeggio", duration_s=10.0, sample_rate_hz=22050, seed=1)
>>> wave.dtype, wave.shape
(dtype('float32'), (220500,))
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import butter, lfilter, sosfilt
from tqdm import tqdm

from soundalike.errors import ParameterError

METADATA_FILENAME = "catalogue.json"

#: The styles :func:`synthesize_track` can render.
STYLES: tuple[str, ...] = (
    "drum_and_bass",
    "piano_arpeggio",
    "ambient_pad",
    "plucked_strings",
    "noisy_percussion",
    "bass_groove",
)

#: Container formats the catalogue cycles through, with the libsndfile format and subtype used.
FORMATS: tuple[str, ...] = ("wav", "flac", "ogg", "mp3")
_SOUNDFILE_FORMAT = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
_SAMPLE_RATES_HZ = (22050, 32000, 44100, 48000)
_MP3_SAMPLE_RATES_HZ = (32000, 44100, 48000)  # MPEG-1 rates

_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_SCALES = {
    "major": np.array([0, 2, 4, 5, 7, 9, 11]),
    "minor": np.array([0, 2, 3, 5, 7, 8, 10]),
}
#: Chord progressions as scale degrees of the chord roots (0 = tonic), one chord per unit.
_PROGRESSIONS = {
    "major": ((0, 5, 3, 4), (0, 3, 4, 0), (0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 5, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4), (0, 2, 6, 5)),
}


@dataclass(frozen=True)
class _StyleSpec:
    tempo_bpm: tuple[float, float]
    instruments: tuple[str, ...]
    lead_instrument: str
    tags: tuple[str, ...]


_STYLE_SPECS = {
    "drum_and_bass": _StyleSpec(
        (160.0, 180.0), ("kick", "snare", "hi-hat", "sub bass", "synth pad", "synth stabs"), "saw lead",
        ("electronic", "drum and bass", "energetic", "drums", "bass"),
    ),
    "piano_arpeggio": _StyleSpec(
        (70.0, 110.0), ("piano",), "piano", ("acoustic", "classical", "calm", "keys", "piano"),
    ),
    "ambient_pad": _StyleSpec(
        (60.0, 80.0), ("synth pad", "sub bass", "bells"), "soft sine lead",
        ("electronic", "ambient", "calm", "atmospheric", "synth"),
    ),
    "plucked_strings": _StyleSpec(
        (90.0, 130.0), ("acoustic guitar",), "mandolin", ("acoustic", "folk", "warm", "strings", "guitar"),
    ),
    "noisy_percussion": _StyleSpec(
        (100.0, 140.0), ("toms", "congas", "shaker", "claps", "rim"), "marimba",
        ("percussion", "world", "energetic", "drums", "rhythmic"),
    ),
    "bass_groove": _StyleSpec(
        (95.0, 125.0), ("bass guitar", "kick", "snare", "hi-hat", "clavinet"), "square lead",
        ("funk", "groove", "upbeat", "bass", "drums"),
    ),
}

_TITLE_WORDS = (
    ("Neon", "Velvet", "Hollow", "Amber", "Silver", "Quiet", "Electric", "Paper", "Midnight",
     "Golden", "Broken", "Distant", "Crimson", "Glass", "Northern", "Wild", "Slow", "Bright",
     "Lonely", "Hidden", "Copper", "Winter", "Faded", "Restless"),
    ("Run", "Harbour", "Garden", "Signal", "River", "Lantern", "Echo", "Station", "Orbit",
     "Meadow", "Circuit", "Tide", "Window", "Horizon", "Engine", "Canyon", "Letter", "Bridge",
     "Mirror", "Forest", "Avenue", "Comet", "Island", "Parade"),
)


@dataclass(frozen=True)
class SampleTrack:
    """One generated track, as recorded in the :data:`METADATA_FILENAME` sidecar.

    Attributes
    ----------
    file : str
        Path relative to the catalogue directory, e.g. ``"track_007_piano_arpeggio.flac"``.
    title : str
    style : str
        One of :data:`STYLES`.
    tempo_bpm : float
        Beats per minute.
    key : str
        Tonic and mode, e.g. ``"A minor"``.
    instruments : tuple of str
    tags : tuple of str
        Descriptive tags: style, mood/energy, instrument family, tempo band (``slow``,
        ``medium``, ``fast``), ``melodic`` for tracks with a lead melody, ``live`` with applause.
    motif_id : str or None
        Tracks sharing a ``motif_id`` are alternate takes of one melody (other style and/or tempo).
    format : str
        ``"wav"``, ``"flac"``, ``"ogg"`` or ``"mp3"``.
    sample_rate_hz : int
    duration_s : float
        Length of the audio, seconds.
    silent_spans_s : tuple of (float, float)
        ``(start_s, end_s)`` stretches of digital silence (all-zero samples).
    applause_spans_s : tuple of (float, float)
        ``(start_s, end_s)`` stretches of applause-like noise; the music is faded down by 60 dB
        under them.
    seed : int
        The seed passed to :func:`synthesize_track` for the music of this track.
    planted : dict or None
        Only for planted duplicates (``generate_catalogue(plant_duplicates=True)``):
        ``{"kind": "exact" | "re-encode" | "contained", "of": <source file>, "offset_s": <where
        this file starts inside the source>}``. Absent from the sidecar when ``None``.
    """

    file: str
    title: str
    style: str
    tempo_bpm: float
    key: str
    instruments: tuple[str, ...]
    tags: tuple[str, ...]
    motif_id: str | None
    format: str
    sample_rate_hz: int
    duration_s: float
    silent_spans_s: tuple[tuple[float, float], ...]
    applause_spans_s: tuple[tuple[float, float], ...]
    seed: int
    planted: dict | None = None


# =========================================================================== public API


def synthesize_track(
    style: str,
    *,
    duration_s: float,
    sample_rate_hz: int,
    seed: int,
    tempo_bpm: float | None = None,
    key: str | None = None,
    motif: np.ndarray | None = None,
) -> np.ndarray:
    """Render one music-like track of ``style``.

    Parameters
    ----------
    style : str
        One of :data:`STYLES`.
    duration_s : float
        Length of the result, seconds (> 0).
    sample_rate_hz : int
        Sample rate of the result, Hz (8000 to 192000).
    seed : int
        Seeds every random choice (arrangement, patterns, humanisation, noise); >= 0.
    tempo_bpm : float or None
        Beats per minute (20 to 300); ``None`` draws one from the style's usual range.
    key : str or None
        Tonic and mode such as ``"A minor"`` or ``"Eb major"``; ``None`` draws one.
    motif : np.ndarray [shape=(n_notes, 2), dtype=float] or None
        A melody played as a lead line over the style, repeated through the track. Column 0 is
        the scale degree in ``key`` (0 = tonic, 7 = the octave above, may be negative; NaN is a
        rest), column 1 the note length in beats (> 0).

    Returns
    -------
    wave : np.ndarray [shape=(round(duration_s * sample_rate_hz),), dtype=float32]
        Mono, peak-normalised to -1 dBFS (about 0.891).

    Raises
    ------
    ParameterError
        Unknown style or key, or an argument out of range (also a ``ValueError``).
    """
    if style not in STYLES:
        raise ParameterError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    _check_number("duration_s", duration_s, low=0.0, low_inclusive=False)
    if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, (int, np.integer)):
        raise ParameterError(f"sample_rate_hz must be an integer in Hz, got {sample_rate_hz!r}")
    if not 8000 <= sample_rate_hz <= 192000:
        raise ParameterError(f"sample_rate_hz must be between 8000 and 192000 Hz, got {sample_rate_hz}")
    _check_seed(seed)
    if tempo_bpm is not None:
        _check_number("tempo_bpm", tempo_bpm, low=20.0, high=300.0)
    if motif is not None:
        motif = _check_motif(motif)

    rng = np.random.default_rng(seed)
    spec = _STYLE_SPECS[style]
    if tempo_bpm is None:
        tempo_bpm = float(rng.uniform(*spec.tempo_bpm))
    tonic_pc, mode = _parse_key(key) if key is not None else _random_key(rng)
    n = int(round(duration_s * sample_rate_hz))
    grid = _Grid.build(
        sr=int(sample_rate_hz), n=n, tempo_bpm=float(tempo_bpm), tonic_pc=tonic_pc, mode=mode,
        rng=rng, bars_per_chord=2 if style == "ambient_pad" else 1,
    )
    wave = _RENDERERS[style](grid, rng)
    if motif is not None:
        lead = _render_lead(grid, motif, style, rng)
        if _rms(lead) > 0:  # the melody sits a little under the accompaniment's level
            wave += lead * np.float32(0.7 * _rms(wave) / _rms(lead))
    wave = _apply_fades(wave, grid.sr, fade_in_s=0.01, fade_out_s=min(1.5, 0.2 * duration_s))
    return _normalise_peak(wave, peak=_PEAK)


def generate_catalogue(
    out_dir: str | os.PathLike,
    *,
    n_tracks: int = 24,
    seed: int = 0,
    min_duration_s: float = 30.0,
    max_duration_s: float = 120.0,
    progress: bool = True,
    plant_duplicates: bool = False,
) -> list[SampleTrack]:
    """Write ``n_tracks`` synthetic tracks and a :data:`METADATA_FILENAME` sidecar into ``out_dir``.

    Styles are spread evenly over :data:`STYLES`; formats cycle through :data:`FORMATS`
    (track ``i`` gets ``FORMATS[i % 4]``); sample rates are drawn from 22050/32000/44100/48000 Hz
    (mp3 only 32000/44100/48000). About a third of the tracks are alternate takes in motif groups
    of 2-3 (one melody in other styles and/or tempos, +-5-25 %). Every 4th track (``i % 4 == 1``)
    starts or ends with 2-5 s of digital silence (at most 30 % of the track); every 5th
    (``i % 5 == 3``) holds 3-6 s of applause-like noise (at most 40 %, skipped when it does not
    fit). The sidecar is a JSON list of :class:`SampleTrack` objects.

    Parameters
    ----------
    out_dir : path
        Created if missing. Regenerating the same catalogue into it overwrites it with identical
        files; a directory holding a different catalogue is refused.
    n_tracks : int
        Number of tracks, >= 1.
    seed : int
        Catalogue seed, >= 0. Same arguments give identical metadata and decoded audio.
    min_duration_s, max_duration_s : float
        Track lengths are uniform in this range (seconds, rounded to 0.1 s); min >= 5.
    progress : bool
        Show a tqdm progress bar.
    plant_duplicates : bool
        Also write planted duplicates of some tracks (:func:`plant_duplicates`), with the truth in
        each one's ``planted`` field. Off by default; the default catalogue is unchanged by it.

    Returns
    -------
    tracks : list of SampleTrack
        In file order, as written to the sidecar.

    Raises
    ------
    ParameterError
        Bad arguments, or ``out_dir`` already holds a different catalogue (a ``ValueError``).
    """
    if isinstance(n_tracks, bool) or not isinstance(n_tracks, (int, np.integer)) or n_tracks < 1:
        raise ParameterError(f"n_tracks must be an integer >= 1, got {n_tracks!r}")
    _check_seed(seed)
    _check_number("min_duration_s", min_duration_s, low=5.0)
    _check_number("max_duration_s", max_duration_s, low=5.0)
    if min_duration_s > max_duration_s:
        raise ParameterError(
            f"min_duration_s ({min_duration_s}) must not exceed max_duration_s ({max_duration_s})"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out_dir {out} exists and is not a directory")

    tracks, motifs = _plan_catalogue(
        n_tracks=int(n_tracks), seed=int(seed),
        min_duration_s=float(min_duration_s), max_duration_s=float(max_duration_s),
    )
    planted = _plan_planted(tracks, seed=int(seed)) if plant_duplicates else []
    sidecar = out / METADATA_FILENAME
    if sidecar.exists():
        try:
            existing = load_metadata(out)
        except ParameterError:
            existing = None
        if existing != tracks + planted:
            raise ParameterError(
                f"{out} already holds a different sample catalogue ({sidecar.name}); "
                "choose an empty directory or delete the old catalogue first"
            )
    out.mkdir(parents=True, exist_ok=True)

    for track in tqdm(tracks, desc="sample catalogue", unit="track", disable=not progress):
        wave = _render_planned(track, motifs.get(track.motif_id) if track.motif_id else None)
        (out / track.file).write_bytes(_encode(wave, track.sample_rate_hz, track.format, ogg_serial=track.seed))
    for track in planted:
        _write_planted(out, track)
    tracks = tracks + planted

    rows = [_sidecar_row(t) for t in tracks]
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    tmp.replace(sidecar)  # the sidecar appears only once every file is written
    return tracks


def load_metadata(catalogue_dir: str | os.PathLike) -> list[SampleTrack]:
    """Read the :data:`METADATA_FILENAME` sidecar of a generated catalogue.

    Parameters
    ----------
    catalogue_dir : path
        A directory written by :func:`generate_catalogue`.

    Returns
    -------
    tracks : list of SampleTrack

    Raises
    ------
    ParameterError
        If the sidecar is missing or is not a sample-catalogue sidecar.
    """
    path = Path(catalogue_dir) / METADATA_FILENAME
    if not path.is_file():
        raise ParameterError(f"{path} not found; generate the catalogue with generate_catalogue() first")
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ParameterError(f"{path} cannot be read as JSON: {exc}") from None
    fields = [f.name for f in dataclasses.fields(SampleTrack)]
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and sorted(set(r) | {"planted"}) == sorted(fields) for r in rows
    ):
        raise ParameterError(f"{path} is not a sample-catalogue sidecar (expected a list of {fields})")
    try:
        return [
            SampleTrack(
                file=str(r["file"]),
                title=str(r["title"]),
                style=str(r["style"]),
                tempo_bpm=float(r["tempo_bpm"]),
                key=str(r["key"]),
                instruments=tuple(str(x) for x in r["instruments"]),
                tags=tuple(str(x) for x in r["tags"]),
                motif_id=None if r["motif_id"] is None else str(r["motif_id"]),
                format=str(r["format"]),
                sample_rate_hz=int(r["sample_rate_hz"]),
                duration_s=float(r["duration_s"]),
                silent_spans_s=tuple((float(a), float(b)) for a, b in r["silent_spans_s"]),
                applause_spans_s=tuple((float(a), float(b)) for a, b in r["applause_spans_s"]),
                seed=int(r["seed"]),
                planted=dict(r["planted"]) if r.get("planted") else None,
            )
            for r in rows
        ]
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{path} has a malformed entry: {exc}") from None


# =========================================================================== validation

_PEAK = 10 ** (-1.0 / 20)  # -1 dBFS


def _check_number(name: str, value, *, low: float | None = None, high: float | None = None,
                  low_inclusive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ParameterError(f"{name} must be {'>=' if low_inclusive else '>'} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ParameterError(f"{name} must be <= {high:g}, got {value!r}")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed must be an integer >= 0, got {seed!r}")


def _check_motif(motif) -> np.ndarray:
    m = np.asarray(motif, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != 2 or m.shape[0] < 1:
        raise ParameterError(f"motif must have shape (n_notes, 2) [degree, beats], got {m.shape}")
    if not np.all(np.isfinite(m[:, 1])) or np.any(m[:, 1] <= 0):
        raise ParameterError("motif note lengths (column 1, beats) must be finite and > 0")
    if np.any(np.isinf(m[:, 0])) or np.any(np.abs(np.nan_to_num(m[:, 0])) > 28):
        raise ParameterError("motif scale degrees (column 0) must be finite (NaN = rest) and within +-28")
    if np.all(np.isnan(m[:, 0])):
        raise ParameterError("motif has only rests")
    return m


def _parse_key(key: str) -> tuple[int, str]:
    parts = str(key).split()
    if len(parts) != 2 or parts[0] not in _TONICS or parts[1] not in _SCALES:
        raise ParameterError(
            f"unknown key {key!r}; write '<tonic> <major|minor>' with a tonic from {', '.join(_TONICS)}"
        )
    return _TONICS.index(parts[0]), parts[1]


def _random_key(rng: np.random.Generator) -> tuple[int, str]:
    return int(rng.integers(12)), str(rng.choice(("major", "minor")))


# =========================================================================== musical grid


@dataclass(frozen=True)
class _Grid:
    """Time and harmony of one track: beats in samples, and the chord root degree per bar."""

    sr: int
    n: int
    beat_n: float  # samples per beat (4 beats per bar)
    tonic_midi: int  # the tonic in the chord register (MIDI note 54..65)
    scale: np.ndarray  # [7] semitones above the tonic
    chord_degrees: np.ndarray  # [n_bars] scale degree of each bar's chord root
    full: np.ndarray  # [n_bars] bool, False in intro and breakdown bars (thinner arrangement)

    @staticmethod
    def build(*, sr: int, n: int, tempo_bpm: float, tonic_pc: int, mode: str,
              rng: np.random.Generator, bars_per_chord: int) -> "_Grid":
        beat_n = 60.0 / tempo_bpm * sr
        n_bars = max(1, int(math.ceil(n / (4 * beat_n))))
        options = _PROGRESSIONS[mode]
        progression = np.asarray(options[int(rng.integers(len(options)))])
        chord_degrees = np.repeat(progression, bars_per_chord)[np.arange(n_bars) % (4 * bars_per_chord)]
        full = np.ones(n_bars, dtype=bool)
        full[: min(2, n_bars - 1)] = False  # a two-bar intro
        for start in range(8, n_bars, 8):  # some 8-bar sections are breakdowns
            if rng.random() < 0.25:
                full[start : start + 4] = False
        tonic_midi = 60 + tonic_pc if tonic_pc < 6 else 48 + tonic_pc
        return _Grid(sr, n, beat_n, tonic_midi, _SCALES[mode], chord_degrees, full)

    @property
    def n_bars(self) -> int:
        return int(self.chord_degrees.shape[0])

    def sample(self, beat: float) -> int:
        return int(round(beat * self.beat_n))

    def midi(self, degree: int, octave: int = 0) -> int:
        d = int(degree)
        return int(self.tonic_midi + 12 * (octave + d // 7) + self.scale[d % 7])

    def chord(self, bar: int) -> int:
        return int(self.chord_degrees[bar])


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


# =========================================================================== sound primitives


def _place(out: np.ndarray, sound: np.ndarray, start: int, gain: float = 1.0) -> None:
    """Add ``gain * sound`` into ``out`` from sample ``start`` on, clipped to ``out``'s bounds."""
    n = out.shape[0]
    if start >= n or start + sound.shape[0] <= 0:
        return
    lo = max(start, 0)
    hi = min(start + sound.shape[0], n)
    out[lo:hi] += gain * sound[lo - start : hi - start]


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp from 0 to 1 over ``n`` samples, float32 [n]."""
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def _shape(tone: np.ndarray, sr: int, *, attack_s: float, release_s: float) -> np.ndarray:
    """Apply a raised-cosine attack and release to ``tone`` in place and return it."""
    a = min(int(attack_s * sr), tone.shape[0])
    r = min(int(release_s * sr), tone.shape[0] - a)
    if a:
        tone[:a] *= _ramp(a)
    if r:
        tone[tone.shape[0] - r :] *= _ramp(r)[::-1]
    return tone


def _partials(f0_hz: float, *, n: int, sr: int, ratios, amps, decay_per_s) -> np.ndarray:
    """Sum of exponentially decaying sine partials at ``f0_hz * ratios``, float32 [n].

    Partials at or above 0.45 * sr are dropped (no aliasing).
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    freqs = f0_hz * ratios
    keep = freqs < 0.45 * sr
    freqs = freqs[keep]
    amps = np.broadcast_to(np.asarray(amps, dtype=np.float64), ratios.shape)[keep]
    rates = np.broadcast_to(np.asarray(decay_per_s, dtype=np.float64), ratios.shape)[keep]
    # float32 throughout: the phase error (< 0.01 rad over a few seconds) is inaudible, and float32
    # sin/exp are several times faster than float64.
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    arg = t[:, None] * (2 * np.pi * freqs).astype(np.float32)
    env = np.exp(t[:, None] * (-rates).astype(np.float32))
    return (np.sin(arg) * env) @ amps.astype(np.float32)


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n, dtype=np.float32)


def _band(x: np.ndarray, sr: int, low_hz: float | None, high_hz: float | None, order: int = 2) -> np.ndarray:
    """Butterworth band-, low- or high-pass of ``x`` (edges clipped below Nyquist), float32."""
    nyq_safe = 0.45 * sr
    if low_hz is not None and high_hz is not None:
        high_hz = min(high_hz, nyq_safe)
        low_hz = min(low_hz, 0.8 * high_hz)
        sos = butter(order, [low_hz, high_hz], btype="bandpass", output="sos", fs=sr)
    elif low_hz is not None:
        sos = butter(order, min(low_hz, nyq_safe), btype="highpass", output="sos", fs=sr)
    else:
        sos = butter(order, min(high_hz, nyq_safe), btype="lowpass", output="sos", fs=sr)
    return sosfilt(sos, x).astype(np.float32)


def _decay(n: int, sr: int, decay_s: float) -> np.ndarray:
    return np.exp(-np.arange(n, dtype=np.float32) / np.float32(decay_s * sr))


def _kick(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.35 * sr)
    t = np.arange(n) / sr
    freq = 48.0 + 110.0 * np.exp(-t / 0.035)  # the pitch drop that makes a kick
    body = np.sin(2 * np.pi * np.cumsum(freq) / sr).astype(np.float32) * _decay(n, sr, 0.16)
    click = _band(_noise(rng, n), sr, 1000, 6000) * _decay(n, sr, 0.004)
    return np.tanh(1.5 * (body + 0.4 * click)).astype(np.float32)


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.25 * sr)
    t = np.arange(n) / sr
    noise = _band(_noise(rng, n), sr, 1200, 7500) * _decay(n, sr, 0.07)
    body = np.sin(2 * np.pi * 185.0 * t).astype(np.float32) * _decay(n, sr, 0.05)
    return 0.8 * noise + 0.5 * body


def _hat(sr: int, rng: np.random.Generator, *, decay_s: float) -> np.ndarray:
    n = int(min(8 * decay_s, 0.5) * sr)
    return _band(_noise(rng, n), sr, 6500, None) * _decay(n, sr, decay_s)


def _pluck(f0_hz: float, *, n: int, sr: int, rng: np.random.Generator, decay_s: float,
           brightness: float) -> np.ndarray:
    """Karplus-Strong plucked string, float32 [n].

    A noise burst circulates in a delay loop of one period with a two-point average (the string's
    frequency-dependent loss) and a first-order all-pass that tunes the fractional part of the
    period. The whole loop is one recursive filter, run by :func:`scipy.signal.lfilter`.
    """
    period = sr / f0_hz
    delay = int(math.floor(period - 0.5))  # the averager adds half a sample
    frac = period - 0.5 - delay
    if frac < 0.1:  # keep the all-pass delay in 0.1..1.1 samples, where it is well behaved
        delay -= 1
        frac += 1.0
    c = (1.0 - frac) / (1.0 + frac)
    g = 10.0 ** (-3.0 / (decay_s * f0_hz))  # loop gain per period: -60 dB after decay_s
    # y = x + g z^-L (1 + z^-1)/2 AP(z) y, AP(z) = (c + z^-1)/(1 + c z^-1); times (1 + c z^-1):
    a = np.zeros(delay + 3)
    a[0], a[1] = 1.0, c
    a[delay] -= 0.5 * g * c
    a[delay + 1] -= 0.5 * g * (1.0 + c)
    a[delay + 2] -= 0.5 * g
    burst = rng.uniform(-1.0, 1.0, delay + 1)
    burst = lfilter([1.0 - brightness], [1.0, -brightness], burst)  # darker pluck: low-passed burst
    burst -= burst.mean()
    x = np.zeros(n)
    x[: burst.shape[0]] = burst[:n]
    y = lfilter([1.0, c], a, x).astype(np.float32)
    return _shape(y, sr, attack_s=0.0, release_s=0.02)


def _saw_voice(f0_hz: float, *, n: int, sr: int, rng: np.random.Generator, detune_cents: float,
               attack_s: float, release_s: float) -> np.ndarray:
    """Three detuned naive sawtooth oscillators with a slow attack and release, float32 [n]."""
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    out = np.zeros(n, dtype=np.float32)
    for cents in (-detune_cents, 0.0, detune_cents):
        f = np.float32(f0_hz * 2.0 ** (cents / 1200))
        cycles = f * t + np.float32(rng.random())
        out += np.float32(2.0) * (cycles - np.floor(cycles)) - np.float32(1.0)
    return _shape(out / 3, sr, attack_s=attack_s, release_s=release_s)


# =========================================================================== styles


def _render_drum_and_bass(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Two-step breakbeat at 160-180 bpm, sub bass on the chord roots, short saw-chord stabs."""
    out = np.zeros(g.n, dtype=np.float32)
    kicks = [_kick(g.sr, rng) for _ in range(2)]
    snares = [_snare(g.sr, rng) for _ in range(3)]
    hats = [_hat(g.sr, rng, decay_s=0.02) for _ in range(3)]
    patterns = (  # (kick steps, snare steps, ghost-snare steps) on a 16-step bar
        ((0, 10), (4, 12), (7, 14)),
        ((0, 6, 10), (4, 12), (9, 15)),
        ((0, 3, 10), (4, 12), (6, 14)),
        ((0, 10, 11), (4, 12), (2, 7)),
    )
    step = g.beat_n / 4
    bar_patterns = rng.integers(len(patterns), size=g.n_bars)
    bass_cache: dict[tuple[int, int], np.ndarray] = {}
    stab_cache: dict[int, np.ndarray] = {}
    for bar in range(g.n_bars):
        bar0 = bar * 4 * g.beat_n
        if g.full[bar]:
            kick_steps, snare_steps, ghost_steps = patterns[bar_patterns[bar]]
            for s in kick_steps:
                _place(out, kicks[s % 2], int(bar0 + s * step), 0.9)
            for s in snare_steps:
                _place(out, snares[int(rng.integers(3))], int(bar0 + s * step), 0.75)
            for s in ghost_steps:
                _place(out, snares[int(rng.integers(3))], int(bar0 + s * step), 0.18)
        for s in range(0, 16, 1 if g.full[bar] else 2):
            gain = (0.22 if s % 2 == 0 else 0.12) * rng.uniform(0.7, 1.0)
            _place(out, hats[int(rng.integers(3))], int(bar0 + s * step), gain)
        # Sub bass: root of the bar's chord, low octave, on steps 0, 6 and 10.
        root = g.midi(g.chord(bar), octave=-2)
        while root > 45:
            root -= 12
        for s, length in ((0, 6), (6, 4), (10, 6)):
            key = (root, length)
            if key not in bass_cache:
                m = int(length * step)
                tone = _partials(_hz(root), n=m, sr=g.sr, ratios=[1, 2, 3], amps=[1.0, 0.2, 0.08],
                                 decay_per_s=[0.8, 1.5, 3.0])
                bass_cache[key] = _shape(np.tanh(1.6 * tone), g.sr, attack_s=0.005, release_s=0.03)
            _place(out, bass_cache[key], int(bar0 + s * step), 0.55)
        if bar % 2 == 1:  # a chord stab on the last off-beat of every other bar
            degree = g.chord(bar)
            if degree not in stab_cache:
                m = int(0.35 * g.sr)
                stab = sum(
                    _saw_voice(_hz(g.midi(degree + d)), n=m, sr=g.sr, rng=rng, detune_cents=12,
                               attack_s=0.005, release_s=0.25)
                    for d in (0, 2, 4)
                )
                stab_cache[degree] = _band(stab, g.sr, None, 2500)
            _place(out, stab_cache[degree], int(bar0 + 14 * step), 0.12)
    # A liquid-style pad: the bar's chord held under the drums, low-passed.
    pad = np.zeros(g.n, dtype=np.float32)
    pad_cache: dict[int, np.ndarray] = {}
    for bar in range(g.n_bars):
        for d in (0, 2, 4):
            midi = g.midi(g.chord(bar) + d)
            if midi not in pad_cache:
                pad_cache[midi] = _saw_voice(_hz(midi), n=int(4.5 * g.beat_n), sr=g.sr, rng=rng, detune_cents=10,
                                             attack_s=0.15, release_s=0.4)
            _place(pad, pad_cache[midi], int(bar * 4 * g.beat_n), 0.06)
    return out + _band(pad, g.sr, None, 1800)


def _piano_note(midi: int, *, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Additive piano-like tone: slightly inharmonic partials, higher ones decaying faster.

    Each partial decays in two stages, as struck strings do: a bright "prompt sound" that drops
    quickly after the hammer blow, then a quieter, slow "aftersound".
    """
    f0 = _hz(midi)
    k = np.arange(1, 13)
    inharmonicity = 1.5e-4 if midi > 55 else 4e-4
    ratios = k * np.sqrt(1.0 + inharmonicity * k**2)
    amps = 1.0 / k**1.1
    slow = (0.5 + f0 / 800.0) * (1.0 + 0.4 * (k - 1))  # higher notes and partials die sooner
    tone = _partials(f0, n=n, sr=sr, ratios=ratios, amps=0.3 * amps, decay_per_s=slow)
    prompt_n = min(n, int(1.2 * sr))  # the prompt sound is 60 dB down by then
    tone[:prompt_n] += _partials(f0, n=prompt_n, sr=sr, ratios=ratios, amps=0.7 * amps, decay_per_s=6.0 + 2.0 * slow)
    hammer_n = min(n, int(0.015 * sr))
    hammer = _band(_noise(rng, hammer_n), sr, 300, 5000) * _decay(hammer_n, sr, 0.004) * 0.3
    tone[:hammer_n] += hammer
    return _shape(tone, sr, attack_s=0.001, release_s=0.12)


def _render_piano_arpeggio(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Broken chords over two octaves (eighths or triplets) above a left-hand bass note."""
    out = np.zeros(g.n, dtype=np.float32)
    per_beat = 2 if g.beat_n / g.sr < 60 / 90 else 3  # eighths above 90 bpm, triplets below
    shapes = ((0, 1, 2, 3, 4, 3, 2, 1), (0, 2, 1, 3, 2, 4, 3, 5), (0, 1, 2, 3, 2, 1), (0, 2, 4, 5, 4, 2))
    shape = shapes[int(rng.integers(len(shapes)))]
    ring_n = int(2.0 * g.beat_n)  # held by the sustain pedal
    bass_n = int(4.2 * g.beat_n)
    cache: dict[tuple[int, int], np.ndarray] = {}

    def note(midi: int, n: int) -> np.ndarray:
        if (midi, n) not in cache:
            cache[(midi, n)] = _piano_note(midi, n=n, sr=g.sr, rng=rng)
        return cache[(midi, n)]

    jitter = lambda: int(rng.normal(0.0, 0.006 * g.sr))  # noqa: E731 - a human's timing
    for bar in range(g.n_bars):
        bar0 = bar * 4 * g.beat_n
        c = g.chord(bar)
        tones = (c, c + 2, c + 4, c + 7, c + 9, c + 11)  # two octaves of the triad
        _place(out, note(g.midi(c, octave=-1), bass_n), int(bar0) + jitter(), 0.55)
        if g.full[bar]:
            _place(out, note(g.midi(c + 4, octave=-1), ring_n), int(bar0 + 2 * g.beat_n) + jitter(), 0.3)
        for i in range(4 * per_beat):
            degree = tones[shape[i % len(shape)]]
            velocity = (0.42 if i % per_beat == 0 else 0.3) * rng.uniform(0.8, 1.1)
            _place(out, note(g.midi(degree), ring_n), int(bar0 + i * g.beat_n / per_beat) + jitter(), velocity)
    return out


def _render_ambient_pad(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Sustained detuned-saw chords (slow attack, low-passed, slow swell), soft sub, sparse bells."""
    out = np.zeros(g.n, dtype=np.float32)
    chord_n = int(8 * g.beat_n)  # one chord per two bars
    release_s = 2.0
    attack_s = float(rng.uniform(1.2, 2.5))
    cache: dict[int, np.ndarray] = {}
    for bar in range(0, g.n_bars, 2):
        c = g.chord(bar)
        start = int(bar * 4 * g.beat_n)
        for d in (c, c + 2, c + 4, c + 6 if rng.random() < 0.4 else c + 7):
            midi = g.midi(d)
            if midi not in cache:
                cache[midi] = _saw_voice(_hz(midi), n=chord_n + int(release_s * g.sr), sr=g.sr, rng=rng,
                                         detune_cents=9, attack_s=attack_s, release_s=release_s)
            _place(out, cache[midi], start, 0.25)
    out = _band(out, g.sr, None, float(rng.uniform(900, 1500)), order=2)
    t = np.arange(g.n, dtype=np.float32) / g.sr
    out *= 0.8 + 0.2 * np.sin(2 * np.pi * 0.07 * t + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    sub: dict[int, np.ndarray] = {}
    bells: dict[int, np.ndarray] = {}
    for bar in range(g.n_bars):
        start = int(bar * 4 * g.beat_n)
        c = g.chord(bar)
        if bar % 2 == 0:
            root = g.midi(c, octave=-2)
            if root not in sub:
                tone = _partials(_hz(root), n=chord_n, sr=g.sr, ratios=[1, 2], amps=[1.0, 0.1], decay_per_s=0.05)
                sub[root] = _shape(tone, g.sr, attack_s=attack_s, release_s=1.5)
            _place(out, sub[root], start, 0.25)
        for _ in range(int(rng.integers(0, 3))):  # sparse bells two octaves up
            midi = g.midi(c + int(rng.choice((0, 2, 4))), octave=2)
            if midi not in bells:
                tone = _partials(_hz(midi), n=int(2.5 * g.sr), sr=g.sr, ratios=[1, 2.76, 5.4],
                                 amps=[1.0, 0.3, 0.1], decay_per_s=[1.5, 3.0, 6.0])
                bells[midi] = _shape(tone, g.sr, attack_s=0.003, release_s=0.3)
            _place(out, bells[midi], start + g.sample(0.5 * int(rng.integers(8))), 0.05)
    return out


def _render_plucked_strings(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong guitar fingerpicking: alternating bass on the beats, chord tones between."""
    out = np.zeros(g.n, dtype=np.float32)
    ring_n = int(1.4 * g.sr)
    cache: dict[int, np.ndarray] = {}

    def pluck(midi: int) -> np.ndarray:
        if midi not in cache:
            cache[midi] = _pluck(_hz(midi), n=ring_n, sr=g.sr, rng=rng, decay_s=1.2, brightness=0.2)
        return cache[midi]

    treble_orders = ((2, 1, 3, 1), (1, 2, 3, 2), (3, 2, 1, 2))
    order = treble_orders[int(rng.integers(len(treble_orders)))]
    for bar in range(g.n_bars):
        bar0 = bar * 4 * g.beat_n
        c = g.chord(bar)
        bass = (g.midi(c, octave=-1), g.midi(c + 4, octave=-1))
        treble = (g.midi(c), g.midi(c + 2), g.midi(c + 4), g.midi(c + 7))
        for beat in range(4):
            jitter = int(rng.normal(0.0, 0.005 * g.sr))
            _place(out, pluck(bass[beat % 2]), int(bar0 + beat * g.beat_n) + jitter, 0.5)
            if g.full[bar] or beat % 2 == 0:
                jitter = int(rng.normal(0.0, 0.005 * g.sr))
                midi = treble[order[beat]]
                _place(out, pluck(midi), int(bar0 + (beat + 0.5) * g.beat_n) + jitter, 0.35 * rng.uniform(0.8, 1.1))
        if g.full[bar] and bar % 4 == 0:  # a strum opens each phrase
            for i, midi in enumerate(treble):
                _place(out, pluck(midi), int(bar0 + i * 0.012 * g.sr), 0.25)
    # A guitar body: a gentle resonance around 100-250 Hz and a softened top end.
    return 0.7 * out + 0.3 * _band(out, g.sr, 90, 260)


def _render_noisy_percussion(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Hand percussion: pitched toms and congas, band-passed noise shakers, claps, 3-over-4 rims."""
    out = np.zeros(g.n, dtype=np.float32)
    sr = g.sr

    def drum(f0: float, decay_s: float, noise_band: tuple[float, float]) -> np.ndarray:
        n = int(6 * decay_s * sr)
        t = np.arange(n) / sr
        freq = f0 * (1.0 + 0.25 * np.exp(-t / 0.02))
        tone = np.sin(2 * np.pi * np.cumsum(freq) / sr).astype(np.float32) * _decay(n, sr, decay_s)
        hit = _band(_noise(rng, n), sr, *noise_band) * _decay(n, sr, decay_s * 0.4)
        return 0.8 * tone + 0.6 * hit

    toms = [drum(f * rng.uniform(0.97, 1.03), 0.12, (150, 1200)) for f in (95, 135, 190)]
    congas = [drum(f * rng.uniform(0.97, 1.03), 0.07, (300, 3000)) for f in (240, 330)]
    shaker_n = int(0.08 * sr)
    shakers = [_band(_noise(rng, shaker_n), sr, 3500, 9000) * _shape(_decay(shaker_n, sr, 0.025), sr,
               attack_s=0.008, release_s=0.0) for _ in range(4)]
    clap_n = int(0.2 * sr)
    claps = []
    for _ in range(2):
        burst = _decay(clap_n, sr, 0.006)
        env = np.maximum.reduce([np.concatenate([np.zeros(int(k * 0.011 * sr), np.float32), burst])[:clap_n]
                                 for k in range(3)])  # a clap is three fast bursts ...
        env = np.maximum(env, 0.5 * _decay(clap_n, sr, 0.05))  # ... and a short room tail
        claps.append(_band(_noise(rng, clap_n), sr, 900, 3000) * env)
    rim = _band(_noise(rng, int(0.03 * sr)), sr, 1800, 4000) * _decay(int(0.03 * sr), sr, 0.004)
    rim += np.sin(2 * np.pi * 1700 * np.arange(rim.shape[0]) / sr).astype(np.float32) * _decay(rim.shape[0], sr, 0.01)

    conga_patterns = ((0, 3, 6, 10, 12), (0, 2, 7, 8, 11, 14), (0, 3, 4, 8, 11, 13))
    tom_patterns = ((0, 8), (0, 6, 12), (4, 10, 14))
    step = g.beat_n / 4
    cp = conga_patterns[int(rng.integers(3))]
    tp = tom_patterns[int(rng.integers(3))]
    for bar in range(g.n_bars):
        bar0 = bar * 4 * g.beat_n
        for s in range(16):
            accent = 1.0 if s % 4 == 0 else 0.55 if s % 2 == 0 else 0.35
            _place(out, shakers[int(rng.integers(4))], int(bar0 + s * step), 0.3 * accent * rng.uniform(0.8, 1.1))
        for i, s in enumerate(cp):
            _place(out, congas[i % 2], int(bar0 + s * step + rng.normal(0, 0.004 * sr)), 0.55 * rng.uniform(0.8, 1.1))
        if g.full[bar]:
            for i, s in enumerate(tp):
                _place(out, toms[(i + bar) % 3], int(bar0 + s * step), 0.7)
            for s in (4, 12):
                _place(out, claps[int(rng.integers(2))], int(bar0 + s * step), 0.35)
        for s in range(0, 16, 3):  # three against four
            _place(out, rim, int(bar0 + s * step), 0.25)
    return out


def _render_bass_groove(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Funk: swung syncopated bass on root/octave/fifth, backbeat drums, clavinet off-beat stabs."""
    out = np.zeros(g.n, dtype=np.float32)
    kick, snare = _kick(g.sr, rng), _snare(g.sr, rng)
    hats = [_hat(g.sr, rng, decay_s=0.03) for _ in range(2)]
    step = g.beat_n / 4
    swing = 0.12 * step
    at = lambda bar0, s: int(bar0 + s * step + (swing if s % 2 else 0.0))  # noqa: E731
    bass_patterns = (  # (step, degree offset, length in steps)
        ((0, 0, 3), (3, 7, 1), (6, 0, 2), (8, 0, 2), (10, 4, 2), (13, 7, 1), (14, 6, 2)),
        ((0, 0, 2), (2, 0, 1), (4, 7, 2), (7, 0, 3), (11, 4, 2), (14, 7, 1)),
        ((0, 0, 4), (6, 0, 1), (7, 2, 1), (8, 4, 3), (12, 7, 2), (15, 6, 1)),
    )
    pattern = bass_patterns[int(rng.integers(3))]
    bass_cache: dict[tuple[int, int], np.ndarray] = {}
    clav_cache: dict[int, np.ndarray] = {}
    k = np.arange(1, 9)
    for bar in range(g.n_bars):
        bar0 = bar * 4 * g.beat_n
        c = g.chord(bar)
        for s, offset, length in pattern:
            midi = g.midi(c + offset, octave=-2)
            key = (midi, length)
            if key not in bass_cache:
                tone = _partials(_hz(midi), n=int(length * step), sr=g.sr, ratios=k, amps=1.0 / k**1.2,
                                 decay_per_s=2.0 + 4.0 * (k - 1))  # the filter closes after the pluck
                bass_cache[key] = _shape(tone, g.sr, attack_s=0.004, release_s=0.02)
            _place(out, bass_cache[key], at(bar0, s), 0.6 * rng.uniform(0.85, 1.05))
        if g.full[bar]:
            for s in (0, 7, 10):
                _place(out, kick, at(bar0, s), 0.7)
            for s in (4, 12):
                _place(out, snare, at(bar0, s), 0.6)
        for s in range(0, 16, 2):
            _place(out, hats[(s // 2) % 2], at(bar0, s), 0.15 if s % 4 else 0.22)
        if c not in clav_cache:
            odd = np.arange(1, 12, 2)
            clav = sum(
                _partials(_hz(g.midi(c + d)), n=int(0.18 * g.sr), sr=g.sr, ratios=odd, amps=1.0 / odd,
                          decay_per_s=12.0 + 3.0 * odd)
                for d in (0, 2, 4)
            )
            clav_cache[c] = _shape(clav, g.sr, attack_s=0.002, release_s=0.03)
        for s in (2, 6, 11, 14):
            _place(out, clav_cache[c], at(bar0, s), 0.1)
    return out


_RENDERERS = {
    "drum_and_bass": _render_drum_and_bass,
    "piano_arpeggio": _render_piano_arpeggio,
    "ambient_pad": _render_ambient_pad,
    "plucked_strings": _render_plucked_strings,
    "noisy_percussion": _render_noisy_percussion,
    "bass_groove": _render_bass_groove,
}


# =========================================================================== lead melody


def _lead_note(style: str, midi: int, *, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One lead-line note in the timbre the style uses for melodies, float32 [n]."""
    f0 = _hz(midi)
    k = np.arange(1, 16)
    if style == "drum_and_bass":  # bright saw lead
        tone = _partials(f0, n=n, sr=sr, ratios=k, amps=1.0 / k, decay_per_s=0.5 + 0.3 * k)
        return _shape(tone, sr, attack_s=0.01, release_s=0.05)
    if style == "piano_arpeggio":
        return _piano_note(midi, n=n, sr=sr, rng=rng)
    if style == "ambient_pad":  # soft, nearly pure tone
        tone = _partials(f0, n=n, sr=sr, ratios=[1, 2, 3], amps=[1.0, 0.25, 0.08], decay_per_s=0.3)
        return _shape(tone, sr, attack_s=0.08, release_s=min(0.3, n / sr / 3))
    if style == "plucked_strings":  # brighter, shorter pluck: a mandolin
        return _pluck(f0, n=n, sr=sr, rng=rng, decay_s=0.9, brightness=0.1)
    if style == "noisy_percussion":  # marimba bar: partials at 1, 3.9, 9.2 and a quick decay
        tone = _partials(f0, n=n, sr=sr, ratios=[1, 3.93, 9.2], amps=[1.0, 0.35, 0.1], decay_per_s=[3.0, 9.0, 20.0])
        return _shape(tone, sr, attack_s=0.002, release_s=0.03)
    odd = k[::2]  # bass_groove: square lead
    tone = _partials(f0, n=n, sr=sr, ratios=odd, amps=1.0 / odd, decay_per_s=0.6 + 0.2 * odd)
    return _shape(tone, sr, attack_s=0.01, release_s=0.04)


def _render_lead(g: _Grid, motif: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """The motif played as a lead line: from bar 2, two phrases out of every three, float32 [n]."""
    out = np.zeros(g.n, dtype=np.float32)
    phrase_beats = float(np.ceil(motif[:, 1].sum() / 4.0) * 4.0)  # whole bars
    onsets = np.concatenate([[0.0], np.cumsum(motif[:, 1])[:-1]])
    cache: dict[tuple[int, int], np.ndarray] = {}
    beat, phrase = 8.0, 0
    total_beats = g.n / g.beat_n
    while beat < total_beats:
        if phrase % 3 != 2:
            for (degree, length), onset in zip(motif, onsets):
                if np.isnan(degree):
                    continue
                midi = g.midi(int(degree), octave=1)
                n = max(int(0.92 * length * g.beat_n), int(0.05 * g.sr))
                if (midi, n) not in cache:
                    cache[(midi, n)] = _lead_note(style, midi, n=n, sr=g.sr, rng=rng)
                _place(out, cache[(midi, n)], g.sample(beat + onset), 1.0)
        beat += phrase_beats
        phrase += 1
    return out


def _random_motif(rng: np.random.Generator) -> np.ndarray:
    """A two-bar melody: float64 [n_notes, 2] of (scale degree or NaN for a rest, beats)."""
    lengths: list[float] = []
    while sum(lengths) < 8.0:
        lengths.append(float(rng.choice((0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0))))
    lengths[-1] -= sum(lengths) - 8.0
    if lengths[-1] <= 0:
        lengths.pop()
    degree = int(rng.choice((0, 2, 4)))
    degrees: list[float] = []
    for _ in lengths:
        degrees.append(float(degree))
        degree = int(np.clip(degree + rng.choice((-2, -1, -1, 1, 1, 2, 3, -3)), -2, 9))
    if len(degrees) > 4 and rng.random() < 0.3:
        degrees[int(rng.integers(2, len(degrees) - 1))] = math.nan
    return np.column_stack([degrees, lengths])


# =========================================================================== catalogue planning


def _styles_for_tempo(tempo_bpm: float, *, exclude: str) -> list[str]:
    """Styles other than ``exclude`` whose tempo range (widened by 10 %) holds ``tempo_bpm``."""
    return [s for s in STYLES if s != exclude
            and 0.9 * _STYLE_SPECS[s].tempo_bpm[0] <= tempo_bpm <= 1.1 * _STYLE_SPECS[s].tempo_bpm[1]]


def _plan_catalogue(*, n_tracks: int, seed: int, min_duration_s: float, max_duration_s: float
                    ) -> tuple[list[SampleTrack], dict[str, np.ndarray]]:
    """Every track's metadata (and the motifs of the motif groups), before any audio is made."""
    rng = np.random.default_rng(seed)
    styles = list(np.resize(rng.permutation(len(STYLES)), n_tracks))
    styles = [STYLES[int(i)] for i in rng.permutation(np.asarray(styles))]
    durations = [float(np.clip(round(rng.uniform(min_duration_s, max_duration_s), 1), min_duration_s, max_duration_s))
                 for _ in range(n_tracks)]
    tempos = [round(float(rng.uniform(*_STYLE_SPECS[s].tempo_bpm)), 1) for s in styles]
    keys = [_random_key(rng) for _ in range(n_tracks)]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=n_tracks)]
    rates = [
        int(rng.choice(_MP3_SAMPLE_RATES_HZ if FORMATS[i % 4] == "mp3" else _SAMPLE_RATES_HZ))
        for i in range(n_tracks)
    ]
    combos = rng.permutation(len(_TITLE_WORDS[0]) * len(_TITLE_WORDS[1]))
    titles = []
    for i in range(n_tracks):
        combo = int(combos[i % combos.shape[0]])
        title = f"{_TITLE_WORDS[0][combo // len(_TITLE_WORDS[1])]} {_TITLE_WORDS[1][combo % len(_TITLE_WORDS[1])]}"
        titles.append(title if i < combos.shape[0] else f"{title} {i // combos.shape[0] + 1}")

    # Motif groups: about a third of the tracks, in groups of 2-3 takes of one melody.
    motif_ids: list[str | None] = [None] * n_tracks
    motifs: dict[str, np.ndarray] = {}
    n_motif = int(round(n_tracks / 3))
    members = [int(i) for i in rng.permutation(n_tracks)[: n_motif if n_motif >= 2 else 0]]
    group = 0
    while members:
        size = len(members) if len(members) <= 3 else 2 if len(members) == 4 else int(rng.choice((2, 3)))
        takes, members = sorted(members[:size]), members[size:]
        motif_id = f"motif_{group:02d}"
        motifs[motif_id] = _random_motif(rng)
        first = takes[0]
        base = titles[first]
        for number, i in enumerate(takes, start=1):
            motif_ids[i] = motif_id
            if i != first:  # another take: the group's key, another tempo, mostly another style
                change = float(rng.uniform(0.05, 0.25))
                signs = (-1.0, 1.0) if rng.random() < 0.5 else (1.0, -1.0)
                options = [round(tempos[first] * (1.0 + sign * change), 1) for sign in signs]
                fits_by_tempo = [(tempo, _styles_for_tempo(tempo, exclude=styles[first])) for tempo in options]
                # Prefer the tempo direction where another style fits; take 2 always changes style
                # when one fits, later takes half the time (same style, other tempo).
                tempo, fits = next(((t, f) for t, f in fits_by_tempo if f), fits_by_tempo[0])
                tempos[i] = tempo
                keys[i] = keys[first]
                change_style = bool(fits) and (number == 2 or rng.random() < 0.5)
                styles[i] = str(rng.choice(fits)) if change_style else styles[first]
            titles[i] = f"{base} ({styles[i].replace('_', ' ')}, take {number})"
        group += 1

    tracks = []
    for i in range(n_tracks):
        duration = durations[i]
        silent: tuple[tuple[float, float], ...] = ()
        applause: tuple[tuple[float, float], ...] = ()
        music_lo, music_hi = 0.0, duration
        if i % 4 == 1:
            length = round(min(float(rng.uniform(2.0, 5.0)), 0.3 * duration), 1)
            if rng.random() < 0.5:
                silent = ((0.0, length),)
                music_lo = length
            else:
                silent = ((round(duration - length, 1), duration),)
                music_hi = silent[0][0]
        if i % 5 == 3:
            length = round(min(float(rng.uniform(3.0, 6.0)), 0.4 * duration), 1)
            lo, hi = music_lo + 1.0, music_hi - 2.0 - length  # clear of silence and of the fade-out
            if hi >= lo and length >= 1.5:
                start = round(float(rng.uniform(lo, hi)), 1)
                applause = ((start, round(start + length, 1)),)
        style = styles[i]
        spec = _STYLE_SPECS[style]
        tempo = tempos[i]
        band = "slow" if tempo < 90 else "medium" if tempo < 130 else "fast"
        instruments = spec.instruments
        extra_tags: tuple[str, ...] = (band,)
        if motif_ids[i] is not None:
            extra_tags += ("melodic",)
            if spec.lead_instrument not in instruments:
                instruments += (spec.lead_instrument,)
        if applause:
            extra_tags += ("live",)
        tags = tuple(dict.fromkeys((style,) + spec.tags + extra_tags))
        fmt = FORMATS[i % 4]
        tracks.append(SampleTrack(
            file=f"track_{i:03d}_{style}.{fmt}",
            title=titles[i],
            style=style,
            tempo_bpm=tempo,
            key=f"{_TONICS[keys[i][0]]} {keys[i][1]}",
            instruments=instruments,
            tags=tags,
            motif_id=motif_ids[i],
            format=fmt,
            sample_rate_hz=rates[i],
            duration_s=duration,
            silent_spans_s=silent,
            applause_spans_s=applause,
            seed=seeds[i],
        ))
    return tracks, motifs


# =========================================================================== rendering and writing


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _normalise_peak(x: np.ndarray, *, peak: float) -> np.ndarray:
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * (peak / top) if top > 0 else x).astype(np.float32)


def _apply_fades(x: np.ndarray, sr: int, *, fade_in_s: float, fade_out_s: float) -> np.ndarray:
    return _shape(x.astype(np.float32, copy=True), sr, attack_s=fade_in_s, release_s=fade_out_s)


def applause(duration_s: float, sample_rate_hz: int, *, seed: int = 0) -> np.ndarray:
    """``duration_s`` of the generator's applause-like noise, float32 mono at -1 dBFS peak.

    What the sample catalogue's live tracks hold between songs; for building test recordings.
    """
    _check_number("duration_s", duration_s, low=0.1)
    _check_seed(seed)
    n = int(round(duration_s * sample_rate_hz))
    return _normalise_peak(_applause(n, sample_rate_hz, np.random.default_rng(seed)), peak=_PEAK)


def _applause(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Applause-like noise: dense random clap impulses of band-limited (500 Hz-8 kHz) noise.

    Claps arrive as a Poisson process (60-160 per second, a small crowd); each is a burst of white
    noise with an instant attack and a 4-9 ms decay (a one-pole filter over the impulse train).
    """
    claps_per_s = float(rng.uniform(60.0, 160.0))
    onsets = rng.integers(0, n, size=int(rng.poisson(claps_per_s * n / sr)))
    impulses = np.zeros(n)
    np.add.at(impulses, onsets, rng.uniform(0.3, 1.0, size=onsets.shape[0]))
    pole = math.exp(-1.0 / (float(rng.uniform(0.004, 0.009)) * sr))
    envelope = lfilter([1.0], [1.0, -pole], impulses).astype(np.float32)
    claps = _band(_noise(rng, n) * envelope, sr, 500.0, 8000.0, order=2)
    # The crowd joins in over 0.3 s and dies away over the last 0.6 s.
    return _shape(claps, sr, attack_s=0.3, release_s=0.6)


def _render_planned(track: SampleTrack, motif: np.ndarray | None) -> np.ndarray:
    """A planned track's final samples: music, applause, silence, peak at -1 dBFS; float32 [n]."""
    sr = track.sample_rate_hz
    wave = synthesize_track(
        track.style, duration_s=track.duration_s, sample_rate_hz=sr, seed=track.seed,
        tempo_bpm=track.tempo_bpm, key=track.key, motif=motif,
    )
    if track.applause_spans_s:
        rng = np.random.default_rng([track.seed, 1])
        level = _rms(wave)
        for start_s, end_s in track.applause_spans_s:
            lo, hi = int(round(start_s * sr)), int(round(end_s * sr))
            claps = _applause(hi - lo, sr, rng)
            claps *= 0.8 * level / max(_rms(claps), 1e-12)
            # Music ducks by 60 dB under the applause, over 0.3 s ramps inside the span.
            duck = np.full(hi - lo, 10 ** (-60 / 20), dtype=np.float32)
            ramp_n = min(int(0.3 * sr), (hi - lo) // 2)
            ramp = _ramp(ramp_n)
            duck[:ramp_n] = 1.0 - (1.0 - duck[0]) * ramp
            duck[hi - lo - ramp_n :] = duck[:ramp_n][::-1]
            wave[lo:hi] = wave[lo:hi] * duck + claps
    for start_s, end_s in track.silent_spans_s:
        lo, hi = int(round(start_s * sr)), int(round(end_s * sr))
        if lo == 0:  # leading silence: the music enters with a short fade-in
            fade = min(int(0.02 * sr), wave.shape[0] - hi)
            wave[hi : hi + fade] *= _ramp(fade)
        else:  # trailing silence: the music fades out before it
            fade = min(int(1.5 * sr), lo)
            wave[lo - fade : lo] *= _ramp(fade)[::-1]
        wave[lo:hi] = 0.0
    return _normalise_peak(wave, peak=_PEAK)


_WRITE_BLOCK = 1 << 16  # frames per write call


def _encode(wave: np.ndarray, sample_rate_hz: int, fmt: str, *, ogg_serial: int) -> bytes:
    """The file bytes of ``wave`` in ``fmt``; lossy formats are re-encoded quieter if they clip.

    Ogg streams get the serial number ``ogg_serial`` (libsndfile draws a random one), so the same
    track always has the same bytes, and so the same content hash.
    """
    container, subtype = _SOUNDFILE_FORMAT[fmt]
    for _ in range(3):
        buffer = io.BytesIO()
        with sf.SoundFile(buffer, "w", sample_rate_hz, 1, format=container, subtype=subtype) as f:
            # Block writes: libvorbis alloca()s the whole pending buffer, so one long write
            # overflows the stack and segfaults (libsndfile#1095, python-soundfile#426).
            for i in range(0, wave.shape[0], _WRITE_BLOCK):
                f.write(wave[i : i + _WRITE_BLOCK])
        data = buffer.getvalue()
        if fmt in ("wav", "flac"):
            return data
        if fmt == "ogg":
            data = _set_ogg_serial(data, ogg_serial)
        decoded, _ = sf.read(io.BytesIO(data), dtype="float32")
        top = float(np.max(np.abs(decoded))) if decoded.size else 0.0
        if top <= 10 ** (-0.5 / 20):
            return data
        # Lossy coding overshoots sharp peaks; scale so the decoded peak lands near -1 dBFS.
        wave = (wave * (_PEAK / top)).astype(np.float32)
    return data


# Ogg pages carry a CRC-32 (polynomial 0x04C11DB7, MSB first, no reflection, init 0, no final xor).
# It is linear over GF(2), so replacing the serial number changes it by the CRC of a message that
# is zero except in the serial field: CRC(serial xor) * x^(8 * bytes after it) mod P.
_OGG_CRC_POLY = 0x04C11DB7


def _set_ogg_serial(data: bytes, serial: int) -> bytes:
    """``data`` (an Ogg file) with every page's stream serial number set to ``serial``."""
    out = bytearray(data)
    new = (serial & 0xFFFFFFFF).to_bytes(4, "little")
    pos = 0
    while pos + 27 <= len(out) and out[pos : pos + 4] == b"OggS":
        n_segments = out[pos + 26]
        page_len = 27 + n_segments + sum(out[pos + 27 : pos + 27 + n_segments])
        delta = bytes(a ^ b for a, b in zip(out[pos + 14 : pos + 18], new))
        crc = int.from_bytes(out[pos + 22 : pos + 26], "little")
        crc ^= _gf2_mulmod(_crc_bytes(delta), _x_pow_mod(8 * (page_len - 18)))
        out[pos + 14 : pos + 18] = new
        out[pos + 22 : pos + 26] = crc.to_bytes(4, "little")
        pos += page_len
    return bytes(out)


def _crc_bytes(message: bytes) -> int:
    crc = 0
    for byte in message:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ _OGG_CRC_POLY) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def _gf2_mulmod(a: int, b: int) -> int:
    """``a * b mod (x^32 + P)`` for polynomials over GF(2) held as bit masks."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a & (1 << 32):
            a ^= (1 << 32) | _OGG_CRC_POLY
    return result


def _x_pow_mod(exponent: int) -> int:
    """``x^exponent mod (x^32 + P)``: the CRC register's factor for ``exponent / 8`` zero bytes."""
    result, base = 1, 2
    while exponent:
        if exponent & 1:
            result = _gf2_mulmod(result, base)
        base = _gf2_mulmod(base, base)
        exponent >>= 1
    return result


# =========================================================================== planted duplicates


def _sidecar_row(track: SampleTrack) -> dict:
    row = dataclasses.asdict(track)
    if row["planted"] is None:
        del row["planted"]  # the default catalogue's sidecar stays as it always was
    return row


def _plan_planted(tracks: list[SampleTrack], *, seed: int) -> list[SampleTrack]:
    """Planted duplicates of a few tracks without a motif, at least 30 s long.

    Per source, cycling: a re-encode (another format and sample rate), a -6 dB gain copy (another
    format), an edit (intro cut by 3-12 s, 4 s off the end, 1.5 s fade in, 3 s fade out) and a
    byte-identical copy; at most 8 files.
    """
    rng = np.random.default_rng(seed + 12)
    sources = [t for t in tracks if t.motif_id is None and t.duration_s >= 30.0]
    kinds = ("re-encode", "gain", "contained", "exact")
    out = []
    for number, (source, kind) in enumerate(zip(sources[:8], itertools.cycle(kinds))):
        other_fmt = {"wav": "mp3", "flac": "ogg", "ogg": "flac", "mp3": "wav"}[source.format]
        if kind == "exact":
            fmt, sr, offset, duration = source.format, source.sample_rate_hz, 0.0, source.duration_s
        elif kind == "contained":
            fmt, sr = other_fmt, source.sample_rate_hz
            if fmt == "mp3" and sr not in _MP3_SAMPLE_RATES_HZ:
                sr = 44100
            offset = round(float(rng.uniform(3.0, 12.0)), 2)
            duration = round(source.duration_s - offset - 4.0, 2)
        else:
            fmt = other_fmt
            sr = 32000 if source.sample_rate_hz != 32000 else 44100
            offset, duration = 0.0, source.duration_s
        stem = Path(source.file).stem
        out.append(dataclasses.replace(
            source, file=f"planted_{number:02d}_{kind}_of_{stem}.{fmt}", format=fmt, sample_rate_hz=sr,
            duration_s=duration, title=f"{source.title} ({kind})", silent_spans_s=(), applause_spans_s=(),
            planted={"kind": "re-encode" if kind == "gain" else kind, "of": source.file, "offset_s": offset,
                     "gain_db": -6.0 if kind == "gain" else 0.0},
        ))
    return out


def _write_planted(out: Path, track: SampleTrack) -> None:
    from soundalike.audio import load_audio, probe_audio

    source = out / track.planted["of"]
    if track.planted["kind"] == "exact":
        (out / track.file).write_bytes(source.read_bytes())
        return
    native = probe_audio(source).sample_rate_hz
    wave = load_audio(source, native, offset_s=track.planted["offset_s"], duration_s=track.duration_s)
    if track.sample_rate_hz != native:
        wave = soxr.resample(wave, native, track.sample_rate_hz, quality="HQ").astype(np.float32)
    wave = wave * np.float32(10 ** (track.planted["gain_db"] / 20))
    if track.planted["kind"] == "contained":
        sr = track.sample_rate_hz
        fade_in, fade_out = int(1.5 * sr), int(3.0 * sr)
        wave[:fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)
        wave[-fade_out:] *= np.linspace(1.0, 0.0, fade_out, dtype=np.float32)
    (out / track.file).write_bytes(_encode(wave.astype(np.float32), track.sample_rate_hz, track.format,
                                           ogg_serial=track.seed + 1))
