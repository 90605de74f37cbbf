"""Tests of uamix_fairseq.modules.attacks: budgets, PGD projection and ascent, SNR noise."""

import math

import pytest
import torch

from uamix_fairseq.modules.attacks import add_noise_at_snr, db_to_normalized, pgd_linf


def test_db_budget_by_hand():
    # 10 dB = one decade of power = ln(10) nats; normalised by 2 * std.
    assert db_to_normalized(10.0, 0.5) == pytest.approx(math.log(10.0))
    assert db_to_normalized(1.0, 4.5689974) == pytest.approx(0.1 * math.log(10) / 9.1379948)
    with pytest.raises(ValueError, match="dB"):
        db_to_normalized(-1.0, 1.0)


def test_pgd_stays_in_budget_and_raises_loss():
    torch.manual_seed(0)
    w = torch.randn(8, 3, requires_grad=True)
    x = torch.randn(5, 8)
    target = torch.tensor([0, 1, 2, 0, 1])

    def loss_fn(inp):
        return torch.nn.functional.cross_entropy(inp @ w, target)

    eps = 0.1
    adv = pgd_linf(x, loss_fn, eps, steps=10, step_size=0.03,
                   generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-6
    assert loss_fn(adv) > loss_fn(x) + 0.05
    assert w.grad is None and not adv.requires_grad
    # For a linear model the best L-inf step is eps * sign(gradient): PGD reaches it.
    x0 = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(x0), x0)
    one = pgd_linf(x, loss_fn, eps, steps=1, step_size=eps, random_start=False)
    assert torch.allclose(one, x + eps * g.sign())


def test_pgd_zero_budget_is_identity():
    x = torch.randn(3, 4)
    out = pgd_linf(x, lambda v: (v ** 2).sum(), 0.0, steps=5, step_size=0.1)
    assert torch.equal(out, x)


def test_noise_at_snr_and_padding():
    gen = torch.Generator().manual_seed(0)
    wav = torch.zeros(2, 40000)
    wav[0] = torch.sin(torch.arange(40000) * 0.05)
    wav[1, :20000] = 0.1 * torch.sin(torch.arange(20000) * 0.2)
    lengths = torch.tensor([40000, 20000])
    noisy = add_noise_at_snr(wav, 10.0, gen, lengths)
    noise = noisy - wav
    for i, n in enumerate(lengths.tolist()):
        snr = 10 * math.log10(float((wav[i, :n] ** 2).mean() / (noise[i, :n] ** 2).mean()))
        assert snr == pytest.approx(10.0, abs=0.2)
    assert torch.equal(noisy[1, 20000:], torch.zeros(20000))
    assert torch.equal(add_noise_at_snr(torch.zeros(1, 100), 0.0), torch.zeros(1, 100))
