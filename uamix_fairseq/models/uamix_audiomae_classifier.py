"""fairseq model `uamix_audiomae_classifier`: AudioMAE's fine-tuning model.

    normalised fbank [B, 1, T, F] -> patch tokens (+ fixed positions)
      -> structured patch dropout (training only: random time rows and frequency
         columns of the patch grid removed, AudioMAE's ``random_masking_2d``)
      -> cls token + kept tokens -> blocks (drop path) -> mean of the patch tokens
      -> fc_norm (LayerNorm) -> linear head -> logits [B, C]

The encoder is initialised from any file ``load_audiomae`` reads (an official pretrained
or fine-tuned AudioMAE ``.pth``, or a fairseq checkpoint of this plugin's contrastive or
classification model). As in AudioMAE's fine-tuning, a pretrained encoder's final
``norm`` is dropped and a fresh ``fc_norm`` normalises the pooled embedding; a
fine-tuned file's ``fc_norm`` is kept. The encoder is then exactly the fine-tuned
AudioMAE layout, so ``save_audiomae`` writes it as one.
"""

import logging
from dataclasses import dataclass, field, replace

import torch
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import II
from torch import nn

from ..modules.audiomae import AudioMAEEncoder, encoder_for_model
from .encoder_args import EncoderArgsConfig, saved_encoder_args
from ..modules.freezing import FreezeSchedule
from ..optim.uamix_adamw import tag_encoder_parameters, tag_parameter

logger = logging.getLogger(__name__)


@dataclass
class UamixAudioMAEClassifierConfig(EncoderArgsConfig):
    encoder_checkpoint: str = field(
        default="",
        metadata={"help": "encoder to fine-tune: an AudioMAE .pth (pretrained or "
                  "fine-tuned), a bare state dict, or a fairseq checkpoint of this plugin "
                  "(e.g. after uaMix tuning). Not needed to rebuild the model from a "
                  "fairseq checkpoint of this model"},
    )
    num_frames: int = II("task.num_frames")
    num_heads: int = field(
        default=0,
        metadata={"help": "attention heads of the encoder; 0 = embed_dim / 64 (AudioMAE's "
                  "sizes) or the value stored by this plugin"},
    )
    drop_path_rate: float = field(
        default=0.1, metadata={"help": "stochastic depth, rising linearly to this rate "
                               "over the blocks (AudioMAE fine-tuning: 0.1)"})
    mask_t_prob: float = field(
        default=0.2,
        metadata={"help": "structured patch dropout in training: share of the time rows "
                  "of the patch grid removed per clip (AudioMAE: 0.2; 0 = off)"},
    )
    mask_f_prob: float = field(
        default=0.2,
        metadata={"help": "structured patch dropout in training: share of the frequency "
                  "columns of the patch grid removed per clip (AudioMAE: 0.2; 0 = off)"},
    )
    freeze_schedule: str = field(
        default="",
        metadata={"help": "list of (update, trainable top blocks), as uamix_audiomae's: "
                  "lower blocks, patch embedding and cls token frozen (no autograd), e.g. "
                  "'[(0, 0), (100, 3)]' for a head warm-up then the top 3 blocks; empty = "
                  "everything trains (AudioMAE fine-tuning)"},
    )
    layer_decay: float = field(
        default=0.75,
        metadata={"help": "layer-wise lr decay: block i of d trains at lr * decay^(d-i), "
                  "patch embedding and cls token at lr * decay^(d+1), fc_norm and head "
                  "at lr (AudioMAE fine-tuning: 0.75)"},
    )


def structured_patch_dropout_index(batch: int, grid, mask_t_prob: float,
                                   mask_f_prob: float, generator=None, device=None):
    """The patches ``structured_patch_dropout`` keeps, as an index [B, kept rows * kept
    columns] into the Tp * Fp patches (grid order), for the encoder's ``keep``."""
    tp, fp = grid
    keep_t = max(1, int(tp * (1 - mask_t_prob)))
    keep_f = max(1, int(fp * (1 - mask_f_prob)))

    def random_subset(size, keep):  # [B, keep] sorted indices
        noise = torch.rand(batch, size, generator=generator) if generator is not None \
            else torch.rand(batch, size, device=device)
        return noise.argsort(dim=1)[:, :keep].sort(dim=1).values.to(device)

    rows, cols = random_subset(tp, keep_t), random_subset(fp, keep_f)
    return (rows[:, :, None] * fp + cols[:, None, :]).reshape(batch, keep_t * keep_f)


