"""fairseq task `uamix_mae_pretraining`: AudioMAE's masked-autoencoder pretraining (or
continued pretraining) on unlabelled audio listed in fairseq manifests.

Per step the task turns the batch of waveforms (randomly cropped by the dataset) into
normalised fbank on the training device and gives the model a seeded generator for the
patch masks (one seed per update and rank in training, per batch in validation, so
validation losses are comparable between checkpoints). No views, no augmentation.
"""

import logging
from dataclasses import dataclass

import torch
from fairseq.tasks import FairseqTask, register_task

from ..distributed import rank_and_world
from ..frontend import batch_fbank, model_input
from .encoder_state import EncoderStateMixin, require_uamix_adamw
from .monitoring import MonitorMixin
from .uamix_contrastive import (AudioDataConfig, check_audio_data_config, frontend_config,
                                unlabelled_dataset)

logger = logging.getLogger(__name__)


@dataclass
class UamixMAEPretrainingConfig(AudioDataConfig):
    pass


@register_task("uamix_mae_pretraining", dataclass=UamixMAEPretrainingConfig)
class UamixMAEPretrainingTask(MonitorMixin, EncoderStateMixin, FairseqTask):
    cfg: UamixMAEPretrainingConfig

    def __init__(self, cfg: UamixMAEPretrainingConfig):
        super().__init__(cfg)
        self.frontend_cfg = frontend_config(cfg)
        # Encoder shape, saved in the checkpoint's task state so that the model can be
        # rebuilt without the AudioMAE file (see UamixAudioMAEMAEModel.build_model).
        self._init_encoder_state()
        self._init_monitor()

    @classmethod
    def setup_task(cls, cfg: UamixMAEPretrainingConfig, **kwargs):
        check_audio_data_config(cfg)
        return cls(cfg)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        self.datasets[split] = unlabelled_dataset(self.cfg, self.frontend_cfg, split)

    # ---------------------------------------------------------------- features
    def make_features(self, sample, generator):
        """Waveforms -> ``net_input = {"source": [B, 1, T, F], "generator": ...}``."""
        net_input = sample["net_input"]
        fbank, _ = batch_fbank(net_input["waveform"], net_input["lengths"], self.frontend_cfg)
        out = dict(sample)
        out["net_input"] = {"source": model_input(fbank, self.frontend_cfg),
                            "generator": generator}
        return out

    def _generator(self, step_seed):
        rank, _ = rank_and_world()
        seed = ((self.cfg.seed * 7919 + step_seed) * 131 + rank) % (2**63)
        return torch.Generator().manual_seed(seed)

    # ---------------------------------------------------------------- steps
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        sample = self.make_features(sample, self._generator(update_num))
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion):
        seed = int(sample["id"][0]) if len(sample["id"]) else 0
        sample = self.make_features(sample, self._generator(-1 - seed))
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        return loss, sample_size, self.add_monitor_scores(logging_output)

    def optimizer_step(self, optimizer, model, update_num):
        require_uamix_adamw(optimizer, "uamix_mae_pretraining", "it keeps biases, norms, "
                            "the cls and mask tokens out of weight decay")
        super().optimizer_step(optimizer, model, update_num)

    # ---------------------------------------------------------------- state
    def max_positions(self):
        return None
