"""fairseq criterion `uamix_nnclr`: L = L_clean + mix_weight * L_mix (docs/method.md).

- L_clean: symmetric NNCLR loss between the two views, negatives from the global batch.
- L_mix: the mixture of view 1 (T-CutMix, TF-CutMix or mixup) should predict the
  nearest neighbours of view 2 of both of its sources, with soft targets lambda and
  1 - lambda (the "virtual labels").

The loss functions live in ``uamix_fairseq.nnclr``, the mixing in
``uamix_fairseq.mixing``; this class gathers across ranks, updates the queue and logs.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..distributed import gather_rows, rank_and_world
from ..mixing import MIX_MODES, PARTNER_MODES, mix_batch
from ..nnclr import nnclr_loss, soft_target_loss
from .logging_sums import logged_total


@dataclass
class UamixNNCLRConfig(FairseqDataclass):
    temperature: float = field(default=0.15, metadata={"help": "[R] softmax temperature tau"})
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
    nn_topk: int = field(
        default=1,
        metadata={"help": "[R] nearest neighbour drawn uniformly among the top-k queue "
                  "entries (1 = the nearest)"},
    )
    seed: int = II("common.seed")


@register_criterion("uamix_nnclr", dataclass=UamixNNCLRConfig)
class UamixNNCLRCriterion(FairseqCriterion):
    def __init__(self, cfg: UamixNNCLRConfig, task):
        super().__init__(task)
        if not cfg.temperature > 0:
            raise ValueError(f"criterion.temperature must be > 0, got {cfg.temperature}")
        if cfg.mix_weight < 0:
            raise ValueError(f"criterion.mix_weight must be >= 0, got {cfg.mix_weight}")
        if not cfg.mix_alpha > 0:
            raise ValueError(f"criterion.mix_alpha must be > 0, got {cfg.mix_alpha}")
        if cfg.nn_topk < 1:
            raise ValueError(f"criterion.nn_topk must be >= 1, got {cfg.nn_topk}")
        self.cfg = cfg
        self.num_updates = 0

    def set_num_updates(self, num_updates):
        """Called by the task before each training step (fairseq does not)."""
        self.num_updates = num_updates

    def _generator(self):
        rank, _ = rank_and_world()
        # Same stream on resume; different on every rank and update.
        seed = (self.cfg.seed * 1_000_003 + self.num_updates) * 101 + rank
        return torch.Generator().manual_seed(seed % (2**63))

    def mix(self, view1, gen):
        """(mixed, lam, partner) of view 1 for L_mix, or (None, None, None) when off."""
        if self.cfg.mix_mode == "none" or self.cfg.mix_weight == 0:
            return None, None, None
        return mix_batch(view1, self.cfg.mix_mode, self.cfg.mix_alpha,
                         self.cfg.mix_partner, self.cfg.mix_snap, gen)

    def forward(self, model, sample, reduce=True):
        net_input = sample["net_input"]
        view1, view2 = net_input["view1"], net_input["view2"]
        gen = self._generator()
        mixed, lam, partner = self.mix(view1, gen)
        out = model(view1=view1, view2=view2, mixed=mixed)
        loss, logging_output = self.contrastive_loss(model, sample, out, lam, partner, gen)
        return loss, view1.shape[0], logging_output

    def contrastive_loss(self, model, sample, out, lam, partner, gen):
        """L_clean + mix_weight * L_mix from the model's outputs ``out`` (z1, p1, z2, p2
        and pm when mixing); updates the support queue in training. Returns (loss,
        logging output). Shared by the criteria built on this one."""
        view1 = sample["net_input"]["view1"]
        b = view1.shape[0]
        # Losses in float32 whatever precision the model runs in.
        out = {k: v.float() for k, v in out.items() if k[0] in "zp"}
        queue = model.support_queue
        ids = sample["id"].to(view1.device)
        real = torch.full((b,), not sample.get("is_dummy", False), device=view1.device)

        z1, z2 = F.normalize(out["z1"], dim=-1), F.normalize(out["z2"], dim=-1)
        nn1 = queue.nearest(z1, ids, self.cfg.nn_topk, gen)
        nn2 = queue.nearest(z2, ids, self.cfg.nn_topk, gen)

        # Training: negatives from the global batch; predictions carry gradients back
        # to their rank, the rest not. Validation: local negatives only, because
        # fairseq does not tell valid_step which batches are dummies.
        def global_rows(x, with_grad):
            return gather_rows(x, with_grad) if model.training else (x, 0)

        p1_all, offset = global_rows(out["p1"], True)
        p2_all, _ = global_rows(out["p2"], True)
        real_all, _ = global_rows(real, False)
        targets = torch.arange(b, device=view1.device) + offset

        loss12, logits12 = nnclr_loss(nn1, p2_all, targets, self.cfg.temperature, real_all)
        loss21, _ = nnclr_loss(nn2, p1_all, targets, self.cfg.temperature, real_all)
        clean = 0.5 * (loss12 + loss21)
        loss = clean
        mix_loss = torch.zeros((), device=view1.device)
        if lam is not None:
            nn2_all, _ = global_rows(nn2, False)
            mix_loss, _ = soft_target_loss(out["pm"], nn2_all, lam, targets,
                                           partner.to(view1.device) + offset,
                                           self.cfg.temperature, real_all)
            loss = clean + self.cfg.mix_weight * mix_loss

        if model.training:
            z1_all, _ = gather_rows(z1.detach(), with_grad=False)
            ids_all, _ = gather_rows(ids, with_grad=False)
            keep = real_all.bool()
            queue.push(z1_all[keep], ids_all[keep])

        correct = (logits12.argmax(dim=1) == targets).sum()
        logging_output = {
            "loss": loss.detach(),
            "clean_loss": clean.detach(),
            "mix_loss": mix_loss.detach(),
            "ntokens": b,
            "nsentences": b,
            "sample_size": b,
            "correct": correct.detach(),
            # Summed over ranks and divided by the summed batch size in reduce_metrics,
            # so values that are equal on every rank come out as themselves.
            "lam_x_n": float(lam.sum()) if lam is not None else 0.0,
            "queue_fill_x_n": queue.filled / queue.size * b,
            "trainable_blocks_x_n": float(model.trainable_blocks * b),
        }
        return loss, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return logged_total(logging_outputs, key)

        n = total("sample_size")
        if n == 0:
            return
        metrics.log_scalar("loss", total("loss") / n / math.log(2), n, round=3)
        metrics.log_scalar("clean_loss", total("clean_loss") / n / math.log(2), n, round=3)
        metrics.log_scalar("mix_loss", total("mix_loss") / n / math.log(2), n, round=3)
        metrics.log_scalar("accuracy", 100.0 * total("correct") / n, n, round=2)
        metrics.log_scalar("lam", total("lam_x_n") / n, n, round=3)
        metrics.log_scalar("queue_fill", total("queue_fill_x_n") / n, n, round=3)
        metrics.log_scalar("trainable_blocks", total("trainable_blocks_x_n") / n, n, round=1)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
