"""Clip embeddings of a frozen encoder for every clip of a manifest.

The one data path of the project (manifest -> waveform -> fbank -> encoder), used by the
few-shot, linear-probe, k-NN, t-SNE and export commands. Clips are cropped from their
start to ``num_frames`` frames (or zero-padded), as AudioMAE evaluates. Embeddings are
cached on disk, keyed by the encoder file (path, size, modification time), the
manifest's content, every audio file's size and modification time, and every feature
and readout setting, so each clip is embedded once and a replaced audio file is
embedded again.

Readout (``EmbedConfig``): which block's tokens (``layer``), ``pooling`` (mean or cls),
the final norm on or off (``final_norm``), and mean pooling over the patches of real
frames only (``pool_real_patches``); the defaults are the encoder's ``embed``.
``windows`` > 1 embeds up to that many consecutive crops of ``num_frames`` frames from the
clip's start and averages them (``clip_windows``), so a clip longer than one crop is
embedded whole instead of by its first crop only.
The no-learning baselines (``evaluation.baselines``) go through the same clips and
fbank (``baseline_manifest``).
"""

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from ..modules.audiomae import AudioMAEEncoder, load_audiomae
from ..audio.features import NORM_STATS
from ..audio.frontend import FrontendConfig, batch_fbank, model_input

logger = logging.getLogger(__name__)


@dataclass
class EmbedConfig:
    num_frames: int = 1024
    norm: str = "audioset"  # a key of features.NORM_STATS
    pooling: str = "mean"
    batch_size: int = 32
    sample_rate: int = 16000
    resample: bool = False
    # Readout (defaults: encoder.embed(x, pooling), as before these fields existed).
    layer: Optional[int] = None  # tokens of block L (1-based; negative from the end)
    final_norm: bool = True      # the encoder's final norm (norm or fc_norm) on/off
    pool_real_patches: bool = False  # mean over patches with at least one real frame
    pad_mode: str = "zero"  # clips shorter than num_frames: zero-padded or repeated
    windows: int = 1  # mean over up to this many consecutive crops of the clip

    @property
    def default_readout(self) -> bool:
        return self.layer is None and self.final_norm and not self.pool_real_patches

    def readout_spec(self) -> str:
        """Short text of the readout, e.g. ``layer=-2,pooling=cls,final_norm=off``."""
        parts = []
        if self.layer is not None:
            parts.append(f"layer={self.layer}")
        if self.pooling != "mean":
            parts.append(f"pooling={self.pooling}")
        if not self.final_norm:
            parts.append("final_norm=off")
        if self.pool_real_patches:
            parts.append("real_patches=on")
        if self.windows != 1:
            parts.append(f"windows={self.windows}")
        return ",".join(parts) or "default"

    def frontend(self) -> FrontendConfig:
        if self.windows < 1:
            raise ValueError(f"windows must be at least 1, got {self.windows}")
        if self.norm not in NORM_STATS:
            raise ValueError(f"norm must be one of {sorted(NORM_STATS)}, got {self.norm!r}")
        mean, std = NORM_STATS[self.norm]
        return FrontendConfig(self.sample_rate, self.num_frames, 128, mean, std,
                              self.pad_mode)


def _file_key(path) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


def _audio_files_key(manifest_path, text: bytes) -> bytes:
    """Size and modification time of every audio file of the manifest (a file that
    cannot be stat'ed counts as missing; reading it later raises the real error)."""
    from ..manifest import ManifestError, read_manifest

    try:
        clips = read_manifest(manifest_path)
    except ManifestError:
        return b""  # the dataset reports the problem when the clips are read
    parts = []
    for i in range(len(clips)):
        try:
            st = os.stat(clips.full_path(i))
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("missing")
    return "\n".join(parts).encode()


def cache_key(encoder_path, manifest_path, cfg: EmbedConfig) -> str:
    """Key of one encoder file's embeddings of one manifest under ``cfg``."""
    h = hashlib.sha1()
    h.update(_file_key(encoder_path).encode())
    with open(manifest_path, "rb") as f:
        text = f.read()
    h.update(text)
    h.update(_audio_files_key(manifest_path, text))
    h.update(repr(sorted(asdict(cfg).items())).encode())
    return h.hexdigest()[:16]


