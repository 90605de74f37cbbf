"""Tests of uamix_fairseq.audio.decode: loading, validity checks and resampling."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from uamix_fairseq.audio.decode import (AudioError, _resampler, audio_length, load_audio,
                                 resample_waveform, validate_waveform)


def _sine(freq, sample_rate, num_samples, amplitude=0.5, phase=0.3):
    return amplitude * np.sin(2 * np.pi * freq * np.arange(num_samples) / sample_rate + phase)


def _write(path, data, sample_rate=16000, subtype="PCM_16"):
    sf.write(str(path), data, sample_rate, subtype=subtype)
    return str(path)


# ---------------------------------------------------------------------------
# load_audio: good files
# ---------------------------------------------------------------------------


def test_load_pcm16_matches_written_samples(tmp_path):
    data = _sine(440, 16000, 8000)
    path = _write(tmp_path / "a.wav", data)
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.shape == (8000,)
    # PCM_16 quantisation step is 1/32768.
    assert np.abs(wav.numpy() - data).max() <= 1.0 / 32768


def test_load_accepts_pathlib_and_flac(tmp_path):
    data = _sine(300, 16000, 4000)
    path = tmp_path / "a.flac"
    sf.write(str(path), data, 16000)
    assert load_audio(path).shape == (4000,)


def test_stereo_is_averaged_to_mono(tmp_path):
    left = _sine(440, 16000, 4000, amplitude=0.6)
    right = _sine(1000, 16000, 4000, amplitude=0.2)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    path = _write(tmp_path / "stereo.wav", stereo, subtype="FLOAT")
    wav = load_audio(path)
    expected = (stereo[:, 0] + stereo[:, 1]) / 2
    assert wav.shape == (4000,)
    np.testing.assert_allclose(wav.numpy(), expected, atol=1e-7)


# ---------------------------------------------------------------------------
# load_audio: bad files (each message must name the file)
# ---------------------------------------------------------------------------


def test_missing_file_is_refused(tmp_path):
    path = str(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="does not exist") as err:
        load_audio(path)
    assert path in str(err.value)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="cannot read audio file") as err:
        load_audio(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_truncated_wav_is_refused(tmp_path):
    full = _write(tmp_path / "full.wav", _sine(440, 16000, 16000))
    raw = open(full, "rb").read()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(raw[: 44 + 2 * 6000])  # header + 6000 of 16000 frames
    # What makes this case tricky: libsndfile does not complain, it quietly
    # reports (and decodes) only the frames present, so the header is needed.
    assert sf.info(str(cut)).frames == 6000
    with pytest.raises(AudioError, match="truncated") as err:
        load_audio(cut)
    assert str(cut) in str(err.value) and "16000" in str(err.value)


def test_header_only_wav_is_refused(tmp_path):
    full = _write(tmp_path / "full.wav", _sine(440, 16000, 1000))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(open(full, "rb").read()[:44])
    with pytest.raises(AudioError, match="no audio frames") as err:
        load_audio(empty)
    assert str(empty) in str(err.value)


def test_truncated_flac_is_refused(tmp_path):
    full = tmp_path / "full.flac"
    sf.write(str(full), np.random.default_rng(0).standard_normal(16000) * 0.1, 16000)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(AudioError) as err:
        load_audio(cut)
    assert str(cut) in str(err.value)


def test_wrong_sample_rate_is_refused(tmp_path):
    path = _write(tmp_path / "cd.wav", _sine(1000, 44100, 44100), sample_rate=44100)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    message = str(err.value)
    assert path in message
    assert "44100 Hz, expected 16000 Hz" in message
    assert "sox" in message and "task.resample=true" in message and "--resample" in message


def test_wrong_sample_rate_is_resampled(tmp_path):
    path = _write(tmp_path / "cd.wav", _sine(1000, 44100, 44100), sample_rate=44100)
    wav = load_audio(path, resample=True)
    assert wav.dtype == torch.float32
    assert wav.shape == (16000,)  # one second at the new rate
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    freqs = np.fft.rfftfreq(16000, d=1 / 16000)
    assert freqs[spectrum.argmax()] == pytest.approx(1000.0)
    # Amplitude and phase survive too: compare with the sine sampled at 16 kHz
    # (the tolerance covers the 16-bit quantisation of the file).
    expected = _sine(1000, 16000, 16000)
    assert np.abs(wav.numpy() - expected)[800:-800].max() < 1e-3


def test_too_short_clip_is_refused(tmp_path):
    path = _write(tmp_path / "short.wav", _sine(440, 16000, 399))
    with pytest.raises(AudioError, match="shorter than one 25 ms frame") as err:
        load_audio(path)
    assert path in str(err.value)
    assert load_audio(_write(tmp_path / "ok.wav", _sine(440, 16000, 400))).shape == (400,)


def test_too_short_after_resampling_is_refused(tmp_path):
    # 1000 samples at 44.1 kHz become 363 at 16 kHz: under one frame.
    path = _write(tmp_path / "short44.wav", _sine(440, 44100, 1000), sample_rate=44100)
    with pytest.raises(AudioError, match="363 samples") as err:
        load_audio(path, resample=True)
    assert path in str(err.value)


def test_silent_clip_is_refused(tmp_path):
    path = _write(tmp_path / "silence.wav", np.zeros(8000))
    with pytest.raises(AudioError, match="silent") as err:
        load_audio(path)
    assert path in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_samples_are_refused(tmp_path, bad):
    data = _sine(440, 16000, 8000).astype(np.float32)
    data[1234] = bad
    path = _write(tmp_path / "bad.wav", data, subtype="FLOAT")
    with pytest.raises(AudioError, match="1 sample\\(s\\) are NaN or Inf") as err:
        load_audio(path)
    assert path in str(err.value)


def test_nan_is_reported_before_resampling(tmp_path):
    data = _sine(440, 44100, 8000).astype(np.float32)
    data[100] = np.nan
    path = _write(tmp_path / "bad44.wav", data, sample_rate=44100, subtype="FLOAT")
    with pytest.raises(AudioError, match="1 sample\\(s\\)"):
        load_audio(path, resample=True)


# ---------------------------------------------------------------------------
# validate_waveform
# ---------------------------------------------------------------------------


def test_validate_accepts_good_waveforms():
    validate_waveform(torch.randn(400), "x")
    validate_waveform(torch.randn(3, 1000), "batch")


@pytest.mark.parametrize(
    "waveform, pattern",
    [
        (torch.tensor([0.1, float("nan")] * 300), "NaN or Inf"),
        (torch.zeros(1000), "silent"),
        (torch.randn(100), "shorter than one 25 ms frame"),
        (torch.randn(2, 3, 500), "shape"),
        (torch.ones(500, dtype=torch.int16), "floating-point"),
    ],
)
def test_validate_names_the_waveform(waveform, pattern):
    with pytest.raises(AudioError, match=pattern) as err:
        validate_waveform(waveform, "clip-xyz")
    assert "clip-xyz" in str(err.value)


# ---------------------------------------------------------------------------
# resample_waveform
# ---------------------------------------------------------------------------

# A band-limited test signal: sines well below the 8 kHz Nyquist of 16 kHz.
_COMPONENTS = [(0.4, 440.0, 0.1), (0.3, 1000.0, 1.0), (0.2, 3000.0, 2.0), (0.1, 6000.0, 0.5)]


def _mixture(sample_rate, num_samples):
    t = np.arange(num_samples) / sample_rate
    return sum(a * np.sin(2 * np.pi * f * t + p) for a, f, p in _COMPONENTS)


def test_equal_rates_are_identity():
    x = torch.randn(2, 1234)
    assert resample_waveform(x, 16000, 16000) is x


@pytest.mark.parametrize(
    "orig, new, num",
    [(o, n, num) for o, n in [(44100, 16000), (16000, 44100), (48000, 16000), (8000, 16000), (22050, 16000)]
     for num in (1, 399, 1000, 4410)]
    + [(16000, 12345, 1001)],  # a ratio that barely reduces
)
def test_output_length_is_ceil(orig, new, num):
    out = resample_waveform(torch.randn(num), orig, new)
    assert out.shape == (math.ceil(num * new / orig),)


@pytest.mark.parametrize("orig, new", [(44100, 16000), (16000, 44100), (22050, 16000), (48000, 16000)])
def test_band_limited_signal_matches_analytic_and_scipy(orig, new):
    """Both our resampler and scipy's resample_poly reproduce the sines away from the edges."""
    x = _mixture(orig, orig)  # one second
    ours = resample_waveform(torch.tensor(x, dtype=torch.float32), orig, new).double().numpy()
    g = math.gcd(orig, new)
    reference = resample_poly(x, new // g, orig // g)
    assert ours.shape == reference.shape
    analytic = _mixture(new, ours.size)
    inner = slice(int(0.05 * new), -int(0.05 * new))
    # The 6 kHz component sits in the flat pass band only for 16 kHz targets or sources.
    assert np.abs(ours - analytic)[inner].max() < 1e-3
    assert np.abs(reference - analytic)[inner].max() < 1.5e-3
    assert np.abs(ours - reference)[inner].max() < 2e-3


def test_batched_rows_equal_single_rows():
    x = torch.randn(3, 2000, dtype=torch.float64)
    batched = resample_waveform(x, 44100, 16000)
    for row in range(3):
        torch.testing.assert_close(batched[row], resample_waveform(x[row], 44100, 16000))


@pytest.mark.parametrize("freq", [8300.0, 9000.0, 12000.0, 20000.0])
def test_above_new_nyquist_is_attenuated_40db(freq):
    x = torch.tensor(_sine(freq, 44100, 44100, amplitude=1.0))
    out = resample_waveform(x, 44100, 16000).numpy()
    leaked = np.abs(out[800:-800]).max()
    assert 20 * np.log10(leaked) < -40.0


def test_dc_gain_is_one_and_dtype_kept():
    out = resample_waveform(torch.full((4410,), 0.25), 44100, 16000)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out[200:-200].numpy(), 0.25, atol=1e-5)


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="positive integer"):
        resample_waveform(torch.randn(100), 0, 16000)
    with pytest.raises(ValueError, match="positive integer"):
        resample_waveform(torch.randn(100), 44100.5, 16000)


