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
