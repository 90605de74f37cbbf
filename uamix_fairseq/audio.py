"""Reading one audio file into a mono float32 waveform.

The loader decodes with ``soundfile`` (libsndfile: wav, flac, ogg, ...), mixes the
channels to mono, checks or converts the sample rate and refuses waveforms the
feature extractor cannot use (NaN/Inf, silence, shorter than one 25 ms frame).
Every problem is raised as :class:`AudioError` naming the file and the fix.

The resampler is a band-limited polyphase (Kaiser-windowed sinc) resampler written
in PyTorch, so that no audio library beyond ``soundfile`` is needed at run time.
"""

import functools
import math
import os
import struct
from typing import Optional, Union

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

__all__ = [
    "AudioError",
    "load_audio",
    "resample_waveform",
    "validate_waveform",
]

PathLike = Union[str, "os.PathLike[str]"]

# Defaults of the resampling low-pass filter (see `resample_waveform`).
# rolloff: the cut-off sits at 94.5% of the lower Nyquist frequency, leaving room
# for the transition band so that almost nothing above the new Nyquist aliases.
DEFAULT_ROLLOFF = 0.945
# Number of sinc zero crossings kept on each side of the centre tap. More zero
# crossings give a narrower transition band (about 2.7 * cutoff_bandwidth / width).
DEFAULT_LOWPASS_WIDTH = 48
# Kaiser beta 8.6 gives roughly 85 dB of stop-band attenuation and a pass-band
# ripple far below float32 audio precision needs.
DEFAULT_KAISER_BETA = 8.6
# Refuse rate pairs whose polyphase filter bank would be unreasonably large
# (e.g. 44100 -> 16001 Hz, where the ratio does not reduce).
_MAX_FILTER_BANK_ELEMENTS = 20_000_000


class AudioError(ValueError):
    """An audio file cannot be used; the message names the file and what to do."""


# ---------------------------------------------------------------------------
# validity checks
# ---------------------------------------------------------------------------


def validate_waveform(waveform: torch.Tensor, name: str, min_samples: int = 400) -> None:
    """Refuse a waveform the feature extractor cannot use.

    Args:
        waveform: ``[N]`` or ``[B, N]`` floating-point samples.
        name: what to call the waveform in error messages (usually its file path).
        min_samples: the fewest samples accepted along the last dimension; 400 is
            one 25 ms frame at 16 kHz, the window of the Kaldi fbank.

    Raises:
        AudioError: wrong shape or dtype, NaN/Inf samples, fewer than
            ``min_samples`` samples, or all samples zero (silence).
    """
    if not isinstance(waveform, torch.Tensor) or not waveform.is_floating_point():
        raise AudioError(
            f"{name}: expected a floating-point torch tensor, got "
            f"{type(waveform).__name__} {getattr(waveform, 'dtype', '')}; "
            "convert the samples to float32"
        )
    if waveform.dim() not in (1, 2):
        raise AudioError(
            f"{name}: expected a waveform of shape [N] or [B, N], got shape "
            f"{list(waveform.shape)}; mix channels to mono first"
        )
    bad = int((~torch.isfinite(waveform)).sum())
    if bad:
        raise AudioError(
            f"{name}: {bad} sample(s) are NaN or Inf; the file is corrupt, "
            "re-export it or remove it from the manifest"
        )
    num_samples = waveform.shape[-1]
    if num_samples < min_samples:
        raise AudioError(
            f"{name}: only {num_samples} samples, fewer than the {min_samples} "
            "needed (shorter than one 25 ms frame, 400 samples at 16 kHz); "
            "remove it from the manifest or pad it with silence"
        )
    if not bool(waveform.ne(0).any()):
        raise AudioError(
            f"{name}: all samples are zero (silent audio); "
            "remove it from the manifest"
        )


# ---------------------------------------------------------------------------
# resampling
# ---------------------------------------------------------------------------


def _kaiser_sinc(t: torch.Tensor, cutoff: float, half_width: float, beta: float) -> torch.Tensor:
    """Kaiser-windowed ideal low-pass impulse response.

    Args:
        t: time in input samples (any shape, float64).
        cutoff: cut-off frequency in cycles per input sample (< 0.5).
        half_width: the window covers ``|t| <= half_width``; outside it is zero.
        beta: Kaiser window shape parameter.

    Returns:
        Tensor shaped like ``t``. Its taps sum to about 1 for any fractional
        offset, so the DC gain is 1 for both up- and down-sampling.
    """
    # The ideal low-pass with cut-off fc has impulse response 2 fc sinc(2 fc t).
    response = 2.0 * cutoff * torch.sinc(2.0 * cutoff * t)
    inside = t.abs() <= half_width
    ratio = (t / half_width).clamp(-1.0, 1.0)
    window = torch.special.i0(beta * torch.sqrt(1.0 - ratio**2)) / torch.special.i0(
        torch.tensor(beta, dtype=t.dtype)
    )
    return torch.where(inside, response * window, torch.zeros_like(t))