def baseline_cache_key(name: str, manifest_path, cfg: EmbedConfig) -> str:
    """Key of a baseline's features: only the settings of the fbank enter it."""
    h = hashlib.sha1()
    h.update(f"baseline:{name}".encode())
    with open(manifest_path, "rb") as f:
        text = f.read()
    h.update(text)
    h.update(_audio_files_key(manifest_path, text))
    h.update(repr((cfg.num_frames, cfg.norm, cfg.sample_rate, cfg.resample)).encode())
    if cfg.windows != 1:  # keys of one-crop features stay as they were
        h.update(f"windows={cfg.windows}".encode())
    return h.hexdigest()[:16]


# Help of the options every embedding command shares (uamix-fewshot, -probe, -embed).
WINDOWS_HELP = ("embed up to N consecutive crops of the encoder's frames (--num-frames) from "
                "each clip's start and average them, weighted by the real frames of each "
                "(a partial last crop counts by the audio it holds), so that a long clip "
                "counts whole; costs up to N times the embedding time (default: 1, the "
                "first crop only, as AudioMAE evaluates)")
PAD_MODE_HELP = ("clips shorter than the crop: zero-padded (AudioMAE) or filled by "
                 "repeating the clip; use what the encoder was trained with "
                 "(task.pad_mode) (default: zero)")

BAD_CLIP_HINT = ("every clip gets an embedding: re-encode or remove the file from the "
                 "manifest (uamix-embed --audio-dir skips and reports such files)")


def clip_dataset(manifest_path, cfg: EmbedConfig):
    """The manifest's clips as evaluation sees them: cropped from the start to the
    samples of ``cfg.windows`` crops of ``cfg.num_frames`` frames, each clip's mean
    removed (fairseq-backed)."""
    from ..data.audio_dataset import AudioClipDataset

    return AudioClipDataset(str(manifest_path),
                            max_samples=cfg.frontend().max_samples * cfg.windows,
                            sample_rate=cfg.sample_rate, resample=cfg.resample,
                            random_crop=False, bad_clip_hint=BAD_CLIP_HINT)


