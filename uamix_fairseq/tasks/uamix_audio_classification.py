"""fairseq task `uamix_audio_classification`: supervised fine-tuning of an AudioMAE
encoder on labelled clips (``<data>/<split>.tsv`` + ``<data>/<split>.label``).

The class list is the sorted set of classes of the training split; it is saved in the
task state, so a checkpoint knows its classes and ``fairseq-validate`` can evaluate it
on any split whose classes are among them. Features are computed per batch on the
training device, exactly as for contrastive tuning (``uamix_fairseq.audio.frontend``); during
training the task first mixes waveforms (mixup, with mixed soft targets), then masks
the raw fbank (SpecAugment with AudioMAE's absolute widths), then normalises.
"""

import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.tasks import register_task
from omegaconf import II

from ..data.labelled_dataset import LabelledClipDataset
from ..audio.frontend import batch_fbank, model_input
from ..labels import class_index, label_path_for, read_labels
from ..modules.mixing import mix_partner, sample_lambda
from ..modules.views import spec_augment_widths
from .base import (AudioDataConfig, UamixAudioTask, check_audio_data_config,
                   check_eval_split_size, split_manifest)

logger = logging.getLogger(__name__)


@dataclass
class UamixAudioClassificationConfig(AudioDataConfig):
    multilabel: Optional[bool] = field(
        default=None,
        metadata={"help": "multi-label (sigmoid/BCE, mAP) or single-label (softmax/CE, "
                  "accuracy); null = multi-label if any training clip has several classes"},
    )
    specaug_freq_mask: int = field(
        default=0,
        metadata={"help": "training SpecAugment: one frequency mask of up to this many mel "
                  "bins per clip (AudioMAE's freqm: 48 for AudioSet, 96 for ESC-50; 0 = off)"},
    )
    specaug_time_mask: int = field(
        default=0,
        metadata={"help": "training SpecAugment: one time mask of up to this many frames "
                  "per clip (AudioMAE's timem: 192 for AudioSet, 24 for ESC-50; 0 = off)"},
    )
    mixup: float = field(
        default=0.0,
        metadata={"help": "training mixup: probability that a clip's waveform is mixed with "
                  "another clip of the batch, targets mixed alike (AudioSet: 0.5; 0 = off)"},
    )
    mixup_alpha: float = field(
        default=10.0,
        metadata={"help": "mixup weight lambda ~ Beta(alpha, alpha) (AudioMAE: 10)"},
    )
    train_subset: str = II("dataset.train_subset")


def mixup_waveforms(waveform, lengths, target, prob: float, alpha: float, generator=None):
    """Waveform mixup of a padded batch, AudioMAE's way but within the batch.

    With probability ``prob`` row i becomes ``lam_i * w_i + (1 - lam_i) * w_j`` (j from
    a random permutation, lam_i ~ Beta(alpha, alpha)), cut to clip i's length and
    re-centred; its target becomes ``lam_i * y_i + (1 - lam_i) * y_j``. Other rows are
    returned unchanged (lam = 1).

    waveform [B, N], lengths [B], target [B, C] float -> (waveform, target, lam [B],
    partner [B]).
    """
    b, n = waveform.shape
    device = waveform.device
    partner = mix_partner(b, "random", generator, device=device)
    mixed_rows = torch.rand(b, generator=generator) < prob
    lam = torch.ones(b, dtype=torch.float64)
    for i in torch.nonzero(mixed_rows).flatten().tolist():
        lam[i] = sample_lambda(alpha, generator)
    lam_w = lam.to(device=device, dtype=waveform.dtype)[:, None]
    real = torch.arange(n, device=device)[None, :] < lengths.to(device)[:, None]
    mixed = (lam_w * waveform + (1 - lam_w) * waveform[partner]) * real
    mixed = (mixed - mixed.sum(1, keepdim=True) / lengths.to(device)[:, None]) * real
    waveform = torch.where(mixed_rows.to(device)[:, None], mixed, waveform)
    lam_t = lam.to(device=device, dtype=target.dtype)[:, None]
    target = lam_t * target + (1 - lam_t) * target[partner]
    return waveform, target, lam, partner


