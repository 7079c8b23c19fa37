"""The Delta table contracts: one StructType per table, with column comments.

Every writer and reader uses these; ``ensure_tables`` creates the tables from them.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


def _f(name: str, dtype, comment: str, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable, metadata={"comment": comment})


TRACKS = StructType(
    [
        _f("track_id", StringType(), "SHA-256 of the file bytes: renames keep it, copies share it", False),
        _f("path", StringType(), "absolute path of the file (natural key)", False),
        _f("bytes", LongType(), "file size in bytes"),
        _f("modified", TimestampType(), "file modification time"),
        _f("duration_s", DoubleType(), "duration from the header, seconds"),
        _f("sample_rate", IntegerType(), "native sample rate, Hz"),
        _f("channels", IntegerType(), "native channel count"),
        _f("format", StringType(), "container format, lower case"),
        _f("title", StringType(), "title from the metadata sidecar, else the file name"),
        _f("tags", ArrayType(StringType()), "descriptive tags from the metadata sidecar"),
        _f("metadata", StringType(), "the sidecar entry as JSON (style, tempo, key, motif, ...)"),
        _f("ingested_at", TimestampType(), "when this row was last written"),
    ]
)

CLIPS = StructType(
    [
        _f("track_id", StringType(), "tracks.track_id", False),
        _f("clip_policy", StringType(), "clip_s/hop_s/min_tail_s the clip was cut with", False),
        _f("clip_idx", IntegerType(), "clip number within the track, from 0", False),
        _f("start_s", DoubleType(), "clip start in the track, seconds"),
        _f("end_s", DoubleType(), "end of the real (unpadded) audio, seconds"),
        _f("rms_db", FloatType(), "level of the clip's real audio, dBFS"),
        _f("is_silent", BooleanType(), "below clips.silence_rms_db"),
        _f("is_noise", BooleanType(), "applause-like noise (flat, untonal spectrum)"),
        _f("created_at", TimestampType(), "when the clip was cut"),
    ]
)

EMBEDDINGS = StructType(
    [
        _f("track_id", StringType(), "tracks.track_id", False),
        _f("clip_policy", StringType(), "clips.clip_policy", False),
        _f("clip_idx", IntegerType(), "clips.clip_idx", False),
        _f("embedder", StringType(), "embedder name@version (version covers code, params, weights)", False),
        _f("vector", ArrayType(FloatType()), "unit-norm embedding"),
        _f("created_at", TimestampType(), "when the vector was computed"),
    ]
)

INGEST_ERRORS = StructType(
    [
        _f("path", StringType(), "the file that failed", False),
        _f("stage", StringType(), "ingest, embed or fingerprint", False),
        _f("error_class", StringType(), "exception class"),
        _f("message", StringType(), "readable reason"),
        _f("seen_at", TimestampType(), "when the error was recorded"),
    ]
)

FINGERPRINTS = StructType(
    [
        _f("track_id", StringType(), "tracks.track_id", False),
        _f("settings", StringType(), "hash of the fingerprint settings the landmarks were made with"),
        _f("duration_s", DoubleType(), "decoded length, seconds"),
        _f("hashes", ArrayType(IntegerType()), "landmark hashes (uint32 stored as int32)"),
        _f("times", ArrayType(IntegerType()), "anchor frame of each hash (fingerprint.hop_length samples at 8 kHz)"),
        _f("pitch", BinaryType(), "melody pitch class per 0.125 s (uint8, 12 = none), for versions"),
        _f("created_at", TimestampType(), "when the track was fingerprinted"),
    ]
)

DUPLICATES = StructType(
    [
        _f("track_a", StringType(), "tracks.track_id; for contained the longer track", False),
        _f("track_b", StringType(), "tracks.track_id; for contained the edit inside a; for exact = track_a", False),
        _f("path_a", StringType(), "a file of track_a (the first path)"),
        _f("path_b", StringType(), "a file of track_b (exact: another file with the same bytes)"),
        _f("kind", StringType(), "exact | re-encode | contained | version"),
        _f("score", DoubleType(), "strength of the evidence, 0..1"),
        _f("coverage", DoubleType(), "fraction of the shorter track that matches"),
        _f("offset_s", DoubleType(), "where b starts inside a, seconds"),
        _f("evidence", StringType(), "JSON: aligned stretches {a_s, b_s, hits}, or the paths (exact), or tempo ratio (version)"),
        _f("run_at", TimestampType(), "when the pair was found"),
    ]
)

DUPLICATES_CHECKED = StructType(
    [
        _f("track_id", StringType(), "tracks.track_id", False),
        _f("settings", StringType(), "hash of the duplicates and fingerprint settings it was compared under"),
        _f("checked_at", TimestampType(), "when the track was compared with the catalogue"),
    ]
)

#: Table key → (schema, natural key columns, table comment).
TABLES = {
    "tracks": (TRACKS, ("path",), "Audio files of the catalogue, one row per path"),
    "clips": (CLIPS, ("track_id", "clip_policy", "clip_idx"), "Fixed-length clips of each track, with silence/noise flags"),
    "embeddings": (EMBEDDINGS, ("track_id", "clip_policy", "clip_idx", "embedder"), "One vector per clip and embedder"),
    "ingest_errors": (INGEST_ERRORS, ("path", "stage"), "Files that could not be ingested or embedded, and why"),
    "fingerprints": (FINGERPRINTS, ("track_id",), "Landmark fingerprints and pitch sequences per track"),
    "duplicates": (DUPLICATES, ("track_a", "track_b"), "Duplicate recordings and versions among the tracks"),
    "duplicates_checked": (DUPLICATES_CHECKED, ("track_id",), "Tracks the duplicates stage has compared with the catalogue"),
}


def ddl(schema: StructType) -> str:
    """Column list for CREATE TABLE, with comments."""
    cols = []
    for field in schema.fields:
        comment = field.metadata.get("comment", "").replace("'", "\\'")
        null = "" if field.nullable else " NOT NULL"
        cols.append(f"`{field.name}` {field.dataType.simpleString()}{null} COMMENT '{comment}'")
    return ", ".join(cols)
