"""The Siamese branch (a compact CNN, or a projection head over a frozen embedder), its losses,
and the file format it is saved in.

Both branches map a batch to unit vectors; a Siamese pair is one branch applied to both sides
(weights shared by construction) and compared by euclidean distance, which for unit vectors
is a monotone function of the cosine the index searches with: ``d² = 2 - 2 cos``.

``cnn``
    Clip waves -> :class:`SpectrogramFrontend` (log-mel dB, each clip minus its mean level, so a
    gain change moves nothing) -> four blocks of 3×3 convolution, batch norm, ReLU and 2×2 max
    pooling -> mean and max over time of the band-averaged maps -> a linear layer -> unit vector.
``head``
    A frozen base embedder's unit vectors ``x`` -> ``x + W2 relu(W1 x + b1) + b2`` -> unit
    vector. ``W2`` and ``b2`` start at zero, so an untrained head *is* its base embedder and
    training moves away from it only as far as the loss asks.

Saved form (:func:`save_branch`): a directory with ``siamese.safetensors`` (the state dict;
no pickle) and ``siamese.json`` (what rebuilds the branch: kind, architecture, frontend, base
embedder, training clip length). :func:`load_branch` rebuilds it bit for bit.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from soundalike.checksums import sha256_file
from soundalike.errors import ModelWeightsError, ParameterError
from soundalike.features import MelParams, mel_power, power_to_db, stft_power

WEIGHTS_FILE = "siamese.safetensors"
CONFIG_FILE = "siamese.json"
#: Version of the saved layout; bump when the meaning of ``siamese.json`` changes.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FrontendParams:
    """Log-mel input of the CNN branch.

    Attributes
    ----------
    sample_rate_hz : int
    n_fft, hop_length : int
        STFT window and hop, samples (128 ms and 64 ms at 16 kHz).
    n_mels : int
    fmax_hz : float
        Top of the mel bank, Hz.
    top_db : float
        Floor below each clip's peak, dB.
    scale_db : float
        The level-normalised spectrogram is divided by this, so inputs are of order 1.
    """

    sample_rate_hz: int = 16000
    n_fft: int = 2048
    hop_length: int = 1024
    n_mels: int = 64
    fmax_hz: float = 8000.0
    top_db: float = 80.0
    scale_db: float = 20.0

    @property
    def mel(self) -> MelParams:
        return MelParams(n_fft=self.n_fft, hop_length=self.hop_length, n_mels=self.n_mels,
                         fmax_hz=self.fmax_hz, top_db=self.top_db)


class SpectrogramFrontend:
    """Clip waves [n, samples] -> normalised log-mel [n, n_mels, frames] (float32, on ``device``).

    The one place the CNN's input is computed: training and the ``siamese`` embedder both call it.
    """

    def __init__(self, params: FrontendParams = FrontendParams()):
        self.params = params

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        p = self.params
        if clips.ndim != 2 or clips.shape[1] < p.n_fft:
            raise ParameterError(f"clips must have shape (n, >= {p.n_fft} samples), got {tuple(clips.shape)}")
        power = stft_power(clips.float(), n_fft=p.n_fft, hop_length=p.hop_length).to(clips.device)
        db = power_to_db(mel_power(power, p.sample_rate_hz, p.mel), p.top_db)  # [n, t, m]
        db = db - db.mean(dim=(1, 2), keepdim=True)
        return (db / p.scale_db).transpose(1, 2).contiguous()


@dataclass(frozen=True)
class CnnParams:
    """Architecture of the CNN branch: channels per block and output dimension."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    dim: int = 128


class ConvBranch(nn.Module):
    """Log-mel [n, n_mels, frames] -> unit vectors [n, dim]."""

    def __init__(self, params: CnnParams = CnnParams()):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in params.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(2 * c_in, params.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.unsqueeze(1)).mean(dim=2)  # [n, c, frames'] (bands averaged)
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        return nn.functional.normalize(self.project(pooled), dim=1)


@dataclass(frozen=True)
class HeadParams:
    """Architecture of the projection head over a frozen embedder of dimension ``dim``."""

    dim: int
    hidden: int = 256


class ProjectionHead(nn.Module):
    """Base vectors [n, dim] -> unit vectors [n, dim]; the identity (after norm) until trained."""

    def __init__(self, params: HeadParams):
        super().__init__()
        self.hidden = nn.Linear(params.dim, params.hidden)
        self.out = nn.Linear(params.hidden, params.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x + self.out(torch.relu(self.hidden(x))), dim=1)


