"""Duplicates and versions in a catalogue, from time-consistent audio evidence.

Four kinds, kept apart because a catalogue owner acts on them differently:

- ``exact``: the same bytes (paths sharing a ``track_id``, the content hash);
- ``re-encode``: the same recording in another codec, bitrate, sample rate or gain: landmark
  matches agree on offset ≈ 0 over (nearly) all of both tracks;
- ``contained``: one is an edit of the other (radio edit, intro cut, fade): the landmarks of the
  shorter one agree on one offset inside the longer one, reported as ``offset_s``;
- ``version``: the same piece, another recording (alternate take, other instruments or tempo):
  no landmark alignment, but the melody's pitch-class sequences (the non-repeating foreground)
  correlate at one tempo ratio and offset well above anywhere else, and both carry a melody over
  enough of that alignment (a song with no lead line has none to share). Versions are listed
  separately and never merged with duplicates.

The evidence for a duplicate is many landmark pairs agreeing on *one* offset
(:meth:`soundalike.fingerprint.FingerprintIndex.votes`), so two songs in the same style, which
share sounds but not their timing, do not pair. ``coverage`` is the share of the shorter track
(in ``coverage_bin_s`` bins) that holds aligned landmarks.

Examples
--------
>>> pairs = find_pairs(fp_index, pitch, new_ids=["a1..."], cfg=DuplicatesConfig())  # doctest: +SKIP
>>> [(p.kind, p.offset_s) for p in pairs]  # doctest: +SKIP
[('contained', 12.4)]
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.ndimage import uniform_filter1d

from soundalike.config import DuplicatesConfig
from soundalike.errors import ParameterError
from soundalike.fingerprint import FingerprintIndex, _log_spectrogram, frame_seconds

KINDS = ("exact", "re-encode", "contained", "version")

#: Pitch-class analysis: 8 kHz, 256 ms windows every 0.125 s, 250-2000 Hz (the lead's register).
_PC_NFFT, _PC_HOP, _PC_FMIN, _PC_FMAX = 2048, 1000, 250.0, 2000.0
#: Frames around each frame that are not its neighbours when the accompaniment's repeats are looked for (~2 s).
_PC_REPEAT_WIDTH = 16
#: Frames (5 min at 0.125 s) within which the accompaniment's repeats are looked for.
_PC_REPEAT_BLOCK = 2400
#: The repeats are found by the spectrum below this (bass and kick: they follow the harmony and
#: the groove, not the melody), unless it holds less than _PC_BASS_MIN_SHARE of the energy.
_PC_BASS_FMAX, _PC_BASS_MIN_SHARE = 200.0, 0.01
#: Foreground mask: what stands this many times above the repeating part is kept (nearly binary).
_PC_MASK_MARGIN = 8.0
#: Frames whose foreground (250-2000 Hz) holds less than this share of the track's loud frames
#: (95th percentile) carry no melody: 12.
_PC_MELODY_GATE = 0.05
#: A note's pitch class is held over the frames after it (up to 1 s) while the melody band's
#: energy decays (rises by at most this factor from frame to frame: no new onset).
_PC_HOLD_FRAMES, _PC_HOLD_RISE = 8, 1.05
#: Frames both sequences must have pitched at one alignment for it to count (5 s).
_PC_MIN_BOTH = 40
#: Pitch salience by harmonic summation: candidate notes from C3 to C6 every third of a semitone,
#: each the sum of its first _PC_HARMONICS harmonics' compressed magnitudes, weighed
#: _PC_HARMONIC_DECAY ** (h - 1); magnitudes are compressed as power ** _PC_COMPRESSION.
_PC_NOTE_RANGE, _PC_HARMONICS, _PC_HARMONIC_DECAY, _PC_COMPRESSION = (48, 84), 5, 0.8, 0.25
#: Longest run of one pitch class kept (3 s): longer is a held chord, not a melody (:func:`_cap_runs`).
_PC_MAX_RUN = 24
#: The second view's salience is each pitch class's mean over this many frames, centred (:func:`pitch_sequence`).
_PC_SMOOTH_FRAMES = 3
#: Views in a pitch sequence (rows): the frame's most salient note, and the same over smoothed salience.
PITCH_VIEWS = 2
#: The views' best alignments agree when their offsets are this close (and tempo ratios within 1.5 steps).
_PC_VIEWS_AGREE_S = 2.0
#: Bumped whenever :func:`pitch_sequence` changes, so stored sequences are made again.
PITCH_REVISION = 6


@dataclass(frozen=True)
class DuplicatePair:
    """One pair of catalogue tracks and why they pair.

    Attributes
    ----------
    track_a, track_b : str
        Track ids; for ``contained`` ``a`` is the longer track, ``b`` the edit inside it; for
        ``exact`` both are the same id (``paths`` lists the files).
    kind : str
        One of :data:`KINDS`.
    score : float
        Strength of the evidence in [0, 1] (duplicates: aligned share of the shorter track's
        landmarks; versions: melody agreement above the pair's median, see :func:`version_score`).
    coverage : float
        Share of the shorter track that matches.
    offset_s : float
        Where ``b`` starts inside ``a``, seconds.
    evidence : tuple of dict
        Matching stretches ``{a_s, b_s, hits}`` (duplicates) or ``{tempo_ratio, overlap_s,
        significance}`` (versions; ``tempo_ratio``: b's tempo relative to a's), or the file paths
        (exact).
    """

    track_a: str
    track_b: str
    kind: str
    score: float
    coverage: float
    offset_s: float
    evidence: tuple = field(default=())

    def to_json(self) -> dict:
        out = asdict(self)
        out["evidence"] = list(self.evidence)
        out["score"] = round(self.score, 4)
        out["coverage"] = round(self.coverage, 4)
        out["offset_s"] = round(self.offset_s, 3)
        return out


# --------------------------------------------------------------------------- exact copies


def exact_pairs(paths_by_track: Mapping[str, Sequence[str]]) -> list[DuplicatePair]:
    """One ``exact`` pair per track id held by two or more paths (byte-identical files)."""
    out = []
    for tid, paths in sorted(paths_by_track.items()):
        paths = sorted(set(paths))
        if len(paths) > 1:
            out.append(DuplicatePair(tid, tid, "exact", 1.0, 1.0, 0.0, tuple({"path": p} for p in paths)))
    return out


# --------------------------------------------------------------------------- pitch sequences (versions)


def pitch_sequence(wave: np.ndarray, sr: int) -> np.ndarray:
    """The melody's pitch class every 0.125 s of ``wave`` (8 kHz), in two views: uint8
    [PITCH_VIEWS, frames] (12: none).

    Alternate takes share their lead line, not their accompaniment, and two songs in one style
    share their accompaniment. So the repeating part of the spectrogram is masked out first
    (REPET-SIM: the median of each frame's nearest neighbours elsewhere in the track,
    :func:`_repeating`). The neighbours are chosen by the bass region (below 200 Hz) only:
    frames at the same place in the harmony and the groove, whose melody differs, so the median
    holds the accompaniment and not the melody (chosen by the whole spectrum, the repeated melody
    picks its own repeats and masks itself out). What stands well above that median is the
    foreground; the pitch class of its most salient note in 250-2000 Hz, by harmonic summation
    (:func:`_pitch_salience`), is the frame's pitch class. Frames whose foreground is weak
    (between notes, accompaniment only) and silence get 12, except the decay of a note after its
    clear attack, which keeps the attack's pitch class (:func:`_hold_notes`); a pitch class held
    longer than 3 s (a chord or drone, not a melody) counts for its first 3 s (:func:`_cap_runs`).

    The second view takes each frame's pitch class from the salience averaged over
    ``_PC_SMOOTH_FRAMES`` frames around it: a lead note lasts, while an arpeggio of the lead's own
    instrument changes note every 2-3 frames, so a piano lead buried in a piano arpeggio is named
    more often there; a plucked lead, loud only at its attack, is named better by the first view.
    :func:`version_score` scores both and counts the chance of both (BENCHMARKS.md, "two views").
    """
    import librosa

    if sr != 8000:
        raise ParameterError(f"pitch_sequence expects 8000 Hz audio, got {sr}")
    wave = np.asarray(wave, dtype=np.float32)
    if wave.shape[0] < _PC_NFFT:
        return np.zeros((PITCH_VIEWS, 0), np.uint8)
    mag = np.abs(librosa.stft(wave, n_fft=_PC_NFFT, hop_length=_PC_HOP))  # [bins, frames]
    freqs = librosa.fft_frequencies(sr=sr, n_fft=_PC_NFFT)
    level = (mag ** 2).sum(axis=0)
    band = (freqs >= _PC_FMIN) & (freqs <= _PC_FMAX)
    bass = freqs < _PC_BASS_FMAX
    by = mag[bass] if (mag[bass] ** 2).sum() >= _PC_BASS_MIN_SHARE * level.sum() else mag
    by = np.log1p(by / (by.max() + 1e-12) * 1000.0) + 1e-3  # loudness-independent, never all zero
    mag = mag[band]  # only the melody's register is masked and used
    band_level = (mag ** 2).sum(axis=0)
    if mag.shape[1] > 2 * _PC_REPEAT_WIDTH + 1:
        # Comparing every frame with every other is quadratic in length: repeats are looked for
        # within blocks of about _PC_REPEAT_BLOCK frames (a track shorter than 1.5 blocks is one).
        frames = mag.shape[1]
        edges = np.linspace(0, frames, max(1, int(round(frames / _PC_REPEAT_BLOCK))) + 1).astype(int)
        repeating = np.empty_like(mag)
        for a, b in zip(edges[:-1], edges[1:]):
            repeating[:, a:b] = _repeating(mag[:, a:b], by[:, a:b])
        mag = mag * librosa.util.softmask(mag - repeating, _PC_MASK_MARGIN * repeating, power=2)
    power = np.zeros((freqs.size, mag.shape[1]), np.float32)
    power[band] = mag ** 2
    salience = _pitch_salience(power)
    foreground = power.sum(axis=0)
    clear = foreground > _PC_MELODY_GATE * np.percentile(foreground, 95)
    views = []
    for view in (salience, uniform_filter1d(salience, _PC_SMOOTH_FRAMES, axis=1, mode="nearest")):
        out = _hold_notes(view.argmax(axis=0).astype(np.uint8), clear, band_level)
        out[level < level.max() * 1e-5] = 12
        views.append(_cap_runs(out, _PC_MAX_RUN))
    return np.stack(views)


def _cap_runs(seq: np.ndarray, longest: int) -> np.ndarray:
    """``seq`` with every run of one pitch class cut to its first ``longest`` frames (the rest 12).

    A melody moves: its notes last a few beats, and consecutive ones differ. A pitch class held
    for longer is a sustained chord or drone (an ambient pad's chord root, summed from its
    harmonics, holds for a whole chord), which two unrelated tracks on one progression in one key
    share for seconds at a time. A long note still counts, by its first seconds.
    """
    if seq.size == 0:
        return seq
    frames = np.arange(seq.size)
    run_start = np.maximum.accumulate(np.where(np.r_[True, seq[1:] != seq[:-1]], frames, 0))
    out = seq.copy()
    out[(frames - run_start >= longest) & (seq < 12)] = 12
    return out


def _pitch_salience(power: np.ndarray) -> np.ndarray:
    """Per pitch class, the salience of its most salient note, float32 [12, frames], from the
    masked foreground's power spectrum [bins, frames] (8 kHz, ``_PC_NFFT``).

    Folding the spectrum into chroma credits each harmonic to its own pitch class: a bright
    plucked lead over an accompaniment of the same instrument then reads as its third harmonic (a
    fifth up) on many frames. Summing each candidate note's harmonics (weighed down the series,
    on compressed magnitudes so that no single partial decides) credits them to the note.
    """
    weights, pitch_class = _salience_weights(power.shape[0])
    salience = weights @ np.power(power, _PC_COMPRESSION, dtype=np.float32)  # [notes, frames]
    out = np.empty((12, power.shape[1]), np.float32)
    for pc in range(12):
        out[pc] = salience[pitch_class == pc].max(axis=0)
    return out


@functools.lru_cache(maxsize=2)
def _salience_weights(bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``(weights [notes, bins], pitch class [notes])`` for :func:`_pitch_salience`: each harmonic
    of each candidate note spreads over the bins within half a semitone of it (triangular).

    The triangles are not normalised: a higher harmonic spans more bins and gathers more, so on a
    flat, noise-like spectrum notes around G4 outweigh C3 (24.8 against 7.4), and such frames
    lean to a few pitch classes (the melody gate keeps most of them out). Normalising each
    harmonic's triangle, or each note's weights, lost 5 and 7 of the 15 planted takes
    (BENCHMARKS.md, revision 5).
    """
    notes = np.arange(_PC_NOTE_RANGE[0], _PC_NOTE_RANGE[1] + 1e-9, 1.0 / 3.0)
    f0 = 440.0 * 2.0 ** ((notes - 69.0) / 12.0)
    freqs = np.arange(bins) * (8000.0 / _PC_NFFT)
    semitones = 12.0 * np.log2(np.maximum(freqs, 1e-3))
    weights = np.zeros((notes.size, bins), np.float32)
    for h in range(1, _PC_HARMONICS + 1):
        distance = np.abs(semitones[None, :] - 12.0 * np.log2(h * f0)[:, None])
        weights += _PC_HARMONIC_DECAY ** (h - 1) * np.clip(1.0 - 2.0 * distance, 0.0, None)
    return weights, np.round(notes).astype(int) % 12


