"""How useful an encoder's embeddings are, measured while it trains.

A *monitor set* is a small labelled manifest (``PATH.tsv`` with ``PATH.label``). At each
validation the tasks embed its clips with the current encoder (batched, no autograd) and
score the embeddings without training anything:

- leave-one-out k-NN accuracy: each clip is classified by a majority vote of its k
  most cosine-similar other clips (ties go to the class whose voters are more similar);
- leave-one-out nearest-class-mean accuracy: each clip against the cosine class means of
  the other clips (its own class's mean without it);
- drift: 1 - mean cosine between each clip's embedding now and at the start of training.

Labels are only ever used here, to measure; no training loss sees them. Plain PyTorch,
no fairseq.
"""

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F


class MonitorError(ValueError):
    pass


def check_targets(targets: torch.Tensor, source: str = "the monitor labels"):
    """Every class needs two clips (one to hold out, one to vote or make a mean)."""
    counts = torch.bincount(targets)
    single = (counts == 1).nonzero().flatten().tolist()
    if single or int((counts > 0).sum()) < 2:
        raise MonitorError(
            f"{source}: leave-one-out accuracy needs at least 2 classes with at least 2 "
            f"clips each (classes with one clip: {single or 'none'}); add clips or drop "
            "those classes from the monitor set")


def knn_k_warning(targets: torch.Tensor, k: int, source: str) -> Optional[str]:
    """A warning when the smallest class has fewer than k/2 other clips: its clips can
    then never win the k-NN vote, and monitor_knn reads near 0 whatever the encoder."""
    counts = torch.bincount(targets)
    smallest = int(counts[counts > 0].min())
    if smallest - 1 >= k / 2:
        return None
    return (f"{source}: its smallest class has {smallest} clips, so with "
            f"task.monitor_knn_k={k} a held-out clip has at most {smallest - 1} voters "
            f"of its class among {k}: monitor_knn will read near 0; set "
            f"task.monitor_knn_k={max(1, 2 * (smallest - 1))} or less, or use "
            "monitor_ncm")


def _unit(emb: torch.Tensor) -> torch.Tensor:
    return F.normalize(emb.double(), dim=1)


def loo_knn_accuracy(emb: torch.Tensor, targets: torch.Tensor, k: int = 20) -> float:
    """Leave-one-out cosine k-NN accuracy in percent (k capped at N - 1)."""
    x = _unit(emb)
    n = x.shape[0]
    k = max(1, min(k, n - 1))
    sim = x @ x.t()
    sim.fill_diagonal_(float("-inf"))
    top_sim, top_idx = sim.topk(k, dim=1)  # [N, k]
    num_classes = int(targets.max()) + 1
    votes = torch.zeros(n, num_classes, dtype=torch.float64)
    votes.scatter_add_(1, targets[top_idx], torch.ones_like(top_sim))
    # Tie-break: summed similarity of the voters, scaled below one vote.
    sims = torch.zeros(n, num_classes, dtype=torch.float64)
    sims.scatter_add_(1, targets[top_idx], top_sim + 1.0)  # in [0, 2k]
    score = votes + sims / (2 * k + 1)
    return 100.0 * float((score.argmax(dim=1) == targets).double().mean())


def loo_ncm_accuracy(emb: torch.Tensor, targets: torch.Tensor) -> float:
    """Leave-one-out nearest-class-mean accuracy in percent (cosine to the means of
    unit-normalised embeddings; a clip's own class mean excludes it)."""
    x = _unit(emb)
    num_classes = int(targets.max()) + 1
    sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, targets, x)
    counts = torch.bincount(targets, minlength=num_classes).double()
    # Similarity of each clip to every class mean, then its own class's mean redone
    # without it: (S_c - x_i) / (n_c - 1).
    means = sums / counts.clamp(min=1)[:, None]
    sim = F.normalize(x, dim=1) @ F.normalize(means, dim=1).t()  # [N, C]
    own = (sums[targets] - x) / (counts[targets] - 1).clamp(min=1)[:, None]
    own_sim = (x * F.normalize(own, dim=1)).sum(dim=1)
    sim[torch.arange(x.shape[0]), targets] = own_sim
    sim[:, counts == 0] = float("-inf")
    return 100.0 * float((sim.argmax(dim=1) == targets).double().mean())


def cosine_drift(current: torch.Tensor, start: torch.Tensor) -> float:
    """1 - mean cosine similarity between matching rows (0 = unchanged directions)."""
    if current.shape != start.shape:
        raise MonitorError(f"drift needs embeddings of the same shape, got "
                           f"{tuple(current.shape)} and {tuple(start.shape)}")
    return float(1.0 - F.cosine_similarity(current.double(), start.double(), dim=1).mean())


def neighbour_purity(neighbour_ids: torch.Tensor, ids: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
    """(same-class count, counted rows): how many rows' chosen queue neighbour is a clip
    of the same class as the row's own clip. ``neighbour_ids`` < 0 (no neighbour yet)
    are not counted. ``labels`` maps dataset index -> class (-1 = unknown, not counted)."""
    labels = labels.to(ids.device)
    ok = neighbour_ids >= 0
    nb = neighbour_ids.clamp(min=0).long()
    own, other = labels[ids.long()], labels[nb]
    ok = ok & (own >= 0) & (other >= 0)
    return torch.stack([((own == other) & ok).sum(), ok.sum()]).double()


def monitor_scores(emb: torch.Tensor, targets: torch.Tensor, k: int,
                   start: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """``monitor_knn``, ``monitor_ncm`` and (with ``start``) ``monitor_drift``."""
    out = {"monitor_knn": loo_knn_accuracy(emb, targets, k),
           "monitor_ncm": loo_ncm_accuracy(emb, targets)}
    if start is not None:
        out["monitor_drift"] = cosine_drift(emb, start)
    return out


@torch.no_grad()
def embed_batches(encoder, inputs: torch.Tensor, pooling: str, batch_size: int,
                  device) -> torch.Tensor:
    """Pooled embeddings [N, D] (float32, CPU) of model inputs [N, 1, T, F] in eval
    mode, ``batch_size`` clips at a time; the encoder's train/eval mode is restored."""
    was_training = encoder.training
    encoder.eval()
    dtype = encoder.cls_token.dtype
    try:
        out = [encoder.embed(inputs[i:i + batch_size].to(device=device, dtype=dtype),
                             pooling).float().cpu()
               for i in range(0, inputs.shape[0], batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def targets_from_labels(labels: Sequence[Sequence[str]], source: str):
    """Class names and int targets of single-label rows (the first name of each)."""
    multi = sum(len(row) > 1 for row in labels)
    if multi:
        raise MonitorError(f"{source}: {multi} clips have several labels; the monitor "
                           "needs one class per clip")
    names = sorted({row[0] for row in labels})
    index = {c: i for i, c in enumerate(names)}
    targets = torch.tensor([index[row[0]] for row in labels], dtype=torch.long)
    check_targets(targets, source)
    return names, targets
