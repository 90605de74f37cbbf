"""Tests for uamix_fairseq.audio.features.

The reference is kaldi-native-fbank (knf), an independent C++ re-implementation of
Kaldi's fbank (a test-only dependency). knf refuses 128 mel bins at 16 kHz (one
triangle would contain no FFT bin), so it is compared at 80 and 64 bins at 16 kHz and
at 128 bins at 44.1 and 48 kHz; the 128-bin/16 kHz case AudioMAE uses is covered by
the same code path plus the empty-bin and hand checks below.
"""

import math

import numpy as np
import pytest
import torch

from uamix_fairseq.audio.features import (
    NORM_STATS,
    _cached_bank,
    compute_fbank,
    denormalize_fbank,
    mel_filterbank,
    normalize_fbank,
    num_frames,
    pad_or_crop,
)

LOG_EPS = math.log(torch.finfo(torch.float32).eps)


# --------------------------------------------------------------------------------------
# Deterministic test signals (float32 in [-1, 1], mean removed, peak 0.5)
# --------------------------------------------------------------------------------------
def _finish(x: np.ndarray) -> torch.Tensor:
    x = x - x.mean()
    peak = np.abs(x).max()
    if peak > 0:
        x = 0.5 * x / peak
    x = torch.from_numpy(x.astype(np.float32))
    return x - x.mean()


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)
    return y[: len(x)]


