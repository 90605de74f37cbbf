"""Two augmented views of each clip (docs/method.md, "Views") [R].

Works on a batch of raw log-mel fbank [B, T, F] (before normalisation) with the number
of real (non-padding) frames of each clip, on whatever device the batch is on, with no
Python loop over clips. Augmentations, each a field of ``ViewConfig``, in this order:

- segments (``two_views(..., frames=T)`` on a longer window): each view is its own
  random T-frame crop of the window's real frames, so the two views of a clip come from
  different moments (COLA, ATST);
- mix-in: another clip of the batch mixed in at a random ratio <= ``mix_ratio`` in the
  power domain, log((1 - r) exp(x) + r exp(x_other)) (BYOL-A's log-mixup-exp): a
  background to be invariant to, with no soft target (unlike T-CutMix);
- random resized crop: a time x frequency region of random scale in
  [rrc_min_scale, rrc_max_scale] per axis (> 1 reaches beyond the clip, filled with its
  mean) stretched back to T x F (BYOL-A); with ``rrc_freq=False`` along time only (a
  change of tempo and decay that keeps pitch and formants);
- time roll: a circular shift of the real frames by a random amount (padding stays at
  the end), in the spirit of AudioMAE's roll augmentation;
- gain: a random gain in dB, which is an additive constant in the log-power domain
  (log(g^2 P) = log P + 2 log g);
- fader: a gain that changes linearly over the clip's real frames, from a random level
  to another (each in [-fader_db, fader_db] dB): a fade in or out, which changes the
  level envelope and keeps the spectrum at every frame (BYOL-A v2's random linear
  fader);
- SpecAugment: one time and one frequency mask per view, set to zero in the raw log
  domain, as AudioMAE does (docs/audiomae_format.md, "Normalisation and padding").

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
    mix_ratio: float = 0.0
    rrc_min_scale: float = 1.0
    rrc_max_scale: float = 1.0
    rrc_freq: bool = True
    fader_db: float = 0.0

    def validate(self, prefix: str = ""):
        for name in ("gain_db", "fader_db"):
            if getattr(self, name) < 0:
                raise ValueError(f"{prefix}{name} must be >= 0, got {getattr(self, name)}")
        for name in ("time_mask_fraction", "freq_mask_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{prefix}{name} must be in [0, 1), got {v}")
        if not 0.0 <= self.mix_ratio < 1.0:
            raise ValueError(f"{prefix}mix_ratio must be in [0, 1), got {self.mix_ratio}")
        if not 0.0 < self.rrc_min_scale <= self.rrc_max_scale:
            raise ValueError(f"{prefix}rrc_min_scale and {prefix}rrc_max_scale must satisfy "
                             f"0 < min <= max, got {self.rrc_min_scale}, {self.rrc_max_scale}")

    @property
    def rrc(self) -> bool:
        return not self.rrc_min_scale == self.rrc_max_scale == 1.0


DB_TO_LOG = math.log(10.0) / 10.0  # power dB -> natural log: ln(P) = DB_TO_LOG * 10 log10(P)


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
    return fbank + db * DB_TO_LOG * _real_mask(valid_frames, t, fbank.device)[:, :, None]


def random_fader(fbank, valid_frames, max_db: float, generator=None):
    """Add a linear gain ramp over each clip's real frames (log power): from a random
    level in [-max_db, max_db] dB at its first frame to another at its last. Padding
    frames are untouched."""
    b, t, _ = fbank.shape
    dev = fbank.device
    ends = (_uniform((b, 2), generator, dev) * 2 - 1) * max_db * DB_TO_LOG
    valid = valid_frames.to(dev)
    pos = torch.arange(t, device=dev)[None, :].float()
    frac = pos / (valid[:, None] - 1).clamp(min=1).float()  # 0 at the first real frame, 1 at the last
    ramp = ends[:, :1] + (ends[:, 1:] - ends[:, :1]) * frac
    return fbank + (ramp * _real_mask(valid_frames, t, dev))[:, :, None]


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


def _real_mask(valid_frames, t, device):
    return torch.arange(t, device=device)[None, :] < valid_frames.to(device)[:, None]  # [B, T]


def segment_crop(fbank: torch.Tensor, valid_frames: torch.Tensor, frames: int,
                 generator=None):
    """A random ``frames``-frame crop of each clip's real frames: (crop [B, frames, F],
    real frames of the crop [B]). The start is uniform in [0, valid - frames] (0 for a
    clip shorter than ``frames``, which keeps its padding at the end)."""
    b, t, f = fbank.shape
    if frames > t:
        raise ValueError(f"cannot crop {frames} frames from a window of {t}")
    valid = valid_frames.to(fbank.device)
    room = (valid - frames).clamp(min=0)
    start = (_uniform((b,), generator, fbank.device) * (room + 1)).long().clamp(max=t - frames)
    src = start[:, None] + torch.arange(frames, device=fbank.device)[None, :]  # [B, frames]
    crop = fbank.gather(1, src[:, :, None].expand(b, frames, f))
    return crop, torch.minimum(valid, torch.full_like(valid, frames))


def derangement(n: int, generator=None, device=None) -> torch.Tensor:
    """A random permutation with no fixed point (identity for n = 1): each clip gets
    another clip of the batch."""
    if n < 2:
        return torch.zeros(n, dtype=torch.long, device=device)
    perm = torch.randperm(n, generator=generator)
    partner = torch.empty_like(perm)
    partner[perm] = perm.roll(-1)  # the cycle perm[0] -> perm[1] -> ... -> perm[0]
    return partner.to(device)


def log_mixup_exp(fbank, valid_frames, max_ratio: float, generator=None):
    """Mix another clip of the batch into each clip at a ratio r ~ U(0, max_ratio) in the
    power domain: log((1 - r) exp(x) + r exp(x_partner)), on the frames where both clips
    are real (padding and the rest of the clip untouched)."""
    b, t, _ = fbank.shape
    partner = derangement(b, generator, fbank.device)
    r = _uniform((b, 1, 1), generator, fbank.device) * max_ratio
    mixed = torch.logaddexp(fbank + torch.log1p(-r), fbank[partner] + torch.log(r.clamp(min=1e-12)))
    real = _real_mask(valid_frames, t, fbank.device)
    both = (real & real[partner])[:, :, None] & (r > 0)
    return torch.where(both, mixed, fbank)


def random_resized_crop(fbank, valid_frames, min_scale: float, max_scale: float,
                        generator=None, freq: bool = True):
    """BYOL-A's random resized crop on each clip's real frames: a region of
    ``s_t`` x ``s_f`` (each uniform in [min_scale, max_scale], as a share of the real
    frames and of the bins) at a random place, stretched back by bilinear interpolation.
    Where the region reaches beyond the clip it sees the clip's mean; padding frames
    stay as they are. ``freq=False``: all bins, unmoved (``s_f`` = 1), time only."""
    b, t, f = fbank.shape
    dev = fbank.device
    valid = valid_frames.to(dev).clamp(min=1).float()
    real = _real_mask(valid_frames, t, dev)
    mean = (fbank * real[:, :, None]).sum(dim=(1, 2), keepdim=True) / (valid[:, None, None] * f)
    scale = min_scale + (max_scale - min_scale) * _uniform((b, 2), generator, dev)  # (t, f)
    if not freq:
        scale[:, 1] = 1.0
    # Region centre: anywhere such that the region stays inside when it is smaller than
    # the clip, or covers it when larger (in normalised [-1, 1] coordinates).
    centre = (_uniform((b, 2), generator, dev) * 2 - 1) * (1 - scale).abs()
    # Output position u in [-1, 1] samples the input at centre + scale * u; time
    # coordinates are relative to each clip's real frames.
    ut = (torch.arange(t, device=dev)[None, :] + 0.5) / valid[:, None] * 2 - 1  # [B, T]
    uf = (torch.arange(f, device=dev) + 0.5) / f * 2 - 1  # [F]
    st = centre[:, :1] + scale[:, :1] * ut  # source time in clip units [B, T]
    sf = centre[:, 1:] + scale[:, 1:] * uf[None, :]  # source freq [B, F]
    # grid_sample's x is the width (frequency), y the height (time, over the window T).
    ty = (st + 1) / 2 * valid[:, None] / t * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(sf[:, None, :], ty[:, :, None]), dim=-1)
    src = (fbank - mean)[:, None]  # outside the clip -> 0 -> its mean
    # Frames beyond the real ones must not leak in: zero them (= the mean) first.
    src = src * real[:, None, :, None]
    out = torch.nn.functional.grid_sample(src, grid.to(src.dtype), mode="bilinear",
                                          padding_mode="zeros", align_corners=False)
    out = out[:, 0] + mean
    return torch.where(real[:, :, None], out, fbank)


def augment(fbank: torch.Tensor, valid_frames: torch.Tensor, cfg: ViewConfig,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One random view of a raw fbank batch [B, T, F]."""
    out = fbank
    if cfg.mix_ratio > 0:
        out = log_mixup_exp(out, valid_frames, cfg.mix_ratio, generator)
    if cfg.rrc:
        out = random_resized_crop(out, valid_frames, cfg.rrc_min_scale, cfg.rrc_max_scale,
                                  generator, freq=cfg.rrc_freq)
    if cfg.time_roll:
        out = time_roll(out, valid_frames, generator)
    if cfg.gain_db > 0:
        out = random_gain(out, valid_frames, cfg.gain_db, generator)
    if cfg.fader_db > 0:
        out = random_fader(out, valid_frames, cfg.fader_db, generator)
    if cfg.time_mask_fraction > 0 or cfg.freq_mask_fraction > 0:
        out = spec_augment(out, valid_frames, cfg.time_mask_fraction,
                           cfg.freq_mask_fraction, generator)
    return out


def two_views(fbank, valid_frames, cfg: ViewConfig, generator=None,
              frames: Optional[int] = None):
    """Two independent views (x1, x2) of the same raw fbank batch. With ``frames``
    smaller than the batch's T, each view first takes its own random ``frames``-frame
    segment of the clip (``segment_crop``)."""
    views = []
    for _ in range(2):
        x, valid = fbank, valid_frames
        if frames is not None and frames < fbank.shape[1]:
            x, valid = segment_crop(fbank, valid_frames, frames, generator)
        views.append(augment(x, valid, cfg, generator))
    return views[0], views[1]
