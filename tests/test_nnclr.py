import math

import pytest
import torch
import torch.nn.functional as F

from uamix_fairseq.modules.nnclr import (
    NNCLRHead, SupportQueue, contrastive_logits, nnclr_loss, soft_target_loss,
)


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_queue_fifo_and_wraparound():
    q = SupportQueue(3, 2)
    assert q.filled == 0
    q.push(unit([1, 0], [0, 1]), torch.tensor([10, 11]))
    assert q.filled == 2
    q.push(unit([1, 1], [-1, 0]), torch.tensor([12, 13]))
    assert q.filled == 3
    # Oldest entry (index 10) was overwritten by index 13.
    assert sorted(q.indices.tolist()) == [11.0, 12.0, 13.0]
    assert all(t.is_floating_point() for t in q.state_dict().values())


def test_nearest_with_self_exclusion():
    q = SupportQueue(4, 2)
    q.push(unit([1, 0], [0, 1], [1, 1]), torch.tensor([0, 1, 2]))
    z = unit([1, 0.1])
    assert torch.allclose(q.nearest(z), unit([1, 0]))
    # The clip itself (index 0) is never its own neighbour.
    assert torch.allclose(q.nearest(z, torch.tensor([0])), unit([1, 1]))


def test_nearest_falls_back_to_itself():
    q = SupportQueue(4, 2)
    z = unit([0.6, 0.8])
    assert torch.equal(q.nearest(z), z)  # empty queue
    q.push(unit([1, 0]), torch.tensor([5]))
    assert torch.equal(q.nearest(z, torch.tensor([5])), z)  # only itself queued


def test_nearest_topk_draws_among_top():
    q = SupportQueue(4, 2)
    q.push(unit([1, 0], [1, 0.2], [-1, 0]), torch.tensor([0, 1, 2]))
    z = unit([1, 0.1])
    seen = set()
    for s in range(20):
        nn = q.nearest(z, topk=2, generator=torch.Generator().manual_seed(s))
        seen.add(tuple(nn[0].round(decimals=4).tolist()))
    assert seen == {tuple(unit([1, 0])[0].round(decimals=4).tolist()),
                    tuple(unit([1, 0.2])[0].round(decimals=4).tolist())}


def test_nnclr_loss_hand_computed():
    nn = unit([1, 0], [0, 1])
    p = unit([1, 0], [1, 1])
    tau = 0.5
    loss, logits = nnclr_loss(nn, p, torch.tensor([0, 1]), tau)
    s = 1 / math.sqrt(2)
    # row 0: logits [1, s] / tau, target 0; row 1: [0, s] / tau, target 1
    expected = (-(2.0) + math.log(math.exp(2.0) + math.exp(2 * s))) + \
               (-(2 * s) + math.log(1 + math.exp(2 * s)))
    assert abs(loss.item() - expected) < 1e-5
    torch.testing.assert_close(logits, torch.tensor([[2.0, 2 * s], [0.0, 2 * s]]))


def test_column_mask_removes_negatives():
    nn, p = unit([1, 0], [0, 1]), unit([1, 0], [0, 1], [1, 0])
    masked, _ = nnclr_loss(nn, p, torch.tensor([0, 1]), 1.0, torch.tensor([True, True, False]))
    plain, _ = nnclr_loss(nn, p[:2], torch.tensor([0, 1]), 1.0)
    torch.testing.assert_close(masked, plain)


def test_soft_target_loss_hand_computed():
    pm = unit([1, 0], [0, 1], [1, 1])
    nn2 = unit([1, 0], [0, 1], [-1, 0])
    lam = torch.tensor([0.7, 0.7, 0.7])
    own, partner = torch.arange(3), torch.tensor([2, 1, 0])
    loss, logits = soft_target_loss(pm, nn2, lam, own, partner, 1.0)
    logp = torch.log_softmax(logits, 1)
    expected = -(0.7 * logp[0, 0] + 0.3 * logp[0, 2]) - logp[1, 1] - (0.7 * logp[2, 2] + 0.3 * logp[2, 0])
    assert abs(loss.item() - expected.item()) < 1e-5


