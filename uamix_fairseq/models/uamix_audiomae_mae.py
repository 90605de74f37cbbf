"""fairseq model `uamix_audiomae_mae`: AudioMAE encoder + MAE decoder for masked-patch
reconstruction (continued pretraining from an official file, or from scratch).

Thin glue: the encoder is ``uamix_fairseq.modules.audiomae``, masking, decoder and loss are
``uamix_fairseq.modules.mae``. The encoder lives under ``encoder.`` (so ``load_audiomae`` reads
it straight out of a checkpoint), the decoder under ``decoder.`` with official key names.
"""

import logging
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import II

from ..modules.audiomae import AudioMAEEncoder, read_checkpoint_file, encoder_for_model, vit_config
from .encoder_args import EncoderArgsConfig, saved_encoder_args
from ..modules.freezing import FreezeSchedule
from ..modules.mae import MASK_MODES, MAEDecoder, encode_visible, patchify, visible_count
from ..optim.uamix_adamw import tag_encoder_parameters, tag_parameter

logger = logging.getLogger(__name__)


def tag_decoder_parameters(decoder, weight_decay: float):
    """uamix_adamw tags of an MAE decoder (one unit ``decoder``, base lr): matrices at
    ``weight_decay`` (< 0: the optimizer's), biases, norms and the mask token at 0.
    Shared with the joint MAE + NNCLR model."""
    wd = None if weight_decay < 0 else weight_decay
    for name, p in decoder.named_parameters():
        no_decay = p.ndim <= 1 or name == "mask_token"
        tag_parameter(p, "decoder", 1.0, 0.0 if no_decay else wd)


def load_decoder_entries(decoder, path) -> int:
    """Load the decoder entries of the file ``path`` whose shapes match (official
    names); returns how many were loaded. Shared with the joint MAE + NNCLR model."""
    obj = read_checkpoint_file(path)
    state = obj["model"] if isinstance(obj.get("model"), dict) else obj
    loaded, _ = decoder.load_matching(state, path)
    return len(loaded)


@dataclass
class UamixAudioMAEMAEConfig(EncoderArgsConfig):
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
        default=0.8,
        metadata={"help": "share hidden from the encoder (AudioMAE: 0.8): of the patches "
                  "(mask_mode random), of the time columns (time) or of the frequency "
                  "rows (frequency)"})
    mask_mode: ChoiceEnum(list(MASK_MODES)) = field(
        default="random",
        metadata={"help": "random patches (AudioMAE's pretraining default), whole time "
                  "columns, whole frequency rows, or time_frequency (both, with "
                  "mask_time_ratio and mask_freq_ratio)"},
    )
    mask_time_ratio: float = field(
        default=0.6, metadata={"help": "mask_mode time_frequency: share of time columns masked"})
    mask_freq_ratio: float = field(
        default=0.5, metadata={"help": "mask_mode time_frequency: share of frequency rows masked"})
    decoder_window_time: int = field(
        default=0,
        metadata={"help": "[R] decoder local attention window along time, in patches "
                  "(0 with decoder_window_freq 0 = global attention); windows shift by "
                  "half on every other decoder layer"},
    )
    decoder_window_freq: int = field(
        default=0, metadata={"help": "[R] decoder local attention window along frequency, in patches"})
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
        try:  # validates the ratios against this encoder's patch grid
            visible_count(encoder.cfg.grid, cfg.mask_mode, cfg.mask_ratio,
                          cfg.mask_time_ratio, cfg.mask_freq_ratio)
        except ValueError as e:
            raise ValueError(f"model.mask_ratio / mask_time_ratio / mask_freq_ratio: {e}") from e
        window = (cfg.decoder_window_time, cfg.decoder_window_freq)
        if any(window) and not all(w > 0 for w in window):
            raise ValueError("model.decoder_window_time and model.decoder_window_freq must "
                             f"both be > 0 for local attention (or both 0), got {window}")
        self.cfg = cfg
        self.encoder = encoder
        self.freezing = FreezeSchedule.everything(encoder)  # MAE trains the whole encoder
        self.decoder = MAEDecoder(encoder.embed_dim, cfg.decoder_embed_dim, cfg.decoder_depth,
                                  cfg.decoder_num_heads, encoder.cfg.patch_size,
                                  encoder.cfg.grid, encoder.cfg.mlp_ratio, window)
        self._tag_parameters()

    @classmethod
    def build_model(cls, cfg: UamixAudioMAEMAEConfig, task):
        restored = saved_encoder_args(cfg)
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
        model = cls(cfg, encoder)
        if restored is None and cfg.audiomae_checkpoint:
            loaded = load_decoder_entries(model.decoder, cfg.audiomae_checkpoint)
            logger.info("loaded AudioMAE encoder from %s: %s; decoder entries loaded: %d",
                        cfg.audiomae_checkpoint, encoder.cfg, loaded)
        return model

    def _tag_parameters(self):
        """Tags for uamix_adamw: encoder units as in the other models (nothing frozen
        here), the decoder as one unit ``decoder``."""
        tag_encoder_parameters(self.encoder, self.cfg.layer_decay)
        tag_decoder_parameters(self.decoder, self.cfg.decoder_weight_decay)

    def forward(self, source, generator=None):
        x = source.to(self.encoder.cls_token.dtype)
        latent, mask, ids_restore = encode_visible(
            self.encoder, x, self.cfg.mask_ratio, generator, self.cfg.mask_mode,
            self.cfg.mask_time_ratio, self.cfg.mask_freq_ratio)
        pred = self.decoder(latent, ids_restore)
        return {"pred": pred, "target": patchify(source, self.encoder.cfg.patch_size),
                "mask": mask}

    def max_positions(self):
        return None
