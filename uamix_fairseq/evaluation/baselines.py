"""No-learning baselines: clip features computed from the encoders' own input.

A baseline gives every clip a fixed feature vector without any trained weights, and is
scored by the evaluation commands exactly like an encoder (same clips, same episodes,
same classifiers), so an encoder can be compared with it pairwise. It is an honest
reference: an encoder that does not beat statistics of the spectrum has not learned
much beyond the spectrum.

``fbank_stats``: per clip, the mean and the (population) standard deviation over time
of the *normalised* fbank, per mel bin (128 bins -> 256 numbers: the 128 means, then the
128 standard deviations). The fbank is exactly the crop the encoders see (same
``num_frames``, cropped from the start, same normalisation statistics), and the
statistics are taken over the **real frames only**: the zero padding that fills a short
clip up to ``num_frames`` is left out, so the features do not depend on how much padding
a clip gets.

Plain numpy/torch, batched, no fairseq.
"""

from typing import Callable, Dict, Tuple

import numpy as np
import torch

__all__ = ["BASELINES", "baseline_display_name", "fbank_stats", "real_frame_mask"]


def real_frame_mask(valid_frames, num_frames: int, device=None) -> torch.Tensor:
    """Bool [B, T]: True for the first ``valid_frames[b]`` frames of each row."""
    valid = torch.as_tensor(np.asarray(valid_frames), device=device).reshape(-1)
    return torch.arange(num_frames, device=valid.device)[None, :] < valid[:, None]


def fbank_stats(fbank, valid_frames) -> np.ndarray:
    """Mean and standard deviation over the real frames, per mel bin.

    ``fbank``: normalised fbank [B, T, F] or model input [B, 1, T, F] (torch or numpy);
    ``valid_frames`` [B]: the number of real frames of each row (the rest is padding).
    Returns float32 [B, 2F]: ``[mean_0 .. mean_F-1, std_0 .. std_F-1]``. The standard
    deviation divides by the number of real frames (ddof 0). A row without real frames
    gives zeros.
    """
    x = torch.as_tensor(fbank)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"expected [B, 1, T, F] or [B, T, F], got {tuple(x.shape)}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"expected [B, 1, T, F] or [B, T, F], got {tuple(x.shape)}")
    x = x.to(torch.float64)
    b, t, _ = x.shape
    valid = torch.as_tensor(np.asarray(valid_frames)).reshape(-1)
    if valid.shape[0] != b:
        raise ValueError(f"{valid.shape[0]} frame counts for a batch of {b} clips")
    mask = real_frame_mask(valid.clamp(0, t), t, device=x.device).to(x.dtype)[:, :, None]
    count = mask.sum(dim=1).clamp_min(1.0)                       # [B, 1]
    mean = (x * mask).sum(dim=1) / count                         # [B, F]
    var = (((x - mean[:, None, :]) * mask) ** 2).sum(dim=1) / count
    return torch.cat([mean, var.sqrt()], dim=1).float().cpu().numpy()


# name -> (display name in reports, feature function(normalised fbank, valid frames))
BASELINES: Dict[str, Tuple[str, Callable]] = {
    "fbank_stats": ("fbank-stats", fbank_stats),
}


def baseline_display_name(name: str) -> str:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    return BASELINES[name][0]
