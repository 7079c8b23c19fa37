"""The one configuration system: YAML files in ``conf/`` loaded into frozen dataclasses.

A profile file (``conf/local.yaml``, ``conf/databricks.yaml``) names the file it extends
(``extends: base.yaml``) and overrides what differs. ``--set key.sub=value`` overrides are applied
once, at the edge (the CLI or a job's ``main``), and every stage receives the typed object.
Unknown keys are errors, so a typo never silently falls back to a default; so are values out
of range (each section checks its own in ``__post_init__``, naming the key), so that a bad
``--set`` stops the command before any stage runs.

Examples
--------
>>> cfg = load_config("conf/local.yaml", overrides=["clips.hop_s=5"])  # doctest: +SKIP
>>> cfg.clips.hop_s  # doctest: +SKIP
5.0
>>> cfg.tables.name("tracks")  # doctest: +SKIP
'spark_catalog.soundalike.tracks'
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from soundalike.errors import ConfigError


@dataclass(frozen=True)
class CatalogueConfig:
    """Where the audio catalogue lives and which files belong to it."""

    path: str = "work/sample_catalogue"
    extensions: tuple[str, ...] = ("wav", "flac", "ogg", "opus", "mp3", "m4a", "aac", "wma", "aif", "aiff")
    metadata_file: str = "catalogue.json"
    max_file_bytes: int = 2_000_000_000
    decode_timeout_s: float = 600.0

    def __post_init__(self):
        if not str(self.path).strip():
            # Path("") is the current directory: an unset variable (--set catalogue.path=$X)
            # would scan wherever the job runs and remove every track not found there.
            raise ConfigError("catalogue.path is empty; set it to the catalogue's directory")
        if not self.extensions or not all(str(e).strip(" .") for e in self.extensions):
            raise ConfigError(f"catalogue.extensions must be a non-empty list of file extensions, got {self.extensions!r}")
        _check("catalogue", self, ("max_file_bytes",), _at_least(1))
        _check("catalogue", self, ("decode_timeout_s",), _positive)


@dataclass(frozen=True)
class ClipsConfig:
    """How tracks are cut into clips and which clips are flagged as not music."""

    clip_s: float = 10.0
    hop_s: float = 10.0
    min_tail_s: float = 5.0
    silence_rms_db: float = -50.0
    noise_flatness: float = 0.30
    noise_tonality_max: float = 0.25
    index_flagged: bool = False

    def __post_init__(self) -> None:
        # The same policy clips.chunk enforces, checked here so that a bad value stops the run
        # before any stage (at chunk time every file would be quarantined in ingest_errors).
        _check("clips", self, ("clip_s", "hop_s", "min_tail_s"), _positive)
        if self.hop_s > self.clip_s:
            raise ConfigError(f"clips.hop_s ({self.hop_s}) must not exceed clips.clip_s ({self.clip_s}): "
                              "audio between clips would never be indexed")
        if self.min_tail_s > self.clip_s:
            raise ConfigError(f"clips.min_tail_s ({self.min_tail_s}) must not exceed clips.clip_s ({self.clip_s})")
        _check("clips", self, ("silence_rms_db",), _in_range(-200.0, 0.0))
        _check("clips", self, ("noise_flatness", "noise_tonality_max"), _in_range(0.0, 1.0))


@dataclass(frozen=True)
class EmbedderConfig:
    """Which embedder turns clips into vectors, and how it is run.

    ``decode_workers``: threads that decode and cut the next files while a GPU embedder works
    (:func:`soundalike.extract.extract_tracks`); 0 decodes each file in turn. Only used when the
    embedder runs on a GPU: on CPUs the decoding competes for the cores Spark already fills.
    ``resample_on_device``: with those threads, resample on the GPU
    (:class:`soundalike.resample.DeviceResampler`) instead of with soxr in the thread.
    """

    name: str = "mel"
    batch_size: int = 32
    device: str = "auto"
    weights_path: str | None = None
    options: dict = field(default_factory=dict)
    decode_workers: int = 8
    resample_on_device: bool = False

    def __post_init__(self):
        if not self.name.strip():
            raise ConfigError("embedder.name is empty; set it to mel, clap, wav2vec2, siamese, ...")
        _check("embedder", self, ("batch_size",), _at_least(1))
        _check("embedder", self, ("decode_workers",), _at_least(0))


@dataclass(frozen=True)
class IndexConfig:
    """How the clip index is chosen and tuned (see :mod:`soundalike.index`).

    Attributes
    ----------
    factory : str
        ``"auto"`` or a ``faiss.index_factory`` string (``"Flat"``, ``"HNSW32,Flat"``,
        ``"IVF4096,PQ45x8,RFlat"``, ...). ``PQ<M>`` needs ``M`` to divide the embedder's
        dimension (``mel``: 225, so ``PQ25`` or ``PQ45``); an unparsable string is refused at
        load, one that does not fit the dimension by the index stage.
    exact_max : int
        ``auto`` uses exact search up to this many vectors.
    hnsw_max : int
        ``auto`` uses HNSW up to this many vectors, IVF-PQ with re-ranking above. 0 by default:
        at 1M clips IVF-PQ with exact re-ranking (k_factor 32) had recall@10 1.00 at 2,490 QPS
        where HNSW32 reached 0.94 at 780 QPS (BENCHMARKS.md).
    nprobe, ef_search, k_factor : int
        Search-time knobs for IVF (lists probed), HNSW (beam) and re-ranking (candidates × k).
    """

    factory: str = "auto"
    exact_max: int = 200_000
    hnsw_max: int = 0
    nprobe: int = 32
    ef_search: int = 128
    k_factor: int = 32

    def __post_init__(self) -> None:
        _check("index", self, ("exact_max", "hnsw_max"), _at_least(0))
        _check("index", self, ("nprobe", "ef_search", "k_factor"), _at_least(1))
        if self.factory != "auto":
            from soundalike.index import factory_syntax_error

            # Only the syntax can be checked here: whether, say, PQ32 fits the vectors depends on
            # the embedder's dimension, which build_index checks (a ConfigError naming both).
            reason = factory_syntax_error(self.factory)
            if reason:
                raise ConfigError(f"index.factory {self.factory!r} is not auto or a faiss index_factory string "
                                  f"such as Flat, HNSW32,Flat or IVF1024,PQ25x8,RFlat ({reason})")


@dataclass(frozen=True)
class QueryConfig:
    """Defaults and limits of a query (each default can be overridden per request)."""

    max_results: int = 10
    top_k_per_chunk: int = 5
    vote_weight: float = 0.2
    max_query_seconds: float = 600.0
    max_query_bytes: int = 50_000_000
    allowed_path_root: str | None = None

    def __post_init__(self) -> None:
        _check("query", self, ("max_results", "top_k_per_chunk", "max_query_bytes"), _at_least(1))
        _check("query", self, ("vote_weight",), _in_range(0.0, 1.0))
        _check("query", self, ("max_query_seconds",), _positive)
        if self.allowed_path_root is not None and not self.allowed_path_root.strip():
            # Path("") is the current directory: an unset variable would open up wherever the server runs.
            raise ConfigError("query.allowed_path_root is empty; set a directory, or null to refuse query paths")


@dataclass(frozen=True)
class FingerprintConfig:
    """Landmark fingerprints for excerpt identification and duplicates (:mod:`soundalike.fingerprint`).

    Attributes
    ----------
    enabled : bool
        Build the fingerprint index beside the clip index and fuse its matches into queries.
    sample_rate_hz, n_fft, hop_length : int
        Spectrogram of the landmarks (8 kHz: what a phone line and a low-bitrate mp3 keep).
    fmin_hz, fmax_hz : float
        Peaks are picked only in this band (the telephone band by default).
    whiten_bins : int
        Width of the running mean removed along frequency before peak picking.
    peak_dt_frames, peak_df_bins : int
        A peak is the maximum of its ±frames × ±bins neighbourhood.
    peaks_per_s : int
        At most this many peaks per second (the strongest).
    floor_db : float
        Frames more than this below the loudest frame get no peaks.
    fan_out, pair_window, max_dt_frames, max_df_bins : int
        Each peak pairs with its first ``fan_out`` later peaks (looking at the next
        ``pair_window``) within ``max_dt_frames`` frames and ±``max_df_bins`` bins.
    freq_quant_bins : int
        Frequencies are quantised to this many bins in a hash (coarser: more speed-tolerant).
    offset_tolerance_frames : int
        Votes within ±this many frames of an offset count as aligned with it.
    max_bucket : int
        Hashes held by more than this many catalogue landmarks are ignored (stop words).
    speed_factors : tuple of float
        Query copies tried, undoing a speed change of each factor (1.03: played 3 % fast).
    min_aligned_hits : int
        A match needs at least this many time-aligned landmarks to be confident ...
    min_margin : float
        ... and this many times the runner-up's ...
    min_peak_share : float
        ... and at least this share of all the landmark matches with that track, at any offset.
        Held chords and drones repeat the same landmark pairs at every moment, so chance matches
        with another such song pile up on some offset by the thousand: a source is a peak that
        stands out of its own matches (true excerpts: 2-85 %, chance peaks of 30+ hits: <= 1.8 %).
    min_query_s : float
        Shorter queries are refused (a clear ``ParameterError``).
    fusion_weight : float
        How confident fingerprint matches enter the ranking: they go first (ordered by aligned
        hits) when > 0; 0 reports them without reordering.
    """

    enabled: bool = True
    sample_rate_hz: int = 8000
    n_fft: int = 1024
    hop_length: int = 256
    fmin_hz: float = 300.0
    fmax_hz: float = 3400.0
    whiten_bins: int = 101
    peak_dt_frames: int = 6
    peak_df_bins: int = 10
    peaks_per_s: int = 18
    floor_db: float = 60.0
    fan_out: int = 6
    pair_window: int = 48
    max_dt_frames: int = 63
    max_df_bins: int = 63
    freq_quant_bins: int = 2
    offset_tolerance_frames: int = 2
    max_bucket: int = 20000
    speed_factors: tuple[float, ...] = (0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03)
    min_aligned_hits: int = 30
    min_margin: float = 2.0
    min_peak_share: float = 0.015
    min_query_s: float = 3.0
    fusion_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2:
            raise ConfigError(f"fingerprint band must satisfy 0 < fmin_hz < fmax_hz <= Nyquist, got "
                              f"{self.fmin_hz}-{self.fmax_hz} Hz at {self.sample_rate_hz} Hz")
        for name in ("n_fft", "hop_length", "whiten_bins", "peaks_per_s", "fan_out", "pair_window",
                     "max_dt_frames", "max_df_bins", "freq_quant_bins", "min_aligned_hits", "max_bucket"):
            if getattr(self, name) < 1:
                raise ConfigError(f"fingerprint.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_dt_frames >= 64 or self.max_df_bins // self.freq_quant_bins >= 64:
            raise ConfigError("fingerprint.max_dt_frames must be < 64 and max_df_bins / freq_quant_bins < 64 "
                              "(they are 6-bit and 7-bit fields of the hash)")
        if not self.speed_factors or not all(0.5 <= f <= 2.0 for f in self.speed_factors):
            raise ConfigError(f"fingerprint.speed_factors must be a non-empty list in [0.5, 2], got {self.speed_factors}")
        if self.min_margin < 1.0 or self.min_query_s <= 0 or self.fusion_weight < 0:
            raise ConfigError("fingerprint.min_margin must be >= 1, min_query_s > 0 and fusion_weight >= 0")
        if not 0.0 <= self.min_peak_share < 1.0:
            raise ConfigError(f"fingerprint.min_peak_share must be in [0, 1), got {self.min_peak_share}")
        _check("fingerprint", self, ("peak_dt_frames", "peak_df_bins", "offset_tolerance_frames"), _at_least(0))
        _check("fingerprint", self, ("floor_db",), _positive)


@dataclass(frozen=True)
class DuplicatesConfig:
    """How ``soundalike duplicates`` pairs catalogue tracks (see :mod:`soundalike.duplicates`).

    Attributes
    ----------
    min_aligned_hits : int
        A duplicate needs at least this many landmarks agreeing on one offset ...
    min_coverage : float
        ... spread over at least this share of the shorter track.
    min_score : float
        ... holding at least this share of the shorter track's landmarks ...
    min_peak_share : float
        ... and this share of all the landmark matches of the pair, at any offset: held chords
        repeat the same landmark pairs at every moment, so two pads in one key and progression
        match at every offset and pile up hundreds of hits on some offset by chance (their
        peaks: 0.5-1.1 % of their matches; copies, planted and 64 kbit/s MP3: 3.8-55 %) ...
    min_aligned_similarity : float
        ... and sounding the same there (spectral correlation at the offset); between
        ``version_min_aligned_similarity`` and this, an aligned pair is a ``version``.
    version_min_aligned_similarity : float
    version_min_landmark_score : float
        An aligned pair that sounds different is a version only with this share of landmarks
        (stationary pads share a few peaks with anything in their key).
    coverage_bin_s : float
        Coverage is counted in bins of this many seconds.
    same_length_tolerance_s : float
        Equal lengths and offset ≈ 0 within this: ``re-encode``; otherwise ``contained``.
    offset_candidates : int
        Top-voted offsets (1 s apart) whose aligned similarity is checked; the best-sounding wins
        (music built from repeated bars aligns a bar away almost as well).
    versions : bool
        Look for versions (same piece, other recording) among non-duplicates.
    version_min_significance : float
        How far above chance the melodies of a version must agree at their best tempo ratio and
        offset: the agreement above the pair's median over all ratios and offsets (what one key
        and style share anywhere), times the square root of the frames compared (about a
        z-score; see :func:`soundalike.duplicates.version_score`).
    version_min_above_chance : float
        ... and how far it must stand above what the best of the N alignments tried reaches by
        chance (sqrt(2 ln N)): long tracks offer more alignments, so more chances. Both
        thresholds hold both ways (:func:`soundalike.duplicates.symmetric_version_score`).
    version_min_melody_share : float
        ... and at that alignment both tracks must carry a melody (a pitched foreground) together
        over at least this share of their overlap. Songs with no lead line (pads, grooves)
        leave a pitched foreground only where their accompaniment changes, and two of them on
        related chords agree there as a melody would (BENCHMARKS.md, "melody share").
    version_min_overlap_s : float
        The agreement must hold over at least this much (or 80 % of the shorter track) ...
    version_min_coverage : float
        ... and over at least this share of the shorter track (a short stretch somewhere in a
        long track agrees with something by chance).
    version_candidates : int
        Each new track is compared in full only with this many tracks of closest pitch-class
        profile (the comparison costs ~15 ms a pair; this keeps a new track's cost flat).
    version_tempo_range : tuple of float
        Tempo ratios tried between two versions, and how many steps (geometric).
    version_tempo_steps : int
    evidence_clip_s : float
        Evidence stretches are this long ...
    max_evidence : int
        ... and at most this many are kept per pair.
    """

    min_aligned_hits: int = 40
    min_coverage: float = 0.3
    min_score: float = 0.04
    min_peak_share: float = 0.02
    min_aligned_similarity: float = 0.65
    version_min_aligned_similarity: float = 0.4
    version_min_landmark_score: float = 0.1
    coverage_bin_s: float = 2.0
    same_length_tolerance_s: float = 1.0
    offset_candidates: int = 4
    versions: bool = True
    version_min_significance: float = 4.0
    version_min_above_chance: float = 0.1
    version_min_melody_share: float = 0.22
    version_min_overlap_s: float = 20.0
    version_min_coverage: float = 0.5
    version_candidates: int = 50
    version_tempo_range: tuple[float, ...] = (0.7, 1.43)
    version_tempo_steps: int = 37
    evidence_clip_s: float = 10.0
    max_evidence: int = 50

    def __post_init__(self) -> None:
        _check("duplicates", self, ("min_aligned_hits", "offset_candidates", "version_candidates",
                                    "version_tempo_steps", "max_evidence"), _at_least(1))
        _check("duplicates", self, ("min_coverage", "min_score", "min_peak_share", "version_min_landmark_score",
                                    "version_min_coverage", "version_min_melody_share"), _in_range(0.0, 1.0))
        _check("duplicates", self, ("min_aligned_similarity", "version_min_aligned_similarity"), _in_range(-1.0, 1.0))
        if self.version_min_aligned_similarity > self.min_aligned_similarity:
            raise ConfigError(f"duplicates.version_min_aligned_similarity ({self.version_min_aligned_similarity}) "
                              f"must not exceed duplicates.min_aligned_similarity ({self.min_aligned_similarity})")
        _check("duplicates", self, ("coverage_bin_s", "evidence_clip_s"), _positive)
        _check("duplicates", self, ("same_length_tolerance_s", "version_min_overlap_s", "version_min_significance",
                                    "version_min_above_chance"), _at_least(0))
        lo_hi = self.version_tempo_range
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
            raise ConfigError(f"duplicates.version_tempo_range must be [low, high] with 0 < low <= high, "
                              f"got {list(lo_hi)}")


@dataclass(frozen=True)
class EvaluationConfig:
    """How the evaluate stage measures an index (see :mod:`soundalike.evaluation`)."""

    n_excerpts: int = 120
    seed: int = 0

    def __post_init__(self) -> None:
        _check("evaluation", self, ("n_excerpts",), _at_least(1))
        _check("evaluation", self, ("seed",), _at_least(0))


@dataclass(frozen=True)
class TablesConfig:
    """Delta table names: ``catalog.schema.table``.

    ``external: true`` (local runs) keeps each table's files at ``<workdir>/warehouse/<schema>/<table>``
    and re-registers them by name at every session start (a local Spark catalog is in-memory);
    ``false`` (Unity Catalog) lets the catalog manage them.
    """

    catalog: str = "spark_catalog"
    schema: str = "soundalike"
    external: bool = False
    tracks: str = "tracks"
    clips: str = "clips"
    embeddings: str = "embeddings"
    ingest_errors: str = "ingest_errors"
    duplicates: str = "duplicates"
    fingerprints: str = "fingerprints"
    duplicates_checked: str = "duplicates_checked"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and not value.strip():
                raise ConfigError(f"tables.{f.name} is empty; set it to a table, schema or catalog name")

    def name(self, table: str) -> str:
        """Fully qualified name of one of the tables, e.g. ``name("tracks")``."""
        short = getattr(self, table, None)
        if not isinstance(short, str) or table in ("catalog", "schema", "external"):
            raise ConfigError(f"unknown table {table!r}")
        return f"{self.catalog}.{self.schema}.{short}"


@dataclass(frozen=True)
class SparkConfig:
    """How a local Spark session is built; ignored where a session already exists (Databricks)."""

    master: str = "local[*]"
    app_name: str = "soundalike"
    with_delta_pip: bool = True
    conf: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.conf.items():
            if isinstance(value, (dict, list, tuple)) or value is None:
                raise ConfigError(
                    f"spark.conf.{key} must be a single value (Spark settings are flat: "
                    f"'spark.sql.shuffle.partitions: \"8\"'), got {value!r}"
                )


@dataclass(frozen=True)
class MlflowConfig:
    """Where runs, artifacts and registered models go."""

    tracking_uri: str | None = None
    registry_uri: str | None = None
    experiment: str = "soundalike"
    model_name: str = "soundalike_search"
    serving_endpoint: str | None = None


@dataclass(frozen=True)
class TrainingConfig:
    """How ``soundalike train`` learns the ``siamese`` embedder (see :mod:`soundalike.training`).

    Attributes
    ----------
    branch : str
        ``"head"``: a residual projection head over the frozen ``base_embedder`` (the
        fine-tuning path; the default, as it is the one that beats its base on held-out tracks);
        ``"cnn"``: a compact CNN over log-mel clip spectrograms (train it for ~30 epochs).
    base_embedder : str
        The frozen embedder under the head, and the baseline the evaluation compares with.
    loss : str
        ``"contrastive"`` (pairs) or ``"triplet"`` (anchor, positive, negative).
    epochs, batch_size : int
        Passes over the drawn pairs; pairs (or triplets) per optimiser step.
    learning_rate, weight_decay : float
        AdamW settings.
    margin : float
        Embedding distance that metadata dissimilarity 1 maps to (unit vectors: at most 2).
    dim : int
        Output dimension of the CNN branch (the head keeps its base's dimension).
    hop_s : float
        Training clips (``clips.clip_s`` long) start every ``hop_s`` seconds.
    crop_s : float
        The CNN trains on a random ``crop_s`` window of each clip's spectrogram (augmentation,
        and cheaper); it embeds whole clips. 0 trains on whole clips.
    max_clips_per_track : int
        At most this many training clips per track (evenly spread), to bound memory and time.
    heldout_fraction : float
        Share of tracks held out for evaluation, in (0, 1).
    n_positive, n_negative, pool : int
        Pairs per reference track: the track itself plus ``n_positive - 1`` of its ``pool`` most
        similar tracks; ``n_negative`` of its ``pool`` least similar.
    tag_weight, instrument_weight, tempo_weight, key_weight : float
        Weights of the per-group Jaccard indices in the metadata similarity.
    seed : int
        Seeds the split, the pairs, the clip choice and the initial weights.
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
    output_dir : str or None
        Where the trained branch is written; ``None``: ``<workdir>/models/siamese``.
    register : bool
        Register the model in the MLflow registry as ``model_name``.
    model_name : str
    """

    branch: str = "head"
    base_embedder: str = "mel"
    loss: str = "contrastive"
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    margin: float = 1.0
    dim: int = 128
    hop_s: float = 5.0
    crop_s: float = 5.0
    max_clips_per_track: int = 16
    heldout_fraction: float = 0.25
    n_positive: int = 5
    n_negative: int = 5
    pool: int = 10
    tag_weight: float = 0.5
    instrument_weight: float = 0.2
    tempo_weight: float = 0.2
    key_weight: float = 0.1
    seed: int = 0
    device: str = "auto"
    output_dir: str | None = None
    register: bool = True
    model_name: str = "soundalike_siamese"

    def __post_init__(self) -> None:
        if self.branch not in ("cnn", "head"):
            raise ConfigError(f"training.branch must be cnn or head, got {self.branch!r}")
        if self.loss not in ("contrastive", "triplet"):
            raise ConfigError(f"training.loss must be contrastive or triplet, got {self.loss!r}")
        for name in ("epochs", "batch_size", "dim", "max_clips_per_track", "n_positive", "n_negative", "pool"):
            if getattr(self, name) < 1:
                raise ConfigError(f"training.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("learning_rate", "margin", "hop_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"training.{name} must be positive, got {getattr(self, name)}")
        if self.crop_s < 0:
            raise ConfigError(f"training.crop_s must be >= 0, got {self.crop_s}")
        _check("training", self, ("weight_decay", "seed"), _at_least(0))
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"training.heldout_fraction must lie in (0, 1), got {self.heldout_fraction}")
        weights = (self.tag_weight, self.instrument_weight, self.tempo_weight, self.key_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError("training.*_weight must be >= 0 and not all 0")
        if self.n_positive - 1 > self.pool or self.n_negative > self.pool:
            raise ConfigError(
                f"training.pool ({self.pool}) must hold n_positive - 1 ({self.n_positive - 1}) "
                f"and n_negative ({self.n_negative}) tracks"
            )


@dataclass(frozen=True)
class WebConfig:
    """The web app (``soundalike web``, see :mod:`soundalike.web`).

    Attributes
    ----------
    backend : str
        ``"local"``: load the registered pyfunc in the web process; ``"remote"``: forward
        queries to a model-serving endpoint's ``/invocations``.
    model_uri : str or None
        Local backend: the model to load; ``None``: ``models:/<mlflow.model_name>@champion``.
    endpoint_url_env : str
        Remote backend: environment variable holding the full ``/invocations`` URL. When it is
        unset, the URL is ``$<host_env>/serving-endpoints/<endpoint_name>/invocations``.
    host_env, token_env : str
        Environment variables holding the workspace URL and the bearer token (Databricks).
    endpoint_name : str
    request_timeout_s : float
        Remote backend: how long one forwarded query may take.
    tracks_file : str or None
        Remote backend: a ``tracks.parquet`` (the index artifact) mapping track ids to catalogue
        files readable by the web process; ``None``: catalogue clip audio is unavailable (501).
    clip_sample_rate_hz : int
        Sample rate of catalogue clip audio sent to the browser.
    max_compare_seconds : float
        Longest stretch of each track the compare endpoint decodes.
    """

    backend: str = "local"
    model_uri: str | None = None
    endpoint_url_env: str = "SOUNDALIKE_SERVING_URL"
    host_env: str = "DATABRICKS_HOST"
    token_env: str = "DATABRICKS_TOKEN"
    endpoint_name: str = "soundalike-search"
    request_timeout_s: float = 120.0
    tracks_file: str | None = None
    clip_sample_rate_hz: int = 44100
    max_compare_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.backend not in ("local", "remote"):
            raise ConfigError(f"web.backend must be local or remote, got {self.backend!r}")
        if not 8000 <= self.clip_sample_rate_hz <= 192000:
            raise ConfigError(f"web.clip_sample_rate_hz must be in [8000, 192000], got {self.clip_sample_rate_hz}")
        for name in ("request_timeout_s", "max_compare_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"web.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class Config:
    """The whole configuration of a soundalike deployment."""

    workdir: str = "work"
    catalogue: CatalogueConfig = field(default_factory=CatalogueConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    fingerprint: FingerprintConfig = field(default_factory=FingerprintConfig)
    duplicates: DuplicatesConfig = field(default_factory=DuplicatesConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    web: WebConfig = field(default_factory=WebConfig)

    def __post_init__(self) -> None:
        if not str(self.workdir).strip():
            # Path("") is the current directory: the warehouse, MLflow store and pipeline lock
            # would land wherever the command runs.
            raise ConfigError("workdir is empty; set it to the directory for the warehouse, MLflow store and index builds")

    def workpath(self, *parts: str) -> Path:
        """A path inside the work dir."""
        return Path(self.workdir).joinpath(*parts)


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a YAML profile (following ``extends:``), apply ``key=value`` overrides, validate.

    Parameters
    ----------
    path : path or None
        A YAML file; ``None`` gives the built-in defaults.
    overrides : sequence of str
        ``"section.key=value"`` strings; the value is parsed as YAML (``5`` is a number,
        ``[a, b]`` a list, ``null`` None).

    Raises
    ------
    ConfigError
        Missing file, bad YAML, unknown key, wrong type, or a malformed override.
    """
    data: dict[str, Any] = _read_profile(Path(path)) if path is not None else {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        _set_dotted(data, _override_path(key.strip().split(".")), value)
    return _build(Config, data, "")


def config_from_dict(data: dict) -> Config:
    """Rebuild a :class:`Config` from :func:`config_to_dict` output (e.g. on a Spark worker)."""
    return _build(Config, data, "")


def config_to_dict(cfg: Any) -> dict:
    """The config as plain data (for logging next to a run or an index)."""
    return _plain(dataclasses.asdict(cfg))


# --------------------------------------------------------------------------- internals


def _check(section: str, obj: Any, names: typing.Iterable[str], rule: tuple[Callable[[Any], bool], str]) -> None:
    """Raise a :class:`ConfigError` naming ``section.name`` for the first value ``rule`` rejects.

    A rule is ``(test, wording)``; tests are written so that NaN fails them.
    """
    test, wording = rule
    for name in names:
        value = getattr(obj, name)
        if not test(value):
            raise ConfigError(f"{section}.{name} must be {wording}, got {value!r}")


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low:g}"


def _in_range(low: float, high: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: low <= v <= high), f"in [{low:g}, {high:g}]"


_positive: tuple[Callable[[Any], bool], str] = ((lambda v: v > 0 and math.isfinite(v)), "a finite number > 0")


def _read_profile(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"config files extend each other in a cycle: {' -> '.join(map(str, _seen + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = _read_profile(path.parent / parent, _seen + (path,))
    return _merge(base, data)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _override_path(keys: list[str]) -> list[str]:
    """``keys`` as a path into the config: below a free-form mapping (``spark.conf``,
    ``embedder.options``) the rest of the dotted name is one key, so that
    ``spark.conf.spark.sql.shuffle.partitions=8`` sets the Spark setting of that name."""
    cls: Any = Config
    for i, key in enumerate(keys[:-1]):
        if not dataclasses.is_dataclass(cls):
            break
        hint = typing.get_type_hints(cls).get(key)
        if hint is None:
            break  # an unknown key: _build names it
        if hint is dict or typing.get_origin(hint) is dict:
            return keys[: i + 1] + [".".join(keys[i + 1 :])]
        cls = hint
    return keys


def _set_dotted(data: dict, keys: list[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(_join(where, k) for k in unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    kwargs = {name: _coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # YAML reads .nan and .inf as floats; no setting means them
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_coerce(args[0], v, f"{where}[]") for v in value)
    if (hint is dict or origin is dict) and isinstance(value, dict):
        return dict(value)
    raise ConfigError(f"{where} must be {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
