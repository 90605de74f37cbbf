"""Reading one audio file into a mono float32 waveform.

The loader decodes with ``soundfile`` (libsndfile: wav, flac, ogg, ...), mixes the
channels to mono, checks or converts the sample rate and refuses waveforms the
feature extractor cannot use (NaN/Inf, silence, shorter than one 25 ms frame).
Every problem is raised as :class:`AudioError` naming the file and the fix.
:func:`load_audio` can also return one part of a file (``start``, ``num_samples``);
for long files it then decodes only that part (see its docstring for what is still
checked), and :func:`audio_length` gives the length without decoding.

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
    "audio_length",
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


def _check_finite(waveform: torch.Tensor, name: str) -> None:
    bad = int((~torch.isfinite(waveform)).sum())
    if bad:
        raise AudioError(
            f"{name}: {bad} sample(s) are NaN or Inf; the file is corrupt, "
            "re-export it or remove it from the manifest"
        )


def _check_length(num_samples: int, name: str, min_samples: int) -> None:
    if num_samples < min_samples:
        raise AudioError(
            f"{name}: only {num_samples} samples, fewer than the {min_samples} "
            "needed (shorter than one 25 ms frame, 400 samples at 16 kHz); "
            "remove it from the manifest or pad it with silence"
        )


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
    _check_finite(waveform, name)
    _check_length(waveform.shape[-1], name, min_samples)
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

    up, down, filters, pad = _resampler(
        orig_sr, new_sr, lowpass_filter_width, rolloff, beta
    )
    batch = waveform.reshape(-1, 1, waveform.shape[-1])  # [B, 1, N]
    num_in = batch.shape[-1]
    num_out = -(-num_in * up // down)  # ceil(N * up / down)
    num_blocks = -(-num_out // up)  # conv outputs needed, each gives `up` samples
    kernel = filters.shape[-1]
    # Enough zeros on the right for the last block's full kernel.
    right = max(0, (num_blocks - 1) * down + kernel - (num_in + pad))
    padded = F.pad(batch, (pad, right))
    out = _polyphase(padded, filters, up, down, num_blocks)[:, :num_out]
    return out.reshape(*waveform.shape[:-1], num_out)


def _resampler(
    orig_sr: int,
    new_sr: int,
    width: int = DEFAULT_LOWPASS_WIDTH,
    rolloff: float = DEFAULT_ROLLOFF,
    beta: float = DEFAULT_KAISER_BETA,
):
    """(up, down, filter bank, pad) for ``orig_sr -> new_sr``; ValueError if too large."""
    gcd = math.gcd(orig_sr, new_sr)
    up, down = new_sr // gcd, orig_sr // gcd
    # Check the size before building: a ratio that barely reduces needs a huge bank.
    _, _, pad = _filter_geometry(orig_sr, new_sr, width, rolloff)
    bank_size = up * (down + 2 * pad)
    if bank_size > _MAX_FILTER_BANK_ELEMENTS:
        raise ValueError(
            f"resample_waveform: {orig_sr} Hz -> {new_sr} Hz reduces only to "
            f"{up}/{down}, which needs a {bank_size}-tap filter bank; "
            "resample such files offline (e.g. with sox)"
        )
    filters, pad = _polyphase_filter_bank(up, down, orig_sr, new_sr, width, rolloff, beta)
    return up, down, filters, pad


def _polyphase(padded: torch.Tensor, filters: torch.Tensor, up: int, down: int,
               num_blocks: int) -> torch.Tensor:
    """Run the filter bank over ``padded`` ``[B, 1, L]``: ``[B, num_blocks * up]``.

    Block ``j`` reads ``padded[..., j * down : j * down + kernel]`` and gives output
    samples ``j * up ... j * up + up - 1`` (interleaved phases).
    """
    blocks = F.conv1d(padded, filters.to(padded.dtype).to(padded.device), stride=down)
    blocks = blocks[..., :num_blocks]  # [B, up, blocks]
    # Interleave the phases: sample j * up + i comes from block j, phase i.
    return blocks.transpose(1, 2).reshape(padded.shape[0], -1)


def resampled_length(num_samples: int, orig_sr: int, new_sr: int) -> int:
    """Samples :func:`resample_waveform` returns for ``num_samples`` input samples."""
    gcd = math.gcd(orig_sr, new_sr)
    return -(-num_samples * (new_sr // gcd) // (orig_sr // gcd))


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


def _open(path: str, sample_rate: int, resample: bool):
    """The file's ``soundfile`` info, after the checks that need no decoding."""
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
    return info