@register_task("uamix_audio_classification", dataclass=UamixAudioClassificationConfig)
class UamixAudioClassificationTask(UamixAudioTask):
    cfg: UamixAudioClassificationConfig
    task_name = "uamix_audio_classification"
    optimizer_why = ("it applies the layer-wise lr decay (model.layer_decay), keeps biases, "
                     "norms and the cls token out of weight decay, and freezes what "
                     "model.freeze_schedule says")
    seed_stream = "labels"

    def __init__(self, cfg: UamixAudioClassificationConfig):
        super().__init__(cfg)
        # Saved in the task state (see state_dict): the class list and label type the
        # model was trained with (the encoder shape is saved by the base).
        self.classes = None
        self.multilabel = None

    @classmethod
    def setup_task(cls, cfg: UamixAudioClassificationConfig, from_checkpoint=False, **kwargs):
        check_audio_data_config(cfg)
        if not 0.0 <= cfg.mixup <= 1.0:
            raise ValueError(f"task.mixup is a probability in [0, 1], got {cfg.mixup}")
        if not cfg.mixup_alpha > 0:
            raise ValueError(f"task.mixup_alpha must be > 0, got {cfg.mixup_alpha}")
        for name in ("specaug_freq_mask", "specaug_time_mask"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"task.{name} must be >= 0, got {getattr(cfg, name)}")
        task = cls(cfg)
        if not from_checkpoint:  # otherwise the classes come from the task state
            task.classes_from_train_split()
        return task

    def classes_from_train_split(self):
        path = split_manifest(self.cfg.data, self.cfg.train_subset)
        labels = read_labels(path)
        self.classes, _ = class_index(labels)
        found_multi = any(len(names) > 1 for names in labels)
        self.multilabel = found_multi if self.cfg.multilabel is None else self.cfg.multilabel
        logger.info("%d classes from %s; %s", len(self.classes), label_path_for(path),
                    "multi-label" if self.multilabel else "single-label")

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        if self.classes is None:
            self.classes_from_train_split()
        path = split_manifest(self.cfg.data, split)
        self.datasets[split] = LabelledClipDataset(
            path, self.classes, self.multilabel,
            max_samples=self.frontend_cfg.max_samples, sample_rate=self.cfg.sample_rate,
            resample=self.cfg.resample, random_crop=split == self.cfg.train_subset,
            seed=self.cfg.seed, skip_bad_audio=self.cfg.skip_bad_audio,
        )
        logger.info("%s: %d labelled clips from %s", split, len(self.datasets[split]), path)
        if split != self.cfg.train_subset:
            check_eval_split_size(len(self.datasets[split]), split, path)

    # ---------------------------------------------------------------- features
    def make_features(self, sample, generator=None):
        """Waveforms -> normalised fbank ``net_input["source"]`` [B, 1, T, F] and float
        targets [B, C]. With a generator (training): mixup, then SpecAugment."""
        net_input = sample["net_input"]
        waveform, lengths = net_input["waveform"], net_input["lengths"]
        target = sample["target"].float()
        if generator is not None and self.cfg.mixup > 0:
            waveform, target, _, _ = mixup_waveforms(waveform, lengths, target,
                                                     self.cfg.mixup, self.cfg.mixup_alpha,
                                                     generator)
        fbank, _ = batch_fbank(waveform, lengths, self.frontend_cfg)
        if generator is not None:
            fbank = spec_augment_widths(fbank, self.cfg.specaug_time_mask,
                                        self.cfg.specaug_freq_mask, generator)
        out = dict(sample)
        out["net_input"] = {"source": model_input(fbank, self.frontend_cfg)}
        out["target"] = target
        return out

    # ---------------------------------------------------------------- steps
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        sample = self.make_features(sample, self.step_generator(update_num))
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(
            self.make_features(sample), model, criterion)
        return loss, sample_size, self.add_monitor_scores(logging_output)

    # ---------------------------------------------------------------- state
    def state_dict(self):
        return {"classes": self.classes, "multilabel": self.multilabel,
                **self._monitor_state_dict()}

    def load_state_dict(self, state_dict):
        classes = state_dict.get("classes")
        if classes is not None:
            if self.classes is not None and list(self.classes) != list(classes):
                raise ValueError(
                    f"the checkpoint was trained on {len(classes)} classes "
                    f"({', '.join(classes[:5])} ...), task.data={self.cfg.data} has "
                    f"{len(self.classes)} ({', '.join(self.classes[:5])} ...): its outputs "
                    "would be read as the wrong classes"
                )
            self.classes = list(classes)
            self.multilabel = bool(state_dict["multilabel"])
        self._load_monitor_state(state_dict)