def iter_clip_batches(dataset, indices: Sequence[int], batch_size: int,
                      progress: bool = False, desc: str = "clips"
                      ) -> Iterator[Tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """``(clip indices [B], zero-padded float64 waveforms [B, N], lengths [B])`` for
    ``indices`` in order, ``batch_size`` clips at a time (``dataset``: ``clip_dataset``).
    A clip's features do not depend on the clips batched with it."""
    indices = [int(i) for i in indices]
    starts = range(0, len(indices), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    for start in starts:
        chunk = indices[start:start + batch_size]
        batch = dataset.collater([dataset[i] for i in chunk])
        yield (np.asarray(chunk, dtype=np.int64), batch["net_input"]["waveform"],
               batch["net_input"]["lengths"])


def clip_windows(wav: torch.Tensor, lengths, window: int, max_windows: int,
                 min_tail: int = 1) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each clip into consecutive windows of ``window`` samples from its start.

    ``wav`` [B, N] zero-padded clips of ``lengths`` [B] samples. A clip gets its whole
    windows and a partial last one holding at least ``min_tail`` samples, at most
    ``max_windows`` in all, and always at least one (a clip shorter than ``min_tail``
    is its own only window). Returns ``(windows [M, W], window lengths [M], owner
    [M])``: the samples of each window that are the clip's, and the clip (row of
    ``wav``) each window belongs to, clips in order. ``W = min(window, N)``, so a batch
    of clips no longer than one window comes back as it is."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if wav.shape[1] <= window:
        return wav, lengths, torch.arange(wav.shape[0])
    tail = lengths % window
    counts = lengths // window + (tail >= min_tail).long()
    counts = counts.clamp(min=1, max=max_windows)
    owner = torch.repeat_interleave(torch.arange(wav.shape[0]), counts)
    # k: the place of each window among its clip's windows
    k = torch.arange(len(owner)) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    starts = k * window
    padded = torch.nn.functional.pad(wav, (0, window))  # a last window may overrun wav
    windows = padded[owner[:, None], starts[:, None] + torch.arange(window)[None, :]]
    window_lengths = (lengths[owner] - starts).clamp(max=window)
    return windows, window_lengths, owner


def _window_features(wav, lengths, cfg: EmbedConfig, frontend: FrontendConfig, device,
                     feature) -> torch.Tensor:
    """Features [B, D] of clips: ``feature(model input, valid frames)`` of each of their
    windows (``clip_windows``; a partial last window needs one frame of audio),
    ``cfg.batch_size`` windows at a time, averaged per clip with weights proportional
    to the real frames of each window, as the HEAR scene embedding (``tools.hear``)
    weighs them: a short last window counts by the audio it holds."""
    from ..audio.features import frame_length

    windows, window_lengths, owner = clip_windows(
        wav, lengths, frontend.max_samples, cfg.windows,
        min_tail=frame_length(frontend.sample_rate))
    parts = []
    for start in range(0, len(owner), cfg.batch_size):
        stop = start + cfg.batch_size
        fbank, valid = batch_fbank(windows[start:stop].to(device),
                                   window_lengths[start:stop], frontend)
        parts.append(torch.as_tensor(feature(model_input(fbank, frontend), valid)))
    feats = torch.cat(parts)
    if len(owner) == wav.shape[0]:
        return feats  # one window per clip: nothing to average
    weight = real_frames(window_lengths, frontend).double().clamp(min=1)
    sums = torch.zeros(wav.shape[0], feats.shape[1], dtype=torch.float64)
    sums.index_add_(0, owner, feats.double() * weight[:, None])
    total = torch.zeros(wav.shape[0], dtype=torch.float64).index_add_(0, owner, weight)
    return (sums / total[:, None]).to(feats.dtype)


@torch.no_grad()
def embed_manifest(encoder: AudioMAEEncoder, manifest_path, cfg: EmbedConfig,
                   device="cpu", progress: bool = True) -> np.ndarray:
    """Embeddings [N, D] (float32) of the manifest's clips, in manifest order."""
    frontend = cfg.frontend()
    ds = clip_dataset(manifest_path, cfg)
    encoder = encoder.to(device).eval()
    out = np.zeros((len(ds), encoder.embed_dim), dtype=np.float32)
    batches = iter_clip_batches(ds, range(len(ds)), cfg.batch_size, progress,
                                desc=f"embedding {os.path.basename(str(manifest_path))}")
    for ids, wav, lengths in batches:
        out[ids] = _window_features(
            wav, lengths, cfg, frontend, device,
            lambda x, valid: embed_inputs(encoder, x, cfg, valid)).numpy()
    return out


def real_frames(lengths, frontend: FrontendConfig) -> torch.Tensor:
    """Real (not padded) frames [B] of clips of ``lengths`` samples in a crop of
    ``frontend.num_frames`` frames (as ``frontend.batch_fbank`` counts them)."""
    from ..audio.features import num_frames as frames_for_samples

    return torch.tensor([frames_for_samples(int(n), frontend.sample_rate)
                         for n in torch.as_tensor(lengths).tolist()]
                        ).clamp(min=0, max=frontend.num_frames)


def pooled(encoder: AudioMAEEncoder, x: torch.Tensor, readout="mean",
           valid_frames=None) -> torch.Tensor:
    """Pooled embeddings [B, D] of model inputs [B, 1, T, F] under ``readout`` (an
    ``EmbedConfig``, or a pooling name for the default readout), with gradient.
    ``valid_frames`` [B] is needed for ``pool_real_patches``."""
    if isinstance(readout, str):
        return encoder.embed(x, readout)
    cfg = readout
    if cfg.default_readout:
        return encoder.embed(x, cfg.pooling)  # the training path, bit for bit
    if cfg.pool_real_patches and valid_frames is None:
        raise ValueError("pool_real_patches needs the real frames of every clip")
    return encoder.readout(x, layer=cfg.layer, pooling=cfg.pooling,
                           final_norm=cfg.final_norm,
                           valid_frames=valid_frames if cfg.pool_real_patches else None)


def embed_inputs(encoder: AudioMAEEncoder, x: torch.Tensor, readout="mean",
                 valid_frames=None) -> np.ndarray:
    """Pooled embeddings [B, D] (float32 numpy) of model inputs [B, 1, T, F], no grad;
    ``readout`` as in ``pooled``."""
    with torch.no_grad():
        return pooled(encoder, x.to(encoder.cls_token.dtype), readout,
                      valid_frames).float().cpu().numpy()


def check_readout(encoder: AudioMAEEncoder, cfg: EmbedConfig, where="") -> None:
    """Refuse a readout the encoder cannot give (a layer beyond its depth), naming it."""
    if cfg.pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {cfg.pooling!r}")
    try:
        encoder.resolve_layer(cfg.layer)
    except ValueError as e:
        raise ValueError(f"{where}: {e}" if where else str(e)) from None


@torch.no_grad()
def baseline_manifest(name: str, manifest_path, cfg: EmbedConfig, device="cpu",
                      progress: bool = True) -> np.ndarray:
    """Features [N, D] (float32) of the no-learning baseline ``name`` (a key of
    ``evaluation.baselines.BASELINES``) for the manifest's clips, from exactly the
    normalised fbank crop the encoders see under ``cfg``, real frames only."""
    from ..evaluation.baselines import BASELINES

    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    feature = BASELINES[name][1]
    frontend = cfg.frontend()
    ds = clip_dataset(manifest_path, cfg)
    rows = []
    batches = iter_clip_batches(ds, range(len(ds)), cfg.batch_size, progress,
                                desc=f"{name} of {os.path.basename(str(manifest_path))}")
    for ids, wav, lengths in batches:
        rows.append((ids, _window_features(
            wav, lengths, cfg, frontend, device,
            lambda x, valid: feature(x, valid.cpu())).numpy()))
    dim = rows[0][1].shape[1]
    out = np.zeros((len(ds), dim), dtype=np.float32)
    for ids, feats in rows:
        out[ids] = feats
    return out


def _through_cache(cache_dir: Optional[str], key: str, what: str, compute) -> np.ndarray:
    """``compute()``, or its array saved as ``<cache_dir>/<key>.npy`` by an earlier call.

    The file is written to a temporary name and renamed, so an interrupted run never
    leaves a truncated cache entry. ``cache_dir`` None disables the cache.
    """
    if not cache_dir:
        return compute()
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, key + ".npy")
    if os.path.exists(path):
        logger.info("%s from cache %s", what, path)
        return np.load(path)
    arr = compute()
    tmp = path + ".tmp.npy"
    np.save(tmp, arr)
    os.replace(tmp, path)
    return arr


def cached_baseline(name: str, manifest_path, cfg: EmbedConfig,
                    cache_dir: Optional[str] = None, device="cpu",
                    progress: bool = True) -> np.ndarray:
    """``baseline_manifest`` with the on-disk cache of ``cached_embeddings``."""
    return _through_cache(
        cache_dir, baseline_cache_key(name, manifest_path, cfg),
        f"{name} features of {manifest_path}",
        lambda: baseline_manifest(name, manifest_path, cfg, device, progress))


def load_encoder(path, cfg: EmbedConfig) -> AudioMAEEncoder:
    return load_audiomae(path, num_frames=cfg.num_frames)


def cached_embeddings(encoder_path, manifest_path, cfg: EmbedConfig,
                      cache_dir: Optional[str] = None, device="cpu",
                      progress: bool = True) -> np.ndarray:
    """``embed_manifest`` with an on-disk cache (``cache_dir``; None disables it)."""
    return _through_cache(
        cache_dir, cache_key(encoder_path, manifest_path, cfg),
        f"embeddings of {manifest_path} by {encoder_path}",
        lambda: embed_manifest(load_encoder(encoder_path, cfg), manifest_path, cfg,
                               device, progress))