def _length_at(info, sample_rate: int) -> int:
    """Samples of the whole file at ``sample_rate``."""
    if info.samplerate == sample_rate:
        return info.frames
    return resampled_length(info.frames, info.samplerate, sample_rate)


def _check_declared_frames(path: str, frames: int) -> None:
    """Refuse a WAV whose header promises more frames than libsndfile found."""
    declared = _declared_wav_frames(path)
    if declared is not None and declared > frames:
        raise AudioError(
            f"audio file {path} is truncated: its header promises {declared} "
            f"frames but only {frames} are present; re-create or "
            "remove the file"
        )


def _read_frames(path: str, **where) -> np.ndarray:
    """``sf.read`` as float32 ``[frames, channels]``, failures as AudioError."""
    try:
        data, _ = sf.read(path, dtype="float32", always_2d=True, **where)
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(
            f"cannot decode audio file {path}: {err}; the file is probably "
            "truncated or corrupt, re-encode or remove it"
        ) from err
    return data


def _decode(path: str, expected_frames: int) -> np.ndarray:
    """Decode all frames as float32 ``[frames, channels]``; refuse short reads."""
    _check_declared_frames(path, expected_frames)
    data = _read_frames(path)
    if data.shape[0] != expected_frames:
        raise AudioError(
            f"audio file {path} is truncated: decoded {data.shape[0]} frames, "
            f"its header says {expected_frames}; re-create or remove the file"
        )
    return data


def _decode_part(path: str, total_frames: int, start: int, stop: int) -> np.ndarray:
    """Decode only frames ``[start, stop)`` as float32 ``[frames, channels]``.

    Truncation is still detected: the WAV header's promise is compared with the
    frames present, and the file's last frame is read too (a cut-off FLAC keeps
    announcing its full length, and only reading near its end fails).
    """
    _check_declared_frames(path, total_frames)
    data = _read_frames(path, start=start, stop=stop)
    last = _read_frames(path, start=total_frames - 1)
    if data.shape[0] != stop - start or last.shape[0] != 1:
        raise AudioError(
            f"audio file {path} is truncated: frames {start}..{stop} or its last "
            f"frame ({total_frames - 1}) could not be read; re-create or remove "
            "the file"
        )
    return data


def _mono(data: np.ndarray) -> torch.Tensor:
    """``[frames, channels]`` -> ``[frames]`` float32, the average of the channels."""
    # Average rather than pick a channel, so that no source is lost.
    return torch.from_numpy(np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)))


def _resample_or_refuse(waveform: torch.Tensor, path: str, orig_sr: int, new_sr: int):
    try:
        return resample_waveform(waveform, orig_sr, new_sr)
    except ValueError as err:  # e.g. a rate pair that barely reduces
        raise AudioError(f"audio file {path}: {err}") from err


# Files up to this long (at their own rate) are always decoded whole and checked as a
# whole. Longer ones are decoded only where a part of them is asked for.
WHOLE_FILE_SECONDS = 60.0
# Formats in which libsndfile seeks to the exact sample (uncompressed PCM and FLAC), so
# that a part read after a seek equals the same part of the whole decode. Lossy
# formats (OGG, MP3, ...) are always decoded whole: libmpg123 seeks only approximately.
_EXACT_SEEK_FORMATS = frozenset({"WAV", "WAVEX", "W64", "RF64", "AIFF", "AU", "CAF", "FLAC"})


def audio_length(path: PathLike, sample_rate: int = 16000, resample: bool = False) -> int:
    """Samples :func:`load_audio` returns for the whole file, read from the header.

    Raises:
        AudioError: missing, unreadable or empty file; wrong sample rate with
            ``resample=False``.
    """
    path = os.fspath(path)
    return _length_at(_open(path, sample_rate, resample), sample_rate)