def _hold_notes(pc: np.ndarray, clear: np.ndarray, band_level: np.ndarray) -> np.ndarray:
    """``pc`` [frames] where ``clear``; after a clear frame, its pitch class while its note decays; else 12.

    A plucked or struck note (guitar, mandolin, piano, marimba) stands out of the accompaniment
    only at its attack: a frame or two later it is too weak for the foreground mask, yet it still
    sounds until the next onset. So after a clear frame its pitch class is carried forward, at
    most ``_PC_HOLD_FRAMES`` frames, as long as the melody band's energy (``band_level``, the
    unmasked 250-2000 Hz) does not rise by more than ``_PC_HOLD_RISE`` from one frame to the next:
    any new onset (the next note, or an accompaniment chord) ends the hold.
    """
    frames = np.arange(pc.size)
    last_clear = np.maximum.accumulate(np.where(clear, frames, -1))
    rises = np.r_[True, band_level[1:] > _PC_HOLD_RISE * band_level[:-1]]
    last_rise = np.maximum.accumulate(np.where(rises & ~clear, frames, -1))
    held = ~clear & (last_clear >= 0) & (frames - last_clear <= _PC_HOLD_FRAMES) & (last_rise < last_clear)
    out = np.full(pc.size, 12, np.uint8)
    out[clear] = pc[clear]
    out[held] = pc[last_clear[held]]
    return out


