"""NNCLR pieces: the projector/predictor head, the support queue and the losses.

References: Dwibedi et al., "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations" (NNCLR, ICCV 2021), and, for the
soft-target loss on mixtures, uaMix-MAE (ICASSP 2024) and i-Mix / Un-Mix. Choices marked
[R] in docs/method.md ("NNCLR head, queue and losses", "Soft targets") are arguments
with the defaults given there.

Nothing here knows about audio or fairseq: inputs are embeddings.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class FloatBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d without the integer ``num_batches_tracked`` buffer.

    With a fixed momentum that counter is never read, and an integer tensor in the model
    state breaks fairseq's checkpoint averaging; so the state holds floats only.
    """

    def __init__(self, num_features: int, affine: bool = True):
        super().__init__(num_features, affine=affine, momentum=0.1)
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        # A state without version metadata (e.g. from checkpoint averaging) would make
        # BatchNorm add the counter back; a counter from elsewhere is simply dropped.
        state_dict.pop(prefix + "num_batches_tracked", None)
        local_metadata = {**local_metadata, "version": 2}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


def mlp(dims, bias_last: bool = True, bn_last: bool = False) -> nn.Sequential:
    """Linear(no bias) -> BN -> ReLU for every hidden layer; a plain last Linear,
    optionally followed by BN (the projector's output BN)."""
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=bias_last if last else False))
        if not last:
            layers += [FloatBatchNorm1d(b), nn.ReLU(inplace=True)]
        elif bn_last:
            layers.append(FloatBatchNorm1d(b))
    return nn.Sequential(*layers)


class NNCLRHead(nn.Module):
    """Projector g: y [B, D] -> z [B, out] and predictor q: z -> p [B, out].

    Default sizes [R, NNCLR / MAE-CT]: projector D-2048-2048-256 with BN after every
    layer, predictor 256-4096-256.
    """

    def __init__(self, in_dim: int, proj_hidden_dim: int = 2048, proj_layers: int = 3,
                 out_dim: int = 256, pred_hidden_dim: int = 4096):
        super().__init__()
        if proj_layers < 1:
            raise ValueError(f"projector needs at least one layer, got {proj_layers}")
        dims = [in_dim] + [proj_hidden_dim] * (proj_layers - 1) + [out_dim]
        self.projector = mlp(dims, bias_last=True, bn_last=True)
        self.predictor = mlp([out_dim, pred_hidden_dim, out_dim])

    def forward(self, y) -> Tuple[torch.Tensor, torch.Tensor]:
        z = self.projector(y)
        return z, self.predictor(z)


