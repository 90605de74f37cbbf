"""fairseq model `uamix_audiomae_joint`: the "naive" baseline of the paper's efficiency
argument: the MAE loss and the NNCLR loss trained jointly over the whole encoder.

It is the `uamix_audiomae` model (encoder + NNCLR head + support queue) with an MAE
decoder added under ``decoder.`` (official key names), and nothing frozen: all blocks,
the final norm, the patch embedding and the cls token train from the first update.
Compare with uaMix's tuning, which trains only the top blocks and needs no decoder.

Thin glue: masking and decoder are ``uamix_fairseq.modules.mae``; the decoder's optimizer tags
and loading from a file are shared with `uamix_audiomae_mae`.
"""

import logging
from dataclasses import dataclass, field

from fairseq.models import register_model

from ..modules.audiomae import AudioMAEEncoder
from ..modules.freezing import FreezeSchedule, parse_schedule
from ..modules.mae import MAEDecoder, encode_visible, num_visible, patchify
from ..optim.uamix_adamw import tag_encoder_parameters
from .encoder_args import saved_encoder_args
from .uamix_audiomae import UamixAudioMAEConfig, UamixAudioMAEModel
from .uamix_audiomae_mae import load_decoder_entries, tag_decoder_parameters

logger = logging.getLogger(__name__)


@dataclass
class UamixAudioMAEJointConfig(UamixAudioMAEConfig):
    freeze_schedule: str = field(
        default="[(0, 12)]",
        metadata={"help": "[R] the naive baseline trains the whole encoder (all blocks, "
                  "final norm, patch embedding, cls token) from update 0, so every stage "
                  "must train all blocks: [(0, depth)]; the default is ViT-B's 12"},
    )
    layer_decay: float = field(
        default=1.0,
        metadata={"help": "[R] layer-wise lr decay: block i of d at lr * layer_decay ** "
                  "(d - i), patch embedding and cls token at layer_decay ** (d + 1); "
                  "1 = one lr for the whole encoder (the naive baseline)"},
    )
    mask_ratio: float = field(
        default=0.8, metadata={"help": "share of patches hidden from the encoder in the MAE "
                               "branch (AudioMAE: 0.8)"})
    decoder_embed_dim: int = field(default=512, metadata={"help": "decoder width (AudioMAE: 512)"})
    decoder_depth: int = field(default=8, metadata={"help": "decoder blocks (AudioMAE: 8)"})
    decoder_num_heads: int = field(default=16, metadata={"help": "decoder heads (AudioMAE: 16)"})
    decoder_weight_decay: float = field(
        default=-1.0,
        metadata={"help": "weight decay of decoder matrices (< 0: optimizer.weight_decay); "
                  "biases, norms and the mask token get none"},
    )


@register_model("uamix_audiomae_joint", dataclass=UamixAudioMAEJointConfig)
class UamixAudioMAEJointModel(UamixAudioMAEModel):
    """forward(view1, view2, mixed=None, generator=None) -> the parent's projections and
    predictions (z1, p1, z2, p2[, zm, pm]) plus the MAE reconstruction of view 1:
    "pred" and raw target patches [B, N, p*p], "mask" [B, N] (1 = masked), the masks
    drawn from ``generator``."""

    def __init__(self, cfg: UamixAudioMAEJointConfig, encoder: AudioMAEEncoder, queue_size: int):
        super().__init__(cfg, encoder, queue_size)
        if encoder.final_norm != "norm":
            raise ValueError("model.audiomae_checkpoint is a fine-tuned file (fc_norm); the MAE "
                             "branch needs a pretrained encoder with a final norm")
        try:
            num_visible(encoder.cfg.num_patches, cfg.mask_ratio)
        except ValueError as e:
            raise ValueError(f"model.mask_ratio: {e}") from None
        self.decoder = MAEDecoder(encoder.embed_dim, cfg.decoder_embed_dim, cfg.decoder_depth,
                                  cfg.decoder_num_heads, encoder.cfg.patch_size,
                                  encoder.cfg.grid, encoder.cfg.mlp_ratio)
        tag_decoder_parameters(self.decoder, cfg.decoder_weight_decay)

    def build_freezing(self, cfg, encoder) -> FreezeSchedule:
        """Everything trains, the patch embedding and cls token included; the schedule
        field is checked to say so."""
        depth = encoder.depth
        stages = parse_schedule(cfg.freeze_schedule, depth, field="model.freeze_schedule")
        if any(blocks != depth for _, blocks in stages):
            raise ValueError(
                f"model.freeze_schedule={cfg.freeze_schedule!r}: uamix_audiomae_joint trains "
                f"the whole encoder, so every stage must train all {depth} blocks; use "
                f"'[(0, {depth})]' (partial freezing is uaMix's model uamix_audiomae)")
        return FreezeSchedule.everything(encoder)

    @classmethod
    def build_model(cls, cfg: UamixAudioMAEJointConfig, task):
        starts_from_file = saved_encoder_args(cfg) is None
        model = super().build_model(cfg, task)
        if starts_from_file:
            # Starting from a file (a restored checkpoint brings its own decoder).
            loaded = load_decoder_entries(model.decoder, cfg.audiomae_checkpoint)
            logger.info("%s: decoder entries loaded: %d", cfg.audiomae_checkpoint, loaded)
        return model

    def _tag_parameters(self):
        super()._tag_parameters()
        # The embedding trains here: with layer decay it sits below block 0.
        tag_encoder_parameters(self.encoder, self.cfg.layer_decay,
                               self.cfg.layer_decay ** (self.encoder.depth + 1))

    def forward(self, view1, view2, mixed=None, generator=None):
        out = super().forward(view1, view2, mixed)
        x = view1.to(self.encoder.cls_token.dtype)
        latent, mask, ids_restore = encode_visible(self.encoder, x, self.cfg.mask_ratio,
                                                   generator)
        out["pred"] = self.decoder(latent, ids_restore)
        out["target"] = patchify(view1, self.encoder.cfg.patch_size)
        out["mask"] = mask
        return out
