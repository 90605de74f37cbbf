"""Monitor scores (leave-one-out k-NN / NCM, drift, neighbour purity) against hand
computations and an independent loop implementation."""

import math

import numpy as np
import pytest
import torch

from uamix_fairseq.modules.monitor import (MonitorError, cosine_drift, knn_k_warning, loo_knn_accuracy,
                                   loo_ncm_accuracy, neighbour_purity, targets_from_labels)


def _angles(degrees):
    r = np.radians(degrees)
    return torch.tensor(np.stack([np.cos(r), np.sin(r)], axis=1))


# Unit vectors at these angles; the clip at 15 degrees is labelled B (an outlier among
# the A clips), so the expected accuracies can be worked out by hand.
ANGLES = [0, 10, 20, 90, 100, 15]
TARGETS = torch.tensor([0, 0, 0, 1, 1, 1])


def test_knn_by_hand():
    emb = _angles(ANGLES) * torch.tensor([[1.0], [2.0], [0.5], [3.0], [1.0], [1.0]])
    # k=1: 0->10 ok; 10->15 (B) wrong; 20->15 wrong; 90->100 ok; 100->90 ok;
    # 15->10 or 20 (A) wrong: 3/6. Scaling rows changes nothing (cosine).
    assert loo_knn_accuracy(emb, TARGETS, k=1) == pytest.approx(50.0)
    # k=2: ties of one vote each go to the more similar voter: 0 -> A (10 deg beats
    # 15); 10 -> B (15 at 5 deg); 20 -> B; 90, 100 -> B; 15 -> A: 3/6.
    assert loo_knn_accuracy(emb, TARGETS, k=2) == pytest.approx(50.0)
    # k=3: every A clip has two A voters, 90 and 100 have B and the other B (15 deg)
    # against one A; 15 still sees three A clips: 5/6.
    assert loo_knn_accuracy(emb, TARGETS, k=3) == pytest.approx(100 * 5 / 6)
    # k larger than N - 1 is capped.
    assert loo_knn_accuracy(emb, TARGETS, k=50) == loo_knn_accuracy(emb, TARGETS, k=5)


def _ncm_reference(emb, targets):
    x = emb.numpy() / np.linalg.norm(emb.numpy(), axis=1, keepdims=True)
    t = targets.numpy()
    correct = 0
    for i in range(len(x)):
        best, best_c = -math.inf, None
        for c in np.unique(t):
            members = [j for j in range(len(x)) if t[j] == c and j != i]
            mean = x[members].mean(axis=0)
            sim = x[i] @ mean / np.linalg.norm(mean)
            if sim > best:
                best, best_c = sim, c
        correct += best_c == t[i]
    return 100.0 * correct / len(x)


def test_ncm_against_loop_reference():
    emb = _angles(ANGLES)
    # By hand: the 15-degree B clip sits amid the A clips, so it and no other fails...
    assert loo_ncm_accuracy(emb, TARGETS) == pytest.approx(_ncm_reference(emb, TARGETS))
    rng = np.random.default_rng(0)
    for _ in range(5):
        emb = torch.tensor(rng.normal(size=(40, 8)))
        targets = torch.tensor(rng.integers(0, 4, size=40))
        targets[:8] = torch.arange(4).repeat(2)  # every class has >= 2 clips
        assert loo_ncm_accuracy(emb, targets) == pytest.approx(_ncm_reference(emb, targets))


def test_ncm_leave_one_out_matters():
    # Two clips per class: without leaving the clip out, each clip would be closest
    # to its own class mean; left out, the clip at 40 deg is nearer B's other clip.
    emb = _angles([0, 40, 50, 90])
    targets = torch.tensor([0, 0, 1, 1])
    # 0 -> A mean = 40 deg vs B mean 70: A. 40 -> A = 0 deg (40 away) vs B = 70 (30): B.
    # 50 -> B = 90 (40) vs A = 20 (30): A. 90 -> B = 50 vs A = 20: B.  2/4.
    assert loo_ncm_accuracy(emb, targets) == pytest.approx(50.0)


def test_drift():
    a = _angles([0, 90])
    assert cosine_drift(a, a) == pytest.approx(0.0, abs=1e-12)
    b = _angles([60, 90])  # cos 60 = 0.5 for the first row, 1 for the second
    assert cosine_drift(b, a) == pytest.approx(1 - 0.75)
    with pytest.raises(MonitorError, match="same shape"):
        cosine_drift(a, a[:1])


def test_neighbour_purity_on_hand_built_queue():
    labels = torch.tensor([0, 0, 1, 1, -1])
    ids = torch.tensor([0, 1, 2, 3, 0])
    neighbours = torch.tensor([1, 2, 3, -1, 4])  # same, other, same, none, unknown
    same, counted = neighbour_purity(neighbours, ids, labels).tolist()
    assert (same, counted) == (2, 3)


def test_targets_need_two_clips_per_class():
    names, t = targets_from_labels([["a"], ["b"], ["a"], ["b"]], "x.label")
    assert names == ["a", "b"] and t.tolist() == [0, 1, 0, 1]
    with pytest.raises(MonitorError, match=r"x.label.*one clip: \[1\]"):
        targets_from_labels([["a"], ["b"], ["a"]], "x.label")
    with pytest.raises(MonitorError, match="several labels"):
        targets_from_labels([["a", "b"], ["a"]], "x.label")


def test_knn_k_too_large_for_the_smallest_class_is_warned():
    # 8 classes of 4 clips: 3 voters of the true class among k=20 can never win.
    targets = torch.arange(8).repeat_interleave(4)
    warning = knn_k_warning(targets, 20, "valid.tsv")
    assert "valid.tsv" in warning and "task.monitor_knn_k=6 or less" in warning
    assert knn_k_warning(targets, 6, "valid.tsv") is None
    # The real-sounds ufoai set: smallest class 18 clips, k=20 is fine.
    assert knn_k_warning(torch.tensor([0] * 18 + [1] * 60), 20, "ufoai.tsv") is None