def pair_distance(branch: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance [n] between ``branch(a)`` and ``branch(b)``: the Siamese pair, weights shared."""
    return (branch(a) - branch(b)).square().sum(dim=1).clamp_min(1e-12).sqrt()


def contrastive_loss(distance: torch.Tensor, positive: torch.Tensor, similarity: torch.Tensor,
                     *, margin: float) -> torch.Tensor:
    """Contrastive loss whose margin comes from the pair's metadata dissimilarity.

    With target distance ``t = margin * (1 - similarity)``, a positive pair costs
    ``relu(d - t)²`` (pulled at least as close as the metadata says it is; a track with itself
    all the way to 0) and a negative pair ``relu(t - d)²`` (pushed at least that far apart).

    Parameters
    ----------
    distance : torch.Tensor [shape=(m,)]
    positive : torch.Tensor [shape=(m,), dtype=bool]
    similarity : torch.Tensor [shape=(m,)]
        Metadata similarity of each pair, in [0, 1].
    margin : float
        Distance of a pair with similarity 0.

    Returns
    -------
    torch.Tensor
        Scalar, the mean over pairs.
    """
    target = margin * (1.0 - similarity)
    pull = torch.relu(distance - target).square()
    push = torch.relu(target - distance).square()
    return torch.where(positive, pull, push).mean()


def triplet_loss(d_positive: torch.Tensor, d_negative: torch.Tensor, s_positive: torch.Tensor,
                 s_negative: torch.Tensor, *, margin: float) -> torch.Tensor:
    """Triplet loss ``relu(d(a, p) - d(a, n) + margin * (s(a, p) - s(a, n)))``, mean over triplets.

    The required gap between the negative and the positive grows with how much more similar the
    positive is than the negative, by metadata.
    """
    return torch.relu(d_positive - d_negative + margin * (s_positive - s_negative)).mean()


# --------------------------------------------------------------------------- saved form


def build_branch(spec: dict) -> nn.Module:
    """The (untrained) branch a ``siamese.json`` spec describes.

    Raises
    ------
    ModelWeightsError
        A spec of an unknown kind or format.
    """
    kind = spec.get("kind")
    try:
        if kind == "cnn":
            arch = spec["cnn"]
            return ConvBranch(CnnParams(channels=tuple(int(c) for c in arch["channels"]), dim=int(arch["dim"])))
        if kind == "head":
            arch = spec["head"]
            return ProjectionHead(HeadParams(dim=int(arch["dim"]), hidden=int(arch["hidden"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelWeightsError(f"{CONFIG_FILE} has a malformed {kind} section: {exc!r}") from None
    raise ModelWeightsError(f"{CONFIG_FILE} names an unknown branch kind {kind!r} (expected cnn or head)")


def branch_spec(*, kind: str, clip_s: float, cnn: CnnParams | None = None, frontend: FrontendParams | None = None,
                head: HeadParams | None = None, base_embedder: dict | None = None) -> dict:
    """The ``siamese.json`` content for a branch: everything :func:`build_branch` and the embedder need."""
    spec: dict = {"format": FORMAT_VERSION, "kind": kind, "clip_s": float(clip_s)}
    if kind == "cnn":
        spec["cnn"] = {"channels": list(cnn.channels), "dim": cnn.dim}
        spec["frontend"] = asdict(frontend)
    elif kind == "head":
        spec["head"] = asdict(head)
        spec["base_embedder"] = base_embedder
    else:
        raise ParameterError(f"kind must be cnn or head, got {kind!r}")
    return spec


def save_branch(branch: nn.Module, spec: dict, directory: str | os.PathLike) -> str:
    """Write ``siamese.safetensors`` and ``siamese.json`` into ``directory``; returns the weights' SHA-256.

    Files are written beside their final name and renamed into place, so a reader never sees
    half a model.
    """
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in branch.state_dict().items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    # One metadata key: safetensors writes its metadata map in hash order, so two keys would make
    # the bytes (and the checksum in the embedder version) differ between saves of one model.
    save_file(state, str(tmp), metadata={"soundalike.siamese": f"format {FORMAT_VERSION}, {spec.get('kind')}"})
    tmp.replace(out / WEIGHTS_FILE)
    tmp_json = out / (CONFIG_FILE + ".tmp")
    tmp_json.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    tmp_json.replace(out / CONFIG_FILE)
    return sha256_file(out / WEIGHTS_FILE)


def read_spec(directory: str | os.PathLike) -> dict:
    """The ``siamese.json`` of a saved branch.

    Raises
    ------
    ModelWeightsError
        Missing or unreadable files, or a format this code does not know.
    """
    d = Path(directory)
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if not (d / n).is_file()]
    if missing:
        raise ModelWeightsError(
            f"siamese model not found: {', '.join(missing)} missing in {d}; train one with "
            "`soundalike train` and set embedder.weights_path to its output directory"
        )
    try:
        spec = json.loads((d / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelWeightsError(f"cannot read {d / CONFIG_FILE}: {exc}") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT_VERSION:
        raise ModelWeightsError(
            f"{d / CONFIG_FILE} is not a format-{FORMAT_VERSION} siamese model spec; retrain with `soundalike train`"
        )
    return spec


def load_branch(directory: str | os.PathLike, *, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a saved branch in eval mode: ``(branch, spec)``; the tensors are the saved ones, bit for bit.

    Raises
    ------
    ModelWeightsError
        Missing, unreadable or mismatched files.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    spec = read_spec(d)
    branch = build_branch(spec)
    try:
        state = load_file(str(d / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelWeightsError(f"cannot read {d / WEIGHTS_FILE} as safetensors: {exc}") from None
    try:
        branch.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelWeightsError(f"{d / WEIGHTS_FILE} does not match {d / CONFIG_FILE}: {first}") from None
    return branch.to(device).eval(), spec


def parameter_count(module: nn.Module) -> int:
    return int(sum(math.prod(p.shape) for p in module.parameters()))