def _filter_geometry(orig_sr: int, new_sr: int, width: int, rolloff: float):
    """(cut-off in cycles per input sample, window half-width, pad) of the low-pass."""
    # A little below the lower of the two Nyquist frequencies.
    cutoff = 0.5 * rolloff * min(orig_sr, new_sr) / orig_sr
    # `width` sinc zero crossings on each side; crossings are 1 / (2 cutoff) apart.
    half_width = width / (2.0 * cutoff)
    pad = int(math.ceil(half_width)) + 1
    return cutoff, half_width, pad


@functools.lru_cache(maxsize=16)
def _polyphase_filter_bank(
    up: int, down: int, orig_sr: int, new_sr: int, width: int, rolloff: float, beta: float
):
    """Build the filters for the strided-convolution resampler.

    Output sample ``k = j * up + i`` (phase ``i``) sits at input time
    ``j * down + i * down / up``. Channel ``i`` of the bank holds the low-pass
    taps for input positions ``j * down + m`` with ``m`` in ``[-pad, down + pad)``,
    so one conv1d with stride ``down`` computes all ``up`` phases at once. (Each
    channel is zero outside its own ``2 * pad`` taps; that waste is small for the
    usual rate pairs, whose ``down`` is a few hundred at most.) The bank is cached
    because a loader resamples many files with the same pair of rates; callers
    must not modify it.

    Returns:
        (filters ``[up, 1, down + 2 * pad]`` float64, pad)
    """
    cutoff, half_width, pad = _filter_geometry(orig_sr, new_sr, width, rolloff)
    offsets = torch.arange(-pad, down + pad, dtype=torch.float64)  # m
    phases = torch.arange(up, dtype=torch.float64) * down / up  # i * down / up
    t = offsets[None, :] - phases[:, None]  # [up, K]: input position minus output time
    filters = _kaiser_sinc(t, cutoff, half_width, beta)
    return filters[:, None, :], pad


