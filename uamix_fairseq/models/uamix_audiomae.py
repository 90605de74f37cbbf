"""fairseq model `uamix_audiomae`: AudioMAE encoder + NNCLR head + support queue, with the
progressive freezing schedule and layer-wise learning-rate decay.

Thin glue: the encoder lives in ``uamix_fairseq.modules.audiomae``, the head and queue in
``uamix_fairseq.modules.nnclr``, the schedule in ``uamix_fairseq.modules.freezing``.
"""

import copy
import logging
from dataclasses import dataclass, field

import torch
from fairseq.dataclass import ChoiceEnum
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import II

from ..modules.audiomae import AudioMAEEncoder, encoder_for_model
from .encoder_args import EncoderArgsConfig, saved_encoder_args
from ..modules.compiling import compile_encoder_blocks, compile_unsupported_reason
from ..modules.freezing import FreezeSchedule
from ..modules.nnclr import NNCLRHead, SupportQueue, ema_update
from ..optim.uamix_adamw import tag_encoder_parameters, tag_parameter
from ..modules.sync_batchnorm import convert_sync_batchnorm

logger = logging.getLogger(__name__)


@dataclass
class UamixAudioMAEConfig(EncoderArgsConfig):
    audiomae_checkpoint: str = field(
        default="",
        metadata={"help": "AudioMAE encoder to tune: an official pretrained or fine-tuned "
                  ".pth, a bare state dict, or a checkpoint written by this plugin. Not "
                  "needed to rebuild the model from a fairseq checkpoint of this model"},
    )
    num_frames: int = II("task.num_frames")
    num_heads: int = field(
        default=0,
        metadata={"help": "attention heads of the encoder; 0 = embed_dim / 64 (AudioMAE's "
                  "sizes) or the value stored by save_audiomae"},
    )
    pooling: ChoiceEnum(["mean", "cls"]) = field(
        default="mean",
        metadata={"help": "[R] clip embedding: mean of patch tokens after the final norm, "
                  "or the cls token"},
    )
    proj_hidden_dim: int = field(default=2048, metadata={"help": "[R] projector hidden width"})
    proj_layers: int = field(default=3, metadata={"help": "[R] projector depth (linear layers)"})
    proj_out_dim: int = field(default=256, metadata={"help": "[R] projection (and prediction) size"})
    pred_hidden_dim: int = field(default=4096, metadata={"help": "[R] predictor hidden width"})
    queue_size: int = field(
        default=65536,
        metadata={"help": "[R] NNCLR support queue length; capped at the number of "
                  "training clips, so a clip is never queued twice"},
    )
    effective_queue_size: int = field(
        default=0,
        metadata={"help": "written by the plugin, leave it at 0: the support queue length "
                  "the model was built with (queue_size capped at the training clips), "
                  "saved in the checkpoint's config so that the model rebuilds without "
                  "train.tsv; 0 = work it out from queue_size and train.tsv"},
    )
    freeze_schedule: str = field(
        default="[(0, 0), (2000, 6)]",
        metadata={"help": "[R] list of (update, trainable top blocks): from that update "
                  "on, only the top blocks (and the final norm) train; lower blocks, "
                  "patch embedding, cls token and positions stay frozen and run without "
                  "autograd. Default: head warm-up, then the top half of 12 blocks"},
    )
    layer_decay: float = field(
        default=0.65,
        metadata={"help": "[R] layer-wise lr decay: block i of d trains at lr * "
                  "layer_decay ** (d - i); head and final norm at lr"},
    )
    head_weight_decay: float = field(
        default=1e-5,
        metadata={"help": "weight decay of the head's weight matrices (the encoder's come "
                  "from optimizer.weight_decay); biases and norms get none"},
    )
    drop_path_rate: float = field(default=0.0, metadata={"help": "stochastic depth of the encoder"})
    queue_momentum: float = field(
        default=0.0,
        metadata={"help": "[R] support queue entries come from an EMA copy of the projector "
                  "with this momentum per update (MAE-CT: 0.99); 0 = from the projector "
                  "itself (NNCLR)"},
    )
    sync_batchnorm: bool = field(
        default=False,
        metadata={"help": "compute the projector's and predictor's BatchNorm statistics "
                  "over the global batch of all data-parallel ranks (SimCLR/BYOL-style; "
                  "works with gloo on CPU and NCCL); false = each rank's own rows"},
    )
    compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the encoder's blocks in place on the first "
                  "forward (parameter names and checkpoints unchanged; the frozen prefix "
                  "still runs without autograd); fails with the reason where the "
                  "installed torch cannot compile (e.g. no C++ compiler for CPU, no "
                  "triton for CUDA)"},
    )