class SupportQueue(nn.Module):
    """FIFO support set of L2-normalised projections, with each entry's dataset index.

    The index makes self-exclusion possible: a clip never finds its own earlier
    projection as nearest neighbour. Everything is stored as float tensors (indices are
    exact in float64), so fairseq can save, restore and average checkpoints holding it.
    ``dataset_id`` names the dataset the indices point into (0 = not known); an
    element-wise average of checkpoints is not a valid queue, which ``problem()``
    detects (see there).
    """

    def __init__(self, size: int, dim: int, dataset_id: int = 0):
        super().__init__()
        if size < 1:
            raise ValueError(f"support queue size must be >= 1, got {size}")
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("indices", torch.full((size,), -1.0, dtype=torch.float64))
        # [pointer, filled], floats for the reason above.
        self.register_buffer("state", torch.zeros(2, dtype=torch.float64))
        # Below 2**53, so exact in float64.
        self.register_buffer("dataset_id", torch.tensor([float(dataset_id)],
                                                        dtype=torch.float64))

    @torch.no_grad()
    def reset(self):
        """Empty, as at the start (the dataset id stays)."""
        self.features.zero_()
        self.indices.fill_(-1.0)
        self.state.zero_()

    def problem(self, entries: dict, num_clips: Optional[int] = None) -> Optional[str]:
        """Why the saved queue ``entries`` ({buffer name: tensor}) cannot be loaded into
        this queue, or None when it can. Catches a different size, a different
        dataset, and what averaging checkpoints makes: fractional or out-of-range
        indices or pointer, and features that are no longer unit vectors (the mean of
        two different unit vectors is shorter than 1)."""
        missing = [k for k in ("features", "indices", "state") if k not in entries]
        if missing:
            return f"the saved queue lacks {', '.join(missing)}"
        feats, idx, state = (entries[k].detach().cpu().double()
                             for k in ("features", "indices", "state"))
        if tuple(feats.shape) != tuple(self.features.shape) or idx.shape != self.indices.shape:
            return (f"the saved queue holds {feats.shape[0]} entries of size "
                    f"{feats.shape[-1]}, this model's {self.size} of size "
                    f"{self.features.shape[1]}")
        saved_id = float(entries.get("dataset_id", torch.zeros(1))[0])
        own_id = float(self.dataset_id[0])
        if saved_id and own_id and saved_id != own_id:
            return "its clip indices refer to another dataset (the training manifest changed)"
        if state.shape != (2,) or not torch.equal(state, state.round()):
            return f"its pointer/fill count {state.tolist()} are not whole numbers"
        ptr, filled = int(state[0]), int(state[1])
        if not (0 <= filled <= self.size and 0 <= ptr < self.size) or \
                (filled < self.size and ptr != filled):
            return f"its pointer {ptr} and fill count {filled} do not fit a queue of {self.size}"
        if not torch.equal(idx, idx.round()):
            return "its clip indices are not whole numbers"
        used = idx[:filled]
        if filled and (used.min() < 0 or (num_clips is not None and used.max() >= num_clips)):
            bound = f"[0, {num_clips})" if num_clips is not None else ">= 0"
            return f"its clip indices are not all in {bound}"
        if (idx[filled:] != -1).any():
            return "it has clip indices in slots that are not filled"
        norms = feats[:filled].norm(dim=1)
        if filled and (norms - 1).abs().max() > 1e-3:
            return (f"its features are not unit vectors (norms {float(norms.min()):.3f} to "
                    f"{float(norms.max()):.3f})")
        return None

    def _apply(self, fn, *args, **kwargs):
        # Follow device moves but never dtype casts: fairseq's model.half()/bfloat16()
        # would otherwise round the dataset indices (float64) and the stored features.
        for name, buf in self._buffers.items():
            moved = fn(buf)
            self._buffers[name] = buf.to(moved.device) if moved.dtype != buf.dtype else moved
        return self

    @property
    def size(self) -> int:
        return self.features.shape[0]

    @property
    def filled(self) -> int:
        return int(self.state[1])

    @torch.no_grad()
    def push(self, z: torch.Tensor, indices: torch.Tensor):
        """Enqueue rows of z [n, dim] (already normalised) with their dataset indices."""
        n = z.shape[0]
        if n == 0:
            return
        if n > self.size:  # keep only the newest rows
            z, indices, n = z[-self.size:], indices[-self.size:], self.size
        ptr = int(self.state[0])
        slots = (torch.arange(n, device=z.device) + ptr) % self.size
        self.features[slots] = z.detach().to(self.features.dtype)
        self.indices[slots] = indices.detach().to(self.indices.dtype)
        self.state[0] = (ptr + n) % self.size
        self.state[1] = min(self.size, self.filled + n)

    @torch.no_grad()
    def nearest(self, z: torch.Tensor, indices: Optional[torch.Tensor] = None,
                topk: int = 1, generator=None, return_ids: bool = False):
        """NN(z): for each row of z [n, dim] (normalised), the queue entry with the
        highest cosine similarity, skipping entries with the same dataset index;
        with ``topk`` > 1, one of the top-k drawn uniformly. Rows with no eligible entry
        (empty queue) get themselves back, as NNCLR does before the queue fills.
        With ``return_ids`` also the dataset index of each chosen entry (-1 for none)."""
        if self.filled == 0:
            none = torch.full((z.shape[0],), -1, dtype=torch.long, device=z.device)
            return (z.detach().clone(), none) if return_ids else z.detach().clone()
        bank = self.features[: self.filled] if self.filled < self.size else self.features
        sim = z.detach().to(bank.dtype) @ bank.t()  # [n, Q]
        if indices is not None:
            bank_idx = self.indices[: bank.shape[0]]
            same = indices.to(bank_idx.dtype)[:, None] == bank_idx[None, :]
            sim = sim.masked_fill(same, float("-inf"))
        k = min(topk, bank.shape[0])
        top_sim, top_idx = sim.topk(k, dim=1)
        if k > 1:
            pick = torch.randint(0, k, (z.shape[0], 1), generator=generator).to(z.device)
            top_sim, top_idx = top_sim.gather(1, pick), top_idx.gather(1, pick)
        nn_z = bank[top_idx[:, 0]].to(z.dtype)
        no_neighbour = torch.isinf(top_sim[:, 0])
        out = torch.where(no_neighbour[:, None], z.detach(), nn_z)
        if not return_ids:
            return out
        ids = self.indices[top_idx[:, 0]].long().masked_fill(no_neighbour, -1)
        return out, ids


