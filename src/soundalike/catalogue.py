"""Describe a catalogue directory: which audio files it holds, their identity and metadata.

Describe-then-load: scanning costs one ``stat`` per file; hashing and header probing happen only
for files that are new or changed; decoding happens later, in the embed stage.

A track's identity is the SHA-256 of its bytes (``track_id``), so a renamed or moved file keeps
its clips and embeddings, and byte-identical copies share one id.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from soundalike.audio import probe_audio
from soundalike.checksums import sha256_file
from soundalike.errors import AudioDecodeError, ConfigError

@dataclass(frozen=True)
class CatalogueFile:
    """One candidate file found by :func:`scan_catalogue` (stat only, nothing read)."""

    path: str
    bytes: int
    modified_s: float


@dataclass(frozen=True)
class TrackInfo:
    """A file's content identity and audio header, as stored in the ``tracks`` table."""

    track_id: str
    duration_s: float
    sample_rate_hz: int
    channels: int
    format: str


def scan_catalogue(root: str | os.PathLike, *, extensions: tuple[str, ...]) -> Iterator[CatalogueFile]:
    """Yield the audio files under ``root`` (recursively, sorted), by extension.

    Hidden files and directories are skipped; linked files and directories are followed. Entries that look like audio files but are not
    regular files (a directory named ``x.mp3``, a FIFO, a broken link) or cannot be read are still
    yielded, so that the ingest stage records *why* they were not ingested instead of ignoring
    them silently.

    Raises
    ------
    ConfigError
        If ``root`` does not exist or is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"catalogue path {root} is not a directory (set catalogue.path)")
    wanted = {e.lower().lstrip(".") for e in extensions}
    visited: set[tuple[int, int]] = set()
    # Linked directories are followed, as linked files are (a catalogue assembled from links to
    # album folders); each real directory is walked once, so a link loop ends.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = [n for n in filenames if not n.startswith(".")]
        names += [d for d in dirnames if Path(d).suffix.lower().lstrip(".") in wanted]
        for name in sorted(names):
            if Path(name).suffix.lower().lstrip(".") not in wanted:
                continue
            path = Path(dirpath, name)
            try:
                st = path.stat()
                where = path.resolve()
            except OSError:
                try:  # a broken symbolic link: yielded under its own name, so that ingest records it
                    st = path.lstat()
                    where = path.absolute()
                except OSError:
                    continue
            size = st.st_size if path.is_file() else 0
            yield CatalogueFile(path=str(where), bytes=int(size), modified_s=float(st.st_mtime))


def describe_track(path: str | os.PathLike, *, max_file_bytes: int) -> TrackInfo:
    """Hash and probe one file.

    Raises
    ------
    AudioDecodeError
        The file is not a readable audio file, is empty, or is larger than ``max_file_bytes``.
    """
    p = Path(path)
    if p.is_file() and p.stat().st_size > max_file_bytes:
        raise AudioDecodeError(
            str(p), f"file is {p.stat().st_size} bytes, over catalogue.max_file_bytes={max_file_bytes}"
        )
    info = probe_audio(p)  # also rejects missing, empty, unreadable and directory entries
    try:
        track_id = sha256_file(p)
    except OSError as exc:
        raise AudioDecodeError(str(p), f"cannot read file ({exc.strerror or exc})") from None
    return TrackInfo(
        track_id=track_id,
        duration_s=float(info.duration_s),
        sample_rate_hz=info.sample_rate_hz,
        channels=info.channels,
        format=info.format,
    )


def read_sidecar(root: str | os.PathLike, metadata_file: str) -> dict[str, dict]:
    """Metadata per file from the catalogue's sidecar, keyed by absolute resolved path.

    The sidecar is a JSON list of objects, or a CSV with a header; either way each entry has a
    ``file`` field relative to ``root``. A missing sidecar gives ``{}``.

    Raises
    ------
    ConfigError
        If the sidecar exists but cannot be parsed or lacks ``file`` fields.
    """
    path = Path(root) / metadata_file
    if not path.is_file():
        return {}
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as handle:
                entries = list(csv.DictReader(handle))
        else:
            entries = json.loads(path.read_text())
    except (OSError, ValueError, csv.Error) as exc:
        raise ConfigError(f"metadata sidecar {path} cannot be read: {exc}") from None
    if isinstance(entries, dict) and "tracks" in entries:
        entries = entries["tracks"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "file" in e for e in entries):
        raise ConfigError(f"metadata sidecar {path} must be a list of objects with a 'file' field")
    for number, e in enumerate(entries, start=1):
        what = f"metadata sidecar {path}, entry {number}"
        if None in e:  # csv.DictReader puts the fields past the header under None
            raise ConfigError(f"{what} has more fields than the header (an unquoted comma?): {e[None]!r}")
        if not isinstance(e["file"], str) or not e["file"].strip():
            raise ConfigError(f"{what}: 'file' must be a path relative to the catalogue, got {e['file']!r}")
        tags = e.get("tags")
        if tags is not None and not isinstance(tags, str) and not (
            isinstance(tags, list) and all(isinstance(t, (str, int, float)) and not isinstance(t, bool) for t in tags)
        ):
            raise ConfigError(f"{what} ({e['file']}): 'tags' must be a list of strings or one comma-separated string, got {tags!r}")
    return {str((Path(root) / e["file"]).resolve()): e for e in entries}


def sidecar_tags(entry: dict) -> list[str]:
    """The descriptive tags of a sidecar entry: its ``tags`` plus ``style``, as strings."""
    tags = entry.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.replace(";", ",").split(",") if t.strip()]
    out = [str(t) for t in tags]
    style = entry.get("style")
    if style and str(style) not in out:
        out.insert(0, str(style))
    return out
