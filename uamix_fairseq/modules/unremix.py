"""UnReMix importance weights for the negatives of a contrastive loss [R].

Reference: Tabassum, Wahed, Eldardiry, Lourentzou, "Hard Negative Sampling Strategies
for Contrastive Representation Learning" (UnReMix, arXiv 2206.01197). Only its abstract
is readable: it weights negatives by anchor similarity, model uncertainty and
representativeness. Everything below is a reconstruction (docs/method.md, "UnReMix"):

For anchor row i and negative column k of the logits ``anchors @ candidates.T / tau``
over the global batch (row k and column k are the same clip):

- similarity[i, k] = cos(anchor_i, candidate_k): hard negatives are close to the anchor.
- uncertainty[k] = ||softmax(logits[k]) - target[k]||_2: clip k's own row as an
  instance-discrimination classifier whose last linear layer has the candidates / tau as
  weights and the unit-norm anchor h_k as input. The cross-entropy gradient with respect
  to that layer is (s_k - t_k) h_k^T / tau, whose Frobenius norm is
  ||s_k - t_k|| * ||h_k|| / tau = ||s_k - t_k|| / tau: a closed form, no backward pass
  (the constant 1 / tau drops out in the per-row normalisation).
- representativeness[i, k] = mean cosine distance (1 - cos) from candidate k to the other
  negatives of row i: the sum over the row's negatives is one [n, m] @ [m, d] product
  (sum_j c_j) followed by a product with the candidates, so no [m, m, m] work.

Each term is normalised over the negatives of each row to [0, 1] (``minmax``, ``zscore``
squashed by a logistic, or ``rank``), mixed linearly with the three coefficients, raised
to at least ``floor`` (so no negative drops out), and optionally divided by its mean over
the row's negatives. Positives (columns with target mass) and masked columns get weight
1; the loss leaves them unweighted anyway. All of it runs without gradient.

Nothing here knows about audio, fairseq or ranks: pass gathered tensors, and every rank
computes the same weights for the same columns.
"""

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F

NORMS = ("minmax", "zscore", "rank")
# Values closer than this count as equal when normalising. Every term is O(1) (cosines,
# cosine distances <= 2, norms of probability differences <= sqrt 2); without it, terms
# that are equal in exact arithmetic (e.g. the two distances of a row with two
# negatives) would be stretched to 0 and 1 by their rounding noise, differently on
# batches split across ranks.
TIE_TOLERANCE = 1e-5


@dataclass
class UnReMixConfig:
    """How the three terms become one weight per (anchor, negative); see the module doc."""

    similarity: float = 1.0
    uncertainty: float = 1.0
    representativeness: float = 1.0
    norm: str = "minmax"
    mean_one: bool = True
    floor: float = 0.05
    field_prefix: str = ""  # names fields in error messages, e.g. "criterion.unremix_"

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"{self.field_prefix}norm must be one of {NORMS}, "
                             f"got {self.norm!r}")
        if not self.floor > 0:
            raise ValueError(f"{self.field_prefix}floor must be > 0 (a zero weight would "
                             f"drop a negative from the loss), got {self.floor}")


