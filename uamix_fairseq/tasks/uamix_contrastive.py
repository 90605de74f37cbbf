"""fairseq task `uamix_contrastive`: contrastive tuning of an AudioMAE encoder on
unlabelled audio listed in fairseq manifests (`<data>/<split>.tsv`).

Per training step the task turns the batch of waveforms into two normalised fbank views
on the training device (``uamix_fairseq.frontend`` and ``uamix_fairseq.views``), tells
the model and criterion the update number, and before the optimizer step marks the
frozen parameter groups, so that frozen blocks stay bit-identical.
"""

import contextlib
import logging
import os
from dataclasses import dataclass, field, replace

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics
from fairseq.models import BaseFairseqModel
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING, OmegaConf, open_dict

from ..criterions.logging_sums import logged_total
from ..data.audio_dataset import AudioClipDataset
from ..distributed import rank_and_world
from ..frontend import FrontendConfig, batch_fbank, model_input
from ..manifest import MIN_VALID_CLIPS, read_manifest
from ..views import ViewConfig, two_views
from .batching import (MIN_CLIPS, DroppedBatchTracker, check_batch_size, check_clip_count,
                       usable_first_batch)
from .encoder_state import EncoderStateMixin, require_uamix_adamw
from .monitoring import MonitorMixin

logger = logging.getLogger(__name__)


@dataclass
class AudioDataConfig(FairseqDataclass):
    """Fields shared by every uamix audio task: where the data is and how features are
    made (docs/audiomae_format.md, "Features")."""

    data: str = field(default=MISSING, metadata={"help": "folder holding <split>.tsv manifests"})
    sample_rate: int = field(default=16000, metadata={"help": "sample rate the encoder expects"})
    resample: bool = field(
        default=False,
        metadata={"help": "resample clips at another rate (band-limited); when false such "
                  "clips are refused with an error naming the file"},
    )
    skip_bad_audio: bool = field(
        default=False,
        metadata={"help": "drop unreadable/silent/too-short clips from their batch (counted "
                  "and logged) instead of stopping"},
    )
    num_frames: int = field(
        default=1024,
        metadata={"help": "fbank frames T per clip (10 ms each): longer clips are cropped, "
                  "shorter ones zero-padded (AudioSet 1024, ESC-50 512, SPC-2 128)"},
    )
    num_mel_bins: int = field(default=128, metadata={"help": "mel bins F (AudioMAE: 128)"})
    norm_mean: float = field(default=-4.2677393, metadata={"help": "fbank mean (AudioSet)"})
    norm_std: float = field(
        default=4.5689974,
        metadata={"help": "fbank std (AudioSet); features are (x - mean) / (2 * std)"},
    )
    pad_mode: ChoiceEnum(["zero", "repeat"]) = field(
        default="zero",
        metadata={"help": "how clips shorter than num_frames are filled: zero (AudioMAE; "
                  "the amount of padding then tells clips apart) or repeat (the clip's "
                  "frames again until the crop is full); also used by the monitor set"},
    )
    monitor_manifest: str = field(
        default="",
        metadata={"help": "labelled manifest(s) (labels in PATH.label beside each), "
                  "comma-separated, scored at every validation: leave-one-out k-NN and "
                  "nearest-class-mean accuracy of the pooled encoder embedding and drift "
                  "from the starting encoder, logged as monitor_knn / monitor_ncm / "
                  "monitor_drift for the first set and with a _<file stem> suffix for "
                  "each further one; empty = off"},
    )
    monitor_knn_k: int = field(
        default=20, metadata={"help": "neighbours of the monitor's k-NN vote (cosine)"})
    monitor_batch_size: int = field(
        default=64, metadata={"help": "clips per forward pass when embedding the monitor set"})
    seed: int = II("common.seed")


def frontend_config(cfg: AudioDataConfig) -> FrontendConfig:
    return FrontendConfig(cfg.sample_rate, cfg.num_frames, cfg.num_mel_bins,
                          cfg.norm_mean, cfg.norm_std, str(cfg.pad_mode))


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


def _check_positive(cfg, names, prefix="task"):
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{prefix}.{name} must be > 0, got {getattr(cfg, name)}")


def check_audio_data_config(cfg: AudioDataConfig):
    """Errors in the fields every uamix audio task shares."""
    _check_positive(cfg, ("sample_rate", "num_frames", "num_mel_bins", "norm_std"))
    if cfg.num_mel_bins % 16 or cfg.num_frames % 16:
        raise ValueError(
            f"task.num_frames={cfg.num_frames} and task.num_mel_bins={cfg.num_mel_bins} "
            "must be multiples of the 16x16 patch size"
        )


def split_manifest(data: str, split: str) -> str:
    """``<data>/<split>.tsv``; a clear error listing the manifests there if it is missing."""
    path = os.path.join(data, f"{split}.tsv")
    if not os.path.isfile(path):
        found = sorted(f for f in os.listdir(data) if f.endswith(".tsv")) \
            if os.path.isdir(data) else []
        raise FileNotFoundError(
            f"no manifest for split '{split}': {path} does not exist (task.data="
            f"{data}; manifests there: {found or 'none'}). Make one with "
            "`python -m uamix_fairseq.manifest AUDIO_DIR --dest DIR`"
            + ("" if split == "train" else
               ", or train without validation: dataset.disable_validation=true")
        )
    return path


