"""What every uamix fairseq task shares: the data and feature fields, the checks and
datasets of unlabelled manifests, the per-step random streams, and the optimizer step
that keeps frozen units bit-identical.

The three tasks (``uamix_contrastive``, ``uamix_mae_pretraining``,
``uamix_audio_classification``) derive from ``UamixAudioTask`` and add only their own
features and fields.
"""

import logging
import os
import contextlib
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask
from omegaconf import II, MISSING, OmegaConf, open_dict

from ..data.audio_dataset import AudioClipDataset
from ..modules.distributed import rank_and_world
from ..audio.frontend import FrontendConfig
from ..manifest import MIN_CLIPS
from ..models.wrappers import find_uamix_model
from ..modules.audiomae import encoder_args
from ..optim.uamix_adamw import step_with_freezing
from ..modules.seeding import step_generator
from .monitoring import MonitorMixin

logger = logging.getLogger(__name__)


def _writable(cfg):
    return open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.nullcontext()


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
    if num_clips < MIN_CLIPS:
        raise ValueError(
            f"{path} ('{split}' split) holds {num_clips} clip(s); a validation set needs "
            f"at least {MIN_CLIPS} (one clip scores loss 0 / accuracy 100). Add "
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


def require_uamix_adamw(optimizer, task_name: str, why: str):
    """A clear error when the optimizer's groups were not built by `uamix_adamw`."""
    if not all("unit" in g for g in optimizer.param_groups):
        raise ValueError(f"task {task_name} needs optimizer=uamix_adamw (the shipped configs "
                         f"select it): {why}")


class UamixAudioTask(MonitorMixin, FairseqTask):
    """The base of the uamix tasks. Subclasses set ``task_name``, ``optimizer_why`` (why
    they need `uamix_adamw`) and ``seed_stream`` (their per-step stream, seeding.STREAMS)."""

    task_name = "uamix"
    optimizer_why = "it applies layer-wise lr decay and keeps frozen blocks bit-identical"
    seed_stream = "features"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.frontend_cfg = frontend_config(cfg)
        self._init_monitor()  # monitor sets and their saved start (monitoring.py)

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        check_audio_data_config(cfg)
        return cls(cfg)

    def build_model(self, cfg, from_checkpoint=False):
        """The model, with what it was built with written into ``cfg`` (the config
        fairseq saves with every checkpoint): the encoder's shape (``encoder_args``,
        models/encoder_args.py) and, for the contrastive models, the support queue's
        length, so that load_model_ensemble_and_task rebuilds the model from the
        checkpoint alone, without its encoder file or train.tsv."""
        with _writable(cfg):
            if not from_checkpoint:  # a new model reads its encoder file, always
                cfg.encoder_args = None
            model = super().build_model(cfg, from_checkpoint)
            built = find_uamix_model(model)
            cfg.encoder_args = encoder_args(built.encoder)
            if hasattr(cfg, "effective_queue_size"):
                # fairseq built the model from a merged copy of ``cfg``.
                cfg.effective_queue_size = built.cfg.effective_queue_size
        return model

    def step_generator(self, step: int):
        """This task's random stream at ``step`` (an update, or ``-1 - batch`` in
        validation) on this rank."""
        rank, _ = rank_and_world()
        return step_generator(self.cfg.seed, step, self.seed_stream, rank)

    def skip_update(self, model, update_num) -> bool:
        """True when this update must leave every weight as it is."""
        return False

    def optimizer_step(self, optimizer, model, update_num):
        """The step of `uamix_adamw`, with the model's frozen units left bit-identical
        (``model.freezing``, freezing.py)."""
        require_uamix_adamw(optimizer, self.task_name, self.optimizer_why)
        step_with_freezing(optimizer, find_uamix_model(model).freezing,
                           skip=self.skip_update(model, update_num))

    def max_positions(self):
        return None