def speech_like(sr: int, seconds: float = 1.0) -> torch.Tensor:
    """Glottal pulse train (f0 gliding 95-145 Hz) through three formant resonators,
    with syllable-rate amplitude modulation, a pause and a fricative burst."""
    n = int(sr * seconds)
    t = np.arange(n) / sr
    f0 = 120.0 + 25.0 * np.sin(2 * np.pi * 3.0 * t)
    phase = np.cumsum(f0 / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # 1 at the start of each period
    width = int(0.003 * sr)  # 3 ms raised-cosine glottal pulse
    glottal = _fft_convolve(pulses, np.hanning(width))
    voiced = glottal
    for freq, bw in ((700.0, 80.0), (1220.0, 90.0), (2600.0, 120.0)):
        r = math.exp(-math.pi * bw / sr)
        theta = 2 * math.pi * freq / sr
        k = np.arange(int(0.05 * sr))
        h = r**k * np.sin(theta * (k + 1)) / math.sin(theta)
        voiced = _fft_convolve(voiced, h)
        voiced /= np.abs(voiced).max()
    syllables = np.sin(np.pi * 4.0 * t) ** 2  # 4 syllables per second, zero between
    syllables[(t > 0.70) & (t < 0.80)] = 0.0  # a pause
    rng = np.random.default_rng(1)
    hiss = np.diff(rng.standard_normal(n + 1))  # high-passed noise
    fricative = np.exp(-(((t - 0.75) / 0.02) ** 2))
    return _finish(voiced * syllables + 0.05 * hiss * fricative)


def music_like(sr: int, seconds: float = 1.0) -> torch.Tensor:
    """A few harmonic notes (8 partials, 1/k amplitudes) with plucked envelopes,
    over a sustained low note."""
    n = int(sr * seconds)
    t = np.arange(n) / sr
    x = np.zeros(n)

    def note(f0, start, dur, amp):
        on = (t >= start) & (t < start + dur)
        tt = t[on] - start
        env = (1 - np.exp(-tt / 0.005)) * np.exp(-tt / 0.15)
        for k in range(1, 9):
            if k * f0 < 0.45 * sr:
                x[on] += amp * env * np.sin(2 * np.pi * k * f0 * tt + 0.3 * k) / k

    for i, f0 in enumerate((220.0, 277.18, 329.63, 440.0)):
        note(f0, 0.25 * i, 0.3, 1.0)
    x += 0.2 * np.sin(2 * np.pi * 110.0 * t) * np.minimum(1.0, t / 0.05)
    return _finish(x)


def white_noise(sr: int, seconds: float = 1.0) -> torch.Tensor:
    rng = np.random.default_rng(2)
    return _finish(rng.standard_normal(int(sr * seconds)))


def pink_noise(sr: int, seconds: float = 1.0) -> torch.Tensor:
    n = int(sr * seconds)
    rng = np.random.default_rng(3)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0.0
    return _finish(np.fft.irfft(spec, n))


def silence(sr: int, seconds: float = 1.0) -> torch.Tensor:
    return torch.zeros(int(sr * seconds))


SIGNALS = {
    "speech": speech_like,
    "music": music_like,
    "white": white_noise,
    "pink": pink_noise,
    "silence": silence,
}


# --------------------------------------------------------------------------------------
# Reference: kaldi-native-fbank
# --------------------------------------------------------------------------------------
def knf_fbank(x: torch.Tensor, sr: int, bins: int) -> np.ndarray:
    """knf configured like AudioMAE's torchaudio call. knf uses the samples as given
    (no int16 rescaling), so it gets the same float waveform in [-1, 1]."""
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    fo = opts.frame_opts
    fo.samp_freq = float(sr)
    fo.frame_length_ms = 25.0
    fo.frame_shift_ms = 10.0
    fo.dither = 0.0
    fo.snip_edges = True
    fo.window_type = "hanning"  # Kaldi's symmetric Hann; knf's "hann" is the periodic one
    fo.preemph_coeff = 0.97
    fo.remove_dc_offset = True
    fo.round_to_power_of_two = True
    opts.mel_opts.num_bins = bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0  # Nyquist
    opts.use_energy = False
    opts.htk_compat = True
    opts.use_log_fbank = True
    opts.use_power = True
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(float(sr), x.numpy().tolist())
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


KNF_SETTINGS = [(16000, 80), (16000, 64), (44100, 128), (48000, 128)]


@pytest.mark.parametrize("sr,bins", KNF_SETTINGS)
@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_matches_kaldi_native_fbank(name, sr, bins):
    x = SIGNALS[name](sr)
    ours = compute_fbank(x, sample_rate=sr, num_mel_bins=bins)
    ref = knf_fbank(x, sr, bins)
    assert ours.dtype == torch.float32
    assert tuple(ours.shape) == ref.shape == (num_frames(len(x), sr), bins)
    diff = np.abs(ours.numpy() - ref)
    assert diff.max() < 1e-3, f"{name} at {sr} Hz / {bins} bins: max |diff| {diff.max()}"
    # The largest differences (up to ~8e-4) sit in bins some 7 decades below the
    # frame's loudest bin, where float32 FFT rounding (in knf as in torch) dominates.
    # Within 8 nats (3.5 decades) of the frame's peak the agreement is much closer.
    strong = ref > ref.max(axis=1, keepdims=True) - 8.0
    assert diff[strong].max(initial=0.0) < 3e-4
    if name == "silence":
        assert torch.all(ours == LOG_EPS)


def test_float64_matches_reference_and_float32():
    x = speech_like(16000)
    y64 = compute_fbank(x.double(), num_mel_bins=80)
    y32 = compute_fbank(x, num_mel_bins=80)
    assert y64.dtype == torch.float64
    assert np.abs(y64.numpy() - knf_fbank(x, 16000, 80)).max() < 1e-3
    assert (y64 - y32.double()).abs().max() < 1e-3


def test_bank_matches_kaldi_native_fbank_including_nyquist_column():
    knf = pytest.importorskip("kaldi_native_fbank")
    for sr, bins in KNF_SETTINGS:
        frame_opts = knf.FrameExtractionOptions(samp_freq=float(sr))
        ref = knf.MelBanks(knf.MelBanksOptions(num_bins=bins, low_freq=20.0, high_freq=0.0), frame_opts)
        ref = ref.get_matrix()  # [bins, nfft/2 + 1]
        nfft = 2 * (ref.shape[1] - 1)
        ours = mel_filterbank(bins, nfft, sr).numpy().T
        assert ours.shape == ref.shape
        # knf builds the bank in float32, we in float64.
        assert np.abs(ours - ref).max() < 5e-5
        assert np.array_equal(ours > 0, ref > 0)
        assert np.all(ours[:, -1] == 0) and np.all(ref[:, -1] == 0)  # Nyquist bin unused


# --------------------------------------------------------------------------------------
# Checks independent of both implementations
# --------------------------------------------------------------------------------------
def _centre_hz(bins: int, sr: float, low=20.0, high=None):
    high = sr / 2 if high is None else high
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(low), mel(high)
    step = (hi - lo) / (bins + 1)
    return np.array([700.0 * (math.exp((lo + (i + 1) * step) / 1127.0) - 1.0) for i in range(bins)])


def test_bank_triangles_peak_at_hand_computed_centres():
    centres = _centre_hz(128, 16000)
    bank = mel_filterbank(128, 512, 16000)  # [257, 128]
    fft_hz = np.arange(257) * 16000 / 512
    for j in range(20, 128):  # triangles wide enough to contain several FFT bins
        peak = fft_hz[int(bank[:, j].argmax())]
        # the largest weight sits on one of the two FFT bins around the centre
        assert abs(peak - centres[j]) <= 31.25, (j, peak, centres[j])
    # the weight of an FFT bin at frequency f in triangle j is 1 - |mel(f) - mel(c)| / step
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    step = (mel(8000) - mel(20)) / 129
    k, j = 100, int(np.argmin(np.abs(centres - fft_hz[100])))
    expected = 1.0 - abs(mel(fft_hz[k]) - mel(centres[j])) / step
    assert float(bank[k, j]) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0, 6000.0])