def test_unreasonable_rate_pair_is_refused_before_building(tmp_path):
    with pytest.raises(ValueError, match="reduces only to 16001/44100"):
        resample_waveform(torch.randn(1000), 44100, 16001)
    path = _write(tmp_path / "odd.wav", _sine(440, 44100, 4410), sample_rate=44100)
    with pytest.raises(AudioError, match="sox") as err:
        load_audio(path, sample_rate=16001, resample=True)
    assert path in str(err.value)


# ---------------------------------------------------------------------------
# load_audio(start=, num_samples=): parts of long files
# ---------------------------------------------------------------------------
# `whole_file_seconds=0.5` makes these few-second files "long", so that the
# partial-read path runs without writing minutes of audio.


def _noise_file(path, frames, sample_rate=16000, channels=1, subtype="PCM_16", seed=0):
    rng = np.random.default_rng(seed)
    data = (0.2 * rng.standard_normal((frames, channels))).astype(np.float32)
    sf.write(str(path), data, sample_rate, subtype=subtype)
    return str(path)


def _count_reads(monkeypatch):
    """Record (start, stop) of every sf.read call; returns the list."""
    calls = []
    real_read = sf.read

    def spy(file, frames=-1, start=0, stop=None, **kw):
        calls.append((start, stop))
        return real_read(file, frames=frames, start=start, stop=stop, **kw)

    monkeypatch.setattr(sf, "read", spy)
    return calls