def normalise_rows(values: torch.Tensor, negatives: torch.Tensor, norm: str) -> torch.Tensor:
    """Map ``values`` [n, m] to [0, 1] within each row's negatives (bool [n, m]).

    minmax: (v - min) / (max - min); zscore: logistic of (v - mean) / std; rank: average
    rank among the row's negatives / (count - 1), ties (within ``TIE_TOLERANCE``)
    sharing their mean rank. A row whose negatives all hold the same value (spread or
    std within ``TIE_TOLERANCE``), or that has fewer than two, maps to 0.5.
    Entries outside the negatives are left meaningless (the caller masks them).
    """
    values = values.expand(negatives.shape)
    count = negatives.sum(dim=1, keepdim=True)
    half = torch.full_like(values, 0.5)
    if norm == "minmax":
        lo = values.masked_fill(~negatives, float("inf")).amin(dim=1, keepdim=True)
        hi = values.masked_fill(~negatives, float("-inf")).amax(dim=1, keepdim=True)
        spread = hi - lo
        flat = ~(spread > TIE_TOLERANCE)  # also rows without negatives (-inf spread)
        return torch.where(flat, half, (values - lo) / spread.masked_fill(flat, 1.0))
    if norm == "zscore":
        n = count.clamp_min(1)
        kept = values.masked_fill(~negatives, 0.0)
        mean = kept.sum(dim=1, keepdim=True) / n
        var = ((values - mean).masked_fill(~negatives, 0.0) ** 2).sum(dim=1, keepdim=True) / n
        std = var.sqrt()
        flat = ~(std > TIE_TOLERANCE)
        return torch.where(flat, half, torch.sigmoid((values - mean) / std.masked_fill(flat, 1.0)))
    if norm == "rank":
        # Non-negatives sort last, so they never count as smaller than a negative.
        ordered = values.masked_fill(~negatives, float("inf")).sort(dim=1).values.contiguous()
        below = torch.searchsorted(ordered, (values - TIE_TOLERANCE).contiguous())
        at_most = torch.searchsorted(ordered, (values + TIE_TOLERANCE).contiguous(),
                                     right=True)
        rank = (below + at_most - 1).to(values.dtype) / 2  # mean rank of a tie
        steps = (count - 1).to(values.dtype)
        flat = ~(steps > 0)
        return torch.where(flat, half, rank / steps.masked_fill(flat, 1.0))
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def uncertainty(logits: torch.Tensor, targets: torch.Tensor,
                column_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """||softmax(logits[k]) - targets[k]||_2 for every row k: [m, m] logits -> [m].

    This is the norm of the cross-entropy gradient of row k with respect to the last
    linear layer of the instance-discrimination "classifier", up to the norm of its
    input, which is constant for unit-norm anchors (module doc)."""
    if column_mask is not None:
        logits = logits.masked_fill(~column_mask[None, :], float("-inf"))
    return (torch.softmax(logits, dim=1) - targets).norm(dim=1)


def representativeness(candidates: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance from candidate k to the other negatives of row i: [n, m].

    ``candidates`` [m, d] unit rows, ``negatives`` [n, m] bool. Uses
    sum_{j in N_i, j != k} (1 - c_k.c_j) = |N_i| - c_k . sum_{j in N_i} c_j for k in N_i
    (c_k . c_k = 1), so the cost is two [.., d] products. Rows with fewer than two
    negatives give 0."""
    count = negatives.sum(dim=1, keepdim=True).to(candidates.dtype)
    summed = negatives.to(candidates.dtype) @ candidates  # [n, d]
    cos_sum = summed @ candidates.t()  # [n, m]
    return (count - cos_sum) / (count - 1).clamp_min(1)


@torch.no_grad()
def negative_weights(anchors: torch.Tensor, candidates: torch.Tensor,
                     targets: torch.Tensor, temperature: float, cfg: UnReMixConfig,
                     rows: Union[slice, torch.Tensor, None] = None,
                     column_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """UnReMix weights [n, m] for the rows ``rows`` of the logits anchors @ candidates.T.

    anchors [m, d] and candidates [m, d]: the whole (global) batch, row k and column k
    being the same clip (any norm; they are L2-normalised here). targets [m, m]: the
    loss's target distribution of every row (one-hot for NNCLR, lambda / 1 - lambda for
    the mixtures); columns with target mass are the row's positives. column_mask [m]
    bool: columns that may be negatives (False for dummy rows). rows: which anchor rows
    to return (default all), e.g. this rank's slice of the global batch.

    Returns detached float weights, 1 on positives and masked columns.
    """
    if anchors.shape[0] != candidates.shape[0] or targets.shape != (anchors.shape[0],) * 2:
        raise ValueError("UnReMix needs anchors [m, d], candidates [m, d] and targets "
                         f"[m, m] over the same clips; got {tuple(anchors.shape)}, "
                         f"{tuple(candidates.shape)}, {tuple(targets.shape)}")
    rows = slice(None) if rows is None else rows
    anchors = F.normalize(anchors.detach().float(), dim=-1)
    candidates = F.normalize(candidates.detach().float(), dim=-1)
    targets = targets.detach().float()
    local_anchors = anchors[rows]
    negatives = targets[rows] == 0
    if column_mask is not None:
        negatives &= column_mask.bool()[None, :]

    mixed = torch.zeros(negatives.shape, device=anchors.device)
    # Uncertainty needs every clip's own row; the similarity only this call's rows.
    cos_all = anchors @ candidates.t() if cfg.uncertainty else None  # [m, m]
    if cfg.similarity:
        cos = cos_all[rows] if cos_all is not None else local_anchors @ candidates.t()
        mixed += cfg.similarity * normalise_rows(cos, negatives, cfg.norm)
    if cfg.uncertainty:
        unc = uncertainty(cos_all / temperature, targets, column_mask)  # [m], per column
        mixed += cfg.uncertainty * normalise_rows(unc[None, :], negatives, cfg.norm)
    if cfg.representativeness:
        rep = representativeness(candidates, negatives)
        mixed += cfg.representativeness * normalise_rows(rep, negatives, cfg.norm)

    weights = mixed.clamp_min(cfg.floor)
    if cfg.mean_one:
        count = negatives.sum(dim=1, keepdim=True).clamp_min(1)
        mean = weights.masked_fill(~negatives, 0.0).sum(dim=1, keepdim=True) / count
        weights = weights / mean
    return torch.where(negatives, weights, torch.ones_like(weights))