def check_eval_split_size(num_clips: int, split: str, path: str):
    """Refuse a validation (or test) split too small to score: one clip has no
    negatives and reports loss 0 / accuracy 100."""
    if num_clips < MIN_VALID_CLIPS:
        raise ValueError(
            f"{path} ('{split}' split) holds {num_clips} clip(s); a validation set needs "
            f"at least {MIN_VALID_CLIPS} (one clip scores loss 0 / accuracy 100). Add "
            "clips to it (e.g. `python -m uamix_fairseq.manifest AUDIO_DIR --dest DIR "
            "--valid-percent 0.1`), or train without validation: "
            "dataset.disable_validation=true")


def unlabelled_dataset(cfg: AudioDataConfig, frontend: FrontendConfig, split: str):
    """The clips of ``<data>/<split>.tsv``: random crops for "train", crops from the
    start otherwise (shared by the tuning and MAE pretraining tasks)."""
    path = split_manifest(cfg.data, split)
    dataset = AudioClipDataset(
        path, max_samples=frontend.max_samples, sample_rate=cfg.sample_rate,
        resample=cfg.resample, random_crop=split == "train", seed=cfg.seed,
        skip_bad_audio=cfg.skip_bad_audio,
    )
    logger.info("%s: %d clips from %s", split, len(dataset), path)
    if split != "train":
        check_eval_split_size(len(dataset), split, path)
    return dataset


def find_uamix_model(model):
    """The plugin model inside fairseq's DDP wrappers: in distributed training it is
    ModuleProxyWrapper -> (Legacy)DistributedDataParallel -> model, two ``.module``s."""
    while not isinstance(model, BaseFairseqModel) and hasattr(model, "module"):
        model = model.module
    return model


@register_task("uamix_contrastive", dataclass=UamixContrastiveConfig)
class UamixContrastiveTask(MonitorMixin, EncoderStateMixin, FairseqTask):
    cfg: UamixContrastiveConfig

    def __init__(self, cfg: UamixContrastiveConfig):
        super().__init__(cfg)
        self.frontend_cfg = frontend_config(cfg)
        self.view_cfg = ViewConfig(cfg.view_time_roll, cfg.view_gain_db,
                                   cfg.view_time_mask_fraction, cfg.view_freq_mask_fraction,
                                   cfg.view_mix_ratio, cfg.view_rrc_min_scale,
                                   cfg.view_rrc_max_scale)
        self.view_cfg.validate(prefix="task.view_")
        if cfg.view_span < 1:
            raise ValueError(f"task.view_span must be >= 1, got {cfg.view_span}")
        # The window the dataset crops and the fbank is computed on; views take their
        # own num_frames segments of it.
        self.window_cfg = replace(self.frontend_cfg,
                                  num_frames=int(round(cfg.view_span * cfg.num_frames)))
        # Encoder shape, saved in the checkpoint's task state so that the model can be
        # rebuilt without the AudioMAE file (see UamixAudioMAEModel.build_model).
        self._init_encoder_state()
        self._init_monitor()
        self._dropped = DroppedBatchTracker()
        # The support queue is capped at the training clips, and its clip indices are
        # checked against this manifest when a checkpoint is loaded (models/uamix_audiomae.py).
        train = self._read_manifest("train")
        self.num_train_clips = len(train) if train is not None else None
        self.train_clips_id = train.clip_list_id() if train is not None else 0
        self.train_clip_labels = self._diagnostic_labels("train")

    @classmethod
    def setup_task(cls, cfg: UamixContrastiveConfig, **kwargs):
        check_audio_data_config(cfg)
        return cls(cfg)

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

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        inner = find_uamix_model(model)
        if hasattr(cfg, "effective_queue_size"):
            # fairseq builds the model from a merged copy of ``cfg``; writing the size
            # into the caller's node puts it into the checkpoint's saved config, from
            # which load_model_ensemble_and_task rebuilds the model without train.tsv.
            with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.nullcontext():
                cfg.effective_queue_size = inner.cfg.effective_queue_size
        return model

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

    def _generator(self, step_seed):
        rank, _ = rank_and_world()
        return torch.Generator().manual_seed((self.cfg.seed * 7919 + step_seed) * 131 + rank)

    # ---------------------------------------------------------------- steps
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)
        criterion.set_num_updates(update_num)
        self._dropped.step(update_num, ignore_grad)
        sample = self.make_views(sample, self._generator(update_num))
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
            sample = self.make_views(sample, self._generator(-1 - seed))
            loss, sample_size, logging_output = criterion(model, sample)
        return loss, sample_size, self.add_monitor_scores(logging_output)

    def optimizer_step(self, optimizer, model, update_num):
        """Keep frozen parameter groups bit-identical (see optim/uamix_adamw.py)."""
        inner = find_uamix_model(model)
        frozen = inner.frozen_units()
        for p in inner.frozen_parameters():
            p.grad = None  # fills from legacy_ddp; None grads are skipped entirely
        require_uamix_adamw(optimizer, "uamix_contrastive", "it applies layer-wise lr "
                            "decay and keeps frozen blocks bit-identical")
        skip = self._dropped.all_batches_dropped(inner)
        if skip:
            logger.warning("update %d: every batch of it was dropped (too few readable "
                           "clips), so the weights stay as they are", update_num)
        groups = list(optimizer.param_groups)
        for g in groups:
            g["frozen"] = skip or g["unit"] in frozen
        optimizer.set_lr(optimizer.get_lr())
        optimizer.step()

    # ---------------------------------------------------------------- state
    def max_positions(self):
        return None