def test_soft_target_with_lambda_one_is_cross_entropy():
    pm, nn2 = torch.randn(5, 8), torch.randn(5, 8)
    own, partner = torch.arange(5), torch.arange(4, -1, -1)
    soft, _ = soft_target_loss(pm, nn2, torch.ones(5), own, partner, 0.2)
    hard = F.cross_entropy(contrastive_logits(pm, nn2, 0.2), own, reduction="sum")
    torch.testing.assert_close(soft, hard)


def test_soft_target_masked_columns_no_nan():
    pm, nn2 = torch.randn(3, 4), torch.randn(4, 4)
    loss, _ = soft_target_loss(pm, nn2, torch.full((3,), 0.6), torch.arange(3),
                               torch.tensor([2, 1, 0]), 0.1,
                               torch.tensor([True, True, True, False]))
    assert torch.isfinite(loss)


def test_head_shapes_and_float_state():
    head = NNCLRHead(64, proj_hidden_dim=32, out_dim=16, pred_hidden_dim=48)
    z, p = head(torch.randn(4, 64))
    assert z.shape == (4, 16) and p.shape == (4, 16)
    assert all(t.is_floating_point() for t in head.state_dict().values())
    # Projector: Linear(no bias) BN ReLU Linear(no bias) BN ReLU Linear BN
    kinds = [type(m).__name__ for m in head.projector]
    assert kinds == ["Linear", "FloatBatchNorm1d", "ReLU", "Linear", "FloatBatchNorm1d",
                     "ReLU", "Linear", "FloatBatchNorm1d"]
    assert head.projector[0].bias is None and head.projector[6].bias is not None
    with pytest.raises(ValueError):
        SupportQueue(0, 4)


def _filled_queue(size=6, n=4, dim=3):
    q = SupportQueue(size, dim, dataset_id=7)
    q.push(torch.nn.functional.normalize(torch.randn(n, dim), dim=-1),
           torch.arange(n, dtype=torch.long) + 10)
    return q


def test_queue_problem_accepts_a_saved_queue():
    q = _filled_queue()
    saved = dict(q.named_buffers())
    assert SupportQueue(6, 3, dataset_id=7).problem(saved, num_clips=20) is None
    assert SupportQueue(6, 3).problem(saved) is None  # dataset not known: trusted


def test_queue_problem_finds_what_averaging_makes():
    """The element-wise mean of two real queues (what average_checkpoints.py does)."""
    a, b = _filled_queue(n=4), _filled_queue(n=2)
    b.indices[:2] += 3  # other clips in the same slots
    mean = {k: (v + dict(b.named_buffers())[k]) / 2 for k, v in a.named_buffers()}
    fresh = SupportQueue(6, 3, dataset_id=7)
    assert fresh.problem(mean) is not None  # pointer/fill 3 with slots 2, 3 half-filled
    for name, change, words in [
        ("indices", lambda t: t.index_fill(0, torch.tensor([0]), 10.5), "whole numbers"),
        ("indices", lambda t: t.index_fill(0, torch.tensor([0]), 25.0), "in [0, 20)"),
        ("state", lambda t: torch.tensor([7.0, 4.0], dtype=t.dtype), "do not fit"),
        ("state", lambda t: t + 0.5, "whole numbers"),
        ("features", lambda t: t * 0.9, "unit vectors"),
        ("dataset_id", lambda t: t + 1, "another dataset"),
        ("features", lambda t: torch.zeros(5, 3), "holds 5 entries"),
    ]:
        saved = dict(a.named_buffers())
        saved[name] = change(saved[name].clone())
        assert words in fresh.problem(saved, num_clips=20), (name, words)


def test_queue_reset_empties_it():
    q = _filled_queue()
    q.reset()
    assert q.filled == 0 and int(q.state[0]) == 0 and (q.indices == -1).all()
    assert float(q.dataset_id[0]) == 7
