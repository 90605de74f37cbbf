"""fairseq model `uamix_audiomae_swaro`: the `uamix_audiomae` model (same encoder,
freezing schedule, layer-wise lr decay, optimizer tags) with a SwAV/SwARo prototype
head instead of the NNCLR head, and SwAV's optional feature queue instead of the NNCLR
support queue.

Thin glue: the head is ``uamix_fairseq.modules.swaro.PrototypeHead`` (NNCLR's projector, then
K normalised prototypes; no predictor), the queue ``uamix_fairseq.modules.nnclr.SupportQueue``.
"""

from dataclasses import dataclass, field

import torch
from fairseq.models import register_model

from ..modules.nnclr import SupportQueue
from ..modules.swaro import PrototypeHead
from .uamix_audiomae import UamixAudioMAEConfig, UamixAudioMAEModel


@dataclass
class UamixAudioMAESwARoConfig(UamixAudioMAEConfig):
    num_prototypes: int = field(
        default=3000,
        metadata={"help": "[R] number K of prototypes (SwAV's ImageNet value); the head's "
                  "projector sizes are proj_hidden_dim / proj_layers / proj_out_dim, "
                  "pred_hidden_dim is unused (no predictor)"},
    )
    queue_size: int = field(
        default=0,
        metadata={"help": "[R] SwAV feature queue: this many recent projections (both "
                  "views of the global batch) join the Sinkhorn problem, for small "
                  "batches; 0 = no queue. Capped at the number of training clips"},
    )
    freeze_prototypes_updates: int = field(
        default=0,
        metadata={"help": "[R] keep the prototypes fixed for this many updates (SwAV: the "
                  "first epoch); the projector and unfrozen blocks still train"},
    )


@register_model("uamix_audiomae_swaro", dataclass=UamixAudioMAESwARoConfig)
class UamixAudioMAESwARoModel(UamixAudioMAEModel):
    """forward(view1, view2, mixed=None) -> {"z1", "s1", "z2", "s2"[, "zm", "sm"]}:
    normalised projections [B, proj_out_dim] and prototype scores [B, K] of each view.

    ``scores(x)`` runs one more view through the same path (the adversarial view in
    training); ``attack_scores(x)`` runs every block with autograd, so that the input
    gets a gradient through the frozen blocks too (the attack asks for no parameter
    gradient; see criterions/uamix_swaro.py).
    """

    min_queue_size = 0  # 0 = no queue

    def __init__(self, cfg: UamixAudioMAESwARoConfig, encoder, queue_size: int):
        if cfg.num_prototypes < 2:
            raise ValueError(f"model.num_prototypes must be >= 2, got {cfg.num_prototypes}")
        if cfg.queue_size < 0:
            raise ValueError(f"model.queue_size must be >= 0 (0 = no queue), got {cfg.queue_size}")
        if cfg.freeze_prototypes_updates < 0:
            raise ValueError("model.freeze_prototypes_updates must be >= 0, got "
                             f"{cfg.freeze_prototypes_updates}")
        super().__init__(cfg, encoder, queue_size)
        self.num_updates = 0

    def build_head(self, embed_dim: int, queue_size: int):
        cfg = self.cfg
        head = PrototypeHead(embed_dim, cfg.proj_hidden_dim, cfg.proj_layers, cfg.proj_out_dim,
                             cfg.num_prototypes)
        queue = SupportQueue(queue_size, cfg.proj_out_dim) if queue_size > 0 else None
        return head, queue

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        self.num_updates = num_updates

    @property
    def prototypes_frozen(self) -> bool:
        return self.num_updates < self.cfg.freeze_prototypes_updates

    def _heads(self, tokens, n_views):
        pooled = self.encoder.pool(tokens, self.cfg.pooling).split(tokens.shape[0] // n_views)
        # One view at a time through the head: BatchNorm statistics per view.
        return [self.head(y, freeze_prototypes=self.prototypes_frozen) for y in pooled]

    def forward(self, view1, view2, mixed=None):
        parts = [view1, view2] + ([mixed] if mixed is not None else [])
        # Features are float32; the encoder may be in bf16/fp16.
        x = torch.cat(parts).to(self.encoder.cls_token.dtype)
        out = {}
        for name, (z, s) in zip(("1", "2", "m"), self._heads(self._encode(x), len(parts))):
            out["z" + name], out["s" + name] = z, s
        return out

    def scores(self, x):
        """(z, scores) of one more view, frozen blocks without autograd as in forward."""
        ((z, s),) = self._heads(self._encode(x.to(self.encoder.cls_token.dtype)), 1)
        return z, s

    def attack_scores(self, x):
        """Prototype scores [B, K] with every block differentiable w.r.t. the input
        (the frozen prefix included: it would otherwise stop the input gradient)."""
        tokens = self.encoder(x.to(self.encoder.cls_token.dtype))
        ((_, s),) = self._heads(tokens, 1)
        return s

    @torch.no_grad()
    def queue_scores(self):
        """Scores [filled, K] of the queued projections against the current prototypes
        (SwAV's queue trick), or None without a queue."""
        queue = self.support_queue
        if queue is None or queue.filled == 0:
            return None
        feats = queue.features[: queue.filled]
        w = torch.nn.functional.normalize(self.head.prototypes.weight.detach().float(), dim=-1)
        return feats.float() @ w.t()
