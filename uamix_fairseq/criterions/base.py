"""What the uamix criteria share: metrics from a table, the update counter and random
stream, input mixing, and the global batch of all data-parallel ranks.

- ``UamixCriterion``: ``reduce_metrics`` from the class's ``METRICS`` table (every
  logging output is a sum over the ranks' batches, divided here by the summed batch);
  ``reduce_more`` for what a table cannot say.
- ``MixingCriterion``: + the update counter (the task calls ``set_num_updates``), the
  per-update random stream (``seeding.py``, stream "mixing") and ``mix`` (T-CutMix and
  the other input mixtures of view 1, configured by ``MixingConfig``).
- ``GlobalBatch``: this rank's rows inside the batch of every rank.
"""

import math
from dataclasses import dataclass, field

import torch
from fairseq import metrics
from fairseq.criterions import FairseqCriterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..modules.distributed import gather_rows, rank_and_world
from ..modules.mixing import MIX_MODES, PARTNER_MODES, mix_batch
from ..modules.seeding import step_generator
from .logging_sums import logged_total

BITS = 1 / math.log(2)  # losses are logged in bits, as fairseq's own criteria do


class UamixCriterion(FairseqCriterion):
    """Base of every uamix criterion.

    ``METRICS``: rows ``(name, summed key, scale, round)``; each is logged as
    ``scale * sum(key) / sum(sample_size)``, weighted by the batch, when some logging
    output has the key.
    """

    METRICS = ()

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        n = logged_total(logging_outputs, "sample_size")
        if n == 0:
            return
        for name, key, scale, digits in cls.METRICS:
            if any(key in log for log in logging_outputs):
                metrics.log_scalar(name, scale * logged_total(logging_outputs, key) / n, n,
                                   round=digits)
        cls.reduce_more(logging_outputs, n)

    @classmethod
    def reduce_more(cls, logging_outputs, n: float) -> None:
        """Metrics beyond the table (e.g. with another denominator)."""

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


@dataclass
class MixingConfig(FairseqDataclass):
    """The input-mixing fields, shared by every criterion that mixes view 1."""

    mix_mode: ChoiceEnum(list(MIX_MODES)) = field(
        default="tcutmix",
        metadata={"help": "[R] input mixing for L_mix: none (plain NNCLR tuning, like "
                  "MAE-CT), tcutmix (paper default), tfcutmix or mixup"},
    )
    mix_weight: float = field(default=1.0, metadata={"help": "[R] w_mix in L_clean + w_mix * L_mix"})
    mix_alpha: float = field(default=1.0, metadata={"help": "[R] lambda ~ Beta(alpha, alpha)"})
    mix_partner: ChoiceEnum(list(PARTNER_MODES)) = field(
        default="reverse",
        metadata={"help": "[R] which clip each clip is mixed with: reversed batch order "
                  "(j = B-1-i) or a random permutation"},
    )
    mix_snap: int = field(
        default=1,
        metadata={"help": "[R] T-CutMix cut length and start on a grid of this many frames "
                  "(16 = patch aligned; 1 = any frame)"},
    )
    seed: int = II("common.seed")


def check_mixing_config(cfg: MixingConfig, task):
    """The mixing fields at start-up, not at the first T-CutMix step."""
    if cfg.mix_weight < 0:
        raise ValueError(f"criterion.mix_weight must be >= 0, got {cfg.mix_weight}")
    if not cfg.mix_alpha > 0:
        raise ValueError(f"criterion.mix_alpha must be > 0, got {cfg.mix_alpha}")
    if cfg.mix_snap < 1:
        raise ValueError(f"criterion.mix_snap must be >= 1 (1 = cut anywhere, 16 = on "
                         f"patch boundaries), got {cfg.mix_snap}")
    num_frames = getattr(getattr(task, "cfg", None), "num_frames", None)
    if cfg.mix_mode == "tcutmix" and isinstance(num_frames, int) and num_frames % cfg.mix_snap:
        raise ValueError(f"criterion.mix_snap={cfg.mix_snap} must divide task.num_frames="
                         f"{num_frames} (T-CutMix cuts on that grid); choose a divisor, "
                         "e.g. 1 or 16")


class MixingCriterion(UamixCriterion):
    """Base of the criteria that mix view 1 (``cfg``: a ``MixingConfig``)."""

    def __init__(self, cfg: MixingConfig, task):
        super().__init__(task)
        check_mixing_config(cfg, task)
        self.cfg = cfg
        self.num_updates = 0

    def set_num_updates(self, num_updates):
        """Called by the task before each training step (fairseq does not)."""
        self.num_updates = num_updates

    def _generator(self):
        """Same stream on resume; different on every rank and update."""
        rank, _ = rank_and_world()
        return step_generator(self.cfg.seed, self.num_updates, "mixing", rank)

    def mix(self, view1, gen):
        """(mixed, lam, partner) of view 1 for L_mix, or (None, None, None) when off."""
        if self.cfg.mix_mode == "none" or self.cfg.mix_weight == 0:
            return None, None, None
        return mix_batch(view1, self.cfg.mix_mode, self.cfg.mix_alpha,
                         self.cfg.mix_partner, self.cfg.mix_snap, gen)


class GlobalBatch:
    """This rank's ``size`` rows within the batch of every data-parallel rank.

    In training (``gather``) ``rows(x)`` returns every rank's rows of ``x``, in rank
    order, and the offset of this rank's; in validation this rank's alone (offset 0),
    because fairseq does not tell valid_step which batches are dummies. ``real`` marks
    this rank's real rows (none in a dummy batch), ``real_all`` every rank's, and
    ``local`` is the slice of this rank's rows in the gathered batch.
    """

    def __init__(self, sample, size: int, device, gather: bool):
        self.gather = gather
        self.real = torch.full((size,), not sample.get("is_dummy", False), device=device)
        self.real_all, self.offset = self.rows(self.real)
        self.local = slice(self.offset, self.offset + size)

    def rows(self, x, with_grad: bool = False):
        """(rows of every rank, this rank's offset); ``with_grad``: gradients flow back
        to this rank's own rows (the others' are constants)."""
        return gather_rows(x, with_grad) if self.gather else (x, 0)
