"""One helper for every per-step random stream of training.

Each stream is ``((seed * a + step) * b + offset) mod 2**64``, with ``(a, b)`` fixed per
stream so that streams never coincide, ``step`` the update number (or a negative
per-batch number in validation) and ``offset`` the rank (or a constant for a stream
that must be equal on every rank). The same seed, step and rank give the same stream on
resume, and the mod keeps negative values where ``torch.Generator.manual_seed`` puts
them (it reads a negative seed as seed + 2**64).
"""

import torch

STREAMS = {
    "features": (7919, 131),        # views and MAE masks (tasks)
    "labels": (104_729, 257),       # mixup and SpecAugment of fine-tuning
    "mixing": (1_000_003, 101),     # T-CutMix partners and ratios (criteria)
}
SHARED = 7_919  # the offset of a stream equal on every rank


def step_seed(seed: int, step: int, stream: str, offset: int = 0) -> int:
    """The seed of ``stream`` (a key of STREAMS) at ``step`` for rank ``offset``."""
    a, b = STREAMS[stream]
    return ((seed * a + step) * b + offset) % (2**64)


def step_generator(seed: int, step: int, stream: str, offset: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``step_seed``."""
    return torch.Generator().manual_seed(step_seed(seed, step, stream, offset))
