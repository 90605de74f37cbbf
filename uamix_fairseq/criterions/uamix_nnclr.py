"""fairseq criterion `uamix_nnclr`: L = L_clean + mix_weight * L_mix (docs/method.md,
"Contrastive tuning (stage 2)").

- L_clean: symmetric NNCLR loss between the two views, negatives from the global batch.
- L_mix: the mixture of view 1 (T-CutMix, TF-CutMix or mixup) should predict the
  nearest neighbours of view 2 of both of its sources, with soft targets lambda and
  1 - lambda (the "virtual labels").
- Optionally (``unremix``), every negative of every row of the three logit matrices is
  weighted in the softmax denominator by UnReMix (``uamix_fairseq.modules.unremix``), the
  weights computed from the gathered global batch so that all ranks agree.

The loss functions live in ``uamix_fairseq.modules.nnclr``, the mixing in
``uamix_fairseq.modules.mixing``; this class gathers across ranks, updates the queue and logs.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.dataclass import ChoiceEnum

from ..modules.monitor import neighbour_purity
from ..modules.nnclr import nnclr_loss, soft_target_loss, soft_target_matrix
from ..modules.unremix import NORMS, UnReMixConfig, negative_weights
from .base import BITS, GlobalBatch, MixingConfig, MixingCriterion
from .logging_sums import logged_total


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


@register_criterion("uamix_nnclr", dataclass=UamixNNCLRConfig)
class UamixNNCLRCriterion(MixingCriterion):
    METRICS = (("loss", "loss", BITS, 3), ("clean_loss", "clean_loss", BITS, 3),
               ("mix_loss", "mix_loss", BITS, 3), ("accuracy", "correct", 100.0, 2),
               ("lam", "lam_x_n", 1.0, 3), ("queue_fill", "queue_fill_x_n", 1.0, 3),
               ("trainable_blocks", "trainable_blocks_x_n", 1.0, 1),
               ("unremix_max_weight", "unremix_max_weight_x_n", 1.0, 3))

    def __init__(self, cfg: UamixNNCLRConfig, task):
        super().__init__(cfg, task)
        if not cfg.temperature > 0:
            raise ValueError(f"criterion.temperature must be > 0, got {cfg.temperature}")
        if cfg.nn_topk < 1:
            raise ValueError(f"criterion.nn_topk must be >= 1, got {cfg.nn_topk}")
        self.unremix = None
        if cfg.unremix:
            self.unremix = UnReMixConfig(
                similarity=cfg.unremix_coef_similarity,
                uncertainty=cfg.unremix_coef_uncertainty,
                representativeness=cfg.unremix_coef_representativeness,
                norm=str(cfg.unremix_norm), mean_one=cfg.unremix_mean_one,
                floor=cfg.unremix_floor, field_prefix="criterion.unremix_")

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
        # Training: negatives from the global batch; predictions carry gradients back
        # to their rank, the rest not. Validation: local negatives only.
        batch = GlobalBatch(sample, b, view1.device, gather=model.training)
        real, real_all, offset = batch.real, batch.real_all, batch.offset

        z1, z2 = F.normalize(out["z1"], dim=-1), F.normalize(out["z2"], dim=-1)
        nn1, nn1_ids = queue.nearest(z1, ids, self.cfg.nn_topk, gen, return_ids=True)
        nn2 = queue.nearest(z2, ids, self.cfg.nn_topk, gen)
        if self.cfg.positive == "view":
            # The clip's own other view (with its gradient) instead of a neighbour; the
            # queue is still filled, for the purity diagnostic.
            nn1, nn2 = z1, z2

        p1_all, _ = batch.rows(out["p1"], with_grad=True)
        p2_all, _ = batch.rows(out["p2"], with_grad=True)
        targets = torch.arange(b, device=view1.device) + offset

        nn2_all = batch.rows(nn2)[0] if lam is not None or self.unremix else None
        weights = self.unremix_weights(out, nn1, nn2_all, p1_all, p2_all, lam, partner,
                                       batch)

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
            z1_all, _ = batch.rows(queued.detach())
            ids_all, _ = batch.rows(ids)
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

    def unremix_weights(self, out, nn1, nn2_all, p1_all, p2_all, lam, partner,
                        batch: GlobalBatch):
        """UnReMix weights of this rank's rows of the three logit matrices (12, 21, mix),
        or None each when off. Every input is gathered (without gradient) so that the
        weights are a function of the global batch only: each rank computes the same
        weights for the same columns, and as many ranks give what one process gives."""
        weights = {"12": None, "21": None, "mix": None}
        if self.unremix is None:
            return weights
        rows, real_all, offset = batch.local, batch.real_all, batch.offset
        tau = self.cfg.temperature
        nn1_all, _ = batch.rows(nn1)
        m = nn1_all.shape[0]
        one_hot = torch.eye(m, device=nn1.device)
        weights["12"] = negative_weights(nn1_all, p2_all, one_hot, tau, self.unremix, rows,
                                         real_all)
        weights["21"] = negative_weights(nn2_all, p1_all, one_hot, tau, self.unremix, rows,
                                         real_all)
        if lam is not None:
            pm_all, _ = batch.rows(out["pm"].detach())
            lam_all, _ = batch.rows(lam.to(nn1.device))
            partner_all, _ = batch.rows(partner.to(nn1.device) + offset)
            soft = soft_target_matrix(lam_all, torch.arange(m, device=nn1.device),
                                      partner_all, m)
            weights["mix"] = negative_weights(pm_all, nn2_all, soft, tau, self.unremix, rows,
                                              real_all)
        return weights

    @classmethod
    def reduce_more(cls, logging_outputs, n: float) -> None:
        counted = logged_total(logging_outputs, "nn_counted")
        if counted > 0:  # share of view 1's positives that are a clip of its class
            metrics.log_scalar("nn_purity", 100.0 * logged_total(logging_outputs,
                                                                 "nn_same_class") / counted,
                               counted, round=2)
