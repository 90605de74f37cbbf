"""Kaldi-compatible log-mel filterbank features, padding/cropping and normalisation.

AudioMAE was trained on features made by ``torchaudio.compliance.kaldi.fbank`` with

    htk_compat=True, use_energy=False, window_type='hanning', dither=0.0,
    num_mel_bins=128, sample_frequency=16000, frame_shift=10

after subtracting the clip's mean from a float waveform in [-1, 1]. torchaudio cannot be
imported on our machines, so this module re-implements exactly that computation in plain
PyTorch: any device, ``[N]`` or ``[B, N]`` input, vectorised with unfold + rfft + matmul
(on CPU the frames go through in cache-sized blocks of ~1000, each block in one go,
which is about twice as fast as one pass over a large batch). Any deviation would shift
the inputs away from the distribution the pretrained encoder saw, so every step follows
Kaldi's (and torchaudio's) conventions:

1. ``subtract_mean``: the waveform's mean is removed (per clip, per row when batched),
   as AudioMAE's data loader does. The per-frame DC removal below makes this almost a
   no-op; it is kept so the float rounding is the same as in AudioMAE.
2. Framing with ``snip_edges=True``: frames of ``int(sr * 25 ms)`` = 400 samples every
   ``int(sr * 10 ms)`` = 160 samples, only frames that fit entirely in the clip, so
   ``num_frames = 1 + (N - 400) // 160`` (998 for 10 s at 16 kHz). No dither.
3. Per-frame DC offset removal (subtract each frame's mean).
4. Pre-emphasis ``y[n] = x[n] - 0.97 * x[n-1]`` inside the frame, where Kaldi uses the
   first sample itself as its predecessor: ``y[0] = x[0] - 0.97 * x[0]``.
5. Kaldi's "hanning" window, the symmetric Hann window
   ``w[n] = 0.5 - 0.5 * cos(2 pi n / (L - 1))`` (not the periodic one).
6. Zero-padding to the next power of two (512 for 400 samples), real FFT, power
   spectrum ``|X|^2`` (nfft / 2 + 1 = 257 bins).
7. Kaldi mel filterbank: ``mel(f) = 1127 ln(1 + f / 700)``; ``num_mel_bins`` triangles
   whose left edge, centre and right edge are equally spaced in mel between ``low_freq``
   (20 Hz) and ``high_freq`` (``<= 0`` means Nyquist + high_freq, i.e. 8 kHz); the
   weights are the triangles evaluated, in the mel domain, at the FFT bin frequencies
   ``k * sr / nfft`` for ``k = 0 .. nfft/2 - 1``. Kaldi's bank has only nfft/2 columns,
   so the Nyquist bin of the power spectrum always gets weight 0 (torchaudio pads the
   bank with a zero column; we do the same).
8. ``log(max(energy, eps))`` with ``eps = torch.finfo(torch.float32).eps``.

At 128 bins and 16 kHz the lowest triangles are narrower than the 31.25 Hz FFT bin
spacing: triangle 3 (0-based) spans 62.96-93.01 Hz, between the FFT bins at 62.5 and
93.75 Hz, and contains no FFT bin at all. Kaldi's own code refuses such a bank ("You may
have set num_mel_bins too large"), torchaudio does not: that bin is always exactly
``log(eps)`` (about -15.94) in the features AudioMAE was trained on, and so it is here.

Precision: the window and the bank are computed in float64 and rounded once to the
compute dtype (float32, or float64 for float64 input); the frames, FFT and matmul run in
the compute dtype. torchaudio instead evaluates the window (float32 cos) and the bank
in float32 arithmetic, which moves the weights by up to ~1e-5 and the window taps by up
to ~2e-7. The resulting log-mel values differ from torchaudio's by float32 noise (of
order 1e-4 to 1e-3 in the lowest-energy bins, far below anything a model can see after
normalisation); rounding once keeps us closer to Kaldi itself. float32 features in
general differ from exact (float64) ones by up to ~5e-4 in bins whose energy is a small
fraction of the frame's, because of cancellation in the float32 FFT.

The remaining helpers cut or pad the time axis (zeros in the raw log domain, before
normalisation, as in AudioMAE) and apply AudioMAE's dataset statistics:
``(fbank - mean) / (2 * std)``.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Dict, Tuple

import torch

__all__ = [
    "NORM_STATS",
    "compute_fbank",
    "num_frames",
    "mel_filterbank",
    "pad_or_crop",
    "normalize_fbank",
    "denormalize_fbank",
]

#: AudioMAE's dataset statistics of the raw log-mel features: (mean, std).
NORM_STATS: Dict[str, Tuple[float, float]] = {
    "audioset": (-4.2677393, 4.5689974),
    "esc50": (-6.6268077, 5.358466),
    "speechcommands": (-6.845978, 5.5654526),
}

_LOG_FLOOR = torch.finfo(torch.float32).eps


def _mel(freq_hz):
    """Kaldi/HTK mel scale: 1127 ln(1 + f / 700). Works on floats and tensors."""
    if isinstance(freq_hz, torch.Tensor):
        return 1127.0 * torch.log(1.0 + freq_hz / 700.0)
    return 1127.0 * math.log(1.0 + freq_hz / 700.0)


def _frame_sizes(sample_rate: float, frame_length_ms: float, frame_shift_ms: float) -> Tuple[int, int, int]:
    """(window length, hop, FFT size) in samples, truncated the way Kaldi does."""
    win = int(sample_rate * frame_length_ms * 0.001)
    hop = int(sample_rate * frame_shift_ms * 0.001)
    if win < 1:
        raise ValueError(
            f"frame_length_ms={frame_length_ms} at sample_rate={sample_rate} gives a frame "
            "of 0 samples; use a longer frame"
        )
    if hop < 1:
        raise ValueError(
            f"frame_shift_ms={frame_shift_ms} at sample_rate={sample_rate} gives a shift "
            "of 0 samples; use a longer shift"
        )
    nfft = 1 << (win - 1).bit_length()  # next power of two >= win
    return win, hop, nfft


def _resolve_band(sample_rate: float, low_freq: float, high_freq: float) -> Tuple[float, float]:
    """Apply Kaldi's high_freq <= 0 convention and check the band; returns (low, high)."""
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    if not (0.0 <= low_freq < nyquist):
        raise ValueError(
            f"low_freq={low_freq} Hz must be in [0, Nyquist={nyquist}) Hz"
        )
    if not (0.0 < high <= nyquist):
        raise ValueError(
            f"high_freq={high_freq} Hz resolves to {high} Hz, which must be in (0, Nyquist={nyquist}] Hz "
            "(values <= 0 are offsets from Nyquist)"
        )
    if not low_freq < high:
        raise ValueError(
            f"low_freq={low_freq} Hz must be below high_freq (resolved to {high} Hz)"
        )
    return float(low_freq), float(high)


