"""fairseq task `uamix_contrastive`: contrastive tuning of an AudioMAE encoder on
unlabelled audio listed in fairseq manifests (`<data>/<split>.tsv`).

Per training step the task turns the batch of waveforms into two normalised fbank views
on the training device (``uamix_fairseq.audio.frontend`` and ``uamix_fairseq.modules.views``), tells
the model and criterion the update number, and before the optimizer step marks the
frozen parameter groups, so that frozen blocks stay bit-identical.
"""

import logging
import os
from dataclasses import dataclass, field, fields, replace

import torch
from fairseq.logging import metrics
from fairseq.tasks import register_task
from omegaconf import MISSING

from ..criterions.logging_sums import logged_total
from ..audio.frontend import batch_fbank, model_input
from ..manifest import read_manifest
from ..modules.views import ViewConfig, two_views
from ..models.wrappers import find_uamix_model
from .base import AudioDataConfig, UamixAudioTask, unlabelled_dataset
from .batching import (MIN_CLIPS, DroppedBatchTracker, check_batch_size, check_clip_count,
                       usable_first_batch)

logger = logging.getLogger(__name__)


@dataclass
class UamixContrastiveConfig(AudioDataConfig):
    view_time_roll: bool = field(
        default=True, metadata={"help": "[R] views: random circular time shift of the clip"})
    view_gain_db: float = field(
        default=6.0, metadata={"help": "[R] views: random gain in [-x, x] dB (0 = off)"})
    view_time_mask_fraction: float = field(
        default=0.1,
        metadata={"help": "[R] views: SpecAugment time mask of up to this share of the frames"},
    )
    view_freq_mask_fraction: float = field(
        default=0.2,
        metadata={"help": "[R] views: SpecAugment frequency mask of up to this share of the bins"},
    )
    view_span: float = field(
        default=1.0,
        metadata={"help": "[R] views: each view is its own random num_frames crop of a "
                  "window of view_span x num_frames frames of the clip, so the two views "
                  "come from different moments (COLA, ATST); 1 = both views share one crop"},
    )
    view_mix_ratio: float = field(
        default=0.0,
        metadata={"help": "[R] views: mix another clip of the batch in at a random ratio "
                  "up to this, in the power domain (BYOL-A's log-mixup-exp; no soft "
                  "target, unlike T-CutMix); 0 = off"},
    )
    view_rrc_min_scale: float = field(
        default=1.0,
        metadata={"help": "[R] views: random resized crop, smallest time/frequency scale "
                  "(BYOL-A: 0.6); min = max = 1 switches it off"},
    )
    view_rrc_max_scale: float = field(
        default=1.0,
        metadata={"help": "[R] views: random resized crop, largest scale (BYOL-A: 1.5; "
                  "> 1 reaches beyond the clip, filled with its mean)"},
    )
    view_rrc_freq: bool = field(
        default=True,
        metadata={"help": "[R] views: the random resized crop also scales frequency (a "
                  "pitch and formant shift, BYOL-A); false = time only (tempo and decay "
                  "change, pitch kept)"},
    )
    view_fader_db: float = field(
        default=0.0,
        metadata={"help": "[R] views: a gain ramp over the clip, from a random level in "
                  "[-x, x] dB at its first real frame to another at its last (a fade; "
                  "BYOL-A v2's random linear fader); 0 = off"},
    )


