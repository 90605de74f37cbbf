"""criterion.positive=view: the other view's own projection as the positive
(SimCLR-style), against a direct computation; the default stays NNCLR's neighbour."""

import copy

import torch
import torch.nn.functional as F

from test_distributed import _clip_batch, _sample, _tiny_model


def _criterion(**fields):
    from uamix_fairseq.criterions.uamix_nnclr import UamixNNCLRConfig, UamixNNCLRCriterion

    return UamixNNCLRCriterion(UamixNNCLRConfig(mix_mode="none", seed=1, **fields), task=None)


def test_view_positive_is_the_other_views_projection():
    view1, view2, ids = _clip_batch()
    model = _tiny_model()
    reference = copy.deepcopy(model)
    loss, _, _ = _criterion(positive="view")(model, _sample(view1, view2, ids))

    out = reference(view1=view1, view2=view2)
    z1, z2 = F.normalize(out["z1"], dim=-1), F.normalize(out["z2"], dim=-1)
    p1, p2 = F.normalize(out["p1"], dim=-1), F.normalize(out["p2"], dim=-1)
    targets = torch.arange(len(ids))
    expected = 0.5 * (F.cross_entropy(z1 @ p2.t() / 0.15, targets, reduction="sum")
                      + F.cross_entropy(z2 @ p1.t() / 0.15, targets, reduction="sum"))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)

    # The NNCLR default picks queue neighbours instead, so it differs.
    nn_loss, _, _ = _criterion()(_tiny_model(), _sample(view1, view2, ids))
    assert not torch.allclose(nn_loss, loss, rtol=1e-3)


def test_view_positive_trains_the_projector_from_both_sides():
    view1, view2, ids = _clip_batch()
    model = _tiny_model()
    loss, _, _ = _criterion(positive="view")(model, _sample(view1, view2, ids))
    loss.backward()
    first = model.head.projector[0].weight.grad
    assert first is not None and first.abs().sum() > 0


# ------------------------------------------------------------- EMA queue projector
def _ema_model(momentum=0.9):
    from uamix_fairseq.modules.audiomae import AudioMAEEncoder, EncoderConfig
    from uamix_fairseq.models.uamix_audiomae import UamixAudioMAEConfig, UamixAudioMAEModel

    torch.manual_seed(0)
    encoder = AudioMAEEncoder(EncoderConfig(embed_dim=32, depth=2, num_heads=1, num_frames=32))
    cfg = UamixAudioMAEConfig(num_frames=32, freeze_schedule="[(0, 1)]", proj_hidden_dim=32,
                              pred_hidden_dim=32, proj_out_dim=16, queue_momentum=momentum)
    return UamixAudioMAEModel(cfg, encoder, queue_size=16)


def test_ema_update_by_hand():
    from uamix_fairseq.modules.nnclr import ema_update

    target, online = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = target.weight.detach().clone()
    ema_update(target, online, 0.99)
    torch.testing.assert_close(target.weight, 0.99 * before + 0.01 * online.weight.detach())


def test_queue_projector_follows_the_projector_once_per_update():
    model = _ema_model(0.9)
    online = model.head.projector[0].weight
    start = model.queue_projector[0].weight.detach().clone()
    assert torch.equal(start, online) and not model.queue_projector[0].weight.requires_grad
    model.set_num_updates(0)
    with torch.no_grad():
        online.add_(1.0)  # an optimizer step
    model.set_num_updates(1)
    expected = 0.9 * start + 0.1 * online.detach()
    torch.testing.assert_close(model.queue_projector[0].weight, expected)
    model.set_num_updates(1)  # the same update again (validation, resume): no step
    torch.testing.assert_close(model.queue_projector[0].weight, expected)
    model.set_num_updates(7)  # a jump (resume): recorded, not a step
    torch.testing.assert_close(model.queue_projector[0].weight, expected)


def test_queue_gets_the_ema_projections():
    view1, view2, ids = _clip_batch()
    model = _ema_model(0.5)
    with torch.no_grad():
        model.queue_projector[0].weight.mul_(-1.0)  # make it differ from the projector
    model.train()
    reference = copy.deepcopy(model)
    _criterion()(model, _sample(view1, view2, ids))
    out = reference(view1=view1, view2=view2)
    queued = model.support_queue.features[: len(ids)]
    torch.testing.assert_close(queued, F.normalize(out["z1_queue"], dim=-1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(queued, F.normalize(out["z1"], dim=-1), atol=1e-3)