@pytest.mark.parametrize("name,channels,subtype", [
    ("pcm16.wav", 1, "PCM_16"), ("float.wav", 2, "FLOAT"), ("pcm24.flac", 2, "PCM_24"),
    ("pcm16.aiff", 1, "PCM_16")])
def test_part_of_a_long_file_equals_whole_read_then_slice(tmp_path, name, channels, subtype):
    frames, part = 3 * 16000 + 123, 20480
    path = _noise_file(tmp_path / name, frames, channels=channels, subtype=subtype)
    # The old way, independently: decode everything, average channels, slice.
    whole = torch.from_numpy(sf.read(path, dtype="float32", always_2d=True)[0]
                             .mean(axis=1, dtype=np.float32))
    assert torch.equal(load_audio(path), whole)
    for start in (0, 1, 4095, 12345, frames - part - 1, frames - part, frames - 100):
        got = load_audio(path, start=start, num_samples=part, whole_file_seconds=0.5)
        assert got.dtype == torch.float32
        assert torch.equal(got, whole[start:start + part]), start


def test_part_read_decodes_only_the_part_and_the_last_frame(tmp_path, monkeypatch):
    # 61 s: longer than the default whole_file_seconds (60).
    frames = 61 * 16000
    path = _noise_file(tmp_path / "long.wav", frames)
    expected = load_audio(path)[700_000:720_480]
    calls = _count_reads(monkeypatch)
    got = load_audio(path, start=700_000, num_samples=20480)
    assert torch.equal(got, expected)
    assert calls == [(700_000, 720_480), (frames - 1, None)]
    # A file up to 60 s, or a request for all of it, is decoded whole as before.
    calls.clear()
    short = _noise_file(tmp_path / "short.wav", 60 * 16000)
    load_audio(short, start=5, num_samples=100)
    load_audio(path, start=0, num_samples=None)
    assert calls == [(0, None), (0, None)]


