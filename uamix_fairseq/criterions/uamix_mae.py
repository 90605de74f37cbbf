"""fairseq criterion `uamix_mae`: AudioMAE's masked-patch reconstruction loss
(``uamix_fairseq.modules.mae.masked_mse``), logged as ``loss`` (mean squared error per masked
patch, averaged over clips)."""

from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.dataclass import FairseqDataclass

from ..modules.mae import masked_mse
from .base import UamixCriterion


@dataclass
class UamixMAECriterionConfig(FairseqDataclass):
    norm_pix_loss: bool = field(
        default=True,
        metadata={"help": "targets normalised per patch (mean 0, variance 1 over its "
                  "pixels), as AudioMAE's pretraining"},
    )


@register_criterion("uamix_mae", dataclass=UamixMAECriterionConfig)
class UamixMAECriterion(UamixCriterion):
    METRICS = (("loss", "loss", 1.0, 4), ("mask_ratio", "masked", 1.0, 3))

    def __init__(self, cfg: UamixMAECriterionConfig, task):
        super().__init__(task)
        self.cfg = cfg

    def forward(self, model, sample, reduce=True):
        out = model(**sample["net_input"])
        b = out["pred"].shape[0]
        # Every clip has the same number of masked patches, so batch mean * B is the
        # sum of per-clip losses; fairseq divides by sample_size = B.
        loss = masked_mse(out["pred"], out["target"], out["mask"], self.cfg.norm_pix_loss) * b
        logging_output = {"loss": loss.detach(), "ntokens": b, "nsentences": b,
                          "sample_size": b,
                          "masked": out["mask"].detach().float().mean() * b}
        return loss, b, logging_output
