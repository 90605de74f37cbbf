"""Input-space attacks on normalised log-mel features, in plain PyTorch.

- ``db_to_normalized``: an L-infinity budget in dB of mel-band power -> the same budget
  in the units of the model input (AudioMAE's normalised fbank).
- ``pgd_linf``: projected gradient ascent (Madry et al. 2018) on any scalar loss of the
  input, inside an L-infinity ball, with an optional uniform random start.
- ``add_noise_at_snr``: white noise at a given signal-to-noise ratio (waveform domain).

Used by the SwARo criterion (adversarial views) and by the robustness options of the
few-shot and linear-probe commands. Nothing here imports fairseq.
"""

import math
from typing import Callable, Optional

import torch


def db_to_normalized(budget_db: float, norm_std: float) -> float:
    """An L-infinity budget of ``budget_db`` dB on every mel band's power, in normalised
    fbank units.

    Kaldi fbank is the natural log of mel power, so d dB is d / 10 * ln(10) in the raw
    log domain; AudioMAE's normalisation ``(x - mean) / (2 * std)`` divides that by
    2 * std. Example: 1 dB with the AudioSet statistics (std 4.569) is 0.0252.
    """
    if budget_db < 0:
        raise ValueError(f"attack budget must be >= 0 dB, got {budget_db}")
    if not norm_std > 0:
        raise ValueError(f"normalisation std must be > 0, got {norm_std}")
    return budget_db * math.log(10.0) / 10.0 / (2.0 * norm_std)


def pgd_linf(x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], eps: float,
             steps: int, step_size: float, random_start: bool = True,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Increase ``loss_fn(x_adv)`` by signed-gradient steps, projecting back onto
    ``|x_adv - x| <= eps`` (element-wise) after every step.

    ``loss_fn`` maps a tensor shaped like ``x`` to a scalar; for a targeted attack, pass
    the negative of the loss towards the target. Gradients flow only into the input:
    whatever parameters ``loss_fn`` uses get no ``.grad`` from this call. The random
    start is uniform in the ball, drawn from ``generator`` on its device (CPU by
    default). Returns a detached tensor of ``x``'s dtype; with ``eps`` 0 or no steps and
    no random start it is ``x`` itself (a copy).
    """
    if eps < 0 or step_size < 0 or steps < 0:
        raise ValueError(f"PGD needs eps, step_size, steps >= 0; got {eps}, {step_size}, {steps}")
    x = x.detach()
    delta = torch.zeros_like(x)
    if random_start and eps > 0:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.rand(x.shape, generator=generator, device=gen_device, dtype=torch.float32)
        delta = ((noise * 2 - 1) * eps).to(device=x.device, dtype=x.dtype)
    for _ in range(steps if eps > 0 else 0):
        delta.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(x + delta)
            (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
    return (x + delta).detach()


def add_noise_at_snr(waveform: torch.Tensor, snr_db: float,
                     generator: Optional[torch.Generator] = None,
                     lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``waveform`` [B, N] plus white Gaussian noise whose power is the clip's power
    (over its first ``lengths[b]`` samples, zero padding excluded) divided by
    10 ** (snr_db / 10). Padding stays zero. Silent clips stay silent."""
    if waveform.ndim != 2:
        raise ValueError(f"expected waveforms [B, N], got {tuple(waveform.shape)}")
    b, n = waveform.shape
    if lengths is None:
        lengths = torch.full((b,), n, device=waveform.device)
    valid = (torch.arange(n, device=waveform.device)[None, :] < lengths[:, None]).to(waveform.dtype)
    power = (waveform ** 2 * valid).sum(1) / lengths.clamp_min(1).to(waveform.dtype)
    scale = (power / 10.0 ** (snr_db / 10.0)).sqrt()
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(waveform.shape, generator=generator, device=gen_device,
                        dtype=torch.float32).to(waveform.device, waveform.dtype)
    return waveform + noise * scale[:, None] * valid
