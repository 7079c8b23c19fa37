"""Shared fixtures: real audio bytes written to disk, made in the test."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf


def melody(sr: int, seconds: float, seed: int = 0, *, note_s: float = 0.25) -> np.ndarray:
    """A deterministic plucked melody with harmonics: float32 [n] in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n, dtype=np.float64)
    note_n = int(note_s * sr)
    t = np.arange(note_n) / sr
    envelope = np.exp(-t * 6.0)
    for i, start in enumerate(range(0, n, note_n)):
        freq = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        tone = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6)) * envelope
        piece = tone[: n - start]
        out[start : start + piece.shape[0]] += piece
    out += 0.02 * rng.standard_normal(n)
    return (0.8 * out / np.abs(out).max()).astype(np.float32)


@pytest.fixture
def write_audio(tmp_path):
    """write_audio(name, wave [n] or [n, ch], sr, **soundfile kwargs) -> path."""

    def _write(name: str, wave: np.ndarray, sr: int, **kwargs):
        path = tmp_path / name
        sf.write(path, wave, sr, **kwargs)
        return path

    return _write


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH (scripts/bootstrap.sh installs it)")
