"""fairseq model `uamix_audiomae_mae`: AudioMAE encoder + MAE decoder for masked-patch
reconstruction (continued pretraining from an official file, or from scratch).

Thin glue: the encoder is ``uamix_fairseq.audiomae``, masking, decoder and loss are
``uamix_fairseq.mae``. The encoder lives under ``encoder.`` (so ``load_audiomae`` reads
it straight out of a checkpoint), the decoder under ``decoder.`` with official key names.
"""

import logging
from dataclasses import asdict, dataclass, field

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import II

from ..audiomae import AudioMAEEncoder, _read_file, encoder_for_model, vit_config
from ..mae import MAEDecoder, encode_visible, num_visible, patchify
from ..optim.uamix_adamw import tag_encoder_parameters, tag_parameter

logger = logging.getLogger(__name__)


@dataclass
class UamixAudioMAEMAEConfig(FairseqDataclass):
    audiomae_checkpoint: str = field(
        default="",
        metadata={"help": "encoder (and decoder, where present with matching shapes) to "
                  "continue pretraining from: an official pretrained .pth, a bare state "
                  "dict or a checkpoint of this plugin. Empty: a fresh encoder of "
                  "encoder_size. Not needed to rebuild the model from its fairseq checkpoint"},
    )
    num_frames: int = II("task.num_frames")
    num_mel_bins: int = II("task.num_mel_bins")
    encoder_size: ChoiceEnum(["tiny", "small", "base", "large"]) = field(
        default="base",
        metadata={"help": "from scratch: named ViT size (tiny 192/12/3, small 384/12/6, "
                  "base 768/12/12, large 1024/24/16); embed_dim/depth/num_heads override"},
    )
    embed_dim: int = field(default=0, metadata={"help": "from scratch: width (0 = the size's)"})
    depth: int = field(default=0, metadata={"help": "from scratch: blocks (0 = the size's)"})
    num_heads: int = field(
        default=0,
        metadata={"help": "encoder heads (0 = the size's from scratch; embed_dim / 64 or "
                  "the stored value for a file)"},
    )
    decoder_embed_dim: int = field(default=512, metadata={"help": "decoder width (AudioMAE: 512)"})
    decoder_depth: int = field(default=8, metadata={"help": "decoder blocks (AudioMAE: 8)"})
    decoder_num_heads: int = field(default=16, metadata={"help": "decoder heads (AudioMAE: 16)"})
    mask_ratio: float = field(
        default=0.8, metadata={"help": "share of patches hidden from the encoder (AudioMAE: 0.8)"})
    layer_decay: float = field(
        default=1.0, metadata={"help": "layer-wise lr decay of encoder blocks (1 = none)"})
    decoder_weight_decay: float = field(
        default=-1.0,
        metadata={"help": "weight decay of decoder matrices (< 0: optimizer.weight_decay); "
                  "biases, norms and the mask token get none"},
    )
    drop_path_rate: float = field(default=0.0, metadata={"help": "stochastic depth of the encoder"})


@register_model("uamix_audiomae_mae", dataclass=UamixAudioMAEMAEConfig)
class UamixAudioMAEMAEModel(BaseFairseqModel):
    """forward(source [B, 1, T, F], generator=None) -> {"pred", "target", "mask"}:
    predictions and raw target patches [B, N, p*p], mask [B, N] (1 = masked)."""

    def __init__(self, cfg: UamixAudioMAEMAEConfig, encoder: AudioMAEEncoder):
        super().__init__()
        if encoder.final_norm != "norm":
            raise ValueError("model.audiomae_checkpoint is a fine-tuned file (fc_norm); MAE "
                             "pretraining needs a pretrained encoder with a final norm")
        if not 0.0 < cfg.layer_decay <= 1.0:
            raise ValueError(f"model.layer_decay must be in (0, 1], got {cfg.layer_decay}")
        num_visible(encoder.cfg.num_patches, cfg.mask_ratio)  # validates mask_ratio
        self.cfg = cfg
        self.encoder = encoder
        self.decoder = MAEDecoder(encoder.embed_dim, cfg.decoder_embed_dim, cfg.decoder_depth,
                                  cfg.decoder_num_heads, encoder.cfg.patch_size,
                                  encoder.cfg.grid, encoder.cfg.mlp_ratio)
        self._tag_parameters()

    @classmethod
    def build_model(cls, cfg: UamixAudioMAEMAEConfig, task):
        restored = getattr(task, "restored_encoder_config", None)
        if restored is None and not cfg.audiomae_checkpoint:
            overrides = {k: getattr(cfg, k) for k in ("embed_dim", "depth", "num_heads")
                         if getattr(cfg, k) > 0}
            enc_cfg = vit_config(cfg.encoder_size, num_frames=cfg.num_frames,
                                 num_mel_bins=cfg.num_mel_bins,
                                 drop_path_rate=cfg.drop_path_rate, **overrides)
            if "embed_dim" in overrides and "num_heads" not in overrides:
                enc_cfg.num_heads = max(1, enc_cfg.embed_dim // 64)
            encoder = AudioMAEEncoder(enc_cfg, final_norm="norm")
            logger.info("fresh AudioMAE encoder (from scratch): %s", enc_cfg)
        else:
            encoder = encoder_for_model(cfg.audiomae_checkpoint, restored,
                                        "model.audiomae_checkpoint", cfg.num_frames,
                                        cfg.num_heads or None, cfg.drop_path_rate)
        if hasattr(task, "encoder_config"):
            task.encoder_config = {"config": asdict(encoder.cfg), "final_norm": encoder.final_norm}
        model = cls(cfg, encoder)
        if restored is None and cfg.audiomae_checkpoint:
            obj = _read_file(cfg.audiomae_checkpoint)
            state = obj["model"] if isinstance(obj.get("model"), dict) else obj
            loaded, _ = model.decoder.load_matching(state, cfg.audiomae_checkpoint)
            logger.info("loaded AudioMAE encoder from %s: %s; decoder entries loaded: %d",
                        cfg.audiomae_checkpoint, encoder.cfg, len(loaded))
        return model

    def _tag_parameters(self):
        """Tags for uamix_adamw: encoder units as in the other models (nothing frozen
        here), the decoder as one unit ``decoder``."""
        tag_encoder_parameters(self.encoder, self.cfg.layer_decay)
        wd = None if self.cfg.decoder_weight_decay < 0 else self.cfg.decoder_weight_decay
        for name, p in self.decoder.named_parameters():
            no_decay = p.ndim <= 1 or name == "mask_token"
            tag_parameter(p, "decoder", 1.0, 0.0 if no_decay else wd)

    def frozen_units(self):
        return set()

    def frozen_parameters(self):
        return []

    def forward(self, source, generator=None):
        x = source.to(self.encoder.cls_token.dtype)
        latent, mask, ids_restore = encode_visible(self.encoder, x, self.cfg.mask_ratio,
                                                   generator)
        pred = self.decoder(latent, ids_restore)
        return {"pred": pred, "target": patchify(source, self.encoder.cfg.patch_size),
                "mask": mask}

    def max_positions(self):
        return None
