"""fairseq criterion `uamix_classification`: the fine-tuning loss and its metrics.

- single-label: cross entropy against soft targets (one-hot, or mixed by mixup) with
  label smoothing; logs ``accuracy`` (%; argmax against the target's largest entry).
- multi-label: binary cross entropy with logits, averaged over classes as AudioMAE's
  ``BCEWithLogitsLoss`` does; validation logs ``mAP`` (%).

How mAP stays exact. Average precision ranks every clip of the validation set, so it
cannot be averaged over batches, yet fairseq calls ``reduce_metrics`` once per batch and,
across ranks, sums logging outputs (``logging_outputs_can_be_summed`` must be True on
CPU). So in evaluation each rank writes its sigmoid scores and targets into its own slot
of a zero tensor ``[world, max batch, C]`` (plus a 0/1 "present" flag per row): summing
over ranks then concatenates instead of adding, and the zeroed logging output of a
rank's dummy batch contributes no rows. ``reduce_metrics`` appends the present rows to
concatenating meters of the validation aggregator, and ``mAP`` is derived from all of
them when fairseq reads the validation stats (``checkpoint.best_checkpoint_metric=mAP``).
AP itself is ``evaluation.classifiers.mean_average_precision`` (scikit-learn's
definition); classes without a positive clip in the evaluated set have no AP and are
left out of the mean. Training steps log no scores (the loss only).
"""

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.dataclass import FairseqDataclass

from ..modules.distributed import is_distributed, rank_and_world
from ..modules.average_precision import mean_average_precision
from .base import BITS, UamixCriterion


@dataclass
class UamixClassificationConfig(FairseqDataclass):
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "single-label cross entropy against (1 - e) * target + e / C "
                  "(AudioMAE on ESC-50: 0.1); not used with multi-label data"},
    )


def soft_cross_entropy(logits, target, label_smoothing: float = 0.0):
    """Per-clip cross entropy [B] of logits [B, C] against soft targets [B, C] (rows sum
    to 1), smoothed to ``(1 - e) * target + e / C``."""
    c = logits.shape[-1]
    q = (1.0 - label_smoothing) * target + label_smoothing / c
    return -(q * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def _mean_average_precision(meters):
    """mAP (%) over everything the validation aggregator has concatenated."""
    scores, targets = meters["_ap_scores"].tensor, meters["_ap_targets"].tensor
    if scores is None or scores.shape[0] == 0:
        return float("nan")
    value, _ = mean_average_precision(targets.numpy(), scores.numpy())
    return round(100.0 * value, 2)


@register_criterion("uamix_classification", dataclass=UamixClassificationConfig)
class UamixClassificationCriterion(UamixCriterion):
    # accuracy only where single-label outputs log "correct"; mAP in reduce_more.
    METRICS = (("loss", "loss", BITS, 3), ("accuracy", "correct", 100.0, 2))

    def __init__(self, cfg: UamixClassificationConfig, task):
        super().__init__(task)
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise ValueError(f"criterion.label_smoothing must be in [0, 1), got "
                             f"{cfg.label_smoothing}")
        self.multilabel = bool(getattr(task, "multilabel", False))
        if self.multilabel and cfg.label_smoothing > 0:
            raise ValueError("criterion.label_smoothing applies to single-label cross "
                             "entropy; this task is multi-label (binary cross entropy)")
        self.cfg = cfg

    def forward(self, model, sample, reduce=True):
        logits = model(**sample["net_input"]).float()
        target = sample["target"].float()
        b = logits.shape[0]
        if self.multilabel:
            per_clip = F.binary_cross_entropy_with_logits(
                logits, target, reduction="none").mean(dim=1)
        else:
            per_clip = soft_cross_entropy(logits, target, self.cfg.label_smoothing)
        loss = per_clip.sum()
        logging_output = {"loss": loss.detach(), "ntokens": b, "nsentences": b,
                          "sample_size": b}
        if self.multilabel:
            if not model.training:
                logging_output.update(self._rank_slots(torch.sigmoid(logits), target))
        else:
            correct = (logits.argmax(dim=1) == target.argmax(dim=1)).sum()
            logging_output["correct"] = correct.detach()
        return loss, b, logging_output

    @staticmethod
    def _rank_slots(scores, target):
        """This rank's rows in its slot of zero tensors [world * max batch, ...] (see
        the module docstring)."""
        rank, world = rank_and_world()
        b, c = scores.shape
        rows = b
        if is_distributed():
            size = torch.tensor([b], device=scores.device)
            dist.all_reduce(size, op=dist.ReduceOp.MAX)
            rows = int(size)
        slots = {"_scores": scores.new_zeros(world, rows, c),
                 "_targets": target.new_zeros(world, rows, c),
                 "_present": scores.new_zeros(world, rows)}
        slots["_scores"][rank, :b] = scores.detach()
        slots["_targets"][rank, :b] = target
        slots["_present"][rank, :b] = 1.0
        return {k: v.flatten(0, 1) for k, v in slots.items()}

    @classmethod
    def reduce_more(cls, logging_outputs, n: float) -> None:
        if any("_scores" in log for log in logging_outputs):
            for log in logging_outputs:
                present = log["_present"] > 0.5
                metrics.log_concat_tensor("_ap_scores", log["_scores"][present].cpu().float())
                metrics.log_concat_tensor("_ap_targets", log["_targets"][present].cpu().float())
            metrics.log_derived("mAP", _mean_average_precision)