def mel_filterbank(
    num_mel_bins: int = 128,
    nfft: int = 512,
    sample_rate: float = 16000,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """Kaldi's triangular mel filterbank, transposed for a right matmul.

    Returns ``[nfft // 2 + 1, num_mel_bins]``. Row ``k`` holds the weights of FFT bin
    ``k`` (frequency ``k * sample_rate / nfft``); the last row (Nyquist) is all zeros,
    as in Kaldi, whose bank covers only bins ``0 .. nfft/2 - 1``. A triangle that
    contains no FFT bin has an all-zero column.
    """
    if not (isinstance(num_mel_bins, numbers.Integral) and num_mel_bins >= 1):
        raise ValueError(f"num_mel_bins must be a positive integer, got {num_mel_bins!r}")
    if not (isinstance(nfft, numbers.Integral) and nfft >= 2 and nfft % 2 == 0):
        raise ValueError(f"nfft must be a positive even integer, got {nfft!r}")
    low, high = _resolve_band(sample_rate, low_freq, high_freq)
    # Computed in float64 and rounded once to ``dtype`` (see the module docstring).
    mel_low, mel_high = _mel(low), _mel(high)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    f64 = torch.float64
    idx = torch.arange(num_mel_bins, dtype=f64).unsqueeze(0)  # [1, bins]
    left = mel_low + idx * delta
    centre = mel_low + (idx + 1.0) * delta
    right = mel_low + (idx + 2.0) * delta
    half = nfft // 2
    bin_mel = _mel((sample_rate / nfft) * torch.arange(half, dtype=f64)).unsqueeze(1)  # [half, 1]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)  # [half, bins]
    weights = torch.cat([weights, weights.new_zeros(1, num_mel_bins)], dim=0)  # Nyquist row
    return weights.to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=32)
def _cached_bank(device, dtype, num_mel_bins, nfft, sample_rate, low_freq, high_freq) -> torch.Tensor:
    return mel_filterbank(num_mel_bins, nfft, sample_rate, low_freq, high_freq, dtype=dtype, device=device).contiguous()


@functools.lru_cache(maxsize=32)
def _cached_window(device, dtype, win: int) -> torch.Tensor:
    # Kaldi "hanning" is the symmetric Hann window 0.5 - 0.5 cos(2 pi n / (L - 1))
    # (torch.hann_window(periodic=False)); built in float64 and rounded once, because
    # float32 cos() is off by up to 2e-7 per tap, which shows in low-energy bins.
    return torch.hann_window(win, periodic=False, dtype=torch.float64).to(dtype=dtype, device=device)


