"""BatchNorm over the global batch of all data-parallel ranks (``model.sync_batchnorm``).

Contrastive methods trained at scale (SimCLR, BYOL, NNCLR) compute the projector's and
predictor's BatchNorm statistics over the whole global batch, not per GPU: with small
per-GPU batches the per-rank statistics are noisy and differ between ranks.

Why not ``torch.nn.SyncBatchNorm``: it refuses CPU tensors (so it cannot be tested with
gloo ranks here, nor used for CPU multi-process training), and converting to it brings
back the integer ``num_batches_tracked`` buffer that ``FloatBatchNorm1d`` removes for
fairseq's checkpoint averaging. ``GlobalBatchNorm1d`` is a drop-in subclass of
``FloatBatchNorm1d`` with the same state dict, so checkpoints load either way.

How: each rank computes, per feature, its row count n_r, mean m_r and sum of squared
deviations M2_r (in float32, or float64 for float64 input); one autograd-aware ``all_gather`` of the [3, C] triple; then
Chan's parallel merge, which stays exact where E[x^2] - E[x]^2 would cancel:

    N = sum n_r,  mean = sum n_r m_r / N,  M2 = sum (M2_r + n_r (m_r - mean)^2)
    y = (x - mean) / sqrt(M2 / N + eps) * weight + bias

The gather's backward sends each rank the gradients of the statistics from every rank,
so the input gradients equal those of one process on the concatenated batch; the
weight/bias gradients are each rank's share, which DDP sums. Running statistics follow
torch's convention (unbiased variance M2 / (N - 1), momentum 0.1) and so are identical on
every rank. Outside training, or without an initialised process group of more than one
rank, this is plain BatchNorm.

Every rank must call it the same number of times (it is a collective): fairseq's dummy
batches run the model too, so they do; their rows (a repeat of an earlier batch) then
count in the statistics of that step.
"""

import torch
from torch import nn

from .distributed import is_distributed
from .nnclr import FloatBatchNorm1d


def global_batch_moments(x: torch.Tensor):
    """(mean [C], biased variance [C], total rows [C]) of x [n, C] over every rank's
    rows, differentiable with respect to x. Tensors only (no host sync on a GPU)."""
    from torch.distributed.nn.functional import all_gather

    n = x.shape[0]
    count = x.new_full((x.shape[1],), float(n))
    mean = x.mean(dim=0) if n else x.new_zeros(x.shape[1])
    m2 = ((x - mean) ** 2).sum(dim=0)
    parts = torch.stack(all_gather(torch.stack([count, mean, m2])))  # [W, 3, C]
    counts, means, m2s = parts.unbind(1)
    total = counts.sum(dim=0)
    g_mean = (counts * means).sum(dim=0) / total
    g_m2 = (m2s + counts * (means - g_mean) ** 2).sum(dim=0)
    return g_mean, g_m2 / total, total


class GlobalBatchNorm1d(FloatBatchNorm1d):
    """BatchNorm1d on [B, C] whose training statistics are those of the global batch."""

    def forward(self, x):
        if not (self.training and is_distributed()):
            return super().forward(x)
        if x.ndim != 2:
            raise ValueError(f"GlobalBatchNorm1d expects [B, C], got {tuple(x.shape)}")
        # Statistics in float32 at least, whatever the model's precision.
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        mean, var, total = global_batch_moments(xf)
        with torch.no_grad():
            m = self.momentum
            unbiased = var * total / (total - 1).clamp(min=1)
            self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
            self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.to(xf.dtype) + self.bias.to(xf.dtype)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``FloatBatchNorm1d`` in ``module`` by a ``GlobalBatchNorm1d`` with
    the same parameters and buffers (in place; returns ``module``)."""
    for name, child in module.named_children():
        if isinstance(child, FloatBatchNorm1d) and not isinstance(child, GlobalBatchNorm1d):
            new = GlobalBatchNorm1d(child.num_features, affine=child.affine)
            new.eps, new.momentum = child.eps, child.momentum
            new.load_state_dict(child.state_dict())
            new.to(child.running_mean)  # same device and dtype
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child)
    return module

