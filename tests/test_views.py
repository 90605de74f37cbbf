import math

import pytest
import torch

from uamix_fairseq.modules.views import ViewConfig, augment, random_gain, spec_augment, time_roll, two_views


def _batch():
    fbank = torch.randn(3, 20, 16) - 5
    valid = torch.tensor([20, 12, 7])
    fbank[1, 12:] = 0
    fbank[2, 7:] = 0
    return fbank, valid


def test_all_off_is_identity():
    fbank, valid = _batch()
    off = ViewConfig(time_roll=False, gain_db=0, time_mask_fraction=0, freq_mask_fraction=0)
    a, b = two_views(fbank, valid, off)
    assert torch.equal(a, fbank) and torch.equal(b, fbank)


def test_roll_permutes_real_frames_only():
    fbank, valid = _batch()
    out = time_roll(fbank, valid, torch.Generator().manual_seed(1))
    for b, n in enumerate(valid.tolist()):
        # A circular shift: some shift s maps frame t to (t + s) % n.
        shifts = [s for s in range(n) if torch.equal(out[b, :n], fbank[b, :n].roll(-s, 0))]
        assert shifts, f"row {b} is not a circular shift of its real frames"
        assert torch.equal(out[b, n:], fbank[b, n:])


def test_gain_is_additive_log_power_on_real_frames():
    fbank, valid = _batch()
    out = random_gain(fbank, valid, 6.0, torch.Generator().manual_seed(2))
    diff = out - fbank
    for b, n in enumerate(valid.tolist()):
        d = diff[b, :n]
        assert torch.allclose(d, d[0, 0].expand_as(d))
        assert abs(d[0, 0]) <= 6.0 * math.log(10) / 10 + 1e-6
        assert torch.equal(diff[b, n:], torch.zeros_like(diff[b, n:]))


def test_spec_augment_masks_are_zero_bands():
    fbank, valid = _batch()
    out = spec_augment(fbank, valid, 0.5, 0.5, torch.Generator().manual_seed(3))
    for b, n in enumerate(valid.tolist()):
        zero = out[b, :n] == 0  # real frames only; padding is zero anyway
        rows = zero.all(dim=1)  # masked frames
        cols = zero.all(dim=0)  # masked bins
        # Every zero cell lies in a fully zeroed frame or a fully zeroed bin ...
        assert torch.equal(zero, rows[:, None] | cols[None, :])
        # ... forming one contiguous band each, within the allowed widths.
        for mask, limit in ((rows, int(0.5 * int(valid.min()))), (cols, 8)):
            idx = torch.nonzero(mask).flatten()
            assert len(idx) <= limit
            if len(idx):
                assert idx.max() - idx.min() + 1 == len(idx)
        assert torch.equal(out[b, n:], fbank[b, n:])