@register_model("uamix_audiomae", dataclass=UamixAudioMAEConfig)
class UamixAudioMAEModel(BaseFairseqModel):
    """forward(view1, view2, mixed=None) -> dict of projections and predictions.

    All views go through the encoder as one batch (LayerNorm only, no cross-sample
    statistics), and through the head one view at a time (the head's BatchNorm
    statistics are per view, as in NNCLR).
    """

    min_queue_size = 1  # NNCLR needs a queue; SwARo's is optional

    def __init__(self, cfg: UamixAudioMAEConfig, encoder: AudioMAEEncoder, queue_size: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        # The one place that decides what trains (freezing.py); it also keeps the patch
        # embedding and cls token out of the optimizer (docs/method.md, "Progressive
        # retraining", stage B), which saves their optimizer state too.
        self.freezing = self.build_freezing(cfg, encoder)
        if not 0.0 < cfg.layer_decay <= 1.0:
            raise ValueError(f"model.layer_decay must be in (0, 1], got {cfg.layer_decay}")
        self.head, self.support_queue = self.build_head(encoder.embed_dim, queue_size)
        if cfg.sync_batchnorm:  # before the EMA copy below, which then syncs too
            convert_sync_batchnorm(self.head)
        if not 0.0 <= cfg.queue_momentum < 1.0:
            raise ValueError(f"model.queue_momentum must be in [0, 1), got {cfg.queue_momentum}")
        self.queue_projector = None
        if cfg.queue_momentum > 0:
            # Not trained by the optimizer: follows the projector after every update.
            self.queue_projector = copy.deepcopy(self.head.projector).requires_grad_(False)
        self._ema_at = None  # the update the EMA copy last followed
        self._tag_parameters()
        self.num_train_clips = None  # set by build_model; bounds the queue's indices
        self._compiled = False
        if cfg.compile:
            self._check_compile(None)

    def _check_compile(self, device_type):
        reason = compile_unsupported_reason(device_type)
        if reason:
            raise ValueError(f"model.compile=true, but torch.compile cannot run here: "
                             f"{reason}. Set model.compile=false")

    @classmethod
    def build_model(cls, cfg: UamixAudioMAEConfig, task):
        if cfg.queue_size < cls.min_queue_size:
            raise ValueError(f"model.queue_size must be >= {cls.min_queue_size} (the NNCLR "
                             f"support queue the positives come from), got {cfg.queue_size}")
        restored = saved_encoder_args(cfg)
        encoder = encoder_for_model(cfg.audiomae_checkpoint, restored,
                                    "model.audiomae_checkpoint", cfg.num_frames,
                                    cfg.num_heads or None, cfg.drop_path_rate)
        if restored is None:
            logger.info("loaded AudioMAE encoder from %s: %s", cfg.audiomae_checkpoint,
                        encoder.cfg)
        train_clips = getattr(task, "num_train_clips", None)
        queue_size = cfg.effective_queue_size
        if queue_size == 0:  # a new model; a rebuilt one has the size in its config
            queue_size = min(cfg.queue_size, train_clips or cfg.queue_size)
            if queue_size < cfg.queue_size:
                logger.info("support queue capped at %d entries (the training set size)",
                            queue_size)
        elif queue_size < 0:
            raise ValueError(f"model.effective_queue_size must be >= 0, got {queue_size}")
        cfg.effective_queue_size = queue_size  # the task writes it into the saved config
        model = cls(cfg, encoder, queue_size)
        model.num_train_clips = train_clips
        if model.support_queue is not None:
            model.support_queue.dataset_id.fill_(float(getattr(task, "train_clips_id", 0)))
        return model

    def build_freezing(self, cfg, encoder) -> FreezeSchedule:
        """What trains when; models that train everything (the joint baseline) override."""
        return FreezeSchedule.parse(encoder, cfg.freeze_schedule, field="model.freeze_schedule")

    @property
    def trainable_blocks(self) -> int:
        """Encoder blocks training at the current update (logged by the criteria)."""
        return self.freezing.trainable_blocks

    def build_head(self, embed_dim: int, queue_size: int):
        """(head, queue) on top of the encoder; models with another objective (SwARo)
        override this and keep everything else."""
        cfg = self.cfg
        return (NNCLRHead(embed_dim, cfg.proj_hidden_dim, cfg.proj_layers, cfg.proj_out_dim,
                          cfg.pred_hidden_dim),
                SupportQueue(queue_size, cfg.proj_out_dim))

    # ---------------------------------------------------------------- loading
    def load_state_dict(self, state_dict, *args, **kwargs):
        return super().load_state_dict(self._usable_queue_state(state_dict), *args, **kwargs)

    def _usable_queue_state(self, state_dict):
        """``state_dict`` with its support queue entries kept when they are a valid
        queue for this model, else replaced by an empty queue (logged): a checkpoint
        averaged by fairseq's average_checkpoints.py, or one saved before train.tsv or
        model.queue_size changed, still loads, and training refills the queue."""
        prefix = "support_queue."
        saved = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        out = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
        queue = self.support_queue
        if queue is None:
            if saved:
                logger.warning("the checkpoint has a support queue, this model none "
                               "(model.queue_size=0): its queue is not loaded")
            return out
        problem = queue.problem(saved, self.num_train_clips) if saved else \
            "the checkpoint has no support queue"
        if problem is None:
            out.update({prefix + k: v for k, v in saved.items()})
            out.setdefault(prefix + "dataset_id", queue.dataset_id.clone())
            return out
        logger.warning(
            "support queue emptied on load, as at the start of training (it refills with "
            "the next %d queued clips): %s. This happens to a checkpoint averaged by "
            "average_checkpoints.py (use it for evaluation or export), and to one saved "
            "before train.tsv or model.queue_size changed", queue.size, problem)
        empty = {"features": torch.zeros_like(queue.features),
                 "indices": torch.full_like(queue.indices, -1.0),
                 "state": torch.zeros_like(queue.state),
                 "dataset_id": queue.dataset_id.clone()}
        out.update({prefix + k: v for k, v in empty.items()})
        return out

    # ---------------------------------------------------------------- freezing
    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        self.freezing.set_num_updates(num_updates)
        if self.queue_projector is not None:
            # One EMA step per optimizer step (n follows n - 1); a resume or a repeated
            # call with the same n only records where training is.
            if self._ema_at is not None and num_updates == self._ema_at + 1:
                ema_update(self.queue_projector, self.head.projector, self.cfg.queue_momentum)
            self._ema_at = num_updates

    def _tag_parameters(self):
        """Per-parameter optimizer overrides read by the `uamix_adamw` optimizer:
        the unit it belongs to (for freezing), lr scale (layer decay) and weight decay
        (None: the optimizer's; 0 for biases and norms)."""
        tag_encoder_parameters(self.encoder, self.cfg.layer_decay)
        for name, p in self.named_parameters():
            if not name.startswith("encoder."):
                tag_parameter(p, "head", 1.0, 0.0 if p.ndim <= 1 else self.cfg.head_weight_decay)

    # ---------------------------------------------------------------- forward
    def embed(self, x):
        """Pooled embeddings [B, D] of normalised fbank [B, 1, T, F]."""
        return self.encoder.pool(self.encoder(x), self.cfg.pooling)

    def _encode(self, x):
        """Tokens of x; the frozen part of the current stage runs without autograd."""
        if self.cfg.compile and not self._compiled:  # now the device is known
            self._check_compile(x.device.type)
            compile_encoder_blocks(self.encoder)
            self._compiled = True
        return self.encoder(x, **self.freezing.encoder_kwargs())

    def forward(self, view1, view2, mixed=None):
        parts = [view1, view2] + ([mixed] if mixed is not None else [])
        # Features are float32; the encoder may be in bf16/fp16.
        x = torch.cat(parts).to(self.encoder.cls_token.dtype)
        tokens = self._encode(x)
        pooled = self.encoder.pool(tokens, self.cfg.pooling).split(view1.shape[0])
        out = {}
        for name, y in zip(("1", "2", "m"), pooled):
            z, p = self.head(y)
            out["z" + name], out["p" + name] = z, p
        if self.queue_projector is not None:
            with torch.no_grad():  # what view 1 enqueues (criterion: "z1_queue")
                out["z1_queue"] = self.queue_projector(pooled[0].detach())
        return out

    def max_positions(self):
        return None