def resample_waveform(
    waveform: torch.Tensor,
    orig_sr: int,
    new_sr: int,
    *,
    lowpass_filter_width: int = DEFAULT_LOWPASS_WIDTH,
    rolloff: float = DEFAULT_ROLLOFF,
    beta: float = DEFAULT_KAISER_BETA,
) -> torch.Tensor:
    """Band-limited polyphase resampling from ``orig_sr`` to ``new_sr`` Hz.

    A Kaiser-windowed sinc low-pass at ``rolloff * min(orig_sr, new_sr) / 2`` is
    evaluated at every output time; the rate ratio is reduced by the gcd to
    ``up / down`` and all ``up`` phases are computed by one conv1d with stride
    ``down``. Output sample ``k`` lies at time ``k / new_sr`` (sample 0 stays at
    time 0), the same alignment as ``scipy.signal.resample_poly``. Samples near the
    edges see the zero padding beyond the signal.

    Args:
        waveform: ``[N]`` or ``[B, N]`` floating-point tensor.
        orig_sr: sample rate of ``waveform`` in Hz (positive int).
        new_sr: wanted sample rate in Hz (positive int).
        lowpass_filter_width: sinc zero crossings kept on each side.
        rolloff: cut-off as a fraction of the lower Nyquist frequency.
        beta: Kaiser window parameter.

    Returns:
        ``[M]`` or ``[B, M]`` tensor with ``M = ceil(N * new_sr / orig_sr)``, same
        dtype and device; the input itself when the rates are equal.
    """
    for label, rate in (("orig_sr", orig_sr), ("new_sr", new_sr)):
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"resample_waveform: {label} must be a positive integer, got {rate!r}")
    orig_sr, new_sr = int(orig_sr), int(new_sr)
    if waveform.dim() not in (1, 2):
        raise ValueError(
            f"resample_waveform: expected shape [N] or [B, N], got {list(waveform.shape)}"
        )
    if orig_sr == new_sr:
        return waveform
    if not waveform.is_floating_point():
        raise ValueError(f"resample_waveform: expected a floating-point waveform, got {waveform.dtype}")

    gcd = math.gcd(orig_sr, new_sr)
    up, down = new_sr // gcd, orig_sr // gcd
    # Check the size before building: a ratio that barely reduces needs a huge bank.
    _, _, pad = _filter_geometry(orig_sr, new_sr, lowpass_filter_width, rolloff)
    bank_size = up * (down + 2 * pad)
    if bank_size > _MAX_FILTER_BANK_ELEMENTS:
        raise ValueError(
            f"resample_waveform: {orig_sr} Hz -> {new_sr} Hz reduces only to "
            f"{up}/{down}, which needs a {bank_size}-tap filter bank; "
            "resample such files offline (e.g. with sox)"
        )
    filters, pad = _polyphase_filter_bank(
        up, down, orig_sr, new_sr, lowpass_filter_width, rolloff, beta
    )

    batch = waveform.reshape(-1, 1, waveform.shape[-1])  # [B, 1, N]
    num_in = batch.shape[-1]
    num_out = -(-num_in * up // down)  # ceil(N * up / down)
    num_blocks = -(-num_out // up)  # conv outputs needed, each gives `up` samples
    kernel = filters.shape[-1]
    # Enough zeros on the right for the last block's full kernel.
    right = max(0, (num_blocks - 1) * down + kernel - (num_in + pad))
    padded = F.pad(batch, (pad, right))
    blocks = F.conv1d(padded, filters.to(batch.dtype).to(batch.device), stride=down)
    blocks = blocks[..., :num_blocks]  # [B, up, blocks]
    # Interleave the phases: sample j * up + i comes from block j, phase i.
    out = blocks.transpose(1, 2).reshape(batch.shape[0], -1)[:, :num_out]
    return out.reshape(*waveform.shape[:-1], num_out)


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------


def _declared_wav_frames(path: str) -> Optional[int]:
    """Frame count promised by a RIFF/WAVE header, or None if it cannot tell.

    libsndfile quietly shortens a WAV whose data chunk is cut off (``info().frames``
    then already counts only the frames present), so truncation has to be
    detected from the header's own ``data`` chunk size. Streaming writers that
    leave the size unknown (0 or 0xFFFFFFFF) and RF64 files give None.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return None
                chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if chunk_id == b"fmt ":
                    body = handle.read(size)
                    if len(body) < 14:
                        return None
                    block_align = struct.unpack("<H", body[12:14])[0]
                    if size % 2:
                        handle.seek(1, os.SEEK_CUR)  # chunks are word aligned
                elif chunk_id == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    handle.seek(size + (size % 2), os.SEEK_CUR)
    except OSError:
        return None


def _read_info(path: str):
    """``soundfile.info`` with libsndfile failures turned into AudioError."""
    try:
        return sf.info(path)
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(
            f"cannot read audio file {path}: {err}; check that it is a complete "
            "audio file in a format libsndfile reads (wav, flac, ogg, ...) and "
            "re-encode or remove it"
        ) from err


def _decode(path: str, expected_frames: int) -> np.ndarray:
    """Decode all frames as float32 ``[frames, channels]``; refuse short reads."""
    declared = _declared_wav_frames(path)
    if declared is not None and declared > expected_frames:
        raise AudioError(
            f"audio file {path} is truncated: its header promises {declared} "
            f"frames but only {expected_frames} are present; re-create or "
            "remove the file"
        )
    try:
        data, _ = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(
            f"cannot decode audio file {path}: {err}; the file is probably "
            "truncated or corrupt, re-encode or remove it"
        ) from err
    if data.shape[0] != expected_frames:
        raise AudioError(
            f"audio file {path} is truncated: decoded {data.shape[0]} frames, "
            f"its header says {expected_frames}; re-create or remove the file"
        )
    return data


def load_audio(
    path: PathLike,
    sample_rate: int = 16000,
    resample: bool = False,
    min_samples: int = 400,
) -> torch.Tensor:
    """Read one audio file as a mono float32 waveform.

    Args:
        path: any file libsndfile reads (wav, flac, ogg, ...).
        sample_rate: the rate the caller needs, in Hz.
        resample: if False a file at another rate is refused; if True it is
            converted with :func:`resample_waveform`.
        min_samples: the fewest samples accepted after resampling.

    Returns:
        ``[N]`` float32 tensor at ``sample_rate``, the average of the channels.

    Raises:
        AudioError: missing, unreadable, empty or truncated file; wrong sample
            rate with ``resample=False``; NaN/Inf samples; silence; too short.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(
            f"audio file {path} does not exist; check the manifest root and the "
            "relative paths in it"
        )
    info = _read_info(path)
    if info.frames <= 0:
        raise AudioError(
            f"audio file {path} contains no audio frames (empty or truncated); "
            "re-create it or remove it from the manifest"
        )
    if info.samplerate != sample_rate and not resample:
        raise AudioError(
            f"file {path} is {info.samplerate} Hz, expected {sample_rate} Hz; "
            f"resample it (e.g. sox in.wav -r {sample_rate} out.wav), or resample on "
            "load: task.resample=true in training, --resample in uamix-embed, "
            "uamix-fewshot and uamix-probe"
        )
    data = _decode(path, info.frames)
    # Average rather than pick a channel, so that no source is lost.
    waveform = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)))
    # Check NaN/Inf before resampling, since the filter would smear them over
    # their neighbours and the message would then report too many samples.
    if not bool(torch.isfinite(waveform).all()):
        validate_waveform(waveform, f"audio file {path}", min_samples=0)
    if info.samplerate != sample_rate:
        try:
            waveform = resample_waveform(waveform, info.samplerate, sample_rate)
        except ValueError as err:  # e.g. a rate pair that barely reduces
            raise AudioError(f"audio file {path}: {err}") from err
    validate_waveform(waveform, f"audio file {path}", min_samples=min_samples)
    return waveform.to(torch.float32)
