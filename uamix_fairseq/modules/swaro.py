"""SwARo pieces: prototypes, Sinkhorn-Knopp codes, the swapped-prediction loss, the
derangement and the targeted attack towards another clip's codes.

References: Caron et al., "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments" (SwAV, NeurIPS 2020) for prototypes, Sinkhorn codes and the swapped
prediction; Wahed, Tabassum, Lourentzou, "Adversarial Contrastive Learning by Permuting
Cluster Assignments" (SwARo, arXiv 2204.10314) for adversarial views made by pushing a
clip's assignment towards a permuted one. SwARo has no public code: every choice here is
a reconstruction [R] (docs/method.md, "SwARo"), with SwAV's defaults where SwAV has one.

The optional SwAV feature queue is ``nnclr.SupportQueue`` (float-only, dtype-stable
storage of normalised projections), used here only to enlarge the Sinkhorn problem.

Nothing here knows about audio or fairseq: inputs are embeddings and score functions.
"""

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import pgd_linf
from .nnclr import mlp


class Prototypes(nn.Module):
    """K learnable prototypes [K, dim], L2-normalised in every forward:
    scores [n, K] = cosine similarity of normalised projections [n, dim] to each
    prototype. Normalising in the forward (SwAV normalises the weights in place after
    each step) keeps the model state the optimizer's master weights, also in bf16/fp16.
    """

    def __init__(self, dim: int, num_prototypes: int):
        super().__init__()
        if num_prototypes < 2:
            raise ValueError(f"need at least 2 prototypes, got {num_prototypes}")
        self.weight = nn.Parameter(torch.randn(num_prototypes, dim) / math.sqrt(dim))

    def forward(self, z_hat: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        w = F.normalize(self.weight, dim=-1)
        if frozen:  # SwAV keeps the prototypes fixed for the first updates
            w = w.detach()
        return z_hat @ w.t()


class PrototypeHead(nn.Module):
    """Projector g: y [B, D] -> z [B, out], normalised, then prototype scores [B, K].

    The projector is NNCLR's (uamix_fairseq.modules.nnclr.mlp, same sizes and parameter names
    ``projector.*``), so a checkpoint tuned with NNCLR can start a SwARo run; SwAV has no
    predictor, so there is none here.
    """

    def __init__(self, in_dim: int, proj_hidden_dim: int = 2048, proj_layers: int = 3,
                 out_dim: int = 256, num_prototypes: int = 3000):
        super().__init__()
        if proj_layers < 1:
            raise ValueError(f"projector needs at least one layer, got {proj_layers}")
        dims = [in_dim] + [proj_hidden_dim] * (proj_layers - 1) + [out_dim]
        self.projector = mlp(dims, bias_last=True, bn_last=True)
        self.prototypes = Prototypes(out_dim, num_prototypes)

    def forward(self, y, freeze_prototypes: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        z_hat = F.normalize(self.projector(y), dim=-1)
        return z_hat, self.prototypes(z_hat, frozen=freeze_prototypes)


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, iterations: int = 3, epsilon: float = 0.05) -> torch.Tensor:
    """Balanced soft assignments (SwAV's codes) of n samples to K prototypes.

    Solves the entropy-regularised transport of ``scores`` [n, K] (cosine similarities)
    with uniform marginals: prototype columns should each receive n / K of the mass,
    every sample row exactly 1. Each iteration scales the columns, then the rows, so
    rows sum to 1 exactly and columns to n / K up to the convergence reached after
    ``iterations`` (SwAV: 3). Runs in the log domain in float32: no overflow for any
    ``epsilon`` (SwAV: 0.05). Returns codes [n, K], no gradient.
    """
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ValueError(f"sinkhorn expects scores [n >= 1, K], got {tuple(scores.shape)}")
    if iterations < 1:
        raise ValueError(f"sinkhorn needs iterations >= 1, got {iterations}")
    if not epsilon > 0:
        raise ValueError(f"sinkhorn epsilon must be > 0, got {epsilon}")
    n, k = scores.shape
    log_q = scores.float() / epsilon
    for _ in range(iterations):
        # Columns (prototypes) to n / K each, then rows (samples) to 1 each.
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) + math.log(n / k)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
    return log_q.exp()


@torch.no_grad()
def balanced_codes(scores: torch.Tensor, iterations: int, epsilon: float,
                   valid: Optional[torch.Tensor] = None,
                   extra_scores: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sinkhorn codes [n, K] for the rows of ``scores`` [n, K].

    ``valid`` [n] bool: only these rows take part (others, e.g. fairseq's dummy batch,
    get uniform codes and do not shift anyone's assignment). ``extra_scores`` [m, K]
    (SwAV's queue) join the transport problem as further samples; their codes are
    dropped.
    """
    n, k = scores.shape
    codes = torch.full((n, k), 1.0 / k, device=scores.device, dtype=torch.float32)
    rows = torch.arange(n, device=scores.device) if valid is None else valid.nonzero()[:, 0]
    if rows.numel() == 0:
        return codes
    problem = scores[rows].float()
    if extra_scores is not None and extra_scores.shape[0] > 0:
        problem = torch.cat([problem, extra_scores.float()])
    codes[rows] = sinkhorn(problem, iterations, epsilon)[: rows.numel()]
    return codes


def swapped_prediction_loss(scores: torch.Tensor, codes: torch.Tensor,
                            temperature: float) -> torch.Tensor:
    """Per-row cross entropy [n] between target codes [n, K] (soft, rows sum to 1) and
    the softmax of prototype scores [n, K] over ``temperature`` (SwAV: 0.1). Computed
    in float32."""
    log_p = torch.log_softmax(scores.float() / temperature, dim=1)
    return -(codes.float() * log_p).sum(dim=1)


def derangement(n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A uniformly random permutation of range(n) with no fixed point (i -> perm[i] != i),
    by rejection of random permutations (on average e ~ 2.7 draws). Needs n >= 2."""
    if n < 2:
        raise ValueError(f"a permutation without fixed points needs n >= 2 items, got {n}")
    ar = torch.arange(n)
    while True:
        perm = torch.randperm(n, generator=generator)
        if not (perm == ar).any():
            return perm


def targeted_attack(score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    targets: torch.Tensor, temperature: float, eps: float, steps: int,
                    step_size: float, random_start: bool = True,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """SwARo's adversarial view [R]: projected PGD (L-infinity ball of radius ``eps``
    around ``x``) that lowers the swapped-prediction loss of ``score_fn(x_adv)``
    towards ``targets`` [n, K] (another clip's codes), i.e. pushes each row's predicted
    assignment towards its target. Only the input gets gradients (attacks.pgd_linf).
    Returns the detached adversarial input."""

    def ascent(v):
        return -swapped_prediction_loss(score_fn(v), targets, temperature).sum()

    return pgd_linf(x, ascent, eps, steps, step_size, random_start, generator)