def test_views_differ_and_are_reproducible():
    fbank, valid = _batch()
    cfg = ViewConfig()
    a1, b1 = two_views(fbank, valid, cfg, torch.Generator().manual_seed(4))
    a2, b2 = two_views(fbank, valid, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.equal(a1, b1)
    assert augment(fbank, valid, cfg).shape == fbank.shape


# ------------------------------------------------------------------ views of issue 10
from uamix_fairseq.audio.frontend import repeat_fill  # noqa: E402
from uamix_fairseq.modules.views import (derangement, log_mixup_exp, random_resized_crop,  # noqa: E402
                                 segment_crop)


def _ramp(b=3, t=40, f=8):
    # frame index in every bin, so each output frame says where it came from
    return torch.arange(t, dtype=torch.float32)[None, :, None].expand(b, t, f).clone()


def test_segment_crop_takes_contiguous_real_frames():
    fbank = _ramp()
    valid = torch.tensor([40, 25, 6])
    crops = [segment_crop(fbank, valid, 10, torch.Generator().manual_seed(s)) for s in range(30)]
    starts = set()
    for crop, v in crops:
        assert crop.shape == (3, 10, 8)
        assert v.tolist() == [10, 10, 6]
        first = crop[:, 0, 0]
        assert torch.equal(crop[:, :, 0], first[:, None] + torch.arange(10.0)[None, :])
        assert 0 <= first[0] <= 30 and 0 <= first[1] <= 15  # inside the real frames
        assert first[2] == 0  # shorter than the crop: from the start, padding at the end
        starts.add(int(first[0]))
    assert len(starts) > 10  # crops really come from different moments
    a = segment_crop(fbank, valid, 10, torch.Generator().manual_seed(5))[0]
    b = segment_crop(fbank, valid, 10, torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b)


def test_two_views_from_different_segments():
    fbank = _ramp(b=64, t=64)
    valid = torch.full((64,), 64)
    off = ViewConfig(time_roll=False, gain_db=0, time_mask_fraction=0, freq_mask_fraction=0)
    a, b = two_views(fbank, valid, off, torch.Generator().manual_seed(0), frames=16)
    assert a.shape == b.shape == (64, 16, 8)
    assert (a[:, 0, 0] != b[:, 0, 0]).float().mean() > 0.8


def test_derangement_has_no_fixed_point():
    for n in (2, 3, 7, 32):
        for s in range(5):
            p = derangement(n, torch.Generator().manual_seed(s))
            assert sorted(p.tolist()) == list(range(n))
            assert (p != torch.arange(n)).all()


def test_log_mixup_exp_ratio_bounds_and_padding():
    g = torch.Generator().manual_seed(1)
    fbank = torch.randn(8, 20, 6, generator=g) - 5
    valid = torch.tensor([20, 20, 12, 20, 20, 5, 20, 20])
    out = log_mixup_exp(fbank, valid, 0.2, torch.Generator().manual_seed(2))
    # Recover r per clip from one real frame where the partner is real: the power is a
    # convex combination, so out lies between the clip and its partner, within ratio 0.2.
    p_out, p_in = out.exp(), fbank.exp()
    for b in range(8):
        real = torch.arange(20) < valid[b]
        assert torch.equal(out[b, ~real], fbank[b, ~real])  # padding untouched
    partner = derangement(8, torch.Generator().manual_seed(2))  # drawn first, same seed
    for b in range(8):
        frames = min(int(valid[b]), int(valid[partner[b]]))
        mix = (p_out[b, :frames] - p_in[b, :frames]) / (p_in[partner[b], :frames] - p_in[b, :frames])
        ratio = mix.median()
        assert 0 <= ratio <= 0.2 + 1e-4
        assert torch.allclose(mix, torch.full_like(mix, float(ratio)), atol=1e-3)


def test_random_resized_crop_identity_and_bounds():
    g = torch.Generator().manual_seed(3)
    fbank = torch.randn(4, 32, 16, generator=g)
    valid = torch.tensor([32, 20, 32, 8])
    same = random_resized_crop(fbank, valid, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert torch.allclose(same, fbank, atol=1e-5)  # scale 1: the clip itself
    out = random_resized_crop(fbank, valid, 0.6, 1.5, torch.Generator().manual_seed(0))
    assert out.shape == fbank.shape
    for b in range(4):
        v = int(valid[b])
        assert torch.equal(out[b, v:], fbank[b, v:])  # padding untouched
        real = fbank[b, :v]
        # Bilinear samples of the clip and of its mean stay within the clip's range.
        assert out[b, :v].min() >= real.min() - 1e-5 and out[b, :v].max() <= real.max() + 1e-5
    assert not torch.allclose(out, fbank)
    again = random_resized_crop(fbank, valid, 0.6, 1.5, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_random_resized_crop_zoom_on_ramp():
    # A time ramp (constant over frequency) sampled at scale s has slope s per frame.
    fbank = _ramp(b=1, t=40, f=4)
    valid = torch.tensor([40])
    out = random_resized_crop(fbank, valid, 0.5, 0.5, torch.Generator().manual_seed(0))
    slope = out[0, 11:30, 0].diff()
    assert torch.allclose(slope, torch.full_like(slope, 0.5), atol=1e-4)


def test_repeat_fill():
    fbank = _ramp(b=3, t=10, f=2)
    fbank[1, 4:] = 0
    fbank[2] = 0
    out = repeat_fill(fbank, torch.tensor([10, 4, 0]))
    assert torch.equal(out[0], fbank[0])
    assert out[1, :, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert torch.equal(out[2], fbank[2])  # nothing to repeat


def test_random_resized_crop_time_only_keeps_every_frame_spectrum():
    # Every frame is the same spectrum p[f]: a time-only crop only resamples along time
    # and never moves energy between bins, so for scales <= 1 (the region stays inside
    # the clip) the output equals the input, whatever the frequency profile.
    p = torch.linspace(-3.0, 2.0, 16) ** 2
    fbank = p.expand(3, 32, 16).clone()
    valid = torch.tensor([32, 24, 10])
    out = random_resized_crop(fbank, valid, 0.6, 1.0, torch.Generator().manual_seed(0),
                              freq=False)
    assert torch.allclose(out, fbank, atol=1e-5)
    both = random_resized_crop(fbank, valid, 0.6, 1.0, torch.Generator().manual_seed(0))
    assert not torch.allclose(both, fbank, atol=1e-3)  # frequency scaled: profile moves
    # A time ramp is still zoomed in time.
    ramp = _ramp(b=1, t=40, f=4)
    out = random_resized_crop(ramp, torch.tensor([40]), 0.5, 0.5,
                              torch.Generator().manual_seed(0), freq=False)
    slope = out[0, 11:30, 0].diff()
    assert torch.allclose(slope, torch.full_like(slope, 0.5), atol=1e-4)


def test_fader_ramps_from_one_drawn_level_to_the_other_on_real_frames():
    from uamix_fairseq.modules.views import random_fader

    fbank, valid = _batch()
    fbank = torch.cat([fbank, torch.randn(2, 20, 16)])
    valid = torch.cat([valid, torch.tensor([1, 0])])  # one real frame; none
    fbank[3, 1:] = 0
    fbank[4] = 0
    max_db = 6.0
    out = random_fader(fbank, valid, max_db, torch.Generator().manual_seed(3))
    # The same draws by hand: two levels per clip, uniform in [-6, 6] dB, in natural log
    # power (dB * ln(10) / 10), the first at frame 0 and the second at the last real frame.
    ends = (torch.rand((5, 2), generator=torch.Generator().manual_seed(3)) * 2 - 1)
    ends = ends * max_db * math.log(10) / 10
    diff = out - fbank
    assert torch.isfinite(out).all()
    for b, n in enumerate(valid.tolist()):
        for t in range(n):
            want = ends[b, 0] + (ends[b, 1] - ends[b, 0]) * (t / max(n - 1, 1))
            assert torch.allclose(diff[b, t], want.expand(16), atol=1e-6), (b, t)
        assert torch.equal(diff[b, n:], torch.zeros_like(diff[b, n:]))  # padding untouched
    with pytest.raises(ValueError, match="task.view_fader_db"):
        ViewConfig(fader_db=-1.0).validate(prefix="task.view_")


def test_fader_reaches_the_views_when_on():
    fbank, valid = _batch()
    on = ViewConfig(time_roll=False, gain_db=0, time_mask_fraction=0, freq_mask_fraction=0,
                    fader_db=6.0)
    a, b = two_views(fbank, valid, on, torch.Generator().manual_seed(0))
    assert not torch.allclose(a, fbank) and not torch.allclose(a, b)