def load_audio(
    path: PathLike,
    sample_rate: int = 16000,
    resample: bool = False,
    min_samples: int = 400,
    start: int = 0,
    num_samples: Optional[int] = None,
    whole_file_seconds: float = WHOLE_FILE_SECONDS,
) -> torch.Tensor:
    """Read one audio file, or one part of it, as a mono float32 waveform.

    The result is always ``whole[start:start + num_samples]``, where ``whole`` is the
    entire file at ``sample_rate``, with the same samples bit for bit. How it is read:

    * A file of at most ``whole_file_seconds`` (60 s), a lossy file (OGG, MP3, ...),
      or a request for the whole file: decoded whole, every check made on the whole
      file, then sliced.
    * A longer WAV/AIFF/FLAC-like file of which only a part is asked for: only that
      part is decoded (memory and time bounded by the part, not the file). At the
      file's own rate the part is read exactly. With resampling the part is read with
      a margin of the resampler's filter half-length (:func:`resample_waveform`'s
      ``pad``) on each side and the same filter blocks are computed as for the whole
      file, so the result equals slicing the whole resampled file (the tests check it
      bit for bit on this CPU build of torch; conv1d computes each output from the
      same taps and inputs).

    Checks on such a partial read: missing/empty/unreadable file, sample rate,
    truncation (the WAV header's frame count; the part and the file's last frame must
    decode), too short (from the header's length), NaN/Inf in the frames read.
    Silence is *not* checked: a silent stretch of a recording is a valid crop, and
    telling a silent 30-minute file would need decoding all of it. A file that is
    silent throughout is refused only when it is decoded whole.

    Args:
        path: any file libsndfile reads (wav, flac, ogg, ...).
        sample_rate: the rate the caller needs, in Hz.
        resample: if False a file at another rate is refused; if True it is
            converted with :func:`resample_waveform`.
        min_samples: the fewest samples the whole file must have after resampling.
        start: first sample of the part wanted, at ``sample_rate`` (0 <= start).
        num_samples: length of the part wanted (None: to the end); the part ends
            early at the end of the file, as a slice does.
        whole_file_seconds: files up to this duration are always decoded whole.

    Returns:
        ``[M]`` float32 tensor at ``sample_rate``, the average of the channels.

    Raises:
        AudioError: missing, unreadable, empty or truncated file; wrong sample
            rate with ``resample=False``; NaN/Inf samples; silence (whole reads);
            too short.
        ValueError: negative ``start`` or ``num_samples``.
    """
    if start < 0 or (num_samples is not None and num_samples < 0):
        raise ValueError(
            f"load_audio: start ({start}) and num_samples ({num_samples}) must not "
            "be negative"
        )
    path = os.fspath(path)
    info = _open(path, sample_rate, resample)
    length = _length_at(info, sample_rate)
    stop = length if num_samples is None else min(length, start + num_samples)
    stop = max(stop, start)
    part_only = start > 0 or stop < length
    if (
        part_only
        and info.format in _EXACT_SEEK_FORMATS
        and info.frames > whole_file_seconds * info.samplerate
    ):
        return _load_part(path, info, sample_rate, min_samples, start, stop, length)
    waveform = _load_whole(path, info, sample_rate, min_samples)
    # A copy, so that the caller does not keep the whole file alive through a view.
    return waveform[start:stop].clone() if part_only else waveform


def _load_whole(path: str, info, sample_rate: int, min_samples: int) -> torch.Tensor:
    """Decode the whole file, check it as a whole, resample it if needed."""
    waveform = _mono(_decode(path, info.frames))
    # Check NaN/Inf before resampling, since the filter would smear them over
    # their neighbours and the message would then report too many samples.
    _check_finite(waveform, f"audio file {path}")
    if info.samplerate != sample_rate:
        waveform = _resample_or_refuse(waveform, path, info.samplerate, sample_rate)
    validate_waveform(waveform, f"audio file {path}", min_samples=min_samples)
    return waveform.to(torch.float32)


def _load_part(path: str, info, sample_rate: int, min_samples: int, start: int,
               stop: int, length: int) -> torch.Tensor:
    """Samples ``[start, stop)`` at ``sample_rate``, decoding only what they need."""
    name = f"audio file {path}"
    _check_length(length, name, min_samples)
    if stop == start:
        return torch.zeros(0)
    if info.samplerate == sample_rate:
        waveform = _mono(_decode_part(path, info.frames, start, stop))
        _check_finite(waveform, name)
        return waveform
    try:
        up, down, filters, pad = _resampler(info.samplerate, sample_rate)
    except ValueError as err:
        raise AudioError(f"{name}: {err}") from err
    # Output sample j * up + i comes from block j, which reads input samples
    # j * down - pad ... j * down - pad + kernel - 1 (zeros outside the file).
    first, last = start // up, (stop - 1) // up
    lo = first * down - pad
    hi = last * down - pad + filters.shape[-1]
    read_lo, read_hi = max(lo, 0), min(hi, info.frames)
    source = _mono(_decode_part(path, info.frames, read_lo, read_hi))
    _check_finite(source, name)
    padded = F.pad(source.view(1, 1, -1), (read_lo - lo, hi - read_hi))
    out = _polyphase(padded, filters, up, down, last - first + 1)[0]
    offset = start - first * up
    return out[offset:offset + stop - start].clone()