def _repeating(mag: np.ndarray, by: np.ndarray) -> np.ndarray:
    """The repeating part of ``mag`` [bins, frames]: per frame, the median of its k nearest
    neighbours by ``by`` [features, frames] (cosine, at least _PC_REPEAT_WIDTH frames away,
    k = sqrt(frames)), at most ``mag``.

    What :func:`librosa.decompose.nn_filter` does with :func:`librosa.segment.recurrence_matrix`,
    without their per-frame sparse-matrix loops (half the time), and with exactly k neighbours
    (librosa takes k + 2 * width nearest and drops those too close, leaving fewer).
    """
    frames = mag.shape[1]
    unit = by / np.maximum(np.linalg.norm(by, axis=0, keepdims=True), 1e-12)
    sim = unit.T @ unit
    near = np.abs(np.arange(frames)[:, None] - np.arange(frames)[None, :]) < _PC_REPEAT_WIDTH
    sim[near] = -np.inf
    candidates = frames - 2 * _PC_REPEAT_WIDTH + 1  # the fewest any frame has
    k = int(min(np.ceil(np.sqrt(candidates)), candidates))
    neighbours = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # [frames, k]
    out = np.empty_like(mag)
    step = max(1, 2 ** 22 // max(1, mag.shape[0] * k))  # frames per chunk: ~16 MB of gathered columns
    for i in range(0, frames, step):
        out[:, i:i + step] = np.median(mag[:, neighbours[i:i + step]], axis=2)
    return np.minimum(mag, out)


def pitch_profile(seq: np.ndarray) -> np.ndarray:
    """Unit-norm share of each pitch class in a pitch sequence (all its views), float64 [12]
    (zeros when none)."""
    seq = np.ravel(seq)
    counts = np.bincount(seq[seq < 12], minlength=12).astype(np.float64)
    norm = np.linalg.norm(counts)
    return counts / norm if norm > 0 else counts


def version_score(a: np.ndarray, b: np.ndarray, cfg: DuplicatesConfig
                  ) -> tuple[float, float, float, float, float, float, float]:
    """How significantly two pitch sequences agree at their best tempo ratio and offset.

    ``b`` is stretched to each of ``cfg.version_tempo_steps`` tempo ratios and slid along ``a``;
    at each alignment with enough overlap (``cfg.version_min_overlap_s`` or 80 % of the shorter
    track, and ``cfg.version_min_coverage`` of it) the agreement is the mean one-hot correlation
    over the frames where both are pitched (at least 5 s of them). The pair's median agreement
    over all the alignments tried (what one key and style share anywhere) is subtracted, and the
    excess is weighed by the square root of those frames: chance agreement over n frames spreads
    as 1/sqrt(n), so a short match is not mistaken for a strong one. The best of N alignments of
    two unrelated tracks reaches about sqrt(2 ln N) by chance, and long tracks offer more
    alignments (a threshold on the significance alone, set on 30-60 s tracks, passes unrelated
    pairs of 3-minute ones), so how far the best stands above that is returned too.

    ``a`` and ``b`` are [frames] (one view) or [views, frames] (:func:`pitch_sequence`'s views,
    the same number in both): each view is scored against the same view of the other, against
    its own median. Where every view's best alignment is the same (tempo ratio within 1.5 steps,
    offset within ``_PC_VIEWS_AGREE_S``), the best of all is taken and N counts the alignments of
    every view; otherwise the first view's own result counts, so a chance peak of another view
    elsewhere adds nothing (on real music the smoothed view alone passed an unrelated pair).

    Returns
    -------
    significance, above_chance, score, tempo_ratio, offset_s, overlap_s, melody_share
        ``significance``: the largest weighed excess (about a z-score; thresholded by
        ``cfg.version_min_significance``); ``above_chance``: ``significance - sqrt(2 ln N)``
        over the N alignments tried (thresholded by ``cfg.version_min_above_chance``);
        ``score``: the excess agreement there, in
        [0, 1]; ``tempo_ratio``: b's tempo relative to a's; ``offset_s``: where b starts in a
        (a's time); ``overlap_s``: how long they overlap there (a's time); ``melody_share``:
        the share of that overlap where both are pitched (thresholded by
        ``cfg.version_min_melody_share``: a song with no lead line is pitched only where its
        accompaniment changes, and two such songs on related chords agree there).
    """
    none = (0.0, -np.inf, 0.0, 1.0, 0.0, 0.0, 0.0)
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape[0] != b.shape[0]:
        raise ParameterError(f"pitch sequences with {a.shape[0]} and {b.shape[0]} views cannot be compared")
    if a.shape[1] < 8 or b.shape[1] < 8:
        return none
    per_view = [_alignments(va, vb, cfg) for va, vb in zip(a, b)]
    counts = [sum(f[0].size for f in found) for found in per_view]
    if not any(counts):
        return none
    # Each view's best; above-chance is filled in below, once it is known which chance counts.
    every = [_best_alignment(found) for found in per_view]
    top = max(range(len(every)), key=lambda v: every[v][0])
    step = np.log(cfg.version_tempo_range[1] / cfg.version_tempo_range[0]) / max(cfg.version_tempo_steps - 1, 1)
    agree = all(abs(np.log(every[v][3] / every[top][3])) <= 1.5 * step + 1e-9
                and abs(every[v][4] - every[top][4]) <= _PC_VIEWS_AGREE_S
                for v in range(len(every)) if counts[v])
    # The best of every alignment of every view: chance counts them all. A view other than the
    # first only confirms: where the views' best alignments differ, the first view's own counts.
    if agree:
        chosen, alignments = every[top], sum(counts)
    elif counts[0]:
        chosen, alignments = every[0], counts[0]
    else:
        return none
    if chosen[0] <= 0:  # no alignment above the median: nothing to stand above chance
        return chosen
    chance = float(np.sqrt(2.0 * np.log(max(alignments, 2))))
    return (chosen[0], chosen[0] - chance) + chosen[2:]


def _best_alignment(found: list[tuple]) -> tuple[float, float, float, float, float, float, float]:
    """:func:`version_score`'s result for one view's ``found`` (:func:`_alignments`), with
    above-chance left at -inf for the caller, who knows how many alignments were tried."""
    frame_s = _PC_HOP / 8000.0
    best = (0.0, -np.inf, 0.0, 1.0, 0.0, 0.0, 0.0)
    if not found:
        return best
    median = float(np.median(np.concatenate([f[0] for f in found])))
    for agreement, both, ratio, lags, overlap in found:
        weighed = (agreement - median) * np.sqrt(both)
        i = int(np.argmax(weighed))
        if weighed[i] > best[0]:
            best = (float(weighed[i]), -np.inf, float(max(0.0, agreement[i] - median)),
                    float(ratio), float(lags[i] * frame_s), float(overlap[i] * frame_s), float(both[i] / overlap[i]))
    return best


def _alignments(a: np.ndarray, b: np.ndarray, cfg: DuplicatesConfig) -> list[tuple]:
    """Per tempo ratio of one view of :func:`version_score`: (agreement, both-pitched frames,
    ratio, lag, overlap) at every alignment with enough overlap."""
    frame_s = _PC_HOP / 8000.0
    ea = _one_hot(a)
    found = []
    lo, hi = cfg.version_tempo_range
    for ratio in np.exp(np.linspace(np.log(lo), np.log(hi), cfg.version_tempo_steps)):
        n = int(round(b.size * ratio))
        if n < 8:
            continue
        # b stretched to a's tempo: b at `ratio` times a's tempo lasts 1/ratio as long, so b's
        # frame j falls on a's frame lag + j * ratio.
        idx = np.clip(np.round(np.arange(n) / ratio).astype(int), 0, b.size - 1)
        eb = _one_hot(b[idx])
        size = 1 << int(np.ceil(np.log2(a.size + n)))
        # Columns 0-11 correlate the pitch classes; column 12 counts the frames both have pitched.
        xc = np.fft.irfft(np.fft.rfft(ea, size, axis=0) * np.conj(np.fft.rfft(eb, size, axis=0)), size, axis=0)
        lags = np.r_[np.arange(a.size), np.arange(-(n - 1), 0)]
        xc = np.r_[xc[: a.size], xc[size - (n - 1):]]
        agree, both = xc[:, :12].sum(axis=1), np.round(xc[:, 12])
        overlap = np.minimum(a.size, lags + n) - np.maximum(0, lags)
        shorter = min(a.size, n)
        ok = (overlap * frame_s >= min(cfg.version_min_overlap_s, 0.8 * shorter * frame_s)) & (
            overlap >= cfg.version_min_coverage * shorter) & (both >= _PC_MIN_BOTH)
        if ok.any():
            found.append((agree[ok] / both[ok], both[ok], ratio, lags[ok], overlap[ok]))
    return found


def symmetric_version_score(a: np.ndarray, b: np.ndarray, cfg: DuplicatesConfig, *,
                            lazy: bool = False) -> tuple[float, float, float, float, float, float, float]:
    """:func:`version_score` both ways: the weaker significance, above_chance, score and
    melody_share, a's alignment.

    :func:`version_score` stretches ``b`` to each tempo ratio (to the nearest frame) and slides
    it along ``a``, so swapping the two gives other alignments and other chance maxima: on
    real music the above-chance value of one pair differed by 0.65 between the two ways, and
    which way a pair is scored in :func:`find_pairs` depends on which track is new. A version
    must agree both ways. With ``lazy`` the reverse is only scored when ``a``'s way passes
    ``cfg``'s thresholds (the result passes exactly when the full one does).
    """
    fwd = version_score(a, b, cfg)
    if lazy and not is_version(fwd, cfg):
        return fwd
    rev = version_score(b, a, cfg)
    return (min(fwd[0], rev[0]), min(fwd[1], rev[1]), min(fwd[2], rev[2])) + fwd[3:6] + (min(fwd[6], rev[6]),)


def is_version(score: Sequence[float], cfg: DuplicatesConfig) -> bool:
    """Whether a :func:`version_score` / :func:`symmetric_version_score` result passes ``cfg``'s
    thresholds on significance, above-chance and melody share."""
    return (score[0] >= cfg.version_min_significance and score[1] >= cfg.version_min_above_chance
            and score[6] >= cfg.version_min_melody_share)


def _one_hot(seq: np.ndarray) -> np.ndarray:
    """[n, 13]: one-hot pitch class, centred so that chance agreement scores 0 (no-pitch frames
    are zero), and in column 12 whether the frame is pitched (1) or not (0)."""
    out = np.zeros((seq.size, 13), np.float32)
    has = seq < 12
    out[np.flatnonzero(has), seq[has]] = 1.0
    out[has, :12] -= 1.0 / 12.0
    out[:, :12] *= np.sqrt(12.0 / 11.0)
    out[:, 12] = has
    return out


# --------------------------------------------------------------------------- pairing


def compare_track(index: FingerprintIndex, row: int, cfg: DuplicatesConfig, *,
                  exclude_rows: Iterable[int] = ()) -> list[DuplicatePair]:
    """Duplicate pairs of the catalogue track at ``row`` with every other track of ``index``."""
    fp = index.track_fingerprint(row)
    rows, offsets, hits, totals, anchors = index.votes(fp, exclude_rows=[row, *exclude_rows],
                                                    anchors_min_hits=cfg.min_aligned_hits)
    frame_s = frame_seconds(index.cfg)
    out = []
    tid = str(index.track_ids[row])
    dur = float(index.durations_s[row])
    for other, off, h, total, anc in zip(rows, offsets, hits, totals, anchors):
        if h < cfg.min_aligned_hits or h < cfg.min_peak_share * total:
            continue
        odur = float(index.durations_s[other])
        # The query is this track; off = t_other - t_this: where this track starts inside the other.
        shorter = min(dur, odur)
        bins = max(1, int(np.ceil(shorter / cfg.coverage_bin_s)))
        covered = np.unique((anc * frame_s // cfg.coverage_bin_s).astype(int)).size
        coverage = min(1.0, covered / bins)
        if coverage < cfg.min_coverage:
            continue
        # Aligned share of the shorter track's landmarks.
        n_short = len(fp) if dur <= odur else int(np.sum(index.rows == other))
        score = float(min(1.0, h / max(n_short, 1)))
        if score < cfg.min_score:
            continue
        offset_s = float(off) * frame_s
        otid = str(index.track_ids[other])
        if _at_start(dur, odur, offset_s, cfg):
            a, b, offset = (tid, otid, offset_s) if tid < otid else (otid, tid, -offset_s)
            kind = "re-encode"
        elif odur >= dur:  # this (shorter) track is inside the other, starting at offset_s
            a, b, offset, kind = otid, tid, offset_s, "contained"
        else:  # the other is inside this one, starting at -offset_s
            a, b, offset, kind = tid, otid, -offset_s, "contained"
        evidence = _stretches(anc * frame_s, offset_s, a == tid, cfg)
        out.append(DuplicatePair(a, b, kind, score, coverage, offset, evidence))
    return out


def _at_start(dur_a: float, dur_b: float, offset_s: float, cfg: DuplicatesConfig) -> bool:
    """Two tracks of one length aligned at the start: a ``re-encode`` (else one contains the other)."""
    tolerance = cfg.same_length_tolerance_s
    return abs(dur_a - dur_b) <= tolerance and abs(offset_s) <= tolerance


def _stretches(query_times_s: np.ndarray, offset_s: float, query_is_a: bool, cfg: DuplicatesConfig) -> tuple:
    """Aligned landmarks grouped into clip-long stretches: ``{a_s, b_s, hits}`` each (a's and b's time)."""
    if query_times_s.size == 0:
        return ()
    out = []
    clip = cfg.evidence_clip_s
    for start in np.unique((query_times_s // clip) * clip)[: cfg.max_evidence]:
        n = int(np.sum((query_times_s >= start) & (query_times_s < start + clip)))
        t_query, t_other = float(start), float(start + offset_s)
        a_s, b_s = (t_query, t_other) if query_is_a else (t_other, t_query)
        out.append({"a_s": round(a_s, 2), "b_s": round(b_s, 2), "hits": n})
    return tuple(out)


def aligned_similarity(wave_a: np.ndarray, wave_b: np.ndarray, offset_s: float, index: FingerprintIndex, *,
                       max_seconds: float = 60.0) -> float:
    """Median frame-wise correlation of two 8 kHz waves' whitened spectra, ``b`` placed at ``offset_s`` in ``a``.

    Landmarks say *where* two tracks align (to a frame); this says whether they *sound* the same
    there: a re-encode or edit stays above ~0.75, another rendering of the same melody (a version)
    or two stationary pads that happen to share peaks fall well below. The placement is refined
    to a quarter of a frame (noise-like music decorrelates within a few milliseconds).
    """
    sr, hop = index.cfg.sample_rate_hz, index.cfg.hop_length
    wave_a = np.asarray(wave_a, np.float32)
    wave_b = np.asarray(wave_b, np.float32)
    start = int(round(offset_s * sr))
    if start < 0:
        wave_a, wave_b, start = wave_b, wave_a, -start
    n = min(wave_a.shape[0] - start, wave_b.shape[0], int(max_seconds * sr))
    if n <= index.cfg.n_fft + hop:
        return 0.0
    spec_b, _ = _log_spectrogram(wave_b[hop: n - hop], index.cfg)
    b = spec_b - spec_b.mean(axis=1, keepdims=True)
    best = -1.0
    for shift in range(-hop, hop + 1, max(1, hop // 4)):
        lo = start + hop + shift
        spec_a, _ = _log_spectrogram(wave_a[lo: lo + n - 2 * hop], index.cfg)
        m = min(len(spec_a), len(b))
        a = spec_a[:m] - spec_a[:m].mean(axis=1, keepdims=True)
        corr = (a * b[:m]).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b[:m], axis=1) + 1e-9)
        best = max(best, float(np.median(corr)))
    return best


def _verify(index: FingerprintIndex, p: DuplicatePair, load_wave, cfg: DuplicatesConfig,
            row_of: Mapping[str, int] | None = None) -> tuple[DuplicatePair, float]:
    """Check a landmark candidate by ear: its aligned similarity at the best of the top-voted offsets.

    Loop-based music aligns with itself a bar away almost as well as at the true offset; the
    spectra tell the offsets apart. The pair's offset becomes the best-sounding one. Two tracks
    of the same length that sound as good at the start as a bar away are a copy at the start (a
    low-bitrate MP3 copy of a loop sounds only a little better at its true offset than a bar
    away), and a ``contained`` candidate placed there becomes a ``re-encode``. ``row_of`` maps
    track ids to index rows (built here when not given; :func:`find_pairs` builds it once).
    """
    wave_a, wave_b = load_wave(p.track_a), load_wave(p.track_b)
    if wave_a is None or wave_b is None:  # a file unreadable now: it cannot be checked, so no pair
        return p, float("-inf")
    if row_of is None:
        row_of = {str(t): i for i, t in enumerate(index.track_ids)}
    durations = (float(index.durations_s[row_of[p.track_a]]), float(index.durations_s[row_of[p.track_b]]))
    fp_b = index.track_fingerprint(row_of[p.track_b])
    offsets = index.offsets(fp_b, row_of[p.track_a], k=cfg.offset_candidates) or [(p.offset_s, 0)]
    if p.kind == "re-encode":
        offsets = [(o, h) for o, h in offsets if abs(o) <= cfg.same_length_tolerance_s] or [(p.offset_s, 0)]
    scored = [(aligned_similarity(wave_a, wave_b, o, index), h, o) for o, h in offsets]
    best = max(s for s, _, _ in scored)
    # Exact loops sound the same a bar away too: among offsets that sound as good, the start
    # (tracks of one length) or else the one with most landmarks wins.
    good = [(s, h, o) for s, h, o in scored if s >= best - 0.03]
    at_start = [x for x in good if _at_start(*durations, x[2], cfg)]
    sim, _, offset = max(at_start or good, key=lambda x: (x[1], x[0]))
    evidence = ({"aligned_similarity": round(sim, 4)},) + tuple(p.evidence)
    if abs(offset - p.offset_s) > 0.5:  # the stretches were counted at the landmark offset
        evidence = ({"aligned_similarity": round(sim, 4), "landmark_offset_s": round(p.offset_s, 3)},)
    a, b, kind = p.track_a, p.track_b, p.kind
    if kind == "contained" and _at_start(*durations, offset, cfg):
        kind = "re-encode"  # ids in order, as compare_track gives re-encodes
        if b < a:
            a, b, offset = b, a, -offset
            evidence = tuple(_swapped(e) for e in evidence)
    return DuplicatePair(a, b, kind, p.score, p.coverage, offset, evidence), sim


def _swapped(evidence: dict) -> dict:
    """One evidence entry with tracks a and b swapped (times exchanged, offsets negated)."""
    out = dict(evidence)
    if "a_s" in out:
        out["a_s"], out["b_s"] = evidence["b_s"], evidence["a_s"]
    if "landmark_offset_s" in out:
        out["landmark_offset_s"] = -evidence["landmark_offset_s"]
    return out


def find_pairs(index: FingerprintIndex, pitch: Mapping[str, np.ndarray], *, new_ids: Iterable[str],
               cfg: DuplicatesConfig, load_wave=None, progress: bool = False) -> list[DuplicatePair]:
    """Duplicate and version pairs that involve at least one of ``new_ids``.

    Each new track is compared with every track of ``index`` (landmark votes: duplicates) and,
    when it is not a duplicate, with every track's pitch sequence (versions). Pairs of two new
    tracks are found once.

    Parameters
    ----------
    load_wave : callable or None
        ``load_wave(track_id) -> wave`` (mono, 8 kHz), or None for a track whose file cannot be
        read now (its landmark candidates are dropped). When given, every landmark candidate is
        checked with :func:`aligned_similarity`: below ``cfg.min_aligned_similarity`` it is not
        a duplicate but a ``version`` (time-aligned melody, other sound), or nothing when even
        that is below ``cfg.version_min_aligned_similarity``.
    """
    from tqdm import tqdm

    row_of = {str(t): i for i, t in enumerate(index.track_ids)}
    new = [t for t in dict.fromkeys(new_ids) if t in row_of]
    found: dict[tuple[str, str], DuplicatePair] = {}
    done: set[str] = set()
    for tid in tqdm(new, desc="duplicates", unit="track", disable=not progress):
        skip = [row_of[t] for t in done]
        for p in compare_track(index, row_of[tid], cfg, exclude_rows=skip):
            key = (min(p.track_a, p.track_b), max(p.track_a, p.track_b))
            if load_wave is not None:
                p, sim = _verify(index, p, load_wave, cfg, row_of)
                if sim < cfg.version_min_aligned_similarity or (
                        sim < cfg.min_aligned_similarity and p.score < cfg.version_min_landmark_score):
                    continue
                if sim < cfg.min_aligned_similarity:
                    p = DuplicatePair(p.track_a, p.track_b, "version", p.score, p.coverage, p.offset_s, p.evidence)
            if key not in found or p.score > found[key].score:
                found[key] = p
        done.add(tid)
    if cfg.versions and pitch:
        done = set()
        ids = list(pitch)
        profiles = np.stack([pitch_profile(pitch[t]) for t in ids]) if ids else np.zeros((0, 12))
        for tid in new:
            seq = pitch.get(tid)
            if seq is None:
                continue
            # The full comparison costs ~15 ms a pair: only the tracks whose pitch-class profile
            # is closest (a version keeps its key and its melody's notes) get it.
            closeness = profiles @ pitch_profile(seq)
            for i in np.argsort(-closeness, kind="stable")[: cfg.version_candidates + 1]:
                other, oseq = ids[i], pitch[ids[i]]
                if other == tid or other in done:
                    continue
                key = (min(tid, other), max(tid, other))
                if key in found:
                    continue  # a duplicate is never also a version
                scored = symmetric_version_score(oseq, seq, cfg, lazy=True)
                significance, above_chance, score, ratio, offset, overlap, melody_share = scored
                if is_version(scored, cfg):
                    a, b = key
                    shorter = min(oseq.shape[-1], seq.shape[-1] * ratio) * _PC_HOP / 8000.0  # other's time; frames, not both views' values
                    coverage = min(1.0, overlap / max(shorter, 1e-9))
                    if a != other:  # report b's start inside a, in a's time (a is this track)
                        ratio, offset, overlap = 1.0 / ratio, -offset / ratio, overlap / ratio
                    found[key] = DuplicatePair(a, b, "version", score, coverage, offset, (
                        {"tempo_ratio": round(ratio, 4), "overlap_s": round(overlap, 1),
                         "significance": round(significance, 2), "above_chance": round(above_chance, 2),
                         "melody_share": round(melody_share, 2)},))
            done.add(tid)
    return sorted(found.values(), key=lambda p: (KINDS.index(p.kind), -p.score, p.track_a, p.track_b))


# --------------------------------------------------------------------------- report


def report(pairs: Sequence[dict], *, top: int = 10) -> str:
    """A short human report: counts per kind, then the ``top`` strongest pairs of each kind with
    offsets (``top=0``: counts only)."""
    if top < 0:  # a slice [:-1] would silently drop each kind's last pair
        raise ParameterError(f"top must be >= 0, got {top}")
    lines = []
    counts = {k: sum(1 for p in pairs if p["kind"] == k) for k in KINDS}
    lines.append("duplicates: " + ", ".join(f"{counts[k]} {k}" for k in KINDS))
    for kind in KINDS:
        of_kind = [p for p in pairs if p["kind"] == kind][:top]
        if not of_kind:
            continue
        lines.append(f"{kind}:")
        for p in of_kind:
            a = p.get("path_a") or p["track_a"][:12]
            b = p.get("path_b") or p["track_b"][:12]
            if kind == "exact":
                lines.append(f"  {a} == {b}")
            else:
                lines.append(f"  {a} <- {b} at {p['offset_s']:+.1f} s (score {p['score']:.2f}, "
                             f"coverage {p['coverage']:.0%})")
    return "\n".join(lines)
