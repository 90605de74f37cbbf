"""The labelled monitor set of every uamix task (``task.monitor_manifest``): fairseq glue
around ``uamix_fairseq.monitor``.

At every validation (``trainer.begin_valid_epoch``) the task embeds the monitor clips
with the current encoder and keeps the scores; the first validation batch carries them
in its logging output, so that they are logged with the valid metrics (and to
tensorboard) as ``monitor_knn``, ``monitor_ncm`` and ``monitor_drift``, and
``checkpoint.best_checkpoint_metric=monitor_knn`` can choose ``checkpoint_best.pt``.
The embeddings of the encoder the run started from are saved in the task state, so the
drift is measured against the same start after a resume.
"""

import logging
import os
import time

import torch
from fairseq.logging import metrics

from ..frontend import batch_fbank, model_input
from ..monitor import MonitorError, embed_batches, monitor_scores, targets_from_labels

logger = logging.getLogger(__name__)

MONITOR_KEYS = ("monitor_knn", "monitor_ncm", "monitor_drift", "monitor_seconds")


def _encoder_and_pooling(model):
    from .uamix_contrastive import find_uamix_model

    inner = find_uamix_model(model)
    encoder = getattr(inner, "encoder", None)
    if encoder is None or not hasattr(encoder, "embed"):
        raise MonitorError(f"task.monitor_manifest: model {type(inner).__name__} has no "
                           "AudioMAE encoder to embed the monitor clips with")
    return encoder, getattr(getattr(inner, "cfg", None), "pooling", "mean")


def load_monitor_inputs(cfg, frontend):
    """(model inputs [N, 1, T, F] on CPU, targets [N], class names) of the monitor
    manifest: clips cropped from their start, as the evaluation tools embed them."""
    from ..data.audio_dataset import AudioClipDataset
    from ..labels import label_path_for, read_labels

    path = cfg.monitor_manifest
    if not os.path.isfile(path):
        raise MonitorError(f"task.monitor_manifest={path} does not exist (a manifest with "
                           "its labels in PATH.label beside it; empty switches it off)")
    label_path = label_path_for(path)
    names, targets = targets_from_labels(read_labels(path, label_path), label_path)
    ds = AudioClipDataset(path, max_samples=frontend.max_samples,
                          sample_rate=cfg.sample_rate, resample=cfg.resample,
                          random_crop=False)
    chunks = []
    for start in range(0, len(ds), 64):
        batch = ds.collater([ds[i] for i in range(start, min(start + 64, len(ds)))])
        net = batch["net_input"]
        fbank, _ = batch_fbank(net["waveform"], net["lengths"], frontend)
        chunks.append(model_input(fbank, frontend).float())
    inputs = torch.cat(chunks)
    logger.info("monitor set %s: %d clips of %d classes (%.0f MB of features in memory)",
                path, len(ds), len(names), inputs.numel() * 4 / 2**20)
    return inputs, targets, names


class MonitorMixin:
    """Mixed into the uamix tasks before ``FairseqTask``; call ``_init_monitor()`` in
    ``__init__`` and pass each ``valid_step``'s logging output through
    ``add_monitor_scores``. Needs ``self.cfg`` (an ``AudioDataConfig``) and
    ``self.frontend_cfg``; its state is saved by ``EncoderStateMixin``."""

    def _init_monitor(self):
        self._monitor = None  # (inputs, targets), loaded on first use
        self.monitor_start = None  # [N, D] embeddings of the starting encoder
        self._monitor_pending = None  # scores waiting for the first valid batch
        if self.cfg.monitor_manifest and self.cfg.monitor_knn_k < 1:
            raise ValueError(f"task.monitor_knn_k must be >= 1, got {self.cfg.monitor_knn_k}")

    @property
    def monitor_enabled(self) -> bool:
        return bool(self.cfg.monitor_manifest)

    def _monitor_embed(self, model) -> torch.Tensor:
        if self._monitor is None:
            inputs, targets, _ = load_monitor_inputs(self.cfg, self.frontend_cfg)
            self._monitor = (inputs, targets)
        encoder, pooling = _encoder_and_pooling(model)
        return embed_batches(encoder, self._monitor[0], pooling, self.cfg.monitor_batch_size,
                             encoder.cls_token.device)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if self.monitor_enabled and self.monitor_start is None:
            self.monitor_start = self._monitor_embed(model)
        return model

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        if not self.monitor_enabled:
            return
        t0 = time.perf_counter()
        emb = self._monitor_embed(model)
        start = self.monitor_start
        if start is not None and start.shape != emb.shape:
            logger.warning("monitor: saved start embeddings have shape %s, now %s (monitor "
                           "set changed?); drift is measured from now on",
                           tuple(start.shape), tuple(emb.shape))
            start = self.monitor_start = emb
        scores = monitor_scores(emb, self._monitor[1], self.cfg.monitor_knn_k, start)
        scores["monitor_seconds"] = time.perf_counter() - t0
        self._monitor_pending = scores
        logger.info("monitor (%d clips): k-NN %.2f%%, NCM %.2f%%, drift %.4f, %.1f s",
                    emb.shape[0], scores["monitor_knn"], scores["monitor_ncm"],
                    scores.get("monitor_drift", 0.0), scores["monitor_seconds"])

    def add_monitor_scores(self, logging_output: dict) -> dict:
        """Put the pending scores into the first validation batch's logging output."""
        if self._monitor_pending is not None:
            logging_output = dict(logging_output)
            for key, value in self._monitor_pending.items():
                logging_output[key + "_sum"] = value
            logging_output["monitor_count"] = 1
            self._monitor_pending = None
        return logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        # Each rank scores the whole monitor set, so the sums over ranks divided by the
        # number of ranks that reported are the scores themselves.
        count = sum(log.get("monitor_count", 0) for log in logging_outputs)
        if count:
            for key in MONITOR_KEYS:
                total = sum(float(log.get(key + "_sum", 0.0)) for log in logging_outputs)
                if any(key + "_sum" in log for log in logging_outputs):
                    metrics.log_scalar(key, total / count, count, round=3 if key ==
                                       "monitor_drift" else 2)