def contrastive_logits(anchors: torch.Tensor, candidates: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Cosine logits [n, m] between anchors [n, d] and candidates [m, d] over tau."""
    return F.normalize(anchors, dim=-1) @ F.normalize(candidates, dim=-1).t() / temperature


def weight_negatives(logits: torch.Tensor, negative_weights: Optional[torch.Tensor],
                     positives: torch.Tensor) -> torch.Tensor:
    """logits + log w on the negatives: the softmax denominator becomes
    sum over positives of exp(logit) + sum over negatives of w * exp(logit).

    ``negative_weights`` [n, m] (positive; detached here, they are importance weights,
    not something to learn), ``positives`` [n, m] bool: columns that stay unweighted.
    Masked columns (logit -inf) stay at -inf whatever their weight."""
    if negative_weights.shape != logits.shape:
        raise ValueError(f"negative_weights must have the logits' shape {tuple(logits.shape)}"
                         f", got {tuple(negative_weights.shape)}")
    log_w = negative_weights.detach().to(logits.dtype).log().masked_fill(positives, 0.0)
    return logits + log_w


def nnclr_loss(neighbours: torch.Tensor, predictions: torch.Tensor, targets: torch.Tensor,
               temperature: float, column_mask: Optional[torch.Tensor] = None,
               reduction: str = "sum", negative_weights: Optional[torch.Tensor] = None):
    """NNCLR cross entropy: row i of NN(z_i) . p_k / tau should pick column targets[i].

    neighbours [n, d] (local rows), predictions [m, d] (global batch), targets [n]
    (global column of each row's positive). ``column_mask`` [m] bool marks columns that
    may serve as negatives (False for dummy rows). ``negative_weights`` [n, m] (e.g.
    UnReMix, ``uamix_fairseq.modules.unremix``): each negative's exp(logit) in the denominator
    is scaled by its weight; the positive column is never weighted. Returns (loss,
    logits), the logits unweighted.
    """
    logits = contrastive_logits(neighbours, predictions, temperature)
    if column_mask is not None:
        logits = logits.masked_fill(~column_mask[None, :], float("-inf"))
    scored = logits
    if negative_weights is not None:
        positives = torch.zeros_like(logits, dtype=torch.bool)
        positives[torch.arange(logits.shape[0], device=logits.device), targets] = True
        scored = weight_negatives(logits, negative_weights, positives)
    return F.cross_entropy(scored, targets, reduction=reduction), logits


def soft_target_matrix(lam: torch.Tensor, own: torch.Tensor, partner: torch.Tensor,
                       num_columns: int, dtype=torch.float32) -> torch.Tensor:
    """Soft targets [n, num_columns]: lam[i] at column own[i], 1 - lam[i] at column
    partner[i] (both on the same column when a clip is paired with itself)."""
    target = torch.zeros(own.shape[0], num_columns, dtype=dtype, device=own.device)
    rows = torch.arange(own.shape[0], device=own.device)
    target.index_put_((rows, own), lam.to(dtype), accumulate=True)
    target.index_put_((rows, partner), (1 - lam).to(dtype), accumulate=True)
    return target


def soft_target_loss(predictions: torch.Tensor, neighbours: torch.Tensor,
                     lam: torch.Tensor, own: torch.Tensor, partner: torch.Tensor,
                     temperature: float, column_mask: Optional[torch.Tensor] = None,
                     reduction: str = "sum", negative_weights: Optional[torch.Tensor] = None):
    """The virtual-label loss for mixtures (uaMix-MAE, Fig. 1) [R].

    logits[i, k] = p(m_i) . NN(z2_k) / tau over the global batch; the soft target of row
    i puts lam[i] on column own[i] and 1 - lam[i] on column partner[i] (the same column
    gets both when a clip is paired with itself). ``negative_weights`` [n, m] scale the
    negatives in the softmax denominator as in ``nnclr_loss``; columns carrying target
    mass count as positives and stay unweighted. Returns (loss, logits), the logits
    unweighted.
    """
    logits = contrastive_logits(predictions, neighbours, temperature)
    if column_mask is not None:
        logits = logits.masked_fill(~column_mask[None, :], float("-inf"))
    target = soft_target_matrix(lam, own, partner, logits.shape[1], logits.dtype)
    scored = logits
    if negative_weights is not None:
        scored = weight_negatives(logits, negative_weights, target > 0)
    log_prob = torch.log_softmax(scored, dim=1)
    # 0 * -inf would be NaN on masked columns; their target is always 0.
    per_row = -(target * log_prob.masked_fill(target == 0, 0.0)).sum(dim=1)
    loss = per_row.sum() if reduction == "sum" else per_row.mean()
    return loss, logits


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float):
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter;
    buffers (BatchNorm statistics) are copied from ``online``."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)