def test_pure_sine_peaks_in_nearest_triangle(freq):
    sr = 16000
    t = torch.arange(sr // 2, dtype=torch.float64) / sr
    x = (0.5 * torch.sin(2 * math.pi * freq * t)).float()
    fb = compute_fbank(x, num_mel_bins=128)
    centres = _centre_hz(128, sr)
    # Triangles are wider than the window's main lobe here, so the nearest centre wins
    # (up to one neighbour when f sits half way between two centres).
    nearest = int(np.argmin(np.abs(centres - freq)))
    peak = int(fb.mean(0).argmax())
    assert abs(peak - nearest) <= 1, (freq, peak, nearest, centres[peak], centres[nearest])


def test_empty_triangles_sit_exactly_at_the_log_floor():
    sr, nfft, bins = 16000, 512, 128
    # Find, by hand, the triangles that contain no FFT bin strictly inside (left, right).
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(sr / 2)
    step = (hi - lo) / (bins + 1)
    fft_mel = np.array([mel(k * sr / nfft) for k in range(nfft // 2)])
    empty = [j for j in range(bins) if not np.any((fft_mel > lo + j * step) & (fft_mel < lo + (j + 2) * step))]
    assert empty == [3]  # 62.96-93.01 Hz, between the FFT bins at 62.5 and 93.75 Hz
    bank = mel_filterbank(bins, nfft, sr)
    assert torch.nonzero(bank.sum(0) == 0).flatten().tolist() == empty
    # Loud broadband noise: every other bin is well above the floor, the empty ones sit on it.
    for x in (white_noise(sr), pink_noise(sr), speech_like(sr)):
        fb = compute_fbank(x)
        assert torch.all(fb[:, empty] == LOG_EPS)
        others = [j for j in range(bins) if j not in empty]
        assert fb[:, others].mean() > LOG_EPS + 5
    batched = compute_fbank(torch.stack([white_noise(sr), pink_noise(sr)]).double())
    assert torch.all(batched[..., empty] == math.log(torch.finfo(torch.float32).eps))


# --------------------------------------------------------------------------------------
# Shapes, batching, helpers, errors
# --------------------------------------------------------------------------------------
def test_batched_equals_per_clip():
    clips = [speech_like(16000), music_like(16000), pink_noise(16000) + 0.2]
    batch = torch.stack(clips)
    out = compute_fbank(batch)
    assert out.shape == (3, 98, 128)
    for i, clip in enumerate(clips):
        torch.testing.assert_close(out[i], compute_fbank(clip), rtol=0, atol=1e-5)


@pytest.mark.parametrize("block_bytes", [512 * 4 * 7, 512 * 4 * 60, 1 << 40])
def test_cpu_blocking_does_not_change_results(monkeypatch, block_bytes):
    import uamix_fairseq.audio.features as features

    clips = torch.stack([speech_like(16000, 0.3), music_like(16000, 0.3), white_noise(16000, 0.3)])
    expected = compute_fbank(clips)
    assert expected.shape[1] == 28
    # blocks of 7 frames of one clip; of 2 whole clips; everything in one block
    monkeypatch.setattr(features, "_CPU_BLOCK_BYTES", block_bytes)
    torch.testing.assert_close(compute_fbank(clips), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(compute_fbank(clips[1]), expected[1], rtol=0, atol=1e-5)


def test_ten_second_clip_gives_998_frames():
    x = 0.1 * torch.randn(160000, generator=torch.Generator().manual_seed(0))
    fb = compute_fbank(x)
    assert fb.shape == (998, 128)
    assert num_frames(160000) == 998
    assert num_frames(399) == 0 and num_frames(400) == 1 and num_frames(559) == 1 and num_frames(560) == 2


def test_subtract_mean_is_per_row():
    x = white_noise(16000)
    batch = torch.stack([x + 0.3, x - 0.2])
    out = compute_fbank(batch)
    for i in range(2):
        row = batch[i] - batch[i].mean()
        torch.testing.assert_close(out[i], compute_fbank(row, subtract_mean=False), rtol=0, atol=1e-5)
    # The offsets cost float32 bits of x, hence the looser tolerance.
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-3)
    torch.testing.assert_close(out[0], compute_fbank(x), rtol=0, atol=1e-3)


def test_other_float_dtypes_and_strided_input():
    x = speech_like(16000)
    half = compute_fbank(x.half())
    assert half.dtype == torch.float32 and half.shape == (98, 128)
    wide = torch.stack([x, -x], dim=1)  # [N, 2]; .t() is a non-contiguous [2, N]
    # The means over strided memory round differently in the last bit, and 1-ulp changes
    # of the DC-removed samples move the weakest float32 bins (~16 nats below the
    # frame's peak) by a few 1e-4; everything else agrees to float32 precision.
    strided, plain = compute_fbank(wide.t())[0], compute_fbank(x)
    torch.testing.assert_close(strided, plain, rtol=0, atol=1e-3)
    strong = plain > plain.max(dim=1, keepdim=True).values - 8.0
    torch.testing.assert_close(strided[strong], plain[strong], rtol=0, atol=2e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = torch.stack([speech_like(16000), music_like(16000)])
    out = compute_fbank(x.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), compute_fbank(x), rtol=0, atol=1e-3)


def test_cached_bank_is_reused():
    x = white_noise(16000, 0.1)
    compute_fbank(x)
    before = _cached_bank.cache_info().hits
    compute_fbank(x)
    assert _cached_bank.cache_info().hits == before + 1


def test_pad_or_crop():
    fb = torch.randn(998, 128) - 5.0
    padded = pad_or_crop(fb, 1024)
    assert padded.shape == (1024, 128)
    assert torch.equal(padded[:998], fb) and torch.all(padded[998:] == 0)
    cropped = pad_or_crop(fb, 512)
    assert cropped.shape == (512, 128) and torch.equal(cropped, fb[:512])
    assert pad_or_crop(fb, 998) is fb
    batch = torch.randn(2, 100, 64)
    assert pad_or_crop(batch, 128).shape == (2, 128, 64)
    assert torch.all(pad_or_crop(batch, 128)[:, 100:] == 0)
    assert torch.equal(pad_or_crop(batch, 10), batch[:, :10])
    with pytest.raises(ValueError):
        pad_or_crop(fb, 0)
    with pytest.raises(ValueError):
        pad_or_crop(torch.zeros(5), 3)


def test_normalisation_round_trip_and_values():
    mean, std = NORM_STATS["audioset"]
    assert (mean, std) == (-4.2677393, 4.5689974)
    assert NORM_STATS["esc50"] == (-6.6268077, 5.358466)
    assert NORM_STATS["speechcommands"] == (-6.845978, 5.5654526)
    fb = compute_fbank(speech_like(16000)).double()
    norm = normalize_fbank(fb, mean, std)
    torch.testing.assert_close(denormalize_fbank(norm, mean, std), fb, rtol=0, atol=1e-12)
    point = torch.tensor([mean, mean + 2 * std, mean - 4 * std], dtype=torch.float64)
    torch.testing.assert_close(normalize_fbank(point, mean, std), torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        normalize_fbank(fb, mean, 0.0)


def test_too_short_clip_raises():
    with pytest.raises(ValueError, match=r"399 samples.*400"):
        compute_fbank(torch.zeros(399))
    with pytest.raises(ValueError, match=r"10 samples"):
        compute_fbank(torch.zeros(2, 10))
    assert compute_fbank(torch.zeros(400)).shape == (1, 128)


@pytest.mark.parametrize(
    "waveform,kwargs,match",
    [
        (torch.zeros(2, 2, 1000), {}, "shape"),
        (torch.zeros(()), {}, "shape"),
        (torch.zeros(1000, dtype=torch.int16), {}, "float"),
        (torch.tensor([0.0] * 500 + [float("nan")] * 500), {}, "NaN"),
        (torch.tensor([0.0] * 500 + [float("inf")] * 500), {}, "infinite"),
        (torch.zeros(1000), {"sample_rate": 0}, "sample_rate"),
        (torch.zeros(1000), {"sample_rate": -16000}, "sample_rate"),
        (torch.zeros(1000), {"low_freq": 8000.0}, "low_freq"),
        (torch.zeros(1000), {"low_freq": -1.0}, "low_freq"),
        (torch.zeros(1000), {"high_freq": 9000.0}, "high_freq"),
        (torch.zeros(1000), {"high_freq": -8000.0}, "high_freq"),
        (torch.zeros(1000), {"low_freq": 4000.0, "high_freq": 3000.0}, "low_freq"),
        (torch.zeros(1000), {"num_mel_bins": 0}, "num_mel_bins"),
        (torch.zeros(1000), {"preemphasis": 1.5}, "preemphasis"),
        (torch.zeros(1000, requires_grad=True), {}, "differentiable"),
    ],
)
def test_bad_arguments_raise_value_error(waveform, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_fbank(waveform, **kwargs)
