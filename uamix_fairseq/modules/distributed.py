"""Gathers across data-parallel ranks, for contrastive losses over the global batch.

fairseq never gathers negatives across GPUs, so the loss does it here. Ranks may hold
batches of different sizes (the last batch of an epoch): rows are padded to the largest
size before the collective and the padding is removed afterwards, so every rank runs the
same collectives with the same shapes and nothing hangs.
"""

from typing import List, Tuple

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> Tuple[int, int]:
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _gathered_sizes(n: int, device) -> List[int]:
    size = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    if x.shape[0] == rows:
        return x
    pad = x.new_zeros((rows - x.shape[0],) + tuple(x.shape[1:]))
    return torch.cat([x, pad], dim=0)


def gather_rows(x: torch.Tensor, with_grad: bool = True) -> Tuple[torch.Tensor, int]:
    """Concatenate ``x`` [n_r, ...] from every rank in rank order.

    Returns ``(gathered [sum n_r, ...], offset)`` where ``offset`` is where this rank's
    rows start. With ``with_grad`` the gather carries gradients back to the rank that
    owns each row (``torch.distributed.nn.functional.all_gather``), so a loss over the
    global batch trains every rank's encoder correctly. Single process: returns x, 0.
    """
    if not is_distributed():
        return x, 0
    rank = dist.get_rank()
    sizes = _gathered_sizes(x.shape[0], x.device)
    padded = _pad_rows(x, max(sizes))
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.detach().contiguous())
    out = torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)
    return out, sum(sizes[:rank])