@pytest.mark.parametrize("orig_sr", [44100, 22050, 8000])
def test_resampled_part_equals_whole_resample_then_slice(tmp_path, monkeypatch, orig_sr):
    frames, part = 3 * orig_sr + 17, 20480
    path = _noise_file(tmp_path / "r.wav", frames, sample_rate=orig_sr, channels=2)
    whole = load_audio(path, resample=True)
    length = whole.shape[0]
    assert audio_length(path, resample=True) == length
    calls = _count_reads(monkeypatch)
    for start in (0, 3, 7777, length - part - 5, length - part):
        got = load_audio(path, resample=True, start=start, num_samples=part,
                         whole_file_seconds=0.5)
        # The same filter over the same samples; a convolution over a shorter input
        # may sum in another order on some CPUs (measured on an AMD EPYC at 8 kHz:
        # differences up to 1.2e-7 on samples of about 0.5), so equal to float32
        # rounding, not bit for bit.
        torch.testing.assert_close(got, whole[start:start + part], rtol=0, atol=1e-6,
                                   msg=f"start {start}")
    # Each part read only its own frames plus the filter's margin (the half-length
    # `pad` and at most one filter block of `down` frames on each side), and the last
    # frame.
    up, down, _, pad = _resampler(orig_sr, 16000)
    assert len(calls) == 10
    for (lo, hi), (last, _) in zip(calls[::2], calls[1::2]):
        assert hi - lo <= math.ceil(part * down / up) + 2 * (down + pad)
        assert last == frames - 1


def test_part_read_still_refuses_truncated_files(tmp_path):
    full = tmp_path / "full.flac"
    _noise_file(full, 4 * 16000)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    # The part lies in the frames present; the file's end does not.
    with pytest.raises(AudioError, match="truncated|corrupt") as err:
        load_audio(cut, start=100, num_samples=4000, whole_file_seconds=0.5)
    assert str(cut) in str(err.value)
    wav = tmp_path / "full.wav"
    _noise_file(wav, 4 * 16000)
    cut_wav = tmp_path / "cut.wav"
    cut_wav.write_bytes(wav.read_bytes()[: 44 + 2 * 30000])
    with pytest.raises(AudioError, match="truncated") as err:
        load_audio(cut_wav, start=100, num_samples=4000, whole_file_seconds=0.5)
    assert str(cut_wav) in str(err.value) and "64000" in str(err.value)


def test_part_read_checks_nan_in_the_part_and_not_silence(tmp_path):
    data = np.zeros(4 * 16000, dtype=np.float32)
    data[40000:] = 0.1
    data[50000] = np.nan
    path = _write(tmp_path / "mixed.wav", data, subtype="FLOAT")
    with pytest.raises(AudioError, match="1 sample\\(s\\) are NaN") as err:
        load_audio(path, start=45000, num_samples=8000, whole_file_seconds=0.5)
    assert path in str(err.value)
    # A silent stretch of a long recording is a valid crop (the whole file is not
    # silent, and is refused as a whole only for its NaN).
    silent = load_audio(path, start=1000, num_samples=8000, whole_file_seconds=0.5)
    assert silent.shape == (8000,) and not bool(silent.any())
    with pytest.raises(AudioError, match="NaN"):
        load_audio(path, start=1000, num_samples=8000)  # short file: whole-file checks
    with pytest.raises(ValueError, match="start"):
        load_audio(path, start=-1)
