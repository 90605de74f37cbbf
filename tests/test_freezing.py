import pytest

from uamix_fairseq.modules.freezing import ScheduleError, parse_schedule, trainable_blocks_at


def test_parse_and_lookup():
    s = parse_schedule("[(0, 0), (2000, 6), (5000, 12)]", depth=12)
    assert s == [(0, 0), (2000, 6), (5000, 12)]
    assert [trainable_blocks_at(s, u) for u in (0, 1999, 2000, 4999, 5000, 10**6)] == \
        [0, 0, 6, 6, 12, 12]
    assert parse_schedule([(0, 3)], depth=4) == [(0, 3)]


@pytest.mark.parametrize("spec, message", [
    ("[(0, 0), (2000, 20)]", "asks for 20 trainable blocks at update 2000, but the encoder has 12"),
    ("[(5, 0)]", "must start at update 0"),
    ("[(0, 0), (10, 2), (10, 4)]", "strictly increase"),
    ("[]", "empty"),
    ("zero then six", "not a list"),
    ("[1, 2]", "pairs"),
    ("[(0, -1)]", "between 0 and 12"),
])
def test_bad_schedules_name_the_field(spec, message):
    with pytest.raises(ScheduleError, match="model.freeze_schedule") as e:
        parse_schedule(spec, depth=12, field="model.freeze_schedule")
    assert message in str(e.value)


def _encoder(depth=4):
    from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig

    return AudioMAEEncoder(EncoderConfig(embed_dim=32, depth=depth, num_heads=2,
                                         num_frames=32, num_mel_bins=32))


def test_freeze_schedule_follows_updates_and_names_frozen_units():
    from uamix_fairseq.modules.freezing import FreezeSchedule

    enc = _encoder()
    f = FreezeSchedule.parse(enc, "[(0, 0), (10, 1), (20, 4)]", field="model.freeze_schedule")
    # The embedding never trains under a schedule: it is out of the optimizer.
    assert not enc.cls_token.requires_grad
    assert not any(p.requires_grad for p in enc.patch_embed.parameters())
    expected = {0: set(enc.units()),
                10: {"encoder.embed", "block.0", "block.1", "block.2"},
                20: {"encoder.embed"}}
    for update, units in [(0, expected[0]), (9, expected[0]), (10, expected[10]),
                          (19, expected[10]), (20, expected[20]), (10**6, expected[20])]:
        f.set_num_updates(update)
        assert f.frozen_units() == units
        assert f.encoder_kwargs() == {"trainable_blocks": f.trainable_blocks}
        frozen = {id(p) for p in f.frozen_parameters()}
        unit_of = enc.parameter_units()
        assert frozen == {id(p) for n, p in enc.named_parameters() if unit_of[n] in units}
    f.set_num_updates(15)  # back (a resume from an earlier checkpoint)
    assert f.trainable_blocks == 1


def test_everything_schedule_freezes_nothing():
    from uamix_fairseq.modules.freezing import FreezeSchedule

    enc = _encoder()
    f = FreezeSchedule.everything(enc)
    f.set_num_updates(123)
    assert f.trains_everything and f.trainable_blocks == enc.depth
    assert f.frozen_units() == set() and f.frozen_parameters() == []
    assert f.encoder_kwargs() == {}  # the embedding runs with autograd too
    assert all(p.requires_grad for p in enc.parameters())


def test_frozen_prefix_gets_no_gradient_and_the_rest_does():
    """Run the encoder as a model does (``encoder_kwargs``): frozen parameters end
    without gradient, trainable ones with one."""
    import torch

    from uamix_fairseq.modules.freezing import FreezeSchedule

    enc = _encoder()
    f = FreezeSchedule.parse(enc, "[(0, 2)]")
    enc(torch.randn(2, 1, 32, 32), **f.encoder_kwargs()).sum().backward()
    frozen = {id(p) for p in f.frozen_parameters()}
    for name, p in enc.named_parameters():
        assert (p.grad is None) == (id(p) in frozen), name


def test_step_with_freezing_keeps_frozen_groups_bit_identical():
    """The optimizer step every task uses: frozen groups unchanged even when a wrapper
    has filled their gradients with zeros, weight decay included; `skip` freezes all."""
    import torch

    from uamix_fairseq.modules.freezing import FreezeSchedule
    from uamix_fairseq.optim.uamix_adamw import step_with_freezing

    class Wrapper:  # the slice of fairseq's optimizer wrappers the step uses
        def __init__(self, groups):
            self.opt = torch.optim.AdamW(groups, lr=0.1, weight_decay=0.5)
            self.lr = 0.1

        param_groups = property(lambda self: self.opt.param_groups)

        def get_lr(self):
            return self.lr

        def set_lr(self, lr):
            for g in self.param_groups:
                g["lr"] = 0.0 if g["frozen"] else lr

        def step(self):
            self.opt.step()

    enc = _encoder()
    f = FreezeSchedule.parse(enc, "[(0, 1)]")
    unit_of = enc.parameter_units()
    groups = {}
    for n, p in enc.named_parameters():
        if p.requires_grad:
            groups.setdefault(unit_of[n], []).append(p)
    opt = Wrapper([{"params": ps, "unit": u, "frozen": False} for u, ps in groups.items()])
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    for p in enc.parameters():
        p.grad = torch.ones_like(p)  # legacy_ddp-style: every gradient filled
    step_with_freezing(opt, f)
    frozen = f.frozen_units()
    for n, p in enc.named_parameters():
        same = torch.equal(p, before[n])
        assert same == (unit_of[n] in frozen or not p.requires_grad), n
    after = {n: p.detach().clone() for n, p in enc.named_parameters()}
    for p in enc.parameters():
        p.grad = torch.ones_like(p)
    step_with_freezing(opt, f, skip=True)
    assert all(torch.equal(p, after[n]) for n, p in enc.named_parameters())
