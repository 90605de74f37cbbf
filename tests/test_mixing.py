import pytest
import torch

from uamix_fairseq.modules.mixing import (
    mix_batch, mix_partner, mixup, sample_lambda, t_cutmix, tf_cutmix,
)


def _batch(b=4, t=32, f=16):
    return torch.randn(b, 1, t, f)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_partner_reverse_and_random():
    assert mix_partner(5).tolist() == [4, 3, 2, 1, 0]
    perm = mix_partner(6, "random", _gen())
    assert sorted(perm.tolist()) == list(range(6))
    with pytest.raises(ValueError, match="partner"):
        mix_partner(3, "bogus")


@pytest.mark.parametrize("seed", range(5))
def test_t_cutmix_pastes_one_time_span(seed):
    x = _batch()
    mixed, lam, partner = t_cutmix(x, alpha=1.0, generator=_gen(seed))
    from_partner = (mixed != x).any(dim=3).any(dim=1)[0]  # [T] for row 0
    rows = torch.nonzero((mixed[0] == x[partner[0]]).all(dim=-1)[0]).flatten()
    cut = int(round((1 - float(lam[0])) * 32))
    # The pasted frames are exactly one contiguous span of `cut` frames, all bins.
    pasted = torch.nonzero(from_partner).flatten()
    assert len(pasted) == cut
    if cut:
        assert pasted.max() - pasted.min() + 1 == cut
        assert set(pasted.tolist()) <= set(rows.tolist())
    # lambda is what was kept; every row has the same (one cut per batch).
    assert torch.allclose(lam, lam[0].expand(4))
    # m_ij and m_ji use the same mask: together they hold x_i and x_j once each.
    torch.testing.assert_close(mixed[0] + mixed[3], x[0] + x[3])


def test_t_cutmix_snap_to_patches():
    x = _batch(t=64)
    for seed in range(10):
        mixed, lam, partner = t_cutmix(x, 1.0, snap=16, generator=_gen(seed))
        changed = torch.nonzero((mixed[0] != x[0]).any(dim=-1)[0]).flatten()
        if len(changed):
            assert changed.min() % 16 == 0 and (changed.max() + 1) % 16 == 0
        assert (1 - float(lam[0])) * 64 % 16 == 0
    with pytest.raises(ValueError, match="snap"):
        t_cutmix(_batch(t=40), snap=16)


def test_tf_cutmix_area_gives_lambda():
    x = _batch(t=32, f=16)
    for seed in range(5):
        mixed, lam, partner = tf_cutmix(x, 1.0, generator=_gen(seed))
        changed = (mixed[0, 0] != x[0, 0])
        # x is continuous random: every pasted cell differs.
        assert abs(float(lam[0]) - (1 - changed.sum().item() / (32 * 16))) < 1e-6
        if changed.any():
            ts, fs = torch.nonzero(changed, as_tuple=True)
            assert changed[ts.min():ts.max() + 1, fs.min():fs.max() + 1].all()


def test_mixup_is_linear():
    x = _batch()
    mixed, lam, partner = mixup(x, 0.5, generator=_gen(1))
    l = float(lam[0])
    torch.testing.assert_close(mixed, l * x + (1 - l) * x[partner])


def test_lambda_distribution_and_reproducibility():
    draws = torch.tensor([sample_lambda(1.0, _gen(s)) for s in range(2000)])
    assert 0.47 < draws.mean() < 0.53  # Beta(1, 1) = uniform
    assert abs(draws.var().item() - 1 / 12) < 0.01
    peaked = torch.tensor([sample_lambda(10.0, _gen(s)) for s in range(500)])
    assert peaked.std() < 0.15
    assert sample_lambda(1.0, _gen(7)) == sample_lambda(1.0, _gen(7))
    with pytest.raises(ValueError, match="alpha"):
        sample_lambda(0.0)


def test_mix_batch_dispatch():
    x = _batch()
    assert mix_batch(x, "none") is None
    for mode in ("tcutmix", "tfcutmix", "mixup"):
        mixed, lam, partner = mix_batch(x, mode, generator=_gen())
        assert mixed.shape == x.shape and lam.shape == (4,) and partner.shape == (4,)
    with pytest.raises(ValueError, match="mix mode"):
        mix_batch(x, "cutout")
    with pytest.raises(ValueError, match=r"\[B, 1, T, F\]"):
        t_cutmix(torch.randn(4, 32, 16))
