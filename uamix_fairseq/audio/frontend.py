"""The feature front end for batches: padded waveforms -> model-ready fbank.

Used by every task (tuning, fine-tuning, embedding export), on whatever device the batch
is on, so that features can be computed in batch on the GPU:

    waveform [B, N] (zero-padded, each row's mean already removed) + lengths [B]
      -> raw log-mel [B, T, F] where each clip's frames are exactly those of
         ``compute_fbank`` on that clip alone, cropped from the start or zero-padded at
         the end to T frames (zero in the raw log domain, as AudioMAE pads, or, with
         ``pad_mode="repeat"``, the clip's frames repeated until T is full)
      -> (optionally) views, then normalisation -> [B, 1, T, F].
"""

from dataclasses import dataclass

import torch

from .features import compute_fbank, normalize_fbank, num_frames as frames_for_samples

# How a clip shorter than T is filled: "zero" (AudioMAE: zeros in the raw log domain;
# the amount of padding then tells clips apart) or "repeat" (the clip again and again).
PAD_MODES = ("zero", "repeat")


def repeat_fill(fbank: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Frames t >= valid[b] of each clip replaced by frame t mod valid[b] (a clip with no
    real frame stays as it is)."""
    b, t, f = fbank.shape
    pos = torch.arange(t, device=fbank.device)[None, :]
    v = valid.to(fbank.device)[:, None]
    src = torch.where(v > 0, pos % v.clamp(min=1), pos)
    return fbank.gather(1, src[:, :, None].expand(b, t, f))


@dataclass
class FrontendConfig:
    sample_rate: int = 16000
    num_frames: int = 1024  # T
    num_mel_bins: int = 128  # F
    norm_mean: float = -4.2677393
    norm_std: float = 4.5689974
    pad_mode: str = "zero"  # see PAD_MODES

    @property
    def max_samples(self) -> int:
        """Samples that give exactly ``num_frames`` frames (25 ms window, 10 ms hop)."""
        shift, window = self.sample_rate // 100, int(self.sample_rate * 0.025)
        return (self.num_frames - 1) * shift + window


def batch_fbank(waveform: torch.Tensor, lengths: torch.Tensor, cfg: FrontendConfig):
    """Raw log-mel [B, T, F] and the number of frames holding the clip [B].

    Frames of a padded row that reach into the padding are set to zero, so each row
    equals the fbank of its clip alone (``subtract_mean=False``: the dataset removes each
    clip's mean before padding). With ``cfg.pad_mode="repeat"`` the padding then holds
    the clip's frames again, and every one of the T frames counts as the clip's.
    """
    if cfg.pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {cfg.pad_mode!r}")
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
    fbank = fbank * real[:, :, None]
    if cfg.pad_mode == "repeat":
        return repeat_fill(fbank, valid), torch.where(valid > 0, cfg.num_frames, valid)
    return fbank, valid


def model_input(fbank: torch.Tensor, cfg: FrontendConfig) -> torch.Tensor:
    """Normalise a raw fbank batch [B, T, F] into the encoder's input [B, 1, T, F]."""
    return normalize_fbank(fbank, cfg.norm_mean, cfg.norm_std).unsqueeze(1)
