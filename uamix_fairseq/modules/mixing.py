"""Input-space mixing of spectrogram batches: T-CutMix, TF-CutMix and mixup.

All functions take a batch ``x`` of shape [B, 1, T, F] (normalised fbank, time frames by
mel bins) and return ``(mixed, lam, partner)``:

- ``mixed`` [B, 1, T, F]: row i mixes clip i with clip ``partner[i]``;
- ``lam`` [B]: the share of clip i in row i, recomputed from what was actually pasted
  (docs/method.md, "T-CutMix": lambda = 1 - cut/T);
- ``partner`` [B] (long): the clip each row was mixed with.

One lambda and one cut are drawn per batch, as in Un-Mix, so that m_ij and m_ji use the
same mask with i and j swapped (docs/method.md, "T-CutMix", Eq. 2). Nothing here knows
about fairseq or about the loss.
"""

import math
import random
from typing import Optional

import torch

MIX_MODES = ("none", "tcutmix", "tfcutmix", "mixup")
PARTNER_MODES = ("reverse", "random")


def mix_partner(batch_size: int, mode: str = "reverse", generator=None, device=None):
    """Partner index per row: reversed batch order (j = B-1-i) or a random permutation."""
    if mode == "reverse":
        return torch.arange(batch_size - 1, -1, -1, device=device)
    if mode == "random":
        perm = torch.randperm(batch_size, generator=generator)
        return perm.to(device)
    raise ValueError(f"mix partner mode must be one of {PARTNER_MODES}, got {mode!r}")


def sample_lambda(alpha: float, generator=None) -> float:
    """lambda ~ Beta(alpha, alpha), reproducible from ``generator`` (a CPU torch.Generator,
    or torch's global RNG when None)."""
    if not alpha > 0:
        raise ValueError(f"mix alpha must be > 0, got {alpha}")
    # torch's Beta sampler takes no generator; Python's exact betavariate, seeded from
    # the torch generator, keeps one seed controlling everything.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return random.Random(seed).betavariate(alpha, alpha)


def _check_batch(x):
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"mixing expects a batch [B, 1, T, F], got {tuple(x.shape)}")


def _span(length: int, cut: int, generator=None) -> int:
    """Uniform start of a span of ``cut`` inside ``length``."""
    return int(torch.randint(0, length - cut + 1, (1,), generator=generator))


def t_cutmix(
    x: torch.Tensor,
    alpha: float = 1.0,
    partner: Optional[torch.Tensor] = None,
    snap: int = 1,
    generator=None,
):
    """T-CutMix: paste a contiguous time span (all mel bins) of clip j into clip i.

    The span has round((1 - lambda) * T) frames (rounded to a multiple of ``snap``, e.g.
    16 to align with patches) and starts uniformly at random (on the ``snap`` grid).
    """
    _check_batch(x)
    b, _, t, _ = x.shape
    partner = mix_partner(b, device=x.device) if partner is None else partner
    lam = sample_lambda(alpha, generator)
    if snap < 1 or t % snap:
        raise ValueError(f"snap={snap} must be >= 1 and divide the {t} frames")
    cut = int(round((1.0 - lam) * t / snap)) * snap
    start = snap * int(torch.randint(0, (t - cut) // snap + 1, (1,), generator=generator))
    mixed = x.clone()
    mixed[:, :, start:start + cut, :] = x[partner][:, :, start:start + cut, :]
    lam_eff = 1.0 - cut / t
    return mixed, torch.full((b,), lam_eff, device=x.device, dtype=x.dtype), partner


def tf_cutmix(x: torch.Tensor, alpha: float = 1.0, partner=None, generator=None):
    """TF-CutMix: paste a time x frequency rectangle with sides sqrt(1 - lambda) of each
    axis; lambda is recomputed from the pasted area."""
    _check_batch(x)
    b, _, t, f = x.shape
    partner = mix_partner(b, device=x.device) if partner is None else partner
    lam = sample_lambda(alpha, generator)
    side = math.sqrt(1.0 - lam)
    ct, cf = int(round(side * t)), int(round(side * f))
    t0, f0 = _span(t, ct, generator), _span(f, cf, generator)
    mixed = x.clone()
    mixed[:, :, t0:t0 + ct, f0:f0 + cf] = x[partner][:, :, t0:t0 + ct, f0:f0 + cf]
    lam_eff = 1.0 - (ct * cf) / (t * f)
    return mixed, torch.full((b,), lam_eff, device=x.device, dtype=x.dtype), partner


def mixup(x: torch.Tensor, alpha: float = 1.0, partner=None, generator=None):
    """mixup in the input space: m_ij = lambda x_i + (1 - lambda) x_j."""
    _check_batch(x)
    b = x.shape[0]
    partner = mix_partner(b, device=x.device) if partner is None else partner
    lam = sample_lambda(alpha, generator)
    mixed = lam * x + (1.0 - lam) * x[partner]
    return mixed, torch.full((b,), lam, device=x.device, dtype=x.dtype), partner


def mix_batch(x, mode: str, alpha: float = 1.0, partner_mode: str = "reverse",
              snap: int = 1, generator=None):
    """Dispatch on ``mode`` (one of MIX_MODES); returns None for mode 'none'."""
    if mode not in MIX_MODES:
        raise ValueError(f"mix mode must be one of {MIX_MODES}, got {mode!r}")
    if mode == "none":
        return None
    partner = mix_partner(x.shape[0], partner_mode, generator, device=x.device)
    if mode == "tcutmix":
        return t_cutmix(x, alpha, partner, snap=snap, generator=generator)
    if mode == "tfcutmix":
        return tf_cutmix(x, alpha, partner, generator=generator)
    return mixup(x, alpha, partner, generator=generator)