def frame_length(sample_rate: float = 16000, frame_length_ms: float = 25.0,
                 frame_shift_ms: float = 10.0) -> int:
    """Samples of one fbank frame: the shortest clip that gives a frame."""
    return _frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)[0]


def num_frames(num_samples: int, sample_rate: float = 16000, frame_length_ms: float = 25.0,
               frame_shift_ms: float = 10.0) -> int:
    """Number of frames ``compute_fbank`` returns for a clip of ``num_samples`` samples
    (snip_edges=True: ``1 + (N - win) // hop``; 0 if the clip is shorter than a frame)."""
    win, hop, _ = _frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    if num_samples < win:
        return 0
    return 1 + (num_samples - win) // hop


def compute_fbank(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    preemphasis: float = 0.97,
    subtract_mean: bool = True,
) -> torch.Tensor:
    """Kaldi-compatible log-mel filterbank, as AudioMAE computes it (see module docstring).

    Args:
        waveform: ``[N]`` or ``[B, N]`` float waveform in [-1, 1] (not int16 scale).
            float64 input is computed in float64, any other float dtype in float32.
        sample_rate: in Hz.
        num_mel_bins: number of mel triangles (AudioMAE: 128).
        frame_length_ms, frame_shift_ms: frame length and shift (25 / 10 ms).
        low_freq, high_freq: band of the filterbank in Hz; ``high_freq <= 0`` means
            ``Nyquist + high_freq``.
        preemphasis: pre-emphasis coefficient, in [0, 1].
        subtract_mean: remove each clip's mean before framing (AudioMAE does).

    Returns:
        ``[T, num_mel_bins]`` for ``[N]`` input, ``[B, T, num_mel_bins]`` for ``[B, N]``,
        with ``T = 1 + (N - win) // hop`` (998 for 10 s at 16 kHz), on the input's device.

    Raises:
        ValueError: on a bad shape or dtype, non-finite samples, a clip shorter than one
            frame, settings outside what Kaldi accepts, or a waveform that requires
            grad (the features are not differentiable).
    """
    if not isinstance(waveform, torch.Tensor):
        raise ValueError(f"waveform must be a torch.Tensor, got {type(waveform).__name__}")
    if waveform.dim() not in (1, 2):
        raise ValueError(
            f"waveform must be [N] or [B, N], got shape {tuple(waveform.shape)}; "
            "mix multi-channel audio down to mono first"
        )
    if not waveform.is_floating_point():
        raise ValueError(
            f"waveform must be a float tensor in [-1, 1], got dtype {waveform.dtype}; "
            "convert integer PCM with e.g. x.float() / 32768"
        )
    if waveform.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "compute_fbank is not differentiable (it writes into preallocated buffers); "
            "pass waveform.detach() or call it under torch.no_grad()"
        )
    if not (isinstance(sample_rate, numbers.Real) and math.isfinite(sample_rate) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    if not (isinstance(num_mel_bins, numbers.Integral) and num_mel_bins >= 1):
        raise ValueError(f"num_mel_bins must be a positive integer, got {num_mel_bins!r}")
    if not (frame_length_ms > 0 and frame_shift_ms > 0):
        raise ValueError(
            f"frame_length_ms and frame_shift_ms must be > 0, got {frame_length_ms} and {frame_shift_ms}"
        )
    if not 0.0 <= preemphasis <= 1.0:
        raise ValueError(f"preemphasis must be in [0, 1], got {preemphasis}")
    low, high = _resolve_band(float(sample_rate), float(low_freq), float(high_freq))
    win, hop, nfft = _frame_sizes(float(sample_rate), frame_length_ms, frame_shift_ms)

    n = waveform.shape[-1]
    if n < win:
        raise ValueError(
            f"clip too short: it has {n} samples but one {frame_length_ms} ms frame at "
            f"{sample_rate} Hz needs at least {win} samples"
        )

    dtype = torch.float64 if waveform.dtype == torch.float64 else torch.float32
    device = waveform.device
    x = waveform.to(dtype)
    squeeze = x.dim() == 1
    if squeeze:
        x = x.unsqueeze(0)
    # The row sums double as the finiteness check: NaN or inf anywhere makes them
    # non-finite (as would a sum beyond 3e38, which is no [-1, 1] waveform either).
    row_mean = x.mean(dim=-1, keepdim=True)
    if not bool(torch.isfinite(row_mean).all()):
        raise ValueError("waveform contains NaN or infinite samples (or absurdly large values)")
    if subtract_mean:
        x = x - row_mean

    frames = x.unfold(-1, win, hop)  # [B, T, win], a view
    batch, total = frames.shape[0], frames.shape[1]
    window = _cached_window(device, dtype, win)
    bank = _cached_bank(device, dtype, int(num_mel_bins), nfft, float(sample_rate), low, high)
    if device.type != "cpu":
        out = _fbank_block(frames, window, bank, nfft, preemphasis)  # one pass on GPUs
    else:
        # On CPU, work through blocks of about _CPU_BLOCK_BYTES of FFT buffer (each
        # block vectorised): one [B, T, nfft] pass over a batch of 10 s clips makes
        # ~65 MB intermediates that run from main memory, about 2x slower than
        # cache-sized blocks.
        per_block = max(1, _CPU_BLOCK_BYTES // (nfft * frames.element_size()))
        frames_per_block = min(total, per_block)  # whole clips where they fit
        clips_per_block = max(1, per_block // frames_per_block)
        out = torch.empty(batch, total, num_mel_bins, dtype=dtype, device=device)
        for b0 in range(0, batch, clips_per_block):
            for t0 in range(0, total, frames_per_block):
                b1, t1 = b0 + clips_per_block, t0 + frames_per_block
                out[b0:b1, t0:t1] = _fbank_block(frames[b0:b1, t0:t1], window, bank, nfft, preemphasis)
    return out.squeeze(0) if squeeze else out


# Size of the FFT input buffer per block on CPU (float32 at nfft=512: 1024 frames).
_CPU_BLOCK_BYTES = 2 << 20


def _fbank_block(frames: torch.Tensor, window: torch.Tensor, bank: torch.Tensor, nfft: int,
                 preemphasis: float) -> torch.Tensor:
    """Log-mel energies of raw frames ``[B, T, win]`` (any strides) -> ``[B, T, bins]``."""
    win = frames.shape[-1]
    dc = frames - frames.mean(dim=-1, keepdim=True)  # per-frame DC offset removal

    # Everything up to the FFT is written into one [B, T, nfft] buffer whose tail is
    # the zero padding, so rfft needs no padded copy.
    buf = torch.empty(*frames.shape[:-1], nfft, dtype=frames.dtype, device=frames.device)
    buf[..., win:].zero_()
    y = buf[..., :win]
    if preemphasis != 0.0:
        # y[n] = x[n] - c * x[n-1]; Kaldi uses x[0] as its own predecessor.
        torch.mul(dc[..., :-1], preemphasis, out=y[..., 1:])
        torch.sub(dc[..., 1:], y[..., 1:], out=y[..., 1:])
        torch.sub(dc[..., :1], preemphasis * dc[..., :1], out=y[..., :1])
    else:
        y.copy_(dc)
    y.mul_(window)

    spec = torch.view_as_real(torch.fft.rfft(buf, dim=-1))  # [B, T, nfft//2 + 1, 2]
    power = torch.addcmul(spec[..., 0] * spec[..., 0], spec[..., 1], spec[..., 1])  # |X|^2
    mel = torch.matmul(power, bank)  # [B, T, bins]; the bank's Nyquist row is zero
    return mel.clamp_min_(_LOG_FLOOR).log_()


def pad_or_crop(fbank: torch.Tensor, target_frames: int) -> torch.Tensor:
    """Make the time axis (dim -2) exactly ``target_frames`` long.

    Longer inputs keep their first ``target_frames`` frames; shorter ones are padded at
    the end with zeros (zero in the raw log-mel domain, i.e. call this before
    ``normalize_fbank``, as AudioMAE does). ``[..., T, F] -> [..., target_frames, F]``.
    """
    if fbank.dim() < 2:
        raise ValueError(f"fbank must be [..., T, F], got shape {tuple(fbank.shape)}")
    if not (isinstance(target_frames, numbers.Integral) and target_frames >= 1):
        raise ValueError(f"target_frames must be a positive integer, got {target_frames!r}")
    t = fbank.shape[-2]
    if t > target_frames:
        return fbank[..., : int(target_frames), :]
    if t < target_frames:
        return torch.nn.functional.pad(fbank, (0, 0, 0, int(target_frames) - t))
    return fbank


def _check_std(std: float) -> None:
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")


def normalize_fbank(fbank: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """AudioMAE normalisation ``(fbank - mean) / (2 * std)``; any shape.

    Use ``NORM_STATS[name]`` for ``(mean, std)``.
    """
    _check_std(std)
    return (fbank - mean) / (2.0 * std)


def denormalize_fbank(fbank: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Inverse of ``normalize_fbank``: ``fbank * 2 * std + mean``; any shape."""
    _check_std(std)
    return fbank * (2.0 * std) + mean
