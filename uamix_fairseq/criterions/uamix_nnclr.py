"""fairseq criterion `uamix_nnclr`: L = L_clean + mix_weight * L_mix (docs/method.md,
"Contrastive tuning (stage 2)").

- L_clean: symmetric NNCLR loss between the two views, negatives from the global batch.
- L_mix: the mixture of view 1 (T-CutMix, TF-CutMix or mixup) should predict the
  nearest neighbours of view 2 of both of its sources, with soft targets lambda and
  1 - lambda (the "virtual labels").
- Optionally (``unremix``), every negative of every row of the three logit matrices is
  weighted in the softmax denominator by UnReMix (``uamix_fairseq.unremix``), the
  weights computed from the gathered global batch so that all ranks agree.

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
from ..monitor import neighbour_purity
from ..nnclr import nnclr_loss, soft_target_loss, soft_target_matrix
from ..seeding import step_generator
from ..unremix import NORMS, UnReMixConfig, negative_weights
from .logging_sums import logged_total


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


@dataclass
class UamixNNCLRConfig(MixingConfig):
    temperature: float = field(default=0.15, metadata={"help": "[R] softmax temperature tau"})
    nn_topk: int = field(
        default=1,
        metadata={"help": "[R] nearest neighbour drawn uniformly among the top-k queue "
                  "entries (1 = the nearest)"},
    )
    positive: ChoiceEnum(["nn", "view"]) = field(
        default="nn",
        metadata={"help": "[R] what a view's prediction must pick out: nn = the other "
                  "view's nearest neighbour in the support queue (NNCLR), view = the "
                  "other view's own projection (SimCLR-style; no queue needed, the "
                  "baseline NNCLR is compared with on small data)"},
    )
    unremix: bool = field(
        default=False,
        metadata={"help": "[R] UnReMix: weight every negative in the softmax denominator "
                  "(clean and mixed rows) by a mix of anchor similarity, model "
                  "uncertainty and representativeness; positives and soft targets unchanged"},
    )
    unremix_coef_similarity: float = field(
        default=1.0,
        metadata={"help": "[R] UnReMix coefficient of the anchor similarity term "
                  "(cosine between anchor and negative)"},
    )
    unremix_coef_uncertainty: float = field(
        default=1.0,
        metadata={"help": "[R] UnReMix coefficient of the model uncertainty term (norm of "
                  "the last-layer gradient of the negative's own instance-discrimination "
                  "row, closed form ||softmax - target||)"},
    )
    unremix_coef_representativeness: float = field(
        default=1.0,
        metadata={"help": "[R] UnReMix coefficient of the representativeness term (mean "
                  "cosine distance of the negative to the row's other negatives; a "
                  "negative coefficient favours central negatives instead)"},
    )
    unremix_norm: ChoiceEnum(list(NORMS)) = field(
        default="minmax",
        metadata={"help": "[R] per-row normalisation of each UnReMix term over the row's "
                  "negatives, to [0, 1]: minmax, zscore (through a logistic) or rank"},
    )
    unremix_mean_one: bool = field(
        default=True,
        metadata={"help": "[R] divide each row's UnReMix weights by their mean over the "
                  "row's negatives"},
    )
    unremix_floor: float = field(
        default=0.05,
        metadata={"help": "[R] lower bound of the mixed UnReMix weight (before the mean-one "
                  "division), so that every negative stays in the loss; must be > 0"},
    )


def check_mix_snap(cfg, task):
    """criterion.mix_snap at start-up, not at the first T-CutMix step."""
    if cfg.mix_snap < 1:
        raise ValueError(f"criterion.mix_snap must be >= 1 (1 = cut anywhere, 16 = on "
                         f"patch boundaries), got {cfg.mix_snap}")
    num_frames = getattr(getattr(task, "cfg", None), "num_frames", None)
    if cfg.mix_mode == "tcutmix" and isinstance(num_frames, int) and num_frames % cfg.mix_snap:
        raise ValueError(f"criterion.mix_snap={cfg.mix_snap} must divide task.num_frames="
                         f"{num_frames} (T-CutMix cuts on that grid); choose a divisor, "
                         "e.g. 1 or 16")


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
        check_mix_snap(cfg, task)
        self.cfg = cfg
        self.num_updates = 0
        self.unremix = None
        if cfg.unremix:
            self.unremix = UnReMixConfig(
                similarity=cfg.unremix_coef_similarity,
                uncertainty=cfg.unremix_coef_uncertainty,
                representativeness=cfg.unremix_coef_representativeness,
                norm=str(cfg.unremix_norm), mean_one=cfg.unremix_mean_one,
                floor=cfg.unremix_floor, field_prefix="criterion.unremix_")

    def set_num_updates(self, num_updates):
        """Called by the task before each training step (fairseq does not)."""
        self.num_updates = num_updates

    def _generator(self):
        rank, _ = rank_and_world()
        # Same stream on resume; different on every rank and update.
        return step_generator(self.cfg.seed, self.num_updates, "mixing", rank)

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
        nn1, nn1_ids = queue.nearest(z1, ids, self.cfg.nn_topk, gen, return_ids=True)
        nn2 = queue.nearest(z2, ids, self.cfg.nn_topk, gen)
        if self.cfg.positive == "view":
            # The clip's own other view (with its gradient) instead of a neighbour; the
            # queue is still filled, for the purity diagnostic.
            nn1, nn2 = z1, z2

        # Training: negatives from the global batch; predictions carry gradients back
        # to their rank, the rest not. Validation: local negatives only, because
        # fairseq does not tell valid_step which batches are dummies.
        def global_rows(x, with_grad):
            return gather_rows(x, with_grad) if model.training else (x, 0)

        p1_all, offset = global_rows(out["p1"], True)
        p2_all, _ = global_rows(out["p2"], True)
        real_all, _ = global_rows(real, False)
        targets = torch.arange(b, device=view1.device) + offset

        nn2_all = global_rows(nn2, False)[0] if lam is not None or self.unremix else None
        weights = self.unremix_weights(out, nn1, nn2_all, p1_all, p2_all, real_all, lam,
                                       partner, offset, global_rows)

        loss12, logits12 = nnclr_loss(nn1, p2_all, targets, self.cfg.temperature, real_all,
                                      negative_weights=weights["12"])
        loss21, _ = nnclr_loss(nn2, p1_all, targets, self.cfg.temperature, real_all,
                               negative_weights=weights["21"])
        clean = 0.5 * (loss12 + loss21)
        loss = clean
        mix_loss = torch.zeros((), device=view1.device)
        if lam is not None:
            mix_loss, _ = soft_target_loss(out["pm"], nn2_all, lam, targets,
                                           partner.to(view1.device) + offset,
                                           self.cfg.temperature, real_all,
                                           negative_weights=weights["mix"])
            loss = clean + self.cfg.mix_weight * mix_loss

        if model.training:
            # Queue entries: view 1's projections, or its EMA projector's when the
            # model keeps one (model.queue_momentum).
            queued = F.normalize(out["z1_queue"], dim=-1) if "z1_queue" in out else z1
            z1_all, _ = gather_rows(queued.detach(), with_grad=False)
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
        labels = getattr(self.task, "train_clip_labels", None)
        if model.training and labels is not None:
            # Diagnostic only (labels never reach the loss): how often view 1's
            # positive is a clip of the same class.
            same, counted = neighbour_purity(nn1_ids[real], ids[real], labels)
            logging_output["nn_same_class"] = same
            logging_output["nn_counted"] = counted
        if weights["12"] is not None:
            # How peaked the weights are: mean over rows of the largest weight.
            logging_output["unremix_max_weight_x_n"] = weights["12"].amax(dim=1).sum()
        return loss, logging_output

    def unremix_weights(self, out, nn1, nn2_all, p1_all, p2_all, real_all, lam, partner,
                        offset, global_rows):
        """UnReMix weights of this rank's rows of the three logit matrices (12, 21, mix),
        or None each when off. Every input is gathered (without gradient) so that the
        weights are a function of the global batch only: each rank computes the same
        weights for the same columns, and as many ranks give what one process gives."""
        weights = {"12": None, "21": None, "mix": None}
        if self.unremix is None:
            return weights
        b = nn1.shape[0]
        rows = slice(offset, offset + b)
        tau = self.cfg.temperature
        nn1_all, _ = global_rows(nn1, False)
        m = nn1_all.shape[0]
        one_hot = torch.eye(m, device=nn1.device)
        weights["12"] = negative_weights(nn1_all, p2_all, one_hot, tau, self.unremix, rows,
                                         real_all)
        weights["21"] = negative_weights(nn2_all, p1_all, one_hot, tau, self.unremix, rows,
                                         real_all)
        if lam is not None:
            pm_all, _ = global_rows(out["pm"].detach(), False)
            lam_all, _ = global_rows(lam.to(nn1.device), False)
            partner_all, _ = global_rows(partner.to(nn1.device) + offset, False)
            soft = soft_target_matrix(lam_all, torch.arange(m, device=nn1.device),
                                      partner_all, m)
            weights["mix"] = negative_weights(pm_all, nn2_all, soft, tau, self.unremix, rows,
                                              real_all)
        return weights

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
        counted = total("nn_counted")
        if counted > 0:
            metrics.log_scalar("nn_purity", 100.0 * total("nn_same_class") / counted, counted,
                               round=2)
        if any("unremix_max_weight_x_n" in log for log in logging_outputs):
            metrics.log_scalar("unremix_max_weight", total("unremix_max_weight_x_n") / n, n,
                               round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
