"""fairseq task `uamix_mae_pretraining`: AudioMAE's masked-autoencoder pretraining (or
continued pretraining) on unlabelled audio listed in fairseq manifests.

Per step the task turns the batch of waveforms (randomly cropped by the dataset) into
normalised fbank on the training device and gives the model a seeded generator for the
patch masks (one seed per update and rank in training, per batch in validation, so
validation losses are comparable between checkpoints). No views, no augmentation.
"""

import logging
from dataclasses import dataclass

from fairseq.tasks import register_task

from ..audio.frontend import batch_fbank, model_input
from .base import AudioDataConfig, UamixAudioTask, unlabelled_dataset

logger = logging.getLogger(__name__)


@dataclass
class UamixMAEPretrainingConfig(AudioDataConfig):
    pass


@register_task("uamix_mae_pretraining", dataclass=UamixMAEPretrainingConfig)
class UamixMAEPretrainingTask(UamixAudioTask):
    cfg: UamixMAEPretrainingConfig
    task_name = "uamix_mae_pretraining"
    optimizer_why = "it keeps biases, norms, the cls and mask tokens out of weight decay"

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

    # ---------------------------------------------------------------- steps
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        sample = self.make_features(sample, self.step_generator(update_num))
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion):
        seed = int(sample["id"][0]) if len(sample["id"]) else 0
        sample = self.make_features(sample, self.step_generator(-1 - seed))
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        return loss, sample_size, self.add_monitor_scores(logging_output)
