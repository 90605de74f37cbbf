import math

import torch

from uamix_fairseq.views import ViewConfig, augment, random_gain, spec_augment, time_roll, two_views


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
