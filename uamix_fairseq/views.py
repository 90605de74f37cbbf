"""Two augmented views of each clip (docs/method.md, "Views") [R].

Works on a batch of raw log-mel fbank [B, T, F] (before normalisation) with the number
of real (non-padding) frames of each clip, on whatever device the batch is on, with no
Python loop over clips. Augmentations, each a field of ``ViewConfig``:

- time roll: a circular shift of the real frames by a random amount (padding stays at
  the end), in the spirit of AudioMAE's roll augmentation;
- gain: a random gain in dB, which is an additive constant in the log-power domain
  (log(g^2 P) = log P + 2 log g);
- SpecAugment: one time and one frequency mask per view, set to zero in the raw log
  domain, as AudioMAE does (audiomae_format.md).

With everything off the two views are identical to the input.
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class ViewConfig:
    time_roll: bool = True
    gain_db: float = 6.0
    time_mask_fraction: float = 0.1
    freq_mask_fraction: float = 0.2

    def validate(self, prefix: str = ""):
        if self.gain_db < 0:
            raise ValueError(f"{prefix}gain_db must be >= 0, got {self.gain_db}")
        for name in ("time_mask_fraction", "freq_mask_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{prefix}{name} must be in [0, 1), got {v}")


def _uniform(shape, generator, device):
    return torch.rand(shape, generator=generator).to(device)


def time_roll(fbank: torch.Tensor, valid_frames: torch.Tensor, generator=None):
    """Circularly shift the first ``valid_frames[b]`` frames of each clip by a random
    amount; padding frames stay where they are."""
    b, t, _ = fbank.shape
    valid = valid_frames.to(fbank.device).clamp(min=1)[:, None]  # [B, 1]
    shift = (_uniform((b, 1), generator, fbank.device) * valid).long()
    pos = torch.arange(t, device=fbank.device)[None, :]  # [1, T]
    src = torch.where(pos < valid, (pos + shift) % valid, pos)  # [B, T]
    return fbank.gather(1, src[:, :, None].expand_as(fbank))


def random_gain(fbank, valid_frames, max_db: float, generator=None):
    """Add a random gain in [-max_db, max_db] dB to the real frames (log power)."""
    b, t, _ = fbank.shape
    db = (_uniform((b, 1, 1), generator, fbank.device) * 2 - 1) * max_db
    offset = db * (math.log(10.0) / 10.0)  # power dB -> natural log
    real = torch.arange(t, device=fbank.device)[None, :, None] < valid_frames.to(fbank.device)[:, None, None]
    return fbank + offset * real


def _band_mask(n_rows: int, size: int, max_width: int, generator, device):
    """[n_rows, size] bool: one band of random width in [0, max_width] per row."""
    width = (_uniform((n_rows, 1), generator, device) * (max_width + 1)).long()
    start = (_uniform((n_rows, 1), generator, device) * (size - width + 1)).long()
    pos = torch.arange(size, device=device)[None, :]
    return (pos >= start) & (pos < start + width)


def spec_augment(fbank, valid_frames, time_fraction: float, freq_fraction: float,
                 generator=None):
    """One time mask (up to ``time_fraction`` of the real frames) and one frequency mask
    (up to ``freq_fraction`` of the bins) per clip, zero in the raw log domain."""
    b, t, f = fbank.shape
    out = fbank
    if time_fraction > 0:
        max_w = int(time_fraction * int(valid_frames.min()))
        out = out.masked_fill(_band_mask(b, t, max_w, generator, fbank.device)[:, :, None], 0.0)
    if freq_fraction > 0:
        max_w = int(freq_fraction * f)
        out = out.masked_fill(_band_mask(b, f, max_w, generator, fbank.device)[:, None, :], 0.0)
    return out


def spec_augment_widths(fbank, max_time_frames: int, max_freq_bins: int, generator=None):
    """SpecAugment with absolute widths, as AudioMAE fine-tunes (``timem``/``freqm``):
    one time band of 0..max_time_frames frames anywhere in the T frames and one
    frequency band of 0..max_freq_bins bins per clip, zero in the raw log domain.
    A width of 0 switches that mask off."""
    b, t, f = fbank.shape
    out = fbank
    if max_time_frames > 0:
        mask = _band_mask(b, t, min(max_time_frames, t), generator, fbank.device)
        out = out.masked_fill(mask[:, :, None], 0.0)
    if max_freq_bins > 0:
        mask = _band_mask(b, f, min(max_freq_bins, f), generator, fbank.device)
        out = out.masked_fill(mask[:, None, :], 0.0)
    return out


def augment(fbank: torch.Tensor, valid_frames: torch.Tensor, cfg: ViewConfig,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One random view of a raw fbank batch [B, T, F]."""
    out = fbank
    if cfg.time_roll:
        out = time_roll(out, valid_frames, generator)
    if cfg.gain_db > 0:
        out = random_gain(out, valid_frames, cfg.gain_db, generator)
    if cfg.time_mask_fraction > 0 or cfg.freq_mask_fraction > 0:
        out = spec_augment(out, valid_frames, cfg.time_mask_fraction,
                           cfg.freq_mask_fraction, generator)
    return out


def two_views(fbank, valid_frames, cfg: ViewConfig, generator=None):
    """Two independent views (x1, x2) of the same raw fbank batch."""
    return augment(fbank, valid_frames, cfg, generator), augment(fbank, valid_frames, cfg, generator)