@register_task("uamix_contrastive", dataclass=UamixContrastiveConfig)
class UamixContrastiveTask(UamixAudioTask):
    cfg: UamixContrastiveConfig
    task_name = "uamix_contrastive"

    def __init__(self, cfg: UamixContrastiveConfig):
        super().__init__(cfg)
        # Every ViewConfig field is the task field of the same name with ``view_``.
        self.view_cfg = ViewConfig(**{f.name: getattr(cfg, f"view_{f.name}")
                                      for f in fields(ViewConfig)})
        self.view_cfg.validate(prefix="task.view_")
        if cfg.view_span < 1:
            raise ValueError(f"task.view_span must be >= 1, got {cfg.view_span}")
        # The window the dataset crops and the fbank is computed on; views take their
        # own num_frames segments of it.
        self.window_cfg = replace(self.frontend_cfg,
                                  num_frames=int(round(cfg.view_span * cfg.num_frames)))
        self._dropped = DroppedBatchTracker()
        # The support queue is capped at the training clips, and its clip indices are
        # checked against this manifest when a checkpoint is loaded (models/uamix_audiomae.py).
        train = self._read_manifest("train")
        self.num_train_clips = len(train) if train is not None else None
        self.train_clips_id = train.clip_list_id() if train is not None else 0
        self.train_clip_labels = self._diagnostic_labels("train")

    def _manifest_path(self, split):
        return os.path.join(self.cfg.data, f"{split}.tsv")

    def _read_manifest(self, split):
        """The split's manifest, or None where there is none (e.g. a checkpoint loaded
        on a machine without the data: the model then takes its sizes from the
        checkpoint)."""
        path = self._manifest_path(split)
        if self.cfg.data == MISSING or not os.path.isfile(path):
            return None
        return read_manifest(path)

    def _diagnostic_labels(self, split):
        """Class index per clip of ``<data>/<split>.label`` when that file exists (-1 for
        multi-label clips), for the criterion's neighbour-purity diagnostic only: no
        loss ever sees labels."""
        path = self._manifest_path(split)
        label_path = os.path.join(self.cfg.data, f"{split}.label")
        if self.cfg.data == MISSING or not os.path.isfile(label_path):
            return None
        from ..labels import LabelError, read_labels

        try:
            rows = read_labels(path, label_path)
        except LabelError as e:
            raise LabelError(f"{e}. {label_path} is read only to log nn_purity; fix it "
                             "to match the manifest or move it away") from None
        names = sorted({row[0] for row in rows if len(row) == 1})
        index = {c: i for i, c in enumerate(names)}
        logger.info("%s: used only to log nn_purity (the share of queue neighbours of "
                    "the same class); training ignores labels", label_path)
        return torch.tensor([index[row[0]] if len(row) == 1 else -1 for row in rows],
                            dtype=torch.long)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        dataset = unlabelled_dataset(self.cfg, self.window_cfg, split)
        check_clip_count(dataset, split, "uamix_contrastive")
        dataset.min_batch_size = MIN_CLIPS  # smaller batches are dropped (batching.py)
        self.datasets[split] = dataset

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, *args,
                           **kwargs):
        split = next((s for s, d in self.datasets.items() if d is dataset), "train")
        check_batch_size(split, max_sentences, "uamix_contrastive")
        return usable_first_batch(super().get_batch_iterator(
            dataset, max_tokens, max_sentences, *args, **kwargs))

    # ---------------------------------------------------------------- features
    def make_views(self, sample, generator):
        """Replace the waveforms of ``sample`` by two normalised fbank views."""
        net_input = sample["net_input"]
        fbank, valid = batch_fbank(net_input["waveform"], net_input["lengths"],
                                   self.window_cfg)
        x1, x2 = two_views(fbank, valid, self.view_cfg, generator,
                           frames=self.frontend_cfg.num_frames)
        out = dict(sample)
        out["net_input"] = {"view1": model_input(x1, self.frontend_cfg),
                            "view2": model_input(x2, self.frontend_cfg)}
        return out

    # ---------------------------------------------------------------- steps
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)
        criterion.set_num_updates(update_num)
        self._dropped.step(update_num, ignore_grad)
        sample = self.make_views(sample, self.step_generator(update_num))
        if ignore_grad:
            # fairseq's dummy batch (a rank out of data): still runs every collective,
            # but its rows are neither negatives for other ranks nor queued.
            sample["is_dummy"] = True
        loss, sample_size, logging_output = criterion(model, sample)
        if ignore_grad:
            loss *= 0
            # Its loss (NaN: every column masked) is no result; log only that a dummy
            # batch ran. Every rank logs the same keys, tensors as tensors (fairseq
            # sums them across ranks by key and by kind).
            logging_output = {k: torch.zeros_like(v) if torch.is_tensor(v) else 0
                              for k, v in logging_output.items()}
        logging_output["dropped_batches"] = int(ignore_grad)
        optimizer.backward(loss)
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        dropped = logged_total(logging_outputs, "dropped_batches")
        if dropped:  # summed over the log interval (single process: batches dropped)
            metrics.log_scalar_sum("dropped_batches", dropped, round=0)

    def valid_step(self, sample, model, criterion):
        model.eval()
        with torch.no_grad():
            seed = int(sample["id"][0]) if len(sample["id"]) else 0
            sample = self.make_views(sample, self.step_generator(-1 - seed))
            loss, sample_size, logging_output = criterion(model, sample)
        return loss, sample_size, self.add_monitor_scores(logging_output)

    def skip_update(self, model, update_num) -> bool:
        if self._dropped.all_batches_dropped(find_uamix_model(model)):
            logger.warning("update %d: every batch of it was dropped (too few readable "
                           "clips), so the weights stay as they are", update_num)
            return True
        return False

