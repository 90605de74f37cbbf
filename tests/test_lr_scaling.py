"""optimizer.lr_reference_batch: every group's lr is the schedule's lr times clips per
update over the reference, frozen groups stay at 0, and the field is off by default."""

import pytest
import torch

pytest.importorskip("fairseq")

from uamix_fairseq.optim.uamix_adamw import UamixAdamW, UamixAdamWConfig, tag_parameter


def _params():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))
    tag_parameter(a, "head", 1.0)
    tag_parameter(b, "block.0", 0.5)
    return [a, b]


def _lrs(opt):
    return {g["unit"]: g["lr"] for g in opt.param_groups}


def test_off_by_default_uses_lr_as_is():
    opt = UamixAdamW(UamixAdamWConfig(lr=[1e-3]), _params())
    assert _lrs(opt) == pytest.approx({"head": 1e-3, "block.0": 5e-4})


def test_scaled_by_clips_per_update():
    # 32 clips x 2 ranks x update_freq 4 = 256 clips; reference 128 -> factor 2.
    cfg = UamixAdamWConfig(lr=[1e-4], lr_reference_batch=128, batch_size=32,
                           world_size=2, update_freq=[4])
    opt = UamixAdamW(cfg, _params())
    assert _lrs(opt) == pytest.approx({"head": 2e-4, "block.0": 1e-4})
    opt.set_lr(5e-5)  # the schedule's lr: the factor is applied on top
    assert opt.get_lr() == 5e-5
    assert _lrs(opt) == pytest.approx({"head": 1e-4, "block.0": 5e-5})
    for g in opt.param_groups:
        g["frozen"] = g["unit"] == "block.0"
    opt.set_lr(5e-5)
    assert _lrs(opt) == pytest.approx({"head": 1e-4, "block.0": 0.0})


def test_needs_a_batch_size():
    cfg = UamixAdamWConfig(lr=[1e-4], lr_reference_batch=256, batch_size=None,
                           world_size=1, update_freq=[1])
    with pytest.raises(ValueError, match="dataset.batch_size"):
        UamixAdamW(cfg, _params())
