"""The feature front end for batches: padded waveforms -> model-ready fbank.

Used by every task (tuning, fine-tuning, embedding export), on whatever device the batch
is on, so that features can be computed in batch on the GPU:

    waveform [B, N] (zero-padded, each row's mean already removed) + lengths [B]
      -> raw log-mel [B, T, F] where each clip's frames are exactly those of
         ``compute_fbank`` on that clip alone, cropped from the start or zero-padded at
         the end to T frames (zero in the raw log domain, as AudioMAE pads)
      -> (optionally) views, then normalisation -> [B, 1, T, F].
"""

from dataclasses import dataclass

import torch

from .features import compute_fbank, normalize_fbank, num_frames as frames_for_samples


@dataclass
class FrontendConfig:
    sample_rate: int = 16000
    num_frames: int = 1024  # T
    num_mel_bins: int = 128  # F
    norm_mean: float = -4.2677393
    norm_std: float = 4.5689974

    @property
    def max_samples(self) -> int:
        """Samples that give exactly ``num_frames`` frames (25 ms window, 10 ms hop)."""
        shift, window = self.sample_rate // 100, int(self.sample_rate * 0.025)
        return (self.num_frames - 1) * shift + window


def batch_fbank(waveform: torch.Tensor, lengths: torch.Tensor, cfg: FrontendConfig):
    """Raw log-mel [B, T, F] and the number of real frames per clip [B].

    Frames of a padded row that reach into the padding are set to zero, so each row
    equals the fbank of its clip alone (``subtract_mean=False``: the dataset removes each
    clip's mean before padding).
    """
    if waveform.ndim != 2:
        raise ValueError(f"expected a waveform batch [B, N], got {tuple(waveform.shape)}")
    fbank = compute_fbank(waveform.float(), sample_rate=cfg.sample_rate,
                          num_mel_bins=cfg.num_mel_bins, subtract_mean=False)
    valid = torch.tensor(
        [frames_for_samples(int(n), cfg.sample_rate) for n in lengths.tolist()],
        device=fbank.device,
    ).clamp(min=0, max=cfg.num_frames)
    t = fbank.shape[1]
    if t < cfg.num_frames:
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, cfg.num_frames - t))
    fbank = fbank[:, : cfg.num_frames]
    real = torch.arange(cfg.num_frames, device=fbank.device)[None, :] < valid[:, None]
    return fbank * real[:, :, None], valid


def model_input(fbank: torch.Tensor, cfg: FrontendConfig) -> torch.Tensor:
    """Normalise a raw fbank batch [B, T, F] into the encoder's input [B, 1, T, F]."""
    return normalize_fbank(fbank, cfg.norm_mean, cfg.norm_std).unsqueeze(1)
