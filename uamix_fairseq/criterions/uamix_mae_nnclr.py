"""fairseq criterion `uamix_mae_nnclr`: the naive joint baseline's loss,
L = L_clean + mix_weight * L_mix + mae_weight * L_mae, with the model
`uamix_audiomae_joint`.

- L_clean + mix_weight * L_mix: exactly `uamix_nnclr`'s (``contrastive_loss``: gathers,
  nearest neighbours, support queue).
- L_mae: AudioMAE's masked-patch reconstruction (``uamix_fairseq.modules.mae.masked_mse``) of
  view 1 [R]: the view the queue is built from, at no extra feature cost; the masks come
  from the criterion's seeded generator (after the mixing draws, before the
  neighbour draws), so a run is reproducible and resumable.

Both parts are per-clip sums (fairseq divides by sample_size = B).
"""

from dataclasses import dataclass, field

from fairseq.criterions import register_criterion

from ..modules.mae import masked_mse
from .uamix_mae import UamixMAECriterionConfig
from .uamix_nnclr import UamixNNCLRConfig, UamixNNCLRCriterion

MAE_KEYS = ("pred", "target", "mask")


@dataclass
class UamixMAENNCLRConfig(UamixNNCLRConfig, UamixMAECriterionConfig):
    mae_weight: float = field(
        default=1.0,
        metadata={"help": "[R] w_mae in L_clean + w_mix * L_mix + w_mae * L_mae, all "
                  "summed over clips (L_mae: mean squared error per masked patch of view 1)"},
    )


@register_criterion("uamix_mae_nnclr", dataclass=UamixMAENNCLRConfig)
class UamixMAENNCLRCriterion(UamixNNCLRCriterion):
    # + mae_loss as `uamix_mae` logs its loss: mean squared error per masked patch.
    METRICS = UamixNNCLRCriterion.METRICS + (("mae_loss", "mae_loss", 1.0, 4),)

    def __init__(self, cfg: UamixMAENNCLRConfig, task):
        super().__init__(cfg, task)
        if cfg.mae_weight < 0:
            raise ValueError(f"criterion.mae_weight must be >= 0, got {cfg.mae_weight}")

    def forward(self, model, sample, reduce=True):
        net_input = sample["net_input"]
        view1, view2 = net_input["view1"], net_input["view2"]
        b = view1.shape[0]
        gen = self._generator()
        mixed, lam, partner = self.mix(view1, gen)
        if not hasattr(model, "decoder"):  # (fairseq's wrappers pass attributes through)
            raise ValueError("criterion uamix_mae_nnclr needs model="
                             "uamix_audiomae_joint (a model with an MAE decoder)")
        out = model(view1=view1, view2=view2, mixed=mixed, generator=gen)
        pred, target, mask = (out.pop(k) for k in MAE_KEYS)
        mae = masked_mse(pred, target, mask, self.cfg.norm_pix_loss)
        loss, logging_output = self.contrastive_loss(model, sample, out, lam, partner, gen)
        # Every clip has the same number of masked patches: mean * B = sum over clips.
        loss = loss + self.cfg.mae_weight * b * mae
        logging_output["loss"] = loss.detach()
        logging_output["mae_loss"] = mae.detach() * b
        return loss, b, logging_output