def structured_patch_dropout(tokens, grid, mask_t_prob: float, mask_f_prob: float,
                             generator=None):
    """Keep ``int(Tp * (1 - mask_t_prob))`` random time rows and ``int(Fp * (1 -
    mask_f_prob))`` random frequency columns of the patch grid, per clip.

    tokens [B, Tp * Fp, D] (time-major: token k is the patch at (k // Fp, k % Fp)),
    grid (Tp, Fp) -> [B, kept rows * kept columns, D], kept patches in grid order.
    """
    b, n, d = tokens.shape
    tp, fp = grid
    if n != tp * fp:
        raise ValueError(f"{n} tokens do not fill a {tp}x{fp} patch grid")
    keep = structured_patch_dropout_index(b, grid, mask_t_prob, mask_f_prob, generator,
                                          tokens.device)
    return tokens.gather(1, keep[:, :, None].expand(-1, -1, d))


def classifier_encoder(encoder: AudioMAEEncoder) -> AudioMAEEncoder:
    """The encoder in AudioMAE's fine-tuning layout (``fc_norm`` on the pooled
    embedding, no final token ``norm``): a pretrained encoder's ``norm`` is dropped and
    a fresh ``fc_norm`` (weight 1, bias 0) takes its place; others are returned as is."""
    if encoder.final_norm == "fc_norm":
        return encoder
    out = AudioMAEEncoder(replace(encoder.cfg), final_norm="fc_norm")
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("norm.")}
    missing, unexpected = out.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc_norm.bias", "fc_norm.weight"] and not unexpected
    return out


@register_model("uamix_audiomae_classifier", dataclass=UamixAudioMAEClassifierConfig)
class UamixAudioMAEClassifier(BaseFairseqModel):
    """forward(source [B, 1, T, F]) -> logits [B, num_classes]."""

    def __init__(self, cfg: UamixAudioMAEClassifierConfig, encoder: AudioMAEEncoder,
                 num_classes: int):
        super().__init__()
        for name in ("mask_t_prob", "mask_f_prob"):
            if not 0.0 <= getattr(cfg, name) < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {getattr(cfg, name)}")
        if not 0.0 < cfg.layer_decay <= 1.0:
            raise ValueError(f"model.layer_decay must be in (0, 1], got {cfg.layer_decay}")
        self.cfg = cfg
        self.encoder = classifier_encoder(encoder)
        self.freezing = (FreezeSchedule.parse(self.encoder, cfg.freeze_schedule,
                                              field="model.freeze_schedule")
                         if cfg.freeze_schedule else FreezeSchedule.everything(self.encoder))
        self.head = nn.Linear(self.encoder.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)  # as AudioMAE's fine-tuning
        nn.init.zeros_(self.head.bias)
        tag_encoder_parameters(self.encoder, cfg.layer_decay,
                               embed_lr_scale=cfg.layer_decay ** (self.encoder.depth + 1))
        for p in self.head.parameters():
            tag_parameter(p, "head", 1.0, 0.0 if p.ndim <= 1 else None)

    @classmethod
    def build_model(cls, cfg: UamixAudioMAEClassifierConfig, task):
        classes = getattr(task, "classes", None)
        if not classes:
            raise ValueError("model uamix_audiomae_classifier needs a task that knows its "
                             "classes (task=uamix_audio_classification)")
        restored = saved_encoder_args(cfg)
        encoder = encoder_for_model(cfg.encoder_checkpoint, restored,
                                    "model.encoder_checkpoint", cfg.num_frames,
                                    cfg.num_heads or None, cfg.drop_path_rate)
        if restored is None:
            logger.info("loaded encoder from %s (%s): %s", cfg.encoder_checkpoint,
                        "fresh fc_norm" if encoder.final_norm == "norm" else "its fc_norm",
                        encoder.cfg)
        return cls(cfg, encoder, len(classes))

    def embed(self, source):
        """Pooled, normalised clip embeddings [B, D] (patch dropout when training)."""
        enc = self.encoder
        x = source.to(enc.cls_token.dtype)  # features are float32; the model may be bf16
        keep = None
        if self.training and (self.cfg.mask_t_prob > 0 or self.cfg.mask_f_prob > 0):
            keep = structured_patch_dropout_index(x.shape[0], enc.cfg.grid,
                                                  self.cfg.mask_t_prob,
                                                  self.cfg.mask_f_prob, device=x.device)
        tokens = enc(x, keep=keep, **self.freezing.encoder_kwargs())
        return enc.pool(tokens, "mean")  # mean of the patch tokens -> fc_norm

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        self.freezing.set_num_updates(num_updates)

    @property
    def trainable_blocks(self) -> int:
        return self.freezing.trainable_blocks

    def forward(self, source):
        return self.head(self.embed(source))

    def max_positions(self):
        return None
