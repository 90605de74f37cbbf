"""Clip embeddings of a frozen encoder for every clip of a manifest.

The one data path of the project (manifest -> waveform -> fbank -> encoder), used by the
few-shot, linear-probe, k-NN, t-SNE and export commands. Clips are cropped from their
start to ``num_frames`` frames (or zero-padded), as AudioMAE evaluates. Embeddings are
cached on disk, keyed by the encoder file (path, size, modification time), the
manifest's content and every feature setting, so each clip is embedded once.
"""

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from .audiomae import AudioMAEEncoder, load_audiomae
from .features import NORM_STATS
from .frontend import FrontendConfig, batch_fbank, model_input

logger = logging.getLogger(__name__)


@dataclass
class EmbedConfig:
    num_frames: int = 1024
    norm: str = "audioset"  # a key of features.NORM_STATS
    pooling: str = "mean"
    batch_size: int = 32
    sample_rate: int = 16000
    resample: bool = False

    def frontend(self) -> FrontendConfig:
        if self.norm not in NORM_STATS:
            raise ValueError(f"norm must be one of {sorted(NORM_STATS)}, got {self.norm!r}")
        mean, std = NORM_STATS[self.norm]
        return FrontendConfig(self.sample_rate, self.num_frames, 128, mean, std)


def _file_key(path) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(encoder_path, manifest_path, cfg: EmbedConfig) -> str:
    h = hashlib.sha1()
    h.update(_file_key(encoder_path).encode())
    with open(manifest_path, "rb") as f:
        h.update(f.read())
    h.update(repr(sorted(asdict(cfg).items())).encode())
    return h.hexdigest()[:16]


def clip_dataset(manifest_path, cfg: EmbedConfig):
    """The manifest's clips as evaluation sees them: cropped from the start to the
    samples of ``cfg.num_frames`` frames, each clip's mean removed (fairseq-backed)."""
    from .data.audio_dataset import AudioClipDataset

    return AudioClipDataset(str(manifest_path), max_samples=cfg.frontend().max_samples,
                            sample_rate=cfg.sample_rate, resample=cfg.resample,
                            random_crop=False)


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
        fbank, _ = batch_fbank(wav.to(device), lengths, frontend)
        out[ids] = embed_inputs(encoder, model_input(fbank, frontend), cfg.pooling)
    return out


def embed_inputs(encoder: AudioMAEEncoder, x: torch.Tensor, pooling: str) -> np.ndarray:
    """Pooled embeddings [B, D] (float32 numpy) of model inputs [B, 1, T, F], no grad."""
    with torch.no_grad():
        return encoder.embed(x.to(encoder.cls_token.dtype), pooling).float().cpu().numpy()


def load_encoder(path, cfg: EmbedConfig) -> AudioMAEEncoder:
    return load_audiomae(path, num_frames=cfg.num_frames)


def cached_embeddings(encoder_path, manifest_path, cfg: EmbedConfig,
                      cache_dir: Optional[str] = None, device="cpu",
                      progress: bool = True) -> np.ndarray:
    """``embed_manifest`` with an on-disk cache (``cache_dir``; None disables it)."""
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, cache_key(encoder_path, manifest_path, cfg) + ".npy")
        if os.path.exists(path):
            logger.info("embeddings of %s by %s from cache %s", manifest_path, encoder_path, path)
            return np.load(path)
    emb = embed_manifest(load_encoder(encoder_path, cfg), manifest_path, cfg, device, progress)
    if cache_dir:
        tmp = path + ".tmp.npy"
        np.save(tmp, emb)
        os.replace(tmp, path)
    return emb
